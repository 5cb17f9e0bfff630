"""RTR over TCP: the only module of ``rpki/`` that touches sockets and the event loop.

Theory of operation
-------------------
One :class:`RtrCacheClient` per configured cache (``rpki.caches: [{address, port, preference}]``)
owns one :class:`~rpki.session.RtrSession` for its whole life and a TCP connection when it has
one. It reads the stream and hands the bytes to the session; it performs the actions the session
returns (``Send`` -> write, ``Close`` -> drop the connection, ``VrpsChanged`` -> the shared
:class:`~rpki.vrp.VrpTable`); and it keeps one ``loop.call_at`` timer at the session's
``next_deadline()``, re-armed after every step (aioquic's pattern, as in ``bfd/transport.py``).
The timer runs whether or not a connection exists: the expire interval counts while the cache is
away, and that is what finally drops its data.

Reconnect: after a failed connect or a lost connection, wait ``backoff`` (1 s doubling to
``backoff_max_s``, +-20 % jitter) and try again; a completed synchronisation resets the back-off;
a ``Close(immediate=True)`` (version downgrade) reconnects at once.

:class:`RpkiClients` runs every cache's client in one ``TaskGroup`` and owns the
:class:`~rpki.vrp.VrpTable`. Consumers get plain values and callbacks, no Prometheus objects:
``on_change(EffectiveChange)`` when the effective VRP set changes (with :meth:`~rpki.vrp.
EffectiveChange.affected` for the re-validation scope), and :meth:`RpkiClients.metrics` for
``pop_router_rpki_vrps{afi}``, ``pop_router_rpki_cache_up{cache}`` and the serial per cache.

Time comes from ``loop.time()`` (monotonic) and is passed into the session; nothing in the session
reads a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rpki.session import Close, Reset, RtrSession, Send, SessionConfig, VrpsChanged
from rpki.vrp import EffectiveChange, VrpTable

log = logging.getLogger(__name__)

Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
ChangeCallback = Callable[[EffectiveChange], None]


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """One entry of ``rpki.caches``. Lower preference is more preferred (RFC 8210 §10)."""

    address: str
    port: int = 323
    preference: int = 100

    @property
    def name(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class RpkiMetrics:
    """Values for ``pop_router_rpki_vrps{afi}``, ``pop_router_rpki_cache_up{cache}`` and serials."""

    vrps: dict[str, int]
    cache_up: dict[str, int]
    serial: dict[str, int | None]
    selected: list[str] = field(default_factory=list)


class RtrCacheClient:
    """TCP transport for one cache. See the module docstring."""

    def __init__(self, cfg: CacheConfig, table: VrpTable, on_change: ChangeCallback | None = None, *,
                 session_cfg: SessionConfig | None = None, connect: Connector | None = None,
                 backoff_s: float = 1.0, backoff_max_s: float = 60.0, connect_timeout_s: float = 10.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.table = table
        self.session = RtrSession(session_cfg)
        self._on_change = on_change
        self._connect = connect or (lambda host, port: asyncio.open_connection(host, port))
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self._rng = rng
        self._writer: asyncio.StreamWriter | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing: Close | None = None
        self.connects = 0
        self.last_error: str | None = None
        table.add_cache(self.name, cfg.preference)

    # --- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, serve, reconnect; forever (cancel to stop)."""
        loop = asyncio.get_running_loop()
        delay = self.backoff_s
        try:
            while True:
                immediate = False
                try:
                    reader, writer = await asyncio.wait_for(self._connect(self.cfg.address, self.cfg.port),
                                                            self.connect_timeout_s)
                except (OSError, TimeoutError) as exc:
                    self.last_error = f"connect: {exc}"
                    log.info("rpki cache %s: %s", self.name, self.last_error)
                else:
                    self.connects += 1
                    synced = await self._serve(loop, reader, writer)
                    if synced:
                        delay = self.backoff_s
                    immediate = self._closing is not None and self._closing.immediate
                if not immediate:
                    await asyncio.sleep(delay * (0.8 + 0.4 * self._rng()))
                    delay = min(delay * 2, self.backoff_max_s)
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _serve(self, loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        self._writer, self._closing = writer, None
        synced = False
        try:
            self._perform(self.session.on_connected(loop.time()))
            while self._closing is None:
                try:
                    data = await reader.read(65536)
                except OSError as exc:
                    self.last_error = f"read: {exc}"
                    break
                if not data:
                    self.last_error = "connection closed by the cache"
                    break
                self._perform(self.session.on_bytes(data, loop.time()))
                synced = synced or self.session.up
        finally:
            self._writer = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._perform(self.session.on_disconnected(loop.time()))
        return synced

    # --- actions and the timer -------------------------------------------------------------------
    def _perform(self, actions: list) -> None:  # type: ignore[type-arg]
        for act in actions:
            if isinstance(act, Send):
                if self._writer is not None and not self._writer.is_closing():
                    self._writer.write(act.data)
            elif isinstance(act, VrpsChanged):
                self._emit(self.table.apply(self.name, act.announced, act.withdrawn))
                log.info("rpki cache %s: serial %s, +%d -%d VRPs", self.name, act.serial,
                         len(act.announced), len(act.withdrawn))
            elif isinstance(act, Reset):
                log.info("rpki cache %s: resynchronising (%s)", self.name, act.reason)
            elif isinstance(act, Close):
                self._closing = act
                self.last_error = act.reason
                log.warning("rpki cache %s: closing: %s", self.name, act.reason)
                if self._writer is not None:
                    self._writer.close()  # the read returns, _serve ends
        self._emit(self.table.set_up(self.name, self.session.up))
        self._arm()

    def _emit(self, change: EffectiveChange) -> None:
        if change and self._on_change is not None:
            self._on_change(change)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.session.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._perform(self.session.on_timer(asyncio.get_running_loop().time()))


class RpkiClients:
    """Every configured cache, one VRP table, metrics as values. See the module docstring."""

    def __init__(self, caches: list[CacheConfig], on_change: ChangeCallback | None = None, *,
                 session_cfg: SessionConfig | None = None, connect: Connector | None = None,
                 backoff_s: float = 1.0, backoff_max_s: float = 60.0) -> None:
        self.table = VrpTable()
        self.clients = [RtrCacheClient(c, self.table, on_change, session_cfg=session_cfg, connect=connect,
                                       backoff_s=backoff_s, backoff_max_s=backoff_max_s) for c in caches]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for c in self.clients:
                tg.create_task(c.run(), name=f"rpki-{c.name}")

    def metrics(self) -> RpkiMetrics:
        return RpkiMetrics(
            vrps=self.table.counts_by_afi(),
            cache_up={c.name: int(c.session.up) for c in self.clients},
            serial={c.name: c.session.serial for c in self.clients},
            selected=self.table.selected(),
        )
