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


def socket_if_index(name: str) -> int:
    import socket

    return socket.if_nametoindex(name)
