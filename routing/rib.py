"""Adj-RIB-In per peer and the Loc-RIB, producing the FIB diff stream.

Theory of operation
-------------------
The RIB is pure state owned by one task (the daemon's RIB owner); nothing here does I/O or reads a
clock. Every mutating call returns the :class:`FibDiff` values it caused, ``(prefix, old, new)``,
and the caller hands them to the FIB writers.

- :class:`AdjRibIn` keeps, per peer, every prefix the peer announced: the accepted path (after
  import policy) or the rejection with its reason (``show routes --rejected``). ``received`` is
  both together and is what ``max_prefixes`` limits (BIRD's *receive limit*): a hostile peer cannot
  make us store more than that.
- Staleness (graceful restart helper, RFC 4724 §4.2 in spirit): when our BGP speaker dies, the
  peers' paths are kept but marked stale; a path re-announced after the session returns is fresh
  again; :meth:`Rib.sweep_stale` (on End-of-RIB or a timer) drops those that were not. This is how
  killing ExaBGP leaves forwarding untouched.
- :class:`LocRib` holds, per prefix, the accepted paths of all peers and the current
  :class:`~routing.bestpath.Selection`. A change recomputes that prefix only and emits a diff only
  when the FIB entry (the next-hop set) changed, so attribute-only churn never reaches the kernel.
  Storage is one value per prefix: a lone path is kept as itself (its selection and FIB entry are
  built from it when asked, O(1)); from two paths on, one object holds the paths, the best one
  and the FIB entry (issue 12: a full table is mostly single-path prefixes; the selection's reason
  and ECMP set are computed again when the API asks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from common.model import (
    BLACKHOLE,
    FibDiff,
    FibEntry,
    IPAddress,
    IPNetwork,
    Path,
    Validity,
    new_fib_diff,
    new_fib_entry,
    path_of,
    path_source,
    prefix_key,
)
from routing.bestpath import BestPathReason, Selection, select
from routing.policy import ImportPolicy, Rejection, RejectReason
from rpki.vrp import Validator


class _Unknown(Enum):
    """Default of an argument the caller may have looked up already (None is a valid answer)."""

    UNKNOWN = 0


_UNKNOWN = _Unknown.UNKNOWN


@dataclass(slots=True)
class AdjRibIn:
    peer: IPAddress
    policy: ImportPolicy
    max_prefixes: int | None = None
    accepted: dict[IPNetwork, Path] = field(default_factory=dict)
    rejected: dict[IPNetwork, tuple[Path, Rejection]] = field(default_factory=dict)
    stale: set[IPNetwork] = field(default_factory=set)
    #: Rejections since start, by reason (``pop_router_bgp_prefixes_rejected_total``).
    rejected_total: Counter[str] = field(default_factory=Counter)
    #: IPv6 prefixes in ``accepted`` / ``rejected`` (kept by accept/reject/forget).
    v6_accepted: int = 0
    v6_rejected: int = 0
    #: Stored paths (accepted and rejected) by origin validation state (``pop_router_rpki_routes``).
    rpki_states: Counter[Validity | None] = field(default_factory=Counter)
    #: Change recorder, set while someone watches this peer's accepted set (SAV ``accepted-routes``):
    #: (prefix, now accepted) each time a prefix enters or leaves ``accepted``; drained by the core.
    changes: list[tuple[IPNetwork, bool]] | None = None

    @property
    def received(self) -> int:
        return len(self.accepted) + len(self.rejected)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per AFI: (received, accepted). O(1): the API and every metrics scrape ask for it, and a walk
        over a million prefixes held the event loop for ~0.3 s each time (issue 9)."""
        acc, rej = len(self.accepted), len(self.rejected)
        return {"ipv4": (acc + rej - self.v6_accepted - self.v6_rejected, acc - self.v6_accepted),
                "ipv6": (self.v6_accepted + self.v6_rejected, self.v6_accepted)}

    # The only ways in and out of ``accepted``/``rejected``: they keep the IPv6 counts ``counts`` uses.
    def accept(self, prefix: IPNetwork, path: Path, old: Path | _Unknown | None = _UNKNOWN) -> Path | None:
        """Store an accepted path (dropping a rejection of the prefix); returns the previous one.
        Runs once per received prefix: one dict probe when nothing was rejected and the caller has
        looked ``prefix`` up in :attr:`accepted` already (``old``; issue 12)."""
        rej = self.rejected.pop(prefix, None) if self.rejected else None
        if old is _UNKNOWN:
            old = self.accepted.get(prefix)
        self.accepted[prefix] = path
        was = old if old is not None else (rej[0] if rej is not None else None)
        rpki = path.source.rpki
        if was is None or was.source.rpki is not rpki:
            states = self.rpki_states
            if was is not None:
                states[was.source.rpki] -= 1
            states[rpki] += 1
        if prefix.version == 6:
            if rej is not None:
                self.v6_rejected -= 1
            if old is None:
                self.v6_accepted += 1
        if old is None and self.changes is not None:
            self.changes.append((prefix, True))
        return old

    def reject(self, prefix: IPNetwork, path: Path, why: Rejection) -> Path | None:
        """Store a rejection (dropping an accepted path of the prefix); returns that path, if any."""
        v6 = prefix.version == 6
        self._count_rpki(prefix, path)
        if prefix not in self.rejected and v6:
            self.v6_rejected += 1
        self.rejected[prefix] = (path, why)
        old = self.accepted.pop(prefix, None)
        if old is not None and v6:
            self.v6_accepted -= 1
        if old is not None and self.changes is not None:
            self.changes.append((prefix, False))
        return old

    def forget(self, prefix: IPNetwork) -> Path | None:
        """Drop whatever is stored for ``prefix``; returns the accepted path it had, if any."""
        v6 = prefix.version == 6
        self._count_rpki(prefix, None)
        if self.rejected.pop(prefix, None) is not None and v6:
            self.v6_rejected -= 1
        old = self.accepted.pop(prefix, None)
        if old is not None and v6:
            self.v6_accepted -= 1
        if old is not None and self.changes is not None:
            self.changes.append((prefix, False))
        return old

    def _count_rpki(self, prefix: IPNetwork, new: Path | None) -> None:
        """Keep :attr:`rpki_states` as what is stored for ``prefix`` changes to ``new`` (None: gone)."""
        old = self.accepted.get(prefix)
        if old is None:
            rej = self.rejected.get(prefix)
            old = rej[0] if rej is not None else None
        if old is not None:
            self.rpki_states[old.rpki] -= 1
        if new is not None:
            self.rpki_states[new.rpki] += 1


