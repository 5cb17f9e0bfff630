"""The XDP provider: mirrors the kernel writer's routes, groups and nexthops into the XDP maps.

Theory of operation
-------------------
The kernel FIB is the source of truth; this provider follows it. :class:`KernelFib` calls
:meth:`XdpMirror.sync` after every completed batch and every failover rewrite, and the mirror
brings the maps to the writer's current state (prefix -> group id -> nexthop ids, the same ids as
the kernel's), writing only what changed since the last sync. A failover is therefore one group
write in XDP too.

A nexthop entry needs the egress interface's MAC and the neighbour's MAC. Neighbours are read from
the kernel's table (our own netlink dump) at every sync, which the daemon also runs periodically; a
nexthop whose neighbour is not resolved (or has failed) is written as *not valid*, and the program
hands its packets to the kernel (which resolves it).

Known limits of this first version: neighbour changes are polled (1 s), not followed through
netlink notifications; counters are per program, not per interface; maps are not pinned, so a
daemon restart reloads the program (the kernel keeps forwarding meanwhile).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fib.netlink import RouteSocket
from fib.netns import netns as enter_netns
from fib.xdp.loader import MAX_LABELS, Nexthop, XdpProgram

if TYPE_CHECKING:
    from fib.kernel import KernelFib

log = logging.getLogger(__name__)


# NUD_REACHABLE, STALE, DELAY, PROBE, PERMANENT: states in which the kernel itself forwards.
_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80


def _neighbours_and_macs(netns: str | None) -> tuple[dict[tuple[str, int], bytes], dict[int, bytes]]:
    """Neighbour and interface MACs, read with our own netlink dumps: pyroute2's IPRoute cannot run
    from the daemon, whose loop (uvloop) it would have to share."""
    with enter_netns(netns):
        s = RouteSocket()
    try:
        neigh = {(str(dst), ifindex): ll for dst, ifindex, state, ll in s.dump_neighbours()
                 if ll and state & _USABLE}
        return neigh, s.dump_link_macs()
    finally:
        s.close()


class XdpMirror:
    def __init__(self, program: XdpProgram, netns: str | None = None) -> None:
        self.prog = program
        self.netns = netns
        self.routes: dict = {}  # prefix -> group id written
        self.groups: dict[int, tuple[int, ...]] = {}
        self.nexthops: dict[int, Nexthop] = {}
        self.writes = 0
        self.too_many_labels: set[int] = set()

    def sync(self, fib: KernelFib) -> int:
        """Bring the maps to ``fib``'s state; returns the number of map writes."""
        writes = 0
        neigh, macs = _neighbours_and_macs(self.netns)
        for nid, (gw, oif, labels) in list(fib.nh_key.items()):
            dmac = neigh.get((str(gw), oif))
            if len(labels) > MAX_LABELS:  # the program pushes at most 3: leave such a hop to the kernel
                if nid not in self.too_many_labels:
                    log.warning("nexthop %d (%s) has %d labels, XDP pushes at most %d: slow path", nid, gw,
                                len(labels), MAX_LABELS)
                    self.too_many_labels.add(nid)
                hop = Nexthop(oif, macs.get(oif, b"\0" * 6), b"\0" * 6, valid=False)
            else:
                hop = Nexthop(oif, macs.get(oif, b"\0" * 6), dmac or b"\0" * 6, valid=dmac is not None,
                              labels=labels)
            if self.nexthops.get(nid) != hop:
                self.prog.set_nexthop(nid, hop, self.netns)
                self.nexthops[nid] = hop
                writes += 1
        for gid, g in list(fib.group_by_id.items()):
            if g.members and self.groups.get(gid) != g.members:
                self.prog.set_group(gid, list(g.members))
                self.groups[gid] = g.members
                writes += 1
        for prefix, gid in list(fib.installed.items()):
            if self.routes.get(prefix) != gid and gid in self.groups:
                self.prog.set_route(prefix, gid)
                self.routes[prefix] = gid
                writes += 1
        for prefix in [p for p in self.routes if p not in fib.installed]:
            self.prog.del_route(prefix)
            del self.routes[prefix]
            writes += 1
        self.writes += writes
        return writes

    def view(self) -> dict:
        return {
            "routes": len(self.routes), "groups": len(self.groups), "nexthops": len(self.nexthops),
            "nexthops_valid": sum(1 for h in self.nexthops.values() if h.valid), "map_writes": self.writes,
            "attached": [{"ifindex": i, "mode": "native" if f & 4 else "generic"} for _ns, i, f in self.prog.attached],
            "counters": self.prog.stats(),
        }
