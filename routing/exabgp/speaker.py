"""Supervising ExaBGP and talking to it through the relay's Unix socket.

Theory of operation
-------------------
- ExaBGP is a supervised child (:class:`routing.children.ChildSupervisor`): the generated
  configuration is written before each start; when it exits the owner hears
  :class:`routing.core.SpeakerDied` on its urgent lane (routes are kept as stale, the FIB is not
  flushed) and it is started again after an exponential backoff.
- ExaBGP starts the relay (:mod:`routing.exabgp.bridge`), which connects to our socket
  (:class:`routing.children.LineServer`). Each line is parsed here; events go to the routing core's
  inbox with ``await inbox.put`` — **flow control**: while the RIB is behind, this reader waits, the
  socket fills and the relay keeps the backlog (it reports its size as ``RelayStats``, kept in
  :attr:`ExabgpSpeaker.relay_stats`). ExaBGP itself never waits: the relay always drains its stdin.
- Commands: ExaBGP acks each command with ``done``/``error`` but not in command order, so
  :meth:`command` keeps exactly one command in flight (a lock) and the next ack belongs to it. Acks
  travel in the same stream as UPDATEs, so during an ingest an ack can wait behind the backlog: the
  deadline is generous and the caller is a tracked task, never the routing core's owner.
- A reload rewrites the configuration and signals ExaBGP (SIGUSR1, its own reload: only changed
  neighbours are touched), see :meth:`ExabgpSpeaker.reload`.
- Malformed lines are counted (``pop_router_exabgp_malformed_messages_total``) and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routing.children import ChildSupervisor, LineServer
from routing.config import Config
from routing.exabgp import messages
from routing.exabgp.conf import environment, render
from routing.inbox import Inbox

log = logging.getLogger(__name__)

#: Seconds a command may wait for its ack (it can queue behind a table's worth of UPDATEs).
ACK_TIMEOUT_S = 30.0


def exabgp_binary(config: Config) -> str:
    if config.exabgp.binary:
        return str(config.exabgp.binary)
    return str(Path(sys.executable).with_name("exabgp"))


class ExabgpSpeaker:
    def __init__(self, config: Config, run_dir: Path, inbox: Inbox, metrics: Any = None,
                 on_exit: Callable[[int | None, float], None] | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.socket_path = run_dir / "exabgp.sock"
        self.conf_path = run_dir / "exabgp.conf"
        self.inbox = inbox
        self.metrics = metrics
        self.malformed = 0
        self.relay_stats: messages.RelayStats | None = None
        self.child = ChildSupervisor(
            "exabgp", lambda: [exabgp_binary(config), str(self.conf_path)],
            backoff_min_s=config.exabgp.restart_backoff_min_s, backoff_max_s=config.exabgp.restart_backoff_max_s,
            env=lambda: environment(config), cwd=run_dir, before_start=self.write_config, on_exit=on_exit,
            metrics=metrics, log_prefix="exabgp: ",
        )
        self.channel = LineServer(self.socket_path, self._on_line, on_bad=self._malformed)
        self.ack_timeout_s = ACK_TIMEOUT_S
        self._cmd_lock = asyncio.Lock()
        self._ack: asyncio.Future[bool] | None = None

    async def start_server(self) -> None:
        await self.channel.start()

    async def _on_line(self, line: bytes) -> None:
        try:
            ev = messages.parse_line(line)
        except messages.MalformedMessage as exc:
            self._malformed(str(exc))
            return
        if ev is None:
            return
        if isinstance(ev, messages.Ack):
            if self._ack is not None and not self._ack.done():
                self._ack.set_result(ev.ok)
            return
        if isinstance(ev, messages.RelayStats):
            self.relay_stats = ev
            if self.metrics is not None:
                self.metrics.relay_backlog_bytes.set(ev.backlog_bytes)
            return
        await self.inbox.put(ev)

    def _malformed(self, why: str) -> None:
        self.malformed += 1
        if self.metrics is not None:
            self.metrics.api_malformed.inc()
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            log.warning("dropped malformed line from ExaBGP (%d so far): %s", self.malformed, why)

    async def command(self, cmd: str, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - per-command ack deadline
        """Send one command and wait for its ack; True on ``done``."""
        messages.raw(cmd)  # ASCII, single line
        timeout = self.ack_timeout_s if timeout is None else timeout
        async with self._cmd_lock:
            try:
                await asyncio.wait_for(self.channel.ready.wait(), timeout)
            except TimeoutError:
                log.error("no ExaBGP relay connected; dropped command %r", cmd)
                return False
            writer = self.channel.writer
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
        """Write exabgp.conf: it holds customers' TCP-MD5 keys, so 0600 in a 0700 directory.

        mkstemp creates the file 0600 (O_EXCL, never through an existing name) and os.replace
        swaps it in atomically, so ExaBGP never reads half a file and no reader ever sees the keys
        in a wider mode. A directory we create is 0700; an existing one is not changed (it may be
        the parent of a custom ``api.socket``, such as /run itself), only reported if others can
        enter it, since its sockets are reachable between their bind and chmod.
        """
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.run_dir.stat().st_mode & 0o077:
            log.warning("run directory %s is accessible to other users; make it 0700 (the systemd unit's "
                        "RuntimeDirectoryMode does)", self.run_dir)
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, prefix=".exabgp.conf.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(render(self.config, self.socket_path))
            os.replace(tmp, self.conf_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def reload(self, *, signal_reload: bool = True) -> str:
        """Write the (new) configuration and make the running ExaBGP take it.

        ExaBGP 5.0.15's SIGUSR1 re-reads the file and compares each neighbour's definition (static
        routes aside): changed ones are re-opened, new ones added, dropped ones removed, and static
        route changes sent as a delta; untouched sessions stay up (measured against FRR and BIRD in
        tests/integration/test_reload_lab.py). ``signal_reload=False`` restarts the process instead
        (the FIB is kept and routes go stale until the sessions return, as after a crash).
        """
        self.write_config()
        proc = self.child.proc
        if proc is None or proc.returncode is not None:
            return "configuration written (ExaBGP not running: read at its next start)"
        if signal_reload:
            proc.send_signal(signal.SIGUSR1)
            return "reloaded (SIGUSR1)"
        proc.terminate()
        return "restarted (FIB kept, routes stale until the sessions return)"

    async def supervise(self) -> None:
        await self.child.run()

    async def stop(self) -> None:
        await self.child.stop()
        self.channel.close()
