"""Packets captured from BIRD 2.0.12 (each authentication type) and FRR 8.4 bfdd in the pop-bfd lab.

Our decoder and verifier must accept the peers' real packets with the configured secret and refuse
them with any other: these are the interop vectors for every auth type.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bfd.auth import AuthConfig, AuthState
from bfd.packet import AuthType, DropReason, State, decode

FIX = Path(__file__).parent / "fixtures"

BIRD = [
    ("simple", AuthType.SIMPLE, 1, b"s1mple"),
    ("keyed_md5", AuthType.KEYED_MD5, 2, b"md5secret"),
    ("meticulous_keyed_md5", AuthType.METICULOUS_KEYED_MD5, 3, b"metmd5"),
    ("keyed_sha1", AuthType.KEYED_SHA1, 4, b"sha1secret"),
    ("meticulous_keyed_sha1", AuthType.METICULOUS_KEYED_SHA1, 5, b"metsha1"),
]


@pytest.mark.parametrize(("name", "atype", "key_id", "secret"), BIRD, ids=[b[0] for b in BIRD])
def test_bird_packet_verifies(name: str, atype: AuthType, key_id: int, secret: bytes) -> None:
    raw = (FIX / f"bfd_bird_{name}.bin").read_bytes()
    p = decode(raw)
    assert p.state == State.UP and p.auth is not None
    assert (p.auth.type, p.auth.key_id) == (atype, key_id)
    assert AuthState(AuthConfig(atype, key_id, secret)).verify(raw, p, p.detect_mult) is None
    assert AuthState(AuthConfig(atype, key_id, secret + b"x")).verify(raw, p, p.detect_mult) == DropReason.AUTH_FAILED
    if atype in (AuthType.METICULOUS_KEYED_MD5, AuthType.METICULOUS_KEYED_SHA1):
        st = AuthState(AuthConfig(atype, key_id, secret))
        assert st.verify(raw, p, p.detect_mult) is None
        assert st.verify(raw, p, p.detect_mult) == DropReason.AUTH_SEQUENCE  # a replayed capture


def test_frr_packet_decodes() -> None:
    p = decode((FIX / "bfd_frr_noauth.bin").read_bytes())
    assert p.state == State.UP and p.auth is None
    assert (p.desired_min_tx_us, p.required_min_rx_us, p.detect_mult) == (40_000, 50_000, 3)
