"""The sans-IO routing core driven with a fake clock: no processes, no sockets, no kernel."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from common.model import Attributes, Origin, Peer, intern_attrs
from routing.core import (
    PEER_TRANSITIONS,
    STARTUP_HOLD_TIMER,
    STARTUP_SWEEP_TIMER,
    AdminReset,
    ArmTimer,
    BfdDown,
    BfdUp,
    Effect,
    PeerInput,
    PeerState,
    PeerStatus,
    RoutingCore,
    SendCommand,
    SpeakerDied,
    SubmitFib,
    SweepKernelStale,
    TimerFired,
    stale_timer,
    transition,
)
from routing.exabgp import messages as msg
from routing.policy import ImportPolicy
from routing.rib import Rib
from tests.unit.factories import config, customer_sessions, drain, session_up

A = ipaddress.ip_address("10.0.1.2")
B = ipaddress.ip_address("10.0.2.2")
G = ipaddress.ip_address("10.0.3.2")
ATTRS = intern_attrs(Attributes(origin=Origin.IGP, as_path=(64512,)))


def make_core(*, bfd: bool = False, strict: bool = False, max_prefixes: int | None = None,
              prefixes_le: bool = True, speakers: dict[str, int] | None = None) -> RoutingCore:
    rib = Rib()
    peers = customer_sessions(config(), rib, max_prefixes=max_prefixes, bfd=bfd, strict=strict, speakers=speakers)
    return RoutingCore(rib, peers, stale_timeout_s=120.0)


up = session_up


def announce(core: RoutingCore, peer: ipaddress.IPv4Address, *prefixes: str, now: float = 2.0) -> list:
    ann = tuple((ipaddress.ip_network(p), peer, ()) for p in prefixes)
    return core.on_event(msg.UpdateEvent(peer, ATTRS, ann, ()), now)


def fib_prefixes(actions: list) -> dict:
    """Prefix -> new next hops, over every SubmitFib in ``actions`` (the last one wins)."""
    out = {}
    for a in actions:
        if isinstance(a, SubmitFib):
            for d in a.diffs:
                out[str(d.prefix)] = None if d.new is None else [str(n) for n in d.new.nexthops]
    return out


@pytest.mark.parametrize(("state", "inp"), list(itertools.product(PeerState, PeerInput)))
def test_every_state_input_pair_is_a_row(state: PeerState, inp: PeerInput) -> None:
    new, effect = transition(state, inp)
    assert (state, inp) in PEER_TRANSITIONS
    assert isinstance(new, PeerState) and isinstance(effect, Effect)
    # Only a session that was Established is flushed; a speaker's death keeps routes as stale, and so
    # does a graceful end of an Established session (we are the peer's helper).
    assert (effect is Effect.FLUSH) == (state is PeerState.ESTABLISHED and inp is PeerInput.DOWN)
    assert (effect is Effect.STALE) == (inp is PeerInput.SPEAKER_DIED or (
        state is PeerState.ESTABLISHED and inp is PeerInput.DOWN_GRACEFUL))


def test_up_then_down_flushes_in_slices_and_records_reason() -> None:
    core = make_core(max_prefixes=10_000)
    up(core, A)
    acts = announce(core, A, "198.51.100.0/24", "198.51.101.0/24", "203.0.113.0/24")
    assert fib_prefixes(acts) == {"198.51.100.0/24": ["10.0.1.2"], "198.51.101.0/24": ["10.0.1.2"],
                                  "203.0.113.0/24": ["10.0.1.2"]}
    assert core.on_event(msg.StateEvent(A, A, "down", "peer reset"), 5.0) == []
    ps = core.peers[A]
    assert ps.state is PeerState.IDLE and ps.since == 5.0 and ps.flaps == 1
    assert ps.last_down_reason == "peer reset"
    assert core.busy  # the flush is a job, not part of the event
    assert fib_prefixes(drain(core, budget=1)) == {p: None for p in ("198.51.100.0/24", "198.51.101.0/24",
                                                                     "203.0.113.0/24")}
    assert not core.busy and len(core.rib.loc) == 0


def test_failed_connection_attempt_is_not_a_down() -> None:
    core = make_core()
    core.on_event(msg.StateEvent(A, A, "connected"), 1.0)
    core.on_event(msg.StateEvent(A, A, "down", "Connection refused"), 1.5)
    ps = core.peers[A]
    assert ps.state is PeerState.IDLE
    assert ps.last_down_reason == "" and ps.flaps == 0 and not core.busy


def test_bfd_down_flushes_and_tears_down_with_cease_10() -> None:
    core = make_core(bfd=True)
    up(core, A)
    announce(core, A, "203.0.113.0/24")
    acts = core.on_event(BfdDown(A, "control_detection_time_expired", 3.0), 3.001)
    assert acts == [SendCommand(A, f"neighbor {A} teardown 10", "bfd_down")]
    assert fib_prefixes(drain(core)) == {"203.0.113.0/24": None}
    # ExaBGP then reports the session down: our reason wins over its wording.
    core.on_event(msg.StateEvent(A, A, "down", "TCP closed"), 3.1)
    assert core.peers[A].last_down_reason == "BFD down (control_detection_time_expired)"
    assert core.peers[A].bfd_down_at == 3.0


def test_bfd_down_while_the_session_is_opening_sends_no_notification() -> None:
    """A peer re-creating its BFD session while BGP reconnects must not be sent Cease/10 each time
    (the cycle the soak showed after a storm); the Down is recorded all the same."""
    core = make_core(bfd=True)
    core.on_event(msg.StateEvent(A, A, "connected"), 1.0)
    assert core.peers[A].state is PeerState.CONNECT
    assert core.on_event(BfdDown(A, "neighbor_signaled_down", 1.2), 1.2) == []
    ps = core.peers[A]
    assert ps.bfd_state == "down" and ps.bfd_down_at == 1.2 and ps.teardown_reason == ""
    # Once Established, a BFD Down tears the session down as before.
    core.on_event(BfdUp(A), 1.5)
    up(core, A)
    acts = core.on_event(BfdDown(A, "control_detection_time_expired", 3.0), 3.0)
    assert acts == [SendCommand(A, f"neighbor {A} teardown 10", "bfd_down")]


def test_strict_bfd_gates_paths_without_losing_them() -> None:
    core = make_core(bfd=True, strict=True)
    up(core, A)
    assert announce(core, A, "203.0.113.0/24") == []  # accepted, but not eligible until BFD is Up
    assert core.on_event(BfdUp(A), 2.5) == []
    assert fib_prefixes(drain(core)) == {"203.0.113.0/24": ["10.0.1.2"]}
    core.on_event(BfdDown(A, "neighbor_signaled_down", 3.0), 3.0)
    assert fib_prefixes(drain(core)) == {"203.0.113.0/24": None}
    assert "203.0.113.0/24" in {str(p) for p in core.rib.adj[A].accepted}  # kept for when BFD returns


def test_max_prefixes_tears_down_with_cease_1_and_flushes() -> None:
    core = make_core(max_prefixes=1)
    up(core, A)
    acts = announce(core, A, "198.51.100.0/24", "198.51.101.0/24")
    assert SendCommand(A, f"neighbor {A} teardown 1", "max_prefixes") in acts
    drain(core)
    assert len(core.rib.loc) == 0
    core.on_event(msg.StateEvent(A, A, "down", "closed"), 3.0)
    assert core.peers[A].last_down_reason == "max_prefixes 1 exceeded"


def test_speaker_death_keeps_routes_stale_until_eor() -> None:
    core = make_core()
    up(core, A)
    up(core, G)
    announce(core, A, "198.51.100.0/24", "198.51.101.0/24")
    acts = core.on_event(SpeakerDied(0), 10.0)
    assert acts == [ArmTimer(stale_timer(0), 130.0)]
    assert core.peers[A].state is PeerState.IDLE and core.peers[A].flaps == 1
    assert core.peers[B].flaps == 0  # was never up
    assert not core.busy and len(core.rib.loc) == 2  # nothing withdrawn
    up(core, A, now=11.0)
    announce(core, A, "198.51.100.0/24", now=11.5)  # re-announced: no longer stale
    core.on_event(msg.EorEvent(A, "ipv4", "unicast"), 12.0)
    assert fib_prefixes(drain(core)) == {"198.51.101.0/24": None}
    assert [str(p) for p in core.rib.loc.prefixes()] == ["198.51.100.0/24"]


def announce_globex(core: RoutingCore, *prefixes: str, now: float = 2.0) -> list:
    attrs = intern_attrs(Attributes(origin=Origin.IGP, as_path=(4200000001,)))
    ann = tuple((ipaddress.ip_network(p), G, ()) for p in prefixes)
    return core.on_event(msg.UpdateEvent(G, attrs, ann, ()), now)


def test_speaker_death_stales_only_that_process_peers() -> None:
    """A pool of two ExaBGP processes: globex on exabgp-0, acme (two sessions) on exabgp-1.
    SpeakerDied(1) makes only acme's sessions stale; globex's stays Established with its routes
    current, and process 1's own stale timer sweeps only acme's leftovers."""
    core = make_core(speakers={"globex": 0, "acme": 1})
    for p in (A, B, G):
        up(core, p)
    announce(core, A, "198.51.100.0/24", "198.51.101.0/24")
    announce_globex(core, "203.0.113.0/24")
    acts = core.on_event(SpeakerDied(1), 10.0)
    assert acts == [ArmTimer(stale_timer(1), 130.0)]
    for p in (A, B):
        assert core.peers[p].state is PeerState.IDLE and core.peers[p].flaps == 1
    assert core.peers[A].last_down_reason == "BGP speaker exabgp-1 restarting"
    assert core.peers[G].state is PeerState.ESTABLISHED and core.peers[G].flaps == 0
    assert core.rib.adj[A].stale and not core.rib.adj[G].stale
    assert not core.busy and len(core.rib.loc) == 3  # nothing withdrawn meanwhile
    up(core, A, now=11.0)
    announce(core, A, "198.51.100.0/24", now=11.5)
    # Process 0's timer has nothing of acme's to sweep; process 1's sweeps acme's leftover.
    assert core.on_event(TimerFired(stale_timer(0)), 130.0) == [SweepKernelStale()]
    assert not core.busy
    core.on_event(TimerFired(stale_timer(1)), 130.0)
    assert fib_prefixes(drain(core)) == {"198.51.101.0/24": None}
    assert {str(p) for p in core.rib.loc.prefixes()} == {"198.51.100.0/24", "203.0.113.0/24"}


def test_reload_move_to_another_speaker_keeps_routes_stale_until_eor() -> None:
    from routing.core import Reconfigure, ReconfigureApplied

    core = make_core(speakers={"acme": 0, "globex": 0})
    for p in (A, G):
        up(core, p)
    announce(core, A, "198.51.100.0/24", "198.51.101.0/24")
    announce_globex(core, "203.0.113.0/24")
    acts = core.on_event(Reconfigure(1, moves=((A, 1),)), 5.0)
    assert acts == [ArmTimer(stale_timer(1), 125.0)]
    assert core.peers[A].speaker == 1 and core.peers[A].state is PeerState.IDLE
    assert core.peers[A].last_down_reason == "moved from exabgp-0 to exabgp-1"
    assert core.peers[G].state is PeerState.ESTABLISHED
    assert [a for a in drain(core) if isinstance(a, ReconfigureApplied)]
    assert len(core.rib.loc) == 3
    up(core, A, now=6.0)
    announce(core, A, "198.51.100.0/24", now=6.5)
    core.on_event(msg.EorEvent(A, "ipv4", "unicast"), 7.0)
    assert fib_prefixes(drain(core)) == {"198.51.101.0/24": None}
    # Process 1 dying now hits the moved session, not globex.
    core.on_event(SpeakerDied(1), 8.0)
    assert core.peers[G].state is PeerState.ESTABLISHED and core.peers[A].state is PeerState.IDLE


def test_stale_timer_sweeps_everything_left() -> None:
    core = make_core()
    up(core, A)
    announce(core, A, "198.51.100.0/24")
    core.on_event(SpeakerDied(0, None), 10.0)
    acts = core.on_event(TimerFired(stale_timer(0)), 130.0)
    assert acts == [SweepKernelStale()]
    assert fib_prefixes(drain(core)) == {"198.51.100.0/24": None}


def test_startup_sweep_on_eor_from_every_peer_or_timer() -> None:
    core = make_core()
    assert core.start(0.0, adopted_routes=5) == [ArmTimer(STARTUP_SWEEP_TIMER, 120.0)]
    for p in (A, B):
        up(core, p)
        assert core.on_event(msg.EorEvent(p, "ipv4", "unicast"), 2.0) == []
    up(core, G)
    assert core.on_event(msg.EorEvent(G, "ipv4", "unicast"), 3.0) == [SweepKernelStale()]
    assert core.on_event(TimerFired(STARTUP_SWEEP_TIMER), 120.0) == []  # already swept
    core2 = make_core()
    core2.start(0.0, adopted_routes=5)
    assert core2.on_event(TimerFired(STARTUP_SWEEP_TIMER), 120.0) == [SweepKernelStale()]
    assert make_core().start(0.0) == []


def test_admin_reset_and_unknown_peer() -> None:
    core = make_core()
    assert core.on_event(AdminReset(A), 1.0) == [SendCommand(A, f"neighbor {A} teardown 4", "admin")]
    stranger = ipaddress.ip_address("10.9.9.9")
    assert core.on_event(msg.StateEvent(stranger, stranger, "up"), 1.0) == []
    assert core.counters.unknown_peer_events == 1


def test_routing_events_wait_for_a_flush_but_the_core_says_so() -> None:
    """The shell must not feed routing events while ``busy``: a flush of A's old routes started before
    A's new UPDATE must not withdraw what that UPDATE brings."""
    core = make_core()
    up(core, A)
    announce(core, A, "198.51.100.0/24", "198.51.101.0/24")
    core.on_event(msg.StateEvent(A, A, "down"), 2.0)
    assert core.busy
    drain(core)
    up(core, A, now=3.0)
    announce(core, A, "198.51.100.0/24", now=3.0)
    assert [str(p) for p in core.rib.loc.prefixes()] == ["198.51.100.0/24"]


