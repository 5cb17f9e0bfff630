"""The kernel FIB provider: routes on nexthop groups, written in batches, failover in one message.

Theory of operation (FRR ``zebra_dplane.c`` in shape)
-----------------------------------------------------
Kernel objects, all tagged with ``fib.protocol``:

- one **nexthop object** per (gateway, output interface, MPLS label stack): where the kernel has
  MPLS (``mpls_encap``) the object carries the labels as an lwtunnel encap; where it has not, the
  object is plain and the labels reach the wire through the XDP fast path, which mirrors the same
  objects (same ids) with their labels;
- one **nexthop group** per distinct (primary set, backup set) of BGP next hops (with their
  labels); its *members* are the primary next hops that are alive, or, if none is, the live backups;
- every **route** points at its group (``RTA_NH_ID``).

So a dead neighbour is handled by :meth:`KernelFib.fail_gateway`: every group that uses it gets new
members in *one* batch, on a socket of its own (never queued behind a full-table write), and every
route behind those groups moves at once — the same time for one prefix or a million. The RIB then
converges in the background and the normal writer reconciles (routes move to the groups for their
new (primary, backup) sets; groups and nexthops nobody uses are deleted afterwards).

The writer: the RIB owner calls :meth:`submit` with the *desired* entry for a prefix (or None).
Pending work is a dict keyed by prefix (latest wins), so churn coalesces and an update equal to what
is installed is skipped. The drain task plans a batch in the event loop (pure bookkeeping: which
nexthops/groups to create, which routes to write), sends it in a worker thread (the kernel works in
the sender's context), matches errors to operations by sequence number, rolls the bookkeeping of
failed operations back, and only then, in a second batch, deletes groups and nexthops whose
reference count fell to zero — so a failed route update can never lose the group its kernel route
still uses. Refused routes are retried with backoff and shown by ``show fib --failed``.

Incoming labels (kernels with MPLS routing, ``local_label_base`` set): every unlabeled nexthop
object gets a local label and an AF_MPLS route that pops it and forwards to that gateway (per-next-hop
label allocation, as for labels we would advertise upstream). The label is derived from the nexthop
id (``base + id - first id``), so it survives a restart without any bookkeeping: adopted nexthops
keep their ids, and the routes are written with NLM_F_REPLACE.

Ownership and restart: :meth:`adopt` reads our routes, groups and nexthops from the kernel. Adopted
routes are stale until re-announced; a re-announced route whose adopted group already has the right
members costs no kernel operation. :meth:`sweep_stale` removes the rest. ``nexthop_compat_mode`` is
set to 0 in our namespace (:func:`set_compat_mode`): with 1 (the default) replacing a group's member
makes the kernel re-notify every route using it (1-4 s for 1M routes); with 0 it takes 0.1-0.3 ms.

Invariant (integration-tested against ``ip -json route``/``nexthop``): after each completed batch,
``installed`` maps every prefix of ours to the group the kernel route points at.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

from fib.netlink import (
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    BatchResult,
    RouteSocket,
    decode_link_state,
    decode_nexthop,
    decode_route_any,
    encode_del_mpls_route,
    encode_del_nexthop,
    encode_group,
    encode_mpls_route,
    encode_nexthop,
    encode_route_nhid,
    errno_name,
    monitor_socket,
    route_encoder,
    split_messages,
)
from fib.netns import netns as enter_netns
from routing.model import FibEntry, IPAddress, IPNetwork

log = logging.getLogger(__name__)

_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_EMPTY = BatchResult([], 0)
Labels = tuple[int, ...]
NhKey = tuple[IPAddress, int, Labels]  # (gateway, ifindex, MPLS labels to push)
#: (primary gateways, backup gateways, primary labels, backup labels); gateway tuples sorted.
GroupKey = tuple[tuple[IPAddress, ...], tuple[IPAddress, ...], Labels, Labels]


def _sorted(nhs: tuple[IPAddress, ...]) -> tuple[IPAddress, ...]:
    return nhs if len(nhs) < 2 else tuple(sorted(nhs, key=lambda a: (a.version, int(a))))


def _group_key(entry: FibEntry) -> GroupKey:
    return (_sorted(entry.nexthops), _sorted(entry.backup), entry.labels, entry.backup_labels)


def _tuple_ids(entry: FibEntry) -> tuple[int, int, int, int]:
    """Identity of the (interned) tuples behind an entry's group key: a per-batch cache key that
    costs no hashing of addresses."""
    return id(entry.nexthops), id(entry.backup), id(entry.labels), id(entry.backup_labels)


def set_compat_mode(netns: str | None = None, value: int = 0) -> bool:
    """Set ``net.ipv4.nexthop_compat_mode`` in our namespace; False if the kernel has no such knob."""
    path = Path("/proc/sys/net/ipv4/nexthop_compat_mode")
    try:
        with enter_netns(netns):
            path.write_text(f"{value}\n")
        return True
    except OSError as exc:
        log.warning("cannot set nexthop_compat_mode=%d: %s", value, exc)
        return False


@dataclass(slots=True)
class Group:
    id: int
    key: GroupKey | None  # None: adopted, not yet matched to a (primary, backup) key
    members: tuple[int, ...]  # nexthop ids currently in the kernel group
    refs: int = 0  # routes pointing at it
    #: Nexthop ids this group keeps alive: every primary and backup gateway (members for adopted groups).
    holds: tuple[int, ...] = ()


@dataclass(slots=True)
class FailedRoute:
    entry: FibEntry | None
    errno: int
    attempts: int
    next_retry: float


@dataclass(slots=True)
class _Plan:
    msgs: list[bytes] = field(default_factory=list)
    #: What each message was: ("nh", key) | ("group", key) | ("route", prefix, entry, old gid, new gid)
    ops: list[tuple] = field(default_factory=list)


class KernelFib:
    def __init__(
        self,
        *,
        protocol: int,
        table: int = 254,
        metric: int = 20,
        batch_size: int = 10000,
        metrics: object | None = None,
        clock: Callable[[], float] = time.monotonic,
        netns: str | None = None,
        mpls_encap: bool = False,
        mpls_routing: bool = False,
        local_label_base: int | None = None,
    ) -> None:
        self.netns = netns
        #: The kernel imposes labels itself (probed: ``fib.capabilities.probe_mpls``).
        self.mpls_encap = mpls_encap
        #: The kernel has AF_MPLS routes; with a label base, each unlabeled nexthop gets a local label.
        self.mpls_routing = mpls_routing
        self.local_label_base = local_label_base
        self.local_labels: dict[int, int] = {}  # nexthop id -> incoming label (installed)
        self.protocol = protocol
        self.table = table
        self.metric = metric
        self.batch_size = batch_size
        self.metrics = metrics
        self.clock = clock
        self.installed: dict[IPNetwork, int] = {}  # prefix -> group id
        self.stale: set[IPNetwork] = set()
        self.failed: dict[IPNetwork, FailedRoute] = {}
        self.nexthops: dict[NhKey, int] = {}
        self.nh_refs: dict[int, int] = {}
        self.nh_key: dict[int, NhKey] = {}
        self.groups: dict[GroupKey, Group] = {}
        self.group_by_id: dict[int, Group] = {}
        self.dead: set[IPAddress] = set()
        self._oif: dict[IPAddress, int] = {}
        self._next_id = (protocol << 22) + 1
        self._pending: dict[IPNetwork, FibEntry | None] = {}
        self._pending_deletes = False  # some pending entry is a withdrawal (None)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sock: RouteSocket | None = None
        self._fast: RouteSocket | None = None
        self._count = {4: 0, 6: 0}
        self.batches = 0
        self.operations = 0
        self.last_failover_ms: float | None = None
        self._inflight_batches = 0  # batches sent, not yet completed
        self._inflight_deletes: set[IPNetwork] = set()  # route deletes sent, not yet completed
        self._inflight_objs: set[int] = set()  # nexthop/group ids we are deleting
        self.drift_repaired: dict[str, int] = {}
        self.down_links: set[int] = set()
        self._down_gws: dict[int, set[IPAddress]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._resync_lock = asyncio.Lock()
        #: Second provider fed by the same stream (the XDP map writer); synced after each batch.
        self.mirror = None
        #: Prefixes whose installed group changed since the mirror's last sync (kept only with a
        #: mirror): a sync after one UPDATE touches those, not a million-route table.
        self.dirty: set[IPNetwork] = set()
        self._resync_again = False
        self._mon = None
        self._encode_route = route_encoder(protocol=protocol, table=table, metric=metric)

    # --- sockets -------------------------------------------------------------------------------
    def _socket(self) -> RouteSocket:
        if self._sock is None:
            with enter_netns(self.netns):
                self._sock = RouteSocket()
        return self._sock

    def _fast_socket(self) -> RouteSocket:
        if self._fast is None:
            with enter_netns(self.netns):
                self._fast = RouteSocket()
        return self._fast

    def close(self) -> None:
        for s in (self._sock, self._fast):
            if s is not None:
                s.close()
        self._sock = self._fast = None
        if self._mon is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._mon.fileno())
            self._mon.close()
            self._mon = None

    # --- input ---------------------------------------------------------------------------------
    def submit(self, prefix: IPNetwork, entry: FibEntry | None) -> None:
        # Hot path (a full table is a million calls): skip the set/dict probes when they are empty.
        if entry is not None and self.stale:
            self.stale.discard(prefix)
        if self.failed:
            self.failed.pop(prefix, None)
        self._pending[prefix] = entry
        if entry is None:
            self._pending_deletes = True
        self._idle.clear()
        self._wake.set()

    def submit_many(self, items: Iterable[tuple[IPNetwork, FibEntry | None]]) -> None:
        """:meth:`submit` for a whole RIB diff at once (one UPDATE, a peer flush, a table): one dict
        update instead of a method call and two event operations per prefix."""
        if self.stale or self.failed:
            for prefix, entry in items:
                self.submit(prefix, entry)
            return
        pending = self._pending
        deletes = False
        for prefix, entry in items:
            pending[prefix] = entry
            if entry is None:
                deletes = True
        if deletes:
            self._pending_deletes = True
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # --- views ---------------------------------------------------------------------------------
    def gateways(self, gid: int) -> tuple[IPAddress, ...]:
        g = self.group_by_id.get(gid)
        if g is None:
            return ()
        return tuple(self.nh_key[m][0] for m in g.members if m in self.nh_key)

    # --- adoption ------------------------------------------------------------------------------
    def adopt(self) -> int:
        """Take over our routes, groups and nexthops already in the kernel (after a restart)."""
        s = self._socket()
        max_id = self._next_id - 1
        for nh in s.dump_nexthops():
            if nh.protocol != self.protocol:
                continue
            max_id = max(max_id, nh.id)
            if nh.group:
                members = tuple(m for m, _w in nh.group)
                self.group_by_id[nh.id] = Group(nh.id, None, members, holds=members)
            elif nh.gateway is not None:
                # Without kernel MPLS the labels lived only in our memory (and the XDP maps): such an
                # object is adopted as unlabeled, and a labeled route moves to a new object.
                k = (nh.gateway, nh.oif, nh.labels)
                self.nexthops[k] = nh.id
                self.nh_key[nh.id] = k
                self._oif.setdefault(nh.gateway, nh.oif)
        for g in self.group_by_id.values():
            self._hold(g.holds, +1)
        for r in s.dump_owned(self.protocol, self.table):
            if r.metric == self.metric and r.nhid in self.group_by_id:
                self.installed[r.prefix] = r.nhid
                self.group_by_id[r.nhid].refs += 1
                self._count[r.prefix.version] += 1
                self.stale.add(r.prefix)
        self._next_id = max_id + 1
        self._update_gauges()
        return len(self.stale)

    def sweep_stale(self) -> int:
        n = 0
        for prefix in list(self.stale):
            if prefix not in self._pending:
                self.submit(prefix, None)
                n += 1
        self.stale.clear()
        # Adopted groups no route uses any more are collected by the next delete phase.
        self._idle.clear()
        self._wake.set()
        return n

    # --- planning --------------------------------------------------------------------------------
    def _alloc(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def _resolve_oif(self, gw: IPAddress) -> int | None:
        oif = self._oif.get(gw)
        if oif is None:
            try:
                oif, _via = self._socket().route_get(gw)
            except OSError:
                return None
            if oif:
                self._oif[gw] = oif
        return oif or None

    def _active(self, key: GroupKey) -> list[tuple[IPAddress, Labels]]:
        primary, backup, labels, backup_labels = key
        alive = [(g, labels) for g in primary if g not in self.dead]
        if alive:
            return alive
        alive = [(g, backup_labels) for g in backup if g not in self.dead]
        return alive or [(g, labels) for g in primary]

    @staticmethod
    def _hops(key: GroupKey) -> dict[tuple[IPAddress, Labels], None]:
        """Every (gateway, labels) a group may use, primaries first (an ordered set)."""
        return dict.fromkeys([(g, key[2]) for g in key[0]] + [(g, key[3]) for g in key[1]])

    def _ensure_nh(self, gw: IPAddress, labels: Labels, plan: _Plan) -> int | None:
        oif = self._resolve_oif(gw)
        if oif is None:
            return None
        k = (gw, oif, labels)
        nid = self.nexthops.get(k)
        if nid is None:
            nid = self._alloc()
            self.nexthops[k] = nid
            self.nh_key[nid] = k
            self.nh_refs[nid] = 0
            plan.msgs.append(encode_nexthop(len(plan.msgs), nid, gw, oif, protocol=self.protocol,
                                            labels=labels if self.mpls_encap else ()))
            plan.ops.append(("nh", k))
            label = self._local_label(nid) if not labels else None
            if label is not None:
                self.local_labels[nid] = label
                plan.msgs.append(encode_mpls_route(len(plan.msgs), label, [], gw, oif, protocol=self.protocol))
                plan.ops.append(("mpls", nid))
        return nid

    def _local_label(self, nid: int) -> int | None:
        if not self.mpls_routing or self.local_label_base is None:
            return None
        span = (1 << 20) - self.local_label_base
        label = self.local_label_base + (nid - (self.protocol << 22) - 1) % span
        if label in self.local_labels.values():
            log.warning("local label %d already in use: nexthop %d gets none", label, nid)
            return None
        return label

    def _hold(self, ids: tuple[int, ...], delta: int) -> None:
        for i in ids:
            self.nh_refs[i] = self.nh_refs.get(i, 0) + delta

    def _ensure_group(self, key: GroupKey, plan: _Plan) -> Group | None:
        g = self.groups.get(key)
        if g is not None:
            return g
        # Nexthop objects for every gateway of the key, backups included, so a failover only ever
        # rewrites group members and never has to create a nexthop first.
        nh_of: dict[tuple[IPAddress, Labels], int] = {}
        for gw, labels in self._hops(key):
            nid = self._ensure_nh(gw, labels, plan)
            if nid is not None:
                nh_of[(gw, labels)] = nid
        active = self._active(key)
        if any(hop not in nh_of for hop in active):
            return None
        members = tuple(nh_of[hop] for hop in active)
        holds = tuple(nh_of.values())
        # A group adopted from a previous run with exactly these members serves as is.
        for og in self.group_by_id.values():
            if og.key is None and og.members == members:
                self._hold(holds, +1)
                self._hold(og.holds, -1)
                og.key, og.holds = key, holds
                self.groups[key] = og
                return og
        g = Group(self._alloc(), key, members, holds=holds)
        self._hold(holds, +1)
        self.groups[key] = g
        self.group_by_id[g.id] = g
        plan.msgs.append(encode_group(len(plan.msgs), g.id, members, protocol=self.protocol))
        plan.ops.append(("group", key))
        return g

    def _take_work(self) -> dict[IPNetwork, FibEntry | None]:
        pending, self._pending = self._pending, {}
        self._pending_deletes = False
        return pending

    def _plan(self, work: list[tuple[IPNetwork, FibEntry | None]]) -> _Plan:
        """Every message is encoded with its index in the batch as its sequence number, so the
        sending thread has nothing left to patch (see :meth:`RouteSocket.apply`)."""
        plan = _Plan()
        msgs, ops = plan.msgs, plan.ops
        installed_get = self.installed.get
        proto, table, metric = self.protocol, self.table, self.metric
        encode = self._encode_route
        # Routes of a table share a few (primary, backup) tuples (the RIB interns them): resolve each
        # distinct pair of tuple objects to its group once per batch instead of once per route.
        by_tuples: dict[tuple[int, int, int, int], Group | None] = {}
        for prefix, entry in work:
            old = installed_get(prefix)
            if entry is None:
                if old is None:
                    continue
                msgs.append(encode_route_nhid(RTM_DELROUTE, len(msgs), prefix, 0, protocol=proto, table=table,
                                              metric=metric))
                ops.append(("route", prefix, None, old, None))
                continue
            tk = _tuple_ids(entry)
            if tk in by_tuples:
                g = by_tuples[tk]
            else:
                g = by_tuples[tk] = self._ensure_group(_group_key(entry), plan)
            if g is None:
                self._fail(prefix, entry, errno_mod.ENETUNREACH)
                continue
            if old == g.id:
                continue
            msgs.append(encode(len(msgs), prefix, g.id, old is not None))
            ops.append(("route", prefix, entry, old, g.id))
        return plan

    # --- results ---------------------------------------------------------------------------------
    def _fail(self, prefix: IPNetwork, entry: FibEntry | None, err: int) -> None:
        prev = self.failed.get(prefix)
        attempts = prev.attempts + 1 if prev else 1
        delay = _RETRY_S[min(attempts - 1, len(_RETRY_S) - 1)]
        self.failed[prefix] = FailedRoute(entry, err, attempts, self.clock() + delay)
        if self.metrics is not None:
            self.metrics.fib_errors.labels(errno_name(err)).inc()  # type: ignore[attr-defined]
        if attempts == 1:
            log.warning("kernel refused %s %s: %s", "install" if entry else "delete", prefix, errno_name(err))

    def _mark_routes(self, plan: _Plan) -> None:
        if self.mirror is not None:
            self.dirty.update(op[1] for op in plan.ops if op[0] == "route")

    def _complete(self, plan: _Plan, errors: list[tuple[int, int]]) -> None:
        self._inflight_batches -= 1
        self._mark_routes(plan)
        if not errors:
            self._complete_clean(plan)
            return
        errs = dict(errors)
        failed_objects: set[int] = set()
        ok = {"install": 0, "delete": 0}
        bad = {"install": 0, "delete": 0}
        for i, op in enumerate(plan.ops):
            err = errs.get(i)
            if op[0] == "nh":
                if err is not None:
                    nid = self.nexthops.pop(op[1], None)
                    if nid is not None:
                        self.nh_key.pop(nid, None)
                        failed_objects.add(nid)
                        self._oif.pop(op[1][0], None)  # resolve the interface again next time
                continue
            if op[0] == "mpls":
                if err is not None:
                    log.warning("incoming-label route for nexthop %d refused: %s", op[1], errno_name(err))
                    self.local_labels.pop(op[1], None)
                    if self.metrics is not None:
                        self.metrics.fib_errors.labels(errno_name(err)).inc()  # type: ignore[attr-defined]
                continue
            if op[0] == "group":
                g = self.groups.get(op[1])
                if err is not None or (g is not None and any(m in failed_objects for m in g.members)):
                    if g is not None:
                        self.groups.pop(op[1], None)
                        self.group_by_id.pop(g.id, None)
                        self._hold(g.holds, -1)
                        failed_objects.add(g.id)
                continue
            _, prefix, entry, old, new = op
            self._inflight_deletes.discard(prefix)
            kind = "install" if entry is not None else "delete"
            if entry is None and err == errno_mod.ESRCH:
                err = None  # already gone
            if err is None and new in failed_objects:
                err = errno_mod.ENETUNREACH
            if err is not None:
                bad[kind] += 1
                self._fail(prefix, entry, err)
                continue
            ok[kind] += 1
            self.failed.pop(prefix, None)
            if old is not None and old in self.group_by_id:
                self.group_by_id[old].refs -= 1
            if entry is None:
                self.installed.pop(prefix, None)
                self._count[prefix.version] -= 1
            else:
                if old is None:
                    self._count[prefix.version] += 1
                self.installed[prefix] = new
                g = self.group_by_id.get(new)
                if g is not None:
                    g.refs += 1
        m = self.metrics
        if m is not None:
            for kind in ok:
                if ok[kind]:
                    m.fib_operations.labels(kind, "ok").inc(ok[kind])  # type: ignore[attr-defined]
                if bad[kind]:
                    m.fib_operations.labels(kind, "error").inc(bad[kind])  # type: ignore[attr-defined]
        self.operations += len(plan.msgs)
        self.batches += 1

    async def _withdraw_whole_groups(
        self, work: list[tuple[IPNetwork, FibEntry | None]]
    ) -> list[tuple[IPNetwork, FibEntry | None]]:
        """Withdrawals that empty a whole group (a peer's routes going away, a table flush) become one
        RTM_DELNEXTHOP of the group: the kernel drops every route using it at once (~0.5 s for 1M
        routes instead of ~25 s route by route). Only when no install in the same work needs that
        group."""
        dels: dict[int, int] = {}
        wanted: set[GroupKey] = set()
        seen: dict[tuple[int, int, int, int], GroupKey] = {}
        for prefix, entry in work:
            if entry is None:
                gid = self.installed.get(prefix)
                if gid is not None:
                    dels[gid] = dels.get(gid, 0) + 1
            else:
                tk = _tuple_ids(entry)
                if tk not in seen:
                    seen[tk] = _group_key(entry)
                wanted.add(seen[tk])
        whole = [gid for gid, n in dels.items()
                 if (g := self.group_by_id.get(gid)) is not None and n == g.refs and n >= 2 and g.key not in wanted]
        if not whole:
            return work
        plan = _Plan()
        for gid in whole:
            plan.msgs.append(encode_del_nexthop(len(plan.msgs), gid))
            plan.ops.append(("delgroup", gid))
        errors = dict(await self._send(plan))
        self._inflight_batches -= 1
        gone = {gid for i, gid in enumerate(whole) if i not in errors}
        if not gone:
            return work
        rest: list[tuple[IPNetwork, FibEntry | None]] = []
        installed = self.installed
        n = 0
        for prefix, entry in work:
            if entry is None and installed.get(prefix) in gone:
                del installed[prefix]
                if self.mirror is not None:
                    self.dirty.add(prefix)
                self._count[prefix.version] -= 1
                if self.failed:
                    self.failed.pop(prefix, None)
                n += 1
            else:
                rest.append((prefix, entry))
        for gid in gone:
            g = self.group_by_id.pop(gid)
            if g.key is not None:
                self.groups.pop(g.key, None)
            self._hold(g.holds, -1)
        if self.metrics is not None:
            self.metrics.fib_operations.labels("delete", "ok").inc(n)  # type: ignore[attr-defined]
        self.operations += len(plan.msgs)
        return rest

    def _complete_clean(self, plan: _Plan) -> None:
        """The common case, a batch without a single error: bookkeeping in bulk."""
        installed = self.installed
        refs: dict[int, int] = {}
        ok = {"install": 0, "delete": 0}
        count = self._count
        for op in plan.ops:
            if op[0] != "route":
                continue
            _, prefix, entry, old, new = op
            if old is not None:
                refs[old] = refs.get(old, 0) - 1
            if entry is None:
                self._inflight_deletes.discard(prefix)
                del installed[prefix]
                count[prefix.version] -= 1
                ok["delete"] += 1
            else:
                if old is None:
                    count[prefix.version] += 1
                installed[prefix] = new
                refs[new] = refs.get(new, 0) + 1
                ok["install"] += 1
        if self.failed:
            for op in plan.ops:
                if op[0] == "route":
                    self.failed.pop(op[1], None)
        for gid, delta in refs.items():
            g = self.group_by_id.get(gid)
            if g is not None:
                g.refs += delta
        m = self.metrics
        if m is not None:
            for kind, n in ok.items():
                if n:
                    m.fib_operations.labels(kind, "ok").inc(n)  # type: ignore[attr-defined]
        self.operations += len(plan.msgs)
        self.batches += 1

    def _collect(self) -> _Plan:
        """Delete groups no route uses, then nexthops no group uses (after route results are known)."""
        plan = _Plan()
        for gid, g in list(self.group_by_id.items()):
            if g.refs <= 0:  # no route points at it
                plan.msgs.append(encode_del_nexthop(len(plan.msgs), gid))
                plan.ops.append(("delgroup", gid))
                self.group_by_id.pop(gid, None)
                if g.key is not None:
                    self.groups.pop(g.key, None)
                self._hold(g.holds, -1)
        for nid, refs in list(self.nh_refs.items()):
            if refs <= 0:
                plan.msgs.append(encode_del_nexthop(len(plan.msgs), nid))
                plan.ops.append(("delnh", nid))
                label = self.local_labels.pop(nid, None)
                if label is not None:
                    plan.msgs.append(encode_del_mpls_route(len(plan.msgs), label, protocol=self.protocol))
                    plan.ops.append(("delmpls", nid))
                del self.nh_refs[nid]
                k = self.nh_key.pop(nid, None)
                if k is not None and self.nexthops.get(k) == nid:
                    del self.nexthops[k]
        return plan

    def _sync_mirror(self) -> None:
        if self.mirror is None:
            return
        try:
            self.mirror.sync(self)
        except OSError as exc:
            log.error("XDP map sync failed: %s", exc)

    def _update_gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        m.fib_routes.labels("ipv4").set(self._count[4])  # type: ignore[attr-defined]
        m.fib_routes.labels("ipv6").set(self._count[6])  # type: ignore[attr-defined]
        m.fib_failed_routes.set(len(self.failed))  # type: ignore[attr-defined]
        m.fib_nexthop_groups.set(len(self.group_by_id))  # type: ignore[attr-defined]

    # --- failover ----------------------------------------------------------------------------------
    def _regroup(self, gateways: set[IPAddress]) -> _Plan:
        """New members for every group that uses one of ``gateways``. Nexthop objects normally exist
        already (groups hold their backups); after a link comes back the kernel has flushed them, and
        they are created here first, in the same batch."""
        plan = _Plan()
        for key, g in self.groups.items():
            if not (set(key[0]) | set(key[1])) & gateways:
                continue
            ids = {hop: self._ensure_nh(hop[0], hop[1], plan) for hop in self._hops(key)}
            new_holds = tuple(i for i in ids.values() if i is not None and i not in g.holds)
            self._hold(new_holds, +1)
            g.holds += new_holds
            active = [ids.get(hop) for hop in self._active(key)]
            if active and all(a is not None for a in active) and tuple(active) != g.members:
                g.members = tuple(a for a in active if a is not None)
                plan.msgs.append(encode_group(len(plan.msgs), g.id, g.members, protocol=self.protocol, replace=True))
                plan.ops.append(("regroup", g.id))
        return plan

    async def fail_gateway(self, gw: IPAddress, detected_at: float | None = None) -> int:
        """A neighbour is dead (BFD Down, link down): move every group off it now. Returns groups rewritten."""
        return await self._rewrite({gw}, add_dead=True, detected_at=detected_at)

    async def recover_gateway(self, gw: IPAddress) -> int:
        return await self._rewrite({gw}, add_dead=False, detected_at=None)

    async def _rewrite(self, gws: set[IPAddress], *, add_dead: bool, detected_at: float | None) -> int:
        if add_dead:
            self.dead |= gws
        else:
            self.dead -= gws
        plan = self._regroup(gws)
        if plan.msgs:
            send = partial(self._fast_socket().apply, plan.msgs, sequenced=True)
            res = await asyncio.get_running_loop().run_in_executor(None, send)
            for i, err in res.errors:
                log.error("group rewrite (%s) refused: %s", plan.ops[i][0], errno_name(err))
            self._sync_mirror()  # the same change in the XDP maps: one group write each
        if detected_at is not None:
            self.last_failover_ms = (self.clock() - detected_at) * 1000
            if self.metrics is not None:
                self.metrics.fib_failover_seconds.observe(self.last_failover_ms / 1000)  # type: ignore[attr-defined]
        self._idle.clear()
        self._wake.set()  # nexthops released by the rewrite are collected by the writer
        return sum(1 for op in plan.ops if op[0] == "regroup")

    # --- drift: someone else changed our routes or nexthops --------------------------------------------
    def _repaired(self, kind: str, n: int = 1) -> None:
        self.drift_repaired[kind] = self.drift_repaired.get(kind, 0) + n
        if self.metrics is not None:
            self.metrics.fib_drift_repaired.labels(kind).inc(n)  # type: ignore[attr-defined]

    def active_gateways(self, entry: FibEntry) -> list[IPAddress]:
        """The gateways the kernel should forward ``entry`` to now (primaries, or backups after a
        failover): what `fib diff` expects to find."""
        return [gw for gw, _labels in self._active(_group_key(entry))]

    def desired(self, prefix: IPNetwork) -> FibEntry | None:
        """What we installed for ``prefix``, rebuilt from its group's (primary, backup) key."""
        gid = self.installed.get(prefix)
        g = self.group_by_id.get(gid) if gid is not None else None
        if g is None or g.key is None:
            return None
        return FibEntry(prefix, g.key[0], g.key[2], g.key[1], g.key[3])

    def start_monitor(self) -> None:
        """Follow route and nexthop notifications: repair what others delete or change, resync on
        ENOBUFS (notifications were lost)."""
        with enter_netns(self.netns):
            self._mon = monitor_socket()
        asyncio.get_running_loop().add_reader(self._mon.fileno(), self._on_notify)

    def _on_notify(self) -> None:
        assert self._mon is not None
        while True:
            try:
                data = self._mon.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno_mod.ENOBUFS:
                    log.warning("route notifications overflowed (ENOBUFS): resynchronising with the kernel")
                    self._tasks.add(t := asyncio.get_running_loop().create_task(self.resync()))
                    t.add_done_callback(self._tasks.discard)
                    continue
                raise
            for kind, msg in split_messages(data):
                if kind in (16, 17):  # RTM_NEWLINK, RTM_DELLINK
                    st = decode_link_state(msg)
                    if st is not None:
                        self._link_notice(*st)
                    continue
                if kind in (RTM_NEWROUTE, RTM_DELROUTE):
                    # Cheap filters first: a full-table write brings one notification per route.
                    if len(msg) < 28 or msg[21] != self.protocol:  # rtm_protocol
                        continue
                    if kind == RTM_NEWROUTE and self._inflight_batches:
                        continue  # most likely our own batch; a change hidden here is found by resync
                    self._route_notice(kind, msg)
                elif kind == RTM_DELNEXTHOP:
                    nh = decode_nexthop(msg)
                    if nh is not None and nh.id in self.nh_key and self.nh_key[nh.id][1] in self.down_links:
                        continue  # the kernel flushing a downed link's nexthops: handled by _link_notice
                    if nh is not None and nh.id not in self._inflight_objs and (
                            nh.id in self.group_by_id or nh.id in self.nh_key):
                        log.warning("nexthop %d of ours was deleted by someone else: resynchronising", nh.id)
                        self._repaired("nexthop_deleted")
                        self._tasks.add(t := asyncio.get_running_loop().create_task(self.resync()))
                        t.add_done_callback(self._tasks.discard)

    def _link_notice(self, ifindex: int, usable: bool) -> None:
        """A link went down (or came back): the kernel has already flushed its nexthops (and the routes
        of any group left empty); fail its gateways over to their backups and reconcile."""
        gws = {gw for gw, oif in self._oif.items() if oif == ifindex}
        if not usable and ifindex not in self.down_links:
            self.down_links.add(ifindex)
            self._down_gws[ifindex] = gws
            log.warning("link %d down: failing over %d gateway(s)", ifindex, len(gws))
            self._tasks.add(t := asyncio.get_running_loop().create_task(self._link_down(gws)))
            t.add_done_callback(self._tasks.discard)
        elif usable and ifindex in self.down_links:
            self.down_links.discard(ifindex)
            gws |= self._down_gws.pop(ifindex, set())
            log.info("link %d up: gateways %s usable again", ifindex, ", ".join(map(str, gws)) or "-")
            self._tasks.add(t := asyncio.get_running_loop().create_task(self._link_up(gws)))
            t.add_done_callback(self._tasks.discard)

    async def _link_down(self, gws: set[IPAddress]) -> None:
        if gws:
            await self._rewrite(gws, add_dead=True, detected_at=None)
        await self.resync()  # what the kernel flushed with the link is rebuilt on the survivors

    async def _link_up(self, gws: set[IPAddress]) -> None:
        await self.resync()  # forget the nexthops the kernel flushed with the link
        # Recreate the gateways' nexthop objects and move their groups back to the primaries.
        await self._rewrite(gws, add_dead=False, detected_at=None)

    def _route_notice(self, kind: int, msg: bytes) -> None:
        r = decode_route_any(msg)
        if r is None or r.protocol != self.protocol or r.table != self.table or r.metric != self.metric:
            return
        p = r.prefix
        if p in self._inflight_deletes or p in self._pending or (kind == RTM_NEWROUTE and self._inflight_batches):
            return  # our own operation, or one about to be superseded
        gid = self.installed.get(p)
        if gid is None:
            return
        if self.mirror is not None:
            self.dirty.add(p)
        if kind == RTM_DELROUTE:
            want = self.desired(p)
            self.installed.pop(p, None)
            self._count[p.version] -= 1
            g = self.group_by_id.get(gid)
            if g is not None:
                g.refs -= 1
            log.warning("route %s of ours was deleted by someone else: reinstalling", p)
            self._repaired("route_deleted")
            if want is not None:
                self.submit(p, want)
        elif r.nhid != gid:
            log.warning("route %s of ours was changed by someone else (nhid %d, ours %d): repairing", p, r.nhid, gid)
            self._repaired("route_changed")
            want = self.desired(p)
            self.installed[p] = -1  # force a replace back to our group
            g = self.group_by_id.get(gid)
            if g is not None:
                g.refs -= 1
            if want is not None:
                self.submit(p, want)

    async def resync(self) -> int:
        """Compare our bookkeeping with a dump of the kernel and repair every difference.

        Serialised: two overlapping resyncs would each repair from their own dump and undo the
        other's repairs (a route reinstalled after the first dump looks missing to it).
        """
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
        loop = asyncio.get_running_loop()
        await self.wait_idle()
        with enter_netns(self.netns):
            s = RouteSocket()
        try:
            nhs = await loop.run_in_executor(None, s.dump_nexthops)
            routes = await loop.run_in_executor(None, s.dump_owned, self.protocol, self.table)
        finally:
            s.close()
        kernel_ids = {n.id for n in nhs if n.protocol == self.protocol}
        wants = {p: self.desired(p) for p in self.installed}
        # Objects we believe exist but the kernel lost: forget them so they are created again.
        for gid, g in list(self.group_by_id.items()):
            if gid not in kernel_ids or any(m not in kernel_ids for m in g.members):
                self.group_by_id.pop(gid, None)
                if g.key is not None:
                    self.groups.pop(g.key, None)
                self._hold(g.holds, -1)
        for nid in [n for n in self.nh_key if n not in kernel_ids]:
            self.local_labels.pop(nid, None)  # rewritten (NLM_F_REPLACE) when the nexthop is recreated
            k = self.nh_key.pop(nid)
            self.nexthops.pop(k, None)
            self.nh_refs.pop(nid, None)
        kroutes = {r.prefix: r.nhid for r in routes if r.metric == self.metric}
        fixed = 0
        for p, gid in list(self.installed.items()):
            if kroutes.get(p) != gid or gid not in self.group_by_id:
                want = wants.get(p) or self._pending.get(p)
                g = self.group_by_id.get(gid)
                if g is not None:
                    g.refs -= 1
                self.installed.pop(p)
                self._count[p.version] -= 1
                if self.mirror is not None:
                    self.dirty.add(p)
                if want is not None:
                    self.submit(p, want)
                fixed += 1
        if fixed:
            self._repaired("resync", fixed)
        self._idle.clear()
        self._wake.set()
        return fixed

    # --- the writer --------------------------------------------------------------------------------
    def _requeue_due(self) -> float | None:
        now = self.clock()
        nxt: float | None = None
        for prefix, f in list(self.failed.items()):
            if f.next_retry <= now:
                if prefix not in self._pending:
                    self._pending[prefix] = f.entry
                    if f.entry is None:
                        self._pending_deletes = True
            else:
                nxt = f.next_retry if nxt is None else min(nxt, f.next_retry)
        return nxt

    def _has_garbage(self) -> bool:
        return any(g.refs <= 0 for g in self.group_by_id.values()) or any(r <= 0 for r in self.nh_refs.values())

    def _start_send(self, plan: _Plan) -> asyncio.Future:
        """Hand a batch to the worker thread *now* (not when a coroutine first runs), so the caller can
        plan the next batch while the kernel processes this one."""
        self._inflight_batches += 1
        loop = asyncio.get_running_loop()
        if not plan.msgs:
            f: asyncio.Future = loop.create_future()
            f.set_result(_EMPTY)
            return f
        for op in plan.ops:
            if op[0] == "route":
                if op[2] is None:
                    self._inflight_deletes.add(op[1])
            elif op[0] in ("delgroup", "delnh"):
                self._inflight_objs.add(op[1])
        t0 = time.perf_counter()
        fut = loop.run_in_executor(None, partial(self._socket().apply, plan.msgs, sequenced=True))
        if self.metrics is not None:
            hist = self.metrics.fib_write_seconds  # type: ignore[attr-defined]
            fut.add_done_callback(lambda _f: hist.observe(time.perf_counter() - t0))
        return fut

    async def _send(self, plan: _Plan) -> list[tuple[int, int]]:
        return (await self._start_send(plan)).errors

    async def run(self) -> None:
        while True:
            nxt = self._requeue_due()
            if not self._pending:
                if self._has_garbage():
                    plan = self._collect()
                    errors = await self._send(plan)
                    for i, err in errors:
                        if err != errno_mod.ENOENT:
                            log.warning("deleting unused %s failed: %s", plan.ops[i][0], errno_name(err))
                    for op in plan.ops:
                        self._inflight_objs.discard(op[1])
                    self._inflight_batches -= 1
                    self.operations += len(plan.msgs)
                    self._update_gauges()
                    continue
                self._idle.set()
                self._wake.clear()
                timeout = None if nxt is None else max(0.05, nxt - self.clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            deletes = self._pending_deletes
            pending = self._take_work()
            # Only a table with withdrawals needs the whole-group pass (and a list); installs are
            # sliced straight off the dict, so the first batch reaches the kernel at once.
            items = iter(await self._withdraw_whole_groups(list(pending.items())) if deletes else pending.items())
            # Pipelined: batch N+1 is planned and encoded here while batch N is in the kernel (the
            # worker thread releases the GIL inside sendmsg), so Python and kernel time overlap. The
            # first batch is small so the kernel starts working after a millisecond, not ten.
            in_flight: tuple[_Plan, asyncio.Future] | None = None
            size = min(self.batch_size, 1000)
            while chunk := list(islice(items, size)):
                size = self.batch_size
                plan = self._plan(chunk)
                if in_flight is None:
                    in_flight = (plan, self._start_send(plan))
                    continue
                done, res = in_flight[0], await in_flight[1]
                # Hand batch N+1 to the kernel before the bookkeeping of batch N, which only records
                # results (planning already counted on batch N's changes being applied).
                in_flight = (plan, self._start_send(plan))
                self._complete(done, res.errors)
            if in_flight is not None:
                self._complete(in_flight[0], (await in_flight[1]).errors)
            self._update_gauges()
            self._sync_mirror()
