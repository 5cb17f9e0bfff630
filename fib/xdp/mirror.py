"""The XDP provider: mirrors the kernel writer's routes, groups and nexthops into the XDP maps.

Theory of operation
-------------------
The kernel FIB is the source of truth; this provider follows it. :class:`KernelFib` calls
:meth:`XdpMirror.sync` after every completed batch and every failover rewrite, and the mirror
brings the maps to the writer's current state (prefix -> group id -> nexthop ids, the same ids as
the kernel's), writing only what changed since the last sync. A failover is therefore one group
write in XDP too. Many new routes at once (a table load) go in with ``bpf_map_update_batch``.

The router's own addresses go into the tries as host entries with group ``LOCAL_GROUP``: the
program hands those packets to the kernel even where a customer route covers the address. They
follow address notifications on the same socket as the neighbours.

A nexthop entry needs the egress interface's MAC, the neighbour's MAC and the labels to push (part
of the writer's nexthop key). Neighbours are followed through netlink notifications
(:meth:`start_monitor`): a neighbour that fails or is deleted makes its nexthops invalid at once,
and the program hands their packets to the kernel (which resolves or reports it); a neighbour that
resolves makes them valid. A full re-read of the neighbour table (:meth:`refresh`) runs at start,
after a notification overflow, and periodically as a backstop.

Restart: with pinned maps (:class:`~fib.xdp.loader.XdpProgram` ``reused``) the mirror starts from
what the maps hold, so the first sync after the kernel writer's adoption writes only differences.
The devmap cannot be pinned (see ``pop_xdp.c``) and is refilled here from the nexthops, so the
mirror must be created and synced *before* the new program is attached: the attach swaps the old
program for the new one atomically, and a frame must never meet an empty devmap (the lab's
SIGKILL test lost one ping in 600 when the order was the other way round).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING

from fib.netlink import (
    RTM_DELADDR,
    RTM_DELNEIGH,
    RTM_NEWADDR,
    RTM_NEWNEIGH,
    KernelNexthop,
    KernelRoute,
    RouteSocket,
    decode_neighbour,
    neighbour_monitor_socket,
    split_messages,
)
from fib.netns import netns as enter_netns
from fib.xdp.loader import LOCAL_GROUP, MAX_LABELS, Nexthop, XdpProgram, sum_counters

if TYPE_CHECKING:
    from fib.kernel import KernelFib

log = logging.getLogger(__name__)

# NUD_REACHABLE, STALE, DELAY, PROBE, PERMANENT: states in which the kernel itself forwards.
_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80
_ZERO_MAC = b"\0" * 6
_BATCH_MIN = 64  # route writes from this many on go through bpf_map_update_batch


class XdpMirror:
    def __init__(self, program: XdpProgram, netns: str | None = None) -> None:
        self.prog = program
        self.netns = netns
        self.routes: dict = {}  # prefix -> group id written
        self.groups: dict[int, tuple[int, ...]] = {}
        self.nexthops: dict[int, Nexthop] = {}
        self.writes = 0
        self.too_many_labels: set[int] = set()
        self.neigh: dict[tuple[str, int], bytes] = {}  # (address, ifindex) -> MAC, usable entries only
        self.macs: dict[int, bytes] = {}
        self.addresses: set = set()  # host prefixes of the router's own addresses (from the kernel)
        self.local: set = set()  # those written to the tries with LOCAL_GROUP
        self._waiting: set = set()  # prefixes not written yet: their group had no members
        self.neighbour_events = 0
        self._mon: socket.socket | None = None
        self._fib: KernelFib | None = None
        if program.reused:
            self._read_maps()
        self.refresh()

    def _read_maps(self) -> None:
        routes = self.prog.read_routes()
        self.routes = {p: g for p, g in routes.items() if g != LOCAL_GROUP}
        self.local = {p for p, g in routes.items() if g == LOCAL_GROUP}
        self.groups = self.prog.read_groups()
        self.nexthops = self.prog.read_nexthops()
        for ifindex in {h.ifindex for h in self.nexthops.values()}:  # the devmap is not pinned
            self.prog.set_tx_port(ifindex, self.netns)
        log.info("XDP maps reused from %s: %d routes, %d groups, %d nexthops", self.prog.pin_dir,
                 len(self.routes), len(self.groups), len(self.nexthops))

    def refresh(self) -> None:
        """Re-read neighbour and interface MACs with our own netlink dumps (pyroute2's IPRoute cannot
        share the daemon's uvloop)."""
        with enter_netns(self.netns):
            s = RouteSocket()
        try:
            self.neigh = {(str(dst), ifindex): ll for dst, ifindex, state, ll in s.dump_neighbours()
                          if ll and state & _USABLE}
            self.macs = s.dump_link_macs()
            self.addresses = {ipaddress.ip_network(a) for a, _ifindex in s.dump_addresses()}
        finally:
            s.close()

    def _hop(self, nid: int, gw: object, oif: int, labels: tuple[int, ...]) -> Nexthop:
        smac = self.macs.get(oif, _ZERO_MAC)
        if len(labels) > MAX_LABELS:  # the program pushes at most 3: leave such a hop to the kernel
            if nid not in self.too_many_labels:
                log.warning("nexthop %d (%s) has %d labels, XDP pushes at most %d: slow path", nid, gw,
                            len(labels), MAX_LABELS)
                self.too_many_labels.add(nid)
            return Nexthop(oif, smac, _ZERO_MAC, valid=False)
        dmac = self.neigh.get((str(gw), oif))
        return Nexthop(oif, smac, dmac or _ZERO_MAC, valid=dmac is not None, labels=labels)

    def sync(self, fib: KernelFib, *, refresh: bool = False) -> int:
        """Bring the maps to ``fib``'s state; returns the number of map writes.

        Nexthops and groups (a few thousand) are compared every time. Routes: the first sync
        compares the whole table; later ones only the prefixes the writer marked as changed
        (``fib.dirty``) and those a previous sync had to leave (their group had no members yet): a
        full compare of 1M routes takes ~1.5 s of the event loop, one UPDATE's prefixes microseconds.
        ``refresh`` re-reads neighbours, MACs and addresses only (`pop-router fib diff` is the check
        that the tries still match)."""
        full = self._fib is not fib
        if refresh:
            self.refresh()
        self._fib = fib
        writes = 0
        for nid, (gw, oif, labels) in list(fib.nh_key.items()):
            hop = self._hop(nid, gw, oif, labels)
            if self.nexthops.get(nid) != hop:
                self.prog.set_nexthop(nid, hop, self.netns)
                self.nexthops[nid] = hop
                writes += 1
        for gid, g in list(fib.group_by_id.items()):
            if g.members and self.groups.get(gid) != g.members:
                self.prog.set_group(gid, list(g.members))
                self.groups[gid] = g.members
                writes += 1
        writes += self._sync_local(fib)
        routes_get = self.routes.get
        local = self.addresses
        installed = fib.installed
        if full:
            candidates = installed.keys() | self.routes.keys()
        else:
            candidates = fib.dirty | self._waiting
        fib.dirty = set()
        self._waiting = set()
        new = []
        gone = []
        for p in candidates:
            gid = installed.get(p)
            if gid is None or p in local:
                if p in self.routes:
                    gone.append(p)
            elif routes_get(p) != gid:
                if gid in self.groups:
                    new.append((p, gid))
                else:
                    self._waiting.add(p)  # its group has no members in the maps yet
        if len(new) >= _BATCH_MIN:
            self.prog.set_routes(new)
        else:
            for p, gid in new:
                self.prog.set_route(p, gid)
        self.routes.update(new)
        for p in gone:
            if p not in local:
                self.prog.del_route(p)
            del self.routes[p]
        writes += len(new) + len(gone)
        self.writes += writes
        return writes

    def _sync_local(self, fib: KernelFib) -> int:
        """Host entries for the router's own addresses (a local address wins over an equal route of ours,
        as the kernel's local table does)."""
        writes = 0
        for p in self.addresses - self.local:
            self.prog.set_route(p, LOCAL_GROUP)
            self.routes.pop(p, None)
            writes += 1
        for p in self.local - self.addresses:
            gid = fib.installed.get(p)
            if gid is not None and gid in self.groups:
                self.prog.set_route(p, gid)
                self.routes[p] = gid
            else:
                self.prog.del_route(p)
            writes += 1
        self.local = set(self.addresses)
        return writes

    # --- neighbour notifications ---------------------------------------------------------------------
    def start_monitor(self, fib: KernelFib) -> None:
        self._fib = fib
        with enter_netns(self.netns):
            self._mon = neighbour_monitor_socket()
        asyncio.get_running_loop().add_reader(self._mon.fileno(), self._on_neighbour)

    def stop_monitor(self) -> None:
        if self._mon is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._mon.fileno())
            self._mon.close()
            self._mon = None

    def _on_neighbour(self) -> None:
        assert self._mon is not None
        changed: set[tuple[str, int]] = set()
        reread = False  # the tables must be read again: notifications were lost, or addresses changed
        while True:
            try:
                data = self._mon.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.warning("neighbour notifications overflowed: re-reading the neighbour table")
                reread = True
                continue
            for kind, msg in split_messages(data):
                if kind in (RTM_NEWADDR, RTM_DELADDR):
                    reread = True  # rare: read everything back rather than patch the address set
                    continue
                if kind not in (RTM_NEWNEIGH, RTM_DELNEIGH):
                    continue
                n = decode_neighbour(msg)
                if n is None:
                    continue
                dst, ifindex, state, ll = n
                key = (str(dst), ifindex)
                if ll and state & _USABLE:
                    self.neigh[key] = ll
                else:
                    self.neigh.pop(key, None)
                changed.add(key)
                self.neighbour_events += 1
        if reread:
            self.refresh()
            changed.add(("*", 0))
        if self._fib is None:
            return
        if changed:
            self._apply_neighbours(self._fib, changed)
        if reread:
            try:
                self.writes += self._sync_local(self._fib)
            except OSError as exc:
                log.error("XDP local address update failed: %s", exc)

    def _apply_neighbours(self, fib: KernelFib, changed: set[tuple[str, int]]) -> None:
        everything = ("*", 0) in changed
        for nid, (gw, oif, labels) in list(fib.nh_key.items()):
            if not everything and (str(gw), oif) not in changed:
                continue
            hop = self._hop(nid, gw, oif, labels)
            if self.nexthops.get(nid) != hop:
                try:
                    self.prog.set_nexthop(nid, hop, self.netns)
                except OSError as exc:
                    log.error("XDP nexthop %d update failed: %s", nid, exc)
                    continue
                self.nexthops[nid] = hop
                self.writes += 1
                if not hop.valid:
                    log.info("neighbour %s on ifindex %d unusable: its XDP nexthop %d goes to the slow path",
                             gw, oif, nid)

    def view(self) -> dict:
        by_interface = self.prog.stats_by_interface()
        return {
            "program": self.prog.program_info(),
            "routes": len(self.routes), "groups": len(self.groups), "nexthops": len(self.nexthops),
            "nexthops_valid": sum(1 for h in self.nexthops.values() if h.valid), "map_writes": self.writes,
            "local_addresses": len(self.local),
            "neighbour_events": self.neighbour_events, "reused_pinned_maps": self.prog.reused,
            "pin_dir": str(self.prog.pin_dir) if self.prog.pin_dir else None,
            "attached": [{"ifindex": i, "mode": "native" if f & 4 else "generic"} for _ns, i, f in self.prog.attached],
            "counters": sum_counters(by_interface.values()),
            "counters_by_interface": {str(i): c for i, c in by_interface.items()},
        }


