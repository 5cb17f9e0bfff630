"""Best-path selection: the RFC 4271 §9.1.2 decision process as an ordered chain of comparators.

Theory of operation
-------------------
A single path wins at once with reason ``only_path`` (the chain is not run; most prefixes of a full
table). Otherwise each step of the chain takes the surviving candidates and keeps the preferred ones
(a tie keeps several). The first step that leaves a single path is recorded as the
:class:`BestPathReason` shown by ``pop-router show routes``. Steps, in order (RFC 4271 §9.1.2.2 unless noted):

1. ``local_pref``   highest LOCAL_PREF (§9.1.1, degree of preference);
2. ``as_path``      shortest AS_PATH (a); an AS_SET counts as one (not produced by ExaBGP's parse);
3. ``origin``       lowest ORIGIN, IGP < EGP < INCOMPLETE (b);
4. ``med``          lowest MED, compared only among paths from the same neighbouring AS (c); a
                    missing MED counts as 0. Applied as the RFC describes, per neighbour-AS group
                    over the whole set — not pairwise — which is what makes the result
                    independent of the order paths arrived in (pairwise MED is not transitive);
5. ``ebgp``         eBGP over iBGP (d);
6. ``router_id``    lowest BGP identifier of the peer (f);
7. ``peer_address`` lowest peer address (g).

(IGP cost, step e, does not exist here: every next hop is directly connected.)

ECMP (multipath): the paths still tied after step 5 that come from the same customer as the best
path form the next-hop set, so a customer's equal links share the load; paths from another customer
never join (their MED/AS would not have been compared fairly).

Invariant (hypothesis-tested): the result depends only on the set of paths, not their order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from common.model import IPAddress, Path, fast_constructor


class BestPathReason(StrEnum):
    ONLY_PATH = "only_path"
    LOCAL_PREF = "local_pref"
    AS_PATH = "as_path"
    ORIGIN = "origin"
    MED = "med"
    EBGP = "ebgp"
    ROUTER_ID = "router_id"
    PEER_ADDRESS = "peer_address"


Step = Callable[[list[Path]], list[Path]]


def _keep_min(key: Callable[[Path], object]) -> Step:
    def step(paths: list[Path]) -> list[Path]:
        keys = [key(p) for p in paths]
        best = min(keys)  # type: ignore[type-var]
        return [p for p, k in zip(paths, keys, strict=True) if k == best]

    return step


def _neighbor_as(p: Path) -> int:
    return p.attrs.as_path[0] if p.attrs.as_path else p.peer.local_asn


def _med_step(paths: list[Path]) -> list[Path]:
    lowest: dict[int, int] = {}
    for p in paths:
        m = p.attrs.med or 0
        n = _neighbor_as(p)
        if n not in lowest or m < lowest[n]:
            lowest[n] = m
    return [p for p in paths if (p.attrs.med or 0) == lowest[_neighbor_as(p)]]


def _addr_key(a: IPAddress) -> tuple[int, int]:
    """(version, address as an integer): the ``ipaddress`` object's own fields, read without the
    Python-level ``version`` property and ``__int__`` call (every tie of a multi-session table
    reaches this step: issue 12)."""
    return a._version, a._ip  # type: ignore[union-attr]


CHAIN: tuple[tuple[BestPathReason, Step], ...] = (
    (BestPathReason.LOCAL_PREF, _keep_min(lambda p: -p.local_pref)),
    (BestPathReason.AS_PATH, _keep_min(lambda p: len(p.attrs.as_path))),
    (BestPathReason.ORIGIN, _keep_min(lambda p: int(p.attrs.origin))),
    (BestPathReason.MED, _med_step),
    (BestPathReason.EBGP, _keep_min(lambda p: p.peer.ibgp)),
    (BestPathReason.ROUTER_ID, _keep_min(lambda p: int(p.peer.router_id))),
    (BestPathReason.PEER_ADDRESS, _keep_min(lambda p: _addr_key(p.peer.address))),
)
_MULTIPATH_AFTER = BestPathReason.EBGP


@dataclass(frozen=True, slots=True)
class Selection:
    best: Path
    reason: BestPathReason
    #: Paths whose next hops form the ECMP set, best first, one per distinct next hop.
    multipath: tuple[Path, ...]


#: A selection per best-path run (issue 12): :func:`common.model.fast_constructor`.
_new_selection = fast_constructor(Selection)


def select(paths: Sequence[Path]) -> Selection | None:
    """The best path, why it won, and the ECMP set. One path: at once; two (every second arrival of
    a prefix and nearly every backup, issue 12: half of a 3-session ingest's CPU was this chain):
    :func:`_select2`, one comparison of the pair; more: the chain."""
    if not paths:
        return None
    if len(paths) == 1:  # most prefixes of a full table: no chain, no sort (issue 12)
        only = paths[0]
        return _new_selection(only, BestPathReason.ONLY_PATH, (only,))
    if len(paths) == 2:
        return _select2(paths[0], paths[1])
    return _select_many(paths)


def select_by_chain(paths: Sequence[Path]) -> Selection | None:
    """The decision process as the :data:`CHAIN` of steps, for any number of paths (the reference
    :func:`_select2` is tested against)."""
    if not paths:
        return None
    cands = list(paths)
    reason = BestPathReason.ONLY_PATH
    tied_for_multipath: list[Path] | None = None
    if len(cands) > 1:
        for r, step in CHAIN:
            cands = step(cands)
            if r is _MULTIPATH_AFTER:
                tied_for_multipath = cands
            if len(cands) == 1:
                reason = r
                break
        if tied_for_multipath is None:
            tied_for_multipath = cands
    best = min(cands, key=lambda p: _addr_key(p.peer.address))
    return _new_selection(best, reason, _multipath(best, tied_for_multipath or ()))


def _multipath(best: Path, tied: Sequence[Path]) -> tuple[Path, ...]:
    customer = best.source.peer.customer
    if len(tied) < 2 or not any(p is not best and p.source.peer.customer == customer for p in tied):
        return (best,)  # no other path may share the load: nothing to sort (issue 12)
    mp: list[Path] = [best]
    seen = {best.nexthop}
    for p in sorted(tied, key=lambda p: _addr_key(p.nexthop)):
        if p.peer.customer == customer and p.nexthop not in seen:
            seen.add(p.nexthop)
            mp.append(p)
    return tuple(mp)


def _select2(a: Path, b: Path) -> Selection:
    """:func:`select_by_chain` of two paths as one comparison: for a pair each step is "keep the
    better one, or both on a tie" (the MED step included: two paths of different neighbour ASes keep
    both), so the first step where they differ decides (``tests/unit/test_bestpath.py`` checks that
    both agree on random pairs)."""
    sa, sb = a.source, b.source  # the session and policy values, read once (common.model.Path)
    if sa.local_pref != sb.local_pref:
        return _won(a if sa.local_pref > sb.local_pref else b, BestPathReason.LOCAL_PREF)
    aa, ba = a.attrs, b.attrs
    if len(aa.as_path) != len(ba.as_path):
        return _won(a if len(aa.as_path) < len(ba.as_path) else b, BestPathReason.AS_PATH)
    if aa.origin != ba.origin:
        return _won(a if aa.origin < ba.origin else b, BestPathReason.ORIGIN)
    am, bm = aa.med or 0, ba.med or 0
    if am != bm and _neighbor_as(a) == _neighbor_as(b):
        return _won(a if am < bm else b, BestPathReason.MED)
    ap, bp = sa.peer, sb.peer
    if ap.ibgp != bp.ibgp:
        return _won(b if ap.ibgp else a, BestPathReason.EBGP)
    # Tied through step 5: both may share the load (same customer, distinct next hops).
    if ap.router_id != bp.router_id:
        best, reason = (a if ap.router_id._ip < bp.router_id._ip else b), BestPathReason.ROUTER_ID
    else:
        ka, kb = _addr_key(ap.address), _addr_key(bp.address)
        best = a if ka <= kb else b
        reason = BestPathReason.PEER_ADDRESS if ka != kb else BestPathReason.ONLY_PATH
    if ap.customer == bp.customer and sa.nexthop != sb.nexthop:
        return _new_selection(best, reason, (best, b if best is a else a))
    return _new_selection(best, reason, (best,))


def _select_many(paths: Sequence[Path]) -> Selection:
    """:func:`select_by_chain` with the steps written out: each step one list of keys and one filter,
    no step or key function calls (a third of the chain's cost; tested equal to it)."""
    R = BestPathReason
    keys: list = [p.source.local_pref for p in paths]
    top = max(keys)
    c = [p for p, k in zip(paths, keys, strict=True) if k == top]
    if len(c) == 1:
        return _won(c[0], R.LOCAL_PREF)
    keys = [len(p.attrs.as_path) for p in c]
    low = min(keys)
    c = [p for p, k in zip(c, keys, strict=True) if k == low]
    if len(c) == 1:
        return _won(c[0], R.AS_PATH)
    keys = [p.attrs.origin for p in c]
    low = min(keys)
    c = [p for p, k in zip(c, keys, strict=True) if k == low]
    if len(c) == 1:
        return _won(c[0], R.ORIGIN)
    c = _med_step(c)
    if len(c) == 1:
        return _won(c[0], R.MED)
    keys = [p.source.peer.ibgp for p in c]
    if True in keys and False in keys:
        c = [p for p, k in zip(c, keys, strict=True) if not k]
    tied = c
    if len(c) == 1:
        return _won(c[0], R.EBGP)
    keys = [p.source.peer.router_id._ip for p in c]
    low = min(keys)
    c = [p for p, k in zip(c, keys, strict=True) if k == low]
    reason = R.ROUTER_ID
    if len(c) > 1:
        keys = [_addr_key(p.peer.address) for p in c]
        low = min(keys)
        c = [p for p, k in zip(c, keys, strict=True) if k == low]
        reason = R.PEER_ADDRESS if len(c) == 1 else R.ONLY_PATH
    best = c[0] if len(c) == 1 else min(c, key=lambda p: _addr_key(p.peer.address))
    return _new_selection(best, reason, _multipath(best, tied))


def _won(best: Path, reason: BestPathReason) -> Selection:
    return _new_selection(best, reason, (best,))
