"""The pop-router daemon: the shell that feeds the routing core and performs its actions.

Theory of operation
-------------------
One asyncio loop, three lanes (DESIGN.md):

- **failover** — the BFD channel's reader calls :class:`routing.failover.FailoverLane` directly; it
  rewrites the dataplane's groups at once and only then posts the outcome to the routing core's
  urgent lane. Link events never leave the dataplane.
- **routing** — ExaBGP's stream enters the bounded :class:`routing.inbox.Inbox` (flow control);
  :meth:`Daemon._owner` is the only task that calls the sans-IO :class:`routing.core.RoutingCore`
  and performs what it returns: FIB diffs to the dataplane, commands to ExaBGP as *tracked tasks*
  (the owner never awaits I/O), timers with ``call_later``. Long core work (a peer's flush) runs in
  slices with a yield to the loop between them.
- **control** — API, metrics, CLI read :class:`routing.views.Views` between the owner's steps.

Every step on the loop is short (one UPDATE, one slice, one bounded FIB plan), so the failover lane
and the API wait at most one step. A loop-lag sampler records how late a 10 ms timer runs
(``pop_router_loop_lag_seconds``): that is the failover lane's own delay.

Startup: the kernel writer adopts routes of our protocol left by a previous run (nothing is
removed), and sweeps what was not re-announced once every peer has sent End-of-RIB or the stale
timer fires. So neither a daemon restart nor an ExaBGP restart interrupts forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fib.kernel import KernelFib, set_compat_mode
from routing.bfd_link import BfdController
from routing.config import Config
from routing.core import (
    Action,
    AdminReset,
    ArmTimer,
    CommandDone,
    PeerStatus,
    RoutingCore,
    SendCommand,
    SpeakerDied,
    SubmitFib,
    SweepKernelStale,
    TimerFired,
)
from routing.exabgp.speaker import ExabgpSpeaker
from routing.failover import FailoverLane
from routing.inbox import Inbox
from routing.metrics import Metrics
from routing.model import IPAddress, Peer
from routing.policy import ImportPolicy
from routing.rib import Rib
from routing.runtime import gc_pacer
from routing.views import Views

log = logging.getLogger(__name__)

#: Prefixes of a long core job (a flush) per loop step: ~1-2 ms of work.
JOB_SLICE = 2000
#: Routing events queued in front of the core before ExaBGP's stream is left in the relay.
INBOX_EVENTS = 256
LAG_SAMPLE_S = 0.01


class Daemon:
    def __init__(
        self, config: Config, *, netns: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = Metrics(clock)
        self.inbox = Inbox(INBOX_EVENTS)
        self.fib = KernelFib(
            protocol=config.fib.protocol, table=config.fib.table, metric=config.fib.metric,
            batch_size=config.fib.batch_size, metrics=self.metrics, netns=netns,
        )
        run_dir = Path(config.exabgp.run_dir or config.api.socket.parent)
        rib = Rib()
        peers: dict[IPAddress, PeerStatus] = {}
        for customer, pc in config.peers():
            rib.add_peer(pc.address, ImportPolicy(config.router, customer), customer.import_.max_prefixes)
            b = config.peer_bfd(customer, pc)
            peers[pc.address] = PeerStatus(
                pc.address, pc.local_address, customer.name, "ipv4" if pc.address.version == 4 else "ipv6",
                Peer(pc.address, customer.name, customer.asn, config.router.asn),
                bfd=b.enabled, bfd_strict=b.enabled and b.strict,
            )
            self.metrics.bgp_session_up.labels(str(pc.address), customer.name).set(0)
        self.metrics.configure_peers(config)
        self.core = RoutingCore(rib, peers, stale_timeout_s=config.fib.stale_timeout_s, metrics=self.metrics,
                                now=clock(), startup_hold_s=config.fib.startup_hold_s)
        self.speaker = ExabgpSpeaker(config, run_dir, self.inbox, self.metrics,
                                     on_exit=lambda rc, _ran: self.inbox.post(SpeakerDied(rc)))
        self.lane = FailoverLane(self.fib, self.inbox.post, {a: p.customer for a, p in peers.items() if p.bfd},
                                 clock, self.metrics)
        self.bfd = BfdController(config, run_dir, self.lane.on_bfd, self.metrics)
        self.views = Views(config, self.core, self.fib, self.bfd, self.speaker, self.lane, self.inbox,
                           self.metrics, clock, clock(), self.teardown)
        self._tasks: set[asyncio.Task] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._admin: dict[IPAddress, list[asyncio.Future[bool]]] = {}
        self.xdp: Any = None
        self._ready = asyncio.Event()

    @property
    def rib(self) -> Rib:
        return self.core.rib

    @property
    def peers(self) -> dict[IPAddress, PeerStatus]:
        return self.core.peers

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

        self.views.token = self.load_token()
        if set_compat_mode(self.fib.netns, 0):
            log.info("net.ipv4.nexthop_compat_mode=0 in this namespace: group changes no longer re-notify "
                     "every route (a failover is one message, not one per route); route dumps show nhid only")
        self._probe_mpls()
        adopted = await asyncio.get_running_loop().run_in_executor(None, self.fib.adopt)
        self.views.adopted = adopted
        self.xdp = self.views.xdp = self._start_xdp()
        if adopted:
            log.info("adopted %d routes of protocol %d from the kernel; they stay until swept",
                     adopted, self.config.fib.protocol)
        self._perform(self.core.start(self.clock(), adopted_routes=adopted))
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
            tg.create_task(self._owner(), name="rib")
            tg.create_task(self._loop_lag(), name="lag")
            tg.create_task(gc_pacer(self.metrics), name="gc")
            tg.create_task(serve_api(self.views), name="api")
            tg.create_task(serve_metrics(self.views), name="metrics")
            tg.create_task(self.speaker.supervise(), name="exabgp")
            self._ready.set()

    def _probe_mpls(self) -> None:
        from fib.capabilities import probe_mpls

        mpls = self.views.mpls = probe_mpls(self.fib.netns, self.config.fib.protocol)
        self.fib.mpls_encap = mpls.iptunnel
        self.fib.mpls_routing = mpls.routing
        self.fib.local_label_base = self.config.fib.mpls_local_label_base
        if self.fib.local_label_base is not None and not mpls.routing:
            log.warning("fib.mpls_local_label_base is set but this kernel has no MPLS routing (%s): no "
                        "incoming-label routes are installed", mpls.detail)
        if mpls.iptunnel:
            log.info("kernel MPLS available: labeled routes get nexthop objects with an MPLS encap")
        else:
            log.warning("kernel MPLS forwarding is not available here (%s): routes are installed without "
                        "labels; label imposition belongs to the XDP fast path%s", mpls.detail,
                        "" if self.config.fib.xdp.interfaces else
                        " (not enabled: fib.xdp.interfaces is empty, so labeled routes are forwarded unlabeled)")

    def _start_xdp(self) -> Any:
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
            self.views.xdp_start_writes = mirror.sync(self.fib)
            log.info("XDP maps brought to the adopted FIB with %d map writes", self.views.xdp_start_writes)
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
        mirror.start_monitor(self.fib)
        return mirror

    async def _xdp_neighbours(self) -> None:
        while True:
            # Backstop only: neighbour changes arrive as notifications (XdpMirror.start_monitor).
            await asyncio.sleep(self.config.fib.xdp.neighbour_refresh_s)
            try:
                self.xdp.sync(self.fib, refresh=True)
            except OSError as exc:
                log.error("XDP neighbour refresh failed: %s", exc)

    async def _loop_lag(self) -> None:
        """How late a 10 ms timer fires: the longest the failover lane or the API could have waited."""
        hist = self.metrics.loop_lag_seconds
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(LAG_SAMPLE_S)
            lag = max(0.0, time.monotonic() - t0 - LAG_SAMPLE_S)
            hist.observe(lag)
            if lag * 1000 > self.views.loop_lag_max_ms[0]:
                self.views.loop_lag_max_ms[0] = lag * 1000

    # --- the routing core's owner ------------------------------------------------------------------
    async def _owner(self) -> None:
        core, inbox = self.core, self.inbox
        while True:
            if core.busy:
                # A slice of a long job; urgent events (BFD follow-ups, resets) may come between slices,
                # routing events may not (they could overtake their own peer's flush).
                self._step(core.work, JOB_SLICE)
                while (ev := inbox.take_urgent()) is not None:
                    self._step(core.on_event, ev, self.clock())
            else:
                ev = await inbox.get()
                self._step(core.on_event, ev, self.clock())
            # Yield after every step: the failover lane, the FIB writer and the API run in between.
            await asyncio.sleep(0)

    def _step(self, fn: Callable[..., list[Action]], *args: Any) -> None:
        try:
            self._perform(fn(*args))
        except Exception:  # one bad event must never stop routing
            log.exception("routing core step failed")

    def _perform(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, SubmitFib):
                self.fib.submit_many((d.prefix, d.new) for d in a.diffs)
            elif isinstance(a, SendCommand):
                t = asyncio.get_running_loop().create_task(self._command(a))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
            elif isinstance(a, ArmTimer):
                old = self._timers.pop(a.name, None)
                if old is not None:
                    old.cancel()
                self._timers[a.name] = asyncio.get_running_loop().call_later(
                    max(0.0, a.at - self.clock()), self.inbox.post, TimerFired(a.name))
            elif isinstance(a, SweepKernelStale):
                n = self.fib.sweep_stale()
                log.info("stale sweep: removing %d kernel routes nobody re-announced", n)

    async def _command(self, a: SendCommand) -> None:
        ok = False
        try:
            ok = await self.speaker.command(a.line)
        finally:
            if not ok:
                self.metrics.exabgp_commands_failed.labels(a.purpose).inc()
            self.inbox.post(CommandDone(a.peer, a.purpose, ok))
            if a.purpose == "admin" and a.peer is not None:
                for f in self._admin.pop(a.peer, []):
                    if not f.done():
                        f.set_result(ok)

    async def teardown(self, addr: IPAddress) -> bool:
        """Operator reset of one session (API ``POST /peers/{addr}/reset``)."""
        if addr not in self.core.peers:
            raise KeyError(str(addr))
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._admin.setdefault(addr, []).append(fut)
        self.inbox.post(AdminReset(addr))
        return await fut

    async def stop(self) -> None:
        if self.xdp is not None:
            # Left attached, like our kernel routes: the program and its (pinned) maps keep forwarding
            # until the next start adopts them. `ip link set dev IF xdp off` removes it by hand.
            self.xdp.stop_monitor()
            self.xdp.prog.close(detach=False)
        for h in self._timers.values():
            h.cancel()
        await self.bfd.stop()
        await self.speaker.stop()
        with contextlib.suppress(Exception):
            self.fib.close()

