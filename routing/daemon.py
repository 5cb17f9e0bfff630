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
- **control** — API, metrics, CLI read :class:`routing.views.Views` between the owner's steps. The
  RTR clients (:class:`routing.rpki_link.RpkiLink`) live here too: a VRP change reaches the core as
  one :class:`routing.rov.RpkiChanged` message, and the core re-validates in slices.

Every step on the loop is short (a run of UPDATEs bounded by :data:`OWNER_STEP_S`, one slice, one
bounded FIB plan), so the failover lane and the API wait at most one step. A loop-lag sampler
records how late a 10 ms timer runs (``pop_router_loop_lag_seconds``): that is the failover lane's
own delay. It samples back to back while the routing core works and parks while the loop is idle
(:class:`routing.runtime.LagPacer`: 100 samples a second cost ~2 % of a core on their own).

Live reconfiguration (``reload``, SIGHUP, ``POST /config/reload``) runs on the control lane:
:meth:`Daemon.reload` previews it with :func:`routing.reload.plan_reload`, and unless it is a dry run
hands the routing core one :class:`routing.core.Reconfigure` (urgent lane; the core re-evaluates
policies in slices), pushes the new BFD session list, sends export changes to established sessions,
and regenerates each ExaBGP process's configuration, signalling (SIGUSR1) only the processes whose
neighbours changed. One reload at a time; the answer is the plan and the outcome.

ExaBGP is a pool of processes (:class:`routing.exabgp.speaker.SpeakerPool`): the core's commands go
to the process holding their peer, and a process that exits is ``SpeakerDied(index)`` for the core.

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

from common import cpus
from common.model import IPAddress, Peer, parse_address, parse_prefix
from fib.kernel import KernelFib, set_compat_mode
from routing.backbone import BACKBONE_LABEL, BackboneImportPolicy
from routing.bfd_link import BfdController
from routing.config import Config, ConfigError, CustomerConfig, PeerConfig, config_from_text, load_config
from routing.core import (
    AcceptedChanged,
    Action,
    AdminReset,
    ArmTimer,
    CommandDone,
    PeerAdd,
    PeerStatus,
    PeerUpdate,
    Reconfigure,
    ReconfigureApplied,
    RoutingCore,
    SendCommand,
    SpeakerDied,
    SubmitFib,
    SweepKernelStale,
    TimerFired,
    WatchAccepted,
)
from routing.exabgp import messages
from routing.exabgp.pool import peer_processes
from routing.exabgp.speaker import ExabgpSpeaker, SpeakerPool
from routing.failover import FailoverLane
from routing.inbox import Inbox
from routing.metrics import Metrics
from routing.policy import ImportPolicy
from routing.policy_dataplane import PolicyDataplane
from routing.reload import ReloadPlan, plan_steps, render_text, running_config
from routing.rib import Rib
from routing.rpki_link import RpkiLink
from routing.runtime import LAG_PARK_S, LAG_SAMPLE_S, LagPacer, attrs_sweeper, gc_pacer
from routing.views import Views

log = logging.getLogger(__name__)

#: Prefixes of a long core job (a flush) per loop step: ~28 µs each measured on a busy 2-vCPU
#: machine (the reload work), so ~3 ms: the failover lane waits at most that long behind a flush.
JOB_SLICE = 100
#: Loop time the owner spends taking queued events before it yields (issue 12). A full table comes
#: 4 prefixes per UPDATE: one loop iteration per event cost ~12 µs/prefix of loop overhead, so the
#: owner handles events in runs. The failover lane, the FIB writer and the API run between runs, so
#: they wait at most this long plus one event (an event over ``core.JOB_STEP`` prefixes becomes a
#: sliced job instead). Checked with the loop clock, which uvloop keeps in whole milliseconds: a run
#: lasts 1-2 ms.
OWNER_STEP_S = 0.002
#: Routing events queued in front of the core before ExaBGP's stream is left in the relay.
INBOX_EVENTS = 256
#: FIB backlog (routes submitted, not yet in a batch) above which the owner takes no more routing
#: events, and at which it resumes (``fib/dataplane.py``, "Backlog"): five full batches, and one batch
#: less. Resuming as soon as one batch is taken keeps the owner working while the kernel writes the
#: next (a resume at two batches left the loop idle during those writes: 1M 16.8-19.1 s, against
#: 14.4-14.5 s without any hold).
FIB_BACKLOG_HIGH, FIB_BACKLOG_LOW = 50_000, 40_000
LAG_WARN_S = 0.05
#: How long a reload waits for the core's re-evaluation jobs before answering "still running".
RELOAD_CORE_WAIT_S = 120.0


