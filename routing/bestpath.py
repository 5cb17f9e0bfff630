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

from common.model import IPAddress, Path


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
        best = min(key(p) for p in paths)  # type: ignore[type-var]
        return [p for p in paths if key(p) == best]

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
    return a.version, int(a)


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


def select(paths: Sequence[Path]) -> Selection | None:
    if not paths:
        return None
    if len(paths) == 1:  # most prefixes of a full table: no chain, no sort (issue 12)
        only = paths[0]
        return Selection(only, BestPathReason.ONLY_PATH, (only,))
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
    mp: list[Path] = [best]
    seen = {best.nexthop}
    for p in sorted(tied_for_multipath or (), key=lambda p: _addr_key(p.nexthop)):
        if p.peer.customer == best.peer.customer and p.nexthop not in seen:
            seen.add(p.nexthop)
            mp.append(p)
    return Selection(best, reason, tuple(mp))
