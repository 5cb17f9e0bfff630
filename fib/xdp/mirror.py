"""The XDP provider: the dataplane's operations, as the kernel accepted them, into the XDP maps.

Theory of operation
-------------------
The kernel FIB is the source of truth; this provider follows it. The dataplane
(:mod:`fib.dataplane`) feeds it the *same* operations, in the same order, that it fed the kernel,
with the kernel's errors by index (:meth:`XdpMirror.apply`): an operation the kernel refused is not
mirrored. Nexthop and group operations are written at once (a failover rewrite is one group write
here too), route operations are gathered and written after them (many at once with
``bpf_map_update_batch``). The maps use the kernel's ids: prefix -> group id -> nexthop ids.
Deleted groups and nexthops stay in the maps (nothing points at them any more); a group deleted
with its routes (a whole-group withdrawal) takes those routes out of the trie.

Besides the operations, the provider reads the dataplane's table through the narrow
:class:`~fib.table.FibView` (``installed``, ``nh_key``, ``group_members()``) only to compare:
:meth:`sync` brings the maps to the table's state (the whole table on the first call, e.g. after a
restart with reused maps; afterwards only the nexthops, groups and the prefixes marked by
:meth:`touch` — routes the monitor repaired outside an operation — or left waiting for a group).

A blackhole route (RTBH, :data:`~fib.ops.BLACKHOLE_GID`) is written as a trie entry with that value,
which the program drops (``dropped_blackhole``); it needs no group in the maps.

Source address validation (:meth:`XdpMirror.apply_sav`): :class:`~fib.ops.SavEnable`,
:class:`~fib.ops.SavAllow`, :class:`~fib.ops.SavRevoke` operations become writes to ``sav_on`` and the
``sav4``/``sav6`` tries at once, with a result each; the mirror remembers what it wrote (``sav_on``,
``sav_allowed``), read back from pinned maps after a restart, so re-applying a wanted state writes
only differences. An interface whose counter slot is taken by another SAV interface is refused
(EADDRINUSE: the program could not tell them apart).

The router's own addresses go into the tries as host entries with group ``LOCAL_GROUP``: the
program hands those packets to the kernel even where a customer route covers the address. They
follow address notifications on the same socket as the neighbours.

A nexthop entry needs the egress interface's MAC, the neighbour's MAC and the labels to push (part
of the nexthop key). Neighbours are followed through netlink notifications
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
from collections.abc import Iterable, Mapping, Sequence

from common.netns import netns as enter_netns
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
from fib.ops import (
    BLACKHOLE_GID,
    GroupAdd,
    GroupDel,
    GroupReplace,
    NexthopAdd,
    Op,
    Results,
    RouteDelete,
    RouteInstall,
    RouteReplace,
    SavAllow,
    SavEnable,
    SavOp,
    SavRevoke,
)
from fib.table import FibView
from fib.xdp.loader import LOCAL_GROUP, MAX_LABELS, Nexthop, XdpProgram, group_entry, sum_counters

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
        self._fib: FibView | None = None
        self._synced = False  # the first sync compares the whole table
        self._dirty: set = set()  # prefixes changed outside an operation (drift repair), to compare
        self.sav_on: set[int] = set()  # interfaces validating sources
        self.sav_allowed: dict[int, set] = {}  # ifindex -> allowed source prefixes written
        # Subscribe before the first read: a neighbour or address that changes between the read and
        # start_monitor() is then waiting on the socket instead of lost until the periodic re-read.
        with enter_netns(netns):
            self._mon = neighbour_monitor_socket()
        if program.reused:
            self._read_maps()
        self.refresh()

    def _read_maps(self) -> None:
        routes = self.prog.read_routes()
        self.routes = {p: g for p, g in routes.items() if g != LOCAL_GROUP}
        self.local = {p for p, g in routes.items() if g == LOCAL_GROUP}
        self.groups = self.prog.read_groups()
        self.nexthops = self.prog.read_nexthops()
        self.sav_on, self.sav_allowed = self.prog.read_sav()
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

    # --- the operation stream --------------------------------------------------------------------
    def apply(self, ops: Sequence[Op], kernel_errors: Mapping[int, int], view: FibView) -> Results:
        """Mirror the operations the kernel accepted (``kernel_errors``: refused ones, by index).
        Returns this provider's own results (a map write that failed, by index)."""
        if not self._synced:  # first contact: compare the whole table (it already holds these ops)
            self.sync(view)
            return Results(ops)
        self._fib = view
        errors: dict[int, int] = {}
        routes: dict = {}  # prefix -> group id, or None: delete (the last operation wins)
        for i, op in enumerate(ops):
            if i in kernel_errors:
                continue
            k = type(op)
            try:
                if k is RouteInstall or k is RouteReplace:
                    routes[op.prefix] = op.gid  # type: ignore[union-attr]
                elif k is RouteDelete:
                    routes[op.prefix] = None  # type: ignore[union-attr]
                elif k is GroupAdd or k is GroupReplace:
                    self._write_group(op.gid, op.members)  # type: ignore[union-attr]
                elif k is NexthopAdd:
                    self._write_nexthop(op.nid, op.gateway, op.oif, op.labels)  # type: ignore[union-attr]
                elif k is GroupDel:
                    routes.update(dict.fromkeys(op.routes))  # type: ignore[union-attr]
            except OSError as exc:
                errors[i] = exc.errno or errno.EIO
        if self._waiting:  # routes whose group had no members in the maps yet
            installed = view.installed
            for p in self._waiting:
                routes.setdefault(p, installed.get(p))
            self._waiting = set()
        try:
            self.writes += self._write_routes(routes)
        except OSError as exc:
            log.error("XDP route writes failed: %s", exc)
            for i, op in enumerate(ops):
                if type(op) in (RouteInstall, RouteReplace, RouteDelete) and i not in kernel_errors:
                    errors[i] = exc.errno or errno.EIO
        return Results(ops, errors)

    def apply_sav(self, ops: Sequence[SavOp]) -> Results:
        """Source address validation operations into the maps, in order; one result each. Writes
        only what differs from what the maps hold."""
        errors: dict[int, int] = {}
        for i, op in enumerate(ops):
            try:
                if type(op) is SavEnable:
                    if op.on == (op.ifindex in self.sav_on):
                        continue
                    owner = self.prog.sav_slot_owner(op.ifindex)
                    if op.on and owner not in (0, op.ifindex):
                        errors[i] = errno.EADDRINUSE
                        log.error("SAV on ifindex %d refused: its slot is taken by ifindex %d", op.ifindex, owner)
                        continue
                    self.prog.sav_enable(op.ifindex, op.on)
                    (self.sav_on.add if op.on else self.sav_on.discard)(op.ifindex)
                elif type(op) is SavAllow:
                    have = self.sav_allowed.setdefault(op.ifindex, set())
                    if op.prefix in have:
                        continue
                    self.prog.sav_allow(op.ifindex, op.prefix)
                    have.add(op.prefix)
                elif type(op) is SavRevoke:
                    have = self.sav_allowed.get(op.ifindex, set())
                    if op.prefix not in have:
                        continue
                    self.prog.sav_revoke(op.ifindex, op.prefix)
                    have.discard(op.prefix)
                else:
                    errors[i] = errno.EINVAL
                    continue
                self.writes += 1
            except OSError as exc:
                errors[i] = exc.errno or errno.EIO
        return Results(ops, errors)  # type: ignore[arg-type]

    def touch(self, prefixes: Iterable) -> None:
        """These prefixes changed in the table outside an operation: compare them at the next sync."""
        self._dirty.update(prefixes)

    def _write_nexthop(self, nid: int, gw: object, oif: int, labels: tuple[int, ...]) -> bool:
        hop = self._hop(nid, gw, oif, labels)
        if self.nexthops.get(nid) == hop:
            return False
        self.prog.set_nexthop(nid, hop, self.netns)
        self.nexthops[nid] = hop
        self.writes += 1
        return True

    def repair_writes(self, ops: Sequence[Op]) -> list[tuple[str, bytes, bytes]]:
        """The ``groups`` map writes (pinned path, key, value) that mirror these failover rewrites, for
        the BFD process's local repair; none if the maps are not pinned or a member is not in them."""
        path = self.prog.pinned_map("groups")
        if path is None:
            return []
        out = []
        for op in ops:
            if type(op) is GroupReplace and op.gid in self.groups and all(m in self.nexthops for m in op.members):
                out.append((str(path), *group_entry(op.gid, op.members)))
        return out

    def _write_group(self, gid: int, members: tuple[int, ...]) -> bool:
        if not members or self.groups.get(gid) == members:
            return False
        self.prog.set_group(gid, list(members))
        self.groups[gid] = members
        self.writes += 1
        return True

    def _write_routes(self, routes: Mapping) -> int:
        """prefix -> group id (None: delete) into the tries; the router's own addresses are left alone
        and a route whose group is not in the maps yet waits for it."""
        local = self.addresses
        routes_get = self.routes.get
        new = []
        gone = []
        for p, gid in routes.items():
            if gid is None or p in local:
                if p in self.routes:
                    gone.append(p)
            elif routes_get(p) != gid:
                if gid in self.groups or gid == BLACKHOLE_GID:
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
        return len(new) + len(gone)

    def sync(self, fib: FibView, *, refresh: bool = False) -> int:
        """Bring the maps to ``fib``'s state; returns the number of map writes.

        Nexthops and groups (a few thousand) are compared every time. Routes: the first sync
        compares the whole table; later ones only the prefixes marked by :meth:`touch` and those an
        operation had to leave waiting (their group had no members yet): a full compare of 1M routes
        takes ~1.5 s of the event loop. ``refresh`` re-reads neighbours, MACs and addresses only
        (`pop-router fib diff` is the check that the tries still match)."""
        full = not self._synced
        if refresh:
            self.refresh()
        self._fib = fib
        self._synced = True
        before = self.writes
        for nid, (gw, oif, labels) in list(fib.nh_key.items()):
            self._write_nexthop(nid, gw, oif, labels)
        for gid, members in list(fib.group_members()):
            self._write_group(gid, members)
        self.writes += self._sync_local(fib)
        installed = fib.installed
        candidates = (installed.keys() | self.routes.keys()) if full else (self._dirty | self._waiting)
        self._dirty = set()
        self._waiting = set()
        self.writes += self._write_routes({p: installed.get(p) for p in candidates})
        return self.writes - before

    def _sync_local(self, fib: FibView) -> int:
        """Host entries for the router's own addresses (a local address wins over an equal route of ours,
        as the kernel's local table does)."""
        writes = 0
        for p in self.addresses - self.local:
            self.prog.set_route(p, LOCAL_GROUP)
            self.routes.pop(p, None)
            writes += 1
        for p in self.local - self.addresses:
            gid = fib.installed.get(p)
            if gid is not None and (gid in self.groups or gid == BLACKHOLE_GID):
                self.prog.set_route(p, gid)
                self.routes[p] = gid
            else:
                self.prog.del_route(p)
            writes += 1
        self.local = set(self.addresses)
        return writes

    # --- neighbour notifications ---------------------------------------------------------------------
    def start_monitor(self, fib: FibView) -> None:
        self._fib = fib
        if self._mon is None:  # stopped before: subscribe again
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

    def _apply_neighbours(self, fib: FibView, changed: set[tuple[str, int]]) -> None:
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
            "blackholes": sum(1 for g in self.routes.values() if g == BLACKHOLE_GID),
            "sav": {str(i): {"on": i in self.sav_on, "allowed": len(self.sav_allowed.get(i, ()))}
                    for i in sorted(self.sav_on | set(self.sav_allowed))},
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
    kernel = {r.prefix: BLACKHOLE_GID if r.blackhole else r.nhid for r in routes
              if r.metric == metric and (r.nhid or r.blackhole)}
    xroutes = {p: g for p, g in maps["routes"].items() if g != LOCAL_GROUP}  # the router's own: not routes
    xgroups, xnhs = maps["groups"], maps["nexthops"]
    missing, different, bad_hops = [], [], set()
    for p, nhid in kernel.items():
        gid = xroutes.get(p)
        if gid is None:
            missing.append(p)
            continue
        if nhid == BLACKHOLE_GID or gid == BLACKHOLE_GID:  # a drop entry on both sides, or different
            if gid != nhid:
                different.append({"prefix": str(p), "kernel_group": nhid, "xdp_group": gid})
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
