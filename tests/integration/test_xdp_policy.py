"""XDP policy on real packets (issue 10): RTBH drop entries and source address validation.

Same topology as ``test_xdp.py`` (A -> R, XDP on R's rA -> B): the blackhole entries and the SAV
state are written through the kernel writer and its XDP provider (the dataplane's API), the packets
are real UDP datagrams from A's sockets, and the outcome is read from B's sockets and R's counters.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import select
import socket
import subprocess
from collections.abc import Iterator

import pytest

from common.model import FibEntry
from common.netns import netns
from fib.kernel import KernelFib, set_compat_mode
from fib.ops import BLACKHOLE_GID, SavAllow, SavEnable, SavRevoke
from fib.xdp.loader import BLACKHOLE_GROUP, XdpProgram
from fib.xdp.mirror import XdpMirror

from .netns import ip_json, sh, wait_for, write_fib
from .test_xdp import SO_NO_CHECK, mac, topo  # noqa: F401  (the fixture)

N = ipaddress.ip_network
A = ipaddress.ip_address


def send(ns: dict[str, str], dst: str, src: str | None = None, port: int = 9999) -> bool:
    """One datagram from A (from ``src`` if given) to ``dst``; True if B received it."""
    v6 = ":" in dst
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    with netns(ns["b"]):
        rx = socket.socket(fam, socket.SOCK_DGRAM)
        rx.bind(("::" if v6 else "0.0.0.0", port))
    with netns(ns["a"]):
        tx = socket.socket(fam, socket.SOCK_DGRAM)
        if not v6:
            tx.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        if src is not None:
            tx.bind((src, 0))
    try:
        for _ in range(2):  # the first may wait for neighbour resolution
            tx.sendto(b"policy", (dst, port))
            if select.select([rx], [], [], 0.5)[0]:
                return rx.recv(100) == b"policy"
        return False
    finally:
        rx.close()
        tx.close()


@pytest.fixture
def writer(topo) -> Iterator[tuple[dict[str, str], XdpProgram, KernelFib, int]]:  # noqa: F811
    ns, x = topo
    r = ns["r"]
    set_compat_mode(r, 0)
    sh("ip", "netns", "exec", r, "ping", "-c", "1", "-W", "1", "10.9.1.2", check=False)
    sh("ip", "-n", ns["b"], "addr", "add", "192.0.2.10/24", "dev", "bR")
    sh("ip", "-n", ns["b"], "addr", "add", "192.0.2.11/24", "dev", "bR")
    sh("ip", "-n", ns["b"], "addr", "add", "2001:db8:200::10/64", "dev", "bR", "nodad")
    # A's spoofing addresses (legitimately configured on A, unknown to R's allowed set).
    sh("ip", "-n", ns["a"], "addr", "add", "203.0.113.77/32", "dev", "aR")
    sh("ip", "-n", ns["a"], "addr", "add", "2001:db8:77::7/128", "dev", "aR", "nodad")
    # B's IPv6 neighbour entry, static: the fresh veth's ND is slow to settle, and these tests are about
    # policy, not resolution.
    sh("ip", "-n", r, "-6", "neigh", "replace", "2001:db8:91::2", "lladdr", mac(ns["b"], "bR").hex(":"),
       "dev", "rB", "nud", "permanent")
    # The fresh links' IPv6 (link-local addresses, ND) settle first: the tests count packets.
    wait_for(lambda: not subprocess.run(["ip", "netns", "exec", ns["a"], "ping", "-6", "-c", "1", "-W", "1",
                                         "2001:db8:9::1"], capture_output=True).returncode, what="A -> R over IPv6")
    fib = KernelFib(protocol=200, netns=r, metric=30)
    fib.mirror = XdpMirror(x, r)
    with netns(r):
        ra = socket.if_nametoindex("rA")
    try:
        yield ns, x, fib, ra
    finally:
        fib.close()


def _run(fn, *args):  # type: ignore[no-untyped-def]
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_blackhole_entry_drops_and_counts_while_the_neighbour_forwards(writer) -> None:
    ns, x, fib, ra = writer
    gw = (A("10.9.1.2"),)
    await write_fib(fib, [("192.0.2.0/24", FibEntry(N("192.0.2.0/24"), gw)),
                       ("192.0.2.10/32", FibEntry(N("192.0.2.10/32"), (), blackhole=True))])
    assert x.dump()["routes"][N("192.0.2.10/32")] == BLACKHOLE_GROUP == BLACKHOLE_GID
    assert ip_json(ns["r"], "-4", "route", "show", "192.0.2.10/32")[0]["type"] == "blackhole"
    before = x.stats(ra)
    assert not await _run(send, ns, "192.0.2.10")
    assert await _run(send, ns, "192.0.2.11")  # the rest of the /24 still forwards, through XDP
    after = x.stats(ra)
    assert after["dropped_blackhole"] - before["dropped_blackhole"] == 2  # both tries dropped in XDP
    assert after["forwarded"] > before["forwarded"]
    assert fib.mirror.view()["blackholes"] == 1
    assert fib.mirror.view()["counters"]["dropped_blackhole"] >= 2
    # Back to a normal route: forwarded again; withdrawn: the entry is gone from the trie.
    await write_fib(fib, [("192.0.2.10/32", FibEntry(N("192.0.2.10/32"), gw))])
    assert await _run(send, ns, "192.0.2.10")
    await write_fib(fib, [("192.0.2.10/32", FibEntry(N("192.0.2.10/32"), (), blackhole=True))])
    assert not await _run(send, ns, "192.0.2.10")
    await write_fib(fib, [("192.0.2.10/32", None)])
    assert N("192.0.2.10/32") not in x.dump()["routes"]
    assert await _run(send, ns, "192.0.2.10")


async def test_sav_drops_spoofed_sources_and_follows_live_updates(writer) -> None:
    ns, x, fib, ra = writer
    await write_fib(fib, [("192.0.2.0/24", FibEntry(N("192.0.2.0/24"), (A("10.9.1.2"),))),
                       ("2001:db8:200::/48", FibEntry(N("2001:db8:200::/48"), (A("2001:db8:91::2"),)))])
    res = fib.apply_sav([SavEnable(ra), SavAllow(ra, N("10.9.0.0/24")), SavAllow(ra, N("2001:db8:9::/64"))])
    assert res.clean
    before = x.stats(ra)
    assert await _run(send, ns, "192.0.2.10", "10.9.0.2")  # legitimate source: forwarded
    assert await _run(send, ns, "2001:db8:200::10", "2001:db8:9::2")
    assert not await _run(send, ns, "192.0.2.10", "203.0.113.77")  # spoofed: dropped
    assert not await _run(send, ns, "2001:db8:200::10", "2001:db8:77::7")
    after = x.stats(ra)
    assert after["dropped_spoofed"] - before["dropped_spoofed"] == 4  # two tries each
    # Packets to the router itself are never dropped by SAV (BGP, BFD from the customer's link).
    with netns(ns["r"]):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("10.9.0.1", 9996))
    try:
        with netns(ns["a"]):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind(("203.0.113.77", 0))
        tx.sendto(b"hello router", ("10.9.0.1", 9996))
        tx.close()
        assert select.select([rx], [], [], 2.0)[0] and rx.recv(100) == b"hello router"
    finally:
        rx.close()
    # Live: allow the spoofed prefix, then revoke it, then turn the check off. No reload.
    assert fib.apply_sav([SavAllow(ra, N("203.0.113.0/24"))]).clean
    assert await _run(send, ns, "192.0.2.10", "203.0.113.77")
    assert fib.apply_sav([SavRevoke(ra, N("203.0.113.0/24"))]).clean
    assert not await _run(send, ns, "192.0.2.10", "203.0.113.77")
    assert fib.apply_sav([SavEnable(ra, on=False)]).clean
    assert await _run(send, ns, "192.0.2.10", "203.0.113.77")
    view = fib.mirror.view()
    assert view["sav"][str(ra)] == {"on": False, "allowed": 2}
    assert view["counters_by_interface"][str(ra)]["dropped_spoofed"] >= 6


def test_sav_without_xdp_is_refused_with_a_result() -> None:
    fib = KernelFib(protocol=200)
    res = fib.apply_sav([SavEnable(7)])
    assert [r.errno for r in res] == [errno.EOPNOTSUPP]


async def test_sav_state_is_read_back_from_pinned_maps(tmp_path, writer) -> None:
    """A restart with pinned maps keeps the SAV state: the new mirror knows it and writes nothing."""
    ns, _x, _fib, ra = writer
    pin = tmp_path / "pins"
    from fib.xdp.loader import ensure_bpffs

    ensure_bpffs(tmp_path)
    try:
        first = XdpProgram(pin_dir=pin)
        m1 = XdpMirror(first, ns["r"])
        assert m1.apply_sav([SavEnable(ra), SavAllow(ra, N("10.9.0.0/24"))]).clean
        first.close()
        second = XdpProgram(pin_dir=pin)
        assert second.reused
        m2 = XdpMirror(second, ns["r"])
        assert m2.sav_on == {ra} and m2.sav_allowed == {ra: {N("10.9.0.0/24")}}
        writes = m2.writes
        assert m2.apply_sav([SavEnable(ra), SavAllow(ra, N("10.9.0.0/24"))]).clean
        assert m2.writes == writes
        second.close()
    finally:
        sh("umount", str(tmp_path), check=False)
