"""The FIB monitor: notices what others do to our routes and nexthops, and to our links.

Theory of operation
-------------------
One NETLINK_ROUTE notification socket (routes, nexthops, links) read on the event loop:

- **drift**: a route of ours deleted or re-pointed by someone else is resubmitted to the dataplane
  (counted in ``drift_repaired``, ``pop_router_fib_drift_repaired_total``); a nexthop or group of
  ours deleted by someone else (the kernel silently drops the routes on it) triggers a **resync**;
- **resync** (also after ENOBUFS: notifications were lost): dump the kernel, forget the objects it
  lost, and resubmit every route that differs. Serialised: two overlapping resyncs would each repair
  from their own dump and undo the other's repairs;
- **links**: a link going down makes the failover lane move its gateways to their backups at once
  (the kernel has already flushed its nexthops), then a resync rebuilds what the kernel flushed; a
  link coming back is resynced first, then its gateways recovered.

Our own writes cause one RTM_NEWROUTE each, a million for a full table. While the dataplane has
batches in the kernel a socket filter drops them there (:class:`fib.netlink.OwnRouteFilter`); where
the kernel refuses the filter they are recognised without decoding (protocol byte, the dataplane's
count of notices still due, batches in flight). The reader is bounded: each callback reads for at
most :data:`READ_BUDGET_S`, then returns; the socket is still readable, so the loop calls it again
after the other ready callbacks (the failover lane, BFD, the API) have run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import logging
import socket
import struct
import time
from collections.abc import Coroutine
from typing import Any

from common.model import IPAddress, IPNetwork
from common.netns import netns as enter_netns
from fib.dataplane import Dataplane
from fib.kernel_provider import KernelProvider
from fib.netlink import (
    RTM_DELLINK,
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    OwnRouteFilter,
    decode_link_state,
    decode_nexthop,
    decode_route_any,
    monitor_socket,
)
from fib.ops import BLACKHOLE_GID
from fib.table import FibTable, route_gid

log = logging.getLogger(__name__)

#: Loop time one reader callback may take before it gives the loop back.
READ_BUDGET_S = 0.001
_HDR = struct.Struct("=IH")  # nlmsghdr: len, type


class FibMonitor:
    def __init__(self, dataplane: Dataplane, table: FibTable, kernel: KernelProvider, *,
                 route_table: int, metric: int, metrics: object | None = None) -> None:
        self.dp = dataplane
        self.table = table
        self.kernel = kernel
        self.protocol = table.protocol
        self.route_table = route_table
        self.metric = metric
        self.metrics = metrics
        self.drift_repaired: dict[str, int] = {}
        self.down_links: set[int] = set()
        self._down_gws: dict[int, set[IPAddress]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._resync_lock = asyncio.Lock()
        self._resync_again = False
        self._sock: socket.socket | None = None
        self._buf = bytearray(1 << 20)
        self._own_filter: OwnRouteFilter | None = None

    def start(self) -> None:
        with enter_netns(self.kernel.netns):
            self._sock = monitor_socket()
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_notify)
        self._own_filter = OwnRouteFilter(self.protocol)
        self.dp.own_notice_filter = self._filter_own

    def _filter_own(self, on: bool) -> bool:
        """Keep our own route notifications out of the socket while the dataplane has batches in
        the kernel (:class:`fib.netlink.OwnRouteFilter`). Returns whether the filter is attached now:
        False, the dataplane counts them instead, as it did before, and the reader skips that many;
        True, it must not count them (they never arrive)."""
        sock = self._sock
        if sock is None or self._own_filter is None:
            return False
        try:
            if on:
                self._own_filter.attach(sock)
            else:
                self._own_filter.detach(sock)
        except OSError as exc:
            if on:
                log.warning("route notification filter refused (%s): our own writes' notifications are "
                            "read and skipped instead", exc)
                self._own_filter = None  # not again: the counting fallback is correct, only slower
                return False
            # Still attached: counting notices that cannot arrive would make later foreign changes
            # look like ours. Say so; the next batch's end tries again.
            log.warning("route notification filter could not be removed (%s): it stays until the next "
                        "batch ends", exc)
            return True
        return on

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for t in list(self._tasks):
            t.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.add(t := asyncio.get_running_loop().create_task(coro))
        t.add_done_callback(self._tasks.discard)

    def _repaired(self, kind: str, n: int = 1) -> None:
        self.drift_repaired[kind] = self.drift_repaired.get(kind, 0) + n
        if self.metrics is not None:
            self.metrics.fib_drift_repaired.labels(kind).inc(n)  # type: ignore[attr-defined]

    # --- the reader ------------------------------------------------------------------------------
    def _on_notify(self) -> None:
        """Handle notifications for at most :data:`READ_BUDGET_S`, then give the loop back."""
        if self._sock is None:
            return
        buf = self._buf
        deadline = time.perf_counter() + READ_BUDGET_S
        while True:
            try:
                n = self._sock.recv_into(buf)  # one datagram each, never truncated (1 MiB buffer)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno_mod.ENOBUFS:
                    log.warning("route notifications overflowed (ENOBUFS): resynchronising with the kernel")
                    self.dp.own_route_notices = 0
                    self._spawn(self.resync())
                    continue
                raise
            if not n:
                return
            self._handle(buf, n)
            if time.perf_counter() > deadline:
                return  # still readable: the loop calls us again after the other ready callbacks

    def _handle(self, data: bytearray, end: int) -> None:
        proto = self.protocol
        dp = self.dp
        unpack = _HDR.unpack_from
        off = 0
        while off + 16 <= end:
            length, kind = unpack(data, off)
            if length < 16:
                return
            if kind == RTM_NEWROUTE or kind == RTM_DELROUTE:
                # Cheap filters first: a full-table write brings one notification per route.
                if length < 28 or data[off + 21] != proto:  # rtm_protocol
                    pass
                elif kind == RTM_NEWROUTE and (dp.inflight_batches or dp.own_route_notices > 0):
                    if dp.own_route_notices > 0:
                        dp.own_route_notices -= 1  # most likely our own; a change hidden here is found by resync
                else:
                    self._route_notice(kind, bytes(data[off:off + length]))
            elif kind == RTM_NEWLINK or kind == RTM_DELLINK:
                st = decode_link_state(bytes(data[off:off + length]))
                if st is not None:
                    self._link_notice(*st)
            elif kind == RTM_DELNEXTHOP:
                self._nexthop_deleted(bytes(data[off:off + length]))
            off += (length + 3) & ~3

    def _nexthop_deleted(self, msg: bytes) -> None:
        t = self.table
        nh = decode_nexthop(msg)
        if nh is None:
            return
        if nh.id in t.nh_key and t.nh_key[nh.id][1] in self.down_links:
            return  # the kernel flushing a downed link's nexthops: handled by _link_notice
        if nh.id not in t.busy and (nh.id in t.group_by_id or nh.id in t.nh_key):
            log.warning("nexthop %d of ours was deleted by someone else: resynchronising", nh.id)
            self._repaired("nexthop_deleted")
            self._spawn(self.resync())

    def _route_notice(self, kind: int, msg: bytes) -> None:
        r = decode_route_any(msg)
        if r is None or r.protocol != self.protocol or r.table != self.route_table or r.metric != self.metric:
            return
        p = r.prefix
        dp = self.dp
        if p in dp.inflight_deletes or p in dp.pending or (kind == RTM_NEWROUTE and dp.inflight_batches):
            return  # our own operation, or one about to be superseded
        t = self.table
        gid = t.installed.get(p)
        if gid is None:
            return
        if kind == RTM_DELROUTE:
            want = t.desired(p)
            t.route_gone(p)
            dp.touch((p,))
            log.warning("route %s of ours was deleted by someone else: reinstalling", p)
            self._repaired("route_deleted")
            if want is not None:
                dp.submit(p, want)
        elif route_gid(r) != gid:
            log.warning("route %s of ours was changed by someone else (nhid %d, ours %d): repairing", p, r.nhid, gid)
            self._repaired("route_changed")
            want = t.desired(p)
            g = t.group_by_id.get(gid)
            if g is not None:
                g.refs -= 1
            t.installed[p] = -1  # force a replace back to our group
            dp.touch((p,))
            if want is not None:
                dp.submit(p, want)

    # --- links -----------------------------------------------------------------------------------
    def _link_notice(self, ifindex: int, usable: bool) -> None:
        """A link went down (or came back): the kernel has already flushed its nexthops (and the routes
        of any group left empty); fail its gateways over to their backups and reconcile."""
        gws = {gw for gw, oif in self.table.oif.items() if oif == ifindex}
        if not usable and ifindex not in self.down_links:
            self.down_links.add(ifindex)
            self._down_gws[ifindex] = gws
            log.warning("link %d down: failing over %d gateway(s)", ifindex, len(gws))
            if gws:
                self.dp.fail_gateways_now(gws, None)  # the failover lane, at once
            self._spawn(self.resync())  # what the kernel flushed with the link is rebuilt on the survivors
        elif usable and ifindex in self.down_links:
            self.down_links.discard(ifindex)
            gws |= self._down_gws.pop(ifindex, set())
            log.info("link %d up: gateways %s usable again", ifindex, ", ".join(map(str, gws)) or "-")
            self._spawn(self._link_up(gws))

    async def _link_up(self, gws: set[IPAddress]) -> None:
        await self.resync()  # forget the nexthops the kernel flushed with the link
        # Recreate the gateways' nexthop objects and move their groups back to the primaries.
        self.dp.recover_gateways_now(gws)

    # --- resync ----------------------------------------------------------------------------------
    async def resync(self) -> int:
        """Compare our bookkeeping with a dump of the kernel and repair every difference (serialised)."""
        if self._resync_lock.locked():
            self._resync_again = True
            return 0
        async with self._resync_lock:
            fixed = 0
            while True:
                self._resync_again = False
                fixed += await self._resync_once()
                if not self._resync_again:
                    return fixed

    async def _resync_once(self) -> int:
        dp, t = self.dp, self.table
        await dp.wait_idle()
        nhs, routes = await asyncio.get_running_loop().run_in_executor(None, self.kernel.dump)
        kernel_ids = {n.id for n in nhs if n.protocol == self.protocol}
        wants = {p: t.desired(p) for p in t.installed}
        # Objects we believe exist but the kernel lost: forget them so they are created again.
        for gid, g in list(t.group_by_id.items()):
            if gid not in kernel_ids or any(m not in kernel_ids for m in g.members):
                t.forget_group(gid)
        for nid in [n for n in t.nh_key if n not in kernel_ids]:
            t.forget_nexthop(nid)  # its label route is rewritten (NLM_F_REPLACE) when it is recreated
            t.nh_refs.pop(nid, None)
        kroutes = {r.prefix: route_gid(r) for r in routes if r.metric == self.metric}
        fixed = 0
        touched: list[IPNetwork] = []
        for p, gid in list(t.installed.items()):
            if kroutes.get(p) != gid or (gid != BLACKHOLE_GID and gid not in t.group_by_id):
                want = wants.get(p) or dp.pending.get(p)
                t.route_gone(p)
                touched.append(p)
                if want is not None:
                    dp.submit(p, want)
                fixed += 1
        if touched:
            dp.touch(touched)
        if fixed:
            self._repaired("resync", fixed)
        dp.wake()
        return fixed
