"""labs/bird.py: telling a BIRD that holds the end of a feed back, and the waker that prevents it."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from labs.bird import FeedWaker, holds_back_feed_end, parse_version


@pytest.mark.parametrize(("text", "version"), [
    ("BIRD version 2.0.12\n", (2, 0, 12)),
    ("BIRD version 2.14\n", (2, 14)),
    ("BIRD version 3.0.1\n", (3, 0, 1)),
    ("bird: command not found", None),
])
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize(("version", "held"), [
    ((2, 0, 12), True),   # Debian 12's: sysdep/unix/io.c io_loop before commit 6a242b3ec
    ((2, 13, 1), True),
    ((2, 14), False),     # the first release with the fix
    ((2, 15, 1), False),
    ((3, 0), False),
])
def test_holds_back_feed_end(version: tuple[int, ...], held: bool) -> None:
    assert holds_back_feed_end(version) is held


def test_waker_connects_every_interval_until_stopped(tmp_path: Path) -> None:
    """Each tick is one connection to the control socket (what ends BIRD's poll()); none after stop."""
    ctl = tmp_path / "bird.ctl"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(ctl))
    server.listen(64)
    accepted = 0
    done = threading.Event()

    def accept() -> None:
        nonlocal accepted
        server.settimeout(0.05)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()
            accepted += 1

    t = threading.Thread(target=accept)
    t.start()
    try:
        with FeedWaker(ctl, interval_s=0.01) as waker:
            deadline = time.monotonic() + 2
            while waker.wakes < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # poll: the waker runs in its own thread
            assert waker.wakes >= 3, "the waker did not connect three times in 2 s"
        after = waker.wakes
        time.sleep(0.05)  # poll: a window in which a stopped waker must stay quiet
        assert waker.wakes == after
    finally:
        done.set()
        t.join()
        server.close()
    assert accepted >= 3


def test_waker_survives_a_missing_socket(tmp_path: Path) -> None:
    """Before BIRD creates its control socket (or after it is gone) the waker keeps trying, quietly."""
    waker = FeedWaker(tmp_path / "absent.ctl", interval_s=0.005)
    waker.start()
    time.sleep(0.05)  # poll: a window in which it fails a few times
    waker.stop()
    assert waker.wakes == 0
    waker.stop()  # stopping twice is harmless
