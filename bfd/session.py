"""The BFD session: a sans-IO state machine (RFC 5880 §6.8), plus demultiplexing (§6.3).

Theory of operation
-------------------
:class:`BfdSession` never touches a socket or a clock. The transport feeds it
``on_packet(packet, raw, now, arrived)`` (or ``on_repeat(raw, now, arrived)`` for a steady packet)
and ``on_timer(now)`` and re-arms one timer at ``next_deadline()``;
the session answers with actions: :class:`Send` (bytes to transmit) and :class:`StateChanged`
(with the time it was detected). Tests drive it with a fake clock.

States and transitions (§6.8.6; each row of :data:`TRANSITIONS` names its rule)::

    AdminDown  <-- admin_down() from any state; admin_up() --> Down
    Down  --rx Down--> Init --rx Init/Up--> Up
    Down  --rx Init--> Up
    Init/Up --rx AdminDown or (Up) rx Down--> Down (diag 3, neighbor signaled down)
    Init/Up --no packet for the detection time--> Down (diag 1, detection time expired)

Invariants:
- while not Up, the advertised Desired Min TX is at least 1 s (§6.8.3);
- a change of Desired Min TX or Required Min RX starts a Poll Sequence: every packet carries P
  until one with F arrives; a larger TX interval is only used once the poll completes, and a smaller
  RX interval only counts for detection once it completes (§6.8.3);
- a packet with P is answered at once with F, never with P and F together (§6.5);
- transmit interval = max(local Desired Min TX, remote Required Min RX) with jitter 75-100 %
  (75-90 % when our detect mult is 1) (§6.8.7); no periodic packets while the remote Required Min
  RX is 0;
- two periodic packets never leave less than 75 % of the interval apart (§6.8.7), also when the
  transport coalesces wake-ups: a session created with ``tx_early_s`` = e may send a periodic packet
  up to e before it is due, so its jitter is drawn from [75 % + e, 100 %] of the interval (e capped
  at 10 % of it) and an early send is refused outright if it would come less than 75 % of the
  interval after our previous packet of any kind; after a late send the catch-up schedule is
  clamped to at least 75 % of the interval after it;
- detection time = remote Detect Mult x max(local Required Min RX, remote Desired Min TX), counted
  from the last valid packet's *arrival* (the kernel's timestamp when the transport has it: the
  RFC's "receipt"), only in Init and Up (§6.8.4). So a packet that waited in the socket — the
  transport reads in batches, or this process stalled — neither lengthens detection nor, once
  read, leaves an expired deadline behind: the transport reads every waiting packet before it
  lets a detection deadline fire;
- packets are authenticated iff the session has auth configured; the A bit must match (§6.7).

Attribution of Downs (issue 9): every transition out of Up carries a :class:`DownReport` saying
whose silence caused it. Our detection (diag 1) reports the receive gap that expired (last valid
packet -> detection) and the largest receive gap of the previous :data:`~bfd.gaps.GAP_WINDOW_S`
seconds; the peer's signal (diag 3) reports the largest gap in what *we* sent during the peer's
detection window (``our detect mult x our tx interval``), the gap still open included, counted up to
the kernel arrival of the peer's Down (by then it had decided; our backlog after that cannot be the
cause): if that reaches the peer's detection time, we were late. Gaps count only while Up (the 1 s slow rate
before Up is not lateness). ``tx_late`` counts sends whose gap since the previous one exceeds
1.25 x the negotiated interval (jitter keeps legal gaps at 75-100 %, so more is lateness the peer
sees), per session, measured between actual sends rather than against a jittered schedule.

Cost (issue 9: at 53 sessions x 10 ms this runs ~10,000 times a second). A steady-state packet
allocates no frozen dataclass: received packets are plain slotted ones (:mod:`bfd.packet`),
:class:`Send` is a named tuple, the transition is found by index in a flat copy of :data:`TRANSITIONS`, and the bytes
we send are encoded once per change of what we advertise (state, diag, discriminators, intervals,
P/F) and reused — except with authentication, whose sequence number and digest change per packet.
A peer that is Up sends the same bytes every time, so a packet byte-identical to the last *steady*
one (see :meth:`BfdSession.on_repeat`) is not decoded at all: only its arrival is news.

:class:`SessionTable` demultiplexes: a packet with Your Discriminator is matched on it; one without
is accepted only in Down/AdminDown and matched on (peer address, local address, interface).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from bfd.auth import AuthConfig, AuthState, sign
from bfd.gaps import GAP_WINDOW_S, RollingMax
from bfd.packet import ControlPacket, Diag, DropReason, State, encode

ONE_SECOND_US = 1_000_000
#: A send more than this factor of the negotiated interval after the previous one is late.
TX_LATE_FACTOR = 1.25


class TransitionError(RuntimeError):
    """A (local, remote) state pair with no row in the table: a bug, never input-driven."""


#: (local state, received state) -> (new state, diag to set or None). §6.8.6, last part.
TRANSITIONS: dict[tuple[State, State], tuple[State, Diag | None]] = {
    # "If bfd.SessionState is Down: if received State is Down, set bfd.SessionState to Init"
    (State.DOWN, State.DOWN): (State.INIT, None),
    # "... else if received State is Init, set bfd.SessionState to Up"
    (State.DOWN, State.INIT): (State.UP, None),
    # Down ignores a remote Up (the remote must first see us) and a remote AdminDown.
    (State.DOWN, State.UP): (State.DOWN, None),
    (State.DOWN, State.ADMIN_DOWN): (State.DOWN, None),
    # "Else if bfd.SessionState is Init: if received State is Init or Up, set ... Up"
    (State.INIT, State.INIT): (State.UP, None),
    (State.INIT, State.UP): (State.UP, None),
    (State.INIT, State.DOWN): (State.INIT, None),
    # "If received state is AdminDown: if bfd.SessionState is not Down, set bfd.LocalDiag to 3 ... Down"
    (State.INIT, State.ADMIN_DOWN): (State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
    (State.UP, State.ADMIN_DOWN): (State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
    # "Else (bfd.SessionState is Up): if received State is Down, set bfd.LocalDiag to 3 ... Down"
    (State.UP, State.DOWN): (State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN),
    (State.UP, State.INIT): (State.UP, None),
    (State.UP, State.UP): (State.UP, None),
}
#: TRANSITIONS as a flat tuple indexed by ``4 * local + received`` (the hot path's lookup; None
#: where the table has no row).
_TRANSITION_ROWS: tuple[tuple[State, Diag | None] | None, ...] = tuple(
    TRANSITIONS.get((a, b)) for a in State for b in State)
_DOWN_STATES = (State.DOWN, State.ADMIN_DOWN)
#: The most a coalesced periodic send may leave early, as a fraction of the interval.
MAX_EARLY_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class SessionConfig:
    local_discriminator: int
    desired_min_tx_us: int
    required_min_rx_us: int
    detect_mult: int = 3
    auth: AuthConfig | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.local_discriminator <= 0xFFFFFFFF:
            raise ValueError("local discriminator must be non-zero")
        if not 1 <= self.detect_mult <= 255:
            raise ValueError("detect_mult must be 1..255")
        if self.desired_min_tx_us < 1 or self.required_min_rx_us < 0:
            raise ValueError("intervals must be positive")


class Send(NamedTuple):
    """Bytes to transmit. A named tuple: one is built for every packet we send."""

    data: bytes
    #: For periodic packets: when it was due and the interval drawn for the next one (None for
    #: packets sent at once: Final answers, state changes, AdminDown).
    due: float | None = None
    interval_s: float = 0.0


@dataclass(frozen=True, slots=True)
class DownReport:
    """Why a session left Up: whose silence, and the gaps that show it (seconds)."""

    #: "detection" (we stopped hearing the peer), "peer_signaled" (it stopped hearing us, or went
    #: down itself: see ``remote_diag``) or "admin".
    cause: str
    #: Last valid packet's arrival -> this transition (the gap that expired, for "detection").
    rx_gap_s: float | None
    #: Largest gap between packets received in the previous GAP_WINDOW_S seconds (this one excluded).
    max_rx_gap_s: float
    #: Largest gap between packets we sent within the peer's detection window, the open gap included,
    #: up to the arrival of the packet that told us (a peer's signal) or now (our detection).
    max_tx_gap_s: float
    #: Our detection time, and the peer's detection time of us (our detect mult x our tx interval).
    detect_time_s: float
    peer_detect_time_s: float
    remote_diag: Diag
    #: This session's late sends so far (see TX_LATE_FACTOR).
    tx_late: int
    #: ``max_tx_gap_s`` counted up to when we read the peer's Down rather than its arrival: the rule
    #: before 2026-12-01, kept so that a benchmark can say what that rule would have blamed on us.
    max_tx_gap_read_s: float | None = None

    def we_were_late(self) -> bool:
        """The peer's Down is ours: we left a gap as long as its detection time."""
        return self.cause == "peer_signaled" and self.peer_detect_time_s > 0 and \
            self.max_tx_gap_s >= self.peer_detect_time_s


