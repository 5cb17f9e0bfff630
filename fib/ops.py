"""Dataplane operations and their results: the one vocabulary every part of ``fib/`` speaks.

Theory of operation (FRR ``zebra_dplane.c``'s ``dplane_op_e`` in shape)
-----------------------------------------------------------------------
The planner (:mod:`fib.planner`) turns desired FIB entries into a list of these operations; the
dataplane (:mod:`fib.dataplane`) hands the *same* list, in the *same* order, to each provider
(kernel netlink, XDP maps); each provider answers with one :class:`OpResult` per operation (by
index: :class:`Results`), and only then does the bookkeeping (:mod:`fib.table`) record what the
kernel accepted. Operations are immutable values: a provider can neither change what another one
sees nor the bookkeeping behind the planner's back.

Object kinds, all carrying the ids the kernel knows them by:

- nexthop (:class:`NexthopAdd` / :class:`NexthopDel`): one per (gateway, ifindex, labels);
- nexthop group (:class:`GroupAdd` / :class:`GroupReplace` / :class:`GroupDel`): members are
  nexthop ids; a replace tagged ``failover`` comes from the failover lane (BFD/link down or up);
  a delete may carry the routes the kernel drops with it (a whole-group withdrawal);
- route (:class:`RouteInstall` / :class:`RouteReplace` / :class:`RouteDelete`): prefix -> group, or
  prefix -> :data:`BLACKHOLE_GID` for a blackhole entry (RTBH, RFC 7999: a kernel ``RTN_BLACKHOLE``
  route without a nexthop, an XDP drop entry). The sentinel lets a blackhole ride the same route
  operations, bookkeeping and replace semantics as a normal route, while no group, nexthop, failover
  rewrite or local repair plan can ever involve it (no group has that id);
- incoming-label route (:class:`MplsLabelAdd` / :class:`MplsLabelDel`): pop a local label and
  forward to one nexthop's gateway;
- source address validation (:class:`SavEnable` / :class:`SavAllow` / :class:`SavRevoke`): per
  interface, the check on or off and its allowed source prefixes (XDP only, see :data:`SavOp`).

Also here: the key types every module shares (:data:`NhKey`, :data:`GroupKey`) and the functions
that derive a group key from a :class:`~common.model.FibEntry`.
"""

from __future__ import annotations

import errno as errno_mod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from common.model import FibEntry, IPAddress, IPNetwork

Labels = tuple[int, ...]
NhKey = tuple[IPAddress, int, Labels]  # (gateway, ifindex, MPLS labels to push)
#: (primary gateways, backup gateways, primary labels, backup labels); gateway tuples sorted.
GroupKey = tuple[tuple[IPAddress, ...], tuple[IPAddress, ...], Labels, Labels]


def sorted_gateways(nhs: tuple[IPAddress, ...]) -> tuple[IPAddress, ...]:
    return nhs if len(nhs) < 2 else tuple(sorted(nhs, key=lambda a: (a.version, int(a))))


def group_key(entry: FibEntry) -> GroupKey:
    """The (primary, backup) identity of an entry: routes with equal keys share one group."""
    return (sorted_gateways(entry.nexthops), sorted_gateways(entry.backup), entry.labels, entry.backup_labels)


def tuple_ids(entry: FibEntry) -> tuple[int, int, int, int]:
    """Identity of the (interned) tuples behind an entry's group key: a per-batch cache key that
    costs no hashing of addresses."""
    return id(entry.nexthops), id(entry.backup), id(entry.labels), id(entry.backup_labels)


#: The "group" of a blackhole route. Group ids are ``(protocol << 22) + n`` (fib/table.py), so this one
#: never names a real group; the XDP trie stores it as its drop value.
BLACKHOLE_GID = 0xFFFFFFFF


# --- operations ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NexthopAdd:
    nid: int
    gateway: IPAddress
    oif: int
    labels: Labels


