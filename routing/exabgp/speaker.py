"""Supervising ExaBGP and talking to it through the relay's Unix socket.

Theory of operation
-------------------
- :meth:`ExabgpSpeaker.supervise` writes the generated configuration, starts ExaBGP as a child (it
  dies with us: ``PR_SET_PDEATHSIG``), logs its output, and when it exits reports
  :class:`ChildExited` to the daemon and starts it again after an exponential backoff
  (``exabgp.restart_backoff_min_s`` doubling up to ``..._max_s``; reset once a child has run for a
  minute). The daemon keeps the FIB: a dead speaker is not a dead network.
- ExaBGP starts the relay (:mod:`routing.exabgp.bridge`), which connects to our socket. The newest
  relay connection is the active one. Its reader never waits on the daemon: each line is parsed and
  put on an unbounded queue, so ExaBGP's synchronous writes never stall.
- Commands: ExaBGP acks each command with ``done``/``error`` but not in command order, so
  :meth:`command` keeps exactly one command in flight (a lock) and the next ack belongs to it.
  A command that gets no ack within its timeout fails (the relay may have been respawned).
- Malformed lines are counted (``pop_router_exabgp_malformed_messages_total``) and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from routing.config import Config
from routing.exabgp import messages
from routing.exabgp.conf import environment, render

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ChildExited:
    returncode: int | None
    ran_s: float


@dataclass(frozen=True, slots=True)
class RelayConnected:
    pass


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def exabgp_binary(config: Config) -> str:
    if config.exabgp.binary:
        return str(config.exabgp.binary)
    return str(Path(sys.executable).with_name("exabgp"))


class ExabgpSpeaker:
    def __init__(self, config: Config, run_dir: Path, events: asyncio.Queue, metrics: object | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.socket_path = run_dir / "exabgp.sock"
        self.conf_path = run_dir / "exabgp.conf"
        self.events = events
        self.metrics = metrics
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.malformed = 0
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.base_events.Server | None = None
        self._cmd_lock = asyncio.Lock()
        self._ack: asyncio.Future[bool] | None = None
        self._relay_ready = asyncio.Event()
        self._stopping = False

    # --- relay socket ------------------------------------------------------------------------------
    async def start_server(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._on_relay, path=str(self.socket_path), limit=1 << 24)
        os.chmod(self.socket_path, 0o600)

    async def _on_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        old, self._writer = self._writer, writer
        if old is not None:
            old.close()
        self._relay_ready.set()
        self.events.put_nowait(RelayConnected())
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    self._malformed("line longer than 16 MiB")
                    continue
                if not line:
                    break
                try:
                    ev = messages.parse_line(line)
                except messages.MalformedMessage as exc:
                    self._malformed(str(exc))
                    continue
                if ev is None:
                    continue
                if isinstance(ev, messages.Ack):
                    if self._ack is not None and not self._ack.done():
                        self._ack.set_result(ev.ok)
                    continue
                self.events.put_nowait(ev)
        finally:
            if self._writer is writer:
                self._writer = None
                self._relay_ready.clear()
            writer.close()

    def _malformed(self, why: str) -> None:
        self.malformed += 1
        if self.metrics is not None:
            self.metrics.api_malformed.inc()  # type: ignore[attr-defined]
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            log.warning("dropped malformed line from ExaBGP (%d so far): %s", self.malformed, why)

    async def command(self, cmd: str, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - per-command ack deadline
        """Send one command and wait for its ack; True on ``done``."""
        messages.raw(cmd)  # ASCII, single line
        async with self._cmd_lock:
            try:
                await asyncio.wait_for(self._relay_ready.wait(), timeout)
            except TimeoutError:
                log.error("no ExaBGP relay connected; dropped command %r", cmd)
                return False
            writer = self._writer
            if writer is None:
                return False
            self._ack = asyncio.get_running_loop().create_future()
            writer.write(cmd.encode() + b"\n")
            await writer.drain()
            try:
                ok = await asyncio.wait_for(self._ack, timeout)
            except TimeoutError:
                log.error("ExaBGP did not acknowledge %r within %.0fs", cmd, timeout)
                return False
            finally:
                self._ack = None
            if not ok:
                log.error("ExaBGP refused command %r", cmd)
            return ok

    # --- child process -----------------------------------------------------------------------------
    def write_config(self) -> None:
        self.conf_path.write_text(render(self.config, self.socket_path))

    async def supervise(self) -> None:
        backoff = self.config.exabgp.restart_backoff_min_s
        while not self._stopping:
            self.write_config()
            env = {**os.environ, **environment(self.config)}
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                exabgp_binary(self.config), str(self.conf_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env=env, preexec_fn=_die_with_parent, cwd=str(self.run_dir),
            )
            if self.metrics is not None:
                self.metrics.child_up.labels("exabgp").set(1)  # type: ignore[attr-defined]
            log.info("started ExaBGP pid %d", self.proc.pid)
            assert self.proc.stdout is not None
            async for raw in self.proc.stdout:
                text = raw.decode(errors="replace").rstrip()
                if text:
                    log.info("exabgp: %s", text)
            rc = await self.proc.wait()
            ran = time.monotonic() - started
            if self.metrics is not None:
                self.metrics.child_up.labels("exabgp").set(0)  # type: ignore[attr-defined]
            if self._stopping:
                return
            self.restarts += 1
            if self.metrics is not None:
                self.metrics.child_restarts.labels("exabgp").inc()  # type: ignore[attr-defined]
            if ran > 60:
                backoff = self.config.exabgp.restart_backoff_min_s
            log.error("ExaBGP exited with %s after %.1fs; restarting in %.1fs (FIB kept)", rc, ran, backoff)
            self.events.put_nowait(ChildExited(rc, ran))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.exabgp.restart_backoff_max_s)

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
        if self._server is not None:
            self._server.close()
