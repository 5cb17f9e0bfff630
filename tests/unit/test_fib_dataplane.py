"""The dataplane's pure parts: planner output, the refcounted table, results matched to requests, and
the failover lane's rollback — against fake providers (no socket, no kernel).

The fakes stand in only for *what the kernel answered*; what the kernel actually does with these
operations is in tests/integration/test_fib_kernel.py.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
from collections.abc import Mapping, Sequence

from common.model import FibEntry
from fib import ops as fo
from fib.dataplane import Dataplane, Pace
from fib.ops import Results
from fib.planner import Planner
from fib.table import FibTable, FibView

A = ipaddress.ip_address
N = ipaddress.ip_network
OIFS = {A("10.0.0.2"): 3, A("10.0.0.3"): 3, A("10.0.0.4"): 3}
GW2, GW3, GW4 = A("10.0.0.2"), A("10.0.0.3"), A("10.0.0.4")


class FakeKernel:
    """Answers with the errno configured per operation (by a predicate), records every send."""

    def __init__(self) -> None:
        self.refuse: dict[type, tuple[object, int]] = {}  # op type -> (predicate(op), errno)
        self.sent_now: list[list[fo.Op]] = []
        self.sent_bulk: list[list[fo.Op]] = []

    def _errors(self, ops: Sequence[fo.Op]) -> dict[int, int]:
        out = {}
        for i, op in enumerate(ops):
            rule = self.refuse.get(type(op))
            if rule is not None and rule[0](op):  # type: ignore[operator]
                out[i] = rule[1]
        return out

    def encode(self, ops: Sequence[fo.Op], start: int = 0) -> list[bytes]:
        return [b"x"] * len(ops)

    def start_bulk(self, ops: Sequence[fo.Op], msgs: list[bytes]) -> asyncio.Future[Results]:
        self.sent_bulk.append(list(ops))
        f: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
        f.set_result(Results(ops, self._errors(ops)))
        return f

    def send_now(self, ops: Sequence[fo.Op]) -> Results:
        self.sent_now.append(list(ops))
        return Results(ops, self._errors(ops))


class FakeMirror:
    def __init__(self) -> None:
        self.fed: list[tuple[list[fo.Op], dict[int, int]]] = []
        self.touched: list = []

    def apply(self, ops: Sequence[fo.Op], kernel_errors: Mapping[int, int], view: FibView) -> Results:
        self.fed.append((list(ops), dict(kernel_errors)))
        return Results(ops)

    def touch(self, prefixes: object) -> None:
        self.touched.append(prefixes)


class _Series:
    """A Prometheus series stand-in: counts what was added."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, n: float = 1) -> None:
        self.value += n

    def observe(self, v: float) -> None:
        self.value += 1

    def set(self, v: float) -> None:
        self.value = v

    def labels(self, *a: str) -> _Series:
        return self


class FakeMetrics:
    def __init__(self) -> None:
        self.fib_failover_errors = _Series()
        self.fib_errors, self.fib_operations, self.fib_failover_seconds = _Series(), _Series(), _Series()
        self.fib_write_seconds, self.fib_routes, self.fib_failed_routes = _Series(), _Series(), _Series()
        self.fib_nexthop_groups = _Series()

    @property
    def failover_errors(self) -> float:
        return self.fib_failover_errors.value


def _dp() -> tuple[Dataplane, FakeKernel, FakeMirror, FakeMetrics]:
    table = FibTable(200)
    kernel = FakeKernel()
    metrics = FakeMetrics()
    dp = Dataplane(table, Planner(table, OIFS.get), kernel, pace=Pace(max_routes_per_send=4),  # type: ignore[arg-type]
                   clock=lambda: 100.0, metrics=metrics)
    mirror = FakeMirror()
    dp.mirrors = [mirror]
    return dp, kernel, mirror, metrics


def entry(prefix: str, *gws: ipaddress.IPv4Address, backup: tuple = ()) -> FibEntry:
    return FibEntry(N(prefix), tuple(gws), (), tuple(backup))


def _install(dp: Dataplane, *entries: FibEntry) -> list[fo.Op]:
    ops = dp.planner.routes([(e.prefix, e) for e in entries], dp._unreachable)
    dp.apply_results(ops, Results(ops))
    return ops


