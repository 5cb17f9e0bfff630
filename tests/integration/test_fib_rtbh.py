"""RTBH in the kernel writer (issue 10): blackhole entries as RTN_BLACKHOLE routes, on a real kernel in
a fresh namespace, read back with `ip -json route`."""

from __future__ import annotations

import ipaddress

from common.model import FibEntry
from fib.kernel import KernelFib
from fib.ops import BLACKHOLE_GID

from .netns import ip_json, write_fib

N = ipaddress.ip_network
A = ipaddress.ip_address
PROTO = 200


def ours(ns: str, family: str) -> dict[str, tuple[str, str | None, int]]:
    """dst -> (route type, nhid or None, metric) of our protocol's routes."""
    out = {}
    for r in ip_json(ns, family, "route", "show", "proto", str(PROTO)):
        dst = r["dst"] if "/" in r["dst"] else r["dst"] + ("/32" if family == "-4" else "/128")
        out[dst] = (r.get("type", "unicast"), r.get("nhid"), r.get("metric", 0))
    return out


def bh(prefix: str) -> FibEntry:
    return FibEntry(N(prefix), (), blackhole=True)


def fwd(prefix: str, gw: str, backup: str | None = None) -> FibEntry:
    return FibEntry(N(prefix), (A(gw),), backup=(A(backup),) if backup else ())


async def test_blackhole_install_switch_and_delete(netns: str) -> None:
    fib = KernelFib(protocol=PROTO, netns=netns, metric=20)
    v4, v6 = "198.51.100.7/32", "2001:db8:100::7/128"
    wide = "198.51.100.0/24"
    await write_fib(fib, [(v4, bh(v4)), (v6, bh(v6)), (wide, fwd(wide, "10.0.0.2", "10.0.0.4"))])
    assert not fib.failed
    assert ours(netns, "-4")["198.51.100.7/32"] == ("blackhole", None, 20)
    assert ours(netns, "-6")["2001:db8:100::7/128"][0] == "blackhole"
    assert ours(netns, "-4")["198.51.100.0/24"][0] == "unicast"
    assert fib.installed[N(v4)] == BLACKHOLE_GID and fib.desired(N(v4)) == bh(v4)
    # Blackhole -> normal -> blackhole, in place (replace), both families.
    await write_fib(fib, [(v4, fwd(v4, "10.0.0.3")), (v6, FibEntry(N(v6), (A("2001:db8:1::2"),)))])
    kinds = ours(netns, "-4")[v4], ours(netns, "-6")[v6]
    assert [k[0] for k in kinds] == ["unicast", "unicast"] and all(k[1] for k in kinds)
    await write_fib(fib, [(v4, bh(v4)), (v6, bh(v6))])
    assert ours(netns, "-4")[v4][0] == "blackhole" and ours(netns, "-6")[v6][0] == "blackhole"
    # Local repair plans and failover rewrites never involve a blackhole route.
    plans = fib.dataplane.repair_plans([A("10.0.0.2"), A("10.0.0.3")])
    assert plans[A("10.0.0.2")].netlink and not plans[A("10.0.0.3")].netlink  # only the /24's group
    assert fib.fail_gateways_now({A("10.0.0.2")}).rewritten == 1  # the /24's group only
    assert ours(netns, "-4")[v4][0] == "blackhole"
    await write_fib(fib, [(v4, None), (v6, None)])
    assert v4 not in ours(netns, "-4") and v6 not in ours(netns, "-6")
    assert not fib.failed and N(v4) not in fib.installed
    fib.close()


async def test_blackhole_routes_are_adopted_after_a_restart_and_swept(netns: str) -> None:
    first = KernelFib(protocol=PROTO, netns=netns)
    await write_fib(first, [("198.51.100.7/32", bh("198.51.100.7/32")), ("198.51.100.8/32", bh("198.51.100.8/32")),
                         ("2001:db8:100::7/128", bh("2001:db8:100::7/128"))])
    first.close()
    second = KernelFib(protocol=PROTO, netns=netns)
    assert second.adopt() == 3
    assert second.installed[N("198.51.100.7/32")] == BLACKHOLE_GID
    ops = second.operations
    await write_fib(second, [("198.51.100.7/32", bh("198.51.100.7/32")),
                          ("2001:db8:100::7/128", bh("2001:db8:100::7/128"))])
    assert second.operations == ops  # re-announced unchanged: nothing written
    second.sweep_stale()
    await write_fib(second, [])
    assert set(ours(netns, "-4")) == {"198.51.100.7/32"}
    # A resync finds the kernel equal to the table: nothing to repair.
    assert await second.resync() == 0
    second.close()


async def test_kernel_path_blackhole_drops_are_counted_per_interface_by_nft(netns: str) -> None:
    """Real packets from a second namespace into a blackhole route: the kernel drops them and our
    own nftables table counts them on the ingress interface; removed at stop, nothing else touched."""
    import shutil
    import subprocess

    from fib.nft import TABLE, BlackholeCounter

    from .netns import sh, wait_for

    if shutil.which("nft") is None:
        import pytest

        pytest.fail("nft is missing (apt-get install -y nftables)")
    peer = netns + "p"
    subprocess.run(["ip", "netns", "add", peer], check=True)
    try:
        sh("ip", "-n", netns, "link", "set", "d1", "netns", peer)
        sh("ip", "-n", peer, "link", "set", "d1", "up")
        sh("ip", "-n", peer, "addr", "add", "10.0.0.2/24", "dev", "d1")
        sh("ip", "-n", peer, "route", "add", "default", "via", "10.0.0.1")
        sh("ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", netns, "nft", "add", "table", "ip", "somebody_else")
        fib = KernelFib(protocol=PROTO, netns=netns)
        await write_fib(fib, [("198.51.100.7/32", bh("198.51.100.7/32"))])  # before the start: adopted
        counter = BlackholeCounter(netns)
        assert counter.start(fib.fib_table)
        assert counter.start(fib.fib_table)  # a table left behind is taken over, not duplicated
        fib.dataplane.mirrors.append(counter)  # then fed the same operations as the kernel

        def ping(dst: str, n: int = 1) -> None:
            for _ in range(n):
                sh("ip", "netns", "exec", peer, "ping", "-c", "1", "-W", "0.2", dst, check=False)

        ping("198.51.100.7", 5)
        assert wait_for(lambda: counter.read().get("d0", 0) >= 5, what="5 drops counted on d0")
        # A blackhole added and one overlapping it (collapsed in the set), then the first removed.
        await write_fib(fib, [("198.51.100.8/32", bh("198.51.100.8/32")), ("198.51.100.0/29", bh("198.51.100.0/29"))])
        ping("198.51.100.8", 2)
        assert wait_for(lambda: counter.read().get("d0", 0) >= 7, what="7 drops")
        await write_fib(fib, [("198.51.100.0/29", None), ("198.51.100.8/32", fwd("198.51.100.8/32", "10.0.0.2"))])
        assert counter.prefixes == {N("198.51.100.7/32")}
        before = counter.read()["d0"]
        ping("198.51.100.6", 2)  # no longer a blackhole: not counted (no route: the kernel answers)
        assert counter.read()["d0"] == before
        counter.stop()
        tables = sh("ip", "netns", "exec", netns, "nft", "list", "tables")
        assert f"inet {TABLE}" not in tables and "ip somebody_else" in tables
        fib.close()
    finally:
        subprocess.run(["ip", "netns", "del", peer], check=False)
