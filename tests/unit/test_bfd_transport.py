"""The transport's receive path without sockets: demultiplexing and GTSM hold on the fast path too."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from bfd.packet import ControlPacket, Diag, State, encode
from bfd.session import SessionConfig, SessionKey
from bfd.transport import Transport

MS = 1000


def _anc(ttl: int, stamp: float) -> list[tuple[int, int, bytes]]:
    return [(socket.SOL_SOCKET, 35, struct.pack("=qq", int(stamp), int(stamp % 1 * 1e9))),
            (socket.IPPROTO_IP, 8, bytes(8) + socket.inet_aton("10.0.0.1")),
            (socket.IPPROTO_IP, 2, struct.pack("=i", ttl))]


async def test_steady_packets_skip_decoding_but_not_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    t = Transport(lambda *a: None)
    monkeypatch.setattr(t, "_rx_socket", lambda fam, multihop: None)
    monkeypatch.setattr(t, "_tx_socket", lambda key, fam, interface: None)
    key = SessionKey("10.0.0.2", "10.0.0.1", "", False)
    s = t.add(key, SessionConfig(7, 10 * MS, 10 * MS, 3), interface=None, min_ttl=255)
    try:
        def rx(p: ControlPacket, ttl: int = 255, src: str = "10.0.0.2") -> None:
            t._receive(encode(p), _anc(ttl, time.time()), (src, 49152), False)

        rx(ControlPacket(State.DOWN, Diag.NONE, 3, 99, 0, 10 * MS, 10 * MS))  # by address: no Your Discriminator
        rx(ControlPacket(State.UP, Diag.NONE, 3, 99, 7, 10 * MS, 10 * MS, final=True))
        assert s.state == State.UP
        steady = ControlPacket(State.UP, Diag.NONE, 3, 99, 7, 10 * MS, 10 * MS)
        rx(steady)
        assert s._steady_raw == encode(steady)
        decoded = []
        orig = s.on_packet
        monkeypatch.setattr(s, "on_packet", lambda *a, **k: decoded.append(1) or orig(*a, **k))
        n = s.rx_packets
        rx(steady)
        assert s.rx_packets == n + 1 and not decoded  # the fast path
        rx(steady, ttl=254)  # RFC 5881 GTSM: dropped, fast path or not
        rx(steady, src="10.0.0.3")  # another source with our discriminator: no session (§6.3)
        assert s.rx_packets == n + 1 and t.dropped["ttl"] == 1 and t.dropped["no_session"] == 1
        assert s.last_arrival is not None and s.detect_deadline == s.last_arrival + 0.030
    finally:
        t.remove(key)
        t.close()
