"""Daemon side of BFD: supervise the BFD process and exchange requests and events with it.

Theory of operation
-------------------
The daemon owns the list of BFD sessions it wants (one per BGP peer with BFD enabled, built from
the configuration) and pushes the whole list to the BFD process every time it connects (BIRD's
``bfd_request_session``: requests outlive the process). The process reports transitions with the
CLOCK_MONOTONIC time they were detected. They do **not** join the routing core's inbox: each one is
handed at once to ``on_event`` — the failover lane (``routing/failover.py``) — from the channel's
reader, so a BFD Down never waits behind ExaBGP's UPDATEs. Once a second the process sends
statistics, kept here for ``pop-router show bfd`` and turned into metrics (counters of a restarted
process continue from where the previous one stopped).

**Local repair** (:mod:`bfd.repair`): the daemon also keeps the BFD process supplied with a plan per
peer — the group rewrites that move traffic off that gateway — so that on a Down the BFD process
sends them itself, without waiting for this loop. :meth:`BfdController.push_repairs` recomputes the
plans whenever the dataplane's groups may have changed (at most every :data:`REPAIR_PERIOD_S`) and
sends only those that differ; a plan is used once, so a Down clears what we believe was sent. The
``repair`` reports come back to :attr:`repairs` (``show status``) and the log.

A BFD process that dies is restarted with backoff; its sessions start again in Down, which is not a
transition from Up, so a BFD restart alone never tears a BGP session down.

This lives in ``routing/`` because it reads the daemon's configuration; ``bfd/`` itself (codec,
sessions, transport, process) never imports ``routing/``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from common.model import IPAddress
from routing.children import ChildSupervisor, LineServer
from routing.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BfdEvent:
    peer: IPAddress
    old: str
    new: str
    diag: str
    at: float
    #: Attribution sent by the BFD process (receive gap at detection, our largest send gap, ...).
    detail: dict[str, Any] = field(default_factory=dict, compare=False)


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


_EVENT_KEYS = ("peer", "local", "multihop", "old", "new", "diag", "at", "event")
#: How often the repair plans are checked for changes (a change made just before a Down is covered
#: by the failover lane, which runs on every Down anyway).
REPAIR_PERIOD_S = 0.05


class RepairSource(Protocol):
    """What the dataplane offers the repair pusher (``fib.dataplane.Dataplane``)."""

    def repair_fingerprint(self) -> tuple[int, ...]: ...

    def repair_plans(self, gws: Iterable[IPAddress]) -> dict[IPAddress, Any]: ...


class BfdController:
    def __init__(
        self, config: Config, run_dir: Path, on_event: Callable[[BfdEvent], None], metrics: Any = None,
        cpus: set[int] | None = None, fib_netns: str | None = None,
    ) -> None:
        self.config = config
        self.socket_path = run_dir / "bfd.sock"
        self.run_dir = run_dir
        self.on_event = on_event
        self.metrics = metrics
        self.specs = session_specs(config)
        self.stats: dict[str, Any] = {}
        self.malformed = 0
        self._seen: dict[str, float] = {}  # last cumulative counter values of the current process
        self._pid: int | None = None
        self._serving = False
        #: Repair plans the connected BFD process holds, as we sent them (peer -> plan document).
        self._repair_sent: dict[str, dict[str, Any]] = {}
        self._repair_version = 0
        self._repair_fp: tuple[int, ...] | None = None
        #: The last local repairs the BFD process reported, newest last (``show status``).
        self.repairs: deque[dict[str, Any]] = deque(maxlen=16)
        self.repair_pushes = 0

        def argv() -> list[str]:
            a = [sys.executable, "-m", "bfd.process", str(self.socket_path)]
            if config.bfd.realtime_priority:
                a += ["--realtime", str(config.bfd.realtime_priority)]
            if cpus:
                a += ["--cpus", ",".join(map(str, sorted(cpus)))]
            if fib_netns:
                a += ["--fib-netns", fib_netns]
            return a

        self.child = ChildSupervisor("bfd", argv, metrics=metrics, cpus=cpus)
        self.channel = LineServer(self.socket_path, self._on_line, on_connect=self._on_connect)

    @property
    def enabled(self) -> bool:
        return bool(self.specs)

    async def start_server(self) -> None:
        await self.channel.start()
        self._serving = True

    async def _on_connect(self, writer: asyncio.StreamWriter) -> None:
        self._repair_sent = {}  # a new process holds no plans: push_repairs sends them all again
        self._repair_fp = None
        writer.write(orjson.dumps({"op": "sessions", "sessions": self.specs}) + b"\n")
        await writer.drain()

    async def push_repairs(self, source: RepairSource, period_s: float = REPAIR_PERIOD_S) -> None:
        """Keep the BFD process's local repair plans current (task; see the module docstring)."""
        while True:
            await asyncio.sleep(period_s)
            self.push_repairs_once(source)

    def push_repairs_once(self, source: RepairSource) -> int:
        """Send the plans that changed; returns how many."""
        writer = self.channel.writer
        if writer is None:
            return 0
        fp = source.repair_fingerprint()
        peers = self._bfd_peers()
        if fp == self._repair_fp and all(p in self._repair_sent for p in peers):
            return 0
        self._repair_fp = fp
        plans = source.repair_plans(ipaddress.ip_address(p) for p in peers)
        docs = {str(gw): plan.doc() for gw, plan in plans.items()}
        changed = {p: d for p, d in docs.items() if self._repair_sent.get(p) != d}
        if not changed:
            return 0
        self._repair_version += 1
        writer.write(orjson.dumps({"op": "repair", "version": self._repair_version, "plans": changed}) + b"\n")
        self._repair_sent.update(changed)
        self.repair_pushes += 1
        return len(changed)

    def _bfd_peers(self) -> list[str]:
        return [s["peer"] for s in self.specs]

    async def _on_line(self, line: bytes) -> None:
        try:
            msg = orjson.loads(line)
            ev = msg.get("event")
            if ev == "state":
                if msg["old"] == "up":
                    self._repair_sent.pop(msg["peer"], None)  # used (or moot): the next push resends it
                detail = {k: v for k, v in msg.items() if k not in _EVENT_KEYS}
                self.on_event(BfdEvent(ipaddress.ip_address(msg["peer"]), msg["old"], msg["new"], msg["diag"],
                                       float(msg["at"]), detail))
            elif ev == "stats":
                self._on_stats(msg)
            elif ev == "repair":
                self._on_repair(msg)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            self.malformed += 1
            log.warning("dropped a malformed line from the BFD process: %s", exc)

    def _on_repair(self, msg: dict[str, Any]) -> None:
        ms = (float(msg["done_at"]) - float(msg["at"])) * 1000
        self.repairs.append({"peer": msg["peer"], "detected_at": msg["at"], "done_at": msg["done_at"],
                             "ms": round(ms, 3), "groups": msg["messages"], "errors": msg["errors"],
                             "xdp_groups": msg.get("map_writes", 0), "xdp_errors": msg.get("map_errors", 0)})
        if self.metrics is not None:
            self.metrics.bfd_local_repairs.labels(
                "refused" if msg["errors"] or msg.get("map_errors") else "ok").inc()
            self.metrics.bfd_local_repair_seconds.observe(max(0.0, ms / 1000))
        log.info("BFD %s: local repair by the BFD process: %d groups rewritten %.1f ms after detection%s",
                 msg["peer"], msg["messages"], ms, f", {msg['errors']} refused" if msg["errors"] else "")

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

    async def update(self, config: Config, start: Callable[[], None] | None = None) -> str:
        """A reload: push the new session list (the BFD process adds, removes and retimes in place).

        The BFD process applies a changed multiplier or key by re-creating the session, but ignores a
        changed ``interface`` or ``min_ttl``: those sessions are withdrawn in one push and requested
        again in the next, so they too are re-created. Starts the process if this is its first session.
        """
        old = {(s["peer"], s["local"], s["multihop"]): s for s in self.specs}
        self.config = config
        self.specs = session_specs(config)
        recreate = [s for s in self.specs
                    if (o := old.get((s["peer"], s["local"], s["multihop"]))) is not None
                    and (o.get("interface"), o.get("min_ttl")) != (s.get("interface"), s.get("min_ttl"))]
        writer = self.channel.writer
        if writer is None:
            if self.specs and self.child.proc is None and start is not None:
                if not self._serving:
                    await self.start_server()
                start()
                return "BFD process started"
            return "sessions kept for the BFD process's next connection"
        if recreate:
            keep = [s for s in self.specs if s not in recreate]
            writer.write(orjson.dumps({"op": "sessions", "sessions": keep}) + b"\n")
        writer.write(orjson.dumps({"op": "sessions", "sessions": self.specs}) + b"\n")
        await writer.drain()
        return f"{len(self.specs)} sessions pushed"

    async def supervise(self) -> None:
        await self.child.run()

    async def stop(self) -> None:
        await self.child.stop()
        self.channel.close()

    def sessions_view(self, customers: dict[str, str]) -> list[dict[str, Any]]:
        out = []
        for s in self.stats.get("sessions", []):
            out.append({**s, "customer": customers.get(s["peer"], "")})
        return sorted(out, key=lambda s: s["peer"])
