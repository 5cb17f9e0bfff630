"""The BFD process: ``python -m bfd.process SOCKET [--realtime PRIO]``.

Theory of operation
-------------------
BFD runs in its own process (like FRR's bfdd) because a full-table ingest keeps the routing loop
busy for seconds, and a BFD packet that leaves late makes the *peer* declare us dead. It can run
``SCHED_FIFO`` (``bfd.realtime_priority``) so even a busy machine schedules it first.

Protocol with the daemon, JSON lines over a Unix socket (the daemon listens, we connect):

- daemon -> us: ``{"op": "sessions", "sessions": [SPEC, ...]}`` — the complete desired set. We add
  what is new, remove what is gone and change timers in place (a Poll Sequence). The daemon sends it
  again after every (re)connect, so session requests survive a restart of this process.
- daemon -> us: ``{"op": "repair", "version", "plans": {peer: {"netlink": hex, "maps": [[path,
  key hex, value hex]...]}}}`` — local repair plans (:mod:`bfd.repair`): per peer, the group
  rewrites to apply ourselves when that session goes from Up to Down (kernel, and the XDP groups map
  when XDP is on); an empty plan removes one. A plan is used once.
- us -> daemon: ``{"event": "state", "peer", "local", "multihop", "old", "new", "diag", "at"}`` on
  every transition, ``at`` being CLOCK_MONOTONIC when it was detected (with ``local_repair``: the
  number of group rewrites already on their way to the kernel); after a local repair
  ``{"event": "repair", "peer", "version", "at", "done_at", "messages", "errors"}``; and once a second
  ``{"event": "stats", ...}`` with every session's state, negotiated timers and counters.

Attribution (issue 9). A transition out of Up also carries, so that every Down says whose it was:
``cause`` (detection | peer_signaled | admin), ``blame`` (host | us | peer_or_path | admin, see
:func:`blame`), ``host_steal_ms`` (the most a CPU of ours lost to the hypervisor in the detection
window, ``bfd/steal.py``), ``rx_gap_ms`` (last packet's arrival -> detection), ``max_rx_gap_ms`` (largest
receive gap of the previous 10 s), ``max_tx_gap_ms`` (largest gap in what we sent within the peer's
detection window, up to the arrival of its Down; ``max_tx_gap_read_ms`` and ``blame_by_read_time``:
the same up to when we read it, the rule before 2026-12-01), ``detect_time_ms``,
``peer_detect_time_ms``, ``remote_diag``, ``tx_late`` (that session's), ``loop_lag_ms`` and
``timer_lag_ms`` (this process's worst scheduling lateness
over the previous 10 s: a sampler that wakes every 20 ms, and the BFD timer itself). The stats carry
per session ``max_rx_gap_ms``/``max_tx_gap_ms`` (rolling 10 s), ``worst_rx_gap_ms``/
``worst_tx_gap_ms`` (since the session was created), ``tx_late``, ``last_down`` and ``downs`` (the
last few Down reports, so a poller that misses a flap still attributes it), and for the process
``loop_lag_ms``/``loop_lag_worst_ms``, ``timer_lag_ms``/``timer_lag_worst_ms``, and the
transport's ``timer_wakeups``/``reader_wakeups`` counters (how well its batching works, issue 9).

If the daemon goes away we exit; it restarts us.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from bfd.auth import AuthConfig
from bfd.gaps import GAP_WINDOW_S, RollingMax
from bfd.packet import AuthType, State
from bfd.repair import LocalRepair, RepairResult, route_socket
from bfd.session import BfdSession, DownReport, SessionConfig, SessionKey, StateChanged
from bfd.steal import StealClock
from bfd.transport import Transport, interfaces_by_address
from common.cpus import pin_thread

log = logging.getLogger("bfd")

AUTH_TYPES = {
    "simple": AuthType.SIMPLE, "keyed-md5": AuthType.KEYED_MD5, "meticulous-keyed-md5": AuthType.METICULOUS_KEYED_MD5,
    "keyed-sha1": AuthType.KEYED_SHA1, "meticulous-keyed-sha1": AuthType.METICULOUS_KEYED_SHA1,
}


#: How often the loop-lag sampler wakes; its lateness is this process's scheduling stall.
LOOP_LAG_PERIOD_S = 0.02
#: Least time between two snapshots sent because of transitions (the events themselves go at once).
#: 0.05 s made a Down storm cost a snapshot of every session 20 times a second: building and sending
#: them was 9.5 % of this process's samples in a 50-customer storm (py-spy, 2026-12-01).
STATS_MIN_GAP_S = 0.25
#: Down reports kept per session in the stats.
DOWNS_KEPT = 8


def _ms(s: float | None) -> float | None:
    return None if s is None else round(s * 1000, 3)


def detection_window(r: DownReport) -> float:
    """The window that expired: ours for our detection, the peer's when it signalled the Down."""
    return r.detect_time_s if r.cause == "detection" else r.peer_detect_time_s


