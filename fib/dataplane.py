"""The dataplane: one queue, one writer, the same operations to every provider, results back.

Theory of operation (FRR ``zebra_dplane.c`` in shape; see DESIGN.md "Lanes")
----------------------------------------------------------------------------
Two lanes feed it, in one order:

- **Routing lane** (:meth:`Dataplane.submit`): the RIB owner posts the *desired* entry for a prefix
  (or None). Pending work is a dict keyed by prefix (latest wins), so churn coalesces. The writer
  task (:meth:`run`) drains it in batches: it plans (:mod:`fib.planner`) and encodes a batch on the
  loop in **bounded steps** (about :attr:`Pace.plan_step_s` each, then it yields, so a 10,000-route
  batch never holds the loop for 30 ms), hands it to the kernel provider's worker thread, and plans
  the next one while the kernel works (pipelined, one batch in the kernel at a time). When a batch
  returns, its results are matched to its operations by index and applied to the table — routes
  enter or leave ``installed`` only if the kernel accepted them; refused nexthops and groups are
  rolled back; refused routes go to ``failed`` and are retried with backoff (:data:`RETRY_S`) — and
  the same operations with the kernel's results go to the mirror providers (XDP), again in bounded
  steps. Only then, in a later batch, are groups and nexthops whose reference count fell to zero
  deleted, so a failed route update can never lose the group its kernel route still uses.
- **Failover lane** (:meth:`fail_gateways_now` / :meth:`recover_gateways_now`): synchronous, on the
  loop thread, never behind the routing lane: plan the group replaces, send them in *one* message on
  the kernel provider's loop socket, read the acks, retry refused ones once, apply the accepted ones
  to the table and the mirrors (one map write per group), roll back the rest (members unchanged) and
  count them (``pop_router_fib_failover_errors_total``). Groups whose creation is still in flight
  are re-checked when their batch completes.

Pacing (:class:`Pace`): routes per message, an optional pause between messages, the size of a
planning step, and **coalescing**. The defaults are the writer's historical behaviour for the first
three (``batch_size`` per message, no pause).

Coalescing (issue 12, "the FIB trickle"): a batch has a fixed cost on the loop thread (a hand-off to
the writer thread, a future, the GIL going back and forth: ~0.3-0.4 ms, 31 µs/prefix at 12.8 routes
per batch in the 2026-12-01 profile), so a table arriving 4 prefixes per UPDATE must not leave as
batches of a dozen routes. When the writer finds fewer than :attr:`Pace.coalesce_routes` pending
*while the routing lane is streaming* — it submitted while the previous batch was being written, or
less than :attr:`Pace.coalesce_s` after it — it waits until that many are pending or ``coalesce_s``
of loop time has passed, whichever comes first, then writes everything pending. A change on an idle
router (nothing written in the last ``coalesce_s``) goes out at once; so does a large diff (a flush,
a whole table handed over at once). The failover lane never passes through here: it is synchronous
on the loop thread.

Backlog (issue 12): what the routing lane submitted and no batch has taken yet — the pending dict
plus what is left of the set being written — is :meth:`Dataplane.backlog`. With watermarks set
(:meth:`Dataplane.watch_backlog`), the owner is told when it passes ``high`` and again when it is back
at ``low``; the daemon then stops taking routing events in between (``routing.inbox.Inbox.hold``), so
a full table waits in the relay as compressed JSON (~15 bytes per prefix) instead of here as a
``FibEntry`` and a dict slot per prefix (~130 bytes): 145,000 routes were waiting at one point of a
1M-prefix ingest. The failover lane and urgent events never wait on it.

Source address validation (:meth:`apply_sav`) is a third, tiny stream: per-interface allowed source
prefixes, applied synchronously to the mirror providers that validate (XDP), with results.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

from common.model import FibEntry, IPAddress, IPNetwork
from fib.kernel_provider import KernelProvider
from fib.netlink import errno_name
from fib.ops import (
    GroupAdd,
    GroupDel,
    GroupReplace,
    MplsLabelAdd,
    NexthopAdd,
    NexthopDel,
    Op,
    Results,
    RouteDelete,
    RouteInstall,
    RouteReplace,
    SavOp,
)
from fib.planner import Planner
from fib.table import FibTable, FibView

log = logging.getLogger(__name__)

RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
#: Operations whose results are recorded (and mirrored) per loop step (~1-2 ms).
COMPLETE_STEP = 500
#: Withdrawals scanned per loop step when looking for whole groups to delete.
SCAN_STEP = 5000


@dataclass(frozen=True, slots=True)
class Pace:
    """How the routing lane writes: ``max_routes_per_send`` routes per netlink message (batch), the
    first batch at most ``first_send`` (the kernel starts after a millisecond, not ten), an optional
    ``pause_s`` between batches (0: none; the loop still yields), and planning steps of at most
    ``plan_step_routes`` routes or about ``plan_step_s`` of loop time.

    Coalescing (module docstring): while the routing lane streams, a write starts with at least
    ``coalesce_routes`` pending or after at most ``coalesce_s`` of waiting (0: never wait)."""

    max_routes_per_send: int = 10000
    first_send: int = 1000
    pause_s: float = 0.0
    plan_step_routes: int = 1000
    plan_step_s: float = 0.0015
    coalesce_routes: int = 1000
    #: The longest a pending route is held back on purpose (loop time; uvloop rounds timers to 1 ms).
    coalesce_s: float = 0.004


@dataclass(frozen=True, slots=True)
class FailoverResult:
    """What one failover-lane call did: groups the kernel rewrote, groups it refused (rolled back),
    milliseconds from detection to rewritten (None without a detection time), and the loop time it
    took."""

    rewritten: int
    errors: int
    ms_since_detected: float | None
    loop_ms: float


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """A BFD local repair plan for one gateway (``bfd/repair.py``): netlink bytes and XDP map writes."""

    netlink: bytes
    maps: tuple[tuple[str, bytes, bytes], ...] = ()

    def doc(self) -> dict[str, object]:
        """As sent to the BFD process (JSON)."""
        return {"netlink": self.netlink.hex(), "maps": [[p, k.hex(), v.hex()] for p, k, v in self.maps]}


@dataclass(slots=True)
class FailedRoute:
    entry: FibEntry | None
    errno: int
    attempts: int
    next_retry: float


class MirrorProvider(Protocol):
    """A provider that follows the kernel (the XDP maps): fed the same operations, in the same order,
    with the kernel's errors by index (a refused operation is not mirrored). Returns its own results."""

    def apply(self, ops: Sequence[Op], kernel_errors: Mapping[int, int], view: FibView) -> Results: ...

    def touch(self, prefixes: Iterable[IPNetwork]) -> None: ...