# --- planner -------------------------------------------------------------------------------------------
def test_planner_creates_hops_for_primaries_and_backups_then_the_group_then_routes() -> None:
    dp, *_ = _dp()
    e1 = entry("192.0.2.0/24", GW2, backup=(GW3,))
    e2 = FibEntry(N("198.51.100.0/24"), e1.nexthops, (), e1.backup)  # same interned tuples: same group
    ops = dp.planner.routes([(e1.prefix, e1), (e2.prefix, e2)], dp._unreachable)
    assert [type(op) for op in ops] == [fo.NexthopAdd, fo.NexthopAdd, fo.GroupAdd, fo.RouteInstall, fo.RouteInstall]
    nh2, nh3, grp = ops[0], ops[1], ops[2]
    assert (nh2.gateway, nh2.oif, nh3.gateway) == (GW2, 3, GW3)  # type: ignore[union-attr]
    assert grp.members == (nh2.nid,)  # type: ignore[union-attr] # live primaries only; the backup is held
    assert {op.gid for op in ops[3:]} == {grp.gid}  # type: ignore[union-attr]
    # Nothing recorded as installed before the results.
    assert dp.table.installed == {}


def test_planner_skips_no_op_updates_and_replaces_and_deletes() -> None:
    dp, *_ = _dp()
    e = entry("192.0.2.0/24", GW2)
    _install(dp, e)
    assert dp.planner.routes([(e.prefix, entry("192.0.2.0/24", GW2))], dp._unreachable) == []
    ops = dp.planner.routes([(e.prefix, entry("192.0.2.0/24", GW3))], dp._unreachable)
    assert [type(op) for op in ops] == [fo.NexthopAdd, fo.GroupAdd, fo.RouteReplace]
    assert ops[-1].old_gid == dp.table.installed[e.prefix]  # type: ignore[union-attr]
    (d,) = dp.planner.routes([(e.prefix, None)], dp._unreachable)
    assert d == fo.RouteDelete(e.prefix, dp.table.installed[e.prefix])


def test_an_unreachable_gateway_fails_the_route_without_an_operation() -> None:
    dp, *_ = _dp()
    e = entry("192.0.2.0/24", A("10.9.9.9"))
    assert dp.planner.routes([(e.prefix, e)], dp._unreachable) == []
    assert dp.failed[e.prefix].errno == errno.ENETUNREACH


# --- table refcounts -----------------------------------------------------------------------------------
def test_refcounts_follow_routes_and_garbage_is_collected_in_order() -> None:
    dp, *_ = _dp()
    t = dp.table
    a, b = entry("192.0.2.0/24", GW2, backup=(GW3,)), entry("198.51.100.0/24", GW2, backup=(GW3,))
    _install(dp, a, b)
    (g,) = t.group_by_id.values()
    assert g.refs == 2 and sorted(t.nh_refs.values()) == [1, 1]  # both hops held by the one group
    assert t.count[4] == 2 and not t.has_garbage()
    ops = dp.planner.routes([(a.prefix, None)], dp._unreachable)
    dp.apply_results(ops, Results(ops))
    assert g.refs == 1 and not t.has_garbage()
    ops = dp.planner.routes([(b.prefix, None)], dp._unreachable)
    dp.apply_results(ops, Results(ops))
    assert g.refs == 0 and t.has_garbage()
    col = dp.planner.collect()
    assert [type(op) for op in col] == [fo.GroupDel, fo.NexthopDel, fo.NexthopDel]
    assert t.group_by_id == {} and t.nh_key == {} and t.nexthops == {} and t.nh_refs == {} and t.count[4] == 0


def test_a_whole_group_withdrawal_carries_its_routes() -> None:
    dp, *_ = _dp()
    a, b = entry("192.0.2.0/24", GW2), entry("198.51.100.0/24", GW2)
    _install(dp, a, b)
    scan = dp.planner.whole_group_scan()
    scan.add([(a.prefix, None)])
    assert scan.withdrawals() == []  # b still uses the group
    scan.add([(b.prefix, None)])  # fed in slices, as the dataplane does
    (d,) = scan.withdrawals()
    assert set(d.routes) == {a.prefix, b.prefix}
    scan = dp.planner.whole_group_scan()
    scan.add([(a.prefix, None), (b.prefix, None), (N("203.0.113.0/24"), entry("203.0.113.0/24", GW2))])
    assert scan.withdrawals() == []  # an install in the same work needs the group


