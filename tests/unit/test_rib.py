"""Adj-RIB-In, Loc-RIB and the diff stream they produce."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.model import FibDiff, FibEntry
from routing.bestpath import select
from routing.rib import LimitExceeded, Rib

from .factories import path, peer, policy

A1 = peer("10.0.1.2", "acme", 64512, "10.255.0.2")
A2 = peer("10.0.2.2", "acme", 64512, "10.255.0.1")
G = peer("10.0.3.2", "globex", 4200000001, "10.255.0.9")
N = ipaddress.ip_network


def rib(limit: int | None = None) -> Rib:
    r = Rib()
    r.add_peer(A1.address, policy(0), limit)
    r.add_peer(A2.address, policy(0), limit)
    r.add_peer(G.address, policy(1), limit)
    return r


def test_announce_then_withdraw() -> None:
    r = rib()
    d = r.announce(A1.address, [path(p=A1)])
    assert [(x.old, x.new) for x in d] == [(None, FibEntry(N("203.0.113.0/24"), (A1.address,)))]
    d = r.withdraw(A1.address, [N("203.0.113.0/24")])
    assert [(x.old is not None, x.new) for x in d] == [(True, None)]
    assert len(r.loc) == 0


def test_backup_is_the_next_best_path_elsewhere() -> None:
    r = rib()
    r.announce(A1.address, [path(p=A1)])
    r.announce(G.address, [path(p=G, as_path=(4200000001, 4200000001))])  # longer: not best
    e = r.loc.fib_entry(N("203.0.113.0/24"))
    assert e is not None and e.nexthops == (A1.address,) and e.backup == (G.address,)
    d = r.announce(A2.address, [path(p=A2)])  # ECMP primary over acme's two links; globex stays backup
    assert d[0].new is not None and set(d[0].new.nexthops) == {A1.address, A2.address}
    assert d[0].new.backup == (G.address,)


def test_ecmp_then_one_link_down() -> None:
    r = rib()
    r.announce(A1.address, [path(p=A1)])
    d = r.announce(A2.address, [path(p=A2)])
    assert d[0].new is not None and set(d[0].new.nexthops) == {A1.address, A2.address}
    d = r.peer_down(A2.address)
    assert d[0].new == FibEntry(N("203.0.113.0/24"), (A1.address,))


def test_rejected_kept_and_counted_not_installed() -> None:
    r = rib()
    d = r.announce(A1.address, [path("10.99.0.0/16", p=A1), path("203.0.113.0/24", p=A1, as_path=(1,))])
    assert d == []
    a = r.adj[A1.address]
    assert set(a.rejected) == {N("10.99.0.0/16"), N("203.0.113.0/24")}
    assert a.rejected_total == {"bogon": 1, "first_as_mismatch": 1}
    # A corrected re-announcement replaces the rejection.
    d = r.announce(A1.address, [path("203.0.113.0/24", p=A1)])
    assert len(d) == 1 and N("203.0.113.0/24") not in a.rejected
    # A now-hostile re-announcement removes the accepted path.
    d = r.announce(A1.address, [path("203.0.113.0/24", p=A1, as_path=(64512, 65000))])
    assert len(d) == 1 and d[0].new is None


def test_attribute_change_without_nexthop_change_emits_nothing() -> None:
    r = rib()
    r.announce(A1.address, [path(p=A1)])
    assert r.announce(A1.address, [path(p=A1, med=50)]) == []


def test_max_prefixes_counts_received_and_raises() -> None:
    r = rib(limit=3)
    r.announce(A1.address, [path("10.1.0.0/16", p=A1), path("198.51.100.0/24", p=A1)])
    r.announce(A1.address, [path("198.51.100.0/24", p=A1)])  # a replacement is not a new prefix
    r.announce(A1.address, [path("198.51.101.0/24", p=A1)])
    with pytest.raises(LimitExceeded) as e:
        r.announce(A1.address, [path("198.51.102.0/24", p=A1)])
    assert e.value.limit == 3
    assert r.adj[A1.address].rejected_total["max_prefixes"] == 1
    assert r.adj[A1.address].received == 3


def test_stale_sweep_keeps_reannounced() -> None:
    r = rib()
    r.announce(A1.address, [path("203.0.113.0/24", p=A1), path("198.51.100.0/24", p=A1)])
    assert r.mark_stale(A1.address) == 2
    assert r.announce(A1.address, [path("203.0.113.0/24", p=A1)]) == []  # unchanged: no FIB work
    d = r.sweep_stale(A1.address)
    assert [x.prefix for x in d] == [N("198.51.100.0/24")]
    assert r.loc.fib_entry(N("203.0.113.0/24")) is not None
    assert r.sweep_stale(A1.address) == []


PEERS = [A1, A2, G]
PREFIXES = ["203.0.113.0/24", "198.51.100.0/24", "198.51.101.0/24", "10.0.0.0/8"]
ops = st.lists(
    st.tuples(st.sampled_from(["announce", "withdraw", "down", "stale", "sweep"]),
              st.sampled_from(PEERS), st.sampled_from(PREFIXES), st.integers(0, 2)),
    max_size=40,
)


@given(ops)
def test_diff_stream_rebuilds_loc_rib(seq) -> None:
    """Applying the emitted diffs to an empty FIB always yields exactly the Loc-RIB's FIB view."""
    r = rib()
    fib: dict = {}
    for op, p, prefix, med in seq:
        if op == "announce":
            diffs = r.announce(p.address, [path(prefix, p=p, med=med)])
        elif op == "withdraw":
            diffs = r.withdraw(p.address, [N(prefix)])
        elif op == "down":
            diffs = r.peer_down(p.address)
        elif op == "stale":
            r.mark_stale(p.address)
            diffs = []
        else:
            diffs = r.sweep_stale(p.address)
        for d in diffs:
            assert fib.get(d.prefix) == d.old
            if d.new is None:
                del fib[d.prefix]
            else:
                fib[d.prefix] = d.new
    expected = {}
    for prefix in r.loc.prefixes():
        paths = r.loc.paths(prefix)
        s = select(paths)
        assert s is not None
        primary = tuple(x.nexthop for x in s.multipath)
        alt = select([x for x in paths if x.nexthop not in primary])
        backup = tuple(x.nexthop for x in alt.multipath) if alt else ()
        expected[prefix] = FibEntry(prefix, primary, (), backup)
    assert fib == expected