@dataclass(frozen=True, slots=True)
class StateChanged:
    old: State
    new: State
    diag: Diag
    at: float
    #: Set on every transition out of Up (not compared: it describes, it does not identify).
    report: DownReport | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: DropReason


Action = Send | StateChanged | Dropped


class BfdSession:
    def __init__(self, cfg: SessionConfig, now: float, rng: Callable[[], float] | None = None,
                 tx_early_s: float = 0.0) -> None:
        """``tx_early_s``: how early the transport may call :meth:`on_timer` for a periodic packet
        (its wake-up coalescing window; see the module docstring for why the 75 % bound holds)."""
        self.cfg = cfg
        self.tx_early_s = tx_early_s
        self._rng = rng or random.random
        self.state = State.DOWN
        self.remote_state = State.DOWN
        self.local_diag = Diag.NONE
        self.remote_diag = Diag.NONE
        self.remote_discr = 0
        self.remote_min_rx_us = 1  # §6.8.1: initialised to 1
        self.remote_desired_tx_us = 0
        self.remote_detect_mult = 0
        self.desired_min_tx_us = max(cfg.desired_min_tx_us, ONE_SECOND_US)
        self.required_min_rx_us = cfg.required_min_rx_us
        self._tx_in_use_us = self.desired_min_tx_us
        self._rx_for_detect_us = self.required_min_rx_us
        self.poll_active = False
        self.auth = AuthState(cfg.auth) if cfg.auth else None
        self.last_rx: float | None = None
        self.next_tx = now  # first packet goes out at once
        self.detect_deadline: float | None = None
        self.up_since: float | None = None
        self.flaps = 0
        self.last_down_diag = Diag.NONE
        self.tx_packets = 0
        self.rx_packets = 0
        # Gap history for attribution (see the module docstring).
        self.rx_gaps = RollingMax(GAP_WINDOW_S)
        self.tx_gaps = RollingMax(GAP_WINDOW_S)
        self.last_tx: float | None = None
        self._last_tx_up = False
        self._last_tx_interval_us = 0
        self._recent_tx: deque[tuple[float, float]] = deque(maxlen=64)  # (sent at, gap before it)
        self.tx_late = 0
        self.last_down: DownReport | None = None
        self._armed_detect_us = 0  # the detection time of the running detection timer
        self.last_arrival: float | None = None  # kernel arrival time of the last valid packet
        # The bytes of our last packet and what they advertise (reused while that is unchanged).
        self._tx_key: tuple | None = None
        self._tx_bytes = b""
        #: The last received packet that left everything but the arrival bookkeeping as it was (see
        #: on_repeat); None whenever that may no longer hold.
        self._steady_raw: bytes | None = None

    # --- derived values ---------------------------------------------------------------------------
    def tx_interval_us(self) -> int:
        return max(self._tx_in_use_us, self.remote_min_rx_us)

    def detection_time_us(self) -> int:
        return self.remote_detect_mult * max(self._rx_for_detect_us, self.remote_desired_tx_us)

    def next_deadline(self) -> float | None:
        d = self.detect_deadline
        if self.remote_min_rx_us:  # periodic (see _periodic)
            t = self.next_tx
            return t if d is None or t < d else d
        return d

    def _periodic(self) -> bool:
        # §6.8.7: "If bfd.RemoteMinRxInterval is zero, the local system MUST NOT periodically transmit"
        return self.remote_min_rx_us != 0

    def _early_s(self, interval_s: float) -> float:
        """How early a periodic packet may leave (the transport's window, at most 10 % of the interval)."""
        return min(self.tx_early_s, MAX_EARLY_FRACTION * interval_s)

    def _jittered_s(self) -> float:
        return self._jitter(self.tx_interval_us() / 1e6)

    def _jitter(self, interval_s: float) -> float:
        """The interval until the next periodic packet: 75-100 % (75-90 % with detect mult 1) of
        ``interval_s``, the floor raised by the early allowance so that a send up to that early is
        still >= 75 % after the previous one."""
        early = self.tx_early_s
        if early > MAX_EARLY_FRACTION * interval_s:
            early = MAX_EARLY_FRACTION * interval_s
        lo = 0.75 + early / interval_s if interval_s else 0.75
        hi = 0.90 if self.cfg.detect_mult == 1 else 1.0
        return interval_s * (lo + (hi - lo) * self._rng())

    # --- building packets -------------------------------------------------------------------------
    def _packet(self, final: bool = False) -> ControlPacket:
        return ControlPacket(
            state=self.state, diag=self.local_diag, detect_mult=self.cfg.detect_mult,
            my_discriminator=self.cfg.local_discriminator, your_discriminator=self.remote_discr,
            desired_min_tx_us=self.desired_min_tx_us, required_min_rx_us=self.required_min_rx_us,
            required_min_echo_rx_us=0, poll=self.poll_active and not final, final=final,
        )

    def _send(self, now: float, final: bool = False, due: float | None = None, interval_s: float = 0.0) -> Send:
        if self.auth is not None:  # sequence number and digest change per packet: no reuse
            data = sign(self._packet(final), self.auth.cfg, self.auth.next_tx_sequence())
        else:
            # self.cfg (detect mult, discriminator) only changes in set_timers, which clears _tx_key.
            key = (self.state, self.local_diag, self.remote_discr, self.desired_min_tx_us, self.required_min_rx_us,
                   self.poll_active and not final, final)
            if key != self._tx_key:
                self._tx_key = key
                self._tx_bytes = encode(self._packet(final))
            data = self._tx_bytes
        self.tx_packets += 1
        self._note_tx(now)
        return Send(data, due, interval_s)

    def _note_tx(self, now: float) -> None:
        """Record the gap since our previous send, if both were sent while Up."""
        up = self.state == State.UP
        tx_us, rx_us = self._tx_in_use_us, self.remote_min_rx_us
        interval_us = tx_us if tx_us > rx_us else rx_us  # tx_interval_us(), inlined
        last = self.last_tx
        if up and self._last_tx_up and last is not None:
            gap = now - last
            self.tx_gaps.add(now, gap)
            self._recent_tx.append((now, gap))
            # Against the slower of the intervals before and after: a Poll Sequence may change it.
            before_us = self._last_tx_interval_us
            if gap > TX_LATE_FACTOR * (interval_us if interval_us > before_us else before_us) / 1e6:
                self.tx_late += 1
        self.last_tx = now
        self._last_tx_up = up
        self._last_tx_interval_us = interval_us

    def peer_detect_time_us(self) -> int:
        """How long the peer waits for our packets: our detect mult x the interval we send at."""
        return self.cfg.detect_mult * self.tx_interval_us()

    def _max_tx_gap_in(self, until: float, window_s: float) -> float:
        """Largest gap in what we sent over the ``window_s`` before ``until``, gaps still open at
        ``until`` (or closed after it) counted up to ``until`` only."""
        best = 0.0
        for t, g in self._recent_tx:
            if t < until - window_s:
                continue
            if t > until:
                g -= t - until
            if g > best:
                best = g
        if self.last_tx is not None and self._last_tx_up and until - self.last_tx > best:
            best = until - self.last_tx
        return best

    def _down_report(self, diag: Diag, now: float, evidence_at: float | None = None) -> DownReport:
        if diag == Diag.CONTROL_DETECTION_TIME_EXPIRED:
            cause = "detection"
        elif diag in (Diag.ADMINISTRATIVELY_DOWN,):
            cause = "admin"
        else:
            cause = "peer_signaled"
        # The interval the peer has been expecting is the one of our last send: the packet that
        # brought this Down may already advertise the peer's slow Down-state rate.
        peer_detect_s = self.cfg.detect_mult * (self._last_tx_interval_us or self.tx_interval_us()) / 1e6
        # The peer had decided by the time its Down reached our kernel (``evidence_at``, the packet's
        # arrival): what we sent, or failed to send, while it sat in our socket cannot have caused it.
        # Counting up to when we read it blamed us for our own backlog: in a 50-session storm the
        # last packets of one read batch waited ~25 ms behind the first ones' transitions (2026-12-01).
        tx_until = now if evidence_at is None or evidence_at > now else evidence_at
        return DownReport(
            cause=cause, rx_gap_s=None if self.last_arrival is None else now - self.last_arrival,
            max_rx_gap_s=self.rx_gaps.max(now), max_tx_gap_s=self._max_tx_gap_in(tx_until, peer_detect_s),
            detect_time_s=(self._armed_detect_us or self.detection_time_us()) / 1e6, peer_detect_time_s=peer_detect_s,
            remote_diag=self.remote_diag, tx_late=self.tx_late,
            max_tx_gap_read_s=self._max_tx_gap_in(now, peer_detect_s) if tx_until < now else None,
        )

    # --- timer changes and poll sequences (§6.8.3) ------------------------------------------------
    def _set_desired_tx(self, us: int) -> None:
        if us == self.desired_min_tx_us:
            return
        increase = us > self.desired_min_tx_us
        self.desired_min_tx_us = us
        if not (increase and self.state == State.UP):
            self._tx_in_use_us = us
        self.poll_active = True

    def set_timers(self, desired_min_tx_us: int, required_min_rx_us: int) -> None:
        """Operator change of the configured intervals (starts a Poll Sequence)."""
        self._tx_key = None
        self._steady_raw = None
        self.cfg = replace(self.cfg, desired_min_tx_us=desired_min_tx_us, required_min_rx_us=required_min_rx_us)
        if required_min_rx_us != self.required_min_rx_us:
            if not (required_min_rx_us < self.required_min_rx_us and self.state == State.UP):
                self._rx_for_detect_us = required_min_rx_us
            self.required_min_rx_us = required_min_rx_us
            self.poll_active = True
        self._set_desired_tx(desired_min_tx_us if self.state == State.UP else max(desired_min_tx_us, ONE_SECOND_US))

    def _poll_done(self) -> None:
        self.poll_active = False
        self._tx_in_use_us = self.desired_min_tx_us
        self._rx_for_detect_us = self.required_min_rx_us

    # --- state changes ----------------------------------------------------------------------------
    def _change(self, new: State, diag: Diag | None, now: float,
                evidence_at: float | None = None) -> StateChanged | None:
        old = self.state
        if diag is not None:
            self.local_diag = diag
        if new == old:
            return None
        # Measured before the transition resets the timers and the tx interval.
        report = self._down_report(self.local_diag, now, evidence_at) if old == State.UP else None
        if report is not None:
            self.last_down = report
        self.state = new
        if new == State.UP:
            self.up_since = now
            self.local_diag = Diag.NONE
            self._set_desired_tx(self.cfg.desired_min_tx_us)
        elif old == State.UP:
            self.flaps += 1
            self.up_since = None
            self.last_down_diag = self.local_diag
            self._set_desired_tx(max(self.cfg.desired_min_tx_us, ONE_SECOND_US))
        if new in (State.DOWN, State.ADMIN_DOWN):
            self.detect_deadline = None
            if new == State.DOWN and old != State.ADMIN_DOWN:
                # §6.8.1: once Down, forget the remote discriminator so the next packet we send asks anew.
                self.remote_discr = 0
        self.next_tx = now  # tell the peer at once
        self._steady_raw = None
        return StateChanged(old, new, self.local_diag, now, report)

    def admin_down(self, now: float) -> list[Action]:
        ch = self._change(State.ADMIN_DOWN, Diag.ADMINISTRATIVELY_DOWN, now)
        return [ch, self._send(now)] if ch else []

    def admin_up(self, now: float) -> list[Action]:
        if self.state != State.ADMIN_DOWN:
            return []
        ch = self._change(State.DOWN, Diag.NONE, now)
        return [ch] if ch else []

    # --- input ------------------------------------------------------------------------------------
    def on_packet(self, p: ControlPacket, raw: bytes, now: float, arrived: float | None = None) -> list[Action]:
        """``arrived``: when the kernel received it (same clock as ``now``; default ``now``; never
        later than ``now``). Receive gaps and the detection deadline count from arrivals, so a stall
        of our own process (packets waiting in the socket) does not show as the peer's silence and
        time spent waiting to be read does not lengthen detection."""
        # A bit against our configuration (§6.8.6).
        if self.auth is None and p.auth is not None:
            return [Dropped(DropReason.AUTH_UNEXPECTED)]
        if self.auth is not None:
            if p.auth is None:
                return [Dropped(DropReason.AUTH_MISSING)]
            if self.last_rx is not None and self.detection_time_us() and \
                    now - self.last_rx > 2 * self.detection_time_us() / 1e6:
                self.auth.seq_known = False  # §6.8.1 bfd.AuthSeqKnown
            bad = self.auth.verify(raw, p, p.detect_mult)
            if bad is not None:
                return [Dropped(bad)]
        state = self.state
        if state == State.ADMIN_DOWN:
            return [Dropped(DropReason.ADMIN_DOWN)]
        self._steady_raw = None  # set again below if this packet turns out to be a steady one
        self.rx_packets += 1
        arrival = now if arrived is None or arrived > now else arrived
        if state == State.UP and self.last_arrival is not None:
            self.rx_gaps.add(now, arrival - self.last_arrival)
        self.last_rx = now
        self.last_arrival = arrival
        interval_before = max(self._tx_in_use_us, self.remote_min_rx_us)  # tx_interval_us()
        self.remote_discr = p.my_discriminator
        self.remote_state = p.state
        self.remote_diag = p.diag
        self.remote_min_rx_us = p.required_min_rx_us
        self.remote_desired_tx_us = p.desired_min_tx_us
        self.remote_detect_mult = p.detect_mult
        if p.final and self.poll_active:
            self._poll_done()
        if max(self._tx_in_use_us, self.remote_min_rx_us) < interval_before:
            # The peer now accepts packets faster (FRR advertises 1 s while not Up, then its real
            # rate): a packet scheduled at the old, slower rate would arrive after the peer's new
            # detection time. Pull the next transmission in.
            self.next_tx = min(self.next_tx, now + self._jittered_s())
        row = _TRANSITION_ROWS[4 * state + p.state]
        if row is None:
            raise TransitionError(f"no transition for local {state.name}, received {p.state.name}")
        new, diag = row
        ch = None if new == state and diag is None else self._change(new, diag, now, arrival)
        if self.state in (State.INIT, State.UP):
            # detection_time_us(), inlined
            self._armed_detect_us = self.remote_detect_mult * max(self._rx_for_detect_us, self.remote_desired_tx_us)
            self.detect_deadline = arrival + self._armed_detect_us / 1e6
        if p.poll:
            actions: list[Action] = [ch] if ch is not None else []
            actions.append(self._send(now, final=True))
            return actions
        if ch is not None:
            return [ch, *self.on_timer(now)]
        if state == State.UP and p.state == State.UP and not p.final and p.auth is None and self.auth is None and \
                self.tx_interval_us() == interval_before:
            self._steady_raw = raw  # the same bytes again would change nothing but the arrival times
        return []

    def on_repeat(self, raw: bytes, now: float, arrived: float | None = None) -> bool:
        """Take a packet that is byte-identical to the last steady one, without decoding it; False
        (nothing done) if it is not, and the caller decodes it and calls :meth:`on_packet`.

        Steady means: we were Up and stayed Up, the packet said Up without P or F, neither side
        authenticates, and our transmit interval did not move. Every reception check passes again
        for the same bytes (the stateless ones depend on the bytes alone, the A bit is clear, the
        transport has matched Your Discriminator, source and TTL), and :meth:`on_packet` would
        store the same remote values, find the (Up, Up) row, send nothing and re-arm detection with
        the same detection time; any transition, operator timer change or different packet clears
        it. So all that is left is the arrival bookkeeping, which is what this does."""
        if raw != self._steady_raw:
            return False
        self.rx_packets += 1
        arrival = now if arrived is None or arrived > now else arrived
        last = self.last_arrival
        if last is not None:
            self.rx_gaps.add(now, arrival - last)
        self.last_rx = now
        self.last_arrival = arrival
        self.detect_deadline = arrival + self._armed_detect_us / 1e6
        return True

    def on_timer(self, now: float) -> list[Action]:
        """Detection (never early) and the periodic packet (up to ``tx_early_s`` early, see the
        module docstring)."""
        actions: list[Action] = []
        if self.detect_deadline is not None and now >= self.detect_deadline:
            ch = self._change(State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, now)
            if ch is not None:
                actions.append(ch)
        remote_min_rx_us = self.remote_min_rx_us
        if not remote_min_rx_us:  # not _periodic()
            return actions
        due = self.next_tx
        tx_us = self._tx_in_use_us
        interval_s = (tx_us if tx_us > remote_min_rx_us else remote_min_rx_us) / 1e6  # tx_interval_us()
        if now < due:
            if now < due - self._early_s(interval_s):
                return actions
            # An early (coalesced) send: never less than 75 % of the interval after our previous packet.
            if self.last_tx is not None and now - self.last_tx < 0.75 * interval_s:
                return actions
        interval = self._jitter(interval_s)
        actions.append(self._send(now, due=due, interval_s=interval))
        if now < due:
            self.next_tx = now + interval  # early: the next interval counts from this send
        else:
            # Keep the average rate when a little late; start afresh when more than an interval late.
            # Either way the next periodic packet leaves at least 75 % of the interval after this one.
            nxt = due + interval if now - due < interval else now + interval
            floor = now + 0.75 * interval_s
            self.next_tx = nxt if nxt >= floor else floor
        return actions
