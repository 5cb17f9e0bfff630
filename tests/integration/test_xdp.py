"""The XDP fast path on real packets: A -> R (XDP on R's ingress) -> B, in namespaces.

R's program forwards from its maps (LPM -> group -> nexthop) and redirects through a DEVMAP; B's
end of the veth runs a pass-only program (a veth only delivers redirected frames when its peer has
XDP). The sender's veth has transmit checksum offload turned off: it would otherwise leave a partial UDP
checksum that nobody completes after a redirect (seen on this kernel).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import subprocess
from collections.abc import Iterator

import pytest

from common.netns import netns
from fib.xdp.loader import OBJECT, Nexthop, XdpProgram
from labs.runner import tx_checksum_off

from .netns import unique_prefix

SO_NO_CHECK = 11
IP_RECVTTL = 12
IPV6_RECVHOPLIMIT = 51


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def mac(ns: str, ifname: str) -> bytes:
    out = subprocess.run(["ip", "-n", ns, "-br", "link", "show", ifname], capture_output=True, text=True).stdout
    return bytes.fromhex(out.split()[2].replace(":", ""))


@pytest.fixture
def topo() -> Iterator[tuple[dict[str, str], XdpProgram]]:
    if not OBJECT.exists():
        pytest.fail(f"{OBJECT} is missing: `make test` builds it (clang -target bpf)")
    p = unique_prefix("xdp")
    ns = {k: f"{p}{k}" for k in "arb"}
    try:
        for n in ns.values():
            sh(f"ip netns add {n} && ip -n {n} link set lo up")
        a, r, b = ns["a"], ns["r"], ns["b"]
        sh(f"ip link add aR netns {a} type veth peer name rA netns {r}")
        sh(f"ip link add rB netns {r} type veth peer name bR netns {b}")
        sh(f"ip -n {a} addr add 10.9.0.2/24 dev aR && ip -n {a} link set aR up")
        sh(f"ip -n {a} addr add 2001:db8:9::2/64 dev aR nodad")
        sh(f"ip -n {a} route add default via 10.9.0.1 && ip -n {a} -6 route add default via 2001:db8:9::1")
        sh(f"ip -n {r} addr add 10.9.0.1/24 dev rA && ip -n {r} addr add 10.9.1.1/24 dev rB")
        sh(f"ip -n {r} addr add 2001:db8:9::1/64 dev rA nodad && ip -n {r} addr add 2001:db8:91::1/64 dev rB nodad")
        sh(f"ip -n {r} link set rA up && ip -n {r} link set rB up")
        sh(f"ip -n {b} addr add 10.9.1.2/24 dev bR && ip -n {b} addr add 198.51.100.10/24 dev bR")
        sh(f"ip -n {b} addr add 2001:db8:91::2/64 dev bR nodad && ip -n {b} addr add 2001:db8:100::10/64 dev bR nodad")
        sh(f"ip -n {b} link set bR up && ip -n {b} route add default via 10.9.1.1")
        sh(f"ip -n {b} -6 route add default via 2001:db8:91::1")
        sh(f"ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
        # The kernel holds the same routes as the XDP maps (it is the slow path and the source of truth).
        sh(f"ip -n {r} route add 198.51.100.0/24 via 10.9.1.2 && ip -n {r} route add 203.0.113.0/24 via 10.9.1.2")
        sh(f"ip -n {r} -6 route add 2001:db8:100::/48 via 2001:db8:91::2")
        tx_checksum_off(a, "aR")
        x = XdpProgram()
        try:
            x.attach("rA", r)
            x.attach("bR", b, pass_only=True)
            with netns(r):
                rb = socket.if_nametoindex("rB")
            plain = Nexthop(rb, mac(r, "rB"), mac(b, "bR"))
            x.set_nexthop(1, plain, r)
            x.set_nexthop(2, Nexthop(rb, mac(r, "rB"), mac(b, "bR"), True, (100, 200)), r)
            x.set_nexthop(3, Nexthop(rb, mac(r, "rB"), mac(b, "bR"), False), r)  # neighbour unresolved
            x.set_group(10, [1])
            x.set_group(11, [3])
            x.set_route(ipaddress.ip_network("198.51.100.0/24"), 10)
            x.set_route(ipaddress.ip_network("2001:db8:100::/48"), 10)
            x.set_route(ipaddress.ip_network("203.0.113.0/24"), 11)
            yield ns, x
        finally:
            x.close()
    finally:
        for n in ns.values():
            subprocess.run(["ip", "netns", "del", n], check=False)


def _udp_roundtrip(ns: dict[str, str], dst: str, v6: bool = False, ttl: int = 64) -> tuple[bytes, int] | None:
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    with netns(ns["b"]):
        rx = socket.socket(fam, socket.SOCK_DGRAM)
        rx.bind(("::" if v6 else "0.0.0.0", 9999))
        if v6:
            rx.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        else:
            rx.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    with netns(ns["a"]):
        tx = socket.socket(fam, socket.SOCK_DGRAM)
        if v6:
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            tx.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    try:
        for _ in range(3):  # the first packet may wait for neighbour resolution
            tx.sendto(b"pop-router", (dst, 9999))
            if select.select([rx], [], [], 1.0)[0]:
                data, anc, _f, _src = rx.recvmsg(100, 64)
                return data, struct.unpack("=i", anc[0][2][:4])[0]
        return None
    finally:
        rx.close()
        tx.close()


def test_ipv4_forwarded_with_ttl_and_checksum(topo) -> None:
    ns, x = topo
    got = _udp_roundtrip(ns, "198.51.100.10")
    # The receiving kernel accepted it (IP header checksum valid) with the TTL decremented once.
    assert got == (b"pop-router", 63)
    assert x.stats()["forwarded"] >= 1
    # Counted on the ingress interface's row only.
    with netns(ns["r"]):
        ra, rb = socket.if_nametoindex("rA"), socket.if_nametoindex("rB")
    assert x.stats(ra)["forwarded"] >= 1 and x.stats(rb)["forwarded"] == 0
    assert set(x.stats_by_interface()) == {ra}


def test_ipv6_forwarded_with_hop_limit(topo) -> None:
    ns, x = topo
    ipv6_udp_cksum_ok = _udp_roundtrip(ns, "2001:db8:100::10", v6=True)
    assert ipv6_udp_cksum_ok is not None and ipv6_udp_cksum_ok[1] == 63
    assert x.stats()["forwarded"] >= 1


def test_no_route_and_unresolved_neighbour_go_to_the_kernel(topo) -> None:
    ns, x = topo
    # 10.9.1.2 is not in our LPM: XDP_PASS, and the kernel forwards it (TTL 63 as well).
    assert _udp_roundtrip(ns, "10.9.1.2") == (b"pop-router", 63)
    assert x.stats()["passed_no_route"] >= 1
    before = x.stats()["passed_neighbour"]
    with netns(ns["a"]):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", ("203.0.113.10", 9999))
        s.close()
    for _ in range(50):
        if x.stats()["passed_neighbour"] > before:
            break
        select.select([], [], [], 0.02)  # poll
    assert x.stats()["passed_neighbour"] == before + 1


def test_ttl_one_is_passed_and_answered_by_the_kernel(topo) -> None:
    ns, x = topo
    with netns(ns["a"]):
        icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        assert _udp_roundtrip(ns, "198.51.100.10", ttl=1) is None  # never reaches B
        assert x.stats()["passed_ttl"] >= 1
        assert select.select([icmp], [], [], 2.0)[0], "no ICMP time exceeded"
        pkt = icmp.recv(200)
        assert pkt[(pkt[0] & 15) * 4] == 11  # ICMP type 11, time exceeded, from the kernel slow path
    finally:
        icmp.close()


def test_group_switch_moves_traffic_and_pushes_mpls(topo) -> None:
    """One group write re-points every prefix of the group: here to a nexthop that pushes labels."""
    ns, x = topo
    with netns(ns["b"]):
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x8847))
        cap.bind(("bR", 0))
    try:
        x.set_group(10, [2])
        with netns(ns["a"]):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            s.sendto(b"labelled", ("198.51.100.10", 9999))
            s.close()
        assert select.select([cap], [], [], 2.0)[0], "no MPLS frame"
        frame = cap.recv(200)
        assert frame[12:14] == b"\x88\x47"
        l1, l2 = struct.unpack("!II", frame[14:22])
        assert (l1 >> 12, (l1 >> 8) & 1, l1 & 0xFF) == (100, 0, 63)  # label, bottom-of-stack, TTL copied
        assert (l2 >> 12, (l2 >> 8) & 1, l2 & 0xFF) == (200, 1, 63)
        assert frame[22] >> 4 == 4 and frame[22 + 8] == 63  # the IPv4 packet follows, TTL decremented
        assert x.stats()["mpls_pushed"] >= 1
    finally:
        cap.close()


async def test_kernel_writer_feeds_the_xdp_maps(topo) -> None:
    """The XDP maps follow the kernel writer: same prefix -> group -> nexthop, failover included."""
    import asyncio

    from common.model import FibEntry
    from fib.kernel import KernelFib, set_compat_mode
    from fib.xdp.mirror import XdpMirror

    ns, x = topo
    r = ns["r"]
    set_compat_mode(r, 0)
    subprocess.run(["ip", "netns", "exec", ns["r"], "ping", "-c", "1", "-W", "1", "10.9.1.2"], capture_output=True)
    fib = KernelFib(protocol=200, netns=r, metric=30)
    fib.mirror = XdpMirror(x, r)
    task = asyncio.create_task(fib.run())
    p = ipaddress.ip_network("192.0.2.0/24")
    sh(f"ip -n {ns['b']} addr add 192.0.2.10/24 dev bR")
    fib.submit(p, FibEntry(p, (ipaddress.ip_address("10.9.1.2"),), (), ()))
    await asyncio.wait_for(fib.wait_idle(), 10)
    v = fib.mirror.view()
    assert v["routes"] == 1 and v["groups"] == 1 and v["nexthops_valid"] == 1
    before = x.stats()["forwarded"]
    got = await asyncio.get_running_loop().run_in_executor(None, _udp_roundtrip, ns, "192.0.2.10")
    assert got == (b"pop-router", 63)
    assert x.stats()["forwarded"] > before  # forwarded by XDP from maps the writer filled
    fib.submit(p, None)
    await asyncio.wait_for(fib.wait_idle(), 10)
    assert fib.mirror.view()["routes"] == 0
    task.cancel()
    fib.close()


def test_xdp_maps_equal_kernel_fib_after_random_changes(topo) -> None:
    """Hypothesis: after any sequence of FIB changes (installs, moves between next-hop sets and label
    stacks, withdrawals, failovers and recoveries), the XDP maps forward every prefix exactly as the
    kernel does (same group, same members, same egress) and push the labels of the writer's nexthops.
    Each example runs a fresh writer against the same namespaces and cleans up after itself."""
    import asyncio
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from common.model import FibEntry
    from fib.kernel import KernelFib, set_compat_mode
    from fib.xdp.mirror import XdpMirror

    ns, x = topo
    r = ns["r"]
    set_compat_mode(r, 0)
    sh(f"ip -n {r} addr add 10.9.1.3/24 dev rB 2>/dev/null || true")
    gws = [ipaddress.ip_address(g) for g in ("10.9.1.2", "10.9.1.5", "10.9.1.6")]
    prefixes = [ipaddress.ip_network(f"192.0.2.{i * 32}/27") for i in range(8)]
    label_stacks = [(), (100,), (200, 201)]
    compared: list[int] = []

    def kernel_view() -> dict:
        routes = json.loads(subprocess.run(["ip", "-n", r, "-json", "route", "show", "proto", "200"],
                                           capture_output=True, text=True).stdout or "[]")
        nhs = {n["id"]: n for n in json.loads(subprocess.run(["ip", "-n", r, "-json", "nexthop", "show"],
                                                              capture_output=True, text=True).stdout or "[]")}
        return {ipaddress.ip_network(rt["dst"]): tuple(m["id"] for m in nhs[rt["nhid"]]["group"])
                for rt in routes}

    def check(fib: KernelFib) -> None:
        maps = x.dump()
        kernel = kernel_view()
        xdp = {p: maps["groups"].get(gid) for p, gid in maps["routes"].items() if p in set(prefixes)}
        assert xdp == kernel
        compared.append(len(xdp))
        # Every member the program can pick has its nexthop entry, on the kernel's egress, with the labels.
        for members in xdp.values():
            for m in members:
                _gw, oif, labels = fib.nh_key[m]
                assert maps["nexthops"][m][0] == oif and maps["nexthops"][m][2] == labels

    async def run(ops: list[tuple]) -> None:
        fib = KernelFib(protocol=200, netns=r, metric=30)
        fib.mirror = XdpMirror(x, r)
        task = asyncio.create_task(fib.run())
        try:
            for op in ops:
                if op[0] == "set":
                    _, i, prim_idx, labels, backup_labels = op
                    p = prefixes[i]
                    prim = tuple(sorted((gws[j] for j in prim_idx), key=int))
                    rest = tuple(g for g in gws if g not in prim)[:1]
                    fib.submit(p, FibEntry(p, prim, labels, rest, backup_labels if rest else ()))
                elif op[0] == "del":
                    fib.submit(prefixes[op[1]], None)
                elif op[0] == "fail":
                    await fib.fail_gateway(gws[op[1]])
                elif op[0] == "recover":
                    await fib.recover_gateway(gws[op[1]])
                else:
                    await asyncio.wait_for(fib.wait_idle(), 10)
                    check(fib)
            await asyncio.wait_for(fib.wait_idle(), 10)
            check(fib)
        finally:  # leave nothing for the next example
            for g in list(fib.dead):
                await fib.recover_gateway(g)
            for p in prefixes:
                fib.submit(p, None)
            await asyncio.wait_for(fib.wait_idle(), 10)
            task.cancel()
            fib.close()

    install = st.tuples(st.just("set"), st.integers(0, 7), st.sets(st.integers(0, 2), min_size=1, max_size=2),
                        st.sampled_from(label_stacks), st.sampled_from(label_stacks))
    op = st.one_of(
        install, install, install,  # installs weigh more: a table to compare needs routes in it
        st.tuples(st.just("del"), st.integers(0, 7)),
        st.tuples(st.just("fail"), st.integers(0, 2)),
        st.tuples(st.just("recover"), st.integers(0, 2)),
        st.just(("check",)),
    )

    @settings(max_examples=50, deadline=None, database=None, derandomize=True)  # same examples every run
    @given(st.lists(op, min_size=4, max_size=40))
    def prop(ops: list[tuple]) -> None:
        asyncio.run(run(ops))

    prop()
    assert sum(compared) > 40, compared  # the property was checked on real content, not on empty maps


def test_ecmp_spreads_flows_over_members(topo) -> None:
    """Group of two members that differ visibly on the wire (one pushes a label): 64 flows, both used."""
    ns, x = topo
    x.set_group(10, [1, 2])
    with netns(ns["b"]):
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        cap.bind(("bR", 0))
        cap.setblocking(False)
    seen = {"ip": 0, "mpls": 0}
    try:
        with netns(ns["a"]):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for port in range(20000, 20064):  # one flow per source port
            with netns(ns["a"]):
                s.close()
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("10.9.0.2", port))
            s.sendto(b"flow", ("198.51.100.10", 9999))
        s.close()
        deadline = 100
        while deadline and sum(seen.values()) < 64:
            if not select.select([cap], [], [], 0.05)[0]:  # poll
                deadline -= 1
                continue
            f = cap.recv(200)
            if f[12:14] == b"\x88\x47":
                seen["mpls"] += 1
            elif f[12:14] == b"\x08\x00" and f[14 + 9] == 17 and f[30:34] == socket.inet_aton("198.51.100.10"):
                seen["ip"] += 1
    finally:
        cap.close()
    assert seen["ip"] + seen["mpls"] == 64 and seen["ip"] >= 8 and seen["mpls"] >= 8, seen


def test_fragments_go_to_the_kernel_and_are_delivered(topo) -> None:
    ns, x = topo
    before = x.stats()["passed_fragment"]
    with netns(ns["b"]):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("0.0.0.0", 9998))
    with netns(ns["a"]):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: let it fragment
    try:
        payload = bytes(range(256)) * 12  # 3,072 bytes: three fragments at MTU 1500
        got = None
        for _ in range(3):  # the first datagram may wait for neighbour resolution
            tx.sendto(payload, ("198.51.100.10", 9998))
            if select.select([rx], [], [], 1.0)[0]:
                got = rx.recv(5000)
                break
        assert got == payload  # reassembled at B: every fragment went through the kernel's slow path
        assert x.stats()["passed_fragment"] >= before + 3
    finally:
        rx.close()
        tx.close()


def _mpls_stack(ns: dict[str, str], dst: str) -> list[int]:
    """Send one UDP datagram from A to ``dst``; return the label stack of the MPLS frame B receives."""
    with netns(ns["b"]):
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x8847))
        cap.bind(("bR", 0))
    try:
        with netns(ns["a"]):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            s.sendto(b"labelled", (dst, 9999))
            s.close()
        assert select.select([cap], [], [], 2.0)[0], "no MPLS frame"
        frame = cap.recv(200)
        labels, off = [], 14
        while True:
            (e,) = struct.unpack("!I", frame[off:off + 4])
            labels.append(e >> 12)
            off += 4
            if e & 0x100:  # bottom of stack
                return labels
    finally:
        cap.close()


async def test_route_labels_reach_the_wire_through_the_writer(topo) -> None:
    """Labels from the RIB (policy or RFC 8277) ride on the nexthop objects the writer creates: on
    this kernel (no MPLS) the kernel objects are plain and XDP pushes the labels; the backup path's
    own labels are used after a failover, which stays one group write."""
    import asyncio
    import json

    from common.model import FibEntry
    from fib.kernel import KernelFib, set_compat_mode
    from fib.xdp.mirror import XdpMirror

    ns, x = topo
    r, b = ns["r"], ns["b"]
    set_compat_mode(r, 0)
    sh(f"ip -n {b} addr add 10.9.1.7/24 dev bR && ip -n {b} addr add 192.0.2.10/24 dev bR")
    for gw in ("10.9.1.2", "10.9.1.7"):  # resolve both neighbours (XDP needs their MACs)
        subprocess.run(["ip", "netns", "exec", r, "ping", "-c", "1", "-W", "1", gw], capture_output=True)
    fib = KernelFib(protocol=200, netns=r, metric=30)
    fib.mirror = XdpMirror(x, r)
    task = asyncio.create_task(fib.run())
    try:
        p = ipaddress.ip_network("192.0.2.0/24")
        primary, backup = ipaddress.ip_address("10.9.1.2"), ipaddress.ip_address("10.9.1.7")
        fib.submit(p, FibEntry(p, (primary,), (300,), (backup,), (400, 401)))
        q = ipaddress.ip_network("192.0.3.0/24")  # same gateway, no labels: a separate nexthop object
        fib.submit(q, FibEntry(q, (primary,), (), ()))
        await asyncio.wait_for(fib.wait_idle(), 10)
        assert sorted(k[2] for k in fib.nh_key.values()) == [(), (300,), (400, 401)]
        nhs = json.loads(subprocess.run(["ip", "-n", r, "-json", "nexthop", "show", "proto", "200"],
                                        capture_output=True, text=True, check=True).stdout)
        assert not any("encap" in n for n in nhs)  # no kernel MPLS here: plain objects
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, _mpls_stack, ns, "192.0.2.10") == [300]
        # One group rewritten: the unlabeled route has no backup, so its group keeps its member.
        assert await fib.fail_gateway(primary) == 1
        assert await loop.run_in_executor(None, _mpls_stack, ns, "192.0.2.10") == [400, 401]
    finally:
        task.cancel()
        fib.close()


_FIRST_RUN = r"""
import asyncio, ipaddress, sys
from pathlib import Path
from fib.kernel import KernelFib, set_compat_mode
from fib.xdp.loader import XdpProgram
from fib.xdp.mirror import XdpMirror
from common.model import FibEntry

