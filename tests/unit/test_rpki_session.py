"""RTR session: every row of the transition table, then whole exchanges with stayrtr's bytes.

The clock is fake: timers are reached by calling ``on_timer`` at ``next_deadline()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rpki.model import make_vrp
from rpki.pdu import (
    CacheResponse,
    EndOfData,
    ErrorCode,
    ErrorReport,
    Framer,
    PduType,
    PrefixPdu,
    ResetQuery,
    SerialNotify,
    SerialQuery,
    decode,
    encode,
)
from rpki.session import (
    CONNECTED_STATES,
    TRANSITIONS,
    Action,
    Close,
    Event,
    Reset,
    RtrSession,
    Send,
    SessionConfig,
    State,
    Step,
    TimerLimits,
    VrpsChanged,
)

FIX = Path(__file__).parents[1] / "fixtures" / "rtr"
SID = 0x7591
WIDE = TimerLimits(refresh_s=(1, 86400), retry_s=(1, 7200), expire_s=(1, 172800))


def fx(name: str) -> bytes:
    return (FIX / f"{name}.bin").read_bytes()


def sent(actions: list[Action]) -> list:  # type: ignore[type-arg]
    return [p for a in actions if isinstance(a, Send) for p in Framer().feed(a.data)]


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


# --- reaching each state (stayrtr's v1 reset response: refresh 2, retry 1, expire 5) --------------
def synced(t: float = 0.0) -> RtrSession:
    s = RtrSession(SessionConfig(limits=WIDE))
    s.on_connected(t)
    s.on_bytes(fx("v1_reset_response"), t)
    assert s.state == State.SYNCED and s.serial == 0x15
    return s


def in_state(state: State) -> RtrSession:
    """A session that has data (so expiry is armed) in ``state``, at time 0.1."""
    s = synced(0.0)
    if state == State.SYNCED:
        return s
    s.on_disconnected(0.05)
    if state == State.DISCONNECTED:
        return s
    s.on_connected(0.1)
    if state == State.RECEIVING:
        s.on_bytes(encode(CacheResponse(1, SID)), 0.1)
    elif state == State.AWAIT_RETRY:
        s.on_bytes(encode(ErrorReport(1, ErrorCode.NO_DATA_AVAILABLE)), 0.1)
    assert s.state == state
    return s


NOW = 0.2


def _timer(attr: str) -> Callable[[RtrSession], list[Action]]:
    def fire(s: RtrSession) -> list[Action]:
        if attr == "expire_at":
            s.expire_at = NOW  # before any other deadline
        return s.on_timer(getattr(s, attr))
    return fire


NEW_VRP = make_vrp("203.0.113.0/24", 24, 64499)
INJECT: dict[Event, Callable[[RtrSession], list[Action]]] = {
    Event.CONNECTED: lambda s: s.on_connected(NOW),
    Event.DISCONNECTED: lambda s: s.on_disconnected(NOW),
    Event.SERIAL_NOTIFY: lambda s: s.on_bytes(encode(SerialNotify(1, SID, 0x16)), NOW),
    Event.CACHE_RESPONSE: lambda s: s.on_bytes(encode(CacheResponse(1, SID)), NOW),
    Event.PREFIX: lambda s: s.on_bytes(encode(PrefixPdu(1, True, NEW_VRP)), NOW),
    Event.ROUTER_KEY: lambda s: s.on_bytes(fx("v1_router_key"), NOW),
    Event.END_OF_DATA: lambda s: s.on_bytes(encode(EndOfData(1, SID, 0x16, 2, 1, 5)), NOW),
    Event.CACHE_RESET: lambda s: s.on_bytes(fx("v1_cache_reset"), NOW),
    Event.ERROR_NO_DATA: lambda s: s.on_bytes(encode(ErrorReport(1, ErrorCode.NO_DATA_AVAILABLE)), NOW),
    Event.ERROR_VERSION: lambda s: s.on_bytes(encode(ErrorReport(1, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION)), NOW),
    Event.ERROR_FATAL: lambda s: s.on_bytes(encode(ErrorReport(1, ErrorCode.INTERNAL_ERROR, b"", "boom")), NOW),
    Event.ROUTER_PDU: lambda s: s.on_bytes(encode(ResetQuery(1)), NOW),
    Event.BAD_PDU: lambda s: s.on_bytes(bytes([1, 5, 0, 0, 0, 0, 0, 8]), NOW),
    Event.REFRESH_DUE: _timer("refresh_at"),
    Event.RETRY_DUE: _timer("retry_at"),
    Event.RESPONSE_TIMEOUT: _timer("response_deadline"),
    Event.EXPIRE_DUE: _timer("expire_at"),
}

#: What each step must visibly do.
STEP_ACTIONS: dict[Step, Callable[[list[Action]], bool]] = {
    Step.QUERY: lambda a: [type(p) for p in sent(a)] in ([SerialQuery], [ResetQuery]),
    Step.RESET_QUERY: lambda a: kinds(a)[0] == "Reset" and [type(p) for p in sent(a)] == [ResetQuery],
    Step.IGNORE: lambda a: a == [],
    Step.BEGIN: lambda a: a == [],
    Step.RECORD: lambda a: a == [],
    Step.SKIP_KEY: lambda a: a == [],
    Step.COMMIT: lambda a: kinds(a) == ["VrpsChanged"],
    Step.WAIT_RETRY: lambda a: a == [],
    Step.DOWNGRADE: lambda a: isinstance(a[-1], Close) and a[-1].immediate,
    Step.FAIL: lambda a: [type(p) for p in sent(a)] == [ErrorReport] and isinstance(a[-1], Close),
    Step.UNEXPECTED: lambda a: [type(p) for p in sent(a)] == [ErrorReport] and isinstance(a[-1], Close),
    Step.PEER_ERROR: lambda a: sent(a) == [] and isinstance(a[-1], Close),
    Step.TIMEOUT: lambda a: kinds(a) == ["Close"],
    Step.LOST: lambda a: a == [],
    Step.EXPIRE: lambda a: len(a) == 1 and isinstance(a[0], VrpsChanged) and a[0].serial is None
    and len(a[0].withdrawn) == 3,
}


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS), ids=lambda x: str(x))
def test_every_row(state: State, event: Event) -> None:
    rule = TRANSITIONS[(state, event)]
    s = in_state(state)
    before = s.transitions
    actions = INJECT[event](s)
    assert s.transitions == before + 1, "the event must go through exactly one row"
    assert s.state == rule.new_state
    assert STEP_ACTIONS[rule.step](actions), (rule, actions)
    assert rule.rfc.startswith(("8210 §", "6810 §"))


def test_connected_states_answer_every_wire_event() -> None:
    wire = [Event.SERIAL_NOTIFY, Event.CACHE_RESPONSE, Event.PREFIX, Event.ROUTER_KEY, Event.END_OF_DATA,
            Event.CACHE_RESET, Event.ERROR_NO_DATA, Event.ERROR_VERSION, Event.ERROR_FATAL, Event.ROUTER_PDU,
            Event.BAD_PDU, Event.DISCONNECTED, Event.EXPIRE_DUE]
    missing = [(s, e) for s in CONNECTED_STATES for e in wire if (s, e) not in TRANSITIONS]
    assert missing == []


# --- whole exchanges ---------------------------------------------------------------------------
def test_reset_then_incremental_from_stayrtr() -> None:
    s = RtrSession(SessionConfig(limits=WIDE))
    assert [type(p) for p in sent(s.on_connected(0))] == [ResetQuery]
    acts = s.on_bytes(fx("v1_reset_response"), 0.01)
    assert kinds(acts) == ["VrpsChanged"]
    assert {str(v) for v in acts[0].announced} == {
        "2001:db8::/32-48 AS64498", "192.0.2.0/24-24 AS64496", "198.51.100.0/22-24 AS64497"}
    assert (s.refresh_s, s.retry_s, s.expire_s) == (2, 1, 5) and s.up
    q = sent(s.on_bytes(fx("v1_serial_notify"), 0.5))
    assert q == [SerialQuery(1, SID, 0x15)]
    acts = s.on_bytes(fx("v1_serial_response"), 0.6)
    assert [str(v) for v in acts[0].announced] == ["203.0.113.0/24-24 AS64499"]
    assert [str(v) for v in acts[0].withdrawn] == ["198.51.100.0/22-24 AS64497"]
    assert s.serial == 0x16 and len(s.vrps) == 3 and s.state == State.SYNCED
    assert not any(isinstance(a, Reset) for a in acts)


def test_refresh_polls_and_expire_drops_while_disconnected() -> None:
    s = synced(0.0)
    assert s.next_deadline() == 2  # refresh
    assert sent(s.on_timer(2)) == [SerialQuery(1, SID, 0x15)]
    s.on_disconnected(2.5)
    assert s.next_deadline() == 5 and len(s.vrps) == 3  # kept while away
    acts = s.on_timer(5)
    assert kinds(acts) == ["VrpsChanged"] and len(acts[0].withdrawn) == 3 and s.vrps == set()
    assert s.next_deadline() is None
    assert [type(p) for p in sent(s.on_connected(6))] == [ResetQuery]


def test_reconnect_uses_serial_query_and_keeps_data() -> None:
    s = synced(0.0)
    s.on_disconnected(1)
    assert sent(s.on_connected(1.5)) == [SerialQuery(1, SID, 0x15)]
    acts = s.on_bytes(fx("v1_cache_reset"), 1.6)
    assert kinds(acts) == ["Reset", "Send"] and len(s.vrps) == 3
    acts = s.on_bytes(fx("v1_reset_response"), 1.7)
    assert acts == [VrpsChanged(frozenset(), frozenset(), 0x15)]  # same set: atomic swap, no churn


def test_default_limits_clamp_expire_to_rfc_minimum() -> None:
    s = RtrSession()
    s.on_connected(0)
    s.on_bytes(fx("v1_reset_response"), 0)
    assert (s.refresh_s, s.retry_s, s.expire_s) == (2, 1, 600)


def test_v0_answer_downgrades_and_uses_defaults() -> None:
    s = RtrSession()
    s.on_connected(0)
    raw = fx("v0_cache_response") + fx("v0_ipv4_prefix") + fx("v0_end_of_data")
    acts = s.on_bytes(raw, 0)
    assert s.version == 0 and kinds(acts) == ["VrpsChanged"] and s.serial == 0
    assert (s.refresh_s, s.retry_s, s.expire_s) == (3600, 600, 7200)
    s.on_disconnected(1)
    assert sent(s.on_connected(2)) == [SerialQuery(0, 0xC4B4, 0)]


def test_unsupported_version_error_reconnects_at_version_0() -> None:
    s = RtrSession()
    s.on_connected(0)
    acts = s.on_bytes(fx("v0_error_report_bad_version"), 0)
    assert isinstance(acts[-1], Close) and acts[-1].immediate and sent(acts) == []
    assert s.version == 0 and s.state == State.DISCONNECTED
    assert [p.version for p in sent(s.on_connected(0.1))] == [0]
    # a second refusal at version 0: give up on this connection, back off
    acts = s.on_bytes(encode(ErrorReport(0, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION)), 0.2)
    assert isinstance(acts[-1], Close) and not acts[-1].immediate


def test_serial_notify_ignored_during_negotiation_whatever_its_version() -> None:
    s = RtrSession()
    s.on_connected(0)
    assert s.on_bytes(encode(SerialNotify(0, 1, 1)), 0) == [] and s.version == 1


def test_other_version_after_negotiation_is_code_8() -> None:
    s = synced()
    acts = s.on_bytes(encode(SerialNotify(0, SID, 99)), 1)
    assert [p.code for p in sent(acts)] == [ErrorCode.UNEXPECTED_PROTOCOL_VERSION]
    assert s.state == State.DISCONNECTED and len(s.vrps) == 3  # data kept until replaced or expired


@pytest.mark.parametrize(("pdus", "code"), [
    ([PrefixPdu(1, True, make_vrp("192.0.2.0/24", 24, 64496))], ErrorCode.DUPLICATE_ANNOUNCEMENT_RECEIVED),
    ([PrefixPdu(1, True, NEW_VRP), PrefixPdu(1, True, NEW_VRP)], ErrorCode.DUPLICATE_ANNOUNCEMENT_RECEIVED),
    ([PrefixPdu(1, False, NEW_VRP)], ErrorCode.WITHDRAWAL_OF_UNKNOWN_RECORD),
])
def test_incremental_errors(pdus: list[PrefixPdu], code: ErrorCode) -> None:
    s = synced()
    s.on_bytes(fx("v1_serial_notify"), 0.5)
    raw = encode(CacheResponse(1, SID)) + b"".join(encode(p) for p in pdus)
    acts = s.on_bytes(raw, 0.6)
    assert [p.code for p in sent(acts)] == [code]
    assert isinstance(acts[-1], Close) and len(s.vrps) == 3 and s.serial is None  # next time: Reset Query


def test_announce_withdraw_in_one_transfer_nets_out() -> None:
    s = synced()
    s.on_bytes(fx("v1_serial_notify"), 0.5)
    old = make_vrp("192.0.2.0/24", 24, 64496)
    raw = b"".join(encode(p) for p in [CacheResponse(1, SID), PrefixPdu(1, True, NEW_VRP), PrefixPdu(1, False, NEW_VRP),
                                       PrefixPdu(1, False, old), PrefixPdu(1, True, old),
                                       EndOfData(1, SID, 0x16, 2, 1, 5)])
    assert s.on_bytes(raw, 0.6) == [VrpsChanged(frozenset(), frozenset(), 0x16)]


def test_session_id_mismatch_on_incremental_is_corrupt_data() -> None:
    s = synced()
    s.on_bytes(fx("v1_serial_notify"), 0.5)
    acts = s.on_bytes(encode(CacheResponse(1, SID + 1)), 0.6)
    assert [p.code for p in sent(acts)] == [ErrorCode.CORRUPT_DATA] and s.session_id is None
    assert len(s.vrps) == 3  # replaced atomically by the next reset, not emptied (module docstring)


def test_stayrtr_session_mismatch_error_forgets_serial() -> None:
    s = synced()
    s.on_disconnected(1)
    s.on_connected(2)
    acts = s.on_bytes(fx("v1_error_report_session_mismatch"), 2)
    assert sent(acts) == [] and isinstance(acts[-1], Close) and s.serial is None
    assert [type(p) for p in sent(s.on_connected(3))] == [ResetQuery]


def test_no_data_available_retries_after_retry_interval() -> None:
    s = RtrSession(SessionConfig(limits=WIDE))
    s.on_connected(0)
    assert s.on_bytes(encode(ErrorReport(1, ErrorCode.NO_DATA_AVAILABLE)), 0) == []
    assert s.state == State.AWAIT_RETRY and s.next_deadline() == 600  # v0/v1 default before any End of Data
    assert [type(p) for p in sent(s.on_timer(600))] == [ResetQuery]


def test_unanswered_query_times_out() -> None:
    s = RtrSession()
    s.on_connected(0)
    assert s.next_deadline() == 600
    assert kinds(s.on_timer(600)) == ["Close"] and s.state == State.DISCONNECTED


def test_no_error_report_answers_an_error_report() -> None:
    s = RtrSession()
    s.on_connected(0)
    bad = bytes([1, 10, 0, 0, 0, 0, 0, 16]) + (100).to_bytes(4, "big") + bytes(4)  # inner length overruns
    acts = s.on_bytes(bad, 0)
    assert sent(acts) == [] and isinstance(acts[-1], Close)


def test_error_report_we_send_encapsulates_the_pdu() -> None:
    s = RtrSession()
    s.on_connected(0)
    bad = bytes([1, 5, 0, 0, 0, 0, 0, 8])
    (rep,) = sent(s.on_bytes(bad, 0))
    assert rep.code == ErrorCode.UNSUPPORTED_PDU_TYPE and rep.pdu == bad and rep.version == 1
    assert decode(encode(rep)) == rep and s.errors_tx[ErrorCode.UNSUPPORTED_PDU_TYPE] == 1


def test_router_key_is_skipped_and_counted() -> None:
    s = RtrSession()
    s.on_connected(0)
    raw = fx("v1_cache_response") + fx("v1_router_key") + fx("v1_ipv4_prefix") + fx("v1_end_of_data")
    acts = s.on_bytes(raw, 0)
    assert s.router_keys_skipped == 1 and len(acts[0].announced) == 1


def test_thousands_of_transitions_in_milliseconds() -> None:
    s = synced()
    t = 0.0
    for _ in range(2000):
        t = s.next_deadline()
        assert t is not None
        s.on_timer(t)  # refresh -> query
        s.on_bytes(encode(CacheResponse(1, SID)) + encode(EndOfData(1, SID, 0x15, 2, 1, 5)), t)
    assert s.state == State.SYNCED and t == pytest.approx(4000)
    assert PduType.SERIAL_QUERY == 1