class LimitExceeded(Exception):
    """A peer made us store more than its ``max_prefixes``; the session must be torn down."""

    def __init__(self, peer: IPAddress, limit: int) -> None:
        super().__init__(f"peer {peer} exceeded max_prefixes {limit}")
        self.peer = peer
        self.limit = limit


class _Multi:
    """A prefix with two or more paths: the paths (in arrival order, one per peer), the best one and
    what of the FIB entry does not follow from the best path: the primary next hops (the ECMP set)
    and the backup's next hops and labels, each an interned tuple (kept: the next change is compared
    with them, and the backup needs a second ``select``). Neither the :class:`Selection` nor the
    :class:`FibEntry` object is kept (issue 12: ~100 B and 80 B per prefix of a table that several
    sessions carry); :meth:`entry` builds the entry again when asked, :meth:`LocRib.selection`
    computes the selection again, both the same as they were."""

    __slots__ = ("backup", "backup_labels", "best", "nexthops", "paths")

    def __init__(self, paths: tuple[Path, ...], best: Path, nexthops: tuple[IPAddress, ...],
                 backup: tuple[IPAddress, ...], backup_labels: tuple[int, ...]) -> None:
        self.paths = paths
        self.best = best
        self.nexthops = nexthops
        self.backup = backup
        self.backup_labels = backup_labels

    def entry(self) -> FibEntry:
        """The :class:`FibEntry` this prefix was given (:func:`_entry_of` of its selection)."""
        b = self.best
        if b.rtbh:
            return new_fib_entry(b.prefix, (), blackhole=True)
        return new_fib_entry(b.prefix, self.nexthops, b.attrs.labels, self.backup, self.backup_labels)