async def main(r, pin_dir):
    set_compat_mode(r, 0)
    fib = KernelFib(protocol=200, netns=r, metric=30)
    prog = XdpProgram(pin_dir=Path(pin_dir))
    prog.attach("rA", r)
    fib.mirror = XdpMirror(prog, r)
    fib.mirror.start_monitor(fib)
    task = asyncio.create_task(fib.run())
    p = ipaddress.ip_network("192.0.2.0/24")
    fib.submit(p, FibEntry(p, (ipaddress.ip_address("10.9.1.2"),), (), ()))
    await fib.wait_idle()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until the test SIGKILLs this process

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_pinned_maps_keep_the_fast_path_across_a_daemon_kill(topo, tmp_path) -> None:
    """The writer process is SIGKILLed: its XDP program stays attached with its pinned maps and keeps
    forwarding; the next process reuses the maps, adopts the kernel FIB and writes nothing to them."""
    import ctypes
    import os
    import signal
    import sys

    from fib.kernel import KernelFib
    from fib.xdp.loader import ROOT, ensure_bpffs, read_pinned_counters
    from fib.xdp.mirror import XdpMirror

    ns, _x = topo
    r, b = ns["r"], ns["b"]
    sh(f"ip -n {b} addr add 192.0.2.10/24 dev bR")
    subprocess.run(["ip", "netns", "exec", r, "ping", "-c", "1", "-W", "1", "10.9.1.2"], capture_output=True)
    mnt = tmp_path / "bpffs"
    assert ensure_bpffs(mnt)  # a private bpffs for this test (nothing mounted at /sys/fs/bpf here)
    pin_dir = mnt / "pop-router"
    child = subprocess.Popen([sys.executable, "-c", _FIRST_RUN, r, str(pin_dir)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    prog = None
    fib = None
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with netns(r):
            ra = socket.if_nametoindex("rA")
        assert _udp_roundtrip(ns, "192.0.2.10") == (b"pop-router", 63)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        # Nobody runs now: the program is still attached and forwards from the pinned maps.
        link = subprocess.run(["ip", "-n", r, "link", "show", "rA"], capture_output=True, text=True).stdout
        assert "xdp" in link
        before = read_pinned_counters(pin_dir, ra)["forwarded"]
        assert _udp_roundtrip(ns, "192.0.2.10") == (b"pop-router", 63)
        assert read_pinned_counters(pin_dir, ra)["forwarded"] == before + 1
        # The restarted writer: adopt the kernel FIB, reuse the maps, nothing to rewrite.
        from fib.xdp.loader import XdpProgram

        fib = KernelFib(protocol=200, netns=r, metric=30)
        assert fib.adopt() == 1
        prog = XdpProgram(pin_dir=pin_dir)
        assert prog.reused
        mirror = XdpMirror(prog, r)  # refills the (unpinned) devmap: before the attach
        # No route, group or nexthop is written; only addresses that changed while nobody watched
        # (an IPv6 link-local appearing late, say) are.
        changed_addresses = len(mirror.addresses ^ mirror.local)  # mirror.local: read back from the maps
        assert mirror.sync(fib) == changed_addresses
        prog.attach("rA", r)  # replaces the orphaned program atomically
        assert mirror.view()["routes"] == 1 and prog.stats(ra)["forwarded"] == before + 1  # counters kept
        assert _udp_roundtrip(ns, "192.0.2.10") == (b"pop-router", 63)
        assert prog.stats(ra)["forwarded"] == before + 2
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        if prog is not None:
            prog.close()
        if fib is not None:
            fib.close()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.umount2(str(mnt).encode(), 2)  # MNT_DETACH


async def test_unreachable_neighbour_sends_its_nexthop_to_the_slow_path_at_once(topo) -> None:
    """Neighbour notifications, not the periodic re-read, move a nexthop to the kernel and back."""
    import asyncio
    import time

    from common.model import FibEntry
    from fib.kernel import KernelFib, set_compat_mode
    from fib.xdp.mirror import XdpMirror

    ns, x = topo
    r, b = ns["r"], ns["b"]
    set_compat_mode(r, 0)
    sh(f"ip -n {b} addr add 192.0.2.10/24 dev bR")
    subprocess.run(["ip", "netns", "exec", r, "ping", "-c", "1", "-W", "1", "10.9.1.2"], capture_output=True)
    fib = KernelFib(protocol=200, netns=r, metric=30)
    fib.mirror = mirror = XdpMirror(x, r)
    task = asyncio.create_task(fib.run())
    try:
        p = ipaddress.ip_network("192.0.2.0/24")
        fib.submit(p, FibEntry(p, (ipaddress.ip_address("10.9.1.2"),), (), ()))
        await asyncio.wait_for(fib.wait_idle(), 10)
        mirror.start_monitor(fib)
        (nid,) = fib.nh_key
        assert mirror.nexthops[nid].valid

        async def valid_after(cmd: str) -> tuple[bool, float]:
            t0 = time.monotonic()
            want = "failed" not in cmd
            sh(cmd)
            for _ in range(400):
                if mirror.nexthops[nid].valid == want:
                    break
                await asyncio.sleep(0.005)  # poll: the loop handles the notification meanwhile
            return mirror.nexthops[nid].valid, time.monotonic() - t0

        valid, took = await valid_after(f"ip -n {r} neigh replace 10.9.1.2 dev rB nud failed")
        assert not valid and took < 0.5, took
        before = x.stats()["passed_neighbour"]
        # XDP hands it to the kernel, which resolves the neighbour and delivers it.
        assert await asyncio.get_running_loop().run_in_executor(None, _udp_roundtrip, ns, "192.0.2.10") is not None
        assert x.stats()["passed_neighbour"] > before
        for _ in range(200):  # the kernel's resolution arrives as a notification too
            if mirror.nexthops[nid].valid:
                break
            await asyncio.sleep(0.01)  # poll: the notification is handled meanwhile
        assert mirror.nexthops[nid].valid and mirror.neighbour_events >= 2
    finally:
        mirror.stop_monitor()
        task.cancel()
        fib.close()


async def test_xdp_diff_reports_what_differs_from_the_kernel(topo) -> None:
    """`pop-router fib diff` also compares the XDP maps with the kernel FIB: in sync after the writer,
    and each kind of difference reported when the maps are changed behind its back."""
    import asyncio

    from common.model import FibEntry
    from fib.kernel import KernelFib, set_compat_mode
    from fib.netlink import RouteSocket
    from fib.xdp.mirror import XdpMirror, xdp_diff

    ns, x = topo
    r = ns["r"]
    set_compat_mode(r, 0)
    fib = KernelFib(protocol=200, netns=r, metric=30)
    fib.mirror = XdpMirror(x, r)
    task = asyncio.create_task(fib.run())

    def diff() -> dict:
        with netns(r):
            s = RouteSocket()
        try:
            routes, nhs = s.dump_owned(200, 254), {n.id: n for n in s.dump_nexthops()}
        finally:
            s.close()
        return xdp_diff(x.dump(), routes, nhs, 30)

    try:
        fixture_routes = diff()["extra"]  # the fixture wrote three routes straight into the maps
        assert len(fixture_routes) == 3
        ps = [ipaddress.ip_network(f"192.0.2.{i * 64}/26") for i in range(4)]
        for p in ps:
            fib.submit(p, FibEntry(p, (ipaddress.ip_address("10.9.1.2"),), (), ()))
        await asyncio.wait_for(fib.wait_idle(), 10)
        d = diff()
        assert (d["in_sync"], d["missing"], d["extra"], d["different"], d["bad_nexthops"]) == (
            4, [], fixture_routes, [], [])
        gid = fib.installed[ps[0]]
        x.del_route(ps[0])
        x.set_route(ipaddress.ip_network("192.0.3.0/24"), gid)
        (nid,) = fib.nh_key
        x.set_group(gid, [nid, 3])  # a member the kernel group does not have
        d = diff()
        assert d["missing"] == [str(ps[0])] and set(d["extra"]) == {"192.0.3.0/24", *fixture_routes}
        assert {r["prefix"] for r in d["different"]} == {str(p) for p in ps[1:]} and d["in_sync"] == 0
    finally:
        task.cancel()
        fib.close()


async def test_packets_to_the_router_itself_go_to_the_kernel_even_under_a_customer_route(topo) -> None:
    """A route of ours covering one of R's own addresses must not pull R's traffic off the box: the
    mirror writes R's addresses as local host entries, which the program hands to the kernel."""
    import asyncio

    from common.model import FibEntry
    from fib.kernel import KernelFib, set_compat_mode
    from fib.xdp.mirror import XdpMirror

    ns, x = topo
    r = ns["r"]
    set_compat_mode(r, 0)
    subprocess.run(["ip", "netns", "exec", r, "ping", "-c", "1", "-W", "1", "10.9.1.2"], capture_output=True)
    fib = KernelFib(protocol=200, netns=r, metric=30)
    fib.mirror = mirror = XdpMirror(x, r)
    task = asyncio.create_task(fib.run())
    with netns(r):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("10.9.1.1", 9997))
    try:
        p = ipaddress.ip_network("10.9.1.0/24")  # covers R's own 10.9.1.1
        fib.submit(p, FibEntry(p, (ipaddress.ip_address("10.9.1.2"),), (), ()))
        await asyncio.wait_for(fib.wait_idle(), 10)
        assert ipaddress.ip_network("10.9.1.1/32") in mirror.local
        assert x.dump()["routes"][ipaddress.ip_network("10.9.1.1/32")] == 0
        before = x.stats()["passed_local"]
        got = None
        for _ in range(3):
            with netns(ns["a"]):
                tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                tx.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            tx.sendto(b"to the router", ("10.9.1.1", 9997))
            tx.close()
            if select.select([rx], [], [], 1.0)[0]:
                got = rx.recv(100)
                break
        assert got == b"to the router"  # delivered to R, not redirected to B
        assert x.stats()["passed_local"] > before
        # An address added later is followed through the notification.
        mirror.start_monitor(fib)
        sh(f"ip -n {r} addr add 10.9.1.77/24 dev rB")
        for _ in range(100):
            if ipaddress.ip_network("10.9.1.77/32") in mirror.local:
                break
            await asyncio.sleep(0.01)  # poll: the address notification is handled meanwhile
        assert x.dump()["routes"].get(ipaddress.ip_network("10.9.1.77/32")) == 0
    finally:
        mirror.stop_monitor()
        rx.close()
        task.cancel()
        fib.close()


def test_local_repair_rewrites_a_pinned_group_and_never_creates_one(tmp_path) -> None:
    """The BFD process's half of an XDP failover (bfd/repair.py): the group rewrite the daemon planned,
    written to the pinned ``groups`` map by path (libbpf, BPF_EXIST); a group that is gone is refused
    and not recreated. Plans come from ``XdpMirror.repair_writes`` (group_entry, the mirror's own
    encoding), so the value written is the one the mirror would write."""
    import ctypes
    import threading

    from bfd.repair import LocalRepair
    from fib.xdp.loader import XdpProgram, ensure_bpffs, group_entry

    mnt = tmp_path / "bpffs"
    assert ensure_bpffs(mnt)
    prog = None
    try:
        prog = XdpProgram(pin_dir=mnt / "pop-router")
        prog.set_group(7, [1])
        path = str(prog.pinned_map("groups"))
        results = []
        done = threading.Event()
        lr = LocalRepair(lambda r: (results.append(r), done.set()))
        lr.set_plans({"10.0.0.2": (b"", [(path, *group_entry(7, [2, 3]))])}, version=1)
        assert lr.trigger("10.0.0.2", 1.0) == 1 and done.wait(5)
        assert (results[0].map_writes, results[0].map_errors) == (1, 0)
        assert prog.read_groups()[7] == (2, 3)
        done.clear()
        lr.set_plans({"10.0.0.2": (b"", [(path, *group_entry(8, [2]))])}, version=2)  # group 8 never existed
        lr.trigger("10.0.0.2", 2.0)
        assert done.wait(5) and results[1].map_errors == 1
        assert 8 not in prog.read_groups()
        lr.close()
    finally:
        if prog is not None:
            prog.close()
        ctypes.CDLL(None, use_errno=True).umount2(str(mnt).encode(), 2)  # MNT_DETACH