def test_startup_hold_keeps_fib_changes_until_every_eor() -> None:
    """After a restart that adopted kernel routes, sessions returning one by one must not flip a
    dual-homed prefix to one next hop and back: the kernel sees only the converged result."""
    core = make_core()
    core.startup_hold_s = 10.0
    assert core.start(0.0, adopted_routes=3) == [ArmTimer(STARTUP_SWEEP_TIMER, 120.0),
                                                 ArmTimer(STARTUP_HOLD_TIMER, 10.0)]
    up(core, A)
    assert announce(core, A, "198.51.100.0/24") == []  # held
    up(core, B)
    assert announce(core, B, "198.51.100.0/24") == []
    core.on_event(msg.EorEvent(A, "ipv4", "unicast"), 2.0)
    core.on_event(msg.EorEvent(B, "ipv4", "unicast"), 2.0)
    up(core, G)
    acts = core.on_event(msg.EorEvent(G, "ipv4", "unicast"), 3.0)
    assert isinstance(acts[0], SubmitFib) and acts[1] == SweepKernelStale()
    (d,) = acts[0].diffs
    assert d.old is None and sorted(map(str, d.new.nexthops)) == ["10.0.1.2", "10.0.2.2"]  # one change, ECMP
    assert fib_prefixes(announce(core, A, "198.51.101.0/24", now=4.0)) == {"198.51.101.0/24": ["10.0.1.2"]}