class LocRib:
    """Per prefix, one value in one dict (issue 12: ~560 B/prefix less than three dicts, a dict of
    paths, a :class:`Selection` and a :class:`FibEntry` each):

    - one path: the :class:`Path` itself. Its selection (``only_path``) and FIB entry (its next hop,
      no backup) follow from it and are built when asked, in O(1);
    - two or more: a :class:`_Multi` with the paths as a tuple (one per peer, arrival order), the
      best path and the FIB entry's next-hop tuples (the entry itself is built when asked).

    All paths of a prefix share the prefix object stored with the first one (:meth:`canonical`)."""

    def __init__(self) -> None:
        self._routes: dict[IPNetwork, Path | _Multi] = {}
        #: Best-path change stream for exporters (BIRD's ``rt_notify(new, old)``): every recompute
        #: whose best path changed, attributes included, appends ``(prefix, old best, new best)``;
        #: the consumer drains it. None (the default): not recorded, no cost.
        self.best_changes: list[tuple[IPNetwork, Path | None, Path | None]] | None = None

    def __len__(self) -> int:
        return len(self._routes)

    def selection(self, prefix: IPNetwork) -> Selection | None:
        r = self._routes.get(prefix)
        if r is None:
            return None
        return select(r.paths) if type(r) is _Multi else _only(r)

    def best(self, prefix: IPNetwork) -> Path | None:
        r = self._routes.get(prefix)
        if r is None:
            return None
        return r.best if type(r) is _Multi else r

    def paths(self, prefix: IPNetwork) -> list[Path]:
        r = self._routes.get(prefix)
        if r is None:
            return []
        return list(r.paths) if type(r) is _Multi else [r]

    def prefixes(self) -> Iterable[IPNetwork]:
        return self._routes.keys()

    def fib_entry(self, prefix: IPNetwork) -> FibEntry | None:
        r = self._routes.get(prefix)
        if r is None:
            return None
        return r.entry() if type(r) is _Multi else _single_entry(r)

    def canonical(self, prefix: IPNetwork) -> IPNetwork:
        """The prefix object this table keeps for ``prefix`` (``prefix`` itself if none): a path from
        another session can then share it instead of holding its own copy (56 B each)."""
        r = self._routes.get(prefix)
        if r is None:
            return prefix
        return r.paths[0].prefix if type(r) is _Multi else r.prefix

    def set_path(self, path: Path, r: Path | _Multi | _Unknown | None = _UNKNOWN) -> FibDiff | None:
        """Add or replace ``path``'s peer's path of its prefix. ``r``: what the table holds for the
        prefix if the caller has just looked (one hash of the prefix less per path)."""
        prefix = path.prefix
        peer = path.source.peer.address
        if r is _UNKNOWN:
            r = self._routes.get(prefix)
        if r is None:
            self._routes[prefix] = path
            if self.best_changes is not None:
                self.best_changes.append((prefix, None, path))
            return new_fib_diff(prefix, None, _single_entry(path))
        if type(r) is _Multi:
            paths = r.paths
            for i, p in enumerate(paths):
                if p.source.peer.address == peer:
                    paths = (*paths[:i], path, *paths[i + 1:])
                    break
            else:
                paths = (*paths, path)
            return self._recompute(prefix, r.best, r.entry(), paths)
        if r.source.peer.address == peer:  # the only path, replaced
            self._routes[prefix] = path
            if self.best_changes is not None and r != path:
                self.best_changes.append((prefix, r, path))
            old_e, new_e = _single_entry(r), _single_entry(path)
            return None if old_e == new_e else new_fib_diff(prefix, old_e, new_e)
        return self._recompute(prefix, r, _single_entry(r), (r, path))

    def remove_path(self, prefix: IPNetwork, peer: IPAddress) -> FibDiff | None:
        r = self._routes.get(prefix)
        if r is None:
            return None
        if type(r) is not _Multi:
            if r.peer.address != peer:
                return None
            del self._routes[prefix]
            if self.best_changes is not None:
                self.best_changes.append((prefix, r, None))
            return new_fib_diff(prefix, _single_entry(r), None)
        paths = tuple(p for p in r.paths if p.peer.address != peer)
        if len(paths) == len(r.paths):
            return None
        return self._recompute(prefix, r.best, r.entry(), paths)

    def _recompute(self, prefix: IPNetwork, old_best: Path, old_e: FibEntry,
                   paths: tuple[Path, ...]) -> FibDiff | None:
        """Store ``paths`` (one or more) for ``prefix`` and return the diff against ``old_e``."""
        if len(paths) == 1:
            only = paths[0]
            self._routes[prefix] = only
            new_best, new_e = only, _single_entry(only)
        else:
            m = self._routes[prefix] = _multi(paths)
            new_best, new_e = m.best, m.entry()
        if self.best_changes is not None and old_best != new_best:
            self.best_changes.append((prefix, old_best, new_best))
        if old_e == new_e:
            return None
        return new_fib_diff(prefix, old_e, new_e)


#: The outcome of the decision process for a set of paths, by the identity of each path's attribute
#: set and :class:`~common.model.PathSource` in arrival order: (index of the best path, primary next
#: hops, backup next hops, backup labels, the paths it was computed for). Why: ``select`` and the
#: backup's second ``select`` depend on nothing else (not the prefix), and the paths of neighbouring
#: prefixes share both (one UPDATE's prefixes share an attribute set; a session's, a source), so when
#: several sessions carry one table most recomputes are a dict hit instead of two decision processes
#: (issue 12: a third of the routing thread of a 3-session ingest was best path). The value keeps
#: the paths it was computed for, so the objects whose ids make the key stay alive (an id is never
#: reused while its entry exists); cleared whole when full.
_SELECTED: dict[tuple[int, ...], tuple[int, tuple[IPAddress, ...], tuple[IPAddress, ...], tuple[int, ...],
                                       tuple[Path, ...]]] = {}
