"""The relay ExaBGP runs as its API process: ``python -I -S .../routing/exabgp/bridge.py SOCKET``
(``python -m routing.exabgp.bridge SOCKET`` works too).

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
the largest seen, and one more when it has drained, so operators and benchmarks can see where the
stream waits and how far it got.

stdin is read in chunks of whatever the pipe holds (up to :data:`READ_CHUNK`), cut at the last
newline, not line by line: the relay forwards bytes unchanged and the daemon splits lines itself, so
per-line work here only cost CPU (a lock, a deque append and a wake-up of the sender per UPDATE: a
quarter of a million of each for a full table at 4 prefixes per UPDATE) and memory (a bytes object
and a deque slot, ~40 bytes, per queued line). Chunks end on a line boundary so the stats line is
never spliced into one of ExaBGP's lines.

Compressed backlog: once more than :data:`COMPRESS_ABOVE` bytes wait, further input is gathered into
blocks of :data:`COMPRESS_BLOCK` and kept zlib-compressed (level 1) until sent. ExaBGP's JSON shrinks
~8-10x, and this backlog is what the PoP holds for a full table while the RIB catches up: 143 MB of a
1.4 GB peak at one 1M-prefix session, ~0.5 GB with three (``benchmarks/RESULTS.md``, issue 12). Below
the threshold nothing changes (no latency is added to a session's first UPDATEs); above it, the daemon
is behind by seconds anyway, so a block waiting to fill costs nothing it would notice. When the
sender is idle it takes the partial block as it is, so no line waits for a block to fill. zlib runs
outside the lock and releases the GIL, so the stdin reader still never waits on the daemon.

Commands are checked to be ASCII before they reach ExaBGP: a non-ASCII byte makes ExaBGP kill this
process and drop the chunk it had read, without acks.

When the daemon's socket closes, the relay exits; ExaBGP respawns it and the new one reconnects.
stdin EOF (ExaBGP exiting) ends the relay too. Only the standard library is used: this process is
started by ExaBGP, should start fast and small, and runs as a script without ``site``.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import zlib
from collections import deque

#: Most bytes taken from stdin in one read (a pipe holds 64 KiB unless ExaBGP enlarged it).
READ_CHUNK = 1 << 18
#: Backlog (uncompressed bytes) above which new input is kept compressed. 1 MiB: at 8 MiB (and
#: 1 MiB blocks) the relay's peak at a 1M-prefix session was 25 MB, at 1 MiB (256 KiB blocks) 18-19
#: MB, for ~0.5 s more CPU per table (2026-12-02).
COMPRESS_ABOVE = 1 << 20
#: Uncompressed bytes per compressed block.
COMPRESS_BLOCK = 256 << 10


class Relay:
    def __init__(self, sock: socket.socket, stdin: object, stdout: object) -> None:
        self.sock = sock
        self.stdin = stdin
        self.stdout = stdout
        #: Whole lines from stdin, oldest first: (bytes, lines, uncompressed size, compressed?).
        self.queue: deque[tuple[bytes, int, int, bool]] = deque()
        #: The newest lines, not queued yet: a block being gathered for compression.
        self.stage = bytearray()
        self.stage_lines = 0
        self.cv = threading.Condition()
        self.done = threading.Event()
        #: Uncompressed bytes and lines waiting (queue and stage), what the stats line reports.
        self.backlog_bytes = 0
        self.backlog_lines = 0
        #: Bytes the backlog actually occupies (compressed blocks at their compressed size).
        self.stored_bytes = 0
        self.max_backlog_bytes = 0
        self.max_backlog_lines = 0
        self.max_stored_bytes = 0
        self._stats_at = 0.0
        self._reported_backlog = False

    def _enqueue(self, chunk: bytes) -> None:
        """Reader thread: queue whole lines, or gather them into a block to compress (module docstring)."""
        lines = chunk.count(b"\n") or 1
        block = b""
        with self.cv:
            self.backlog_bytes += len(chunk)
            self.backlog_lines += lines
            self.max_backlog_bytes = max(self.max_backlog_bytes, self.backlog_bytes)
            self.max_backlog_lines = max(self.max_backlog_lines, self.backlog_lines)
            if self.backlog_bytes <= COMPRESS_ABOVE and not self.stage:
                self.queue.append((chunk, lines, len(chunk), False))
                self.stored_bytes += len(chunk)
            else:
                self.stage += chunk
                self.stage_lines += lines
                self.stored_bytes += len(chunk)
                if len(self.stage) >= COMPRESS_BLOCK:
                    block, lines = bytes(self.stage), self.stage_lines
                    self.stage.clear()
                    self.stage_lines = 0
            self.max_stored_bytes = max(self.max_stored_bytes, self.stored_bytes)
            self.cv.notify()
        if block:
            # Outside the lock (zlib releases the GIL): the sender keeps draining older entries. Only
            # this thread adds to the queue, so the block still lands behind everything older.
            packed = zlib.compress(block, 1)
            with self.cv:
                self.queue.append((packed, lines, len(block), True))
                self.stored_bytes -= len(block) - len(packed)
                self.cv.notify()

    def read_stdin(self) -> None:
        read = getattr(self.stdin, "read1", None) or self.stdin.read  # type: ignore[attr-defined]
        partial = b""
        try:
            while True:
                data = read(READ_CHUNK)
                if not data:
                    break
                cut = data.rfind(b"\n")
                if cut < 0:
                    partial += data  # no line ends in this read yet
                    continue
                self._enqueue(partial + data[:cut + 1] if partial else data[:cut + 1])
                partial = data[cut + 1:]
            if partial:
                self._enqueue(partial)  # a last line without its newline (ExaBGP always ends lines)
        except (OSError, ValueError):
            pass  # stdin closed under us: same as EOF
        finally:
            self.done.set()
            with self.cv:
                self.cv.notify()

    def to_daemon(self) -> None:
        try:
            while True:
                with self.cv:
                    while not self.queue and not self.stage and not self.done.is_set():
                        self.cv.wait()
                    # One sendall of at most ~1 MiB: the socket then blocks while the daemon is behind,
                    # and the rest waits here where it is counted.
                    taken: list[tuple[bytes, bool]] = []
                    size = 0
                    while self.queue and size < (1 << 20):
                        data, lines, raw, packed = self.queue.popleft()
                        taken.append((data, packed))
                        size += raw
                        self.backlog_lines -= lines
                        self.stored_bytes -= len(data)
                    if not self.queue and self.stage and size < (1 << 20):
                        # Nothing older waits: the partial block goes now, uncompressed.
                        taken.append((bytes(self.stage), False))
                        size += len(self.stage)
                        self.backlog_lines -= self.stage_lines
                        self.stored_bytes -= len(self.stage)
                        self.stage.clear()
                        self.stage_lines = 0
                    self.backlog_bytes -= size
                    backlog = (self.backlog_lines, self.backlog_bytes)
                chunk = b"".join(zlib.decompress(d) if packed else d for d, packed in taken)
                now = time.monotonic()
                if backlog[0] and now - self._stats_at >= 1.0:
                    self._stats_at = now
                    self._reported_backlog = True
                    chunk += self.stats_line(*backlog)
                elif not backlog[0] and self._reported_backlog:
                    # Drained: one last report, so the peak is known even when it built and drained
                    # within the second after the previous report.
                    self._reported_backlog = False
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
                f'"max_backlog_lines": {self.max_backlog_lines}, "max_backlog_bytes": {self.max_backlog_bytes}, '
                f'"stored_bytes": {self.stored_bytes}, "max_stored_bytes": {self.max_stored_bytes}}}\n').encode()

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