def xdp_diff(maps: dict, routes: list[KernelRoute], nexthops: dict[int, KernelNexthop], metric: int) -> dict:
    """XDP maps (``XdpProgram.dump()``) versus the kernel FIB (our routes and the nexthop objects by
    id): each kernel route of ours must be in the trie with the same group, the group with the same
    members, and each member must have a nexthop entry on the kernel's egress interface."""
    kernel = {r.prefix: r.nhid for r in routes if r.metric == metric and r.nhid}
    xroutes = {p: g for p, g in maps["routes"].items() if g != LOCAL_GROUP}  # the router's own: not routes
    xgroups, xnhs = maps["groups"], maps["nexthops"]
    missing, different, bad_hops = [], [], set()
    for p, nhid in kernel.items():
        gid = xroutes.get(p)
        if gid is None:
            missing.append(p)
            continue
        k = nexthops.get(nhid)
        kmembers = tuple(m for m, _w in k.group) if k is not None and k.group else (nhid,)
        if gid != nhid or tuple(xgroups.get(gid, ())) != kmembers:
            different.append({"prefix": str(p), "kernel_group": nhid, "xdp_group": gid,
                              "kernel_members": list(kmembers), "xdp_members": list(xgroups.get(gid, ()))})
            continue
        for m in kmembers:
            kn, xn = nexthops.get(m), xnhs.get(m)
            if kn is None or xn is None or xn[0] != kn.oif:
                bad_hops.add(m)
    order = lambda p: (p.version, p)  # noqa: E731
    return {"in_sync": len(kernel) - len(missing) - len(different),
            "missing": [str(p) for p in sorted(missing, key=order)],
            "extra": [str(p) for p in sorted((p for p in xroutes if p not in kernel), key=order)],
            "different": different, "bad_nexthops": sorted(bad_hops),
            "unresolved_nexthops": sorted(i for i, h in xnhs.items() if not h[1])}
