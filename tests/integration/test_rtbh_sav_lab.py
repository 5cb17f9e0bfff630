"""RTBH and source address validation end to end (issue 10): real FRR and BIRD peers, the whole daemon,
real packets through the PoP's XDP and kernel paths.

The lab is ``containerlab/pop-rtbh.clab.yml``: globex (BIRD, ``import.rtbh: true``, ``sav:
prefix-list``) on the PoP's eth2, acme (FRR, no ``import.rtbh``) on eth1, a host ``src`` right behind
the PoP on eth3. eth1 and eth2 run the XDP fast path, eth3 does not, so traffic towards globex's host2
from host1 (behind acme) takes the XDP path and traffic from src the kernel path.

Every packet is a tagged UDP datagram (``udp_probe.py``); host2 and src run a receiver that logs what
arrives and to which of its addresses. A drop is proved, without waiting for something not to
happen, by ordering: the dropped datagrams are counted by the PoP (polled), then a marker datagram is
sent by the same sender along the same path to an address that is not dropped; once the marker is in
the receiver's log, a dropped datagram that had got through would be there before it.

1. globex's BIRD protocol ``rtbh4`` announces 203.0.113.66/32 with BLACKHOLE: ``show routes`` has it
   with ``rtbh``, the kernel a ``blackhole`` route of our protocol, the XDP trie a drop entry, our
   nftables set the prefix. Datagrams to .66 are dropped on eth1 by XDP (``dropped_blackhole``) and
   on eth3 by the kernel route (counted per interface by nftables: ``kernel_dropped_blackhole``,
   ``pop_router_kernel_blackhole_dropped_packets_total``), while .10 keeps receiving.
2. Disabling ``rtbh4`` withdraws it: .66 receives again, from both senders.
3. globex's blackhole request for 198.51.100.7/32 (acme's space) is rejected ``not_in_prefix_list``,
   acme's own one ``rtbh_not_allowed``; neither reaches the kernel.
4. SAV: host2 sends from a spoofed source (acme's 198.51.100.99, which the PoP routes, and the PoP's
   kernel does no reverse-path filtering: only SAV can drop it): dropped on eth2 and counted as
   ``dropped_spoofed``; from its own address the datagram arrives at src.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.runner import Lab

from .lab import CLAB, established, kernel_routes, metric_value, metrics, run_in, running, show
from .netns import wait_for

TOPOLOGY = CLAB / "pop-rtbh.clab.yml"
PROBE = Path(__file__).with_name("udp_probe.py")
PORT = 9000
ACME, GLOBEX = "10.0.1.2", "10.0.3.2"
ROUTES = {"198.51.100.0/24": [ACME], "203.0.113.0/24": [GLOBEX]}
HOST2, BLACKHOLED, SPOOFED = "203.0.113.10", "203.0.113.66", "198.51.100.99"
SRC = "10.0.5.10"
N = 5  # datagrams per check


class Receiver:
    """The UDP receiver running in ``node``: the datagrams it logged, as (source, destination, tag)."""

    def __init__(self, lab: Lab, node: str) -> None:
        lab._background(lab.topo.nodes[node], [sys.executable, str(PROBE), "recv", str(PORT)], "udp-recv")
        self.log = lab.state / f"{node}.udp-recv.log"
        wait_for(lambda: self.log.read_text().startswith("listening"), timeout=10,
                 what=f"receiver in {node} ({self.log})")

    def got(self) -> list[tuple[str, str, str]]:
        return [(f[0], f[1], f[2]) for f in (line.split() for line in self.log.read_text().splitlines()[1:])]

    def tags(self, tag: str) -> list[tuple[str, str]]:
        """(source, destination) of each datagram of ``tag`` received."""
        return [(s, d) for s, d, t in self.got() if t == tag]


def send(lab: Lab, node: str, dst: str, tag: str, count: int = N, src: str | None = None) -> None:
    run_in(lab, node, sys.executable, str(PROBE), "send", dst, str(PORT), tag, str(count), *([src] if src else []))


def xdp(lab: Lab, interface: str, action: str) -> int:
    return show(lab, "xdp")["counters_by_interface"][interface][action]


def kernel_drops(lab: Lab) -> dict[str, int]:
    return show(lab, "xdp")["kernel_dropped_blackhole"] or {}


def blackholes(lab: Lab) -> list[str]:
    out = run_in(lab, "pop", "ip", "-j", "-4", "route", "show", "proto", "200", "type", "blackhole").stdout
    return sorted(r["dst"] for r in json.loads(out or "[]"))


def nft_blackholes(lab: Lab) -> list[str]:
    out = json.loads(run_in(lab, "pop", "nft", "-j", "list", "set", "inet", "pop_router", "blackholes4").stdout)
    return [str(e) for item in out["nftables"] for e in item.get("set", {}).get("elem", [])]


def birdc(lab: Lab, *cmd: str) -> None:
    run_in(lab, "globex", "birdc", "-s", "/run/bird/bird.ctl", *cmd)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(TOPOLOGY, "rtbh") as lab:
        wait_for(lambda: established(lab) == {ACME, GLOBEX}, timeout=60, what="both sessions Established")
        wait_for(lambda: kernel_routes(lab) == ROUTES, timeout=30, what="the customers' routes in the kernel")
        yield lab


@pytest.fixture(scope="module")
def host2(lab: Lab) -> Receiver:
    return Receiver(lab, "host2")


@pytest.fixture(scope="module")
def src(lab: Lab) -> Receiver:
    return Receiver(lab, "src")


def deliver(lab: Lab, rx: Receiver, sender: str, dst: str, tag: str, src: str | None = None) -> None:
    """``N`` datagrams ``tag`` from ``sender`` to ``dst`` all arrive at ``rx`` (polled)."""
    send(lab, sender, dst, tag, src=src)
    wait_for(lambda: len(rx.tags(tag)) == N, timeout=10, what=f"{tag}: {N} datagrams from {sender} at {dst}")
    assert {d for _, d in rx.tags(tag)} == {dst}


def test_rtbh_requests_outside_the_rules_are_rejected_and_kept_out_of_the_kernel(lab: Lab) -> None:
    rejected = {(r["prefix"], r["peer"]): r["reason"] for r in show(lab, "routes", "--rejected")}
    assert rejected[("198.51.100.7/32", GLOBEX)] == "not_in_prefix_list"  # acme's space
    assert rejected[("198.51.100.7/32", ACME)] == "rtbh_not_allowed"  # its own space, no import.rtbh
    assert not any(r["prefix"] == "198.51.100.7/32" for r in show(lab, "routes"))
    assert kernel_routes(lab) == ROUTES and blackholes(lab) == []
    m = metrics(lab)
    assert (metric_value(m, "pop_router_bgp_prefixes_rejected_total", peer=GLOBEX,
                         reason="not_in_prefix_list") or 0) >= 1
    assert (metric_value(m, "pop_router_bgp_prefixes_rejected_total", peer=ACME, reason="rtbh_not_allowed") or 0) >= 1


def test_rtbh_drops_on_the_xdp_and_the_kernel_path_until_withdrawn(lab: Lab, host2: Receiver) -> None:
    # Before: .66 receives from both senders (host1 through eth1's XDP program, src through eth3).
    deliver(lab, host2, "host1", BLACKHOLED, "before-xdp")
    deliver(lab, host2, "src", BLACKHOLED, "before-kernel")
    xdp_before, kernel_before = xdp(lab, "eth1", "dropped_blackhole"), kernel_drops(lab)

    birdc(lab, "enable", "rtbh4")
    try:
        wait_for(lambda: blackholes(lab) == [BLACKHOLED], timeout=20, what="the blackhole route in the kernel")
        (route,) = [r for r in show(lab, "routes") if r["prefix"] == f"{BLACKHOLED}/32"]
        assert route["rtbh"] and route["best"] and route["peer"] == GLOBEX, route
        assert "65535:666" in route["received_communities"], route
        assert kernel_routes(lab)["203.0.113.0/24"] == [GLOBEX]  # the covering route is unchanged
        wait_for(lambda: show(lab, "xdp")["blackholes"] == 1, timeout=10, what="the XDP drop entry")
        wait_for(lambda: nft_blackholes(lab) == [BLACKHOLED], timeout=10, what="the prefix in our nftables set")

        # XDP path: host1's datagrams enter on eth1 and are dropped by the program, not the kernel.
        send(lab, "host1", BLACKHOLED, "rtbh-xdp")
        wait_for(lambda: xdp(lab, "eth1", "dropped_blackhole") >= xdp_before + N, timeout=10,
                 what="XDP dropped_blackhole on eth1")
        deliver(lab, host2, "host1", HOST2, "marker-xdp")  # the same path, a live address of the prefix
        assert host2.tags("rtbh-xdp") == []
        assert kernel_drops(lab).get("eth1", 0) == kernel_before.get("eth1", 0)

        # Kernel path: src's datagrams enter on eth3 (no XDP) and are dropped by the blackhole route.
        send(lab, "src", BLACKHOLED, "rtbh-kernel")
        wait_for(lambda: kernel_drops(lab).get("eth3", 0) >= kernel_before.get("eth3", 0) + N, timeout=10,
                 what="kernel-path drops counted on eth3")
        deliver(lab, host2, "src", HOST2, "marker-kernel")
        assert host2.tags("rtbh-kernel") == []

        m = metrics(lab)
        assert metric_value(m, "pop_router_xdp_packets_total", interface="eth1",
                            action="dropped_blackhole") == xdp(lab, "eth1", "dropped_blackhole")
        assert (metric_value(m, "pop_router_kernel_blackhole_dropped_packets_total", interface="eth3") or 0) \
            >= kernel_before.get("eth3", 0) + N
    finally:
        birdc(lab, "disable", "rtbh4")

    wait_for(lambda: blackholes(lab) == [], timeout=20, what="the blackhole route withdrawn")
    assert not any(r["rtbh"] for r in show(lab, "routes"))
    wait_for(lambda: show(lab, "xdp")["blackholes"] == 0 and nft_blackholes(lab) == [], timeout=10,
             what="the XDP entry and the nftables element removed")
    assert kernel_routes(lab) == ROUTES
    deliver(lab, host2, "host1", BLACKHOLED, "after-xdp")
    deliver(lab, host2, "src", BLACKHOLED, "after-kernel")


def test_sav_drops_spoofed_sources_from_the_customer(lab: Lab, src: Receiver) -> None:
    x = show(lab, "xdp")
    (eth2,) = (i["ifindex"] for i in json.loads(run_in(lab, "pop", "ip", "-j", "link", "show", "eth2").stdout))
    assert x["sav"]["interfaces"] == [eth2] and x["sav"]["errors"] == 0
    before = xdp(lab, "eth2", "dropped_spoofed")
    # A legitimate source crosses eth2 (SAV on) to src.
    deliver(lab, src, "host2", SRC, "sav-legit", src=HOST2)

    run_in(lab, "host2", "ip", "addr", "add", f"{SPOOFED}/32", "dev", "eth1")
    try:
        send(lab, "host2", SRC, "sav-spoofed", src=SPOOFED)
        wait_for(lambda: xdp(lab, "eth2", "dropped_spoofed") >= before + N, timeout=10,
                 what="XDP dropped_spoofed on eth2")
        deliver(lab, src, "host2", SRC, "sav-marker", src=HOST2)
        assert src.tags("sav-spoofed") == []
        assert {s for s, _ in src.tags("sav-marker")} == {HOST2}
    finally:
        run_in(lab, "host2", "ip", "addr", "del", f"{SPOOFED}/32", "dev", "eth1")
    assert (metric_value(metrics(lab), "pop_router_xdp_packets_total", interface="eth2",
                         action="dropped_spoofed") or 0) >= before + N
    # Only the spoofed datagrams were dropped: acme's side (no SAV) has none.
    assert xdp(lab, "eth1", "dropped_spoofed") == 0