def test_strict_mode_gates_paths_without_losing_them() -> None:
    r = rib()
    assert r.set_eligible(A1.address, False) == []
    assert r.announce(A1.address, [path(p=A1)]) == []  # stored, not installed
    assert N("203.0.113.0/24") in r.adj[A1.address].accepted
    d = r.set_eligible(A1.address, True)  # BFD Up
    assert [(x.prefix, x.new is not None) for x in d] == [(N("203.0.113.0/24"), True)]
    d = r.set_eligible(A1.address, False)  # BFD Down: out of the FIB, kept in the Adj-RIB-In
    assert [(x.prefix, x.new) for x in d] == [(N("203.0.113.0/24"), None)]
    assert N("203.0.113.0/24") in r.adj[A1.address].accepted


_PREFIXES = ["203.0.113.0/24", "198.51.100.0/24", "198.51.101.0/24", "192.0.2.0/24",
             "2001:db8:100::/48", "2001:db8:100:1::/64", "2001:db8:999::/48"]


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(_PREFIXES)), max_size=40))
def test_per_afi_counts_kept_incrementally_equal_a_recount(ops: list[tuple[bool, str]]) -> None:
    """counts() is O(1) (kept by accept/reject/forget); whatever the sequence of announcements (some
    accepted, some rejected by policy) and withdrawals, it equals counting the dictionaries."""
    r = rib()
    for announce, prefix in ops:
        if announce:
            r.announce(A1.address, [path(prefix, p=A1)])
        else:
            r.withdraw(A1.address, [N(prefix)])
    a = r.adj[A1.address]
    want = {}
    for fam, v in (("ipv4", 4), ("ipv6", 6)):
        acc = sum(1 for p in a.accepted if p.version == v)
        want[fam] = (acc + sum(1 for p in a.rejected if p.version == v), acc)
    assert a.counts() == want
    r.peer_down(A1.address)
    assert a.counts() == {"ipv4": (0, 0), "ipv6": (0, 0)}


_LOC_OPS = st.lists(
    st.tuples(st.booleans(), st.sampled_from(PEERS), st.sampled_from(PREFIXES[:2]), st.integers(0, 2),
              st.booleans()),
    max_size=40,
)


