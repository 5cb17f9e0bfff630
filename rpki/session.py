"""The RTR client session: a sans-IO state machine (RFC 8210 §6-§8, RFC 6810 fallback).

Why our own client
------------------
The one Python RTR client on the package index (``rpki-rtr-client``, last release 2020) is a
blocking command-line tool (``select`` loop, ``sys.exit`` on errors, prints to stderr), speaks only
version 1 without the version-0 fallback, and keeps its table in a C extension; ``rtrlib``'s Python
binding (2017) wraps a C library with its own threads. Neither can be driven by our event loop with
time passed in, nor tested with a fake clock, so the protocol is written here in the house style of
``bfd/session.py``: bytes and the time in, actions out.

Theory of operation
-------------------
:class:`RtrSession` is one router-to-cache relationship. It outlives TCP connections: the
transport (:mod:`rpki.client`) calls :meth:`~RtrSession.on_connected`, :meth:`~RtrSession.on_bytes`,
:meth:`~RtrSession.on_disconnected` and :meth:`~RtrSession.on_timer` and re-arms one timer at
:meth:`~RtrSession.next_deadline`; the session answers with actions:

- :class:`Send` -- bytes to write (a query, or an Error Report);
- :class:`VrpsChanged` -- the committed VRP set of this cache changed (always at End of Data, once
  per transfer, atomically; or when the data expires);
- :class:`Reset` -- the session gave up its serial and will resynchronise with a Reset Query (the
  old data stays until the new set replaces it atomically);
- :class:`Close` -- the transport must drop the connection (and reconnect, at once if
  ``immediate``, otherwise after its back-off).

States (:class:`State`) and the events that move them are the table :data:`TRANSITIONS`, one row per
(state, event) with the RFC rule it follows; a pair without a row is a bug (:class:`TransitionError`),
never input-driven: every PDU maps to an event and every event has a row in every connected state.
A row names the state its step leads to when the step succeeds; a step that finds a protocol error
in the PDU it handles (session id mismatch at Cache Response or End of Data, duplicate announcement,
withdrawal of an unknown record) answers it as §12 says and ends in Disconnected instead.

Timers (RFC 8210 §6), from End of Data in version 1, defaults in version 0 (RFC 6810 has none):
- refresh: in Synced, send a Serial Query after ``refresh_s``;
- retry: after No Data Available, query again after ``retry_s``; a query that has had no complete
  answer within ``retry_s`` has failed, and the connection is closed;
- expire: ``expire_s`` after the last End of Data the data is dropped (:class:`VrpsChanged` withdraws
  everything), whether or not the cache is still connected: "a cache that goes away keeps its VRPs
  until they expire". The transport keeps calling ``on_timer`` while disconnected for this reason.

Invariants:
- an incremental transfer is buffered and checked (duplicate announcement -> code 7, withdrawal of
  an unknown record -> code 6) and applied only at End of Data: the VRP set a consumer sees is
  always one the cache had at some serial;
- a reset transfer replaces the set atomically at End of Data (the diff is reported), so a Cache
  Reset or a session-id change never leaves the table empty for a moment. RFC 8210 §5.1 asks the
  router to flush a cache's data on a session-id mismatch; we reach the same end (nothing of the
  old session survives the reset) without the window in which every route is NotFound, and expire
  still drops the old data if the reset never completes;
- version: we start at 1; a version-0 answer downgrades the session, an Error Report "Unsupported
  Protocol Version" closes the connection and the next one starts at version 0 (§7). Serial and
  session id belong to one version, so a downgrade forgets them. Once a PDU of the negotiated
  version has arrived, a PDU of another version is answered with code 8 and the connection closed;
- errors from the wire are counted (``errors_rx``/``errors_tx`` by code) and answered as §12 says
  (fatal codes close the session), never raised; no Error Report ever answers an Error Report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from rpki.model import Vrp
from rpki.pdu import (
    CacheReset,
    CacheResponse,
    EndOfData,
    ErrorCode,
    ErrorReport,
    Framer,
    Pdu,
    PduError,
    PrefixPdu,
    ResetQuery,
    RouterKey,
    SerialNotify,
    SerialQuery,
    encode,
    error_report,
)

HIGHEST_VERSION = 1


class TransitionError(RuntimeError):
    """A (state, event) pair with no row in the table: a bug, never input-driven."""


class State(StrEnum):
    DISCONNECTED = "disconnected"
    AWAIT_RESPONSE = "await_response"  # a Reset or Serial Query is outstanding
    RECEIVING = "receiving"  # Cache Response seen, payload until End of Data
    SYNCED = "synced"  # in step with the cache; waiting for refresh or a notify
    AWAIT_RETRY = "await_retry"  # the cache had no data; query again after the retry interval


class Event(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    SERIAL_NOTIFY = "serial_notify"
    CACHE_RESPONSE = "cache_response"
    PREFIX = "prefix"
    ROUTER_KEY = "router_key"
    END_OF_DATA = "end_of_data"
    CACHE_RESET = "cache_reset"
    ERROR_NO_DATA = "error_no_data"  # Error Report code 2 (not fatal)
    ERROR_VERSION = "error_version"  # Error Report code 4 (Unsupported Protocol Version)
    ERROR_FATAL = "error_fatal"  # any other Error Report
    ROUTER_PDU = "router_pdu"  # a Serial Query or Reset Query: only routers send those
    BAD_PDU = "bad_pdu"  # something the codec or the session's checks refused (PduError)
    REFRESH_DUE = "refresh_due"
    RETRY_DUE = "retry_due"
    RESPONSE_TIMEOUT = "response_timeout"
    EXPIRE_DUE = "expire_due"


class Step(StrEnum):
    """What a transition does besides changing state (one method ``_step_<name>`` each)."""

    QUERY = "query"  # Serial Query if we hold a serial, else Reset Query
    RESET_QUERY = "reset_query"  # forget the serial, Reset Query
    IGNORE = "ignore"
    BEGIN = "begin"  # start buffering a transfer
    RECORD = "record"  # buffer one prefix (duplicate/unknown checks)
    SKIP_KEY = "skip_key"  # Router Key: counted and skipped
    COMMIT = "commit"  # End of Data: apply, arm refresh and expire
    WAIT_RETRY = "wait_retry"
    DOWNGRADE = "downgrade"
    FAIL = "fail"  # send an Error Report (unless answering one) and close
    UNEXPECTED = "unexpected"  # a PDU not allowed in this state: Corrupt Data, then FAIL
    PEER_ERROR = "peer_error"  # the cache sent a fatal Error Report: close, no answer
    TIMEOUT = "timeout"  # no complete answer within the retry interval: close
    LOST = "lost"  # the transport lost the connection
    EXPIRE = "expire"  # drop this cache's data


@dataclass(frozen=True, slots=True)
class Rule:
    new_state: State
    step: Step
    rfc: str


S, E = State, Event
CONNECTED_STATES = (S.AWAIT_RESPONSE, S.RECEIVING, S.SYNCED, S.AWAIT_RETRY)

#: (state, event) -> what to do. Every connected state answers every PDU event.
TRANSITIONS: dict[tuple[State, Event], Rule] = {
    # --- not connected ---------------------------------------------------------------------------
    (S.DISCONNECTED, E.CONNECTED): Rule(S.AWAIT_RESPONSE, Step.QUERY,
        "8210 §7: a router MUST start each connection with a Reset Query or a Serial Query"),
    (S.DISCONNECTED, E.EXPIRE_DUE): Rule(S.DISCONNECTED, Step.EXPIRE,
        "8210 §6 Expire Interval: data may be kept this long while no update succeeds"),
    # --- Await Response: a query is outstanding ---------------------------------------------------
    (S.AWAIT_RESPONSE, E.SERIAL_NOTIFY): Rule(S.AWAIT_RESPONSE, Step.IGNORE,
        "8210 §7: ignore Serial Notify during startup; §8.2 the query it asks for is already out"),
    (S.AWAIT_RESPONSE, E.CACHE_RESPONSE): Rule(S.RECEIVING, Step.BEGIN,
        "8210 §5.5, §8.1/§8.2: Cache Response starts the answer"),
    (S.AWAIT_RESPONSE, E.CACHE_RESET): Rule(S.AWAIT_RESPONSE, Step.RESET_QUERY,
        "8210 §5.9, §8.3: no incremental update possible, the router issues a Reset Query"),
    (S.AWAIT_RESPONSE, E.PREFIX): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8.1: payload PDUs only follow a Cache Response"),
    (S.AWAIT_RESPONSE, E.ROUTER_KEY): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8.1: payload PDUs only follow a Cache Response"),
    (S.AWAIT_RESPONSE, E.END_OF_DATA): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8.1: End of Data only closes a Cache Response"),
    (S.AWAIT_RESPONSE, E.ERROR_NO_DATA): Rule(S.AWAIT_RETRY, Step.WAIT_RETRY,
        "8210 §12 code 2 (not fatal), §6 Retry Interval"),
    (S.AWAIT_RESPONSE, E.ERROR_VERSION): Rule(S.DISCONNECTED, Step.DOWNGRADE,
        "8210 §7: the router MAY retry the connection using protocol version 0"),
    (S.AWAIT_RESPONSE, E.RESPONSE_TIMEOUT): Rule(S.DISCONNECTED, Step.TIMEOUT,
        "8210 §6 Retry Interval: a query without an answer in time has failed"),
    # --- Receiving: between Cache Response and End of Data -----------------------------------------
    (S.RECEIVING, E.PREFIX): Rule(S.RECEIVING, Step.RECORD,
        "8210 §5.6/§5.7 announce/withdraw; §12 codes 6 and 7"),
    (S.RECEIVING, E.ROUTER_KEY): Rule(S.RECEIVING, Step.SKIP_KEY,
        "8210 §5.10: BGPsec router keys, not used for origin validation"),
    (S.RECEIVING, E.END_OF_DATA): Rule(S.SYNCED, Step.COMMIT,
        "8210 §5.8: End of Data commits the serial; §6 timers"),
    (S.RECEIVING, E.SERIAL_NOTIFY): Rule(S.RECEIVING, Step.IGNORE,
        "8210 §8.2: the transfer in progress answers it"),
    (S.RECEIVING, E.CACHE_RESPONSE): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8: one Cache Response per query"),
    (S.RECEIVING, E.CACHE_RESET): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8.3: Cache Reset answers a Serial Query, not inside a transfer"),
    (S.RECEIVING, E.ERROR_NO_DATA): Rule(S.AWAIT_RETRY, Step.WAIT_RETRY,
        "8210 §12 code 2: the partial transfer is dropped, query again after Retry Interval"),
    (S.RECEIVING, E.ERROR_VERSION): Rule(S.DISCONNECTED, Step.PEER_ERROR,
        "8210 §12: code 4 after a response began is fatal"),
    (S.RECEIVING, E.RESPONSE_TIMEOUT): Rule(S.DISCONNECTED, Step.TIMEOUT,
        "8210 §6 Retry Interval: a transfer that does not finish in time has failed"),
    # --- Synced ----------------------------------------------------------------------------------
    (S.SYNCED, E.SERIAL_NOTIFY): Rule(S.AWAIT_RESPONSE, Step.QUERY,
        "8210 §5.2, §8.2: on Serial Notify the router SHOULD send a Serial Query"),
    (S.SYNCED, E.REFRESH_DUE): Rule(S.AWAIT_RESPONSE, Step.QUERY,
        "8210 §6 Refresh Interval: poll with a Serial Query"),
    (S.SYNCED, E.CACHE_RESET): Rule(S.AWAIT_RESPONSE, Step.RESET_QUERY,
        "8210 §5.9: the cache cannot go on incrementally; Reset Query"),
    (S.SYNCED, E.CACHE_RESPONSE): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8: a Cache Response answers a query; none is outstanding"),
    (S.SYNCED, E.PREFIX): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8: payload only inside a response"),
    (S.SYNCED, E.ROUTER_KEY): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8: payload only inside a response"),
    (S.SYNCED, E.END_OF_DATA): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8: End of Data only closes a response"),
    (S.SYNCED, E.ERROR_NO_DATA): Rule(S.SYNCED, Step.IGNORE,
        "8210 §12 code 2 is not fatal; no query is outstanding, keep the data"),
    (S.SYNCED, E.ERROR_VERSION): Rule(S.DISCONNECTED, Step.PEER_ERROR,
        "8210 §12: code 4 after negotiation is fatal"),
    # --- Await Retry ------------------------------------------------------------------------------
    (S.AWAIT_RETRY, E.RETRY_DUE): Rule(S.AWAIT_RESPONSE, Step.QUERY,
        "8210 §6 Retry Interval: retry the failed query"),
    (S.AWAIT_RETRY, E.SERIAL_NOTIFY): Rule(S.AWAIT_RESPONSE, Step.QUERY,
        "8210 §8.2: the cache announces data; query now"),
    (S.AWAIT_RETRY, E.CACHE_RESET): Rule(S.AWAIT_RESPONSE, Step.RESET_QUERY,
        "8210 §5.9: Reset Query"),
    (S.AWAIT_RETRY, E.CACHE_RESPONSE): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8: no query is outstanding"),
    (S.AWAIT_RETRY, E.PREFIX): Rule(S.DISCONNECTED, Step.UNEXPECTED, "8210 §8: payload only inside a response"),
    (S.AWAIT_RETRY, E.ROUTER_KEY): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8: payload only inside a response"),
    (S.AWAIT_RETRY, E.END_OF_DATA): Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §8: End of Data only closes a response"),
    (S.AWAIT_RETRY, E.ERROR_NO_DATA): Rule(S.AWAIT_RETRY, Step.IGNORE, "8210 §12 code 2: still no data; keep waiting"),
    (S.AWAIT_RETRY, E.ERROR_VERSION): Rule(S.DISCONNECTED, Step.PEER_ERROR, "8210 §12: code 4 is fatal here"),
}
# Rows shared by every connected state.
for _s in CONNECTED_STATES:
    TRANSITIONS[(_s, E.DISCONNECTED)] = Rule(S.DISCONNECTED, Step.LOST,
        "8210 §6/§10: the connection is gone; the data is kept until it expires")
    TRANSITIONS[(_s, E.EXPIRE_DUE)] = Rule(_s, Step.EXPIRE,
        "8210 §6 Expire Interval: no successful update for that long, drop the data")
    TRANSITIONS[(_s, E.ERROR_FATAL)] = Rule(S.DISCONNECTED, Step.PEER_ERROR,
        "8210 §12: fatal error codes end the session; never answer an Error Report with one")
    TRANSITIONS[(_s, E.ROUTER_PDU)] = Rule(S.DISCONNECTED, Step.UNEXPECTED,
        "8210 §5.3/§5.4: queries go router -> cache; from a cache they are Unsupported PDU Type")
    TRANSITIONS[(_s, E.BAD_PDU)] = Rule(S.DISCONNECTED, Step.FAIL,
        "8210 §12: answer with the Error Report the codec chose, then drop the session")
del _s


@dataclass(frozen=True, slots=True)
class TimerLimits:
    """Accepted ranges for the intervals a cache sends (RFC 8210 §6); values outside are clamped.

    Tests and labs may widen them (a lab wants a 5 s expire; the RFC's minimum is 600 s).
    """

    refresh_s: tuple[int, int] = (1, 86400)
    retry_s: tuple[int, int] = (1, 7200)
    expire_s: tuple[int, int] = (600, 172800)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    #: Version 0 has no intervals on the wire: these apply (RFC 8210 §6 defaults).
    refresh_s: float = 3600
    retry_s: float = 600
    expire_s: float = 7200
    limits: TimerLimits = field(default_factory=TimerLimits)
    highest_version: int = HIGHEST_VERSION


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class VrpsChanged:
    announced: frozenset[Vrp]
    withdrawn: frozenset[Vrp]
    #: The cache serial the set now corresponds to; None once expired.
    serial: int | None


@dataclass(frozen=True, slots=True)
class Reset:
    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    reason: str
    #: Reconnect at once (version downgrade) rather than after the transport's back-off.
    immediate: bool = False


Action = Send | VrpsChanged | Reset | Close


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


class RtrSession:
    """One cache, across connections. See the module docstring."""

    def __init__(self, cfg: SessionConfig | None = None) -> None:
        self.cfg = cfg or SessionConfig()
        self.state = State.DISCONNECTED
        self.version = self.cfg.highest_version
        self.negotiated = False  # a PDU of our version arrived on this connection
        self.session_id: int | None = None
        self.serial: int | None = None  # the serial the committed data corresponds to
        self.vrps: set[Vrp] = set()  # committed
        self.refresh_s = self.cfg.refresh_s
        self.retry_s = self.cfg.retry_s
        self.expire_s = self.cfg.expire_s
        self.refresh_at: float | None = None
        self.retry_at: float | None = None
        self.response_deadline: float | None = None
        self.expire_at: float | None = None
        self.synced_on_connection = False  # End of Data seen on this connection (cache "up")
        self.last_update: float | None = None
        self.router_keys_skipped = 0
        self.errors_rx: Counter[int] = Counter()  # Error Reports the cache sent us, by code
        self.errors_tx: Counter[int] = Counter()  # Error Reports we sent (or would have), by code
        self.transitions = 0
        self.queries_sent: Counter[str] = Counter()  # "serial" / "reset"
        self._framer = Framer()
        self._full_transfer = False  # the outstanding query / transfer is a Reset
        self._transfer_session: int | None = None
        self._pending: dict[Vrp, bool] = {}  # VRP -> announce (True) / withdraw (False)
        self._pdu: Pdu | PduError | None = None  # the PDU being handled, for the steps
        self._raw: bytes = b""
        self._now = 0.0

    # --- inputs ----------------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        """Connected and in step with the cache (``pop_router_rpki_cache_up``)."""
        return self.state != State.DISCONNECTED and self.synced_on_connection

    def on_connected(self, now: float) -> list[Action]:
        self._framer = Framer()
        self.negotiated = False
        self.synced_on_connection = False
        return self._fire(Event.CONNECTED, now)

    def on_disconnected(self, now: float) -> list[Action]:
        if self.state == State.DISCONNECTED:
            return []
        return self._fire(Event.DISCONNECTED, now)

    def on_bytes(self, data: bytes, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.state == State.DISCONNECTED:
            return actions  # bytes after we closed: nothing to do with them
        for item in self._framer.feed(data):
            actions += self._on_pdu(item, now)
            if self.state == State.DISCONNECTED:
                break  # a Close was issued: the rest of the stream is moot
        return actions

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.expire_at is not None and now >= self.expire_at:
            actions += self._fire(Event.EXPIRE_DUE, now)
        if self.state == State.SYNCED and self.refresh_at is not None and now >= self.refresh_at:
            actions += self._fire(Event.REFRESH_DUE, now)
        elif self.state == State.AWAIT_RETRY and self.retry_at is not None and now >= self.retry_at:
            actions += self._fire(Event.RETRY_DUE, now)
        elif self.state in (State.AWAIT_RESPONSE, State.RECEIVING) and self.response_deadline is not None \
                and now >= self.response_deadline:
            actions += self._fire(Event.RESPONSE_TIMEOUT, now)
        return actions

    def next_deadline(self) -> float | None:
        times = [self.expire_at]
        if self.state == State.SYNCED:
            times.append(self.refresh_at)
        elif self.state == State.AWAIT_RETRY:
            times.append(self.retry_at)
        elif self.state in (State.AWAIT_RESPONSE, State.RECEIVING):
            times.append(self.response_deadline)
        armed = [t for t in times if t is not None]
        return min(armed) if armed else None

    # --- PDU -> event ----------------------------------------------------------------------------
    def _on_pdu(self, item: Pdu | PduError, now: float) -> list[Action]:
        self._pdu, self._raw = item, b""
        if isinstance(item, PduError):
            return self._fire(Event.BAD_PDU, now)
        if isinstance(item, SerialNotify) and not self.negotiated:
            return self._fire(Event.SERIAL_NOTIFY, now)  # §7: ignored during startup, whatever its version
        if item.version != self.version:
            if not self.negotiated and item.version < self.version:
                if isinstance(item, ErrorReport) and item.code == ErrorCode.UNSUPPORTED_PROTOCOL_VERSION:
                    self.errors_rx[item.code] += 1
                    return self._fire(Event.ERROR_VERSION, now)
                self._downgrade_to(item.version)  # §7: "the router MUST either downgrade ..."
            elif isinstance(item, ErrorReport):
                self.errors_rx[item.code] += 1
                return self._fire(Event.ERROR_FATAL, now)
            else:
                self._pdu = PduError(ErrorCode.UNEXPECTED_PROTOCOL_VERSION,
                                     f"version {item.version} PDU in a version {self.version} session", encode(item))
                return self._fire(Event.BAD_PDU, now)
        self.negotiated = True
        return self._fire(self._event_of(item), now)

    def _event_of(self, pdu: Pdu) -> Event:
        if isinstance(pdu, PrefixPdu):
            return Event.PREFIX
        if isinstance(pdu, SerialNotify):
            return Event.SERIAL_NOTIFY
        if isinstance(pdu, CacheResponse):
            return Event.CACHE_RESPONSE
        if isinstance(pdu, EndOfData):
            return Event.END_OF_DATA
        if isinstance(pdu, CacheReset):
            return Event.CACHE_RESET
        if isinstance(pdu, RouterKey):
            return Event.ROUTER_KEY
        if isinstance(pdu, SerialQuery | ResetQuery):
            return Event.ROUTER_PDU
        assert isinstance(pdu, ErrorReport)
        self.errors_rx[pdu.code] += 1
        if pdu.code == ErrorCode.NO_DATA_AVAILABLE:
            return Event.ERROR_NO_DATA
        if pdu.code == ErrorCode.UNSUPPORTED_PROTOCOL_VERSION:
            return Event.ERROR_VERSION
        return Event.ERROR_FATAL

    # --- the machine -----------------------------------------------------------------------------
    def _fire(self, event: Event, now: float) -> list[Action]:
        rule = TRANSITIONS.get((self.state, event))
        if rule is None:
            raise TransitionError(f"no transition for ({self.state}, {event})")
        self._now = now
        old = self.state
        self.state = rule.new_state
        self.transitions += 1
        actions = getattr(self, f"_step_{rule.step.value}")(old)
        if self.state == State.DISCONNECTED:
            self._on_leave_connection()
        return actions

    def _on_leave_connection(self) -> None:
        self._pending.clear()
        self.synced_on_connection = False
        self.negotiated = False
        self.refresh_at = self.retry_at = self.response_deadline = None

    def _forget_serial(self) -> None:
        self.serial = None
        self.session_id = None

    def _downgrade_to(self, version: int) -> None:
        self.version = version
        self._forget_serial()

    # --- steps -----------------------------------------------------------------------------------
    def _step_query(self, old: State) -> list[Action]:
        self.response_deadline = self._now + self.retry_s
        self.retry_at = self.refresh_at = None
        if self.serial is not None and self.session_id is not None:
            self._full_transfer = False
            self.queries_sent["serial"] += 1
            return [Send(encode(SerialQuery(self.version, self.session_id, self.serial)))]
        self._full_transfer = True
        self.queries_sent["reset"] += 1
        return [Send(encode(ResetQuery(self.version)))]

    def _step_reset_query(self, old: State) -> list[Action]:
        self._forget_serial()
        return [Reset("cache reset"), *self._step_query(old)]

    def _step_ignore(self, old: State) -> list[Action]:
        return []

    def _step_begin(self, old: State) -> list[Action]:
        pdu = self._pdu
        assert isinstance(pdu, CacheResponse)
        if not self._full_transfer and pdu.session_id != self.session_id:
            return self._fail(ErrorCode.CORRUPT_DATA, f"session id {pdu.session_id}, expected {self.session_id}",
                              reset=True)
        self._transfer_session = pdu.session_id
        self._pending.clear()
        return []

    def _step_record(self, old: State) -> list[Action]:
        pdu = self._pdu
        assert isinstance(pdu, PrefixPdu)
        vrp, pending = pdu.vrp, self._pending
        current = pending.get(vrp)
        held = vrp in self.vrps and not self._full_transfer
        if pdu.announce:
            if current is True or (held and current is None):
                return self._fail(ErrorCode.DUPLICATE_ANNOUNCEMENT_RECEIVED, f"{vrp} announced twice", encode(pdu))
            if current is False:
                del pending[vrp]  # withdrawn then announced again in one transfer: no change
            else:
                pending[vrp] = True
        else:
            if current is True:
                del pending[vrp]  # announced then withdrawn in one transfer: no change
            elif held and current is None:
                pending[vrp] = False
            else:
                return self._fail(ErrorCode.WITHDRAWAL_OF_UNKNOWN_RECORD, f"{vrp} withdrawn but not held", encode(pdu))
        return []

    def _step_skip_key(self, old: State) -> list[Action]:
        self.router_keys_skipped += 1
        return []

    def _step_commit(self, old: State) -> list[Action]:
        pdu = self._pdu
        assert isinstance(pdu, EndOfData)
        if pdu.session_id != self._transfer_session:
            return self._fail(ErrorCode.CORRUPT_DATA,
                              f"End of Data session id {pdu.session_id}, Cache Response had {self._transfer_session}",
                              encode(pdu), reset=True)
        if self._full_transfer:
            new = {v for v, ann in self._pending.items() if ann}
            announced = frozenset(new - self.vrps)
            withdrawn = frozenset(self.vrps - new)
            self.vrps = new
        else:
            announced = frozenset(v for v, ann in self._pending.items() if ann)
            withdrawn = frozenset(v for v, ann in self._pending.items() if not ann)
            self.vrps -= withdrawn
            self.vrps |= announced
        self._pending.clear()
        self.session_id, self.serial = pdu.session_id, pdu.serial
        if pdu.version >= 1 and pdu.refresh_s is not None:
            lim = self.cfg.limits
            self.refresh_s = _clamp(pdu.refresh_s, lim.refresh_s)
            self.retry_s = _clamp(pdu.retry_s or 0, lim.retry_s)
            self.expire_s = _clamp(pdu.expire_s or 0, lim.expire_s)
        else:
            self.refresh_s, self.retry_s, self.expire_s = self.cfg.refresh_s, self.cfg.retry_s, self.cfg.expire_s
        self.refresh_at = self._now + self.refresh_s
        self.expire_at = self._now + self.expire_s
        self.response_deadline = None
        self.synced_on_connection = True
        self.last_update = self._now
        return [VrpsChanged(announced, withdrawn, pdu.serial)]

    def _step_wait_retry(self, old: State) -> list[Action]:
        self._pending.clear()
        self.response_deadline = None
        self.retry_at = self._now + self.retry_s
        return []

    def _step_downgrade(self, old: State) -> list[Action]:
        if self.version == 0:
            return [Close("the cache supports no protocol version we speak")]
        self._downgrade_to(0)
        return [Reset("downgrade to protocol version 0"), Close("cache does not speak version 1", immediate=True)]

    def _step_fail(self, old: State) -> list[Action]:
        err = self._pdu
        assert isinstance(err, PduError)
        return self._fail(err.code, err.text, err.pdu, in_error_report=err.in_error_report, reset=True)

    def _step_unexpected(self, old: State) -> list[Action]:
        pdu = self._pdu
        assert pdu is not None and not isinstance(pdu, PduError)
        code = ErrorCode.UNSUPPORTED_PDU_TYPE if isinstance(pdu, SerialQuery | ResetQuery) else ErrorCode.CORRUPT_DATA
        return self._fail(code, f"{type(pdu).__name__} unexpected in state {old}", encode(pdu), reset=True)

    def _step_peer_error(self, old: State) -> list[Action]:
        pdu = self._pdu
        assert isinstance(pdu, ErrorReport)
        self._forget_serial()
        return [Reset("cache reported an error"), Close(f"cache error {pdu.code}: {pdu.text}")]

    def _step_timeout(self, old: State) -> list[Action]:
        return [Close(f"no complete answer within the retry interval ({self.retry_s:g} s)")]

    def _step_lost(self, old: State) -> list[Action]:
        return []

    def _step_expire(self, old: State) -> list[Action]:
        withdrawn = frozenset(self.vrps)
        self.vrps = set()
        self.expire_at = None
        self._forget_serial()
        self.version = self.cfg.highest_version if old == State.DISCONNECTED else self.version
        return [VrpsChanged(frozenset(), withdrawn, None)]

    def _fail(self, code: ErrorCode, text: str, pdu: bytes = b"", *, in_error_report: bool = False,
              reset: bool = True) -> list[Action]:
        """Answer with an Error Report (§12) and close; the next connection starts with a Reset Query."""
        self.state = State.DISCONNECTED
        self.errors_tx[code] += 1
        actions: list[Action] = []
        if not in_error_report:
            actions.append(Send(error_report(self.version, PduError(code, text, pdu))))
        if reset:
            self._forget_serial()
            actions.append(Reset(f"protocol error: {text}"))
        actions.append(Close(f"{code.name}: {text}"))
        return actions
