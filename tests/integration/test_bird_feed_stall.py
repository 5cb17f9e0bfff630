"""BIRD 2.0.12 holds the end of a table back for 3 s unless woken; the benchmarks' FeedWaker wakes it.

The cause of the ~1.5 s "stall of the packed feed's last UPDATE" of ``benchmarks/fulltable.py --cases
packed`` (``benchmarks/RESULTS.md``, 2026-12-02): BIRD's main loop before 2.14 sleeps 3 s in ``poll()``
after the work event that ends a channel's feed has scheduled BGP's transmit event (``labs/bird.py``).
Here a BIRD feeder exports 300 routes (two feed runs of 256 and 44) to a minimal BGP receiver written
here, which sends OPEN and KEEPALIVE and then nothing, so nothing else wakes BIRD: IPv6 is off in both
namespaces (link-local addresses finishing DAD would wake its netlink socket) and the session opens
after BIRD has settled. Without the waker the End-of-RIB comes 3 s after Established (BIRD < 2.14
only); with it, at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.netns import netns
from labs.bird import FeedWaker, holds_back_feed_end, installed_version, logging_to_file

from .netns import sh, unique_prefix

ROUTES = 300  # two feed runs: BIRD exports 256 routes per run (nest/rt-table.c, rt_feed_channel)
SETTLE_S = 1.5  # BIRD's start-up netlink events and timers are over by then (measured: ~1 s)


def bird_conf(log: Path) -> str:
    routes = "\n".join(f"  route 20.0.{i >> 8}.{i & 255}/32 unreachable;" for i in range(ROUTES))
    return logging_to_file(f"""router id 10.255.0.2;
protocol device {{}}
protocol static s4 {{ ipv4;
{routes}
}}
protocol bgp pop {{ local 10.0.1.2 as 64512; neighbor 10.0.1.1 as 65000; passive;
  ipv4 {{ import none; export where source = RTS_STATIC; }}; }}
""", log)


@pytest.fixture
def feeder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(receiver namespace, BIRD's control socket): BIRD in its own namespace, passive on 10.0.1.2."""
    if not installed_version():
        pytest.fail("bird is not installed (make deps)")
    a, b = unique_prefix("fsa"), unique_prefix("fsb")
    pidfile = tmp_path / "bird.pid"
    created: list[str] = []
    try:
        for ns in (a, b):
            sh("ip", "netns", "add", ns)
            created.append(ns)
            sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        sh("ip", "link", "add", "v0", "netns", a, "type", "veth", "peer", "name", "v1", "netns", b)
        for ns, dev, addr in ((a, "v0", "10.0.1.1/30"), (b, "v1", "10.0.1.2/30")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        conf = tmp_path / "bird.conf"
        conf.write_text(bird_conf(tmp_path / "bird.log"))
        ctl = tmp_path / "bird.ctl"
        sh("bird", "-c", str(conf), "-s", str(ctl), "-P", str(pidfile), ns=b)
        time.sleep(SETTLE_S)  # poll: BIRD's start-up wake-ups pass; the session must be all it hears
        yield a, ctl
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def message(kind: int, body: bytes = b"") -> bytes:
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body


def receive_table(ns: str) -> tuple[float, int]:
    """Open a session to BIRD, send nothing after our KEEPALIVE: (s from Established to End-of-RIB, prefixes)."""
    with netns(ns):
        s = socket.create_connection(("10.0.1.2", 179), timeout=10)
    with s:
        caps = bytes([2, 6, 1, 4, 0, 1, 0, 1]) + bytes([2, 6, 65, 4, 0, 0, 0xFD, 0xE8])  # IPv4 unicast, AS 65000
        s.sendall(message(1, struct.pack("!BHH4sB", 4, 65000, 90, socket.inet_aton("192.0.2.1"), len(caps)) + caps))
        buf = b""

        def read() -> bytes:
            nonlocal buf
            while True:
                if len(buf) >= 19 and len(buf) >= (n := struct.unpack("!H", buf[16:18])[0]):
                    m, buf = buf[:n], buf[n:]
                    return m
                data = s.recv(65536)
                assert data, "BIRD closed the session"
                buf += data

        assert read()[18] == 1, "no OPEN from BIRD"
        s.sendall(message(4))
        up = None
        prefixes = 0
        while True:
            m = read()
            if m[18] == 4 and up is None:
                up = time.monotonic()  # BIRD's KEEPALIVE: Established
            elif m[18] == 2 and len(m) == 23:  # an empty UPDATE: End-of-RIB
                assert up is not None
                return time.monotonic() - up, prefixes
            elif m[18] == 2:
                withdrawn = struct.unpack("!H", m[19:21])[0]
                attrs = struct.unpack("!H", m[21 + withdrawn:23 + withdrawn])[0]
                prefixes += (len(m) - 23 - withdrawn - attrs) // 5  # /32s: 1 + 4 bytes each


def test_bird_holds_the_end_of_its_feed_back_without_a_waker(feeder: tuple[str, Path]) -> None:
    version = installed_version()
    if version is None or not holds_back_feed_end(version):
        pytest.skip(f"BIRD {version} has the fix (2.14, commit 6a242b3ec)")
    ns, _ctl = feeder
    seconds, prefixes = receive_table(ns)
    assert prefixes == ROUTES
    assert seconds >= 2.5, f"End-of-RIB {seconds:.2f} s after Established: BIRD's 3 s sleep did not happen"


def test_the_waker_gets_the_whole_feed_at_once(feeder: tuple[str, Path]) -> None:
    ns, ctl = feeder
    with FeedWaker(ctl) as waker:
        seconds, prefixes = receive_table(ns)
    assert prefixes == ROUTES
    assert waker.wakes > 0
    assert seconds < 1.0, f"End-of-RIB {seconds:.2f} s after Established, woken every 20 ms"