@given(_LOC_OPS)
def test_loc_rib_one_value_per_prefix_equals_a_dict_of_paths(seq) -> None:
    """The Loc-RIB keeps a lone path as itself and builds its selection and entry when asked, and of a
    prefix with several paths keeps the best one and the entry's tuples only (issue 12);
    against a plain dict of paths per prefix with ``select`` and ``_entry`` run on every change, the
    paths (in arrival order), selections, FIB entries, diffs and best-path changes are the same."""
    from routing.rib import LocRib, _entry

    loc = LocRib()
    loc.best_changes = []
    ref: dict = {}
    ref_entry: dict = {}
    ref_best: list = []
    for add, p, prefix, med, rtbh in seq:
        pfx = N(prefix)
        old_paths = ref.get(pfx, {})
        old_sel = select(list(old_paths.values()))
        if add:
            x = path(prefix, p=p, med=med)
            if rtbh:
                x = replace(x, rtbh=True)
            d = loc.set_path(x)
            ref.setdefault(pfx, {})[p.address] = x
        else:
            d = loc.remove_path(pfx, p.address)
            ref.get(pfx, {}).pop(p.address, None)
            if not ref.get(pfx, True):
                del ref[pfx]
        paths = ref.get(pfx, {})
        sel = select(list(paths.values()))
        new_e = _entry(sel, paths) if sel is not None else None
        old_e = ref_entry.get(pfx)
        if new_e is None:
            ref_entry.pop(pfx, None)
        else:
            ref_entry[pfx] = new_e
        old_best = old_sel.best if old_sel else None
        new_best = sel.best if sel else None
        if old_best != new_best:
            ref_best.append((pfx, old_best, new_best))
        assert d == (None if old_e == new_e else FibDiff(pfx, old_e, new_e))
        assert loc.selection(pfx) == sel
        assert loc.fib_entry(pfx) == new_e
        assert loc.paths(pfx) == list(paths.values())
        assert set(loc.prefixes()) == set(ref) and len(loc) == len(ref)
        assert all(q.prefix is loc.canonical(pfx) for q in loc.paths(pfx)[:1])
    assert loc.best_changes == ref_best


def test_sessions_share_the_loc_ribs_prefix_object() -> None:
    """A prefix another session already brought is stored with the Loc-RIB's object (issue 12), in the
    Adj-RIB-In keys and the paths alike; re-announcements by the same session too."""
    r = rib()
    r.announce(A1.address, [path(p=A1)])
    first = next(iter(r.loc.prefixes()))
    r.announce(A2.address, [path(p=A2)])
    r.announce(G.address, [path(p=G)])
    r.announce(A1.address, [path(p=A1, med=5)])
    for q in r.loc.paths(first):
        assert q.prefix is first
    for peer_ in PEERS:
        (key,) = r.adj[peer_.address].accepted
        assert key is first and r.adj[peer_.address].accepted[key].prefix is first


def test_policy_returns_the_path_itself_when_nothing_changes() -> None:
    pol = policy(0)
    x = path(p=A1)
    assert pol.apply(x) is x
    y = pol.apply(path(p=A1, local_pref=50))  # the customer's LOCAL_PREF (100) is set: a new path
    assert y == replace(path(p=A1), local_pref=100)


_SHARED_OPS = st.lists(
    st.tuples(st.booleans(), st.integers(0, len(PEERS) - 1), st.sampled_from(PREFIXES), st.integers(0, 2),
              st.booleans()),
    max_size=60,
)


@given(_SHARED_OPS, st.sampled_from([2, 10_000]))
def test_memoized_selection_equals_the_decision_process_when_paths_share_their_parts(seq, cache_max) -> None:
    """Paths of different prefixes share attribute sets and sources (as one UPDATE's prefixes and one
    session's do), so recomputes hit the memo of ``routing.rib._multi`` (issue 12) — also with a memo
    small enough to be cleared all the time: every prefix's selection and FIB entry must still be what
    ``select`` and ``_entry`` give for its paths."""
    import routing.rib as rib_mod
    from common.model import intern_attrs, path_of
    from routing.rib import LocRib, _entry, with_prefix

    def template(p, med: int, rtbh: bool):
        base = path("0.0.0.0/0", p=p, med=med)
        base = replace(base, rtbh=True) if rtbh else base
        # Equal attribute sets are one object across sessions (as ``intern_attrs`` makes them).
        return path_of(base.prefix, intern_attrs(base.attrs), base.source)

    templates = {(i, med, rtbh): template(p, med, rtbh)
                 for i, p in enumerate(PEERS) for med in range(3) for rtbh in (False, True)}
    saved = rib_mod.SELECTED_MAX
    rib_mod.SELECTED_MAX = cache_max
    rib_mod._SELECTED.clear()
    try:
        loc = LocRib()
        ref: dict = {}
        for add, i, prefix, med, rtbh in seq:
            pfx = N(prefix)
            if add:
                x = with_prefix(templates[(i, med, rtbh)], loc.canonical(pfx))
                loc.set_path(x)
                ref.setdefault(pfx, {})[PEERS[i].address] = x
            else:
                loc.remove_path(pfx, PEERS[i].address)
                ref.get(pfx, {}).pop(PEERS[i].address, None)
            for q, paths in ref.items():
                sel = select(list(paths.values()))
                assert loc.selection(q) == sel
                assert loc.fib_entry(q) == (_entry(sel, paths) if sel is not None else None)
                assert loc.best(q) is (sel.best if sel is not None else None)
        assert len(rib_mod._SELECTED) <= cache_max
    finally:
        rib_mod.SELECTED_MAX = saved
        rib_mod._SELECTED.clear()
