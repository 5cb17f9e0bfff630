"""The kernel FIB provider: a dataplane writer fed by the RIB's diff stream.

Theory of operation (FRR ``zebra_dplane.c`` in shape)
-----------------------------------------------------
- The RIB owner calls :meth:`KernelFib.submit` with the *desired* entry for a prefix (or None to
  remove it). Pending work is a dict keyed by prefix, so a prefix that changes ten times before the
  writer gets to it costs one kernel operation (latest wins), and an update equal to what is
  installed is skipped.
- One drain task takes up to ``batch_size`` operations, encodes them, and runs the batch in a worker
  thread (the kernel processes netlink in the sender's context: a 1 MiB batch takes tens of
  milliseconds, which must not stall the event loop). Results come back as (index, errno) pairs and
  are matched to the operations: successes update ``installed``; failures are counted by errno,
  kept in ``failed`` (``pop-router show fib --failed``) and retried with backoff.
- Ownership and restart: :meth:`adopt` reads the routes of our protocol from the kernel at start
  and treats them as installed *and stale*. Re-announced routes stop being stale (and cost no
  kernel operation if unchanged); :meth:`sweep_stale` deletes the rest. A daemon restart therefore
  never removes a route that is still wanted, and the FIB is never flushed because a child died.
- Deletes carry our protocol id: the kernel refuses to delete another protocol's route with it.

Invariant: ``installed`` equals the kernel's view of our routes after every completed batch
(integration-tested against ``ip -json route``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fib.netlink import RTM_DELROUTE, RTM_NEWROUTE, RouteSocket, encode_route, errno_name
from fib.netns import netns as enter_netns
from routing.model import FibEntry, IPAddress, IPNetwork

log = logging.getLogger(__name__)

_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def _nh_key(nexthops: tuple[IPAddress, ...]) -> tuple[IPAddress, ...]:
    return nexthops if len(nexthops) < 2 else tuple(sorted(nexthops, key=int))


@dataclass(slots=True)
class FailedRoute:
    entry: FibEntry | None
    errno: int
    attempts: int
    next_retry: float


class KernelFib:
    def __init__(
        self,
        *,
        protocol: int,
        table: int = 254,
        metric: int = 20,
        batch_size: int = 2000,
        metrics: object | None = None,
        clock: Callable[[], float] = time.monotonic,
        netns: str | None = None,
    ) -> None:
        self.netns = netns
        self.protocol = protocol
        self.table = table
        self.metric = metric
        self.batch_size = batch_size
        self.metrics = metrics
        self.clock = clock
        self.installed: dict[IPNetwork, tuple[IPAddress, ...]] = {}
        self._count = {4: 0, 6: 0}  # installed routes per IP version, kept as ``installed`` changes
        self.stale: set[IPNetwork] = set()
        self.failed: dict[IPNetwork, FailedRoute] = {}
        self._pending: dict[IPNetwork, FibEntry | None] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sock: RouteSocket | None = None
        self.batches = 0
        self.operations = 0

    # --- input ---------------------------------------------------------------------------------
    def submit(self, prefix: IPNetwork, entry: FibEntry | None) -> None:
        if entry is not None:
            self.stale.discard(prefix)
        self.failed.pop(prefix, None)
        self._pending[prefix] = entry
        self._idle.clear()
        self._wake.set()

    def adopt(self) -> int:
        """Take over the routes of our protocol already in the kernel (after a restart)."""
        for r in self._socket().dump_owned(self.protocol, self.table):
            if r.metric == self.metric:
                if r.prefix not in self.installed:
                    self._count[r.prefix.version] += 1
                self.installed[r.prefix] = r.nexthops
                self.stale.add(r.prefix)
        self._update_gauges()
        return len(self.stale)

    def sweep_stale(self) -> int:
        """Remove adopted routes nobody re-announced."""
        n = 0
        for prefix in list(self.stale):
            if prefix not in self._pending:
                self.submit(prefix, None)
                n += 1
        self.stale.clear()
        return n

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # --- the writer ----------------------------------------------------------------------------
    def _socket(self) -> RouteSocket:
        if self._sock is None:
            with enter_netns(self.netns):
                self._sock = RouteSocket()
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _take_work(self) -> list[tuple[IPNetwork, FibEntry | None]]:
        """Take *all* pending work at once (submits meanwhile go to a fresh dict, so a prefix changed
        during a write is written again after it, in order), dropping no-op updates."""
        pending, self._pending = self._pending, {}
        work: list[tuple[IPNetwork, FibEntry | None]] = []
        installed = self.installed
        for prefix, entry in pending.items():
            cur = installed.get(prefix)
            if entry is None:
                if cur is not None:
                    work.append((prefix, None))
            elif cur != _nh_key(entry.nexthops):
                work.append((prefix, entry))
        return work

    def write_batch(self, batch: list[tuple[IPNetwork, FibEntry | None]]) -> list[tuple[int, int]]:
        """Encode and send one batch (blocking); returns (index, errno) of refused operations."""
        msgs = [
            encode_route(
                RTM_NEWROUTE if e is not None else RTM_DELROUTE, 0, p, e.nexthops if e else (),
                protocol=self.protocol, table=self.table, metric=self.metric, replace=p in self.installed,
            )
            for p, e in batch
        ]
        return self._socket().apply(msgs).errors

    def _complete(self, batch: list[tuple[IPNetwork, FibEntry | None]], errors: list[tuple[int, int]]) -> None:
        errs = dict(errors)
        m = self.metrics
        now = self.clock()
        ok = {"install": 0, "delete": 0}
        for i, (prefix, entry) in enumerate(batch):
            op = "install" if entry is not None else "delete"
            err = errs.get(i)
            if err is None or (entry is None and err == 3):  # ESRCH on delete: already gone
                ok[op] += 1
                self.failed.pop(prefix, None)
                if entry is None:
                    if self.installed.pop(prefix, None) is not None:
                        self._count[prefix.version] -= 1
                else:
                    if prefix not in self.installed:
                        self._count[prefix.version] += 1
                    self.installed[prefix] = _nh_key(entry.nexthops)
                continue
            if m is not None:
                m.fib_operations.labels(op, "error").inc()  # type: ignore[attr-defined]
                m.fib_errors.labels(errno_name(err)).inc()  # type: ignore[attr-defined]
            prev = self.failed.get(prefix)
            attempts = prev.attempts + 1 if prev else 1
            delay = _RETRY_S[min(attempts - 1, len(_RETRY_S) - 1)]
            self.failed[prefix] = FailedRoute(entry, err, attempts, now + delay)
            if attempts == 1:
                log.warning("kernel refused %s %s: %s", op, prefix, errno_name(err))
        if m is not None:
            for op, n in ok.items():
                if n:
                    m.fib_operations.labels(op, "ok").inc(n)  # type: ignore[attr-defined]
        self.operations += len(batch)
        self.batches += 1
        self._update_gauges()

    def _update_gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        m.fib_routes.labels("ipv4").set(self._count[4])  # type: ignore[attr-defined]
        m.fib_routes.labels("ipv6").set(self._count[6])  # type: ignore[attr-defined]
        m.fib_failed_routes.set(len(self.failed))  # type: ignore[attr-defined]

    def _requeue_due(self) -> float | None:
        """Move failed routes whose retry time has come back to pending; return the next due time."""
        now = self.clock()
        nxt: float | None = None
        for prefix, f in list(self.failed.items()):
            if f.next_retry <= now:
                if prefix not in self._pending:
                    self._pending[prefix] = f.entry
            else:
                nxt = f.next_retry if nxt is None else min(nxt, f.next_retry)
        return nxt

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            nxt = self._requeue_due()
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                timeout = None if nxt is None else max(0.05, nxt - self.clock())
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            work = self._take_work()
            for i in range(0, len(work), self.batch_size):
                batch = work[i: i + self.batch_size]
                t0 = time.perf_counter()
                errors = await loop.run_in_executor(None, self.write_batch, batch)
                if self.metrics is not None:
                    self.metrics.fib_write_seconds.observe(time.perf_counter() - t0)  # type: ignore[attr-defined]
                self._complete(batch, errors)