def blame(r: DownReport, host_steal_s: float | None = None) -> str:
    """Whose fault a Down was. The host's, first, when the hypervisor took a CPU of ours for half
    the detection window or more (``bfd/steal.py``: neither end could run). Our detection: the peer's
    packets stopped arriving in our kernel (arrival times, so a stall of ours cannot fake it) — the
    peer or the path. The peer's signal: us if we left a gap in what we sent as long as its
    detection time, else the peer or the path."""
    if r.cause == "admin" or r.remote_diag.name == "ADMINISTRATIVELY_DOWN":
        return "admin"
    window = detection_window(r)
    if host_steal_s is not None and window and host_steal_s >= window / 2:
        return "host"
    return "us" if r.we_were_late() else "peer_or_path"


class NonBlockingLogHandler(logging.Handler):
    """Log lines to a pipe without ever blocking the loop: the daemon reads our stdout on its own
    loop, which a full-table ingest keeps busy for seconds, and a blocking write to a full pipe
    (64 KiB: a few hundred lines during a storm of transitions) would freeze every BFD timer and
    cause the very Downs being logged. A line that does not fit is dropped and counted."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.dropped = 0
        os.set_blocking(fd, False)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode(errors="replace")
        except Exception:  # a bad format argument must not reach the loop
            self.handleError(record)
            return
        try:
            n = os.write(self.fd, data)
        except (BlockingIOError, BrokenPipeError):
            self.dropped += 1
            return
        if n < len(data):  # a partial line: finish it if the pipe takes it now, else end it
            try:
                os.write(self.fd, data[n:])
            except (BlockingIOError, BrokenPipeError):
                self.dropped += 1
                with contextlib.suppress(OSError):
                    os.write(self.fd, b"\n")


class LoopLagSampler:
    """Wakes every ``period_s`` on the loop and records how late it ran (rolling maximum)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period_s: float = LOOP_LAG_PERIOD_S) -> None:
        self.loop = loop
        self.period_s = period_s
        self.lag = RollingMax(GAP_WINDOW_S)
        self.steal = StealClock()
        self._due = loop.time() + period_s
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self.lag.add(now, max(0.0, now - self._due))
        self.steal.sample(now)
        self._due = now + self.period_s
        self._handle = self.loop.call_at(self._due, self._tick)

    def current(self, now: float) -> float:
        """The rolling maximum, or the stall still in progress if larger: when a stall ends, the
        socket's packets are handled before this sampler's overdue tick (asyncio runs I/O callbacks
        before due timers), so a Down caused by the stall would otherwise not see it."""
        return max(self.lag.max(now), now - self._due)

    def close(self) -> None:
        self._handle.cancel()


def _log_dropped() -> int:
    return sum(h.dropped for h in logging.getLogger().handlers if isinstance(h, NonBlockingLogHandler))


def _key(spec: dict) -> SessionKey:
    return SessionKey(spec["peer"], spec["local"], "", bool(spec.get("multihop")))


def _cfg(spec: dict, discr: int) -> SessionConfig:
    auth = None
    if spec.get("auth"):
        a = spec["auth"]
        auth = AuthConfig(AUTH_TYPES[a["type"]], int(a.get("key_id", 1)), str(a["secret"]).encode())
    return SessionConfig(discr, int(spec["tx_ms"]) * 1000, int(spec["rx_ms"]) * 1000, int(spec["mult"]), auth)