@dataclass(frozen=True, slots=True)
class NexthopDel:
    nid: int


@dataclass(frozen=True, slots=True)
class GroupAdd:
    gid: int
    members: tuple[int, ...]
    key: GroupKey


@dataclass(frozen=True, slots=True)
class GroupReplace:
    """New members for an existing group; ``failover``: written by the failover lane."""

    gid: int
    members: tuple[int, ...]
    old_members: tuple[int, ...]
    failover: bool = False


@dataclass(frozen=True, slots=True)
class GroupDel:
    """Delete a group. ``routes``: our routes on it, which the kernel drops with it (a withdrawal
    of a whole group: one message instead of one per route)."""

    gid: int
    routes: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteInstall:
    prefix: IPNetwork
    gid: int
    entry: FibEntry


@dataclass(frozen=True, slots=True)
class RouteReplace:
    prefix: IPNetwork
    gid: int
    entry: FibEntry
    old_gid: int


@dataclass(frozen=True, slots=True)
class RouteDelete:
    prefix: IPNetwork
    old_gid: int


@dataclass(frozen=True, slots=True)
class MplsLabelAdd:
    """An AF_MPLS route popping ``label`` and forwarding to nexthop ``nid``'s gateway."""

    label: int
    nid: int
    gateway: IPAddress
    oif: int


@dataclass(frozen=True, slots=True)
class MplsLabelDel:
    label: int
    nid: int


@dataclass(frozen=True, slots=True)
class SavEnable:
    """Source address validation on (or off) for interface ``ifindex`` (BCP 38, RFC 3704)."""

    ifindex: int
    on: bool = True


@dataclass(frozen=True, slots=True)
class SavAllow:
    """Sources in ``prefix`` are legitimate on ``ifindex``."""

    ifindex: int
    prefix: IPNetwork


@dataclass(frozen=True, slots=True)
class SavRevoke:
    ifindex: int
    prefix: IPNetwork


#: Policy operations: only the XDP provider has source address validation (the kernel's rp_filter
#: knows routes, not a customer's allowed set), so the dataplane hands these to the mirrors alone.
SavOp = SavEnable | SavAllow | SavRevoke

Op = (NexthopAdd | NexthopDel | GroupAdd | GroupReplace | GroupDel | RouteInstall | RouteReplace | RouteDelete
      | MplsLabelAdd | MplsLabelDel)
RouteOp = RouteInstall | RouteReplace | RouteDelete


def failover_rewrite(gid: int, members: tuple[int, ...], old_members: tuple[int, ...]) -> GroupReplace:
    """The failover lane's operation: a group replace tagged as failover."""
    return GroupReplace(gid, members, old_members, failover=True)


# --- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OpResult:
    """What a provider did with one operation: ``errno`` 0 is success."""

    op: Op
    errno: int = 0

    @property
    def ok(self) -> bool:
        return self.errno == 0

    @property
    def error(self) -> str | None:
        return None if self.errno == 0 else (errno_mod.errorcode.get(self.errno) or f"errno {self.errno}")


class Results(Sequence[OpResult]):
    """One provider's answer to a batch: errors by operation index (the common case is none, and a
    million ``OpResult`` objects for a clean table load would cost more than the write)."""

    __slots__ = ("errors", "ops")

    def __init__(self, ops: Sequence[Op], errors: Mapping[int, int] | None = None) -> None:
        self.ops = ops
        self.errors: dict[int, int] = dict(errors or {})

    def __len__(self) -> int:
        return len(self.ops)

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self.ops)))]
        return OpResult(self.ops[i], self.errors.get(i, 0))

    def __iter__(self) -> Iterator[OpResult]:
        get = self.errors.get
        for i, op in enumerate(self.ops):
            yield OpResult(op, get(i, 0))

    def errno(self, i: int) -> int:
        return self.errors.get(i, 0)

    @property
    def clean(self) -> bool:
        return not self.errors
