"""Each best-path comparator, table-driven, plus order independence and ECMP."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.model import Origin, Path
from routing.bestpath import BestPathReason, select, select_by_chain

from .factories import path, peer

A1 = peer("10.0.1.2", "acme", 64512, "10.255.0.2")
A2 = peer("10.0.2.2", "acme", 64512, "10.255.0.1")
G = peer("10.0.3.2", "globex", 64513, "10.255.0.9")
IB = peer("10.0.4.2", "core", 65000, "10.255.0.0")


@pytest.mark.parametrize(
    ("a", "b", "winner", "reason"),
    [
        (path(p=A1, local_pref=200), path(p=G, local_pref=100), 0, BestPathReason.LOCAL_PREF),
        (path(p=A1, as_path=(64512, 1)), path(p=G, as_path=(64513,)), 1, BestPathReason.AS_PATH),
        (path(p=A1, origin=Origin.INCOMPLETE), path(p=G, origin=Origin.EGP), 1, BestPathReason.ORIGIN),
        (path(p=A1, med=10), path(p=A2, med=5), 1, BestPathReason.MED),
        (path(p=A1, med=None), path(p=A2, med=5), 0, BestPathReason.MED),  # missing MED is 0
        # MED is not compared across neighbour ASes: router-id decides.
        (path(p=A1, med=100), path(p=G, med=1), 0, BestPathReason.ROUTER_ID),
        (path(p=IB, as_path=(64512,)), path(p=A1), 1, BestPathReason.EBGP),
        (path(p=A1), path(p=A2), 1, BestPathReason.ROUTER_ID),
        (path(p=A1), path(p=peer("10.0.1.1", "acme", 64512, "10.255.0.2")), 1, BestPathReason.PEER_ADDRESS),
    ],
)
def test_comparator(a: Path, b: Path, winner: int, reason: BestPathReason) -> None:
    for order in ((a, b), (b, a)):
        s = select(order)
        assert s is not None
        assert s.best is (a, b)[winner]
        assert s.reason is reason


def test_only_path() -> None:
    s = select([path()])
    assert s is not None and s.reason is BestPathReason.ONLY_PATH
    assert select([]) is None


def test_ecmp_across_a_customers_links() -> None:
    s = select([path(p=A1), path(p=A2), path(p=G)])
    assert s is not None
    assert s.best.peer is A2
    assert {p.nexthop for p in s.multipath} == {A1.address, A2.address}
    assert s.multipath[0] is s.best


def test_no_ecmp_when_attributes_differ() -> None:
    s = select([path(p=A1, as_path=(64512, 64512)), path(p=A2)])
    assert s is not None and [p.peer for p in s.multipath] == [A2]


PEERS = [A1, A2, G, IB, peer("10.0.5.2", "globex", 64513, "10.255.0.9")]


def _paths(draw_attrs) -> list[Path]:
    out = []
    for p, (lp, plen, origin, med) in zip(PEERS, draw_attrs, strict=False):
        first = p.asn if not p.ibgp else 64512
        out.append(path(p=p, local_pref=lp, as_path=(first,) * plen, origin=Origin(origin), med=med))
    return out


attrs = st.tuples(st.sampled_from([100, 200]), st.integers(1, 3), st.integers(0, 2),
                  st.one_of(st.none(), st.integers(0, 3)))


@given(st.lists(attrs, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_result_independent_of_arrival_order(draw_attrs, rnd) -> None:
    paths = _paths(draw_attrs)
    s1 = select(paths)
    shuffled = list(paths)
    rnd.shuffle(shuffled)
    s2 = select(shuffled)
    assert s1 is not None and s2 is not None
    assert s1.best == s2.best
    assert s1.reason == s2.reason
    assert set(s1.multipath) == set(s2.multipath)




@given(st.lists(st.tuples(st.sampled_from(PEERS), attrs, st.sampled_from(["10.0.9.1", "10.0.9.2"])),
                min_size=2, max_size=6))
def test_the_shortcuts_equal_the_chain(drawn) -> None:
    """``select`` of two paths is one comparison and of more the chain written out; the chain is the
    reference (same peer twice, same next hop, iBGP and MED across neighbour ASes included)."""
    pair = []
    for p, (lp, plen, origin, med), nh in drawn:
        first = p.asn if not p.ibgp else 64512
        pair.append(path(p=p, local_pref=lp, as_path=(first,) * plen, origin=Origin(origin), med=med, nexthop=nh))
    for paths in (pair, pair[::-1]):
        fast, ref = select(paths), select_by_chain(paths)
        assert fast is not None and ref is not None
        assert (fast.best, fast.reason, fast.multipath) == (ref.best, ref.reason, ref.multipath)