class Dataplane:
    def __init__(
        self,
        table: FibTable,
        planner: Planner,
        kernel: KernelProvider,
        *,
        pace: Pace,
        clock: Callable[[], float],
        metrics: object | None = None,
    ) -> None:
        self.table = table
        self.planner = planner
        self.kernel = kernel
        self.pace = pace
        self.clock = clock
        self.metrics = metrics
        self.mirrors: list[MirrorProvider] = []
        self.pending: dict[IPNetwork, FibEntry | None] = {}
        self._pending_deletes = False  # some pending entry is a withdrawal (None)
        self.failed: dict[IPNetwork, FailedRoute] = {}
        self.stale: set[IPNetwork] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Coalescing: set by submit once ``coalesce_routes`` are pending while the writer gathers.
        self._gathering = False
        self._gathered = asyncio.Event()
        #: Loop time the last routing-lane write finished (-inf: never; the first change goes at once).
        self._write_end = float("-inf")
        #: A submit came while a write was running (the routing lane is streaming).
        self._submitted_while_writing = False
        self._writing = False
        self.batches = 0
        self.operations = 0
        self.failover_errors = 0
        self.last_failover_ms: float | None = None
        self.inflight_batches = 0  # batches handed to the kernel whose results are not applied yet
        self.inflight_deletes: set[IPNetwork] = set()  # route deletes sent, not yet completed
        #: Route notifications our own accepted installs will still cause (the monitor skips them).
        #: Not counted while :attr:`own_notice_filter` keeps them out of the monitor's socket.
        self.own_route_notices = 0
        #: Set by the monitor: ``f(True)`` when the first batch goes to the kernel, ``f(False)`` when
        #: the last one's results are in; it returns whether our own route notifications are now
        #: dropped in the kernel (:class:`fib.netlink.OwnRouteFilter`) instead of counted.
        self.own_notice_filter: Callable[[bool], bool] | None = None
        self._notices_filtered = False
        self._failovers = 0  # failover-lane calls so far: a batch planned across one re-checks its groups
        #: Backlog watermarks and whom to tell (module docstring, "Backlog"); no one: not watched.
        self._backlog_high = self._backlog_low = 0
        self._on_backlog: Callable[[bool], None] | None = None
        self._backlog_over = False
        #: Routes of the set being written that no batch has taken yet.
        self._work_left = 0

    # --- input ---------------------------------------------------------------------------------
    def submit(self, prefix: IPNetwork, entry: FibEntry | None) -> None:
        # Hot path (a full table is a million calls): skip the set/dict probes when they are empty.
        if entry is not None and self.stale:
            self.stale.discard(prefix)
        if self.failed:
            self.failed.pop(prefix, None)
        self.pending[prefix] = entry
        if entry is None:
            self._pending_deletes = True
        self.wake()
        if self._on_backlog is not None:
            self._check_backlog()

    def submit_many(self, items: Iterable[tuple[IPNetwork, FibEntry | None]]) -> None:
        """:meth:`submit` for a whole RIB diff at once: one dict update instead of a method call and
        two event operations per prefix."""
        if self.stale or self.failed:
            for prefix, entry in items:
                self.submit(prefix, entry)
            return
        pending = self.pending
        deletes = False
        for prefix, entry in items:
            pending[prefix] = entry
            if entry is None:
                deletes = True
        if deletes:
            self._pending_deletes = True
        self.wake()
        if self._on_backlog is not None:
            self._check_backlog()

    # --- backlog -------------------------------------------------------------------------------
    def backlog(self) -> int:
        """Routes submitted that no batch has taken yet (module docstring, "Backlog")."""
        return len(self.pending) + self._work_left

    def watch_backlog(self, high: int, low: int, notify: Callable[[bool], None]) -> None:
        """Call ``notify(True)`` when the backlog passes ``high``, ``notify(False)`` when it is back at
        ``low`` or below (once each way)."""
        if not 0 <= low < high:
            raise ValueError(f"backlog watermarks: need 0 <= low < high, got {low}, {high}")
        self._backlog_high, self._backlog_low, self._on_backlog = high, low, notify
        self._check_backlog()

    def _check_backlog(self) -> None:
        notify = self._on_backlog
        if notify is None:
            return
        n = self.backlog()
        if not self._backlog_over and n > self._backlog_high:
            self._backlog_over = True
            notify(True)
        elif self._backlog_over and n <= self._backlog_low:
            self._backlog_over = False
            notify(False)

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._writing:
            self._submitted_while_writing = True
        elif self._gathering and len(self.pending) >= self.pace.coalesce_routes:
            self._gathered.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def sweep_stale(self) -> int:
        n = 0
        for prefix in list(self.stale):
            if prefix not in self.pending:
                self.submit(prefix, None)
                n += 1
        self.stale.clear()
        self.wake()  # adopted groups no route uses any more are collected by the next delete phase
        return n

    # --- the routing lane ------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            nxt = self._requeue_due()
            if not self.pending:
                if self.table.has_garbage():
                    await self._collect()
                    continue
                self._idle.set()
                self._wake.clear()
                timeout = None if nxt is None else max(0.05, nxt - self.clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            await self._coalesce()
            deletes = self._pending_deletes
            work, self.pending = self.pending, {}
            self._work_left = len(work)
            self._pending_deletes = False
            # Only a table with withdrawals needs the whole-group pass; installs are sliced straight
            # off the dict, so the first batch reaches the kernel at once.
            self._writing, self._submitted_while_writing = True, False
            try:
                items: Iterator[tuple[IPNetwork, FibEntry | None]] = (
                    await self._withdraw_whole_groups(work) if deletes else iter(work.items()))
                await self._write(items)
            finally:
                self._writing = False
                self._write_end = asyncio.get_running_loop().time()
                self._work_left = 0
                self._check_backlog()
            self._update_gauges()

    async def _coalesce(self) -> None:
        """Hold a small pending set back while the routing lane streams (module docstring): until
        ``coalesce_routes`` are pending or ``coalesce_s`` has passed. Returns at once on an idle router
        (nothing written for ``coalesce_s``) and for a large set."""
        pace = self.pace
        if pace.coalesce_s <= 0 or len(self.pending) >= pace.coalesce_routes:
            return
        loop = asyncio.get_running_loop()
        streaming = self._submitted_while_writing or loop.time() - self._write_end < pace.coalesce_s
        self._submitted_while_writing = False
        if not streaming:
            return
        self._gathered.clear()
        self._gathering = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gathered.wait(), pace.coalesce_s)
        finally:
            self._gathering = False

    async def _write(self, items: Iterator[tuple[IPNetwork, FibEntry | None]]) -> None:
        """Pipelined: batch N+1 is planned and encoded here while batch N is in the kernel (the worker
        thread releases the GIL inside sendmsg), so Python and kernel time overlap."""
        pace = self.pace
        in_flight: tuple[list[Op], asyncio.Future[Results], int] | None = None
        size = min(pace.max_routes_per_send, pace.first_send)
        while True:
            epoch = self._failovers
            ops, msgs, taken = await self._plan_batch(items, size)
            if not taken:
                break
            size = pace.max_routes_per_send
            if not ops:
                continue
            if in_flight is None:
                in_flight = (ops, self._start_send(ops, msgs), epoch)
                continue
            done_ops, res, done_epoch = in_flight[0], await in_flight[1], in_flight[2]
            if pace.pause_s:
                await asyncio.sleep(pace.pause_s)
            # Hand batch N+1 to the kernel before the bookkeeping of batch N, which only records
            # results (planning already counted on batch N's objects being created).
            in_flight = (ops, self._start_send(ops, msgs), epoch)
            await self._complete(done_ops, res, done_epoch)
        if in_flight is not None:
            await self._complete(in_flight[0], await in_flight[1], in_flight[2])

    async def _plan_batch(self, items: Iterator[tuple[IPNetwork, FibEntry | None]],
                          size: int) -> tuple[list[Op], list[bytes], int]:
        """Plan and encode up to ``size`` routes in steps of bounded loop time, yielding between
        steps (the failover lane, BFD events and the API run in between)."""
        pace = self.pace
        ops: list[Op] = []
        msgs: list[bytes] = []
        taken = 0
        step = min(pace.plan_step_routes, 250)  # grows or shrinks to fit plan_step_s
        while taken < size:
            t0 = time.perf_counter()
            chunk = list(islice(items, min(step, size - taken)))
            if not chunk:
                break
            taken += len(chunk)
            self._work_left = max(0, self._work_left - len(chunk))
            if self._backlog_over:
                self._check_backlog()
            sub = self.planner.routes(chunk, self._unreachable)
            msgs += self.kernel.encode(sub, len(ops))
            ops += sub
            spent = time.perf_counter() - t0
            step = max(32, min(pace.plan_step_routes, int(len(chunk) * pace.plan_step_s / max(spent, 1e-6))))
            await asyncio.sleep(0)
        return ops, msgs, taken

    def _start_send(self, ops: list[Op], msgs: list[bytes]) -> asyncio.Future[Results]:
        if not self.inflight_batches and self.own_notice_filter is not None:
            self._notices_filtered = self.own_notice_filter(True)
        self.inflight_batches += 1
        count = not self._notices_filtered
        for op in ops:
            t = type(op)
            if t is RouteDelete:
                self.inflight_deletes.add(op.prefix)  # type: ignore[union-attr]
            elif (t is RouteInstall or t is RouteReplace) and count:
                self.own_route_notices += 1
            elif t is GroupDel or t is NexthopDel:
                self.table.busy.add(op.gid if t is GroupDel else op.nid)  # type: ignore[union-attr]
        t0 = time.perf_counter()
        fut = self.kernel.start_bulk(ops, msgs)
        if self.metrics is not None and msgs:
            hist = self.metrics.fib_write_seconds  # type: ignore[attr-defined]
            fut.add_done_callback(lambda _f: hist.observe(time.perf_counter() - t0))
        return fut

    def _batch_done(self) -> None:
        self.inflight_batches -= 1
        if not self.inflight_batches and self._notices_filtered and self.own_notice_filter is not None:
            self._notices_filtered = self.own_notice_filter(False)

    def _unreachable(self, prefix: IPNetwork, entry: FibEntry) -> None:
        self._fail(prefix, entry, errno_mod.ENETUNREACH)

    # --- results ---------------------------------------------------------------------------------
    def _fail(self, prefix: IPNetwork, entry: FibEntry | None, err: int) -> None:
        prev = self.failed.get(prefix)
        attempts = prev.attempts + 1 if prev else 1
        delay = RETRY_S[min(attempts - 1, len(RETRY_S) - 1)]
        self.failed[prefix] = FailedRoute(entry, err, attempts, self.clock() + delay)
        if self.metrics is not None:
            self.metrics.fib_errors.labels(errno_name(err)).inc()  # type: ignore[attr-defined]
        if attempts == 1:
            log.warning("kernel refused %s %s: %s", "install" if entry else "delete", prefix, errno_name(err))

    async def _complete(self, ops: list[Op], res: Results, epoch: int) -> None:
        """Apply a batch's results to the table and feed the batch to the mirrors, a slice of
        :data:`COMPLETE_STEP` operations per loop step. ``epoch``: the failover count when the batch
        was planned (a failover since then may have made the members of the groups it created stale).

        Between slices other callbacks may run and see the batch half recorded; every slice leaves the
        table consistent (a route is recorded with its group's reference), and the monitor ignores
        our own routes while ``inflight_batches`` counts this batch."""
        try:
            failed_objects: set[int] = set()
            for i in range(0, len(ops), COMPLETE_STEP):
                if i:
                    await asyncio.sleep(0)
                j = min(i + COMPLETE_STEP, len(ops))
                self._apply_slice(ops, res.errors, i, j, failed_objects)
                self._mirror(ops[i:j], {k - i: e for k, e in res.errors.items() if i <= k < j})
            stale_groups = self._finish_batch(ops, res, epoch != self._failovers)
        finally:
            self._batch_done()
        if stale_groups:  # a failover ran while these groups were being created: move them now
            self._failover(self.planner.regroup(set(), only=stale_groups), None, time.perf_counter())

    def apply_results(self, ops: Sequence[Op], res: Results, *, recheck_groups: bool = False) -> set[int]:
        """Match ``res`` to ``ops`` and record what the kernel accepted; returns groups created with
        members a failover has since made stale. Pure bookkeeping (unit-tested with fake results)."""
        self._apply_slice(ops, res.errors, 0, len(ops), set())
        return self._finish_batch(ops, res, recheck_groups)

    def _apply_slice(self, ops: Sequence[Op], errors: Mapping[int, int], i: int, j: int,
                     failed_objects: set[int]) -> None:
        """Record the results of ``ops[i:j]``; ``failed_objects`` carries refused nexthops and groups
        from earlier slices (a route on a group whose creation failed fails too)."""
        if not errors:
            self._complete_clean(ops, i, j)
        else:
            self._complete_errors(ops, errors, i, j, failed_objects)

    def _finish_batch(self, ops: Sequence[Op], res: Results, recheck_groups: bool) -> set[int]:
        if not self._notices_filtered:
            self.own_route_notices -= sum(1 for i in res.errors if type(ops[i]) in (RouteInstall, RouteReplace))
        self.operations += len(ops)
        self.batches += 1
        return self.planner.stale_members(ops) if recheck_groups else set()

    def _complete_clean(self, ops: Sequence[Op], i: int, j: int) -> None:
        """The common case, a batch without a single error: bookkeeping in bulk."""
        t = self.table
        installed = t.installed
        count = t.count
        refs: dict[int, int] = {}
        ok = {"install": 0, "delete": 0}
        failed = self.failed
        busy = t.busy
        for op in islice(ops, i, j):
            k = type(op)
            if k is RouteInstall:
                p = op.prefix  # type: ignore[union-attr]
                count[p.version] += 1
                installed[p] = op.gid  # type: ignore[union-attr]
                refs[op.gid] = refs.get(op.gid, 0) + 1  # type: ignore[union-attr]
                ok["install"] += 1
            elif k is RouteReplace:
                installed[op.prefix] = op.gid  # type: ignore[union-attr]
                refs[op.gid] = refs.get(op.gid, 0) + 1  # type: ignore[union-attr]
                refs[op.old_gid] = refs.get(op.old_gid, 0) - 1  # type: ignore[union-attr]
                ok["install"] += 1
            elif k is RouteDelete:
                p = op.prefix  # type: ignore[union-attr]
                self.inflight_deletes.discard(p)
                del installed[p]
                count[p.version] -= 1
                refs[op.old_gid] = refs.get(op.old_gid, 0) - 1  # type: ignore[union-attr]
                ok["delete"] += 1
            elif k is GroupAdd:
                g = t.group_by_id.get(op.gid)  # type: ignore[union-attr]
                if g is not None:
                    g.confirmed = True
            elif k is GroupReplace:
                g = t.group_by_id.get(op.gid)  # type: ignore[union-attr]
                if g is not None:
                    g.members = op.members  # type: ignore[union-attr]
            elif k is GroupDel:
                busy.discard(op.gid)  # type: ignore[union-attr]
            elif k is NexthopDel:
                busy.discard(op.nid)  # type: ignore[union-attr]
            if failed and k in (RouteInstall, RouteReplace, RouteDelete):
                failed.pop(op.prefix, None)  # type: ignore[union-attr]
        for gid, delta in refs.items():
            g = t.group_by_id.get(gid)
            if g is not None:
                g.refs += delta
        self._count_ops(ok, {})

    def _complete_errors(self, ops: Sequence[Op], errs: Mapping[int, int], start: int, stop: int,
                         failed_objects: set[int]) -> None:
        t = self.table
        ok = {"install": 0, "delete": 0}
        bad = {"install": 0, "delete": 0}
        for i in range(start, stop):
            op = ops[i]
            err = errs.get(i)
            k = type(op)
            if k is NexthopAdd:
                if err is not None:
                    if t.forget_nexthop(op.nid) is not None:  # type: ignore[union-attr]
                        t.oif.pop(op.gateway, None)  # type: ignore[union-attr] # resolve it again next time
                    failed_objects.add(op.nid)  # type: ignore[union-attr]
                continue
            if k is MplsLabelAdd:
                if err is not None:
                    log.warning("incoming-label route for nexthop %d refused: %s", op.nid,  # type: ignore[union-attr]
                                errno_name(err))
                    t.local_labels.pop(op.nid, None)  # type: ignore[union-attr]
                    if self.metrics is not None:
                        self.metrics.fib_errors.labels(errno_name(err)).inc()  # type: ignore[attr-defined]
                continue
            if k is GroupAdd:
                g = t.group_by_id.get(op.gid)  # type: ignore[union-attr]
                if err is not None or any(m in failed_objects for m in op.members):  # type: ignore[union-attr]
                    if g is not None:
                        t.forget_group(g.id)
                    failed_objects.add(op.gid)  # type: ignore[union-attr]
                elif g is not None:
                    g.confirmed = True
                continue
            if k is GroupReplace:
                g = t.group_by_id.get(op.gid)  # type: ignore[union-attr]
                if err is None and g is not None:
                    g.members = op.members  # type: ignore[union-attr]
                continue
            if k is GroupDel or k is NexthopDel:
                t.busy.discard(op.gid if k is GroupDel else op.nid)  # type: ignore[union-attr]
                continue
            if k is not RouteInstall and k is not RouteReplace and k is not RouteDelete:
                continue
            prefix = op.prefix  # type: ignore[union-attr]
            entry = None if k is RouteDelete else op.entry  # type: ignore[union-attr]
            kind = "install" if entry is not None else "delete"
            if k is RouteDelete:
                self.inflight_deletes.discard(prefix)
                if err == errno_mod.ESRCH:
                    err = None  # already gone
            elif err is None and op.gid in failed_objects:  # type: ignore[union-attr]
                err = errno_mod.ENETUNREACH
            if err is not None:
                bad[kind] += 1
                self._fail(prefix, entry, err)
                continue
            ok[kind] += 1
            self.failed.pop(prefix, None)
            if k is RouteDelete:
                t.route_gone(prefix)
            else:
                t.route_set(prefix, op.gid, op.old_gid if k is RouteReplace else None)  # type: ignore[union-attr]
        self._count_ops(ok, bad)

    def _count_ops(self, ok: dict[str, int], bad: dict[str, int]) -> None:
        m = self.metrics
        if m is None:
            return
        for kind, n in ok.items():
            if n:
                m.fib_operations.labels(kind, "ok").inc(n)  # type: ignore[attr-defined]
        for kind, n in bad.items():
            if n:
                m.fib_operations.labels(kind, "error").inc(n)  # type: ignore[attr-defined]

    async def _withdraw_whole_groups(
        self, work: dict[IPNetwork, FibEntry | None]
    ) -> Iterator[tuple[IPNetwork, FibEntry | None]]:
        """Delete the groups that ``work`` empties (one message each: the kernel drops their routes
        with them) and return the rest of the work. The scan runs in steps of :data:`SCAN_STEP`."""
        scan = self.planner.whole_group_scan()
        items = iter(work.items())
        while chunk := list(islice(items, SCAN_STEP)):
            scan.add(chunk)
            await asyncio.sleep(0)
        dels = scan.withdrawals()
        if not dels:
            return iter(work.items())
        ops: list[Op] = list(dels)
        res = await self._start_send(ops, self.kernel.encode(ops))
        self._batch_done()
        n = 0
        for i, d in enumerate(dels):
            self.table.busy.discard(d.gid)
            if i in res.errors:
                continue
            for p in d.routes:
                self.table.route_gone(p)
                if self.failed:
                    self.failed.pop(p, None)
            n += len(d.routes)
            self.table.forget_group(d.gid)
        self._mirror(ops, res.errors)
        if self.metrics is not None and n:
            self.metrics.fib_operations.labels("delete", "ok").inc(n)  # type: ignore[attr-defined]
        self.operations += len(ops)
        installed = self.table.installed
        # Lazily, as the writer consumes it: a withdrawal whose route went with its group is done
        # (each prefix occurs once in ``work``, so nothing else changes the answer meanwhile).
        return ((p, e) for p, e in work.items() if e is not None or p in installed)

    async def _collect(self) -> None:
        ops = self.planner.collect()
        res = await self._start_send(ops, self.kernel.encode(ops))
        self._batch_done()
        for i, err in res.errors.items():
            if err != errno_mod.ENOENT:
                log.warning("deleting unused %s failed: %s", type(ops[i]).__name__, errno_name(err))
        for op in ops:
            if type(op) is GroupDel:
                self.table.busy.discard(op.gid)  # type: ignore[union-attr]
            elif type(op) is NexthopDel:
                self.table.busy.discard(op.nid)  # type: ignore[union-attr]
        self._mirror(ops, res.errors)
        self.operations += len(ops)
        self._update_gauges()

    def _requeue_due(self) -> float | None:
        now = self.clock()
        nxt: float | None = None
        for prefix, f in list(self.failed.items()):
            if f.next_retry <= now:
                if prefix not in self.pending:
                    self.pending[prefix] = f.entry
                    if f.entry is None:
                        self._pending_deletes = True
            else:
                nxt = f.next_retry if nxt is None else min(nxt, f.next_retry)
        return nxt

    # --- mirrors ---------------------------------------------------------------------------------
    def _mirror(self, ops: Sequence[Op], kernel_errors: Mapping[int, int]) -> None:
        for m in self.mirrors:
            try:
                res = m.apply(ops, kernel_errors, self.table)
            except OSError as exc:
                log.error("mirror provider %s failed: %s", type(m).__name__, exc)
                continue
            for i, err in res.errors.items():
                log.error("mirror provider %s refused %s: %s", type(m).__name__, ops[i], errno_name(err))

    def touch(self, prefixes: Iterable[IPNetwork]) -> None:
        """The table changed for ``prefixes`` outside an operation (drift repair): mirrors re-check."""
        ps = list(prefixes)
        for m in self.mirrors:
            m.touch(ps)

    def _update_gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        t = self.table
        m.fib_routes.labels("ipv4").set(t.count[4])  # type: ignore[attr-defined]
        m.fib_routes.labels("ipv6").set(t.count[6])  # type: ignore[attr-defined]
        m.fib_failed_routes.set(len(self.failed))  # type: ignore[attr-defined]
        m.fib_nexthop_groups.set(len(t.group_by_id))  # type: ignore[attr-defined]

    # --- policy: source address validation (XDP only) ---------------------------------------------
    def apply_sav(self, ops: Sequence[SavOp]) -> Results:
        """Source address validation changes, applied at once on the loop thread (a handful of map
        writes, no kernel lock): to every mirror that validates sources. The answer is the first such
        mirror's results; without one, every operation fails with EOPNOTSUPP (nothing validates)."""
        out: Results | None = None
        for m in self.mirrors:
            apply = getattr(m, "apply_sav", None)
            if apply is None:
                continue
            res = apply(ops)
            for i, err in res.errors.items():
                log.error("mirror provider %s refused %s: %s", type(m).__name__, ops[i], errno_name(err))
            out = out or res
        return out if out is not None else Results(ops, dict.fromkeys(range(len(ops)), errno_mod.EOPNOTSUPP))

    # --- local repair plans (bfd/repair.py) ------------------------------------------------------
    def repair_fingerprint(self) -> tuple[int, ...]:
        """Changes whenever a plan could: a batch or a failover completed, groups came or went, the
        dead set changed (cheap: the plans themselves are only recomputed when this moves)."""
        t = self.table
        return (self.batches, self._failovers, len(t.group_by_id), t.next_id, len(t.dead), len(t.busy))

    def repair_plans(self, gws: Iterable[IPAddress]) -> dict[IPAddress, RepairPlan]:
        """Per gateway, what moves traffic off it, handed to the BFD process, which applies it itself
        the moment that session goes Down: the netlink messages (group replaces, no NLM_F_CREATE) and
        the same rewrites as writes to the XDP ``groups`` map (pinned path, key, value) when a mirror
        offers them."""
        out: dict[IPAddress, RepairPlan] = {}
        for gw, ops in self.planner.repair_plans(gws).items():
            maps: list[tuple[str, bytes, bytes]] = []
            for m in self.mirrors:
                writes = getattr(m, "repair_writes", None)
                if writes is not None and ops:
                    maps += writes(ops)
            out[gw] = RepairPlan(b"".join(self.kernel.encode(ops)) if ops else b"", tuple(maps))
        return out

    # --- the failover lane -------------------------------------------------------------------------
    def fail_gateways_now(self, gws: set[IPAddress], detected_at: float | None = None) -> FailoverResult:
        """Neighbours are dead (BFD Down, link down): move every group off them, now, in one message.
        Synchronous on the loop thread; never waits for the routing lane. The XDP maps move before
        the kernel (no lock there); the kernel's refusals are undone in the maps."""
        t0 = time.perf_counter()
        self.table.dead |= gws
        return self._failover(self.planner.regroup(gws), detected_at, t0)

    def recover_gateways_now(self, gws: set[IPAddress]) -> FailoverResult:
        """Neighbours are back: move their groups back to the primaries (recreating nexthops a link
        flap flushed), in one message."""
        t0 = time.perf_counter()
        self.table.dead -= gws
        return self._failover(self.planner.regroup(gws), None, t0)

    def _failover(self, ops: list[Op], detected_at: float | None, t0: float) -> FailoverResult:
        self._failovers += 1
        errors: dict[int, int] = {}
        if ops:
            # The fast path first: a BPF map write takes no kernel lock, while the kernel's group
            # replace needs RTNL, which the bulk writer can hold for 10-45 ms through one fib trie
            # resize during a table load (benchmarks/ROOTCAUSE-schedlat.md). Traffic on XDP moves
            # now; a rewrite the kernel then refuses is put back in the maps below.
            self._mirror(ops, {})
            res = self.kernel.send_now(ops)
            errors = res.errors
            if errors:  # retry the refused operations once, in their order
                idx = sorted(errors)
                again = self.kernel.send_now([ops[i] for i in idx])
                errors = {idx[j]: e for j, e in again.errors.items()}
            self._apply_failover(ops, errors)
            if errors:
                undo = [GroupReplace(op.gid, op.old_members, op.members, failover=True)  # type: ignore[union-attr]
                        for i, op in enumerate(ops) if i in errors and type(op) is GroupReplace]
                self._mirror(undo, {})
        rewritten = sum(1 for i, op in enumerate(ops) if type(op) is GroupReplace and i not in errors)
        refused = sum(1 for i in errors if type(ops[i]) is GroupReplace)
        ms = None
        if detected_at is not None:
            ms = self.last_failover_ms = (self.clock() - detected_at) * 1000
            if self.metrics is not None:
                self.metrics.fib_failover_seconds.observe(ms / 1000)  # type: ignore[attr-defined]
        if ops:
            self.wake()  # nexthops released by the rewrite are collected by the writer
        return FailoverResult(rewritten, refused, ms, (time.perf_counter() - t0) * 1000)

    def _apply_failover(self, ops: Sequence[Op], errors: Mapping[int, int]) -> None:
        """Record the rewrites the kernel accepted; a refused one leaves its group's members as they
        were (what the kernel still has) and is counted."""
        t = self.table
        for i, op in enumerate(ops):
            err = errors.get(i)
            k = type(op)
            if k is GroupReplace:
                g = t.group_by_id.get(op.gid)  # type: ignore[union-attr]
                if err is None:
                    if g is not None:
                        g.members = op.members  # type: ignore[union-attr]
                    continue
                self.failover_errors += 1
                log.error("group %d rewrite refused twice: %s (kept on its old members)", op.gid,  # type: ignore[union-attr]
                          errno_name(err))
                if self.metrics is not None:
                    self.metrics.fib_failover_errors.inc()  # type: ignore[attr-defined]
            elif err is not None and k is NexthopAdd:
                if t.forget_nexthop(op.nid) is not None:  # type: ignore[union-attr]
                    t.oif.pop(op.gateway, None)  # type: ignore[union-attr]
            elif err is not None and k is MplsLabelAdd:
                t.local_labels.pop(op.nid, None)  # type: ignore[union-attr]
