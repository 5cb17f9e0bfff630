"""The BFD session state machine driven by a fake clock: every table row, timers, Poll/Final, auth."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from bfd.auth import AuthConfig, AuthState, sign
from bfd.packet import Auth, AuthType, ControlPacket, Diag, DropReason, State, decode, encode
from bfd.session import (
    TRANSITIONS,
    BfdSession,
    Dropped,
    Send,
    SessionConfig,
    SessionKey,
    SessionTable,
    StateChanged,
)

MS = 1000


def cfg(discr: int = 1, tx_ms: int = 10, rx_ms: int = 10, mult: int = 3, auth: AuthConfig | None = None):
    return SessionConfig(discr, tx_ms * MS, rx_ms * MS, mult, auth)


def pkt(state: State, my: int = 99, your: int = 1, tx_ms: int = 10, rx_ms: int = 10, mult: int = 3, **kw):
    return ControlPacket(state, Diag.NONE, mult, my, your, tx_ms * MS, rx_ms * MS, **kw)


def feed(s: BfdSession, p: ControlPacket, now: float):
    return s.on_packet(p, encode(p), now)


def session_in(state: State, now: float = 0.0) -> BfdSession:
    s = BfdSession(cfg(), now, rng=lambda: 1.0)
    if state == State.ADMIN_DOWN:
        s.admin_down(now)
    elif state == State.INIT:
        feed(s, pkt(State.DOWN, your=0), now)
    elif state == State.UP:
        feed(s, pkt(State.INIT), now)
    assert s.state == state
    return s


@pytest.mark.parametrize(("local", "remote"), list(itertools.product(State, State)))
def test_every_transition_row(local: State, remote: State) -> None:
    s = session_in(local)
    your = 1 if remote not in (State.DOWN, State.ADMIN_DOWN) else 0
    actions = feed(s, pkt(remote, your=your), 0.5)
    if local == State.ADMIN_DOWN:
        assert actions == [Dropped(DropReason.ADMIN_DOWN)] and s.state == State.ADMIN_DOWN
        return
    new, diag = TRANSITIONS[(local, remote)]
    assert s.state == new
    changes = [a for a in actions if isinstance(a, StateChanged)]
    if new != local:
        assert changes == [StateChanged(local, new, diag or Diag.NONE, 0.5)]
        # A state change is announced to the peer at once.
        assert any(isinstance(a, Send) and decode(a.data).state == new for a in actions)
    else:
        assert changes == []
    if diag is not None:
        assert s.local_diag == diag


def test_table_is_complete() -> None:
    assert set(TRANSITIONS) == {(a, b) for a in (State.DOWN, State.INIT, State.UP) for b in State}


def test_three_way_handshake_and_detection_with_two_sessions() -> None:
    a = BfdSession(cfg(1), 0.0, rng=lambda: 1.0)
    b = BfdSession(cfg(2), 0.0, rng=lambda: 1.0)
    now = 0.0
    queue: list[tuple[str, bytes]] = []
    for _ in range(200):
        for name, s in (("a", a), ("b", b)):
            for act in s.on_timer(now):
                if isinstance(act, Send):
                    queue.append((name, act.data))
        while queue:
            src, data = queue.pop(0)
            dst = b if src == "a" else a
            for act in dst.on_packet(decode(data), data, now):
                if isinstance(act, Send):
                    queue.append(("b" if src == "a" else "a", act.data))
        if a.state == b.state == State.UP and not a.poll_active and not b.poll_active:
            break
        now = min(x for x in (a.next_deadline(), b.next_deadline()) if x is not None)
    assert a.state == b.state == State.UP
    # Once Up, both send at the negotiated 10 ms and detect in 3 x 10 ms.
    assert a.tx_interval_us() == 10 * MS and a.detection_time_us() == 30 * MS
    last_rx = a.last_rx
    assert last_rx is not None
    # b goes silent: a declares it down exactly at last_rx + 30 ms, not a tick earlier.
    t = last_rx + 0.0299
    assert not [x for x in a.on_timer(t) if isinstance(x, StateChanged)]
    ch = [x for x in a.on_timer(last_rx + 0.030) if isinstance(x, StateChanged)]
    assert ch == [StateChanged(State.UP, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, last_rx + 0.030)]
    assert a.flaps == 1 and a.desired_min_tx_us == 1_000_000 and a.remote_discr == 0


def test_slow_rate_while_not_up_and_jitter_bounds() -> None:
    s = BfdSession(cfg(tx_ms=10), 0.0, rng=lambda: 0.0)
    assert s.desired_min_tx_us == 1_000_000  # §6.8.3
    sends = [a for a in s.on_timer(0.0) if isinstance(a, Send)]
    assert len(sends) == 1 and decode(sends[0].data).desired_min_tx_us == 1_000_000
    assert s.next_tx == pytest.approx(0.75)  # 75 % jitter floor
    s2 = BfdSession(cfg(mult=1), 0.0, rng=lambda: 1.0)
    s2.on_timer(0.0)
    assert s2.next_tx == pytest.approx(0.90)  # 75-90 % with detect mult 1
    assert s.on_timer(0.7) == []  # nothing before it is due


def test_going_up_starts_a_poll_and_final_ends_it() -> None:
    s = session_in(State.UP)
    assert s.poll_active and s.desired_min_tx_us == 10 * MS
    sends = [a for a in s.on_timer(0.01) if isinstance(a, Send)]
    assert sends and decode(sends[-1].data).poll
    feed(s, pkt(State.UP, final=True), 0.02)
    assert not s.poll_active
    sends = [a for a in s.on_timer(0.04) if isinstance(a, Send)]
    assert sends and not decode(sends[-1].data).poll and s.state == State.UP


def test_poll_is_answered_at_once_with_final_only() -> None:
    s = session_in(State.UP)
    actions = feed(s, pkt(State.UP, poll=True), 0.1)
    finals = [decode(a.data) for a in actions if isinstance(a, Send)]
    assert len(finals) == 1 and finals[0].final and not finals[0].poll


def test_larger_tx_interval_waits_for_poll_completion() -> None:
    s = session_in(State.UP)
    feed(s, pkt(State.UP, final=True), 0.01)
    s.set_timers(50 * MS, 10 * MS)
    assert s.poll_active and s.desired_min_tx_us == 50 * MS
    assert s.tx_interval_us() == 10 * MS  # old rate until the peer confirms
    feed(s, pkt(State.UP, final=True), 0.02)
    assert s.tx_interval_us() == 50 * MS


def test_smaller_rx_interval_counts_for_detection_after_poll() -> None:
    s = session_in(State.UP)
    feed(s, pkt(State.UP, final=True, tx_ms=5), 0.01)
    assert s.detection_time_us() == 30 * MS
    s.set_timers(10 * MS, 5 * MS)
    assert s.detection_time_us() == 30 * MS
    feed(s, pkt(State.UP, final=True, tx_ms=5), 0.02)
    assert s.detection_time_us() == 15 * MS


def test_detection_uses_remote_values() -> None:
    s = session_in(State.UP)
    feed(s, pkt(State.UP, tx_ms=50, mult=5), 1.0)
    assert s.detection_time_us() == 5 * 50 * MS
    assert s.detect_deadline == pytest.approx(1.25)


def test_remote_min_rx_zero_stops_periodic_tx() -> None:
    s = session_in(State.UP)
    feed(s, pkt(State.UP, rx_ms=0), 0.1)
    assert all(not isinstance(a, Send) for a in s.on_timer(5.0)) or s.detect_deadline is not None


def test_admin_down_sent_and_honoured() -> None:
    s = session_in(State.UP)
    actions = s.admin_down(1.0)
    assert actions[0] == StateChanged(State.UP, State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN, 1.0)
    assert decode(actions[1].data).state == State.ADMIN_DOWN
    assert decode(actions[1].data).diag == Diag.ADMINISTRATIVELY_DOWN
    assert s.admin_up(2.0) == [StateChanged(State.ADMIN_DOWN, State.DOWN, Diag.NONE, 2.0)]
    peer = session_in(State.UP)
    feed(peer, pkt(State.ADMIN_DOWN, your=1), 1.0)
    assert peer.state == State.DOWN and peer.local_diag == Diag.NEIGHBOR_SIGNALED_SESSION_DOWN


# --- authentication ---------------------------------------------------------------------------------
AUTHS = [
    AuthConfig(AuthType.SIMPLE, 7, b"secret"),
    AuthConfig(AuthType.KEYED_MD5, 7, b"secret"),
    AuthConfig(AuthType.METICULOUS_KEYED_MD5, 7, b"secret"),
    AuthConfig(AuthType.KEYED_SHA1, 7, b"secret"),
    AuthConfig(AuthType.METICULOUS_KEYED_SHA1, 7, b"secret"),
]


@pytest.mark.parametrize("a", AUTHS, ids=[a.type.name for a in AUTHS])
def test_auth_sign_verify_and_wrong_secret(a: AuthConfig) -> None:
    p = pkt(State.DOWN, your=0)
    data = sign(p, a, 1000)
    st = AuthState(a)
    assert st.verify(data, decode(data), 3) is None
    wrong = AuthConfig(a.type, a.key_id, b"other")
    assert AuthState(wrong).verify(data, decode(data), 3) == DropReason.AUTH_FAILED
    other_key = AuthConfig(a.type, 8, a.secret)
    assert AuthState(other_key).verify(data, decode(data), 3) == DropReason.AUTH_FAILED
    # A flipped bit in the packet body breaks the digest (simple password has none to break).
    if a.type != AuthType.SIMPLE:
        bad = bytearray(data)
        bad[14] ^= 1
        assert AuthState(a).verify(bytes(bad), decode(bytes(bad)), 3) == DropReason.AUTH_FAILED


def test_md5_vector_matches_rfc_construction() -> None:
    """Keyed MD5 = MD5(packet with the zero-padded key in the digest field), §6.7.3."""
    a = AuthConfig(AuthType.KEYED_MD5, 1, b"abc")
    p = pkt(State.UP, my=0x01020304, your=0x05060708)
    data = sign(p, a, 0x0A0B0C0D)
    with_key = encode(p.with_auth(Auth(AuthType.KEYED_MD5, 1, b"abc".ljust(16, b"\0"), 0x0A0B0C0D)))
    assert data[:-16] == with_key[:-16]
    assert data[-16:] == hashlib.md5(with_key).digest()
    assert data[24:32].hex() == "021801000a0b0c0d"  # type 2, len 24, key id 1, reserved, sequence


@pytest.mark.parametrize("t", [AuthType.METICULOUS_KEYED_MD5, AuthType.METICULOUS_KEYED_SHA1])
def test_meticulous_rejects_replay_and_old_sequence(t: AuthType) -> None:
    a = AuthConfig(t, 1, b"k")
    st = AuthState(a)
    p = pkt(State.UP)
    d1 = sign(p, a, 100)
    assert st.verify(d1, decode(d1), 3) is None
    assert st.verify(d1, decode(d1), 3) == DropReason.AUTH_SEQUENCE  # replay
    d2 = sign(p, a, 101)
    assert st.verify(d2, decode(d2), 3) is None
    far = sign(p, a, 101 + 3 * 3 + 1)
    assert st.verify(far, decode(far), 3) == DropReason.AUTH_SEQUENCE  # outside the 3 x mult window


@pytest.mark.parametrize("t", [AuthType.KEYED_MD5, AuthType.KEYED_SHA1])
def test_keyed_accepts_same_sequence_and_wraps(t: AuthType) -> None:
    a = AuthConfig(t, 1, b"k")
    st = AuthState(a)
    p = pkt(State.UP)
    d = sign(p, a, 0xFFFFFFFF)
    assert st.verify(d, decode(d), 3) is None
    assert st.verify(d, decode(d), 3) is None  # keyed: the same number is allowed
    wrapped = sign(p, a, 2)
    assert st.verify(wrapped, decode(wrapped), 3) is None  # modulo 2^32
    old = sign(p, a, 0xFFFFFFF0)
    assert st.verify(old, decode(old), 3) == DropReason.AUTH_SEQUENCE


def test_session_a_bit_must_match_configuration() -> None:
    plain = BfdSession(cfg(), 0.0)
    a = AUTHS[1]
    signed = sign(pkt(State.DOWN, your=0), a, 1)
    assert plain.on_packet(decode(signed), signed, 0.1) == [Dropped(DropReason.AUTH_UNEXPECTED)]
    authed = BfdSession(cfg(auth=a), 0.0)
    unsigned = encode(pkt(State.DOWN, your=0))
    assert authed.on_packet(decode(unsigned), unsigned, 0.1) == [Dropped(DropReason.AUTH_MISSING)]
    assert authed.on_packet(decode(signed), signed, 0.1)[0] == StateChanged(State.DOWN, State.INIT, Diag.NONE, 0.1)
    # Our own packets carry the auth section.
    sends = [x for x in authed.on_timer(0.2) if isinstance(x, Send)]
    assert sends and decode(sends[0].data).auth is not None


def test_meticulous_tx_sequence_increments_keyed_does_not() -> None:
    m = BfdSession(cfg(auth=AUTHS[2]), 0.0)
    k = BfdSession(cfg(auth=AUTHS[1]), 0.0)
    seqs_m = [decode(m._send(0.0).data).auth.sequence for _ in range(3)]  # type: ignore[union-attr]
    seqs_k = [decode(k._send(0.0).data).auth.sequence for _ in range(3)]  # type: ignore[union-attr]
    assert seqs_m[1] == (seqs_m[0] + 1) & 0xFFFFFFFF and seqs_m[2] == (seqs_m[1] + 1) & 0xFFFFFFFF
    assert len(set(seqs_k)) == 1


# --- demultiplexing -----------------------------------------------------------------------------------
def test_demux_by_discriminator_then_by_addresses_and_ttl() -> None:
    t = SessionTable()
    key = SessionKey("10.0.1.2", "10.0.1.1", "eth1", False)
    s = BfdSession(cfg(5), 0.0)
    t.add(key, s, 255)
    assert t.lookup(pkt(State.DOWN, your=0), key, 255) == (s, None)
    assert t.lookup(pkt(State.UP, your=5), key, 255) == (s, None)
    assert t.lookup(pkt(State.UP, your=6), key, 255) == (None, DropReason.NO_SESSION)
    other = SessionKey("10.0.9.9", "10.0.1.1", "eth1", False)
    assert t.lookup(pkt(State.DOWN, your=0), other, 255) == (None, DropReason.NO_SESSION)
    assert t.lookup(pkt(State.UP, your=5), other, 255) == (None, DropReason.NO_SESSION)  # discr of another peer
    assert t.lookup(pkt(State.UP, your=5), key, 254) == (None, DropReason.TTL)  # RFC 5881: TTL 255 only
    assert t.remove(key) is s and t.lookup(pkt(State.UP, your=5), key, 255) == (None, DropReason.NO_SESSION)


def test_next_packet_pulled_in_when_the_peer_speeds_up() -> None:
    """FRR advertises Required Min RX 1 s until it is Up: once it asks for 50 ms, a packet already
    scheduled a second away must be brought forward, or FRR declares us dead (seen in the lab)."""
    s = BfdSession(cfg(tx_ms=20, rx_ms=30), 0.0, rng=lambda: 1.0)
    feed(s, pkt(State.INIT, tx_ms=1000, rx_ms=1000), 1.0)  # -> Up; interval is max(20 ms, 1 s)
    assert s.state == State.UP and s.next_tx == pytest.approx(2.0)
    feed(s, pkt(State.UP, tx_ms=40, rx_ms=50, poll=True), 1.001)
    assert s.next_tx <= 1.001 + 0.050


# --- attribution of Downs (issue 9) -------------------------------------------------------------------
def up_and_settled(now: float = 0.0) -> BfdSession:
    """A session Up at 10 ms x 3 both ways, its Poll Sequence done, at ``now``."""
    s = session_in(State.UP, now)
    feed(s, pkt(State.UP, final=True), now)
    assert not s.poll_active and s.tx_interval_us() == 10 * MS and s.detection_time_us() == 30 * MS
    return s


def run_until(s: BfdSession, t_end: float, rx_every: float | None, now: float) -> tuple[float, list[StateChanged]]:
    """Jump the fake clock from deadline to deadline up to ``t_end``; the peer sends every ``rx_every``."""
    changes: list[StateChanged] = []
    next_rx = now + rx_every if rx_every else None
    while True:
        cands = [x for x in (s.next_deadline(), next_rx) if x is not None]
        t = min(cands)
        if t > t_end:
            return t_end, changes
        now = t
        if next_rx is not None and now >= next_rx:
            changes += [a for a in feed(s, pkt(State.UP), now) if isinstance(a, StateChanged)]
            next_rx = now + rx_every if rx_every else None
        changes += [a for a in s.on_timer(now) if isinstance(a, StateChanged)]


def test_detection_down_reports_the_expired_gap_and_the_largest_previous_one() -> None:
    s = up_and_settled()
    now, _ = run_until(s, 1.0, 0.010, 0.0)
    # One late packet (25 ms gap) from the peer, then normal again, then silence.
    assert s.last_rx is not None
    now, _ = run_until(s, s.last_rx + 0.025, None, now)
    feed(s, pkt(State.UP), now)
    now, _ = run_until(s, now + 0.5, 0.010, now)
    last_rx = s.last_rx
    assert last_rx is not None
    now, changes = run_until(s, now + 0.1, None, now)
    downs = [c for c in changes if c.new == State.DOWN]
    assert len(downs) == 1 and downs[0].diag == Diag.CONTROL_DETECTION_TIME_EXPIRED
    r = downs[0].report
    assert r is not None and r.cause == "detection" and not r.we_were_late()
    assert r.rx_gap_s == pytest.approx(0.030) and r.detect_time_s == pytest.approx(0.030)
    assert r.max_rx_gap_s == pytest.approx(0.025, abs=1e-3)
    # We sent on time all along (the fake clock never stalls us).
    assert r.max_tx_gap_s <= 0.0101 and r.tx_late == 0
    assert s.last_down == r


def test_old_receive_gaps_leave_the_window() -> None:
    s = up_and_settled()
    now, _ = run_until(s, 0.5, 0.010, 0.0)
    assert s.last_rx is not None
    now, _ = run_until(s, s.last_rx + 0.025, None, now)
    feed(s, pkt(State.UP), now)
    assert s.rx_gaps.max(now) == pytest.approx(0.025, abs=1e-3)
    now, _ = run_until(s, now + 12.0, 0.010, now)
    assert s.rx_gaps.max(now) == pytest.approx(0.010, abs=1e-3)
    assert s.rx_gaps.worst == pytest.approx(0.025, abs=1e-3)  # the all-time worst stays


def test_peer_signal_after_our_stall_is_ours() -> None:
    s = up_and_settled()
    now, _ = run_until(s, 1.0, 0.010, 0.0)
    # Our process stalls 40 ms (no on_timer call); the peer keeps sending, then says Down (diag 1).
    stall_end = now + 0.040
    t = now
    while t + 0.010 < stall_end:
        t += 0.010
        feed(s, pkt(State.UP), t)
    down = ControlPacket(State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, 3, 99, 1, 1_000_000, 10 * MS)
    acts = feed(s, down, stall_end)
    ch = [a for a in acts if isinstance(a, StateChanged)]
    assert ch and ch[0].diag == Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
    r = ch[0].report
    assert r is not None and r.cause == "peer_signaled" and r.remote_diag == Diag.CONTROL_DETECTION_TIME_EXPIRED
    # The open gap since our last send counts: >= 40 ms against the peer's 30 ms.
    assert r.max_tx_gap_s >= 0.039 and r.peer_detect_time_s == pytest.approx(0.030)
    assert r.we_were_late()


def test_peer_signal_while_we_sent_on_time_is_not_ours() -> None:
    s = up_and_settled()
    now, _ = run_until(s, 1.0, 0.010, 0.0)
    down = ControlPacket(State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, 3, 99, 1, 1_000_000, 1_000_000)
    ch = [a for a in feed(s, down, now + 0.001) if isinstance(a, StateChanged)]
    r = ch[0].report
    assert r is not None and r.cause == "peer_signaled" and not r.we_were_late()
    # The peer's Down advertises a 1 s Required Min RX: the window is still the 10 ms we were using.
    assert r.peer_detect_time_s == pytest.approx(0.030) and r.max_tx_gap_s <= 0.012
    assert r.detect_time_s == pytest.approx(0.030)  # the one armed, not the Down packet's slow rate


def test_tx_late_counts_real_gaps_between_sends_against_the_negotiated_interval() -> None:
    s = up_and_settled()
    now, _ = run_until(s, 1.0, 0.010, 0.0)
    assert s.tx_late == 0 and s.tx_gaps.max(now) <= 0.0101
    before = s.tx_packets
    # A 20 ms stall: the next send leaves 20 ms after the previous one (2 x the interval): late.
    now += 0.020  # no on_timer call meanwhile
    feed(s, pkt(State.UP), now)
    sends = [a for a in s.on_timer(now) if isinstance(a, Send)]
    assert sends and s.tx_packets == before + 1
    assert s.tx_late == 1 and s.tx_gaps.max(now) >= 0.0199
    # The schedule restarts from now: the following sends are on time again.
    now, _ = run_until(s, now + 0.5, 0.010, now)
    assert s.tx_late == 1


def test_no_tx_gap_or_lateness_counted_across_the_slow_rate_before_up() -> None:
    s = BfdSession(cfg(), 0.0, rng=lambda: 1.0)
    s.on_timer(0.0)
    feed(s, pkt(State.INIT), 0.9)  # Up; the previous send was at the 1 s rate while Down
    s.on_timer(0.9)
    assert s.tx_late == 0 and s.tx_gaps.worst == 0.0


def test_admin_down_from_up_is_reported_as_admin() -> None:
    s = up_and_settled()
    ch = s.admin_down(1.0)[0]
    assert isinstance(ch, StateChanged) and ch.report is not None and ch.report.cause == "admin"


def test_rolling_max_window_and_worst() -> None:
    from bfd.gaps import RollingMax

    r = RollingMax(window_s=2.0, bucket_s=1.0)
    assert r.max(0.0) == 0.0
    r.add(0.1, 0.5)
    r.add(0.2, 0.3)
    r.add(1.5, 0.2)
    assert r.max(1.9) == 0.5
    assert r.max(3.5) == 0.2  # the bucket of t=0.x left the window; t=1.5's is kept whole
    assert r.max(10.0) == 0.0 and r.worst == 0.5
    with pytest.raises(ValueError):
        RollingMax(window_s=0)


def test_receive_gaps_use_arrival_times_so_our_stall_is_not_the_peers_silence() -> None:
    s = up_and_settled()
    run_until(s, 1.0, 0.010, 0.0)
    assert s.last_arrival is not None
    t0 = s.last_arrival
    # We stall 40 ms; four packets arrived on time meanwhile and are read together at t0 + 0.040.
    for i in range(1, 5):
        feed_at = t0 + 0.040
        s.on_packet(pkt(State.UP), encode(pkt(State.UP)), feed_at, arrived=t0 + 0.010 * i)
    assert s.state == State.UP and s.rx_gaps.max(t0 + 0.040) <= 0.0101


# --- coalesced transmissions (issue 9: CPU per packet) -------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_coalesced_early_sends_keep_the_75_percent_bound(seed: int) -> None:
    """RFC 5880 §6.8.7: with a transport that calls on_timer up to tx_early_s before a packet is due
    (and at random other times, early and late: stalls), two periodic packets never leave less than
    75 % of the interval apart, the early window is used, and detection is never early."""
    import random as rnd

    r = rnd.Random(seed)
    s = BfdSession(cfg(), 0.0, rng=r.random, tx_early_s=0.001)
    feed(s, pkt(State.INIT), 0.0)
    feed(s, pkt(State.UP, final=True), 0.0)
    assert s.state == State.UP and s.tx_interval_us() == 10 * MS
    sends: list[float] = []
    early = 0
    now, next_rx = 0.0, 0.005
    while now < 5.0:
        d = s.next_deadline()
        assert d is not None
        # The transport's wake-up: at the deadline, or up to 2 ms before it (beyond the window too),
        # or late by up to 25 ms (our stall); the peer's packets arrive meanwhile.
        pick = r.random()
        t = d - r.uniform(0, 0.002) if pick < 0.6 else d + (r.uniform(0, 0.025) if pick > 0.95 else 0.0)
        t = max(t, now)
        while next_rx <= t:
            feed(s, pkt(State.UP), next_rx)
            next_rx += 0.010
        now = t
        due_before = s.next_tx
        for a in s.on_timer(now):
            if isinstance(a, Send) and a.due is not None:
                sends.append(now)
                early += now < due_before
            assert not isinstance(a, StateChanged), "detection fired early or falsely"
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert len(gaps) > 300 and min(gaps) >= 0.0075 - 1e-9
    assert early > 50  # the window is used
    assert max(gaps) <= 0.0101 + 0.025  # on time except during the injected stalls


def test_early_send_refused_within_75_percent_of_our_previous_packet() -> None:
    s = up_and_settled()
    s.tx_early_s = 0.001
    acts = feed(s, pkt(State.UP, poll=True), 0.5)  # a Final leaves at 0.5
    assert [a for a in acts if isinstance(a, Send)]
    s.next_tx = 0.5071
    assert s.on_timer(0.5065) == []  # inside the window, but only 6.5 ms after the Final
    assert [a for a in s.on_timer(0.5075) if isinstance(a, Send)]  # 7.5 ms after it: allowed, early


def test_jitter_floor_is_raised_by_the_early_window() -> None:
    s = BfdSession(cfg(), 0.0, rng=lambda: 0.0, tx_early_s=0.001)
    feed(s, pkt(State.INIT), 0.0)
    feed(s, pkt(State.UP, final=True), 0.0)
    assert s._jittered_s() == pytest.approx(0.0085)  # 75 % + 1 ms
    s.tx_early_s = 0.005  # capped at 10 % of the interval
    assert s._jittered_s() == pytest.approx(0.0085)


def test_catch_up_after_a_late_send_keeps_75_percent() -> None:
    s = up_and_settled()
    s.on_timer(s.next_tx)
    due = s.next_tx
    s.on_timer(due + 0.006)  # 6 ms late: "due + interval" alone would be ~4 ms after this send
    assert s.next_tx >= due + 0.006 + 0.0075 - 1e-12


@pytest.mark.parametrize("seed", range(10))
def test_on_repeat_is_on_packet_for_byte_identical_steady_packets(seed: int) -> None:
    """The undecoded fast path leaves a session exactly as on_packet would, whatever comes between:
    Polls, Finals, parameter changes, a Down from the peer, timer changes, silences."""
    import random as rnd

    r = rnd.Random(seed)
    slow = BfdSession(cfg(), 0.0, rng=lambda: 0.5)
    fast = BfdSession(cfg(), 0.0, rng=lambda: 0.5)
    kinds = [pkt(State.UP)] * 6 + [pkt(State.UP, poll=True), pkt(State.UP, final=True), pkt(State.UP, tx_ms=20),
                                   pkt(State.DOWN, your=0), pkt(State.INIT), pkt(State.UP, rx_ms=5)]
    now = 0.0
    repeats = 0
    for _ in range(600):
        now += r.uniform(0.001, 0.012)
        if r.random() < 0.01:
            now += 0.05  # a silence longer than the detection time
        if r.random() < 0.01:
            tx_us = 10 * MS if r.random() < 0.5 else 20 * MS
            for s in (slow, fast):
                s.set_timers(tx_us, 10 * MS)
        p = r.choice(kinds)
        raw = encode(p)
        arrived = now - r.uniform(0, 0.002)
        a_slow = slow.on_timer(now) + slow.on_packet(p, raw, now, arrived)
        a_fast = fast.on_timer(now)
        if fast.on_repeat(raw, now, arrived):
            repeats += 1
        else:
            a_fast += fast.on_packet(p, raw, now, arrived)
        assert a_slow == a_fast
        keep = ("state", "remote_discr", "detect_deadline", "next_tx", "rx_packets", "tx_packets", "last_rx",
                "last_arrival", "poll_active", "remote_min_rx_us", "remote_desired_tx_us", "local_diag")
        assert {k: getattr(slow, k) for k in keep} == {k: getattr(fast, k) for k in keep}
        assert slow.rx_gaps.max(now) == fast.rx_gaps.max(now)
    assert repeats > 50


def test_on_repeat_refuses_what_is_not_steady() -> None:
    s = up_and_settled()
    up = encode(pkt(State.UP))
    assert s.on_repeat(up, 0.01) is False  # nothing steady seen yet (the last packet had F)
    feed(s, pkt(State.UP), 0.02)
    assert s.on_repeat(up, 0.03) is True and s.rx_packets == 4
    assert s.on_repeat(encode(pkt(State.UP, tx_ms=20)), 0.04) is False  # different bytes
    s.admin_down(0.05)
    assert s.on_repeat(up, 0.06) is False  # any transition clears it
    authed = BfdSession(cfg(auth=AuthConfig(AuthType.SIMPLE, 1, b"pw")), 0.0)
    assert authed._steady_raw is None


def test_peer_signal_counts_our_gap_up_to_its_arrival_not_to_when_we_read_it() -> None:
    # A storm: the peer's Down reached our kernel 25 ms after our last send, and we read it 15 ms
    # later (behind other sessions' transitions). It decided before arriving, so the 15 ms of our
    # backlog cannot be why: 25 ms against its 30 ms is not ours. The same packet read at once after
    # a 40 ms silence of ours is.
    s = up_and_settled()
    run_until(s, 1.0, 0.010, 0.0)
    last = s.last_tx
    assert last is not None
    down = ControlPacket(State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, 3, 99, 1, 1_000_000, 10 * MS)
    acts = s.on_packet(down, encode(down), last + 0.040, arrived=last + 0.025)
    r = next(a for a in acts if isinstance(a, StateChanged)).report
    assert r is not None and r.cause == "peer_signaled"
    assert r.max_tx_gap_s == pytest.approx(0.025, abs=1e-6) and not r.we_were_late()
    assert r.max_tx_gap_read_s == pytest.approx(0.040, abs=1e-6)  # the old rule's figure, for comparisons
    s2 = up_and_settled()
    run_until(s2, 1.0, 0.010, 0.0)
    last2 = s2.last_tx
    assert last2 is not None
    acts = s2.on_packet(down, encode(down), last2 + 0.040, arrived=last2 + 0.040)
    r2 = next(a for a in acts if isinstance(a, StateChanged)).report
    assert r2 is not None and r2.max_tx_gap_s == pytest.approx(0.040, abs=1e-6) and r2.we_were_late()
    assert r2.max_tx_gap_read_s is None  # read as it arrived: one figure


def test_a_send_after_the_peers_down_arrived_only_counts_up_to_the_arrival() -> None:
    s = up_and_settled()
    now, _ = run_until(s, 1.0, 0.010, 0.0)
    last = s.last_tx
    assert last is not None
    # We stall 45 ms and send (the gap closes at last + 45 ms); the peer's Down had arrived at
    # last + 20 ms but is read only now: what counts is 20 ms of that gap.
    now = last + 0.045
    feed(s, pkt(State.UP), now)  # the peer's earlier packets, read now: still Up
    sends = [a for a in s.on_timer(now) if isinstance(a, Send)]
    assert sends
    down = ControlPacket(State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, 3, 99, 1, 1_000_000, 10 * MS)
    r = next(a for a in s.on_packet(down, encode(down), now + 0.001, arrived=last + 0.020)
             if isinstance(a, StateChanged)).report
    assert r is not None and r.max_tx_gap_s == pytest.approx(0.020, abs=1e-6) and not r.we_were_late()