def test_startup_hold_ends_at_its_timer() -> None:
    core = make_core()
    core.startup_hold_s = 5.0
    core.start(0.0, adopted_routes=1)
    up(core, A)
    announce(core, A, "198.51.100.0/24")
    assert fib_prefixes(core.on_event(TimerFired(STARTUP_HOLD_TIMER), 5.0)) == {"198.51.100.0/24": ["10.0.1.2"]}
    assert fib_prefixes(announce(core, A, "198.51.101.0/24")) == {"198.51.101.0/24": ["10.0.1.2"]}


def _big_core(max_prefixes: int) -> RoutingCore:
    import copy

    from routing.config import parse_config
    from tests.unit.factories import CONFIG

    doc = copy.deepcopy(CONFIG)
    doc["customers"][0]["import"] = {"prefixes": ["20.0.0.0/8 le 24"], "max_prefixes": max_prefixes}
    c = parse_config(doc)
    customer, pc = c.peers()[0]
    rib = Rib()
    rib.add_peer(pc.address, ImportPolicy(c.router, customer), max_prefixes)
    ps = PeerStatus(pc.address, pc.local_address, customer.name, "ipv4",
                    Peer(pc.address, customer.name, customer.asn, 65000))
    return RoutingCore(rib, {pc.address: ps}, stale_timeout_s=120.0)


