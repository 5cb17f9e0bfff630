"""RTR codec: stayrtr's real PDUs decode to what the capture says, round trips, malformed input.

The fixtures come from Debian's stayrtr 0.5.1 (``tests/fixtures/rtr/README.md``): these are the
interop vectors. Every malformed PDU must become a :class:`PduError` carrying the RFC 8210 §12
code the router answers with, and arbitrary bytes must never raise anything else.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpki.model import Vrp, make_vrp
from rpki.pdu import (
    CacheReset,
    CacheResponse,
    EndOfData,
    ErrorCode,
    ErrorReport,
    Framer,
    PduError,
    PrefixPdu,
    ResetQuery,
    RouterKey,
    SerialNotify,
    SerialQuery,
    decode,
    encode,
)

FIX = Path(__file__).parents[1] / "fixtures" / "rtr"
SID = 0x7591  # stayrtr's session id in the v1 captures


def fx(name: str) -> bytes:
    return (FIX / f"{name}.bin").read_bytes()


EXPECTED = {
    "v1_cache_response": CacheResponse(1, SID),
    "v1_ipv6_prefix": PrefixPdu(1, True, make_vrp("2001:db8::/32", 48, 64498)),
    "v1_ipv4_prefix": PrefixPdu(1, True, make_vrp("192.0.2.0/24", 24, 64496)),
    "v1_ipv4_prefix_22": PrefixPdu(1, True, make_vrp("198.51.100.0/22", 24, 64497)),
    "v1_ipv4_prefix_withdraw": PrefixPdu(1, False, make_vrp("198.51.100.0/22", 24, 64497)),
    "v1_end_of_data": EndOfData(1, SID, 7, refresh_s=2, retry_s=1, expire_s=5),
    "v1_serial_notify": SerialNotify(1, SID, 0x16),
    "v1_cache_reset": CacheReset(1),
    "v1_error_report_session_mismatch": ErrorReport(1, 0, b"", "Session ID mismatch: client is desynchronized"),
    "v0_error_report_bad_version": ErrorReport(0, 4, b"", "Bad protocol version"),
    "v0_cache_response": CacheResponse(0, 0xC4B4),
    "v0_ipv4_prefix": PrefixPdu(0, True, make_vrp("203.0.113.0/24", 24, 64499)),
    "v0_end_of_data": EndOfData(0, 0xC4B4, 0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stayrtr_fixture_decodes(name: str) -> None:
    raw = fx(name)
    assert decode(raw) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if "error_report" not in n))
def test_stayrtr_fixture_reencodes_byte_for_byte(name: str) -> None:
    assert encode(decode(fx(name))) == fx(name)


def test_error_report_text_nul_is_dropped() -> None:
    # stayrtr ends its error text with a NUL; the text is for humans, we keep it without.
    pdu = decode(fx("v1_error_report_session_mismatch"))
    assert isinstance(pdu, ErrorReport) and pdu.error == ErrorCode.CORRUPT_DATA
    assert decode(encode(pdu)) == pdu


def test_router_key_is_parsed() -> None:
    pdu = decode(fx("v1_router_key"))
    assert isinstance(pdu, RouterKey)
    assert pdu.announce and pdu.asn == 64496
    assert pdu.ski == bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
    assert pdu.spki == bytes(range(91))
    assert encode(pdu) == fx("v1_router_key")


def test_whole_responses_frame_in_any_split() -> None:
    raw = fx("v1_reset_response")
    for cut in range(1, len(raw)):
        f = Framer()
        got = f.feed(raw[:cut]) + f.feed(raw[cut:])
        assert [type(p).__name__ for p in got] == ["CacheResponse", "PrefixPdu", "PrefixPdu", "PrefixPdu", "EndOfData"]


def test_serial_response_carries_withdrawal() -> None:
    got = Framer().feed(fx("v1_serial_response"))
    assert [(p.announce, str(p.vrp)) for p in got if isinstance(p, PrefixPdu)] == [
        (True, "203.0.113.0/24-24 AS64499"), (False, "198.51.100.0/22-24 AS64497")]


ROUND_TRIP = [
    SerialNotify(1, 7, 2**32 - 1), SerialQuery(0, 0, 0), SerialQuery(1, 65535, 12345), ResetQuery(0), ResetQuery(1),
    CacheResponse(1, 1), EndOfData(0, 3, 4), EndOfData(1, 3, 4, 3600, 600, 7200), CacheReset(0),
    PrefixPdu(1, False, Vrp(4, 0, 0, 32, 0)), PrefixPdu(0, True, Vrp(6, 1 << 127, 1, 128, 2**32 - 1)),
    RouterKey(1, False, b"\x01" * 20, 65000, b""), ErrorReport(1, 2, b"", ""),
    ErrorReport(0, 7, encode(ResetQuery(0)), "duplicate ✓"),
]


@pytest.mark.parametrize("pdu", ROUND_TRIP, ids=lambda p: type(p).__name__)
def test_round_trip(pdu: object) -> None:
    assert decode(encode(pdu)) == pdu  # type: ignore[arg-type]


def _hdr(version: int, ptype: int, f16: int, length: int) -> bytes:
    return bytes([version, ptype]) + f16.to_bytes(2, "big") + length.to_bytes(4, "big")


MALFORMED = [
    ("short", b"\x01\x02\x00", ErrorCode.CORRUPT_DATA),
    ("length field lies", _hdr(1, 2, 0, 12), ErrorCode.CORRUPT_DATA),
    ("version 2", _hdr(2, 2, 0, 8), ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),
    ("unknown type", _hdr(1, 5, 0, 8), ErrorCode.UNSUPPORTED_PDU_TYPE),
    ("ASPA type 11", _hdr(1, 11, 0, 8), ErrorCode.UNSUPPORTED_PDU_TYPE),
    ("router key in v0", _hdr(0, 9, 0, 32) + bytes(24), ErrorCode.UNSUPPORTED_PDU_TYPE),
    ("reset query too long", _hdr(1, 2, 0, 12) + bytes(4), ErrorCode.CORRUPT_DATA),
    ("v0 end of data with v1 length", _hdr(0, 7, 1, 24) + bytes(16), ErrorCode.CORRUPT_DATA),
    ("v1 end of data with v0 length", _hdr(1, 7, 1, 12) + bytes(4), ErrorCode.CORRUPT_DATA),
    ("ipv4 prefix len > max len", _hdr(1, 4, 0, 20) + bytes([1, 24, 16, 0, 192, 0, 2, 0, 0, 0, 0, 1]),
     ErrorCode.CORRUPT_DATA),
    ("ipv4 max len 33", _hdr(1, 4, 0, 20) + bytes([1, 24, 33, 0, 192, 0, 2, 0, 0, 0, 0, 1]), ErrorCode.CORRUPT_DATA),
    ("ipv4 host bits", _hdr(1, 4, 0, 20) + bytes([1, 24, 24, 0, 192, 0, 2, 1, 0, 0, 0, 1]), ErrorCode.CORRUPT_DATA),
    ("ipv6 max len 129", _hdr(1, 6, 0, 32) + bytes([1, 32, 129, 0]) + bytes(20), ErrorCode.CORRUPT_DATA),
    ("router key too short", _hdr(1, 9, 0x100, 30) + bytes(22), ErrorCode.CORRUPT_DATA),
    ("error report inner PDU overruns", _hdr(1, 10, 0, 16) + (100).to_bytes(4, "big") + bytes(4),
     ErrorCode.CORRUPT_DATA),
    ("error report text length wrong", _hdr(1, 10, 0, 18) + bytes(4) + (5).to_bytes(4, "big") + b"ab",
     ErrorCode.CORRUPT_DATA),
]


@pytest.mark.parametrize(("name", "raw", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_is_a_typed_error(name: str, raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(PduError) as exc:
        decode(raw)
    assert exc.value.code == code
    assert exc.value.pdu == raw
    assert exc.value.in_error_report == (len(raw) > 1 and raw[1] == 10)


def test_framer_stops_on_impossible_length() -> None:
    f = Framer()
    out = f.feed(_hdr(1, 2, 0, 4) + _hdr(1, 2, 0, 8))
    assert len(out) == 1 and isinstance(out[0], PduError) and out[0].code == ErrorCode.CORRUPT_DATA
    assert f.broken and f.feed(_hdr(1, 2, 0, 8)) == []


def test_framer_reports_bad_pdu_and_goes_on() -> None:
    out = Framer().feed(_hdr(1, 5, 0, 8) + encode(ResetQuery(1)))
    assert isinstance(out[0], PduError) and out[0].code == ErrorCode.UNSUPPORTED_PDU_TYPE
    assert out[1] == ResetQuery(1)


@given(st.binary(max_size=200), st.integers(1, 50))
def test_arbitrary_bytes_never_raise(data: bytes, chunk: int) -> None:
    f = Framer()
    for i in range(0, len(data), chunk):
        for item in f.feed(data[i:i + chunk]):
            assert isinstance(item, PduError) or item.version in (0, 1)


@given(st.integers(0, 1), st.sampled_from([4, 10]), st.binary(min_size=0, max_size=40))
def test_arbitrary_bodies_of_real_types(version: int, ptype: int, body: bytes) -> None:
    raw = _hdr(version, ptype, 0, 8 + len(body)) + body
    try:
        decode(raw)
    except PduError:
        pass