@dataclass(frozen=True, slots=True)
class SessionKey:
    peer: str
    local: str
    interface: str
    multihop: bool


class SessionTable:
    """Demultiplexing of received packets to sessions (§6.3), with the TTL checks of RFC 5881/5883."""

    def __init__(self) -> None:
        self.by_discr: dict[int, tuple[SessionKey, BfdSession, int]] = {}
        self.by_key: dict[SessionKey, tuple[BfdSession, int]] = {}

    def add(self, key: SessionKey, s: BfdSession, min_ttl: int) -> None:
        self.by_discr[s.cfg.local_discriminator] = (key, s, min_ttl)
        self.by_key[key] = (s, min_ttl)

    def remove(self, key: SessionKey) -> BfdSession | None:
        entry = self.by_key.pop(key, None)
        if entry is None:
            return None
        self.by_discr.pop(entry[0].cfg.local_discriminator, None)
        return entry[0]

    def lookup(self, p: ControlPacket, key: SessionKey, ttl: int) -> tuple[BfdSession | None, DropReason | None]:
        if p.your_discriminator:
            return self.lookup_discriminator(p.your_discriminator, key.peer, key.multihop, ttl)
        else:
            e = self.by_key.get(key)
            if e is None:
                return None, DropReason.NO_SESSION
            s, min_ttl = e
        if ttl < min_ttl:
            return None, DropReason.TTL
        return s, None

    def lookup_discriminator(self, your: int, peer: str, multihop: bool,
                             ttl: int) -> tuple[BfdSession | None, DropReason | None]:
        """The common case of :meth:`lookup` (Your Discriminator set), without building a key: the
        transport calls it first, and builds a :class:`SessionKey` only for packets without one."""
        entry = self.by_discr.get(your)
        if entry is None:
            return None, DropReason.NO_SESSION
        k, s, min_ttl = entry
        if k.peer != peer or k.multihop != multihop:
            return None, DropReason.NO_SESSION
        if ttl < min_ttl:
            return None, DropReason.TTL
        return s, None
