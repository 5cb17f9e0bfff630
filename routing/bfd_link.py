"""Daemon side of BFD: supervise the BFD process and exchange requests and events with it.

Theory of operation
-------------------
The daemon owns the list of BFD sessions it wants (one per BGP peer with BFD enabled, built from
the configuration) and pushes the whole list to the BFD process every time it connects (BIRD's
``bfd_request_session``: requests outlive the process). The process reports transitions with the
CLOCK_MONOTONIC time they were detected; they go on the daemon's event queue like ExaBGP's events,
so the RIB owner handles both in order. Once a second the process sends statistics, kept here for
``pop-router show bfd`` and turned into metrics (counters of a restarted process continue from where
the previous one stopped).

A BFD process that dies is restarted with backoff; its sessions start again in Down, which is not a
transition from Up, so a BFD restart alone never tears a BGP session down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from routing.config import Config
from routing.model import IPAddress

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BfdEvent:
    peer: IPAddress
    old: str
    new: str
    diag: str
    at: float


def session_specs(config: Config) -> list[dict[str, Any]]:
    out = []
    for customer, peer in config.peers():
        b = config.peer_bfd(customer, peer)
        if not b.enabled:
            continue
        spec: dict[str, Any] = {
            "peer": str(peer.address), "local": str(peer.local_address), "multihop": b.multihop,
            "tx_ms": b.tx_interval_ms, "rx_ms": b.rx_interval_ms, "mult": b.multiplier, "min_ttl": b.min_ttl,
        }
        if b.interface:
            spec["interface"] = b.interface
        if b.auth is not None:
            spec["auth"] = {"type": b.auth.type, "key_id": b.auth.key_id, "secret": b.auth.secret}
        out.append(spec)
    return out


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class BfdController:
    def __init__(self, config: Config, run_dir: Path, events: asyncio.Queue, metrics: Any = None) -> None:
        self.config = config
        self.socket_path = run_dir / "bfd.sock"
        self.run_dir = run_dir
        self.events = events
        self.metrics = metrics
        self.specs = session_specs(config)
        self.stats: dict[str, Any] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.base_events.Server | None = None
        self._stopping = False
        self._seen: dict[str, float] = {}  # last cumulative counter values of the current process
        self._pid: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.specs)

    async def start_server(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._on_conn, path=str(self.socket_path), limit=1 << 24)
        os.chmod(self.socket_path, 0o600)

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        old, self._writer = self._writer, writer
        if old is not None:
            old.close()
        writer.write(orjson.dumps({"op": "sessions", "sessions": self.specs}) + b"\n")
        await writer.drain()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                ev = msg.get("event")
                if ev == "state":
                    self.events.put_nowait(BfdEvent(ipaddress.ip_address(msg["peer"]), msg["old"], msg["new"],
                                                    msg["diag"], float(msg["at"])))
                elif ev == "stats":
                    self._on_stats(msg)
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    def _on_stats(self, msg: dict[str, Any]) -> None:
        self.stats = msg
        m = self.metrics
        if m is None:
            return
        if msg.get("pid") != self._pid:
            self._pid = msg.get("pid")
            self._seen = {}
        for reason, n in (msg.get("rx_dropped") or {}).items():
            k = f"drop:{reason}"
            delta = n - self._seen.get(k, 0)
            if delta > 0:
                m.bfd_rx_dropped.labels(reason).inc(delta)
            self._seen[k] = n
        delta = msg.get("tx_late", 0) - self._seen.get("tx_late", 0)
        if delta > 0:
            m.bfd_tx_late.inc(delta)
        self._seen["tx_late"] = msg.get("tx_late", 0)
        for s in msg.get("sessions", []):
            m.bfd_session_up.labels(s["peer"]).set(1 if s["state"] == "up" else 0)
            m.bfd_detect_time.labels(s["peer"]).set(s["detect_time_ms"] / 1000)

    async def supervise(self) -> None:
        backoff = 0.2
        while not self._stopping:
            argv = [sys.executable, "-m", "bfd.process", str(self.socket_path)]
            if self.config.bfd.realtime_priority:
                argv += ["--realtime", str(self.config.bfd.realtime_priority)]
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent,
            )
            if self.metrics is not None:
                self.metrics.child_up.labels("bfd").set(1)
            assert self.proc.stdout is not None
            async for raw in self.proc.stdout:
                text = raw.decode(errors="replace").rstrip()
                if text:
                    log.info("%s", text)
            rc = await self.proc.wait()
            if self.metrics is not None:
                self.metrics.child_up.labels("bfd").set(0)
            if self._stopping:
                return
            self.restarts += 1
            if self.metrics is not None:
                self.metrics.child_restarts.labels("bfd").inc()
            if time.monotonic() - started > 60:
                backoff = 0.2
            log.error("BFD process exited with %s; restarting in %.1fs (sessions are re-requested)", rc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def stop(self) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        if self._server is not None:
            self._server.close()

    def sessions_view(self, customers: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        for s in self.stats.get("sessions", []):
            out.append({**s, "customer": customers.get(s["peer"], "")})
        return sorted(out, key=lambda s: s["peer"])