def test_a_packed_update_is_applied_in_slices() -> None:
    """~800 prefixes in one UPDATE are ~20 ms of RIB work: a job in slices, not one loop step."""
    core = _big_core(10_000)
    up(core, A)
    prefixes = [f"20.{i // 256}.{i % 256}.0/24" for i in range(800)]
    assert announce(core, A, *prefixes) == []
    assert core.busy
    first = core.work(100)
    assert len(first[0].diffs) == 100  # one slice: 100 prefixes
    rest = drain(core, budget=100)
    assert len(fib_prefixes(first + rest)) == 800 and len(core.rib.loc) == 800
    # Withdrawn the same way, in the order of the message.
    core.on_event(msg.UpdateEvent(A, ATTRS, (), tuple(ipaddress.ip_network(p) for p in prefixes)), 3.0)
    assert set(fib_prefixes(drain(core)).values()) == {None} and len(core.rib.loc) == 0


def test_max_prefixes_inside_a_sliced_update_tears_down() -> None:
    core = _big_core(150)
    up(core, A)
    announce(core, A, *[f"20.0.{i}.0/24" for i in range(200)])
    acts = drain(core)
    assert SendCommand(A, f"neighbor {A} teardown 1", "max_prefixes") in acts
    assert len(core.rib.loc) == 0  # what was stored up to the limit is flushed too