SELECTED_MAX = 8192


def _multi(paths: tuple[Path, ...]) -> _Multi:
    """The :class:`_Multi` of two or more paths (:func:`select` and :func:`_entry_of`, memoized)."""
    if len(paths) == 2:
        a, b = paths
        key: tuple[int, ...] = (id(a.attrs), id(a.source), id(b.attrs), id(b.source))
    elif len(paths) == 3:
        a, b, c = paths
        key = (id(a.attrs), id(a.source), id(b.attrs), id(b.source), id(c.attrs), id(c.source))
    else:
        key = tuple(i for p in paths for i in (id(p.attrs), id(p.source)))
    hit = _SELECTED.get(key)
    if hit is None:
        sel = select(paths)
        assert sel is not None
        e = _entry_of(sel, paths)
        best_i = next(i for i, p in enumerate(paths) if p is sel.best)
        if len(_SELECTED) >= SELECTED_MAX:
            _SELECTED.clear()
        hit = _SELECTED[key] = (best_i, e.nexthops, e.backup, e.backup_labels, paths)
    return _Multi(paths, paths[hit[0]], hit[1], hit[2], hit[3])


def _only(p: Path) -> Selection:
    return Selection(p, BestPathReason.ONLY_PATH, (p,))


_NH_TUPLES: dict[tuple[IPAddress, ...], tuple[IPAddress, ...]] = {}


def _intern(t: tuple[IPAddress, ...]) -> tuple[IPAddress, ...]:
    """One shared tuple per distinct next-hop set: the FIB writer resolves groups by tuple identity."""
    return _NH_TUPLES.setdefault(t, t)


def _single_entry(p: Path) -> FibEntry:
    """The FIB entry of a prefix whose only path is ``p`` (what :func:`_entry` gives for it)."""
    s = p.source
    if s.rtbh:
        return new_fib_entry(p.prefix, (), blackhole=True)
    return new_fib_entry(p.prefix, _intern((s.nexthop,)), p.attrs.labels)


def _entry(s: Selection, paths: dict[IPAddress, Path] | None = None) -> FibEntry:
    return _entry_of(s, tuple(paths.values()) if paths else ())


def _entry_of(s: Selection, paths: Sequence[Path]) -> FibEntry:
    if s.best.source.rtbh:
        # A blackhole request (RFC 7999) that won: drop here; no next hops, no backup.
        return new_fib_entry(s.best.prefix, (), blackhole=True)
    primary = _intern(tuple(p.source.nexthop for p in s.multipath))
    backup: tuple[IPAddress, ...] = ()
    backup_labels: tuple[int, ...] = ()
    if len(paths) > len(s.multipath):
        rest = [p for p in paths if p.source.nexthop not in primary]
        alt = select(rest)
        if alt is not None:
            backup = _intern(tuple(p.source.nexthop for p in alt.multipath))
            backup_labels = alt.best.attrs.labels
    return new_fib_entry(s.best.prefix, primary, s.best.attrs.labels, backup, backup_labels)


