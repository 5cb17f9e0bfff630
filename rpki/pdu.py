"""RTR PDU codec, version 1 (RFC 8210 §5) and version 0 (RFC 6810 §5), declared as data.

Theory of operation
-------------------
Every PDU starts with the same 8-byte header (``HEADER``: version, type, a 16-bit field whose
meaning depends on the type, total length). What follows is declared once, per type and version,
in :data:`LAYOUTS`: the fixed body (:mod:`struct`), the exact total length (or the minimum, for the
variable-length Router Key and Error Report) and the versions in which the type exists.

:class:`Framer` cuts a TCP byte stream into PDUs by the length field; :func:`decode` turns one PDU
into a typed value. Neither raises anything but :class:`PduError`, which carries the RFC 8210 §12
error code the router must put in the Error Report it sends back, and the offending bytes to
encapsulate. Hypothesis checks that arbitrary bytes only ever yield PDUs or a ``PduError``.

Checks made here (the ones that need no session state):
- version 0 or 1, else code 4 (Unsupported Protocol Version);
- a known type that exists in that version (Router Key is v1 only), else code 5;
- exact length for fixed-size PDUs, consistent inner lengths for Error Report, else code 0;
- prefix length <= max length <= address width, no host bits set, else code 0 (Corrupt Data).
Fields the RFC calls "zero" are ignored on receipt and sent as zero.

The stateful checks (session id, unexpected version after negotiation, duplicate announcements,
withdrawal of unknown records) belong to :mod:`rpki.session`.

A stream whose length field is below 8 or above :data:`MAX_PDU_LEN` cannot be re-synchronised:
the framer reports Corrupt Data and stops, and the session closes the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from rpki.model import WIDTH, Vrp, host_bits_clear

HEADER = struct.Struct("!BBHI")  # version, type, session id | error code | flags+zero | zero, length
#: Largest PDU we accept. Router Keys are ~120 bytes; Error Reports carry one PDU and a text.
MAX_PDU_LEN = 64 * 1024
SUPPORTED_VERSIONS = (0, 1)


class PduType(IntEnum):
    SERIAL_NOTIFY = 0
    SERIAL_QUERY = 1
    RESET_QUERY = 2
    CACHE_RESPONSE = 3
    IPV4_PREFIX = 4
    IPV6_PREFIX = 6
    END_OF_DATA = 7
    CACHE_RESET = 8
    ROUTER_KEY = 9
    ERROR_REPORT = 10


class ErrorCode(IntEnum):
    """RFC 8210 §12 (RFC 6810 §10 for 0-7)."""

    CORRUPT_DATA = 0
    INTERNAL_ERROR = 1
    NO_DATA_AVAILABLE = 2
    INVALID_REQUEST = 3
    UNSUPPORTED_PROTOCOL_VERSION = 4
    UNSUPPORTED_PDU_TYPE = 5
    WITHDRAWAL_OF_UNKNOWN_RECORD = 6
    DUPLICATE_ANNOUNCEMENT_RECEIVED = 7
    UNEXPECTED_PROTOCOL_VERSION = 8


@dataclass(frozen=True, slots=True)
class Layout:
    """How one PDU type looks on the wire after the 8-byte header, per protocol version."""

    #: What the header's 16-bit field carries: "session_id", "zero", "flags" (Router Key: flags
    #: byte + zero byte) or "error_code".
    header_field: str
    #: Fixed body after the header, per version (absent version: the type does not exist there).
    body: dict[int, struct.Struct]
    #: Exact total length per version, or None where the PDU is variable (then >= 8 + body size).
    length: dict[int, int] | None


_EMPTY = struct.Struct("!")
_SERIAL = struct.Struct("!I")
_V4 = struct.Struct("!BBBx4sI")  # flags, prefix length, max length, zero, prefix, AS
_V6 = struct.Struct("!BBBx16sI")
_EOD_V1 = struct.Struct("!IIII")  # serial, refresh, retry, expire
_ROUTER_KEY = struct.Struct("!20sI")  # SKI, AS (then the SubjectPublicKeyInfo to the end)
_ERROR = struct.Struct("!I")  # length of the encapsulated PDU (then the PDU, text length, text)

LAYOUTS: dict[PduType, Layout] = {
    # RFC 8210 §5.2 / RFC 6810 §5.2
    PduType.SERIAL_NOTIFY: Layout("session_id", {0: _SERIAL, 1: _SERIAL}, {0: 12, 1: 12}),
    # §5.3
    PduType.SERIAL_QUERY: Layout("session_id", {0: _SERIAL, 1: _SERIAL}, {0: 12, 1: 12}),
    # §5.4
    PduType.RESET_QUERY: Layout("zero", {0: _EMPTY, 1: _EMPTY}, {0: 8, 1: 8}),
    # §5.5
    PduType.CACHE_RESPONSE: Layout("session_id", {0: _EMPTY, 1: _EMPTY}, {0: 8, 1: 8}),
    # §5.6
    PduType.IPV4_PREFIX: Layout("zero", {0: _V4, 1: _V4}, {0: 20, 1: 20}),
    # §5.7
    PduType.IPV6_PREFIX: Layout("zero", {0: _V6, 1: _V6}, {0: 32, 1: 32}),
    # RFC 8210 §5.8 (v1 adds the three intervals) / RFC 6810 §5.7
    PduType.END_OF_DATA: Layout("session_id", {0: _SERIAL, 1: _EOD_V1}, {0: 12, 1: 24}),
    # §5.9 / RFC 6810 §5.8
    PduType.CACHE_RESET: Layout("zero", {0: _EMPTY, 1: _EMPTY}, {0: 8, 1: 8}),
    # RFC 8210 §5.10 (version 1 only)
    PduType.ROUTER_KEY: Layout("flags", {1: _ROUTER_KEY}, None),
    # RFC 8210 §5.11 / RFC 6810 §5.10
    PduType.ERROR_REPORT: Layout("error_code", {0: _ERROR, 1: _ERROR}, None),
}


class PduError(Exception):
    """A PDU we cannot accept, with the Error Report the RFC says to answer it with (§12).

    ``pdu`` is the offending PDU (as much of it as we have) to encapsulate; ``in_error_report`` is
    set when the offending PDU is itself an Error Report, which must never be answered with one.
    """

    def __init__(self, code: ErrorCode, text: str, pdu: bytes = b"", *, in_error_report: bool = False) -> None:
        super().__init__(f"{code.name}: {text}")
        self.code = code
        self.text = text
        self.pdu = pdu
        self.in_error_report = in_error_report


# --- the PDUs ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SerialNotify:
    version: int
    session_id: int
    serial: int
    TYPE = PduType.SERIAL_NOTIFY


@dataclass(frozen=True, slots=True)
class SerialQuery:
    version: int
    session_id: int
    serial: int
    TYPE = PduType.SERIAL_QUERY


@dataclass(frozen=True, slots=True)
class ResetQuery:
    version: int
    TYPE = PduType.RESET_QUERY


@dataclass(frozen=True, slots=True)
class CacheResponse:
    version: int
    session_id: int
    TYPE = PduType.CACHE_RESPONSE


@dataclass(frozen=True, slots=True)
class PrefixPdu:
    """IPv4 Prefix (§5.6) or IPv6 Prefix (§5.7): one VRP announced (flag bit 0 set) or withdrawn."""

    version: int
    announce: bool
    vrp: Vrp

    @property
    def TYPE(self) -> PduType:
        return PduType.IPV4_PREFIX if self.vrp.afi == 4 else PduType.IPV6_PREFIX


@dataclass(frozen=True, slots=True)
class EndOfData:
    version: int
    session_id: int
    serial: int
    #: Version 1 only (RFC 8210 §6); None in version 0.
    refresh_s: int | None = None
    retry_s: int | None = None
    expire_s: int | None = None
    TYPE = PduType.END_OF_DATA


@dataclass(frozen=True, slots=True)
class CacheReset:
    version: int
    TYPE = PduType.CACHE_RESET


@dataclass(frozen=True, slots=True)
class RouterKey:
    """BGPsec router key (§5.10): parsed so the stream stays in step, then skipped."""

    version: int
    announce: bool
    ski: bytes
    asn: int
    spki: bytes
    TYPE = PduType.ROUTER_KEY


@dataclass(frozen=True, slots=True)
class ErrorReport:
    version: int
    code: int
    pdu: bytes = b""
    text: str = ""
    TYPE = PduType.ERROR_REPORT

    @property
    def error(self) -> ErrorCode | None:
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


Pdu = SerialNotify | SerialQuery | ResetQuery | CacheResponse | PrefixPdu | EndOfData | CacheReset | RouterKey \
    | ErrorReport


# --- encoding ------------------------------------------------------------------------------------
def encode(pdu: Pdu) -> bytes:
    """The wire form of ``pdu`` (used for our queries and Error Reports, and for test vectors)."""
    v = pdu.version
    if isinstance(pdu, SerialNotify | SerialQuery):
        return HEADER.pack(v, pdu.TYPE, pdu.session_id, 12) + _SERIAL.pack(pdu.serial)
    if isinstance(pdu, ResetQuery | CacheReset):
        return HEADER.pack(v, pdu.TYPE, 0, 8)
    if isinstance(pdu, CacheResponse):
        return HEADER.pack(v, pdu.TYPE, pdu.session_id, 8)
    if isinstance(pdu, PrefixPdu):
        r = pdu.vrp
        nbytes = WIDTH[r.afi] // 8
        body = (_V4 if r.afi == 4 else _V6).pack(int(pdu.announce), r.prefix_len, r.max_len,
                                                  r.prefix.to_bytes(nbytes, "big"), r.asn)
        return HEADER.pack(v, pdu.TYPE, 0, 8 + len(body)) + body
    if isinstance(pdu, EndOfData):
        if v == 0:
            return HEADER.pack(v, pdu.TYPE, pdu.session_id, 12) + _SERIAL.pack(pdu.serial)
        return HEADER.pack(v, pdu.TYPE, pdu.session_id, 24) + _EOD_V1.pack(
            pdu.serial, pdu.refresh_s or 0, pdu.retry_s or 0, pdu.expire_s or 0)
    if isinstance(pdu, RouterKey):
        body = _ROUTER_KEY.pack(pdu.ski, pdu.asn) + pdu.spki
        return HEADER.pack(v, pdu.TYPE, int(pdu.announce) << 8, 8 + len(body)) + body
    if isinstance(pdu, ErrorReport):
        text = pdu.text.encode()
        body = _ERROR.pack(len(pdu.pdu)) + pdu.pdu + _ERROR.pack(len(text)) + text
        return HEADER.pack(v, pdu.TYPE, pdu.code, 8 + len(body)) + body
    raise TypeError(f"not a PDU: {pdu!r}")


def error_report(version: int, err: PduError) -> bytes:
    """The Error Report answering ``err`` (caller checks ``err.in_error_report`` first, §12)."""
    return encode(ErrorReport(version, int(err.code), err.pdu[:MAX_PDU_LEN // 2], err.text))


# --- decoding ------------------------------------------------------------------------------------
def decode(data: bytes) -> Pdu:
    """Decode exactly one PDU; :class:`PduError` for anything the RFC calls an error."""
    if len(data) < HEADER.size:
        raise PduError(ErrorCode.CORRUPT_DATA, f"PDU of {len(data)} bytes is shorter than its header", data)
    version, ptype, field16, length = HEADER.unpack_from(data)
    is_error = ptype == PduType.ERROR_REPORT
    if length != len(data):
        raise PduError(ErrorCode.CORRUPT_DATA, f"length field {length} but {len(data)} bytes", data,
                       in_error_report=is_error)
    if version not in SUPPORTED_VERSIONS:
        raise PduError(ErrorCode.UNSUPPORTED_PROTOCOL_VERSION, f"protocol version {version}", data,
                       in_error_report=is_error)
    try:
        kind = PduType(ptype)
    except ValueError:
        raise PduError(ErrorCode.UNSUPPORTED_PDU_TYPE, f"PDU type {ptype}", data) from None
    layout = LAYOUTS[kind]
    body_layout = layout.body.get(version)
    if body_layout is None:
        raise PduError(ErrorCode.UNSUPPORTED_PDU_TYPE, f"{kind.name} does not exist in version {version}", data)
    if layout.length is not None:
        if length != layout.length[version]:
            raise PduError(ErrorCode.CORRUPT_DATA, f"{kind.name} v{version} must be {layout.length[version]} "
                           f"bytes, got {length}", data)
    elif length < HEADER.size + body_layout.size:
        raise PduError(ErrorCode.CORRUPT_DATA, f"{kind.name} of {length} bytes is too short", data,
                       in_error_report=is_error)
    body = body_layout.unpack_from(data, HEADER.size)
    return _DECODERS[kind](version, field16, body, data)


def _serial_notify(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    return SerialNotify(v, f16, body[0])


def _serial_query(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    return SerialQuery(v, f16, body[0])


def _reset_query(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    return ResetQuery(v)


def _cache_response(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    return CacheResponse(v, f16)


def _prefix(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    flags, plen, max_len, raw, asn = body
    afi = 4 if len(raw) == 4 else 6
    width = WIDTH[afi]
    if not plen <= max_len <= width:
        raise PduError(ErrorCode.CORRUPT_DATA, f"prefix length {plen}, max length {max_len} (width {width})", data)
    addr = int.from_bytes(raw, "big")
    if not host_bits_clear(afi, addr, plen):
        raise PduError(ErrorCode.CORRUPT_DATA, f"host bits set beyond /{plen}", data)
    return PrefixPdu(v, bool(flags & 1), Vrp(afi, addr, plen, max_len, asn))


def _end_of_data(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    if v == 0:
        return EndOfData(v, f16, body[0])
    serial, refresh, retry, expire = body
    return EndOfData(v, f16, serial, refresh, retry, expire)


def _cache_reset(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    return CacheReset(v)


def _router_key(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    ski, asn = body
    return RouterKey(v, bool((f16 >> 8) & 1), ski, asn, bytes(data[HEADER.size + _ROUTER_KEY.size:]))


def _error_report(v: int, f16: int, body: tuple, data: bytes) -> Pdu:
    (inner_len,) = body
    text_len_at = HEADER.size + _ERROR.size + inner_len
    if text_len_at + 4 > len(data):
        raise PduError(ErrorCode.CORRUPT_DATA, "encapsulated PDU runs past the Error Report", data,
                       in_error_report=True)
    (text_len,) = _ERROR.unpack_from(data, text_len_at)
    if text_len_at + 4 + text_len != len(data):
        raise PduError(ErrorCode.CORRUPT_DATA, "error text length does not match the PDU length", data,
                       in_error_report=True)
    inner = bytes(data[HEADER.size + _ERROR.size:text_len_at])
    # RFC 8210 §5.11: UTF-8; some caches add a trailing NUL. Text is for humans: never fatal.
    text = bytes(data[text_len_at + 4:]).decode("utf-8", "replace").rstrip("\x00")
    return ErrorReport(v, f16, inner, text)


_DECODERS = {
    PduType.SERIAL_NOTIFY: _serial_notify,
    PduType.SERIAL_QUERY: _serial_query,
    PduType.RESET_QUERY: _reset_query,
    PduType.CACHE_RESPONSE: _cache_response,
    PduType.IPV4_PREFIX: _prefix,
    PduType.IPV6_PREFIX: _prefix,
    PduType.END_OF_DATA: _end_of_data,
    PduType.CACHE_RESET: _cache_reset,
    PduType.ROUTER_KEY: _router_key,
    PduType.ERROR_REPORT: _error_report,
}


@dataclass
class Framer:
    """Cuts a byte stream into PDUs by their length field (RFC 8210 §5.1).

    ``feed`` returns decoded PDUs and, for a PDU that does not decode, its :class:`PduError` in
    stream order. After a framing error (a length field that cannot be right) the stream is lost:
    ``broken`` is set and later bytes are ignored.
    """

    buffer: bytearray = field(default_factory=bytearray)
    broken: bool = False

    def feed(self, data: bytes) -> list[Pdu | PduError]:
        if self.broken:
            return []
        self.buffer += data
        out: list[Pdu | PduError] = []
        buf = self.buffer
        pos = 0
        while len(buf) - pos >= HEADER.size:
            length = int.from_bytes(buf[pos + 4:pos + 8], "big")
            if length < HEADER.size or length > MAX_PDU_LEN:
                self.broken = True
                out.append(PduError(ErrorCode.CORRUPT_DATA, f"impossible PDU length {length}",
                                    bytes(buf[pos:pos + min(len(buf) - pos, 64)]),
                                    in_error_report=buf[pos + 1] == PduType.ERROR_REPORT))
                del buf[:]
                return out
            if len(buf) - pos < length:
                break
            try:
                out.append(decode(bytes(buf[pos:pos + length])))
            except PduError as exc:
                out.append(exc)
            pos += length
        del buf[:pos]
        return out