def peer_status(config: Config, customer: CustomerConfig, pc: PeerConfig, speaker: int = 0) -> PeerStatus:
    """The core's record of one configured session (at start and when a reload adds it)."""
    b = config.peer_bfd(customer, pc)
    return PeerStatus(
        pc.address, pc.local_address, customer.name, "ipv4" if pc.address.version == 4 else "ipv6",
        Peer(pc.address, customer.name, customer.asn, config.router.asn),
        bfd=b.enabled, bfd_strict=b.enabled and b.strict, speaker=speaker,
    )


def backbone_status(config: Config, pc: PeerConfig, speaker: int = 0) -> PeerStatus:
    """The core's record of one backbone (iBGP) session: peer AS = local AS, so ``Peer.ibgp``."""
    asn = config.router.asn
    return PeerStatus(pc.address, pc.local_address, BACKBONE_LABEL, "ipv4" if pc.address.version == 4 else "ipv6",
                      Peer(pc.address, BACKBONE_LABEL, asn, asn), speaker=speaker, backbone=True)


def reconfigure_event(token: int, old: Config, new: Config, plan: ReloadPlan,
                      old_assignment: dict[IPAddress, int] | None = None,
                      new_assignment: dict[IPAddress, int] | None = None) -> Reconfigure:
    """The routing core's share of a reload: peers added, removed, updated (new policy, limits), and
    moved to another ExaBGP process (the assignments: address -> process index, before and after).

    A reset session is updated too (its policy reads the new ASN); ExaBGP re-opening it is what
    flushes and re-learns its routes.
    """
    old_assignment = old_assignment or {}
    new_assignment = new_assignment or {}
    old_addrs = {p.address for _c, p in old.peers()}
    new_addrs = {p.address for _c, p in new.peers()}
    resets = plan.resets()
    adds, updates = [], []
    for c, p in new.peers():
        policy = ImportPolicy(new.router, c, new.customer_rpki(c))
        if p.address not in old_addrs:
            adds.append(PeerAdd(peer_status(new, c, p, new_assignment.get(p.address, 0)), policy,
                                c.import_.max_prefixes))
            continue
        b = new.peer_bfd(c, p)
        updates.append(PeerUpdate(p.address, c.name, c.asn, new.router.asn, policy, c.import_.max_prefixes,
                                  b.enabled, b.enabled and b.strict,
                                  reevaluate=p.address in plan.reevaluate or str(p.address) in resets))
    removed = tuple(a for a in old_addrs if a not in new_addrs)
    # The backbone's sessions move with the pool too (they are in both assignments, not in peers()).
    kept = (old_addrs & new_addrs) | (old_assignment.keys() & new_assignment.keys() - old_addrs - new_addrs)
    moves = tuple((a, new_assignment.get(a, 0)) for a in sorted(kept, key=str)
                  if old_assignment.get(a, 0) != new_assignment.get(a, 0))
    return Reconfigure(token, tuple(adds), removed, tuple(updates), moves)


