"""The planner: desired FIB entries + the nexthop/group table -> the operations that get there.

Theory of operation
-------------------
Pure functions of a :class:`~fib.table.FibTable` and their input (no socket, no clock, no loop):

- :meth:`Planner.routes`: for each (prefix, desired entry or None), the route operation, preceded
  by the nexthop and group creations its group needs. A group is shared by every route with the
  same (primary set, backup set, labels); it holds a nexthop object for every primary *and* backup
  hop, so a failover only ever rewrites members. An update equal to what is installed is skipped
  (no operation). A blackhole entry (RTBH) needs no group: its route points at
  :data:`~fib.ops.BLACKHOLE_GID`, which no group, failover rewrite or repair plan ever holds.
  Routes of a table share a few interned tuples, so a group is resolved once per distinct tuple
  identity per call, not once per route (a full table is ~3 us/route here).
- :meth:`Planner.regroup`: the group replaces that move every group using the given gateways onto
  its members under the current ``dead`` set (tagged ``failover``); nexthops flushed with a link are
  recreated first, in the same batch.
- :meth:`Planner.whole_group_scan`: withdrawals that empty a group become one group delete.
- :meth:`Planner.collect`: deletes of groups no route uses and nexthops no group holds.

Reservation rule (see :mod:`fib.table`): created nexthops and groups are reserved in the table when
planned, so the next batch (planned while this one is in the kernel) reuses them; the dataplane
rolls them back if the kernel refuses them. Route entries and group members are *not* touched here.

Interface resolution (``resolve_oif``) is injected: the dataplane passes a kernel lookup on the
loop's own socket; unit tests pass a dict.

Incoming labels (kernels with MPLS routing and ``local_label_base``): every unlabeled nexthop object
gets a local label derived from its id (``base + id - first id``), so it survives a restart with no
bookkeeping (adopted nexthops keep their ids; the label routes are written with NLM_F_REPLACE).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from common.model import FibEntry, IPAddress, IPNetwork, fast_constructor
from fib.ops import (
    BLACKHOLE_GID,
    GroupAdd,
    GroupDel,
    GroupKey,
    GroupReplace,
    Labels,
    MplsLabelAdd,
    MplsLabelDel,
    NexthopAdd,
    NexthopDel,
    Op,
    RouteDelete,
    RouteInstall,
    RouteReplace,
    failover_rewrite,
    group_key,
    tuple_ids,
)
from fib.table import FibTable, Group

log = logging.getLogger(__name__)

#: One route operation per route of a table write (issue 12): :func:`common.model.fast_constructor`.
_route_install = fast_constructor(RouteInstall)
_route_replace = fast_constructor(RouteReplace)
_route_delete = fast_constructor(RouteDelete)


class Planner:
    def __init__(
        self,
        table: FibTable,
        resolve_oif: Callable[[IPAddress], int | None],
        *,
        mpls_routing: bool = False,
        local_label_base: int | None = None,
    ) -> None:
        self.table = table
        self.resolve_oif = resolve_oif
        #: The kernel has AF_MPLS routes; with a label base, each unlabeled nexthop gets a local label.
        self.mpls_routing = mpls_routing
        self.local_label_base = local_label_base

    # --- objects ---------------------------------------------------------------------------------
    def _oif(self, gw: IPAddress) -> int | None:
        oif = self.table.oif.get(gw)
        if oif is None:
            oif = self.resolve_oif(gw)
            if oif:
                self.table.oif[gw] = oif
        return oif or None

    def _ensure_nh(self, gw: IPAddress, labels: Labels, ops: list[Op]) -> int | None:
        oif = self._oif(gw)
        if oif is None:
            return None
        t = self.table
        k = (gw, oif, labels)
        nid = t.nexthops.get(k)
        if nid is None:
            nid = t.add_nexthop(k)
            ops.append(NexthopAdd(nid, gw, oif, labels))
            label = self.local_label(nid) if not labels else None
            if label is not None:
                t.local_labels[nid] = label
                ops.append(MplsLabelAdd(label, nid, gw, oif))
        return nid

    def local_label(self, nid: int) -> int | None:
        if not self.mpls_routing or self.local_label_base is None:
            return None
        span = (1 << 20) - self.local_label_base
        label = self.local_label_base + (nid - (self.table.protocol << 22) - 1) % span
        if label in self.table.local_labels.values():
            log.warning("local label %d already in use: nexthop %d gets none", label, nid)
            return None
        return label

    def _ensure_group(self, key: GroupKey, ops: list[Op]) -> Group | None:
        t = self.table
        g = t.groups.get(key)
        if g is not None:
            return g
        # Nexthop objects for every gateway of the key, backups included, so a failover only ever
        # rewrites group members and never has to create a nexthop first.
        nh_of: dict[tuple[IPAddress, Labels], int] = {}
        for gw, labels in t.hops(key):
            nid = self._ensure_nh(gw, labels, ops)
            if nid is not None:
                nh_of[(gw, labels)] = nid
        active = t.active(key)
        if any(hop not in nh_of for hop in active):
            return None
        members = tuple(nh_of[hop] for hop in active)
        holds = tuple(nh_of.values())
        og = t.match_adopted(key, members, holds)
        if og is not None:
            return og
        g = t.add_group(key, members, holds)
        ops.append(GroupAdd(g.id, members, key))
        return g

    # --- routes ------------------------------------------------------------------------------------
    def routes(self, work: Iterable[tuple[IPNetwork, FibEntry | None]],
               unreachable: Callable[[IPNetwork, FibEntry], None]) -> list[Op]:
        """Operations for ``work`` (latest desired entry per prefix). ``unreachable`` is told about
        entries whose gateways have no interface (no operation is planned for them)."""
        ops: list[Op] = []
        append = ops.append
        installed_get = self.table.installed.get
        # Routes of a table share a few (primary, backup) tuples (the RIB interns them): resolve each
        # distinct pair of tuple objects to its group once per call instead of once per route.
        by_tuples: dict[tuple[int, int, int, int], Group | None] = {}
        for prefix, entry in work:
            old = installed_get(prefix)
            if entry is None:
                if old is not None:
                    append(_route_delete(prefix, old))
                continue
            if entry.blackhole:  # no group: a blackhole route never enters failover or repair plans
                if old != BLACKHOLE_GID:
                    append(_route_install(prefix, BLACKHOLE_GID, entry) if old is None
                           else _route_replace(prefix, BLACKHOLE_GID, entry, old))
                continue
            tk = tuple_ids(entry)
            if tk in by_tuples:
                g = by_tuples[tk]
            else:
                g = by_tuples[tk] = self._ensure_group(group_key(entry), ops)
            if g is None:
                unreachable(prefix, entry)
                continue
            if old == g.id:
                continue
            append(_route_install(prefix, g.id, entry) if old is None else _route_replace(prefix, g.id, entry, old))
        return ops

    def whole_group_scan(self) -> WholeGroupScan:
        """Withdrawals that empty a whole group (a peer's routes going away, a table flush) become one
        RTM_DELNEXTHOP of the group: the kernel drops every route using it at once (~0.5 s for 1M
        routes instead of ~25 s route by route). Only when no install in the same work needs that
        group, and only for groups of at least two routes. Fed in slices (the dataplane yields
        between them)."""
        return WholeGroupScan(self.table)

    # --- failover ----------------------------------------------------------------------------------
    def regroup(self, gateways: set[IPAddress], *, only: set[int] | None = None) -> list[Op]:
        """New members for every group that uses one of ``gateways`` (or every group in ``only``),
        under the table's current ``dead`` set. Nexthop objects normally exist already (groups hold
        their backups); after a link comes back the kernel has flushed them, and they are created
        here first, in the same batch. Groups whose creation or deletion is still in flight are left
        out (the dataplane re-checks a created group when its batch completes)."""
        t = self.table
        ops: list[Op] = []
        for key, g in t.groups.items():
            if only is not None:
                if g.id not in only:
                    continue
            elif not (set(key[0]) | set(key[1])) & gateways:
                continue
            if not g.confirmed or g.id in t.busy:
                continue
            ids = {hop: self._ensure_nh(hop[0], hop[1], ops) for hop in t.hops(key)}
            new_holds = tuple(i for i in ids.values() if i is not None and i not in g.holds)
            t.hold(new_holds, +1)
            g.holds += new_holds
            active = [ids.get(hop) for hop in t.active(key)]
            if active and all(a is not None for a in active):
                members = tuple(a for a in active if a is not None)
                if members != g.members:
                    ops.append(failover_rewrite(g.id, members, g.members))
        return ops

    def repair_plans(self, gateways: Iterable[IPAddress]) -> dict[IPAddress, list[GroupReplace]]:
        """For each of ``gateways``, the group replaces that would move traffic off it if it died now
        (BFD local repair, :mod:`bfd.repair`): pure, the table is not touched. Only confirmed groups
        whose every new member already exists as a nexthop object are planned (groups hold their
        backups, so that is the normal case); anything else is left to the failover lane, which runs
        right after a local repair anyway and is authoritative."""
        t = self.table
        plans: dict[IPAddress, list[GroupReplace]] = {gw: [] for gw in gateways}
        wanted = set(plans) - t.dead  # a dead gateway has nothing left to repair: an empty plan
        if not wanted:
            return plans
        nexthops, oif = t.nexthops, t.oif
        for key, g in t.groups.items():
            hit = wanted.intersection(key[0]).union(wanted.intersection(key[1]))
            if not hit or not g.confirmed or g.id in t.busy:
                continue
            for gw in hit:
                members = []
                for hop_gw, labels in t.active(key, t.dead | {gw}):
                    nid = nexthops.get((hop_gw, oif.get(hop_gw, -1), labels))
                    if nid is None:
                        break
                    members.append(nid)
                else:
                    m = tuple(members)
                    if m != g.members:
                        plans[gw].append(failover_rewrite(g.id, m, g.members))
        return plans

    def stale_members(self, ops: Sequence[Op]) -> set[int]:
        """Groups created by ``ops`` whose members no longer match the dead set (a failover happened
        while their creation was in flight)."""
        t = self.table
        out: set[int] = set()
        for op in ops:
            if type(op) is GroupAdd:
                g = t.group_by_id.get(op.gid)
                if g is None or g.key is None:
                    continue
                want = tuple(t.nexthops.get((gw, t.oif.get(gw, -1), labels), -1) for gw, labels in t.active(g.key))
                if want != g.members:
                    out.add(g.id)
        return out

    # --- garbage -------------------------------------------------------------------------------------
    def collect(self) -> list[Op]:
        """Delete groups no route uses, then nexthops no group holds (after route results are known).
        Forgotten at once: a delete the kernel refuses leaks the object, and is logged."""
        t = self.table
        ops: list[Op] = []
        for gid, g in list(t.group_by_id.items()):
            if g.refs <= 0:  # no route points at it
                ops.append(GroupDel(gid))
                t.forget_group(gid)
        for nid, refs in list(t.nh_refs.items()):
            if refs <= 0:
                ops.append(NexthopDel(nid))
                label = t.local_labels.get(nid)
                if label is not None:
                    ops.append(MplsLabelDel(label, nid))
                del t.nh_refs[nid]
                t.forget_nexthop(nid)
        return ops


class WholeGroupScan:
    """Accumulates a work list's withdrawals by group and the group keys its installs need."""

    def __init__(self, table: FibTable) -> None:
        self.table = table
        self.dels: dict[int, list[IPNetwork]] = {}
        self.wanted: set[GroupKey] = set()
        self._seen: dict[tuple[int, int, int, int], GroupKey] = {}

    def add(self, work: Iterable[tuple[IPNetwork, FibEntry | None]]) -> None:
        installed_get = self.table.installed.get
        dels, seen = self.dels, self._seen
        for prefix, entry in work:
            if entry is None:
                gid = installed_get(prefix)
                if gid is not None:
                    dels.setdefault(gid, []).append(prefix)
            elif not entry.blackhole:
                tk = tuple_ids(entry)
                if tk not in seen:
                    seen[tk] = group_key(entry)
                    self.wanted.add(seen[tk])

    def withdrawals(self) -> list[GroupDel]:
        t = self.table
        return [GroupDel(gid, tuple(ps)) for gid, ps in self.dels.items()
                if (g := t.group_by_id.get(gid)) is not None and len(ps) == g.refs and len(ps) >= 2
                and g.key not in self.wanted]
