"""BFD authentication (RFC 5880 §6.7): signing, verification and sequence-number state.

Theory of operation
-------------------
- Simple password (§6.7.2): the key id and password must match exactly.
- Keyed / meticulous keyed MD5 (§6.7.3) and SHA1 (§6.7.4): the digest is computed over the whole
  packet with the secret (zero-padded to 16 / 20 bytes) in the digest field. ``hmac.compare_digest``
  keeps verification constant-time.
- Sequence numbers: once a sequence number is known (``seq_known``), a keyed packet must carry a
  number in ``[last, last + 3 * detect_mult]`` and a meticulous one in
  ``[last + 1, last + 3 * detect_mult]``, modulo 2^32; a replayed meticulous packet therefore fails.
  ``seq_known`` is cleared by the session when nothing has been received for twice the detection
  time (§6.8.1 bfd.AuthSeqKnown).
- Transmit: meticulous types increment the sequence number on every packet; keyed types keep it
  constant (allowed by §6.7.3, and what keeps a lossy path from exhausting the receive window).

Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from bfd.packet import DIGEST_LEN, Auth, AuthType, ControlPacket, DropReason, encode

METICULOUS = {AuthType.METICULOUS_KEYED_MD5, AuthType.METICULOUS_KEYED_SHA1}
_HASH = {AuthType.KEYED_MD5: hashlib.md5, AuthType.METICULOUS_KEYED_MD5: hashlib.md5,
         AuthType.KEYED_SHA1: hashlib.sha1, AuthType.METICULOUS_KEYED_SHA1: hashlib.sha1}


@dataclass(frozen=True, slots=True)
class AuthConfig:
    type: AuthType
    key_id: int
    secret: bytes

    def __post_init__(self) -> None:
        limit = 16 if self.type in (AuthType.SIMPLE, AuthType.KEYED_MD5, AuthType.METICULOUS_KEYED_MD5) else 20
        if not 1 <= len(self.secret) <= limit:
            raise ValueError(f"{self.type.name} secret must be 1..{limit} bytes")
        if not 0 <= self.key_id <= 255:
            raise ValueError("key_id must be 0..255")


def _digest(t: AuthType, packet_with_key: bytes) -> bytes:
    return _HASH[t](packet_with_key).digest()


def sign(packet: ControlPacket, cfg: AuthConfig, sequence: int) -> bytes:
    """Encode ``packet`` with the authentication section ``cfg`` asks for."""
    if cfg.type == AuthType.SIMPLE:
        return encode(packet.with_auth(Auth(cfg.type, cfg.key_id, cfg.secret)))
    n = DIGEST_LEN[cfg.type]
    with_key = encode(packet.with_auth(Auth(cfg.type, cfg.key_id, cfg.secret.ljust(n, b"\0"), sequence)))
    digest = _digest(cfg.type, with_key)
    return with_key[:-n] + digest


@dataclass(slots=True)
class AuthState:
    cfg: AuthConfig
    xmit_seq: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    rcv_seq: int = 0
    seq_known: bool = False

    def next_tx_sequence(self) -> int:
        if self.cfg.type in METICULOUS:
            self.xmit_seq = (self.xmit_seq + 1) & 0xFFFFFFFF
        return self.xmit_seq

    def verify(self, raw: bytes, packet: ControlPacket, detect_mult: int) -> DropReason | None:
        """Check a received packet (``raw`` is the datagram up to the length field); None if valid."""
        a = packet.auth
        if a is None:
            return DropReason.AUTH_MISSING
        cfg = self.cfg
        if a.type != cfg.type or a.key_id != cfg.key_id:
            return DropReason.AUTH_FAILED
        if cfg.type == AuthType.SIMPLE:
            return None if hmac.compare_digest(a.data, cfg.secret) else DropReason.AUTH_FAILED
        n = DIGEST_LEN[cfg.type]
        if self.seq_known:
            lo = self.rcv_seq + (1 if cfg.type in METICULOUS else 0)
            if ((a.sequence - lo) & 0xFFFFFFFF) > ((self.rcv_seq + 3 * detect_mult - lo) & 0xFFFFFFFF):
                return DropReason.AUTH_SEQUENCE
        body = raw[: len(raw) - n] + cfg.secret.ljust(n, b"\0")
        if not hmac.compare_digest(_digest(cfg.type, body), a.data):
            return DropReason.AUTH_FAILED
        self.rcv_seq = a.sequence
        self.seq_known = True
        return None