# --- results matched to requests -----------------------------------------------------------------------
def test_results_are_matched_to_their_operations() -> None:
    dp, *_ = _dp()
    a, b, c = (entry(f"198.51.{i}.0/24", GW2) for i in range(3))
    ops = dp.planner.routes([(a.prefix, a), (b.prefix, b), (c.prefix, c)], dp._unreachable)
    i_b = next(i for i, op in enumerate(ops) if getattr(op, "prefix", None) == b.prefix)
    res = Results(ops, {i_b: errno.EEXIST})
    assert [r.ok for r in res].count(False) == 1 and res[i_b].error == "EEXIST" and res[i_b].op is ops[i_b]
    dp.apply_results(ops, res)
    assert set(dp.table.installed) == {a.prefix, c.prefix}
    assert dp.failed[b.prefix].errno == errno.EEXIST and dp.failed[b.prefix].entry == b
    assert dp.failed[b.prefix].next_retry == 101.0  # first retry after 1 s
    (g,) = dp.table.group_by_id.values()
    assert g.refs == 2 and g.confirmed


def test_a_refused_group_is_rolled_back_and_its_routes_fail() -> None:
    dp, *_ = _dp()
    a = entry("192.0.2.0/24", GW2)
    ops = dp.planner.routes([(a.prefix, a)], dp._unreachable)
    i_g = next(i for i, op in enumerate(ops) if isinstance(op, fo.GroupAdd))
    dp.apply_results(ops, Results(ops, {i_g: errno.EINVAL}))
    assert dp.table.group_by_id == {} and dp.table.groups == {} and dp.table.installed == {}
    assert dp.failed[a.prefix].errno == errno.ENETUNREACH
    assert dp.table.has_garbage()  # the nexthop nobody holds any more is collected next


async def test_the_writer_feeds_the_same_ops_in_the_same_order_to_its_providers() -> None:
    dp, kernel, mirror, _ = _dp()
    kernel.refuse[fo.RouteInstall] = (lambda op: op.prefix == N("198.51.3.0/24"), errno.EEXIST)
    task = asyncio.create_task(dp.run())
    try:
        for i in range(10):
            e = entry(f"198.51.{i}.0/24", GW2)
            dp.submit(e.prefix, e)
        await asyncio.wait_for(dp.wait_idle(), 5)
    finally:
        task.cancel()
    assert [ops for ops, _errs in mirror.fed] == kernel.sent_bulk  # same operations, same order
    assert len(kernel.sent_bulk) >= 3  # 10 routes at 4 per message
    refused = [(ops[i], e) for ops, errs in mirror.fed for i, e in errs.items()]
    assert refused == [(fo.RouteInstall(N("198.51.3.0/24"), dp.table.installed[N("198.51.0.0/24")],
                                        entry("198.51.3.0/24", GW2)), errno.EEXIST)]
    assert len(dp.table.installed) == 9 and set(dp.failed) == {N("198.51.3.0/24")}


# --- the failover lane ---------------------------------------------------------------------------------
def test_failover_rewrites_groups_and_a_refused_rewrite_is_retried_once_then_rolled_back() -> None:
    dp, kernel, mirror, metrics = _dp()
    t = dp.table
    _install(dp, entry("192.0.2.0/24", GW2, backup=(GW3,)), entry("198.51.100.0/24", GW2, GW4, backup=(GW3,)))
    ga = t.groups[((GW2,), (GW3,), (), ())]
    gb = t.groups[((GW2, GW4), (GW3,), (), ())]
    before_b = gb.members
    kernel.refuse[fo.GroupReplace] = (lambda op: op.gid == gb.id, errno.ENOENT)
    res = dp.fail_gateways_now({GW2}, detected_at=99.99)
    assert (res.rewritten, res.errors) == (1, 1)
    assert res.ms_since_detected is not None and abs(res.ms_since_detected - 10.0) < 1e-6
    assert dp.last_failover_ms == res.ms_since_detected
    # One message with both rewrites, then one retry of the refused one only.
    assert [[type(op) for op in ops] for ops in kernel.sent_now] == [[fo.GroupReplace] * 2, [fo.GroupReplace]]
    assert all(op.failover for op in kernel.sent_now[0])  # type: ignore[union-attr]
    assert kernel.sent_now[1][0].gid == gb.id  # type: ignore[union-attr]
    # Accepted: moved to the backup. Refused: members unchanged (what the kernel still has), counted.
    assert [t.nh_key[m][0] for m in ga.members] == [GW3]
    assert gb.members == before_b and dp.failover_errors == 1 and metrics.failover_errors == 1
    # The XDP mirror moved first (no kernel lock there), with every rewrite; the one the kernel then
    # refused was put back on its old members, so both providers agree again.
    (ops, errs), (undo, undo_errs) = mirror.fed
    assert ops == kernel.sent_now[0] and not errs and not undo_errs
    assert [(u.gid, u.members) for u in undo] == [(gb.id, before_b)]  # type: ignore[union-attr]
    assert GW2 in t.dead  # BFD's verdict stands; new groups are planned without GW2


