"""The kernel provider: dataplane operations -> netlink messages -> one result per operation.

Theory of operation
-------------------
The kernel is the source of truth for forwarding, so this provider's results decide what the
bookkeeping records. It owns two NETLINK_ROUTE sockets and never lets two threads share one:

- the **bulk socket** is used only inside the worker thread that sends routing-lane batches
  (:meth:`KernelProvider.send_bulk`): the kernel does the work in the sender's context, so a
  10,000-route batch keeps that thread in ``sendmsg`` for tens of milliseconds while the event
  loop goes on;
- the **loop socket** is used only from the event loop thread: the failover lane's group rewrites
  (:meth:`send_now`, one ``sendmsg`` and its acks, well under a millisecond for a few groups — the
  kernel has processed a message when ``sendmsg`` returns) and interface lookups (:meth:`route_get`).
  A failover therefore never queues behind a bulk batch, nor behind the thread pool.

Dumps (adoption, resync) open a socket of their own, so they may run in any thread.

Encoding (:meth:`encode`) happens on the loop, in the writer's bounded planning steps: every message
carries its index in the batch as its sequence number, so the worker thread only joins and sends (no
Python loop holding the GIL while the loop plans the next batch) and errors map back to operations
by index (:class:`~fib.ops.Results`). Without kernel MPLS encap (``mpls_encap``) labels stay out of
the nexthop objects: the XDP provider pushes them. A route operation on
:data:`~fib.ops.BLACKHOLE_GID` becomes an ``RTN_BLACKHOLE`` route (no ``RTA_NH_ID``) with our protocol,
table and metric; its delete names that type (IPv4's delete matches the route type).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
from collections.abc import Sequence
from functools import partial

from common.cpus import pin_thread
from common.model import IPAddress
from common.netns import netns as enter_netns
from fib.netlink import (
    NLM_F_CREATE,
    RTM_DELROUTE,
    RTN_BLACKHOLE,
    RTN_UNICAST,
    KernelNexthop,
    KernelRoute,
    RouteSocket,
    encode_blackhole_route,
    encode_del_mpls_route,
    encode_del_nexthop,
    encode_group,
    encode_mpls_route,
    encode_nexthop,
    encode_route_nhid,
    route_encoder,
)
from fib.ops import (
    BLACKHOLE_GID,
    GroupAdd,
    GroupDel,
    GroupReplace,
    MplsLabelAdd,
    MplsLabelDel,
    NexthopAdd,
    NexthopDel,
    Op,
    Results,
    RouteDelete,
    RouteInstall,
    RouteReplace,
)

#: The loop socket answers within microseconds (the kernel processed the batch inside sendmsg); a
#: wait longer than this means something is badly wrong, and the loop must not hang on it.
_LOOP_SOCKET_TIMEOUT_S = 0.5
_FLAGS = struct.Struct("=H")  # nlmsg_flags, at offset 6 of the header


def _replace_only(msg: bytes) -> bytes:
    """A rewrite must find its group: without NLM_F_CREATE the kernel answers ENOENT for a group
    deleted behind our back instead of silently recreating it empty of routes (the monitor's resync
    rebuilds those; the failover lane counts the refusal)."""
    (flags,) = _FLAGS.unpack_from(msg, 6)
    return msg[:6] + _FLAGS.pack(flags & ~NLM_F_CREATE) + msg[8:]


class KernelProvider:
    def __init__(self, *, protocol: int, table: int, metric: int, netns: str | None,
                 mpls_encap: bool = False, writer_cpus: set[int] | None = None) -> None:
        self.protocol = protocol
        self.table = table
        self.metric = metric
        self.netns = netns
        #: The kernel imposes labels itself (probed: ``fib.capabilities.probe_mpls``).
        self.mpls_encap = mpls_encap
        self._bulk: RouteSocket | None = None
        self._loop: RouteSocket | None = None
        #: CPUs of the bulk writer thread (None: not pinned).
        self.writer_cpus = writer_cpus
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._encode_route = route_encoder(protocol=protocol, table=table, metric=metric)

    def _open(self) -> RouteSocket:
        with enter_netns(self.netns):
            return RouteSocket()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        for s in (self._bulk, self._loop):
            if s is not None:
                s.close()
        self._bulk = self._loop = None

    # --- encoding ----------------------------------------------------------------------------------
    def encode(self, ops: Sequence[Op], start: int = 0) -> list[bytes]:
        """Netlink messages for ``ops``; message i carries sequence number ``start + i``."""
        out: list[bytes] = []
        append = out.append
        enc = self._encode_route
        proto, table, metric = self.protocol, self.table, self.metric
        seq = start
        for op in ops:
            t = type(op)
            if t is RouteInstall or t is RouteReplace:
                if op.gid == BLACKHOLE_GID:  # type: ignore[union-attr]
                    append(encode_blackhole_route(seq, op.prefix, protocol=proto, table=table,  # type: ignore[union-attr]
                                                  metric=metric, replace=t is RouteReplace))
                else:
                    append(enc(seq, op.prefix, op.gid, t is RouteReplace))  # type: ignore[union-attr]
            elif t is RouteDelete:
                append(encode_route_nhid(RTM_DELROUTE, seq, op.prefix, 0, protocol=proto,  # type: ignore[union-attr]
                                         table=table, metric=metric,
                                         rtm_type=RTN_BLACKHOLE if op.old_gid == BLACKHOLE_GID  # type: ignore[union-attr]
                                         else RTN_UNICAST))
            else:
                append(self._encode_object(seq, op))
            seq += 1
        return out

    def _encode_object(self, seq: int, op: Op) -> bytes:
        proto = self.protocol
        if isinstance(op, NexthopAdd):
            return encode_nexthop(seq, op.nid, op.gateway, op.oif, protocol=proto,
                                  labels=op.labels if self.mpls_encap else ())
        if isinstance(op, GroupAdd):
            return encode_group(seq, op.gid, op.members, protocol=proto)
        if isinstance(op, GroupReplace):
            return _replace_only(encode_group(seq, op.gid, op.members, protocol=proto, replace=True))
        if isinstance(op, GroupDel):
            return encode_del_nexthop(seq, op.gid)
        if isinstance(op, NexthopDel):
            return encode_del_nexthop(seq, op.nid)
        if isinstance(op, MplsLabelAdd):
            return encode_mpls_route(seq, op.label, [], op.gateway, op.oif, protocol=proto)
        if isinstance(op, MplsLabelDel):
            return encode_del_mpls_route(seq, op.label, protocol=proto)
        raise TypeError(f"not a kernel operation: {op!r}")

    # --- sending -----------------------------------------------------------------------------------
    def _send_blocking(self, ops: Sequence[Op], msgs: list[bytes]) -> Results:
        """Worker thread only: the bulk socket is never touched by the loop."""
        if self._bulk is None:
            self._bulk = self._open()
        return Results(ops, dict(self._bulk.apply(msgs, sequenced=True).errors))

    def start_bulk(self, ops: Sequence[Op], msgs: list[bytes]) -> asyncio.Future[Results]:
        """Hand a routing-lane batch (already encoded, seq = index) to a worker thread *now* (not when
        a coroutine first runs), so the caller plans the next batch while the kernel takes this one.
        One batch at a time: the caller awaits it before starting the next."""
        loop = asyncio.get_running_loop()
        if not msgs:
            f: asyncio.Future[Results] = loop.create_future()
            f.set_result(Results(ops))
            return f
        return loop.run_in_executor(self._writer(), partial(self._send_blocking, ops, msgs))

    def _writer(self) -> concurrent.futures.ThreadPoolExecutor:
        """One dedicated thread for bulk sends, pinned to ``writer_cpus`` (``common/cpus.py``: its
        long kernel sections must not sit on the CPU the real-time tasks use)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="fib-writer", initializer=pin_thread, initargs=(self.writer_cpus, "FIB writer"))
        return self._executor

    def loop_socket(self) -> RouteSocket:
        """The event loop thread's own socket (failover rewrites, interface lookups)."""
        if self._loop is None:
            self._loop = self._open()
            self._loop.sock.settimeout(_LOOP_SOCKET_TIMEOUT_S)
        return self._loop

    def close_loop_socket(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def send_now(self, ops: Sequence[Op]) -> Results:
        """Failover lane: encode and send ``ops`` in one ``sendmsg`` on the loop socket and read the
        acks, synchronously (the kernel has applied them when ``sendmsg`` returns)."""
        if not ops:
            return Results(ops)
        try:
            res = self.loop_socket().apply(self.encode(ops), sequenced=True)
        except OSError as exc:  # timeout or a broken socket: every operation failed, open a new one
            self.close_loop_socket()
            code = exc.errno or 110  # ETIMEDOUT
            return Results(ops, dict.fromkeys(range(len(ops)), code))
        return Results(ops, dict(res.errors))

    def route_get(self, gw: IPAddress) -> int | None:
        """The output interface the kernel would use for ``gw`` (loop thread only)."""
        try:
            oif, _via = self.loop_socket().route_get(gw)
        except TimeoutError:  # a late answer must not be read as the next request's: new socket
            self.close_loop_socket()
            return None
        except OSError:
            return None
        return oif or None

    def dump(self) -> tuple[list[KernelNexthop], list[KernelRoute]]:
        """Every nexthop and our routes, on a socket of its own (safe in any thread)."""
        s = self._open()
        try:
            return s.dump_nexthops(), s.dump_owned(self.protocol, self.table)
        finally:
            s.close()