# --- graceful restart, helper side (RFC 4724 §4.2) ----------------------------------------------------
def gr(time_s: int = 120, forwarding: bool = True, afis: tuple[str, ...] = ("ipv4",)) -> msg.GracefulRestart:
    return msg.GracefulRestart(time_s, frozenset(afis), frozenset(afis if forwarding else ()), False)


def gr_open(core: RoutingCore, cap: msg.GracefulRestart | None, now: float) -> list:
    return core.on_event(msg.OpenEvent(A, ipaddress.ip_address("10.255.0.2"), 64512, 90, cap), now)


def helped(core: RoutingCore) -> None:
    """acme's A up with the capability, two paths, then gone without a NOTIFICATION."""
    gr_open(core, gr(), 1.0)
    up(core, A)
    announce(core, A, "198.51.100.0/24", "198.51.101.0/24")
    acts = core.on_event(msg.StateEvent(A, A, "down", "Connection reset by peer"), 10.0)
    assert acts == [ArmTimer(f"gr:{A}", 130.0)]


def test_graceful_end_keeps_paths_stale_then_eor_sweeps_what_was_not_reannounced() -> None:
    core = make_core()
    helped(core)
    ps = core.peers[A]
    assert ps.gr_helping and ps.state is PeerState.IDLE and ps.flaps == 1 and not core.busy
    assert len(core.rib.loc) == 2 and len(core.rib.adj[A].stale) == 2  # forwarding untouched
    assert gr_open(core, gr(), 20.0) == [ArmTimer(f"gr:{A}", 380.0)]  # back with forwarding state
    up(core, A, now=20.0)
    announce(core, A, "198.51.100.0/24", now=21.0)
    core.on_event(msg.EorEvent(A, "ipv4", "unicast"), 22.0)
    assert fib_prefixes(drain(core)) == {"198.51.101.0/24": None}
    assert not ps.gr_helping and [str(p) for p in core.rib.loc.prefixes()] == ["198.51.100.0/24"]


