"""The nexthop/group table: what we believe the kernel holds, with reference counts.

Theory of operation
-------------------
One :class:`FibTable` per writer. It records, by the ids the kernel knows them by:

- ``installed``: prefix -> group id of every route of ours (:data:`~fib.ops.BLACKHOLE_GID` for a
  blackhole route: no group, no reference, never in a failover rewrite);
- groups (:class:`Group`), keyed both by id and by their (primary, backup) :data:`~fib.ops.GroupKey`;
  ``refs`` counts the routes pointing at a group, ``holds`` the nexthop ids it keeps alive (every
  primary and backup hop, so a failover never has to create a nexthop first);
- nexthops (``nexthops`` by :data:`~fib.ops.NhKey`, ``nh_key`` by id) and ``nh_refs``, the number of
  groups holding each;
- ``local_labels``: nexthop id -> incoming MPLS label;
- ``dead``: gateways BFD or a link reported down (a fact about the network, not about the kernel).

Invariants:

- A route's group exists in the table while the route does (``refs`` > 0 keeps it); a group is
  deleted only when ``refs`` reaches 0, a nexthop only when ``nh_refs`` does — so a failed route
  update can never lose the group its kernel route still uses.
- Routes enter or leave ``installed`` only after the kernel accepted the operation. Nexthops and
  groups are *reserved* when planned (a batch planned while the previous one is in the kernel must
  reuse them), marked ``confirmed`` when the kernel accepts their creation, and rolled back if it
  refuses. A group's ``members`` change only when the kernel accepted the replace.

Pure bookkeeping: no socket, no clock, no event loop (unit-tested in tests/unit/test_fib_table.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from common.model import FibEntry, IPAddress, IPNetwork
from fib.netlink import KernelNexthop, KernelRoute
from fib.ops import BLACKHOLE_GID, GroupKey, Labels, NhKey


def route_gid(r: KernelRoute) -> int:
    """The "group" a kernel route of ours points at, as ``installed`` records it: its nhid, or
    :data:`~fib.ops.BLACKHOLE_GID` for a blackhole route (a unicast route without nhid is not one of
    ours: -1 matches nothing)."""
    return BLACKHOLE_GID if r.blackhole else (r.nhid or -1)


@dataclass(slots=True)
class Group:
    id: int
    key: GroupKey | None  # None: adopted, not yet matched to a (primary, backup) key
    members: tuple[int, ...]  # nexthop ids currently in the kernel group
    refs: int = 0  # routes pointing at it
    #: Nexthop ids this group keeps alive: every primary and backup gateway (members for adopted groups).
    holds: tuple[int, ...] = ()
    #: False while the operation creating it is in flight: the failover lane leaves it to the writer.
    confirmed: bool = True


class FibView(Protocol):
    """The narrow read-only interface a mirror provider (XDP) may use to compare itself with the table."""

    @property
    def installed(self) -> Mapping[IPNetwork, int]: ...

    @property
    def nh_key(self) -> Mapping[int, NhKey]: ...

    def group_members(self) -> Iterator[tuple[int, tuple[int, ...]]]: ...


class FibTable:
    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.installed: dict[IPNetwork, int] = {}
        self.count = {4: 0, 6: 0}  # installed routes by IP version (gauges)
        self.nexthops: dict[NhKey, int] = {}
        self.nh_key: dict[int, NhKey] = {}
        self.nh_refs: dict[int, int] = {}
        self.groups: dict[GroupKey, Group] = {}
        self.group_by_id: dict[int, Group] = {}
        self.local_labels: dict[int, int] = {}  # nexthop id -> incoming label (installed)
        self.dead: set[IPAddress] = set()
        self.oif: dict[IPAddress, int] = {}  # gateway -> output interface (resolved once)
        #: Nexthop/group ids with a delete in flight: the failover lane must not rewrite them.
        self.busy: set[int] = set()
        self.next_id = (protocol << 22) + 1

    # --- ids and references ----------------------------------------------------------------------
    def alloc(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def hold(self, ids: Iterable[int], delta: int) -> None:
        refs = self.nh_refs
        for i in ids:
            refs[i] = refs.get(i, 0) + delta

    # --- objects -----------------------------------------------------------------------------------
    def add_nexthop(self, k: NhKey) -> int:
        nid = self.alloc()
        self.nexthops[k] = nid
        self.nh_key[nid] = k
        self.nh_refs[nid] = 0
        return nid

    def forget_nexthop(self, nid: int) -> NhKey | None:
        """The kernel refused or lost nexthop ``nid``: it is created again when next needed."""
        self.local_labels.pop(nid, None)
        k = self.nh_key.pop(nid, None)
        if k is not None and self.nexthops.get(k) == nid:
            del self.nexthops[k]
        return k

    def add_group(self, key: GroupKey, members: tuple[int, ...], holds: tuple[int, ...]) -> Group:
        g = Group(self.alloc(), key, members, holds=holds, confirmed=False)
        self.hold(holds, +1)
        self.groups[key] = g
        self.group_by_id[g.id] = g
        return g

    def forget_group(self, gid: int) -> Group | None:
        """Drop group ``gid`` from the table and release the nexthops it held."""
        g = self.group_by_id.pop(gid, None)
        if g is None:
            return None
        if g.key is not None and self.groups.get(g.key) is g:
            del self.groups[g.key]
        self.hold(g.holds, -1)
        return g

    def match_adopted(self, key: GroupKey, members: tuple[int, ...], holds: tuple[int, ...]) -> Group | None:
        """A group adopted from a previous run with exactly these members serves ``key`` as is."""
        for og in self.group_by_id.values():
            if og.key is None and og.members == members:
                self.hold(holds, +1)
                self.hold(og.holds, -1)
                og.key, og.holds = key, holds
                self.groups[key] = og
                return og
        return None

    # --- routes ------------------------------------------------------------------------------------
    def route_set(self, prefix: IPNetwork, gid: int, old: int | None) -> None:
        """The kernel accepted ``prefix`` -> ``gid`` (``old``: the group it pointed at before)."""
        if old is None:
            self.count[prefix.version] += 1
        else:
            g = self.group_by_id.get(old)
            if g is not None:
                g.refs -= 1
        self.installed[prefix] = gid
        g = self.group_by_id.get(gid)
        if g is not None:
            g.refs += 1

    def route_gone(self, prefix: IPNetwork) -> int | None:
        """``prefix`` is no longer in the kernel: forget it and release its group."""
        gid = self.installed.pop(prefix, None)
        if gid is None:
            return None
        self.count[prefix.version] -= 1
        g = self.group_by_id.get(gid)
        if g is not None:
            g.refs -= 1
        return gid

    # --- adoption ----------------------------------------------------------------------------------
    def adopt(self, nexthops: Iterable[KernelNexthop], routes: Iterable[KernelRoute], metric: int) -> list[IPNetwork]:
        """Take over our routes, groups and nexthops found in the kernel (after a restart); returns the
        adopted routes (stale until re-announced)."""
        max_id = self.next_id - 1
        for nh in nexthops:
            if nh.protocol != self.protocol:
                continue
            max_id = max(max_id, nh.id)
            if nh.group:
                members = tuple(m for m, _w in nh.group)
                self.group_by_id[nh.id] = Group(nh.id, None, members, holds=members)
            elif nh.gateway is not None:
                # Without kernel MPLS the labels lived only in our memory (and the XDP maps): such an
                # object is adopted as unlabeled, and a labeled route moves to a new object.
                k = (nh.gateway, nh.oif, nh.labels)
                self.nexthops[k] = nh.id
                self.nh_key[nh.id] = k
                self.oif.setdefault(nh.gateway, nh.oif)
        for g in self.group_by_id.values():
            self.hold(g.holds, +1)
        adopted = []
        for r in routes:
            if r.metric == metric and (r.blackhole or r.nhid in self.group_by_id):
                self.route_set(r.prefix, route_gid(r), None)
                adopted.append(r.prefix)
        self.next_id = max_id + 1
        return adopted

    # --- derived views -----------------------------------------------------------------------------
    def active(self, key: GroupKey, dead: set[IPAddress] | frozenset[IPAddress] | None = None,
               ) -> list[tuple[IPAddress, Labels]]:
        """The hops a group should forward to now: live primaries, else live backups, else (all dead)
        the primaries (a group is never empty). ``dead`` overrides the table's set (what-if plans)."""
        primary, backup, labels, backup_labels = key
        if dead is None:
            dead = self.dead
        alive = [(g, labels) for g in primary if g not in dead]
        if alive:
            return alive
        alive = [(g, backup_labels) for g in backup if g not in dead]
        return alive or [(g, labels) for g in primary]

    @staticmethod
    def hops(key: GroupKey) -> dict[tuple[IPAddress, Labels], None]:
        """Every (gateway, labels) a group may use, primaries first (an ordered set)."""
        return dict.fromkeys([(g, key[2]) for g in key[0]] + [(g, key[3]) for g in key[1]])

    def gateways(self, gid: int) -> tuple[IPAddress, ...]:
        g = self.group_by_id.get(gid)
        if g is None:
            return ()
        return tuple(self.nh_key[m][0] for m in g.members if m in self.nh_key)

    def desired(self, prefix: IPNetwork) -> FibEntry | None:
        """What we installed for ``prefix``, rebuilt from its group's (primary, backup) key."""
        gid = self.installed.get(prefix)
        if gid == BLACKHOLE_GID:
            return FibEntry(prefix, (), blackhole=True)
        g = self.group_by_id.get(gid) if gid is not None else None
        if g is None or g.key is None:
            return None
        return FibEntry(prefix, g.key[0], g.key[2], g.key[1], g.key[3])

    def has_garbage(self) -> bool:
        return any(g.refs <= 0 for g in self.group_by_id.values()) or any(r <= 0 for r in self.nh_refs.values())

    def group_members(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        """(group id, members) of every group the kernel has (confirmed): for mirror providers."""
        for gid, g in self.group_by_id.items():
            if g.confirmed:
                yield gid, g.members
