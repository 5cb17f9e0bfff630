"""Source address validation planning (fib/sav.py) and the core's accepted-route recorder: pure."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from fib.ops import SavAllow, SavEnable, SavRevoke
from fib.sav import SavCustomer, SavPlan, customer_interfaces
from routing.core import AcceptedChanged, WatchAccepted
from routing.exabgp import messages as msg
from tests.unit.test_core import A, B, G, announce, drain, make_core, up

N = ipaddress.ip_network
IP = ipaddress.ip_address


def acme(mode: str = "prefix-list", interfaces: frozenset[int] = frozenset({3})) -> SavCustomer:
    return SavCustomer("acme", mode, interfaces, frozenset({N("203.0.113.0/24"), N("198.51.100.0/22")}),  # type: ignore[arg-type]
                       frozenset({A}))


def test_interfaces_are_those_holding_the_local_addresses() -> None:
    ifs = {IP("10.0.1.1"): 3, IP("10.0.2.1"): 4}
    assert customer_interfaces([IP("10.0.1.1"), IP("10.0.2.1"), IP("10.0.9.1")], ifs) == {3, 4}


def test_prefix_list_mode_allows_the_listed_prefixes_and_the_peer_then_enables() -> None:
    plan = SavPlan()
    ops = plan.configure([acme()])
    assert ops == [SavAllow(3, N("10.0.1.2/32")), SavAllow(3, N("198.51.100.0/22")), SavAllow(3, N("203.0.113.0/24")),
                   SavEnable(3, True)]
    assert plan.configure([acme()]) == []  # same configuration: nothing to do
    # Reload to off: disable first, then revoke.
    ops = plan.configure([acme("off")])
    assert ops[0] == SavEnable(3, False) and all(isinstance(o, SavRevoke) for o in ops[1:]) and len(ops) == 4
    assert plan.wanted() == (set(), {})


def test_accepted_routes_mode_follows_route_changes_incrementally() -> None:
    plan = SavPlan()
    c = acme("accepted-routes", frozenset({3, 4}))
    assert plan.watched_peers() == frozenset()
    plan.configure([c])
    assert plan.watched_peers() == {A}
    p = N("203.0.113.0/25")
    assert plan.accepted([(A, p, True)]) == [SavAllow(3, p), SavAllow(4, p)]
    assert plan.accepted([(A, p, True)]) == []  # already there
    assert plan.accepted([(A, p, False)]) == [SavRevoke(3, p), SavRevoke(4, p)]
    assert plan.accepted([(G, p, True)]) == []  # not a SAV customer's peer
    # A route accepted before a reload to prefix-list is kept in mind for a reload back.
    plan.accepted([(A, p, True)])
    plan.configure([acme("prefix-list", frozenset({3, 4}))])
    assert p not in plan.wanted()[1][3]
    ops = plan.configure([c])
    assert SavAllow(3, p) in ops and SavRevoke(3, N("198.51.100.0/22")) in ops


def test_two_customers_on_one_interface_never_revoke_each_other() -> None:
    plan = SavPlan()
    other = SavCustomer("globex", "prefix-list", frozenset({3}), frozenset({N("203.0.113.0/24")}), frozenset({G}))
    plan.configure([acme(), other])
    ops = plan.configure([acme("off"), other])
    assert SavRevoke(3, N("203.0.113.0/24")) not in ops and SavEnable(3, False) not in ops
    assert SavRevoke(3, N("198.51.100.0/22")) in ops


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([A, B]), st.integers(0, 5), st.booleans()), max_size=40))
def test_incremental_equals_rebuilt(events: list) -> None:
    """Whatever the order of route changes, the incremental state equals a rebuild from scratch, and
    replaying the emitted operations on an empty set gives that state."""
    c = SavCustomer("acme", "accepted-routes", frozenset({3}), frozenset(), frozenset({A, B}))
    plan = SavPlan()
    applied: set = set()
    for op in plan.configure([c]) + plan.accepted((p, N(f"203.0.113.{i * 8}/29"), ok) for p, i, ok in events):
        if isinstance(op, SavAllow):
            applied.add(op.prefix)
        elif isinstance(op, SavRevoke):
            applied.discard(op.prefix)
    fresh = SavPlan()
    fresh.routes = plan.routes
    fresh.configure([c])
    assert fresh.wanted() == plan.wanted()
    assert applied == plan.wanted()[1].get(3, set())


def test_core_records_watched_peers_accepted_set() -> None:
    core = make_core()
    up(core, A)
    announce(core, A, "203.0.113.0/24")
    out = core.on_event(WatchAccepted(frozenset({A})), 3.0)
    assert out == [AcceptedChanged(((A, N("203.0.113.0/24"), True),))]  # what it held when watched
    out = announce(core, A, "198.51.100.0/24", "192.0.2.0/24")  # the second is outside acme's list
    changes = [a for a in out if isinstance(a, AcceptedChanged)]
    assert changes == [AcceptedChanged(((A, N("198.51.100.0/24"), True),))]
    out = core.on_event(msg.UpdateEvent(A, None, (), (N("198.51.100.0/24"),)), 4.0)  # type: ignore[arg-type]
    assert [a for a in out if isinstance(a, AcceptedChanged)] == [
        AcceptedChanged(((A, N("198.51.100.0/24"), False),))]
    # Session down: the flush job's removals come out of work().
    core.on_event(msg.StateEvent(A, A, "down"), 5.0)
    changes = [a for a in drain(core) if isinstance(a, AcceptedChanged)]
    assert [c for a in changes for c in a.changes] == [(A, N("203.0.113.0/24"), False)]
    # Unwatched: nothing recorded.
    core.on_event(WatchAccepted(frozenset()), 6.0)
    up(core, A, 7.0)
    assert not [a for a in announce(core, A, "203.0.113.0/24", now=8.0) if isinstance(a, AcceptedChanged)]