class BfdProcess:
    def __init__(self, writer: asyncio.StreamWriter,
                 open_socket: Callable[[], socket.socket] | None = None) -> None:
        self.writer = writer
        self.transport = Transport(self._on_state)
        self.specs: dict[SessionKey, dict] = {}
        self._next_discr = int.from_bytes(os.urandom(4), "big") | 1
        self._stats_pending = False
        self._last_snapshot = 0.0
        self.sampler = LoopLagSampler(self.transport.loop)
        self.downs: dict[SessionKey, deque[dict[str, Any]]] = {}
        self._log_q: list[tuple[int, str, tuple[object, ...]]] = []
        loop = self.transport.loop
        self.repair = LocalRepair(lambda r: loop.call_soon_threadsafe(self._repair_done, r), open_socket=open_socket)

    def _discr(self) -> int:
        self._next_discr = (self._next_discr + 1) & 0xFFFFFFFF or 1
        return self._next_discr

    def _send(self, doc: dict) -> None:
        self.writer.write(orjson.dumps(doc) + b"\n")

    def down_doc(self, r: DownReport, at: float) -> dict[str, Any]:
        """The attribution keys of a transition out of Up (see the module docstring)."""
        steal = self.sampler.steal.stolen_s(at - (detection_window(r) or 0.0) - LOOP_LAG_PERIOD_S, at)
        # The same rule applied to the send gap counted up to when we read the peer's Down (the rule
        # before 2026-12-01), so a benchmark can compare without a second copy of blame().
        read = r if r.max_tx_gap_read_s is None else dataclasses.replace(r, max_tx_gap_s=r.max_tx_gap_read_s)
        return {
            "cause": r.cause, "blame": blame(r, steal), "blame_by_read_time": blame(read, steal),
            "host_steal_ms": _ms(steal),
            "rx_gap_ms": _ms(r.rx_gap_s), "max_rx_gap_ms": _ms(r.max_rx_gap_s),
            "max_tx_gap_ms": _ms(r.max_tx_gap_s),
            "max_tx_gap_read_ms": _ms(read.max_tx_gap_s),
            "detect_time_ms": _ms(r.detect_time_s),
            "peer_detect_time_ms": _ms(r.peer_detect_time_s), "remote_diag": r.remote_diag.name.lower(),
            "tx_late": r.tx_late, "loop_lag_ms": _ms(self.sampler.current(at)),
            "timer_lag_ms": _ms(self.transport.timer_lag_now(at)),
        }

    def _on_state(self, key: SessionKey, s: BfdSession, ch: StateChanged) -> None:
        # Traffic first: the local repair plan (bfd/repair.py) leaves for the kernel before anything
        # else is done about this transition, even before the daemon hears of it.
        repair = self.repair.trigger(key.peer, ch.at) if ch.old == State.UP and ch.new == State.DOWN else 0
        doc: dict[str, Any] = {"event": "state", "peer": key.peer, "local": key.local, "multihop": key.multihop,
                               "old": ch.old.name.lower(), "new": ch.new.name.lower(), "diag": ch.diag.name.lower(),
                               "at": ch.at}
        if repair:
            doc["local_repair"] = repair
        if ch.report is not None:
            extra = self.down_doc(ch.report, ch.at)
            doc.update(extra)
            self.downs.setdefault(key, deque(maxlen=DOWNS_KEPT)).append({"at": ch.at, "diag": doc["diag"], **extra})
            self._log_later(
                logging.WARNING, "%s: %s -> %s (%s) blame=%s rx_gap=%sms max_rx_gap=%sms max_tx_gap=%sms "
                "peer_detect=%sms remote_diag=%s loop_lag=%sms timer_lag=%sms host_steal=%sms", key.peer,
                ch.old.name, ch.new.name, ch.diag.name, extra["blame"], extra["rx_gap_ms"], extra["max_rx_gap_ms"],
                extra["max_tx_gap_ms"], extra["peer_detect_time_ms"], extra["remote_diag"],
                extra["loop_lag_ms"], extra["timer_lag_ms"], extra["host_steal_ms"])
        else:
            self._log_later(logging.INFO, "%s: %s -> %s (%s)", key.peer, ch.old.name, ch.new.name, ch.diag.name)
        self._send(doc)
        # A fresh snapshot right after a transition, so `show bfd` never lags a state change.
        # At most one such snapshot per STATS_MIN_GAP_S: a storm of transitions (every session at
        # once) must not turn into a snapshot of every session per transition.
        if not self._stats_pending:
            self._stats_pending = True
            loop = self.transport.loop
            loop.call_at(max(loop.time(), self._last_snapshot + STATS_MIN_GAP_S), self._send_stats_now)

    def _log_later(self, level: int, msg: str, *args: object) -> None:
        """Log once the loop's current pass is over. A transition arrives in the middle of one (a
        read batch or a timer pass), and formatting and writing a line costs ~50 µs: in a storm of
        50 transitions in one batch that was milliseconds of every other session's sends waiting."""
        self._log_q.append((level, msg, args))
        if len(self._log_q) == 1:
            self.transport.loop.call_soon(self._flush_logs)

    def _flush_logs(self) -> None:
        q, self._log_q = self._log_q, []
        for level, msg, args in q:
            log.log(level, msg, *args)

    def _repair_done(self, r: RepairResult) -> None:
        ms = (r.done_at - r.detected_at) * 1000
        if r.errors:
            log.error("%s: local repair: %d of %d group rewrites refused (%s), %.1f ms after detection; the "
                      "daemon's failover lane redoes them", r.peer, len(r.errors), r.messages,
                      ", ".join(f"{os.strerror(e)}" for e in sorted(set(r.errors.values()))), ms)
        else:
            log.info("%s: local repair: %d groups rewritten %.1f ms after detection", r.peer, r.messages, ms)
        if r.map_errors:
            log.error("%s: local repair: %d of %d XDP group writes failed", r.peer, r.map_errors, r.map_writes)
        self._send({"event": "repair", "peer": r.peer, "version": r.version, "at": r.detected_at,
                    "done_at": r.done_at, "messages": r.messages, "errors": len(r.errors),
                    "map_writes": r.map_writes, "map_errors": r.map_errors})

    def _send_stats_now(self) -> None:
        self._stats_pending = False
        self._last_snapshot = self.transport.loop.time()
        self._send(self.stats())

    def set_sessions(self, specs: list[dict]) -> None:
        wanted = {_key(s): s for s in specs}
        ifnames: dict[str, str] | None = None  # one dump of the addresses for the whole batch
        for key in list(self.specs):
            if key not in wanted:
                self.transport.remove(key)
                del self.specs[key]
        for key, spec in wanted.items():
            old = self.specs.get(key)
            if old is None:
                iface = spec.get("interface")
                if not iface and not key.multihop:
                    if ifnames is None:
                        ifnames = interfaces_by_address()
                    iface = ifnames.get(key.local)
                try:
                    self.transport.add(key, _cfg(spec, self._discr()), interface=iface,
                                       min_ttl=int(spec.get("min_ttl", 255)) if key.multihop else 255)
                except OSError as exc:
                    log.error("cannot create BFD session to %s: %s", key.peer, exc)
                    continue
            elif old != spec:
                e = self.transport.entries.get(key)
                if e is not None and (old.get("auth") != spec.get("auth") or old.get("mult") != spec.get("mult")):
                    self.transport.remove(key)
                    self.transport.add(key, _cfg(spec, self._discr()), interface=e.interface, min_ttl=e.min_ttl)
                elif e is not None:
                    e.session.set_timers(int(spec["tx_ms"]) * 1000, int(spec["rx_ms"]) * 1000)
            self.specs[key] = spec

    def stats(self) -> dict[str, Any]:
        now = self.transport.loop.time()
        sessions = []
        for key, e in self.transport.entries.items():
            s = e.session
            sessions.append({
                "peer": key.peer, "local": key.local, "multihop": key.multihop, "interface": e.interface,
                "state": s.state.name.lower(), "remote_state": s.remote_state.name.lower(),
                "local_diag": s.local_diag.name.lower(), "remote_diag": s.remote_diag.name.lower(),
                "local_discriminator": s.cfg.local_discriminator, "remote_discriminator": s.remote_discr,
                "tx_interval_ms": s.tx_interval_us() / 1000,
                "rx_interval_ms": max(s.required_min_rx_us, s.remote_desired_tx_us) / 1000,
                "detect_mult": s.cfg.detect_mult, "remote_detect_mult": s.remote_detect_mult,
                "detect_time_ms": s.detection_time_us() / 1000,
                "uptime_s": round(now - s.up_since, 3) if s.up_since is not None and s.state == State.UP else 0,
                "flaps": s.flaps, "last_down_diag": s.last_down_diag.name.lower(),
                "tx_packets": s.tx_packets, "rx_packets": s.rx_packets,
                "max_rx_gap_ms": _ms(s.rx_gaps.max(now)), "max_tx_gap_ms": _ms(s.tx_gaps.max(now)),
                "worst_rx_gap_ms": _ms(s.rx_gaps.worst), "worst_tx_gap_ms": _ms(s.tx_gaps.worst),
                "tx_late": s.tx_late,
                "last_down": (list(self.downs[key])[-1] if self.downs.get(key) else None),
                "downs": list(self.downs.get(key, ())),
                "auth": self.specs.get(key, {}).get("auth", {}).get("type") if self.specs.get(key, {}).get("auth")
                else None,
            })
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"event": "stats", "sessions": sessions, "rx_dropped": dict(self.transport.dropped),
                "tx_late": self.transport.tx_late, "tx_errors": self.transport.tx_errors,
                "cpu_s": ru.ru_utime + ru.ru_stime, "pid": os.getpid(),
                "gap_window_s": GAP_WINDOW_S, "log_lines_dropped": _log_dropped(),
                "loop_lag_ms": _ms(self.sampler.lag.max(now)), "loop_lag_worst_ms": _ms(self.sampler.lag.worst),
                "timer_lag_ms": _ms(self.transport.timer_lag.max(now)),
                "timer_lag_worst_ms": _ms(self.transport.timer_lag.worst),
                "timer_wakeups": self.transport.timer_wakeups, "reader_wakeups": self.transport.reader_wakeups,
                "repair": {"plans": len(self.repair.plans), "triggered": self.repair.triggered,
                           "rejected": self.repair.rejected}}


