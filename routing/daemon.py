"""The pop-router daemon: one asyncio loop owning the RIB, the FIB writer, the API and metrics.

Theory of operation
-------------------
One owner, requests by message (GoBGP's ``mgmtOperation``): ExaBGP events arrive on
``self.events``; only :meth:`Daemon._rib_owner` mutates the RIB, and it hands every FIB diff to the
kernel writer. The API reads state between events (asyncio is single-threaded, so a read never sees
a half-applied update) and asks for changes (teardown) through the speaker's command channel.

Peer lifecycle as the daemon sees it::

    idle --connected--> connect --up--> established --down--> idle (routes flushed at once)
                                            |
                                 speaker died: routes kept, marked stale; swept after the peer's
                                 End-of-RIB or ``fib.stale_timeout_s``

Startup: the kernel writer adopts routes of our protocol left by a previous run (nothing is
removed), and sweeps what was not re-announced once every peer has sent End-of-RIB or the stale
timer fires. So neither a daemon restart nor an ExaBGP restart interrupts forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bfd.control import BfdController, BfdEvent
from fib.kernel import KernelFib, set_compat_mode
from routing.config import Config, CustomerConfig, PeerConfig
from routing.exabgp import messages as msg
from routing.exabgp.speaker import ChildExited, ExabgpSpeaker, RelayConnected
from routing.metrics import Metrics
from routing.model import FibDiff, IPAddress, Peer, afi, intern_attrs
from routing.model import Path as RoutePath
from routing.policy import ImportPolicy
from routing.rib import LimitExceeded, Rib

log = logging.getLogger(__name__)

CEASE_MAX_PREFIXES = 1
CEASE_ADMIN_RESET = 4
CEASE_BFD_DOWN = 10  # RFC 9384


@dataclass(slots=True)
class PeerState:
    customer: CustomerConfig
    config: PeerConfig
    peer: Peer
    state: str = "idle"
    since: float = field(default_factory=time.monotonic)
    established_count: int = 0
    last_down_reason: str = ""
    eor: set[str] = field(default_factory=set)
    updates: int = 0
    bfd: bool = False
    bfd_strict: bool = False
    bfd_state: str = "down"
    bfd_down_at: float | None = None
    #: Why *we* closed the session (BFD, max_prefixes, operator): kept over ExaBGP's own wording.
    teardown_reason: str = ""

    @property
    def family(self) -> str:
        return "ipv4" if self.config.address.version == 4 else "ipv6"


class Daemon:
    def __init__(
        self, config: Config, *, netns: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.events: asyncio.Queue = asyncio.Queue()
        self.rib = Rib()
        self.fib = KernelFib(
            protocol=config.fib.protocol, table=config.fib.table, metric=config.fib.metric,
            batch_size=config.fib.batch_size, metrics=self.metrics, netns=netns,
        )
        run_dir = config.exabgp.run_dir or config.api.socket.parent
        self.speaker = ExabgpSpeaker(config, Path(run_dir), self.events, self.metrics)
        self.peers: dict[IPAddress, PeerState] = {}
        for customer, pc in config.peers():
            policy = ImportPolicy(config.router, customer)
            self.rib.add_peer(pc.address, policy, customer.import_.max_prefixes)
            peer = Peer(pc.address, customer.name, customer.asn, config.router.asn)
            ps = self.peers[pc.address] = PeerState(customer, pc, peer)
            b = config.peer_bfd(customer, pc)
            ps.bfd, ps.bfd_strict = b.enabled, b.enabled and b.strict
            if ps.bfd_strict:
                self.rib.set_eligible(pc.address, False)
            self.metrics.bgp_session_up.labels(str(pc.address), customer.name).set(0)
        self.bfd = BfdController(config, Path(run_dir), self.events, self.metrics)
        self.unknown_peer_events = 0
        self.started = clock()
        self.adopted = 0
        self.token = ""
        self._stale_task: asyncio.Task | None = None
        self.xdp = None
        self.xdp_start_writes = 0
        self._ready = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------------
    def load_token(self) -> str:
        path = self.config.api.token_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            tok = path.read_text().strip()
            if tok:
                return tok
        tok = secrets.token_hex(24)
        fd = path.open("w")
        path.chmod(0o600)
        fd.write(tok + "\n")
        fd.close()
        return tok

    async def run(self) -> None:
        from routing.api import serve_api, serve_metrics  # aiohttp import kept off the unit-test path

        self.token = self.load_token()
        if set_compat_mode(self.fib.netns, 0):
            log.info("net.ipv4.nexthop_compat_mode=0 in this namespace: group changes no longer re-notify "
                     "every route (a failover is one message, not one per route); route dumps show nhid only")
        from fib.capabilities import probe_mpls

        self.mpls = probe_mpls(self.fib.netns, self.config.fib.protocol)
        self.fib.mpls_encap = self.mpls.iptunnel
        self.fib.mpls_routing = self.mpls.routing
        self.fib.local_label_base = self.config.fib.mpls_local_label_base
        if self.fib.local_label_base is not None and not self.mpls.routing:
            log.warning("fib.mpls_local_label_base is set but this kernel has no MPLS routing (%s): no "
                        "incoming-label routes are installed", self.mpls.detail)
        if self.mpls.iptunnel:
            log.info("kernel MPLS available: labeled routes get nexthop objects with an MPLS encap")
        else:
            log.warning("kernel MPLS forwarding is not available here (%s): routes are installed without "
                        "labels; label imposition belongs to the XDP fast path%s", self.mpls.detail,
                        "" if self.config.fib.xdp.interfaces else
                        " (not enabled: fib.xdp.interfaces is empty, so labeled routes are forwarded unlabeled)")
        self.adopted = await asyncio.get_running_loop().run_in_executor(None, self.fib.adopt)
        self.xdp = self._start_xdp()
        if self.adopted:
            log.info("adopted %d routes of protocol %d from the kernel; they stay until swept",
                     self.adopted, self.config.fib.protocol)
            self._stale_task = asyncio.create_task(self._startup_sweep())
        await self.speaker.start_server()
        if self.bfd.enabled:
            await self.bfd.start_server()
        self.fib.start_monitor()
        async with asyncio.TaskGroup() as tg:
            if self.bfd.enabled:
                tg.create_task(self.bfd.supervise(), name="bfd")
            if self.xdp is not None:
                tg.create_task(self._xdp_neighbours(), name="xdp")
            tg.create_task(self.fib.run(), name="fib")
            tg.create_task(self._rib_owner(), name="rib")
            tg.create_task(serve_api(self), name="api")
            tg.create_task(serve_metrics(self), name="metrics")
            tg.create_task(self.speaker.supervise(), name="exabgp")
            self._ready.set()

    def _start_xdp(self):  # type: ignore[no-untyped-def]
        """Load and attach the XDP fast path on ``fib.xdp.interfaces`` and make it the writer's mirror."""
        ifaces = self.config.fib.xdp.interfaces
        if not ifaces:
            return None
        from fib.xdp.loader import IF_SLOTS, XdpError, XdpProgram, ensure_bpffs
        from fib.xdp.mirror import XdpMirror

        xc = self.config.fib.xdp
        try:
            pin_dir = None
            if xc.bpffs is not None:
                if ensure_bpffs(xc.bpffs):
                    log.info("mounted a bpffs at %s for the pinned XDP maps", xc.bpffs)
                pin_dir = xc.bpffs / "pop-router"
            prog = XdpProgram(pin_dir=pin_dir)
            if prog.reused:
                log.info("XDP maps pinned in %s reused: the fast path kept forwarding across the restart", pin_dir)
            # Maps complete *before* the attach (the devmap is not pinned and is refilled by the mirror):
            # the new program replaces the running one atomically and must not see an empty table.
            mirror = XdpMirror(prog, self.fib.netns)
            self.xdp_start_writes = mirror.sync(self.fib)
            log.info("XDP maps brought to the adopted FIB with %d map writes", self.xdp_start_writes)
            for ifname in ifaces:
                mode = prog.attach(ifname, self.fib.netns)
                if mode != "native":
                    log.warning("XDP on %s runs in generic mode (slower): the driver has no native XDP", ifname)
                else:
                    log.info("XDP fast path attached to %s (native)", ifname)
            for a, b in prog.shared_counter_rows():
                log.warning("XDP counters of ifindex %d and %d share a row (ifindex mod %d): their "
                            "per-interface counters are summed", a, b, IF_SLOTS)
        except (XdpError, OSError) as exc:
            log.error("XDP fast path not started (the kernel keeps forwarding): %s", exc)
            return None
        self.fib.mirror = mirror
        self.fib.mirror.start_monitor(self.fib)
        return self.fib.mirror

    async def _xdp_neighbours(self) -> None:
        while True:
            # Backstop only: neighbour changes arrive as notifications (XdpMirror.start_monitor).
            await asyncio.sleep(self.config.fib.xdp.neighbour_refresh_s)
            try:
                self.xdp.sync(self.fib, refresh=True)
            except OSError as exc:
                log.error("XDP neighbour refresh failed: %s", exc)

    def xdp_interface_names(self) -> dict[int, str]:
        from fib.netns import netns as enter_netns

        names = {}
        with enter_netns(self.fib.netns):
            for name in self.config.fib.xdp.interfaces:
                with contextlib.suppress(OSError):
                    names[socket.if_nametoindex(name)] = name
        return names

    def xdp_view(self) -> dict:
        if self.xdp is None:
            return {"enabled": False, "interfaces": self.config.fib.xdp.interfaces}
        v = self.xdp.view()
        names = self.xdp_interface_names()
        v["counters_by_interface"] = {names.get(int(i), i): c for i, c in v["counters_by_interface"].items()}
        return {"enabled": True, "interfaces": self.config.fib.xdp.interfaces,
                "start_map_writes": self.xdp_start_writes, **v}

    async def _startup_sweep(self) -> None:
        deadline = self.clock() + self.config.fib.stale_timeout_s
        while self.clock() < deadline:
            if self.peers and all(p.family in p.eor for p in self.peers.values()):
                break
            await asyncio.sleep(0.5)  # poll: EOR arrival is rare, a timer is simpler than a condition
        n = self.fib.sweep_stale()
        log.info("startup sweep: removed %d stale kernel routes", n)

    # --- the RIB owner -----------------------------------------------------------------------------
    def _to_fib(self, diffs: list[FibDiff]) -> None:
        self.fib.submit_many((d.prefix, d.new) for d in diffs)

    async def _rib_owner(self) -> None:
        while True:
            ev = await self.events.get()
            try:
                await self.handle(ev)
            except Exception:  # one bad event must never stop routing
                log.exception("error handling %r", ev)
            # Yield after every event (an UPDATE carries up to ~700 prefixes): the FIB writer then
            # writes batch N in its thread while the RIB processes UPDATE N+1, and the API stays live.
            await asyncio.sleep(0)

    async def handle(self, ev: object) -> None:
        if isinstance(ev, ChildExited):
            self._speaker_died()
            return
        if isinstance(ev, RelayConnected | msg.Shutdown):
            return
        if isinstance(ev, BfdEvent):
            await self._bfd_event(ev)
            return
        peer_addr = getattr(ev, "peer", None)
        ps = self.peers.get(peer_addr) if peer_addr is not None else None
        if ps is None:
            self.unknown_peer_events += 1
            log.warning("event for unconfigured peer %s dropped", peer_addr)
            return
        if isinstance(ev, msg.UpdateEvent):
            await self._update(ps, ev)
        elif isinstance(ev, msg.StateEvent):
            self._state(ps, ev)
        elif isinstance(ev, msg.OpenEvent):
            ps.peer = Peer(ps.peer.address, ps.peer.customer, ps.peer.asn, ps.peer.local_asn, ev.router_id)
        elif isinstance(ev, msg.EorEvent):
            ps.eor.add(ev.afi)
            self._to_fib(self.rib.sweep_stale(ps.config.address))
        elif isinstance(ev, msg.NotificationEvent):
            ps.last_down_reason = f"notification {ev.direction} ({ev.code},{ev.subcode})"

    def _state(self, ps: PeerState, ev: msg.StateEvent) -> None:
        addr = str(ps.config.address)
        self.metrics.bgp_session_transitions.labels(addr, ev.state).inc()
        if ev.state == "up":
            ps.state, ps.since = "established", self.clock()
            ps.established_count += 1
            ps.eor.clear()
            self.metrics.bgp_session_up.labels(addr, ps.customer.name).set(1)
            log.info("peer %s (%s) established", addr, ps.customer.name)
        elif ev.state == "down":
            was_up = ps.state == "established"
            ps.state, ps.since = "idle", self.clock()
            ps.last_down_reason = ps.teardown_reason or ev.reason or ps.last_down_reason
            ps.teardown_reason = ""
            self.metrics.bgp_session_up.labels(addr, ps.customer.name).set(0)
            diffs = self.rib.peer_down(ps.config.address)
            self._to_fib(diffs)
            if was_up:
                log.warning("peer %s (%s) down: %s; %d FIB changes", addr, ps.customer.name, ev.reason, len(diffs))
        elif ev.state == "connected" and ps.state != "established":
            ps.state = "connect"

    def _speaker_died(self) -> None:
        kept = 0
        for ps in self.peers.values():
            if ps.state == "established":
                ps.last_down_reason = "BGP speaker restarting"
            ps.state, ps.since = "idle", self.clock()
            ps.eor.clear()
            self.metrics.bgp_session_up.labels(str(ps.config.address), ps.customer.name).set(0)
            kept += self.rib.mark_stale(ps.config.address)
        log.warning("BGP speaker died: keeping %d paths as stale for up to %.0fs",
                    kept, self.config.fib.stale_timeout_s)
        if self._stale_task is None or self._stale_task.done():
            self._stale_task = asyncio.create_task(self._stale_timer())

    async def _stale_timer(self) -> None:
        await asyncio.sleep(self.config.fib.stale_timeout_s)
        for addr in self.peers:
            self._to_fib(self.rib.sweep_stale(addr))
        self.fib.sweep_stale()

    async def _bfd_event(self, ev: BfdEvent) -> None:
        ps = self.peers.get(ev.peer)
        if ps is None:
            return
        addr = str(ev.peer)
        self.metrics.bfd_transitions.labels(addr, ev.new).inc()
        ps.bfd_state = ev.new
        if ev.new == "up":
            log.info("BFD %s (%s) up", addr, ps.customer.name)
            await self.fib.recover_gateway(ev.peer)
            if ps.bfd_strict:
                self._to_fib(self.rib.set_eligible(ev.peer, True))
            return
        if ev.old != "up":
            return
        # The path to this neighbour is dead. First move every nexthop group off it (one batch, every
        # prefix at once), then let the RIB converge and close BGP.
        ps.bfd_down_at = ev.at
        rewritten = await self.fib.fail_gateway(ev.peer, ev.at)
        ps.last_down_reason = ps.teardown_reason = f"BFD down ({ev.diag})"
        if ps.bfd_strict:
            diffs = self.rib.set_eligible(ev.peer, False)
        else:
            diffs = self.rib.peer_down(ev.peer)
        self._to_fib(diffs)
        log.warning("BFD %s (%s) down (%s): %d groups rewritten %.1f ms after detection; %d routes to "
                    "reconcile; tearing BGP down", addr, ps.customer.name, ev.diag, rewritten,
                    self.fib.last_failover_ms or 0.0, len(diffs))
        self.metrics.bgp_teardowns.labels(addr, "bfd_down").inc()
        await self.speaker.command(msg.teardown(ev.peer, CEASE_BFD_DOWN))

    async def _update(self, ps: PeerState, ev: msg.UpdateEvent) -> None:
        ps.updates += 1
        addr = ps.config.address
        self.metrics.bgp_updates.labels(str(addr)).inc()
        before = dict(self.rib.adj[addr].rejected_total)
        diffs: list[FibDiff] = []
        if ev.withdraw:
            diffs += self.rib.withdraw(addr, ev.withdraw)
        if ev.announce:
            peer, attrs = ps.peer, ev.attrs
            paths = [RoutePath(p, peer, nh, attrs if not labels else intern_attrs(replace(attrs, labels=labels)))
                     for p, nh, labels in ev.announce]
            try:
                diffs += self.rib.announce(addr, paths)
            except LimitExceeded as exc:
                self._count_rejections(ps, before)
                await self._max_prefixes(ps, exc)
                return
        self._count_rejections(ps, before)
        self._to_fib(diffs)

    def _count_rejections(self, ps: PeerState, before: dict[str, int]) -> None:
        after = self.rib.adj[ps.config.address].rejected_total
        for reason, n in after.items():
            delta = n - before.get(reason, 0)
            if delta:
                self.metrics.bgp_prefixes_rejected.labels(str(ps.config.address), reason).inc(delta)

    async def _max_prefixes(self, ps: PeerState, exc: LimitExceeded) -> None:
        addr = ps.config.address
        log.error("peer %s (%s) sent more than max_prefixes %d: tearing the session down (cease 1)",
                  addr, ps.customer.name, exc.limit)
        ps.last_down_reason = ps.teardown_reason = f"max_prefixes {exc.limit} exceeded"
        self.metrics.bgp_teardowns.labels(str(addr), "max_prefixes").inc()
        self._to_fib(self.rib.peer_down(addr))
        await self.speaker.command(msg.teardown(addr, CEASE_MAX_PREFIXES))

    async def teardown(self, addr: IPAddress) -> bool:
        """Operator reset of one session (API ``POST /peers/{addr}/reset``)."""
        if addr not in self.peers:
            raise KeyError(str(addr))
        self.metrics.bgp_teardowns.labels(str(addr), "admin").inc()
        return await self.speaker.command(msg.teardown(addr, CEASE_ADMIN_RESET))

    # --- views for the API and metrics -------------------------------------------------------------
    def refresh_gauges(self) -> None:
        for addr, a in self.rib.adj.items():
            for fam, (received, accepted) in a.counts().items():
                self.metrics.bgp_prefixes_received.labels(str(addr), fam).set(received)
                self.metrics.bgp_prefixes_accepted.labels(str(addr), fam).set(accepted)

    def peers_view(self) -> list[dict]:
        now = self.clock()
        out = []
        for addr, ps in self.peers.items():
            a = self.rib.adj[addr]
            counts = a.counts()
            out.append({
                "peer": str(addr),
                "customer": ps.customer.name,
                "asn": ps.customer.asn,
                "local_address": str(ps.config.local_address),
                "state": ps.state,
                "since_s": round(now - ps.since, 1),
                # The daemon's clock is CLOCK_MONOTONIC: comparable with other processes' (benchmarks).
                "since_monotonic": ps.since,
                "router_id": str(ps.peer.router_id),
                "received": sum(c[0] for c in counts.values()),
                "accepted": sum(c[1] for c in counts.values()),
                "rejected": len(a.rejected),
                "stale": len(a.stale),
                "max_prefixes": a.max_prefixes,
                "established_count": ps.established_count,
                "last_down_reason": ps.last_down_reason,
                "eor": sorted(ps.eor),
                "bfd": ps.bfd_state if ps.bfd else None,
                "bfd_down_at": ps.bfd_down_at,
            })
        return out

    def routes_view(self, rejected: bool = False) -> list[dict]:
        if rejected:
            out = []
            for addr, a in self.rib.adj.items():
                for prefix, (path, rej) in a.rejected.items():
                    out.append({
                        "prefix": str(prefix), "peer": str(addr), "customer": path.peer.customer,
                        "nexthop": str(path.nexthop), "as_path": list(path.attrs.as_path),
                        "reason": rej.reason.value, "detail": rej.detail,
                    })
            return sorted(out, key=lambda r: (r["peer"], r["prefix"]))
        out = []
        for prefix in self.rib.loc.prefixes():
            sel = self.rib.loc.selection(prefix)
            if sel is None:
                continue
            for p in sorted(self.rib.loc.paths(prefix), key=lambda p: (p is not sel.best, str(p.peer.address))):
                best = p is sel.best
                out.append({
                    "prefix": str(prefix), "afi": afi(prefix), "peer": str(p.peer.address),
                    "customer": p.peer.customer, "nexthop": str(p.nexthop), "as_path": list(p.attrs.as_path),
                    "origin": p.attrs.origin.name.lower(), "med": p.attrs.med, "local_pref": p.local_pref,
                    "best": best, "multipath": p in sel.multipath, "labels": list(p.attrs.labels),
                    "reason": sel.reason.value if best else "",
                })
        return sorted(out, key=lambda r: (r["afi"], r["prefix"], not r["best"]))

    def fib_view(self, failed: bool = False) -> list[dict]:
        if failed:
            import errno

            return [
                {"prefix": str(p), "nexthops": [str(n) for n in (f.entry.nexthops if f.entry else ())],
                 "op": "install" if f.entry else "delete", "error": errno.errorcode.get(f.errno, str(f.errno)),
                 "attempts": f.attempts}
                for p, f in sorted(self.fib.failed.items(), key=lambda x: str(x[0]))
            ]
        return [
            {"prefix": str(p), "afi": afi(p), "nexthops": [str(n) for n in self.fib.gateways(gid)],
             "nhid": gid, "stale": p in self.fib.stale}
            for p, gid in sorted(self.fib.installed.items(), key=lambda x: (x[0].version, x[0]))
        ]

    def status_view(self) -> dict:
        return {
            "router_id": str(self.config.router.router_id),
            "asn": self.config.router.asn,
            "uptime_s": round(self.clock() - self.started, 1),
            "exabgp_pid": self.speaker.proc.pid if self.speaker.proc else None,
            "exabgp_restarts": self.speaker.restarts,
            "bfd_pid": self.bfd.proc.pid if self.bfd.proc and self.bfd.proc.returncode is None else None,
            "bfd_restarts": self.bfd.restarts,
            "malformed_messages": self.speaker.malformed,
            "adopted_routes": self.adopted,
            "fib_routes": len(self.fib.installed),
            "fib_pending": len(self.fib._pending),
            "fib_failed": len(self.fib.failed),
            "fib_nexthop_groups": len(self.fib.group_by_id),
            "kernel_mpls": getattr(self, "mpls", None) and self.mpls.usable,
            "kernel_mpls_detail": getattr(self, "mpls", None) and self.mpls.detail,
            "mpls_local_labels": {f"{k[0]}%{k[1]}" if k[2] == () else str(k): label
                                  for nid, label in self.fib.local_labels.items()
                                  if (k := self.fib.nh_key.get(nid)) is not None},
            "fib_last_failover_ms": self.fib.last_failover_ms,
            "loc_rib_prefixes": len(self.rib.loc),
            "unknown_peer_events": self.unknown_peer_events,
        }

    async def fib_diff(self) -> dict:
        """RIB versus kernel: what the kernel should forward (after failover) against what it does."""
        from fib.netlink import RouteSocket
        from fib.netns import netns as enter_netns

        def dump() -> tuple[list, list]:
            with enter_netns(self.fib.netns):
                s = RouteSocket()
            try:
                return s.dump_owned(self.fib.protocol, self.fib.table), s.dump_nexthops()
            finally:
                s.close()

        routes, nhs = await asyncio.get_running_loop().run_in_executor(None, dump)
        by_id = {n.id: n for n in nhs}

        def gws(nhid: int) -> list[str]:
            n = by_id.get(nhid)
            if n is None:
                return []
            if n.group:
                return sorted(g for m, _w in n.group for g in gws(m))
            return [str(n.gateway)] if n.gateway is not None else []

        kernel = {r.prefix: gws(r.nhid) if r.nhid else sorted(map(str, r.nexthops)) for r in routes
                  if r.metric == self.fib.metric}
        want = {}
        for prefix in self.rib.loc.prefixes():
            e = self.rib.loc.fib_entry(prefix)
            if e is not None:
                want[prefix] = sorted(str(g) for g in self.fib.active_gateways(e))
        missing = sorted((p for p in want if p not in kernel), key=lambda p: (p.version, p))
        extra = sorted((p for p in kernel if p not in want), key=lambda p: (p.version, p))
        different = sorted((p for p in want if p in kernel and kernel[p] != want[p]), key=lambda p: (p.version, p))
        return {
            "in_sync": len(want) - len(missing) - len(different),
            "missing": [{"prefix": str(p), "rib": want[p]} for p in missing],
            "extra": [{"prefix": str(p), "kernel": kernel[p]} for p in extra],
            "different": [{"prefix": str(p), "rib": want[p], "kernel": kernel[p]} for p in different],
            "pending": len(self.fib._pending), "failed": len(self.fib.failed), "stale": len(self.fib.stale),
            "xdp": await self._xdp_diff(routes, by_id),
        }

    async def _xdp_diff(self, routes: list, by_id: dict) -> dict | None:
        from fib.xdp.mirror import xdp_diff

        xdp = self.xdp
        if xdp is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: xdp_diff(xdp.prog.dump(), routes, by_id, self.fib.metric))

    def bfd_view(self) -> list[dict]:
        customers = {str(a): ps.customer.name for a, ps in self.peers.items()}
        return self.bfd.sessions_view(customers)

    async def stop(self) -> None:
        if self.xdp is not None:
            # Left attached, like our kernel routes: the program and its (pinned) maps keep forwarding
            # until the next start adopts them. `ip link set dev IF xdp off` removes it by hand.
            self.xdp.stop_monitor()
            self.xdp.prog.close(detach=False)
        await self.bfd.stop()
        await self.speaker.stop()
        with contextlib.suppress(Exception):
            self.fib.close()