class Rib:
    """Adj-RIB-Ins of all peers plus the Loc-RIB; the single owner of routing state."""

    def __init__(self) -> None:
        self.adj: dict[IPAddress, AdjRibIn] = {}
        self.loc = LocRib()
        #: Peers whose accepted paths may enter the Loc-RIB (False: BFD strict mode, session not Up).
        self.eligible: dict[IPAddress, bool] = {}
        #: The VRP snapshot new paths are validated against (routing/rov.py replaces it on a change).
        self.validator = Validator(())

    def set_eligible(self, peer: IPAddress, eligible: bool) -> list[FibDiff]:
        """Gate a peer's accepted paths in or out of the Loc-RIB (BFD strict mode) without losing them."""
        if self.eligible.get(peer, True) == eligible:
            return []
        self.eligible[peer] = eligible
        a = self.adj.get(peer)
        if a is None:
            return []
        diffs: list[FibDiff] = []
        for prefix, path in a.accepted.items():
            d = self.loc.set_path(path) if eligible else self.loc.remove_path(prefix, peer)
            if d:
                diffs.append(d)
        return diffs

    def add_peer(self, peer: IPAddress, policy: ImportPolicy, max_prefixes: int | None) -> AdjRibIn:
        a = self.adj.get(peer)
        if a is None:
            a = self.adj[peer] = AdjRibIn(peer, policy, max_prefixes)
        return a

    def announce(self, peer: IPAddress, paths: Iterable[Path]) -> list[FibDiff]:
        """Apply announcements; raises :class:`LimitExceeded` *after* storing up to the limit."""
        a = self.adj[peer]
        eligible = self.eligible.get(peer, True)
        loc = self.loc
        accepted, rejected = a.accepted, a.rejected
        diffs: list[FibDiff] = []
        routes = loc._routes
        for path in paths:
            prefix = path.prefix
            # One probe of each table per path (issue 12). Every session's UPDATE brings its own
            # prefix object: keep the one the Loc-RIB already holds, so three sessions' paths (and
            # Adj-RIB-In keys) share one.
            r = routes.get(prefix)
            if r is not None:
                canon = r.paths[0].prefix if type(r) is _Multi else r.prefix
                if canon is not prefix:
                    path = with_prefix(path, canon)
                    prefix = canon
            if a.stale:
                a.stale.discard(prefix)
            old = accepted.get(prefix)
            if (old is None and a.max_prefixes is not None and a.received >= a.max_prefixes
                    and (not rejected or prefix not in rejected)):
                a.rejected_total[RejectReason.MAX_PREFIXES.value] += 1
                raise LimitExceeded(peer, a.max_prefixes)
            path = self.validated(path, a.policy)
            res = a.policy.apply(path)
            if isinstance(res, Rejection):
                a.rejected_total[res.reason.value] += 1
                if a.reject(prefix, path, res) is not None:
                    d = loc.remove_path(prefix, peer)
                    if d:
                        diffs.append(d)
                continue
            a.accept(prefix, res, old)
            if not eligible:
                continue
            d = loc.set_path(res, r)
            if d:
                diffs.append(d)
        return diffs

    def validated(self, path: Path, policy: ImportPolicy) -> Path:
        """``path`` with the origin validation state (RFC 6811) its policy's RPKI mode asks for:
        None with ``off``, else the state against :attr:`validator`. Blackhole paths skip the max
        length (:meth:`~rpki.vrp.Validator.validate_any_length`)."""
        if policy.rpki == "off":
            return path if path.source.rpki is None else with_rpki(path, None)
        state = validation_state(self.validator, path)
        return path if path.source.rpki is state else with_rpki(path, state)

    def withdraw(self, peer: IPAddress, prefixes: Iterable[IPNetwork]) -> list[FibDiff]:
        a = self.adj[peer]
        diffs: list[FibDiff] = []
        for prefix in prefixes:
            a.stale.discard(prefix)
            if a.forget(prefix) is not None:
                d = self.loc.remove_path(prefix, peer)
                if d:
                    diffs.append(d)
        return diffs

    def peer_down(self, peer: IPAddress) -> list[FibDiff]:
        """A session went down: BGP sends no withdrawals for that, so flush the peer ourselves."""
        a = self.adj.get(peer)
        if a is None:
            return []
        prefixes = list(a.accepted) + list(a.rejected)
        return self.withdraw(peer, prefixes)

    def mark_stale(self, peer: IPAddress) -> int:
        a = self.adj.get(peer)
        if a is None:
            return 0
        a.stale = set(a.accepted) | set(a.rejected)
        return len(a.stale)

    def sweep_stale(self, peer: IPAddress) -> list[FibDiff]:
        a = self.adj.get(peer)
        if a is None or not a.stale:
            return []
        stale, a.stale = a.stale, set()
        return self.withdraw(peer, stale)


def validation_state(validator: Validator, path: Path) -> Validity:
    """RFC 6811 §2 state of one path (origin AS: :attr:`~common.model.Attributes.origin_as`)."""
    prefix, attrs = path.prefix, path.attrs
    check = validator.validate_any_length if BLACKHOLE in attrs.communities else validator.validate_int
    return check(*prefix_key(prefix), attrs.origin_as)


def with_rpki(path: Path, state: Validity | None) -> Path:
    """``dataclasses.replace(path, rpki=state)`` at a fraction of its cost (it runs once per received
    path; a full table's ingest spent ~2 s of CPU in ``replace``)."""
    s = path.source
    return path_of(path.prefix, path.attrs, path_source(s.peer, s.nexthop, s.local_pref, state, s.rtbh, s.prepend))


def with_prefix(p: Path, prefix: IPNetwork) -> Path:
    """``p`` for an equal prefix object (the one the Loc-RIB shares across sessions)."""
    return path_of(prefix, p.attrs, p.source)