def test_a_rewrite_accepted_on_retry_counts_as_rewritten() -> None:
    dp, kernel, _mirror, metrics = _dp()
    _install(dp, entry("192.0.2.0/24", GW2, backup=(GW3,)))
    tries = []

    def flaky(op: fo.GroupReplace) -> bool:
        tries.append(op)
        return len(tries) == 1  # refused once (EBUSY), accepted the second time

    kernel.refuse[fo.GroupReplace] = (flaky, errno.EBUSY)
    res = dp.fail_gateways_now({GW2}, None)
    assert (res.rewritten, res.errors, res.ms_since_detected) == (1, 0, None)
    assert metrics.failover_errors == 0


def test_recovery_moves_groups_back_and_no_op_failovers_send_nothing() -> None:
    dp, kernel, *_ = _dp()
    t = dp.table
    _install(dp, entry("192.0.2.0/24", GW2, backup=(GW3,)))
    (g,) = t.group_by_id.values()
    primary = g.members
    dp.fail_gateways_now({GW2}, None)
    assert g.members != primary
    assert dp.fail_gateways_now({GW2}, None).rewritten == 0 and len(kernel.sent_now) == 1
    assert dp.fail_gateways_now({A("10.0.0.99")}, None).rewritten == 0 and len(kernel.sent_now) == 1
    res = dp.recover_gateways_now({GW2})
    assert res.rewritten == 1 and g.members == primary and GW2 not in t.dead


def test_a_group_created_while_a_failover_ran_is_moved_when_its_batch_completes() -> None:
    """The failover lane leaves unconfirmed groups alone (their creation is in the kernel's queue);
    the writer re-checks them against the dead set when the batch's results arrive."""
    dp, kernel, *_ = _dp()
    e = entry("192.0.2.0/24", GW2, backup=(GW3,))
    ops = dp.planner.routes([(e.prefix, e)], dp._unreachable)  # planned and "sent", no results yet
    (g,) = dp.table.group_by_id.values()
    assert not g.confirmed
    res = dp.fail_gateways_now({GW2}, None)
    assert res.rewritten == 0 and kernel.sent_now == []  # nothing to rewrite yet
    stale = dp.apply_results(ops, Results(ops), recheck_groups=True)
    assert stale == {g.id}
    dp._failover(dp.planner.regroup(set(), only=stale), None, 0.0)
    assert [dp.table.nh_key[m][0] for m in g.members] == [GW3]


# --- coalescing (issue 12: the FIB trickle) -------------------------------------------------------------
def _coalescing_dp(routes: int, wait_s: float) -> tuple[Dataplane, FakeKernel]:
    dp, kernel, _mirror, _metrics = _dp()
    dp.pace = Pace(max_routes_per_send=10000, coalesce_routes=routes, coalesce_s=wait_s)
    return dp, kernel


