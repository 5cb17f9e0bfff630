"""Supervising the pool of ExaBGP processes and talking to each through its relay's Unix socket.

Theory of operation
-------------------
- The pool (:class:`SpeakerPool`) runs ``exabgp.processes`` speakers; which customer lives where is
  the pure :mod:`routing.exabgp.pool`. Each speaker ``exabgp-N`` has its own generated
  ``exabgp-N.conf`` (0600, only its customers' neighbours), its own relay socket ``exabgp-N.sock``
  and its own supervisor (``pop_router_child_*{child="exabgp-N"}``). Every speaker's stream feeds the
  same inbox; each reader is flow-controlled on its own. One process dying is one
  ``SpeakerDied(N)``: only its customers' sessions go stale.
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
  neighbours are touched), see :meth:`ExabgpSpeaker.reload`; the pool signals only the processes
  whose text changed (:meth:`SpeakerPool.reload`). A customer that moves to another process (the
  count changed) is dropped by one process and added by the other: its sessions are reset (its routes
  stay, stale, until the new sessions' End-of-RIB). While it moves, the old process's last words
  about it ("down") are dropped here (:attr:`ExabgpSpeaker.foreign`), so they cannot end the session
  the new process has just opened.
- Malformed lines are counted (``pop_router_exabgp_malformed_messages_total``) and dropped.
- With ``exabgp.lean_reactor`` (the default) ExaBGP is started as ``<its Python> lean_reactor.py
  exabgp-N.conf`` (:mod:`routing.exabgp.lean_reactor`: a reactor pass visits only the sessions with
  something to do); its Python is read from the ``#!`` line of the console script
  :func:`exabgp_binary` chose (:func:`script_python`). It reports whether it patched ExaBGP, and its
  pass counts, in ``exabgp-N.lean.json`` (removed before each start), shown by ``show status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.model import IPAddress
from routing.children import ChildSupervisor, LineServer
from routing.config import Config
from routing.exabgp import messages, wire
from routing.exabgp.conf import environment, lean_environment, render
from routing.exabgp.pool import BACKBONE, peer_processes, process_count, process_customers
from routing.inbox import Inbox

log = logging.getLogger(__name__)

#: Seconds a command may wait for its ack (it can queue behind a table's worth of UPDATEs).
ACK_TIMEOUT_S = 30.0
#: The launcher that starts ExaBGP with the lean reactor pass (a script: see its docstring).
LEAN_LAUNCHER = Path(__file__).resolve().with_name("lean_reactor.py")


def exabgp_binary(config: Config) -> tuple[str, str]:
    """(executable, why): the configured binary, or ExaBGP under PyPy or CPython (``exabgp.interpreter``).

    PyPy runs ExaBGP's parser and JSON encoder ~3x faster than CPython on a full table (issue 12), so
    ``auto`` prefers it; it is a separate interpreter with its own ExaBGP install, hence a separate
    executable (``exabgp-pypy``, a link into ``.venv-pypy`` made by ``make deps``) rather than a flag.
    """
    if config.exabgp.binary:
        return str(config.exabgp.binary), "exabgp.binary"
    here = Path(sys.executable)
    pypy, cpython = here.with_name("exabgp-pypy"), here.with_name("exabgp")
    choice = config.exabgp.interpreter
    if choice == "cpython":
        return str(cpython), "CPython (exabgp.interpreter: cpython)"
    if pypy.exists() and os.access(pypy, os.X_OK):
        return str(pypy), f"PyPy ({pypy})"
    if choice == "pypy":
        raise FileNotFoundError(f"exabgp.interpreter is pypy but {pypy} is missing: install Debian's pypy3 and "
                                "pypy3-venv, then run make deps")
    return str(cpython), f"CPython: no {pypy.name} next to {here} (Debian's pypy3 + make deps install it)"


def script_python(script: str | Path) -> str | None:
    """The Python interpreter named by ``script``'s ``#!`` line (an ExaBGP console script), or None.

    Why: the lean reactor launcher must run under the interpreter that has ExaBGP installed (PyPy's
    venv or ours), and the console script pip wrote says which. A ``#!`` that is not an absolute path
    to a Python (a shell wrapper, ``/usr/bin/env``, pip's ``/bin/sh`` form for long paths) gives None.
    """
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    python = Path(words[0])
    if not python.is_absolute() or not ("python" in python.name or "pypy" in python.name):
        return None
    return str(python) if os.access(python, os.X_OK) else None


class ExabgpSpeaker:
    """One ExaBGP process of the pool (``index``), holding the sessions of ``customers`` (None: all)."""

    def __init__(self, config: Config, run_dir: Path, inbox: Inbox, metrics: Any = None,
                 on_exit: Callable[[int | None, float], None] | None = None, *, index: int = 0,
                 customers: frozenset[str] | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.index = index
        self.name = f"exabgp-{index}"
        self.customers = customers
        #: Configured sessions held by *other* processes: their events from this one are stale news.
        self.foreign: frozenset[IPAddress] = frozenset()
        self.foreign_dropped = 0
        self.socket_path = run_dir / f"{self.name}.sock"
        self.conf_path = run_dir / f"{self.name}.conf"
        self.lean_stats_path = run_dir / f"{self.name}.lean.json"
        #: Why the lean reactor is not used for this start (None: the launcher runs ExaBGP).
        self.lean_off: str | None = None
        self.inbox = inbox
        self.metrics = metrics
        self.malformed = 0
        #: Malformed UPDATEs the daemon decoded (raw UPDATEs, RFC 7606), by action.
        self.update_errors = {"treat_as_withdraw": 0, "session_reset": 0}
        #: Sessions asked to reset over a malformed UPDATE: their UPDATEs are dropped until ExaBGP
        #: reports a state change for them (RFC 7606 session reset: nothing after the bad one counts).
        self.resetting: set[IPAddress] = set()
        self._reset_tasks: set[asyncio.Task[bool]] = set()
        self.relay_stats: messages.RelayStats | None = None
        self.child = ChildSupervisor(
            self.name, self._argv,
            backoff_min_s=config.exabgp.restart_backoff_min_s, backoff_max_s=config.exabgp.restart_backoff_max_s,
            env=self._environment, cwd=run_dir, before_start=self._before_start, on_exit=on_exit,
            metrics=metrics, log_prefix=f"{self.name}: ",
        )
        if metrics is not None:
            metrics.child_restarts.labels(self.name)  # at 0 from the start (see routing/metrics.py)
        self.channel = LineServer(self.socket_path, self._on_line, on_bad=self._malformed, on_lines=self._on_lines)
        self.ack_timeout_s = ACK_TIMEOUT_S
        self._cmd_lock = asyncio.Lock()
        self._ack: asyncio.Future[bool] | None = None
        #: Which interpreter runs this process and why (``show status``), set at each start.
        self.runs_on: str | None = None

    def _binary(self) -> str:
        binary, why = exabgp_binary(self.config)
        if why != self.runs_on:
            log.info("%s: ExaBGP runs on %s", self.name, why)
            self.runs_on = why
        return binary

    def _argv(self) -> list[str]:
        """ExaBGP's command line: through the lean reactor launcher when configured and possible."""
        binary = self._binary()
        lean_off = None
        if not self.config.exabgp.lean_reactor:
            lean_off = "off in the configuration (exabgp.lean_reactor)"
        else:
            python = script_python(binary)
            if python is not None:
                self.lean_off = None
                return [python, str(LEAN_LAUNCHER), str(self.conf_path)]
            lean_off = f"{binary} is not a Python console script: ExaBGP runs unpatched"
        if lean_off != self.lean_off:
            log.info("%s: lean reactor not used: %s", self.name, lean_off)
        self.lean_off = lean_off
        return [binary, str(self.conf_path)]

    def _environment(self) -> dict[str, str]:
        env = environment(self.config)
        if self.config.exabgp.lean_reactor:
            env.update(lean_environment(self.config, self.lean_stats_path))
        return env

    def _before_start(self) -> None:
        self.write_config()
        with contextlib.suppress(FileNotFoundError):
            self.lean_stats_path.unlink()  # a report from the previous process is not this one's

    def lean_reactor(self) -> dict[str, Any] | None:
        """The launcher's report (active or not and why, passes by kind), None before it wrote one."""
        if self.lean_off is not None:
            return {"active": False, "reason": self.lean_off}
        try:
            return json.loads(self.lean_stats_path.read_text())
        except (OSError, ValueError):
            return None

    async def start_server(self) -> None:
        await self.channel.start()

    async def _on_line(self, line: bytes) -> None:
        ev = self._parse(line)
        if ev is not None:
            await self._dispatch(ev)

    def _parse(self, line: bytes) -> messages.Event | None:
        """One line -> its event; malformed lines and UPDATEs are counted and dealt with here."""
        try:
            return messages.parse_line(line)
        except messages.MalformedMessage as exc:
            self._malformed(str(exc))
        except wire.TreatAsWithdraw as exc:
            self._update_error(exc, "treat_as_withdraw")
            return exc.event
        except wire.SessionReset as exc:  # with TreatAsWithdraw, all that wire.parse_update raises
            self._update_error(exc, "session_reset")
            self._reset(exc)
        return None

    def _update_error(self, exc: wire.UpdateError, action: str) -> None:
        self.update_errors[action] += 1
        if self.metrics is not None:
            self.metrics.update_errors.labels(str(exc.peer), action).inc()
        count = sum(self.update_errors.values())
        if count <= 10 or count % 1000 == 0:
            log.warning("%s: malformed UPDATE from %s (%d so far), %s: %s", self.name, exc.peer, count,
                        action.replace("_", "-"), exc.why)

    def _reset(self, exc: wire.SessionReset) -> None:
        peer = exc.peer
        if peer is None or peer in self.resetting:
            return
        self.resetting.add(peer)
        task = asyncio.get_running_loop().create_task(self.command(messages.update_error(peer, exc.subcode)))
        self._reset_tasks.add(task)
        task.add_done_callback(self._reset_tasks.discard)

    async def _on_lines(self, lines: list[bytes]) -> None:
        """Lines of one read, in order: runs of consecutive UPDATEs of one peer go to the routing core
        as one :class:`~routing.exabgp.messages.UpdateBatch` (issue 12), everything else one event
        at a time, as :meth:`_on_line` does. A big UPDATE (one the core applies in slices) or any
        other event ends a run, so nothing is reordered."""
        parse, update = self._parse, messages.UpdateEvent
        max_prefixes, max_updates = messages.UpdateBatch.MAX_PREFIXES, messages.UpdateBatch.MAX_UPDATES
        run: list[messages.UpdateEvent] = []
        resetting = self.resetting
        for line in lines:
            ev = parse(line)
            if ev is None:
                continue
            if resetting and type(ev) is update and ev.peer in resetting:  # type: ignore[union-attr]
                continue
            if (type(ev) is update and len(ev.announce) + len(ev.withdraw) <= max_prefixes  # type: ignore[union-attr]
                    and ev.peer not in self.foreign):  # type: ignore[union-attr]
                if run and (ev.peer != run[0].peer or len(run) >= max_updates):  # type: ignore[union-attr]
                    await self._put_run(run)
                    run = []
                run.append(ev)  # type: ignore[arg-type]
                continue
            if run:
                await self._put_run(run)
                run = []
            await self._dispatch(ev)
        if run:
            await self._put_run(run)

    async def _put_run(self, run: list[messages.UpdateEvent]) -> None:
        await self.inbox.put(run[0] if len(run) == 1 else messages.UpdateBatch(run[0].peer, tuple(run)))

    async def _dispatch(self, ev: object) -> None:
        peer = getattr(ev, "peer", None)
        if peer is not None and peer in self.foreign:
            self.foreign_dropped += 1
            log.info("%s: dropped %s about %s, now held by another process", self.name, type(ev).__name__, peer)
            return
        if self.resetting:
            if isinstance(ev, messages.StateEvent):
                self.resetting.discard(ev.peer)
            elif isinstance(ev, messages.UpdateEvent) and ev.peer in self.resetting:
                return
        if isinstance(ev, messages.Ack):
            if self._ack is not None and not self._ack.done():
                self._ack.set_result(ev.ok)
            return
        if isinstance(ev, messages.RelayStats):
            self.relay_stats = ev
            if self.metrics is not None:
                self.metrics.relay_backlog_bytes.labels(self.name).set(ev.backlog_bytes)
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
                f.write(self.render())
            os.replace(tmp, self.conf_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def render(self, config: Config | None = None) -> str:
        """This process's configuration text (``config``: another configuration, for comparison)."""
        return render(config or self.config, self.socket_path, customers=self.customers)

    @property
    def peers(self) -> list[IPAddress]:
        """The session addresses this process holds."""
        out = [p.address for c, p in self.config.peers() if self.customers is None or c.name in self.customers]
        if self.customers is None or BACKBONE in self.customers:
            out += [p.address for p in self.config.backbone.peers]
        return out

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


class SpeakerPool:
    """The ExaBGP processes and which session each holds; commands go to the holder of their peer.

    ``on_died(index, returncode)`` is called when process ``index`` exits (the daemon posts
    :class:`routing.core.SpeakerDied`). Processes are added and removed only by :meth:`reload`.
    """

    def __init__(self, config: Config, run_dir: Path, inbox: Inbox, metrics: Any = None,
                 on_died: Callable[[int, int | None], None] | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.inbox = inbox
        self.metrics = metrics
        self._on_died = on_died
        self._ack_timeout_s = ACK_TIMEOUT_S
        self.count = process_count(config)
        #: Session address -> process index.
        self.assignment: dict[IPAddress, int] = peer_processes(config, self.count)
        self.speakers = [self._make(config, i, self.count) for i in range(self.count)]
        self._set_foreign()
        self._tg: asyncio.TaskGroup | None = None

    def _make(self, config: Config, index: int, count: int) -> ExabgpSpeaker:
        customers = process_customers(config, count, index)

        def died(rc: int | None, _ran: float) -> None:
            if self._on_died is not None:
                self._on_died(index, rc)

        s = ExabgpSpeaker(config, self.run_dir, self.inbox, self.metrics, on_exit=died, index=index,
                          customers=customers)
        s.ack_timeout_s = self._ack_timeout_s
        return s

    def _set_foreign(self) -> None:
        for s in self.speakers:
            s.foreign = frozenset(a for a, i in self.assignment.items() if i != s.index)

    @property
    def ack_timeout_s(self) -> float:
        return self._ack_timeout_s

    @ack_timeout_s.setter
    def ack_timeout_s(self, value: float) -> None:
        self._ack_timeout_s = value
        for s in self.speakers:
            s.ack_timeout_s = value

    def speaker_for(self, peer: IPAddress | None) -> ExabgpSpeaker:
        """The process holding ``peer`` (an unknown peer, or None: process 0)."""
        i = self.assignment.get(peer, 0) if peer is not None else 0
        return self.speakers[i] if i < len(self.speakers) else self.speakers[0]

    async def command(self, peer: IPAddress | None, cmd: str) -> bool:
        """Send ``cmd`` to the process holding ``peer`` and wait for its ack."""
        return await self.speaker_for(peer).command(cmd)

    async def start_servers(self) -> None:
        for s in self.speakers:
            await s.start_server()

    async def supervise(self) -> None:
        """Run every process (and those a reload adds) until stopped."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for s in self.speakers:
                tg.create_task(s.supervise(), name=s.name)

    async def reload(self, new: Config, *, signal_reload: bool = True) -> dict[str, str]:
        """Take ``new``: only processes whose generated text changes are rewritten and signalled.

        When the process count changes, added processes start with their customers, removed ones
        stop, and customers whose index changed are dropped by one process and added by the other
        (their sessions reset). Returns process name -> what was done.
        """
        count = process_count(new)
        old_speakers = self.speakers
        self.config, self.count = new, count
        self.assignment = peer_processes(new, count)
        result: dict[str, str] = {}
        kept: list[ExabgpSpeaker] = []
        added: list[ExabgpSpeaker] = []
        for i in range(count):
            customers = process_customers(new, count, i)
            if i < len(old_speakers):
                s = old_speakers[i]
                before = s.render()
                s.config, s.customers = new, customers
                kept.append(s)
                if s.render() != before:
                    result[s.name] = "pending"
            else:
                added.append(self._make(new, i, count))
        removed = old_speakers[count:]
        self.speakers = kept + added
        self._set_foreign()
        for s in removed:
            s.foreign = frozenset(self.assignment)  # every session is elsewhere now
        # Removed processes first: their customers' sessions close before the new holders open them.
        for s in removed:
            await s.stop()
            result[s.name] = "stopped (its customers moved to other processes)"
        for s in kept:
            if s.name in result:
                result[s.name] = s.reload(signal_reload=signal_reload)
        for s in added:
            await s.start_server()
            if self._tg is not None:
                self._tg.create_task(s.supervise(), name=s.name)
            result[s.name] = "started"
        return result

    async def stop(self) -> None:
        for s in self.speakers:
            await s.stop()
