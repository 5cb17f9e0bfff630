"""BFD codec: round trips, every stateless reception check, arbitrary bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bfd.packet import (
    FLAG_A,
    FLAG_M,
    HEADER,
    Auth,
    AuthType,
    ControlPacket,
    DecodeError,
    Diag,
    DropReason,
    State,
    decode,
    encode,
)

BASE = ControlPacket(State.DOWN, Diag.NONE, 3, 0x11223344, 0, 1_000_000, 10_000)


def raw(vers: int = 1, diag: int = 0, state: int = 1, flags: int = 0, mult: int = 3, length: int = 24,
        my: int = 1, your: int = 0, extra: bytes = b"") -> bytes:
    return HEADER.pack((vers << 5) | diag, (state << 6) | flags, mult, length, my, your, 1000, 1000, 0) + extra


def test_encode_layout() -> None:
    b = encode(ControlPacket(State.UP, Diag.CONTROL_DETECTION_TIME_EXPIRED, 3, 1, 2, 10_000, 20_000, poll=True))
    assert b.hex() == "2" + "1" + "e0" + "03" + "18" + "00000001" + "00000002" + "00002710" + "00004e20" + "00000000"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x20\x40\x03", DropReason.TRUNCATED),
        (raw(vers=0), DropReason.BAD_VERSION),
        (raw(vers=2), DropReason.BAD_VERSION),
        (raw(length=23), DropReason.BAD_LENGTH),
        (raw(length=40), DropReason.BAD_LENGTH),  # longer than the datagram
        (raw(flags=FLAG_A, length=25, extra=b"\x01"), DropReason.BAD_LENGTH),  # A bit needs >= 26
        (raw(mult=0), DropReason.DETECT_MULT_ZERO),
        (raw(flags=FLAG_M), DropReason.MULTIPOINT),
        (raw(my=0), DropReason.MY_DISCRIMINATOR_ZERO),
        (raw(state=2, your=0), DropReason.YOUR_DISCRIMINATOR_ZERO),  # Init without Your Discriminator
        (raw(state=3, your=0), DropReason.YOUR_DISCRIMINATOR_ZERO),
        (raw(flags=FLAG_A, length=28, extra=b"\x09\x04\x01\x61"), DropReason.BAD_AUTH_SECTION),  # type 9
        (raw(flags=FLAG_A, length=27, extra=b"\x01\x03\x01"), DropReason.BAD_AUTH_SECTION),  # empty password
        (raw(flags=FLAG_A, length=30, extra=b"\x02\x06\x01\x00\x00\x00"), DropReason.BAD_AUTH_SECTION),
    ],
)
def test_reception_checks(data: bytes, reason: DropReason) -> None:
    with pytest.raises(DecodeError) as e:
        decode(data)
    assert e.value.reason is reason


def test_down_and_admin_down_without_your_discriminator_are_valid() -> None:
    assert decode(raw(state=1, your=0)).state is State.DOWN
    assert decode(raw(state=0, your=0)).state is State.ADMIN_DOWN


def test_trailing_bytes_beyond_length_are_ignored() -> None:
    assert decode(raw(extra=b"\xff" * 8)).my_discriminator == 1


packets = st.builds(
    ControlPacket,
    state=st.sampled_from(State), diag=st.sampled_from(Diag), detect_mult=st.integers(1, 255),
    my_discriminator=st.integers(1, 2**32 - 1), your_discriminator=st.integers(1, 2**32 - 1),
    desired_min_tx_us=st.integers(0, 2**32 - 1), required_min_rx_us=st.integers(0, 2**32 - 1),
    required_min_echo_rx_us=st.integers(0, 2**32 - 1), poll=st.booleans(), final=st.booleans(),
    cpi=st.booleans(), demand=st.booleans(),
    auth=st.none()
    | st.builds(Auth, st.just(AuthType.SIMPLE), st.integers(0, 255), st.binary(min_size=1, max_size=16))
    | st.builds(Auth, st.sampled_from([AuthType.KEYED_MD5, AuthType.METICULOUS_KEYED_MD5]), st.integers(0, 255),
                st.binary(min_size=16, max_size=16), st.integers(0, 2**32 - 1))
    | st.builds(Auth, st.sampled_from([AuthType.KEYED_SHA1, AuthType.METICULOUS_KEYED_SHA1]), st.integers(0, 255),
                st.binary(min_size=20, max_size=20), st.integers(0, 2**32 - 1)),
)


@given(packets)
def test_round_trip(p: ControlPacket) -> None:
    assert decode(encode(p)) == p


@given(st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_typed_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass


@given(st.binary(min_size=24, max_size=60), st.integers(0, 255))
def test_mutated_valid_headers_decode_or_typed_error(tail: bytes, flags: int) -> None:
    data = bytes([0x20, flags, 3, len(tail)]) + tail
    try:
        decode(data)
    except DecodeError:
        pass
