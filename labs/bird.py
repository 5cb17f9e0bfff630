"""What every BIRD that the labs and benchmarks start must have: a log file, and a waker for a feeder.

Why a log file: this machine has no syslog daemon (no ``/dev/log``), so BIRD's ``syslog()`` falls back
to ``/dev/console``, here a 16550 serial port written synchronously at 115,200 baud inside the kernel,
with the CPU held. During the failover soak's Down storms the soak BIRD's log lines held the CPU it
shares with our BFD process for 80-380 ms at a time (bpftrace: ``uart_write`` / ``n_tty_write`` under
the waiting real-time tasks; ``benchmarks/RESULTS.md``, "failover", 2026-12-01), and both sides went
silent.

Why a waker (:class:`FeedWaker`): BIRD before 2.14 (Debian 12 ships 2.0.12) can hold back the last
part of a table it sends for up to 3 s. Its main loop (``sysdep/unix/io.c``, ``io_loop``, v2.0.12
lines 2216-2222) runs the regular events, then at most 10 "work" events, and sleeps in ``poll()`` for
0 ms only if the *regular* list was non-empty when it was run, or the work list is non-empty now;
otherwise for 3,000 ms (less if a timer is due sooner). A channel's initial export is a work event
(``nest/proto.c``, ``channel_feed_loop``: 256 routes a run, ``nest/rt-table.c:2990``) and each run
schedules BGP's transmit event on the *regular* list (``proto/bgp/packets.c:3010``,
``bgp_schedule_packet``, when nothing is waiting in BIRD's own socket buffer). On the run that ends
the feed the work list becomes empty, the regular list was empty when it was looked at, and BIRD
sleeps 3 s with the last UPDATE (the table modulo 256 routes) and the End-of-RIB unsent. Anything
that ends the sleep sends them: data from the peer, a netlink event, a timer, a control-socket
connection. Fixed upstream in 2.14 (commit 6a242b3ec, "IO: Fix race condition in event processing").
Measured here (``benchmarks/RESULTS.md``, "the packed feed's 3 s stall", 2026-12-02): a BGP receiver
that sends nothing after its KEEPALIVE gets the End-of-RIB 3.0 s after Established every time; the
packed 100k case of ``benchmarks/fulltable.py`` showed it in about half the runs, for pop-router and
for ExaBGP alone alike, depending on whether BIRD's socket buffer was still full when its feed ended.
A feeder whose time we measure is therefore woken every :data:`WAKE_INTERVAL_S` through its control
socket (a connection accepted and closed: nothing is logged unless ``debug commands`` is on).
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
from pathlib import Path
from types import TracebackType

#: How often a :class:`FeedWaker` wakes its BIRD: the most a feed's last UPDATE can be held back.
WAKE_INTERVAL_S = 0.02
#: The first BIRD release whose main loop no longer sleeps with an event pending (commit 6a242b3ec).
FIXED_IN = (2, 14)


def logging_to_file(conf: str, log: Path) -> str:
    """``conf`` with every class of BIRD's messages sent to ``log`` instead of syslog."""
    return f'log "{log}" all;\n' + conf


def parse_version(text: str) -> tuple[int, ...] | None:
    """``(2, 0, 12)`` from ``bird --version``'s "BIRD version 2.0.12"; None if there is no version."""
    m = re.search(r"BIRD version (\d+(?:\.\d+)*)", text)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def installed_version(binary: str = "bird") -> tuple[int, ...] | None:
    """The version of the ``bird`` on PATH (it prints it on stderr), None if it cannot be told."""
    try:
        p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(p.stdout + p.stderr)


def holds_back_feed_end(version: tuple[int, ...]) -> bool:
    """Whether this BIRD can sleep 3 s before sending the end of a feed (see the module docstring)."""
    return version < FIXED_IN


class FeedWaker:
    """Wakes a BIRD's main loop every ``interval_s`` by connecting to its control socket, from a thread.

    ``with FeedWaker(ctl):`` or :meth:`start` / :meth:`stop`. A socket that is not there yet (BIRD
    starting) or refuses (BIRD gone) is tried again on the next tick. Harmless on a BIRD that does not
    need it: one accepted and closed CLI connection per tick.
    """

    def __init__(self, ctl: Path, interval_s: float = WAKE_INTERVAL_S) -> None:
        self.ctl = ctl
        self.interval_s = interval_s
        self.wakes = 0  # connections BIRD accepted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"bird-waker {self.ctl.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.ctl))
                self.wakes += 1
            self._stop.wait(self.interval_s)  # the wake-up period itself, not a poll for a state

    def __enter__(self) -> FeedWaker:
        self.start()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