def test_graceful_restart_not_completed_in_its_restart_time_sweeps_everything() -> None:
    core = make_core()
    helped(core)
    core.on_event(TimerFired(f"gr:{A}"), 130.0)
    assert fib_prefixes(drain(core)) == {"198.51.100.0/24": None, "198.51.101.0/24": None}
    assert not core.peers[A].gr_helping
    core.on_event(TimerFired(f"gr:{A}"), 131.0)  # a late timer for a peer no longer helped: nothing
    assert not core.busy


def test_back_without_forwarding_state_sweeps_stale_paths_at_once() -> None:
    core = make_core()
    helped(core)
    assert gr_open(core, gr(forwarding=False), 20.0) == []
    assert fib_prefixes(drain(core)) == {"198.51.100.0/24": None, "198.51.101.0/24": None}
    assert not core.peers[A].gr_helping


@pytest.mark.parametrize("why", ["notification", "no capability", "other afi", "our teardown", "bfd"])
def test_ends_that_are_not_graceful_flush(why: str) -> None:
    core = make_core(bfd=True)
    gr_open(core, None if why == "no capability" else gr(afis=("ipv6",)) if why == "other afi" else gr(), 1.0)
    up(core, A)
    announce(core, A, "198.51.100.0/24")
    if why == "notification":
        core.on_event(msg.NotificationEvent(A, 6, 2, "receive"), 9.0)
    elif why == "our teardown":
        core.on_event(AdminReset(A), 9.0)
    elif why == "bfd":
        core.on_event(BfdDown(A, "control_detection_time_expired", 9.0), 9.0)
    assert core.on_event(msg.StateEvent(A, A, "down", "closed"), 10.0) == []
    assert not core.peers[A].gr_helping
    assert fib_prefixes(drain(core)) == {"198.51.100.0/24": None}


def test_a_notification_in_an_earlier_session_does_not_spoil_the_next_one() -> None:
    core = make_core()
    gr_open(core, gr(), 1.0)
    up(core, A)
    core.on_event(msg.NotificationEvent(A, 6, 4, "send"), 2.0)
    core.on_event(msg.StateEvent(A, A, "down", "closed"), 3.0)
    drain(core)
    helped(core)  # a new session: its own graceful end is helped
    assert core.peers[A].gr_helping