class Daemon:
    #: How ExaBGP takes a regenerated configuration: "signal" (SIGUSR1, its own reload: only changed
    #: neighbours are touched) or "restart" (the one process restarts; the FIB is kept, routes stale).
    EXABGP_RELOAD = "signal"

    def __init__(
        self, config: Config, *, netns: str | None = None, clock: Callable[[], float] = time.monotonic,
        config_path: str | Path | None = None,
    ) -> None:
        self.config = config
        #: The file the daemon was started with: what SIGHUP (and a reload without a file) re-reads.
        self.config_path = Path(config_path) if config_path is not None else None
        self.clock = clock
        self.metrics = Metrics(clock)
        self.inbox = Inbox(INBOX_EVENTS)
        #: Set by the routing core's owner whenever it works; the loop-lag sampler parks while it stays clear.
        self._core_worked = asyncio.Event()
        #: CPU placement (common/cpus.py): the writer thread apart from the real-time/failover work.
        self.writer_cpus, self.control_cpus = cpus.plan(config.cpus.writer, config.cpus.control)
        self.fib = KernelFib(
            protocol=config.fib.protocol, table=config.fib.table, metric=config.fib.metric,
            batch_size=config.fib.batch_size, metrics=self.metrics, netns=netns, writer_cpus=self.writer_cpus,
        )
        high = max(FIB_BACKLOG_HIGH, 5 * config.fib.batch_size)
        self.fib.dataplane.watch_backlog(high, max(FIB_BACKLOG_LOW, high - config.fib.batch_size), self.inbox.hold)
        run_dir = Path(config.exabgp.run_dir or config.api.socket.parent)
        self.pool = SpeakerPool(config, run_dir, self.inbox, self.metrics,
                                on_died=lambda i, rc: self.inbox.post(SpeakerDied(i, rc)))
        rib = Rib()
        peers: dict[IPAddress, PeerStatus] = {}
        for customer, pc in config.peers():
            rib.add_peer(pc.address, ImportPolicy(config.router, customer, config.customer_rpki(customer)),
                         customer.import_.max_prefixes)
            peers[pc.address] = peer_status(config, customer, pc, self.pool.assignment[pc.address])
            self.metrics.bgp_session_up.labels(str(pc.address), customer.name).set(0)
        for pc in config.backbone.peers:
            rib.add_peer(pc.address, BackboneImportPolicy(config.router), None)  # type: ignore[arg-type]
            peers[pc.address] = backbone_status(config, pc, self.pool.assignment[pc.address])
            self.metrics.bgp_session_up.labels(str(pc.address), BACKBONE_LABEL).set(0)
        self.metrics.configure_peers(config)
        self.core = RoutingCore(rib, peers, stale_timeout_s=config.fib.stale_timeout_s, metrics=self.metrics,
                                now=clock(), startup_hold_s=config.fib.startup_hold_s,
                                backbone_install=config.backbone.install)
        self.lane = FailoverLane(self.fib, self.inbox.post, {a: p.customer for a, p in peers.items() if p.bfd},
                                 clock, self.metrics)
        self.bfd = BfdController(config, run_dir, self.lane.on_bfd, self.metrics, cpus=self.control_cpus,
                                 fib_netns=netns)
        #: RTR clients (control lane); VRP changes reach the core as RpkiChanged (routing/rpki_link.py).
        self.rpki = RpkiLink(config, self.inbox.post, clock)
        self.views = Views(config, self.core, self.fib, self.bfd, self.pool, self.lane, self.inbox,
                           self.metrics, clock, clock(), self.teardown, reload=self.reload_source, rpki=self.rpki)
        self._tasks: set[asyncio.Task] = set()
        self._reload_lock = asyncio.Lock()
        self._reload_token = 0
        self._reconfigured: dict[int, asyncio.Future[ReconfigureApplied]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._admin: dict[IPAddress, list[asyncio.Future[bool]]] = {}
        self.xdp: Any = None
        #: RTBH kernel-path drop counter and source address validation (routing/policy_dataplane.py).
        self.policy_dp = self.views.policy_dp = PolicyDataplane(self.fib, netns)
        self._ready = asyncio.Event()

    @property
    def rib(self) -> Rib:
        return self.core.rib

    @property
    def peers(self) -> dict[IPAddress, PeerStatus]:
        return self.core.peers

    @property
    def speaker(self) -> ExabgpSpeaker:
        """The first ExaBGP process (the only one with ``exabgp.processes: 1``)."""
        return self.pool.speakers[0]

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
        from routing.api import serve_control  # aiohttp import kept off the unit-test path

        self.views.token = self.load_token()
        self._place()
        if set_compat_mode(self.fib.netns, 0):
            log.info("net.ipv4.nexthop_compat_mode=0 in this namespace: group changes no longer re-notify "
                     "every route (a failover is one message, not one per route); route dumps show nhid only")
        self._probe_mpls()
        self._check_neighbour_table()
        adopted = await asyncio.get_running_loop().run_in_executor(None, self.fib.adopt)
        self.views.adopted = adopted
        self.xdp = self.views.xdp = self._start_xdp()
        self.inbox.post(WatchAccepted(self.policy_dp.start(self.config, self.xdp is not None)))
        if adopted:
            log.info("adopted %d routes of protocol %d from the kernel; they stay until swept",
                     adopted, self.config.fib.protocol)
        self._perform(self.core.start(self.clock(), adopted_routes=adopted))
        await self.pool.start_servers()
        if self.bfd.enabled:
            await self.bfd.start_server()
        self.fib.start_monitor()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if self.bfd.enabled:
                tg.create_task(self.bfd.supervise(), name="bfd")
                tg.create_task(self.bfd.push_repairs(self.fib.dataplane), name="bfd-repair")
            if self.xdp is not None:
                tg.create_task(self._xdp_neighbours(), name="xdp")
            tg.create_task(self.fib.run(), name="fib")
            tg.create_task(self._owner(), name="rib")
            tg.create_task(self._loop_lag(), name="lag")
            tg.create_task(gc_pacer(self.metrics), name="gc")
            tg.create_task(attrs_sweeper(self.metrics), name="attrs")
            tg.create_task(serve_control(self.views), name="control")
            tg.create_task(self.pool.supervise(), name="exabgp")
            tg.create_task(self.rpki.run(), name="rpki")
            self._ready.set()

    def _place(self) -> None:
        if self.writer_cpus is None and len(cpus.available()) < 2:
            log.warning("one CPU only: the FIB writer's kernel sections and the BFD process share it (a large "
                        "table write can delay BFD by tens of milliseconds; see common/cpus.py)")
        # The BFD process (local repair included) is what must never wait; the loop and the API thread
        # (created from it, so they share its affinity) go where the configuration says, by default
        # anywhere: pinned beside a busy real-time BFD process they starved, and the kernel then
        # preempted real-time tasks to serve them (routing/config.py CpusConfig.loop).
        want = self.config.cpus.loop
        loop_cpus = self.control_cpus if want == "control" else (
            None if want == "any" else (set(want) & cpus.available()) or None)
        cpus.pin_thread(loop_cpus, "the event loop")
        log.info("CPU placement: FIB writer thread on %s, BFD process on %s, event loop and API on %s",
                 _cpu_list(self.writer_cpus), _cpu_list(self.control_cpus), _cpu_list(loop_cpus))

    def _check_neighbour_table(self) -> None:
        from fib.capabilities import neighbour_table_warnings

        for w in neighbour_table_warnings(self.config.peers_by_family()):
            log.warning("%s", w)

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
        """How late a 10 ms timer fires: the longest the failover lane or the API could have waited.
        Back to back while the routing core works, parked while the loop is idle (:class:`LagPacer`)."""
        hist = self.metrics.loop_lag_seconds
        pacer, worked = LagPacer(), self._core_worked
        while True:
            worked.clear()
            t0 = time.monotonic()
            await asyncio.sleep(LAG_SAMPLE_S)
            lag = max(0.0, time.monotonic() - t0 - LAG_SAMPLE_S)
            hist.observe(lag)
            self.views.loop_lag_max_ms = max(self.views.loop_lag_max_ms, lag * 1000)
            if lag > LAG_WARN_S:
                log.warning("event loop ran %.0f ms late (the failover lane and the API waited that long)", lag * 1000)
            if pacer.after_sample(lag, worked.is_set()):
                worked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(worked.wait(), LAG_PARK_S)

    # --- the routing core's owner ------------------------------------------------------------------
    async def _owner(self) -> None:
        core, inbox = self.core, self.inbox
        loop_time = asyncio.get_running_loop().time
        worked = self._core_worked
        while True:
            worked.set()  # the loop-lag sampler samples back to back while the core works
            if core.busy:
                # A slice of a long job; urgent events (BFD follow-ups, resets) may come between slices,
                # routing events may not (they could overtake their own peer's flush).
                self._step(core.work, JOB_SLICE)
                while (ev := inbox.take_urgent()) is not None:
                    self._step(core.on_event, ev, self.clock())
            else:
                ev = await inbox.get()
                deadline = loop_time() + OWNER_STEP_S
                self._step(core.on_event, ev, self.clock())
                # A run of queued events, bounded by OWNER_STEP_S; a long job started by one of them
                # (a flush, a packed UPDATE) is sliced above instead, so nothing overtakes it.
                while not core.busy and loop_time() < deadline and (ev := inbox.get_nowait()) is not None:
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
            elif isinstance(a, ReconfigureApplied):
                f = self._reconfigured.pop(a.token, None)
                if f is not None and not f.done():
                    f.set_result(a)
            elif isinstance(a, AcceptedChanged):
                self.policy_dp.accepted(a.changes)
            elif isinstance(a, SweepKernelStale):
                n = self.fib.sweep_stale()
                log.info("stale sweep: removing %d kernel routes nobody re-announced", n)

    async def _command(self, a: SendCommand) -> None:
        ok = False
        try:
            ok = await self.pool.command(a.peer, a.line)
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

    # --- live reconfiguration (control lane) -----------------------------------------------------
    def on_sighup(self) -> None:
        """SIGHUP: re-read the file the daemon was started with; the result goes to the log."""
        t = asyncio.get_running_loop().create_task(self.reload_source(None, None, dry_run=False))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def reload_source(self, path: str | None, text: str | None, *, dry_run: bool = False) -> dict[str, Any]:
        """Load a configuration (a file, YAML text, or the start file) and preview or apply it.

        An invalid configuration changes nothing: the answer is ``{"error": ...}`` with ``check``'s
        wording (file, key, reason).
        """
        try:
            if text is not None:
                new, source = config_from_text(text), "<request body>"
            else:
                p = Path(path) if path else self.config_path
                if p is None:
                    return {"error": "no configuration file: the daemon was not started with one; give a path"}
                new, source = load_config(p), str(p)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays:\n%s", exc)
            return {"error": str(exc)}
        return await self.reload(new, dry_run=dry_run, source=source)

    async def reload(self, new: Config, *, dry_run: bool = False, source: str = "") -> dict[str, Any]:
        """Preview ``new`` against the running configuration and, unless ``dry_run``, apply it."""
        async with self._reload_lock:
            old = self.config
            steps = plan_steps(old, new, self.rib, self.core.peers)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    plan = done.value
                    break
                await asyncio.sleep(0)  # a full table's preview must not hold the loop
            doc: dict[str, Any] = {"source": source, "dry_run": dry_run, "plan": plan.to_dict()}
            if dry_run:
                doc["outcome"] = {"applied": False}
            elif plan.empty:
                doc["outcome"] = {"applied": True, "changes": 0}
            else:
                doc["outcome"] = await self._apply(old, running_config(old, new), plan)
            log.info("reload of %s%s:\n%s", source or "a configuration", " (dry run)" if dry_run else "",
                     render_text(doc))
            return doc

    async def _apply(self, old: Config, new: Config, plan: ReloadPlan) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        old_peers = {p.address: (c, p) for c, p in old.peers()}
        new_peers = {p.address: (c, p) for c, p in new.peers()}
        self._reload_token += 1
        token = self._reload_token
        applied: asyncio.Future[ReconfigureApplied] = loop.create_future()
        self._reconfigured[token] = applied
        old_assignment = dict(self.pool.assignment)
        new_assignment = peer_processes(new)
        self.inbox.post(reconfigure_event(token, old, new, plan, old_assignment, new_assignment))
        # After the Reconfigure in the same lane: the peers it adds exist when they are watched.
        self.inbox.post(WatchAccepted(self.policy_dp.configure(new, self.xdp is not None)))
        # Every view reads the new configuration from here on.
        self.config = self.views.config = new
        logging.getLogger().setLevel(getattr(logging, new.log_level))
        for addr, (c, _p) in old_peers.items():
            if addr not in new_peers:
                with contextlib.suppress(KeyError):
                    self.metrics.bgp_session_up.remove(str(addr), c.name)
        for addr, (c, _p) in new_peers.items():
            if addr not in old_peers:
                self.metrics.bgp_session_up.labels(str(addr), c.name).set(0)
        self.metrics.configure_peers(new)
        outcome: dict[str, Any] = {"applied": True}
        # BFD: the whole list again; the BFD process retimes in place (Poll Sequence).
        self.lane.peers.clear()
        self.lane.peers.update({p.address: c.name for c, p in new.peers() if new.peer_bfd(c, p).enabled})
        outcome["bfd"] = await self.bfd.update(new, start=self._start_bfd)
        # Exports on established sessions, one acked command at a time.
        results = []
        for e in plan.exports:
            if not e["established"]:
                continue
            addr = parse_address(e["peer"])
            lines = [messages.announce_route(addr, parse_prefix(n), e.get("attributes", "")) for n in e["announce"]]
            lines += [messages.withdraw_route(addr, parse_prefix(n)) for n in e["withdraw"]]
            for line in lines:
                results.append({"command": line, "ok": await self.pool.command(addr, line)})
        outcome["exports"] = results
        outcome["exabgp"], outcome["exabgp_processes"] = await self._reload_exabgp(new, plan)
        outcome["rpki"] = self.rpki.update(new)
        try:
            done = await asyncio.wait_for(asyncio.shield(applied), RELOAD_CORE_WAIT_S)
            outcome["rib"] = {"became_accepted": done.became_accepted, "became_rejected": done.became_rejected,
                              "changed": done.changed, "routes_withdrawn": done.routes_withdrawn,
                              "teardowns": done.teardowns}
        except TimeoutError:
            outcome["rib"] = f"re-evaluation still running after {RELOAD_CORE_WAIT_S:.0f}s"
        if plan.needs_restart:
            outcome["needs_restart"] = plan.needs_restart
        return outcome

    def _start_bfd(self) -> None:
        """The first BFD session came with a reload: start the BFD process (once)."""
        if self._tg is not None:
            self._tg.create_task(self.bfd.supervise(), name="bfd")
            self._tg.create_task(self.bfd.push_repairs(self.fib.dataplane), name="bfd-repair")

    async def _reload_exabgp(self, new: Config, plan: ReloadPlan) -> tuple[str, dict[str, str]]:
        """Rewrite the configuration of each ExaBGP process whose neighbours changed and make it take
        it; the others are not touched. Returns a summary (one process's outcome, or "unchanged") and
        the outcome per process.

        A customer moved to another process (``exabgp.processes`` changed) is dropped by one and added
        by the other: its sessions reset (routes kept stale until the new End-of-RIB).
        """
        per = await self.pool.reload(new, signal_reload=self.EXABGP_RELOAD == "signal")
        outcomes = sorted(set(per.values()))
        if not per:
            return "unchanged", per
        return (outcomes[0] if len(outcomes) == 1 else "; ".join(f"{k}: {v}" for k, v in sorted(per.items()))), per

    async def stop(self) -> None:
        if self.xdp is not None:
            # Left attached, like our kernel routes: the program and its (pinned) maps keep forwarding
            # until the next start adopts them. `ip link set dev IF xdp off` removes it by hand.
            self.xdp.stop_monitor()
            self.xdp.prog.close(detach=False)
        for h in self._timers.values():
            h.cancel()
        self.policy_dp.stop()
        await self.bfd.stop()
        await self.pool.stop()
        with contextlib.suppress(Exception):
            self.fib.close()



def _cpu_list(c: set[int] | None) -> str:
    return ",".join(map(str, sorted(c))) if c else "any CPU"