async def run(path: str, fib_netns: str | None = None) -> None:
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
    proc = BfdProcess(writer, open_socket=partial(route_socket, fib_netns))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    # A graceful stop tells every peer AdminDown (RFC 5880 §6.8.16): a planned shutdown is not a
    # failure, and the peers' routing must not fail over because of it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    async def admin_down_on_stop() -> None:
        await stopping.wait()
        for key in list(proc.transport.entries):
            proc.transport.admin(key, down=True)
        await asyncio.sleep(0.05)  # let the AdminDown packets leave before the sockets close
        writer.close()

    stopper = asyncio.create_task(admin_down_on_stop())

    async def report() -> None:
        while True:
            proc._send(proc.stats())
            await writer.drain()
            await asyncio.sleep(1.0)  # stats cadence for show bfd and metrics

    task = asyncio.create_task(report())
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("bad request line from the daemon: %r", line[:80])
                continue
            if msg.get("op") == "sessions":
                proc.set_sessions(msg.get("sessions", []))
                proc._send(proc.stats())
            elif msg.get("op") == "repair":
                try:
                    proc.repair.set_plans(
                        {str(p): (bytes.fromhex(d["netlink"]),
                                  [(str(m[0]), bytes.fromhex(m[1]), bytes.fromhex(m[2])) for m in d.get("maps", ())])
                         for p, d in msg["plans"].items()}, int(msg.get("version", 0)))
                except (KeyError, AttributeError, TypeError, ValueError) as exc:
                    proc.repair.rejected += 1
                    log.warning("bad repair plans from the daemon: %s", exc)
            elif msg.get("op") == "stats":
                proc._send(proc.stats())
    finally:
        task.cancel()
        stopper.cancel()
        proc.sampler.close()
        proc.repair.close()
        proc.transport.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bfd.process")
    ap.add_argument("socket")
    ap.add_argument("--fib-netns", default=None, help="network namespace of the FIB (local repair plans are "
                    "sent there; default: this process's)")
    ap.add_argument("--realtime", type=int, default=None, help="SCHED_FIFO priority (1-99)")
    ap.add_argument("--cpus", default="", help="comma-separated CPUs to run on (common/cpus.py: off the FIB "
                    "writer's CPU, whose kernel sections a real-time wake-up would otherwise wait behind)")
    args = ap.parse_args(argv)
    handler = NonBlockingLogHandler(sys.stdout.fileno())
    handler.setFormatter(logging.Formatter("%(asctime)s bfd[%(process)d] %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.cpus:
        cpus = {int(c) for c in args.cpus.split(",")}
        pin_thread(cpus, "the BFD process")
        log.info("running on CPUs %s", ",".join(map(str, sorted(cpus))))
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime))
            log.info("running SCHED_FIFO priority %d", args.realtime)
        except OSError as exc:
            log.warning("cannot use SCHED_FIFO: %s", exc)
    # The default event loop on purpose: its clock is time.monotonic() (the `at` of our events must be
    # CLOCK_MONOTONIC) and its timers are not rounded to libuv's millisecond tick like uvloop's.
    t0 = time.monotonic()
    try:
        asyncio.run(run(args.socket, args.fib_netns))
    except (ConnectionError, FileNotFoundError) as exc:
        log.error("daemon socket %s: %s", args.socket, exc)
        return 1
    log.info("daemon went away after %.0fs; exiting", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
