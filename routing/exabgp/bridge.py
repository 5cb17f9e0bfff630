"""The relay ExaBGP runs as its API process: ``python -m routing.exabgp.bridge SOCKET``.

Theory of operation
-------------------
ExaBGP writes API messages to this process's stdin *synchronously*: if we stop reading, ExaBGP
blocks after ~64 KB and every BGP session's hold timer expires. So the relay never lets stdin wait
on anything: one thread only reads stdin into an in-memory queue; a second thread drains the queue
into the daemon's Unix socket (which may be slow when the RIB is busy); a third copies the daemon's
commands from the socket to stdout for ExaBGP. Memory, not ExaBGP, absorbs a slow daemon.

Flow control: the daemon reads its socket only as fast as its RIB takes events (DESIGN.md, routing
lane), so during a full-table ingest the backlog sits here, as raw bytes (a few hundred bytes per
UPDATE, far less than the parsed events would cost in the daemon). While there is a backlog the
relay adds, at most once a second, a ``{"type": "pop-relay-stats", ...}`` line with its size and
the largest seen, so operators and benchmarks can see where the stream waits.

Commands are checked to be ASCII before they reach ExaBGP: a non-ASCII byte makes ExaBGP kill this
process and drop the chunk it had read, without acks.

When the daemon's socket closes, the relay exits; ExaBGP respawns it and the new one reconnects.
stdin EOF (ExaBGP exiting) ends the relay too. Only the standard library is used: this process is
started by ExaBGP and should start fast.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections import deque


class Relay:
    def __init__(self, sock: socket.socket, stdin: object, stdout: object) -> None:
        self.sock = sock
        self.stdin = stdin
        self.stdout = stdout
        self.queue: deque[bytes] = deque()
        self.cv = threading.Condition()
        self.done = threading.Event()
        self.backlog_bytes = 0
        self.max_backlog_bytes = 0
        self.max_backlog_lines = 0
        self._stats_at = 0.0

    def read_stdin(self) -> None:
        try:
            for line in self.stdin:  # type: ignore[attr-defined]
                with self.cv:
                    self.queue.append(line)
                    self.backlog_bytes += len(line)
                    self.max_backlog_bytes = max(self.max_backlog_bytes, self.backlog_bytes)
                    self.max_backlog_lines = max(self.max_backlog_lines, len(self.queue))
                    self.cv.notify()
        finally:
            self.done.set()
            with self.cv:
                self.cv.notify()

    def to_daemon(self) -> None:
        try:
            while True:
                with self.cv:
                    while not self.queue and not self.done.is_set():
                        self.cv.wait()
                    lines = len(self.queue)
                    # One sendall of at most ~1 MiB: the socket then blocks while the daemon is behind,
                    # and the rest waits here where it is counted.
                    taken: list[bytes] = []
                    size = 0
                    while self.queue and size < (1 << 20):
                        ln = self.queue.popleft()
                        taken.append(ln)
                        size += len(ln)
                    self.backlog_bytes -= size
                    backlog = (lines - len(taken), self.backlog_bytes)
                chunk = b"".join(taken)
                now = time.monotonic()
                if backlog[0] and now - self._stats_at >= 1.0:
                    self._stats_at = now
                    chunk += self.stats_line(*backlog)
                if chunk:
                    self.sock.sendall(chunk)
                elif self.done.is_set():
                    return
        except OSError:
            pass
        finally:
            self.done.set()

    def stats_line(self, lines: int, size: int) -> bytes:
        return (f'{{"type": "pop-relay-stats", "backlog_lines": {lines}, "backlog_bytes": {size}, '
                f'"max_backlog_lines": {self.max_backlog_lines}, "max_backlog_bytes": {self.max_backlog_bytes}}}\n'
                ).encode()

    def from_daemon(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                buf += data
                *lines, buf = buf.split(b"\n")
                out = [ln + b"\n" for ln in lines if ln.strip() and ln.isascii()]
                if out:
                    self.stdout.write(b"".join(out))  # type: ignore[attr-defined]
                    self.stdout.flush()  # type: ignore[attr-defined]
        except OSError:
            pass
        finally:
            self.done.set()
            with self.cv:
                self.cv.notify()


def connect(path: str, timeout_s: float = 30.0) -> socket.socket:
    deadline = time.monotonic() + timeout_s
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the daemon is still starting its listener


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m routing.exabgp.bridge SOCKET", file=sys.stderr)
        return 2
    sock = connect(argv[0])
    try:
        sock.sendall(f"# relay pid {os.getpid()}\n".encode())
    except OSError:
        os._exit(0)  # the daemon went away already; ExaBGP respawns us and the next one reconnects
    relay = Relay(sock, sys.stdin.buffer, sys.stdout.buffer)
    threads = [threading.Thread(target=f, daemon=True) for f in (relay.read_stdin, relay.to_daemon, relay.from_daemon)]
    for t in threads:
        t.start()
    relay.done.wait()
    threads[1].join(timeout=2.0)  # flush what stdin delivered before EOF
    # The stdin thread may be blocked in read(); a normal interpreter shutdown would abort on its
    # buffer lock, so leave at once.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