async def _until(pred: object, within: float = 5.0) -> float:
    """Loop time until ``pred()`` holds (polled every loop iteration)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not pred():  # type: ignore[operator]
        assert loop.time() - t0 < within, "condition not reached in time"
        await asyncio.sleep(0)  # poll: one loop iteration per check, bounded by `within`
    return loop.time() - t0


async def test_a_lone_change_on_an_idle_router_goes_out_at_once() -> None:
    dp, kernel = _coalescing_dp(1000, 1.0)
    task = asyncio.create_task(dp.run())
    try:
        await asyncio.sleep(0)  # poll: one loop iteration, so the writer task runs
        for i in range(3):  # idle in between: each one is written alone, none waits for company
            e = entry(f"198.51.{i}.0/24", GW2)
            dp.submit_many([(e.prefix, e)])
            assert await _until(lambda n=i + 1: len(kernel.sent_bulk) == n) < 0.5
            # the router is idle again once nothing was written for coalesce_s
            await _until(lambda: asyncio.get_running_loop().time() - dp._write_end > dp.pace.coalesce_s)
    finally:
        task.cancel()
    assert len(dp.table.installed) == 3


async def test_a_stream_of_small_diffs_is_written_in_few_batches_and_waits_a_bounded_time() -> None:
    dp, kernel = _coalescing_dp(50, 0.3)
    task = asyncio.create_task(dp.run())
    try:
        await asyncio.sleep(0)  # poll: one loop iteration, so the writer task runs
        n = 0

        def more(k: int) -> None:
            nonlocal n
            for _ in range(k):
                e = entry(f"10.{n >> 8}.{n & 255}.0/24", GW2)
                dp.submit_many([(e.prefix, e)])  # the owner's diffs, one UPDATE at a time
                n += 1

        more(1)
        await _until(lambda: len(kernel.sent_bulk) == 1)  # the first goes at once
        # The routing lane keeps submitting: 120 more, a few per loop iteration.
        for _ in range(40):
            more(3)
            await asyncio.sleep(0)  # poll: one loop iteration between submissions, as the routing lane yields
        await asyncio.wait_for(dp.wait_idle(), 5)
        assert len(dp.table.installed) == 121
        assert len(kernel.sent_bulk) <= 4  # 1 + batches of >= 50 (not 40 trickles)
        # The tail of a stream is held back at most coalesce_s.
        more(2)
        waited = await _until(lambda: len(dp.table.installed) == 123)
        assert 0.2 < waited < 1.5
    finally:
        task.cancel()


async def test_a_large_diff_is_not_held_back() -> None:
    dp, kernel = _coalescing_dp(50, 5.0)
    task = asyncio.create_task(dp.run())
    try:
        await asyncio.sleep(0)  # poll: the writer task starts
        e = entry("198.51.0.0/24", GW2)
        dp.submit_many([(e.prefix, e)])
        await _until(lambda: len(kernel.sent_bulk) == 1)
        # Streaming (just written), but 60 >= coalesce_routes pending: written at once.
        dp.submit_many((x.prefix, x) for x in (entry(f"10.0.{i}.0/24", GW2) for i in range(60)))
        assert await _until(lambda: len(dp.table.installed) == 61) < 1.0
    finally:
        task.cancel()


# --- backlog watermarks --------------------------------------------------------------------------------
async def test_the_backlog_is_reported_above_high_and_again_at_low() -> None:
    """The daemon holds the routing lane between the two reports (``fib/dataplane.py``, "Backlog"):
    the writer must say when it is back at ``low``, from inside a write as batches are taken."""
    dp, kernel, _mirror, _ = _dp()  # 4 routes per batch
    said: list[tuple[bool, int]] = []
    dp.watch_backlog(10, 3, lambda over: said.append((over, dp.backlog())))
    dp.submit_many((e.prefix, e) for e in (entry(f"198.51.{i}.0/24", GW2) for i in range(8)))
    assert said == [] and dp.backlog() == 8
    dp.submit_many((e.prefix, e) for e in (entry(f"198.52.{i}.0/24", GW2) for i in range(12)))
    assert said == [(True, 20)]
    task = asyncio.create_task(dp.run())
    try:
        await asyncio.wait_for(dp.wait_idle(), 5)
    finally:
        task.cancel()
    assert said[1][0] is False and said[1][1] <= 3 and len(said) == 2  # once each way
    assert len(dp.table.installed) == 20 and dp.backlog() == 0
    assert len(kernel.sent_bulk) >= 5


def test_backlog_watermarks_must_be_ordered() -> None:
    dp, *_ = _dp()
    for high, low in ((3, 3), (3, 5), (3, -1)):
        try:
            dp.watch_backlog(high, low, lambda over: None)
        except ValueError:
            continue
        raise AssertionError(f"accepted high={high} low={low}")
