"""The daemon's side of RPKI: RTR clients from the configuration, VRP snapshots to the routing core.

Theory of operation
-------------------
Control lane. :class:`RpkiLink` owns one :class:`~rpki.client.RpkiClients` built from
``rpki.caches`` (production RFC 8210 timers: no ``session_cfg``) and runs it in the daemon's
TaskGroup. The clients only read sockets and timers; what they change is the effective VRP set.

Publishing: the clients' ``on_change`` only sets a flag. One publisher task takes the effective set
as it is then (an immutable frozenset), and in a worker thread builds the
:class:`~rpki.vrp.Validator` for it and the affected ranges of everything that differs from the
last set it published (symmetric difference): a 400,000-VRP index takes seconds of CPU
(``benchmarks/rpki.py``) and must not be one step of the event loop, where the failover lane lives;
in a thread the loop still runs every GIL switch interval. It then posts
:class:`routing.rov.RpkiChanged` to the routing core's urgent lane (one owner, requests by message).
Changes that arrive while a snapshot is being built are coalesced into the next one, so a burst of
RTR updates costs one rebuild and one re-validation.

Reload: a changed cache list replaces the clients (their task is cancelled, new ones started); the
last published set stays until the new clients publish theirs, and the difference re-validates
exactly what changed. With no cache left, an empty set is published (every path ``not_found``;
policies are ``off`` then anyway, ``Config.customer_rpki``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from routing.config import Config
from routing.rov import RpkiChanged
from rpki.client import CacheConfig, Connector, RpkiClients
from rpki.model import AFI_LABEL, Vrp
from rpki.vrp import AffectedRanges, Validator, affected

log = logging.getLogger(__name__)


def cache_configs(config: Config) -> list[CacheConfig]:
    return [CacheConfig(str(c.address), c.port, c.preference) for c in config.rpki.caches]


def snapshot(published: frozenset[Vrp], new: frozenset[Vrp]) -> tuple[Validator, AffectedRanges]:
    """The index of ``new`` and where it differs from ``published`` (runs in a worker thread)."""
    return Validator(new), affected(published ^ new)


class RpkiLink:
    """RTR clients, the snapshot publisher, and their views and metrics (module docstring)."""

    def __init__(self, config: Config, post: Callable[[object], None], clock: Callable[[], float], *,
                 connect: Connector | None = None) -> None:
        self.post = post
        self.clock = clock
        self._connect = connect
        self.caches = cache_configs(config)
        self.clients = self._build(self.caches)
        self.published: frozenset[Vrp] = frozenset()
        self.published_at: float | None = None
        self.publications = 0
        self._dirty = asyncio.Event()
        self._replaced = asyncio.Event()
        self._vrp_counts: tuple[frozenset[Vrp], dict[str, int]] | None = None

    def _build(self, caches: list[CacheConfig]) -> RpkiClients:
        return RpkiClients(caches, on_change=lambda _change: self._dirty.set(), connect=self._connect)

    @property
    def enabled(self) -> bool:
        return bool(self.caches)

    async def run(self) -> None:
        """Run the clients (replaced on reload) and the publisher, for the daemon's lifetime."""
        publisher = asyncio.create_task(self._publish(), name="rpki-publish")
        try:
            while True:
                self._replaced.clear()
                clients = asyncio.create_task(self.clients.run(), name="rpki-clients")
                await self._replaced.wait()
                clients.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await clients
                self._dirty.set()  # the new clients' table starts empty: publish what differs
        finally:
            publisher.cancel()

    def update(self, config: Config) -> str:
        """Reload: new clients if the cache list changed. Returns what happened, for the outcome."""
        caches = cache_configs(config)
        if caches == self.caches:
            return "unchanged"
        self.caches, self.clients = caches, self._build(caches)
        self._replaced.set()
        return f"caches {', '.join(c.name for c in caches) or 'none'}"

    async def _publish(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            new = self.clients.table.effective
            if new is self.published or new == self.published:
                continue
            validator, ranges = await loop.run_in_executor(None, snapshot, self.published, new)
            log.info("rpki: %d VRPs in effect (%+d), %d prefix ranges to re-validate", len(new),
                     len(new) - len(self.published), len(ranges))
            self.published, self.published_at = new, self.clock()
            self.publications += 1
            self.post(RpkiChanged(validator, ranges))

    # --- views and metrics (control thread: plain reads of small objects) ----------------------------
    def vrp_counts(self) -> dict[str, int]:
        """VRPs in effect per address family, recounted only when the set changed (400k per scrape
        would be ~20 ms of the control thread)."""
        eff = self.published
        cached = self._vrp_counts
        if cached is None or cached[0] is not eff:
            counts = dict.fromkeys(AFI_LABEL.values(), 0)
            for v in eff:
                counts[AFI_LABEL[v.afi]] += 1
            cached = self._vrp_counts = (eff, counts)
        return cached[1]

    def view(self, routes: dict[str, int]) -> dict[str, Any]:
        now = self.clock()
        selected = set(self.clients.table.selected())
        caches = []
        for c in self.clients.clients:
            s = c.session
            caches.append({
                "cache": c.name, "address": c.cfg.address, "port": c.cfg.port, "preference": c.cfg.preference,
                "up": s.up, "selected": c.name in selected, "state": s.state.value, "version": s.version,
                "session_id": s.session_id, "serial": s.serial, "vrps": len(s.vrps),
                "last_update_s_ago": None if s.last_update is None else round(now - s.last_update, 1),
                "connects": c.connects, "last_error": c.last_error,
                "errors_received": {str(k): v for k, v in s.errors_rx.items()},
                "errors_sent": {str(k): v for k, v in s.errors_tx.items()},
            })
        return {
            "enabled": self.enabled, "caches": caches, "vrps": self.vrp_counts(),
            "published_s_ago": None if self.published_at is None else round(now - self.published_at, 1),
            "routes": routes,
        }

    def refresh_metrics(self, m: Any, routes: dict[str, int]) -> None:
        for state, n in routes.items():
            m.rpki_routes.labels(state).set(n)
        if not self.enabled:
            return
        for afi, n in self.vrp_counts().items():
            m.rpki_vrps.labels(afi).set(n)
        names = {c.name for c in self.clients.clients}
        for g in (m.rpki_cache_up, m.rpki_serial):
            for labels in list(g._metrics):  # a cache removed by a reload: its series go
                if labels[0] not in names:
                    g.remove(*labels)
        for c in self.clients.clients:
            s = c.session
            m.rpki_cache_up.labels(c.name).set(int(s.up))
            if s.serial is not None:
                m.rpki_serial.labels(c.name).set(s.serial)
            for direction, errors in (("received", s.errors_rx), ("sent", s.errors_tx)):
                for code, n in errors.items():
                    m.rpki_rtr_errors.labels(c.name, direction, str(code)).set(n)
