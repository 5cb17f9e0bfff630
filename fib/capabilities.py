"""Run-time probes of what this kernel can forward.

The kernel under test here has no MPLS (``CONFIG_MPLS_ROUTING`` and ``CONFIG_MPLS_IPTUNNEL`` unset,
no loadable modules): ``/proc/sys/net/mpls`` does not exist, AF_MPLS routes fail with EOPNOTSUPP and
an MPLS encap fails with "lwt encapsulation type not supported". Each probe really tries the
operation in our namespace (then undoes it), so the answer is the kernel's, not a guess.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from common.netns import netns as enter_netns
from fib.netlink import RouteSocket, encode_del_nexthop, encode_mpls_route, encode_nexthop


@dataclass(frozen=True, slots=True)
class MplsSupport:
    routing: bool  # incoming-label routes (AF_MPLS)
    iptunnel: bool  # label imposition on IP routes (lwtunnel MPLS encap)
    detail: str

    @property
    def usable(self) -> bool:
        return self.routing and self.iptunnel


def probe_mpls(netns: str | None = None, protocol: int = 200) -> MplsSupport:
    with enter_netns(netns):
        platform = Path("/proc/sys/net/mpls/platform_labels")
        has_proc = platform.exists()
        s = RouteSocket()
        lo = socket_if_index("lo")
    notes = []
    try:
        routing = False
        if not has_proc:
            notes.append("no /proc/sys/net/mpls (CONFIG_MPLS_ROUTING unset or module not loaded)")
        else:
            res = s.apply([encode_mpls_route(0, 1_048_575, [], ipaddress.ip_address("127.0.0.1"), lo,
                                             protocol=protocol)])
            routing = not res.errors
            if res.errors:
                notes.append(f"AF_MPLS route refused: {os.strerror(res.errors[0][1])}")
        probe_id = 0x7FFFFFF0
        res = s.apply([encode_nexthop(0, probe_id, ipaddress.ip_address("127.0.0.2"), lo, protocol=protocol,
                                      labels=[16])])
        iptunnel = not res.errors
        if iptunnel:
            s.apply([encode_del_nexthop(0, probe_id)])
        else:
            err = res.errors[0][1]
            notes.append("MPLS encap refused: " + ("lwt encapsulation type not supported"
                                                   if err == errno.EOPNOTSUPP else os.strerror(err)))
    finally:
        s.close()
    return MplsSupport(routing, iptunnel, "; ".join(notes) or "kernel MPLS available")


#: Where the kernel keeps the hard limit of each neighbour table (ARP, ND).
GC_THRESH3 = {4: Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3"),
              6: Path("/proc/sys/net/ipv6/neigh/default/gc_thresh3")}


def neighbour_table_warnings(peers_by_family: dict[int, int], limits: dict[int, int | None] | None = None,
                             ) -> list[str]:
    """Warnings for a neighbour table too small for the configured sessions.

    Every single-hop BGP/BFD peer is a neighbour entry, and ``gc_thresh3`` is a hard limit on the
    whole table, shared by every network namespace of the host (the sysctl exists only in the initial
    namespace). Above it the kernel cannot resolve a new neighbour: sends fail with ENOBUFS and
    sessions die of hold-timer expiry while the peers keep sending keepalives. Measured (issue 12):
    a lab with 1,000 customer sessions on one host (2,000 entries against the default 1,024) never
    converged, and every other namespace on the machine lost its neighbours too. Warned above half
    the limit, because the same table holds every other neighbour of the router.
    """
    if limits is None:
        limits = {}
        for fam, path in GC_THRESH3.items():
            try:
                limits[fam] = int(path.read_text())
            except (OSError, ValueError):
                limits[fam] = None
    out = []
    for fam, n in sorted(peers_by_family.items()):
        limit = limits.get(fam)
        if limit is None or n <= limit // 2:
            continue
        key = "ipv4" if fam == 4 else "ipv6"
        out.append(f"{n} IPv{fam} peers, but the kernel's neighbour table holds at most {limit} entries "
                   f"(net.{key}.neigh.default.gc_thresh3, shared by every namespace): above it neighbours cannot "
                   f"be resolved and sessions time out; set gc_thresh3 to at least {4 * n} (gc_thresh2 "
                   f"{2 * n}, gc_thresh1 {n}) in the initial namespace's sysctl configuration")
    return out


def socket_if_index(name: str) -> int:
    import socket

    return socket.if_nametoindex(name)
