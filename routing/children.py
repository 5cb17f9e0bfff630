"""Child processes and the line channels they talk on: one supervisor, one channel, for every child.

Theory of operation
-------------------
The daemon runs two kinds of child (ExaBGP with its relay, and the BFD process); both follow the
same rules, so they share this code:

- :class:`ChildSupervisor` starts the child (it dies with us: ``PR_SET_PDEATHSIG``), logs its
  output line by line, and when it exits reports it (``on_exit``) and starts it again after an
  exponential backoff, reset once a child has run for a minute. A dead child never flushes the FIB:
  what it means for routing is the owner's decision, not the supervisor's.
- :class:`LineServer` is the Unix socket (mode 0600) the child connects to. The newest connection is
  the active one (a respawned relay replaces the old). Lines are handed to an async ``on_line`` in
  order: when it waits (flow control), reading stops and the socket fills. The reader yields to the
  loop every ``STEP_BUDGET_S`` of work, so a buffer full of UPDATEs is never one long loop step. A line longer than the
  limit is reported to ``on_bad`` and skipped, never raised into the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
LINE_LIMIT = 1 << 24
#: The stream stops reading the socket beyond twice this much buffered (flow control reaches the relay).
READ_BUFFER = 1 << 20
READ_CHUNK = 1 << 16
STEP_BUDGET_S = 0.002
#: Lines per ``on_lines`` call (~0.1 ms of parsing for a full table's UPDATEs): the step budget is
#: checked between calls. 8 = the ExaBGP speaker's batch (``UpdateBatch.MAX_UPDATES``).
LINES_PER_CALL = 8


def die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_setup(cpus: set[int] | None) -> None:
    """In the forked child: die with us, and run on ``cpus`` (the daemon's own thread may be pinned;
    a child must not inherit that by accident)."""
    die_with_parent()
    if cpus:
        os.sched_setaffinity(0, cpus)


class ChildSupervisor:
    def __init__(
        self,
        name: str,
        argv: Callable[[], Sequence[str]],
        *,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 10.0,
        env: Callable[[], dict[str, str]] | None = None,
        cwd: Path | None = None,
        before_start: Callable[[], None] | None = None,
        on_exit: Callable[[int | None, float], None] | None = None,
        metrics: Any = None,
        log_prefix: str = "",
        cpus: set[int] | None = None,
    ) -> None:
        self.name = name
        self._argv = argv
        self._env = env
        self._cwd = cwd
        self._before_start = before_start
        self._on_exit = on_exit
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.metrics = metrics
        self.log_prefix = log_prefix
        #: CPUs the child runs on (None: whatever the daemon had when it started).
        self.cpus = cpus if cpus is not None else set(os.sched_getaffinity(0))
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.started_at: float | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        p = self.proc
        return p.pid if p is not None and p.returncode is None else None

    def _up(self, value: int) -> None:
        if self.metrics is not None:
            self.metrics.child_up.labels(self.name).set(value)

    async def run(self) -> None:
        backoff = self.backoff_min_s
        while not self._stopping:
            if self._before_start is not None:
                self._before_start()
            env = None if self._env is None else {**os.environ, **self._env()}
            started = time.monotonic()
            self.started_at = started
            self.proc = await asyncio.create_subprocess_exec(
                *self._argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, preexec_fn=partial(_child_setup, self.cpus),
                cwd=None if self._cwd is None else str(self._cwd),
            )
            self._up(1)
            log.info("started %s pid %d", self.name, self.proc.pid)
            assert self.proc.stdout is not None
            async for raw in self.proc.stdout:
                text = raw.decode(errors="replace").rstrip()
                if text:
                    log.info("%s%s", self.log_prefix, text)
            rc = await self.proc.wait()
            ran = time.monotonic() - started
            self._up(0)
            if self._stopping:
                return
            self.restarts += 1
            if self.metrics is not None:
                self.metrics.child_restarts.labels(self.name).inc()
            if ran > 60:
                backoff = self.backoff_min_s
            log.error("%s exited with %s after %.1fs; restarting in %.1fs (FIB kept)", self.name, rc, ran, backoff)
            if self._on_exit is not None:
                self._on_exit(rc, ran)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    async def stop(self) -> None:
        self._stopping = True
        p = self.proc
        if p is not None and p.returncode is None:
            p.terminate()
            try:
                await asyncio.wait_for(p.wait(), 5)
            except TimeoutError:
                p.kill()


class LineServer:
    def __init__(
        self,
        path: Path,
        on_line: Callable[[bytes], Awaitable[None]],
        *,
        on_connect: Callable[[asyncio.StreamWriter], Awaitable[None]] | None = None,
        on_bad: Callable[[str], None] | None = None,
        on_lines: Callable[[list[bytes]], Awaitable[None]] | None = None,
    ) -> None:
        self.path = path
        self._on_line = on_line
        #: Given, it takes the complete lines of a read in runs of up to :data:`LINES_PER_CALL`
        #: instead of ``on_line`` one at a time (the ExaBGP speaker batches UPDATEs: issue 12).
        self._on_lines = on_lines
        self._on_connect = on_connect
        self._on_bad = on_bad
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()
        #: Longest the reader works through buffered lines before it yields to the loop.
        self.step_budget_s = STEP_BUDGET_S
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._conn, path=str(self.path), limit=READ_BUFFER)
        os.chmod(self.path, 0o600)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        old, self.writer = self.writer, writer
        if old is not None:
            old.close()
        self.ready.set()
        try:
            if self._on_connect is not None:
                await self._on_connect(writer)
            slice_start = time.perf_counter()
            parts: list[bytes] = []  # the unfinished last line of what was read so far
            size = 0
            skipping = False  # inside a line longer than LINE_LIMIT: drop it up to its newline
            while True:
                # Chunks, split here: StreamReader.readline() deletes each line from the front of its
                # buffer (a memmove of everything behind it), which costs milliseconds per line once
                # a table's worth of UPDATEs is buffered.
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                if b"\n" not in chunk:
                    if not skipping:
                        parts.append(chunk)
                        size += len(chunk)
                        if size > LINE_LIMIT:
                            if self._on_bad is not None:
                                self._on_bad(f"line longer than {LINE_LIMIT} bytes")
                            parts, size, skipping = [], 0, True
                    continue
                lines = chunk.split(b"\n")
                if skipping:
                    lines[0] = b""
                    skipping = False
                elif parts:
                    lines[0] = b"".join(parts) + lines[0]
                last = lines.pop()
                parts, size = ([last], len(last)) if last else ([], 0)
                if self._on_lines is not None:
                    for i in range(0, len(lines), LINES_PER_CALL):
                        await self._on_lines(lines[i:i + LINES_PER_CALL])
                        if time.perf_counter() - slice_start > self.step_budget_s:  # as below
                            await asyncio.sleep(0)
                            slice_start = time.perf_counter()
                    continue
                for line in lines:
                    if not line:
                        continue
                    await self._on_line(line)
                    # A put() into a queue with room returns without yielding: without this one step
                    # parsed up to a full inbox of UPDATEs (the loop ran 100-680 ms late during an
                    # ingest, the failover lane with it).
                    if time.perf_counter() - slice_start > self.step_budget_s:
                        await asyncio.sleep(0)
                        slice_start = time.perf_counter()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the peer went away, or we are stopping: this connection's task just ends
        finally:
            if self.writer is writer:
                self.writer = None
                self.ready.clear()
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