def test_rejections_are_counted_once_each_without_a_copy_per_update() -> None:
    from routing.metrics import Metrics

    core = make_core()
    core.metrics = m = Metrics()
    up(core, A)
    adj = core.rib.adj[A]

    def rejected() -> dict[str, float]:
        return {s.labels["reason"]: s.value for fam in m.registry.collect() for s in fam.samples
                if s.name == "pop_router_bgp_prefixes_rejected_total" and s.labels["peer"] == str(A)}

    announce(core, A, "203.0.113.0/24", "10.99.0.0/24")  # one accepted, one off the customer's list
    (reason,) = adj.rejected_total
    assert rejected() == {reason: 1.0}
    announce(core, A, "198.51.100.0/24")
    assert rejected() == {reason: 1.0}
    # Counted elsewhere (route origin validation counts its own): not counted again here.
    adj.rejected_total["rpki_invalid"] += 1
    announce(core, A, "198.51.101.0/24")
    assert rejected() == {reason: 1.0}
    announce(core, A, "10.99.1.0/24", "10.99.2.0/24")
    assert rejected() == {reason: 3.0}
    updates = m.registry.get_sample_value("pop_router_bgp_updates_received_total", {"peer": str(A)})
    assert updates == 4.0


# --- UPDATE batches (issue 12) --------------------------------------------------------------------------
def _upd(peer: ipaddress.IPv4Address, announce: list[str] = (), withdraw: list[str] = (),  # type: ignore[assignment]
         med: int = 0) -> msg.UpdateEvent:
    attrs = intern_attrs(Attributes(origin=Origin.IGP, as_path=(64512,), med=med))
    return msg.UpdateEvent(peer, attrs, tuple((ipaddress.ip_network(p), peer, ()) for p in announce),
                           tuple(ipaddress.ip_network(p) for p in withdraw))


def _final_fib(core: RoutingCore, acts: list) -> dict:
    return fib_prefixes(acts + drain(core))


def test_a_batch_of_updates_ends_where_the_same_updates_one_by_one_do() -> None:
    """Announce, re-announce with another MED, withdraw, a packed UPDATE in the middle (sliced, and
    the UPDATEs behind it after it): same Loc-RIB, same FIB, same counters, as one event each."""
    big = [f"20.{i // 256}.{i % 256}.0/24" for i in range(150)]
    updates = [
        _upd(A, ["20.255.0.0/24", "20.255.1.0/24"]),
        _upd(A, ["20.255.0.0/24"], med=5),
        _upd(A, big),
        _upd(A, [], withdraw=["20.255.1.0/24", big[0]]),
        _upd(A, [big[0]], med=7),
    ]
    one = _big_core(10_000)
    up(one, A)
    seq = []
    for u in updates:
        seq += one.on_event(u, 2.0)
        seq += drain(one)
    batched = _big_core(10_000)
    up(batched, A)
    acts = batched.on_event(msg.UpdateBatch(A, tuple(updates)), 2.0)
    assert batched.busy  # the packed UPDATE and the two behind it became jobs, in order
    assert _final_fib(batched, acts) == fib_prefixes(seq)
    assert {p: batched.rib.loc.best(p) for p in batched.rib.loc.prefixes()} == \
        {p: one.rib.loc.best(p) for p in one.rib.loc.prefixes()}
    assert batched.peers[A].updates == one.peers[A].updates == 5
    assert len(batched.rib.loc) == 1 + 150


def test_max_prefixes_inside_a_batch_tears_down_once() -> None:
    core = _big_core(5)
    up(core, A)
    batch = msg.UpdateBatch(A, tuple(_upd(A, [f"20.0.{i}.{j}/32" for j in range(2)]) for i in range(5)))
    acts = core.on_event(batch, 2.0) + drain(core)
    assert acts.count(SendCommand(A, f"neighbor {A} teardown 1", "max_prefixes")) == 1
    assert len(core.rib.loc) == 0


def test_a_batch_for_an_unknown_peer_is_dropped_and_counted() -> None:
    core = make_core()
    other = ipaddress.ip_address("10.9.9.9")
    assert core.on_event(msg.UpdateBatch(other, (_upd(other, ["198.51.100.0/24"]),)), 2.0) == []
    assert core.counters.unknown_peer_events == 1
