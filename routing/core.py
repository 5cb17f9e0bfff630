"""The routing core: sans-IO owner of the RIB and the peer lifecycle.

Theory of operation
-------------------
Like ``bfd/session.py``, this module does no I/O and reads no clock. The daemon (the shell) feeds
it events with the time they happened — :meth:`RoutingCore.on_event(event, now)` — and performs the
actions it returns: :class:`SubmitFib` (hand RIB diffs to the dataplane), :class:`SendCommand` (a
line for ExaBGP, performed as a tracked task whose outcome comes back as :class:`CommandDone`) and
:class:`ArmTimer` (call :meth:`on_event` with :class:`TimerFired` at that time). Only this object
mutates the RIB, so tests drive it with a fake clock and no processes at all. Peers named by
:class:`WatchAccepted` (source address validation on what they announce) get a change recorder on
their Adj-RIB-In; every step drains it into one :class:`AcceptedChanged`.

Peer lifecycle, one table (:data:`PEER_TRANSITIONS`); an unknown pair is an explicit error::

    idle --connected--> connect --up--> established --down--> idle   (routes flushed)
      ^                    |                |
      +------down----------+                +--speaker_died--> idle  (routes kept as stale until
                                                                      End-of-RIB or the stale timer)

Sessions are spread over a pool of ExaBGP processes (``routing/exabgp/pool.py``); each peer records
the index of the process holding it (:attr:`PeerStatus.speaker`). ``SpeakerDied(N)`` is
``speaker_died`` for process N's peers only: the others' sessions are untouched. Each process has
its own stale timer (``stale:N``), which sweeps only the peers that process's death made stale. A
reload that moves a customer to another process (:attr:`Reconfigure.moves`) treats its sessions the
same way: stale, swept after the new process's End-of-RIB or that process's stale timer.

ExaBGP reports ``connected`` for every connection attempt, failed ones too, so a ``down`` that ends
an attempt which never reached Established is not a session going down: it leaves no "last down
reason" and no flap.

Long work is sliced. Flushing a peer that sent a million prefixes is a million RIB operations;
done in one step it would hold the event loop for seconds, and the failover lane, the API and the
BFD channel all live on that loop. So a flush (session down, BFD down, speaker death sweep,
strict-mode BFD gating) is queued as a *job* and :meth:`RoutingCore.work` runs at most ``budget``
prefixes of it per call; the shell yields to the loop between calls. Routing events are taken only
when no job is pending, so a peer's new UPDATEs never interleave with the flush of its old routes.

Route origin validation: a changed VRP set (:class:`routing.rov.RpkiChanged`, urgent lane) swaps
the RIB's validator and queues a job that re-validates the stored paths inside the changed ranges
and re-runs import policy for those whose state changed (``routing/rov.py``); a newer change
supersedes it.

Live reconfiguration (:class:`Reconfigure`, built by the daemon from two configurations, see
``routing/reload.py``) is core work like any other: peers are added at once; a removed peer's routes
are flushed by a job which then forgets the peer; a peer whose import policy changed has its stored
Adj-RIB-In (accepted and rejected paths) re-run through the new policy by a sliced job, which moves
the Loc-RIB and so the FIB, with no command to ExaBGP. Only a ``max_prefixes`` lowered below what the
peer already stored tears that one session down. When the last job of a reconfiguration has run,
:class:`ReconfigureApplied` tells the shell, with what moved. Events that arrive for a removed peer
(ExaBGP's "down" once it drops the neighbour) are dropped without counting them as unknown.

Backbone peers (:attr:`PeerStatus.backbone`, iBGP to the route reflectors) are peers like any
other, with their paths gated out of the Loc-RIB unless ``backbone.install``; the core also owns
their Adj-RIB-Out (:class:`routing.backbone.BackboneExport`): after every step it takes the
Loc-RIB's best-path change stream, and flushes it as export commands when enough is pending or the
short export timer fires; a backbone session's Up queues a sliced replay job (``routing/backbone.py``
says why that keeps export right across an ExaBGP restart).

What is deliberately *not* here: moving traffic when BFD says a neighbour died. That is the
failover lane (``routing/failover.py``), which rewrites the nexthop groups before this core hears
of the event; the core then reconciles the RIB (:class:`BfdDown`) and closes the BGP session.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from common.model import FibDiff, IPAddress, IPNetwork, Peer, intern_attrs, new_path
from common.model import Path as RoutePath
from routing.backbone import EXPORT_TIMER, FLUSH_AT, FLUSH_DELAY_S, BackboneExport
from routing.backbone import PURPOSE as EXPORT_PURPOSE
from routing.exabgp import messages as msg
from routing.policy import ImportPolicy, Rejection
from routing.reload import original_path
from routing.rib import LimitExceeded, Rib
from routing.rov import Revalidation, RpkiChanged

log = logging.getLogger(__name__)

CEASE_MAX_PREFIXES = 1
CEASE_ADMIN_RESET = 4
CEASE_CONFIG_CHANGE = 6  # RFC 4486 "other configuration change"
CEASE_BFD_DOWN = 10  # RFC 9384


class PeerState(enum.Enum):
    IDLE = "idle"
    CONNECT = "connect"
    ESTABLISHED = "established"


class PeerInput(enum.Enum):
    CONNECTED = "connected"  # ExaBGP opened (or tried to open) TCP
    UP = "up"  # Established
    DOWN = "down"  # the session ended (ExaBGP's word; after a teardown of ours too)
    #: The session ended without a NOTIFICATION, not by us, from a peer whose graceful-restart
    #: capability lists this session's AFI: we are its helper (RFC 4724 §4.2), routes kept as stale.
    DOWN_GRACEFUL = "down_graceful"
    SPEAKER_DIED = "speaker_died"  # the ExaBGP process exited: no words, routes kept as stale


class Effect(enum.Enum):
    NONE = "none"
    ESTABLISHED = "established"  # count it, clear End-of-RIB, gauge up
    FLUSH = "flush"  # the session was up: withdraw everything it sent, record why
    ATTEMPT_FAILED = "attempt_failed"  # never reached Established: nothing to flush or report
    STALE = "stale"  # keep the routes, mark them stale (graceful speaker restart)


#: (state, input) -> (new state, effect). Every pair is listed; tests cover each row.
PEER_TRANSITIONS: dict[tuple[PeerState, PeerInput], tuple[PeerState, Effect]] = {
    (PeerState.IDLE, PeerInput.CONNECTED): (PeerState.CONNECT, Effect.NONE),
    # ExaBGP's 'connected' line can be missed (relay respawned): Up from idle is still a session.
    (PeerState.IDLE, PeerInput.UP): (PeerState.ESTABLISHED, Effect.ESTABLISHED),
    (PeerState.IDLE, PeerInput.DOWN): (PeerState.IDLE, Effect.ATTEMPT_FAILED),
    # Only an Established session can end gracefully (the core asks for it only then).
    (PeerState.IDLE, PeerInput.DOWN_GRACEFUL): (PeerState.IDLE, Effect.ATTEMPT_FAILED),
    (PeerState.IDLE, PeerInput.SPEAKER_DIED): (PeerState.IDLE, Effect.STALE),
    (PeerState.CONNECT, PeerInput.CONNECTED): (PeerState.CONNECT, Effect.NONE),
    (PeerState.CONNECT, PeerInput.UP): (PeerState.ESTABLISHED, Effect.ESTABLISHED),
    (PeerState.CONNECT, PeerInput.DOWN): (PeerState.IDLE, Effect.ATTEMPT_FAILED),
    (PeerState.CONNECT, PeerInput.DOWN_GRACEFUL): (PeerState.IDLE, Effect.ATTEMPT_FAILED),
    (PeerState.CONNECT, PeerInput.SPEAKER_DIED): (PeerState.IDLE, Effect.STALE),
    # A second connection (collision) while Established: the session stays.
    (PeerState.ESTABLISHED, PeerInput.CONNECTED): (PeerState.ESTABLISHED, Effect.NONE),
    (PeerState.ESTABLISHED, PeerInput.UP): (PeerState.ESTABLISHED, Effect.NONE),
    (PeerState.ESTABLISHED, PeerInput.DOWN): (PeerState.IDLE, Effect.FLUSH),
    (PeerState.ESTABLISHED, PeerInput.DOWN_GRACEFUL): (PeerState.IDLE, Effect.STALE),
    (PeerState.ESTABLISHED, PeerInput.SPEAKER_DIED): (PeerState.IDLE, Effect.STALE),
}


class _Slice(list):
    """FIB diffs of one job slice that also says how many prefixes it examined (its cost)."""

    cost: int = 0


class UnknownTransition(RuntimeError):
    pass


def transition(state: PeerState, inp: PeerInput) -> tuple[PeerState, Effect]:
    try:
        return PEER_TRANSITIONS[(state, inp)]
    except KeyError:
        raise UnknownTransition(f"no transition for peer in {state.value} on {inp.value}") from None


# --- events the shell feeds in (besides ExaBGP's own, routing.exabgp.messages) ---------------------
@dataclass(frozen=True, slots=True)
class SpeakerDied:
    """ExaBGP process ``process`` (pool index) exited: only its peers go stale."""

    process: int = 0
    returncode: int | None = None


@dataclass(frozen=True, slots=True)
class BfdDown:
    """The failover lane already moved traffic off ``peer``; reconcile the RIB and close BGP."""

    peer: IPAddress
    diag: str
    at: float


@dataclass(frozen=True, slots=True)
class BfdUp:
    peer: IPAddress


@dataclass(frozen=True, slots=True)
class AdminReset:
    peer: IPAddress


@dataclass(frozen=True, slots=True)
class CommandDone:
    peer: IPAddress | None
    purpose: str
    ok: bool


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class PeerUpdate:
    """A kept peer's new settings (a session that needs no reset: the daemon checked that)."""

    address: IPAddress
    customer: str
    asn: int
    local_asn: int
    policy: ImportPolicy
    max_prefixes: int | None
    bfd: bool
    bfd_strict: bool
    #: The import policy changed: re-run the stored Adj-RIB-In through it.
    reevaluate: bool


@dataclass(frozen=True, slots=True)
class PeerAdd:
    status: PeerStatus
    policy: ImportPolicy
    max_prefixes: int | None


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """Apply a new configuration's peers and policies (urgent lane: it must not wait behind a table)."""

    token: int
    add: tuple[PeerAdd, ...] = ()
    remove: tuple[IPAddress, ...] = ()
    update: tuple[PeerUpdate, ...] = ()
    #: Kept peers now held by another ExaBGP process: (address, new process index). Their sessions
    #: are re-opened by the new process; routes are kept stale meanwhile.
    moves: tuple[tuple[IPAddress, int], ...] = ()


# --- actions the shell performs ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WatchAccepted:
    """Record which prefixes these peers' Adj-RIB-Ins accept (source address validation in
    ``accepted-routes`` mode); every other peer stops being watched."""

    peers: frozenset[IPAddress]


@dataclass(frozen=True, slots=True)
class AcceptedChanged:
    """Watched peers' prefixes that entered (True) or left (False) their accepted set, in order; a
    newly watched peer's whole accepted set comes first, as entries."""

    changes: tuple[tuple[IPAddress, IPNetwork, bool], ...]


@dataclass(frozen=True, slots=True)
class SubmitFib:
    diffs: list[FibDiff]


@dataclass(frozen=True, slots=True)
class SendCommand:
    peer: IPAddress | None
    line: str
    purpose: str  # bfd_down | max_prefixes | admin: the teardown reason, for metrics and results


@dataclass(frozen=True, slots=True)
class ArmTimer:
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class SweepKernelStale:
    """Remove routes adopted from the kernel at start that nobody re-announced."""


@dataclass(slots=True)
class ReconfigureApplied:
    """Every job of reconfiguration ``token`` has run: what moved (counts over all its peers)."""

    token: int
    became_accepted: int = 0
    became_rejected: int = 0
    changed: int = 0
    routes_withdrawn: int = 0
    teardowns: list[str] = field(default_factory=list)


Action = SubmitFib | SendCommand | ArmTimer | SweepKernelStale | ReconfigureApplied | AcceptedChanged
STALE_TIMER = "stale"


def stale_timer(process: int) -> str:
    """The stale timer of one ExaBGP process's peers (``stale:N``)."""
    return f"{STALE_TIMER}:{process}"


#: Graceful-restart helper timer of one peer (``gr:ADDRESS``).
GR_TIMER = "gr"
#: After a helped peer is back, how long its stale paths wait for its End-of-RIB (FRR's default
#: ``bgp graceful-restart stalepath-time``).
GR_STALE_PATH_S = 360.0
STARTUP_SWEEP_TIMER = "startup_sweep"
STARTUP_HOLD_TIMER = "startup_hold"
#: Prefixes per slice of a long job: ~28 µs each on a busy 2-vCPU machine, so a slice stays ~3 ms.
JOB_STEP = 100


@dataclass(slots=True)
class PeerStatus:
    """What the core knows about one configured BGP session."""

    address: IPAddress
    local_address: IPAddress
    customer: str
    family: str  # ipv4 | ipv6: the family whose End-of-RIB ends a (re)start
    peer: Peer
    bfd: bool = False
    bfd_strict: bool = False
    state: PeerState = PeerState.IDLE
    since: float = 0.0
    established_count: int = 0
    flaps: int = 0
    last_down_reason: str = ""
    #: Why *we* closed the session (BFD, max_prefixes, operator): kept over ExaBGP's own wording.
    teardown_reason: str = ""
    eor: set[str] = field(default_factory=set)
    updates: int = 0
    bfd_state: str = "down"
    bfd_down_at: float | None = None
    #: Index of the ExaBGP process holding this session (routing/exabgp/pool.py).
    speaker: int = 0
    #: The peer's graceful-restart capability from its last OPEN (None: not advertised).
    graceful_restart: msg.GracefulRestart | None = None
    #: A NOTIFICATION was sent or received since Established: the end is not graceful.
    notified: bool = False
    #: Routes kept as stale because we are this peer's graceful-restart helper.
    gr_helping: bool = False
    #: An iBGP session to the backbone (``backbone.peers``): sent our customers' routes, its own
    #: routes installed only with ``backbone.install`` (routing/backbone.py).
    backbone: bool = False


@dataclass(slots=True)
class _RejectionsSeen:
    """One Adj-RIB-In's rejection totals (``totals``, the object) as counted into the metric so far."""

    totals: Counter[str]
    n: int
    by_reason: dict[str, int]


@dataclass(slots=True)
class CoreCounters:
    unknown_peer_events: int = 0
    commands_failed: int = 0
    jobs_run: int = 0


class RoutingCore:
    """The single owner of the RIB: events and time in, actions out.

    ``metrics`` is an optional sink (prometheus_client objects: in-memory counters, not I/O).
    """

    def __init__(self, rib: Rib, peers: dict[IPAddress, PeerStatus], *, stale_timeout_s: float,
                 metrics: Any = None, now: float = 0.0, startup_hold_s: float = 0.0,
                 backbone_install: bool = False) -> None:
        self.rib = rib
        self.peers = peers
        self.stale_timeout_s = stale_timeout_s
        self.metrics = metrics
        self.counters = CoreCounters()
        self._jobs: deque[Iterator[list[FibDiff]]] = deque()
        #: Actions produced by jobs besides FIB diffs (a finished reconfiguration), returned by work().
        self._notices: list[Action] = []
        #: Peers removed by a reconfiguration: their late events are expected, not unknown.
        self._removed: set[IPAddress] = set()
        #: Route origin validation: VRP changes re-validate stored paths in a job (routing/rov.py).
        self.rov = Revalidation()
        self._awaiting_startup_eor = False
        self.startup_hold_s = startup_hold_s
        #: FIB changes held back after a restart (latest per prefix), None when not holding.
        self._held: dict[IPNetwork, FibDiff] | None = None
        #: Stale timer name -> peers whose stale paths it sweeps when it fires.
        self._stale_armed: dict[str, set[IPAddress]] = {}
        #: Peers whose accepted sets are recorded (:class:`WatchAccepted`).
        self._watched: set[IPAddress] = set()
        #: Per peer: its UPDATE counter's labelled series (``labels(str(addr))`` per UPDATE was ~5 µs),
        #: and the rejection totals already counted into the metric (:meth:`_rejections_seen`).
        self._updates_series: dict[IPAddress, Any] = {}
        self._rejections: dict[IPAddress, _RejectionsSeen] = {}
        for ps in peers.values():
            ps.since = now
            if ps.bfd_strict:
                rib.set_eligible(ps.address, False)
        self._init_backbone(backbone_install)

    def start(self, now: float, adopted_routes: int = 0) -> list[Action]:
        """Actions at start-up: routes adopted from the kernel wait for every peer's End-of-RIB, for
        at most the stale timeout."""
        self._awaiting_startup_eor = adopted_routes > 0
        if not self._awaiting_startup_eor:
            return []
        out: list[Action] = [ArmTimer(STARTUP_SWEEP_TIMER, now + self.stale_timeout_s)]
        if self.startup_hold_s > 0:
            # Sessions come back one by one: without a hold, a dual-homed customer's ECMP routes
            # would be rewritten to one next hop and back, though the adopted ones are already right.
            self._held = {}
            out.append(ArmTimer(STARTUP_HOLD_TIMER, now + self.startup_hold_s))
        return out

    def _release(self) -> list[Action]:
        held, self._held = self._held, None
        return [SubmitFib(list(held.values()))] if held else []

    def _hold(self, actions: list[Action]) -> list[Action]:
        """While holding after a restart, FIB changes accumulate (the latest per prefix) instead."""
        held = self._held
        if held is None or not actions:
            return actions
        out: list[Action] = []
        for a in actions:
            if isinstance(a, SubmitFib):
                for d in a.diffs:
                    prev = held.get(d.prefix)
                    held[d.prefix] = d if prev is None else FibDiff(d.prefix, prev.old, d.new)
            else:
                out.append(a)
        return out

    # --- jobs: long RIB work in slices ---------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A job is pending: routing events must wait (their peer's flush may still be running)."""
        return bool(self._jobs)

    def work(self, budget: int = JOB_STEP) -> list[Action]:
        """Run up to ``budget`` prefixes of pending jobs."""
        return self._hold(self._work(budget)) + self._accepted_changes() + self._export(None)

    def _work(self, budget: int) -> list[Action]:
        diffs: list[FibDiff] = []
        while self._jobs and budget > 0:
            job = self._jobs[0]
            chunk = next(job, None)
            if chunk is None:
                self._jobs.popleft()
                self.counters.jobs_run += 1
                continue
            diffs += chunk
            # A slice that examined many prefixes but changed few still costs what it examined.
            budget -= max(1, len(chunk), getattr(chunk, "cost", 0))
        out: list[Action] = [SubmitFib(diffs)] if diffs else []
        if self._notices:
            out += self._notices
            self._notices = []
        return out

    def _sliced(self, prefixes: list[IPNetwork], apply: Callable[[list[IPNetwork]], list[FibDiff]],
                step: int = JOB_STEP) -> Iterator[list[FibDiff]]:
        for i in range(0, len(prefixes), step):
            yield apply(prefixes[i:i + step])

    def _flush_job(self, addr: IPAddress) -> None:
        a = self.rib.adj.get(addr)
        if a is None:
            return
        prefixes = list(a.accepted) + list(a.rejected)
        if prefixes:
            self._jobs.append(self._sliced(prefixes, lambda ps: self.rib.withdraw(addr, ps)))

    def _stale_sweep_job(self, addr: IPAddress) -> None:
        a = self.rib.adj.get(addr)
        if a is None or not a.stale:
            return
        stale, a.stale = list(a.stale), set()
        self._jobs.append(self._sliced(stale, lambda ps: self.rib.withdraw(addr, ps)))

    def _eligible_job(self, addr: IPAddress, eligible: bool) -> None:
        def run() -> Iterator[list[FibDiff]]:
            yield self.rib.set_eligible(addr, eligible)

        self._jobs.append(run())

    # --- live reconfiguration ------------------------------------------------------------------------
    def _reconfigure(self, ev: Reconfigure, now: float) -> list[Action]:
        done = ReconfigureApplied(ev.token)
        out: list[Action] = []
        for addr in ev.remove:
            ps = self.peers.pop(addr, None)
            if ps is None:
                continue
            self._removed.add(addr)
            a = self.rib.adj.get(addr)
            done.routes_withdrawn += len(a.accepted) if a else 0
            log.info("peer %s (%s) removed by reconfiguration: flushing its routes", addr, ps.customer)
            self._jobs.append(self._remove_job(addr))
        for add in ev.add:
            ps = add.status
            addr = ps.address
            self._removed.discard(addr)
            ps.since = now
            a = self.rib.add_peer(addr, add.policy, add.max_prefixes)
            # Removed by an earlier reload whose flush is still running: the Adj-RIB-In is kept (the
            # flush empties it before this peer's UPDATEs are taken) and takes the new settings.
            a.policy, a.max_prefixes = add.policy, add.max_prefixes
            self.peers[addr] = ps
            if ps.bfd_strict:
                self.rib.set_eligible(addr, False)  # nothing stored yet: no diffs
            log.info("peer %s (%s) added by reconfiguration", addr, ps.customer)
        for u in ev.update:
            out += self._update_peer(u, done)
        for addr, process in ev.moves:
            out += self._move(addr, process, now)
        self._jobs.append(self._announce_done(done))
        return out

    def _move(self, addr: IPAddress, process: int, now: float) -> list[Action]:
        """A reload moved ``addr`` to ExaBGP process ``process``: its session restarts there."""
        ps = self.peers.get(addr)
        if ps is None or ps.speaker == process:
            return []
        old, ps.speaker = ps.speaker, process
        if ps.state is PeerState.ESTABLISHED:
            ps.teardown_reason = f"moved from exabgp-{old} to exabgp-{process}"
        self._feed(ps, PeerInput.SPEAKER_DIED, now)
        kept = self.rib.mark_stale(addr)
        log.info("peer %s (%s) moved from exabgp-%d to exabgp-%d: %d paths kept as stale until it is back",
                 addr, ps.customer, old, process, kept)
        return self._arm_stale(process, {addr}, now)

    def _arm_stale(self, process: int, addrs: set[IPAddress], now: float) -> list[Action]:
        name = stale_timer(process)
        self._stale_armed.setdefault(name, set()).update(addrs)
        return [ArmTimer(name, now + self.stale_timeout_s)]

    def _update_peer(self, u: PeerUpdate, done: ReconfigureApplied) -> list[Action]:
        ps = self.peers.get(u.address)
        a = self.rib.adj.get(u.address)
        if ps is None or a is None:
            return []
        addr = u.address
        ps.customer = u.customer
        ps.peer = peer = Peer(addr, u.customer, u.asn, u.local_asn, ps.peer.router_id)
        old_policy, a.policy, a.max_prefixes = a.policy, u.policy, u.max_prefixes
        if ps.bfd_strict != (u.bfd and u.bfd_strict):
            gate = u.bfd and u.bfd_strict and ps.bfd_state != "up"
            self._eligible_job(addr, not gate)
        ps.bfd, ps.bfd_strict = u.bfd, u.bfd and u.bfd_strict
        if u.max_prefixes is not None and a.received > u.max_prefixes:
            log.error("peer %s (%s) stores %d prefixes, above its new max_prefixes %d: tearing the session "
                      "down (cease 1)", addr, ps.customer, a.received, u.max_prefixes)
            ps.teardown_reason = f"max_prefixes lowered to {u.max_prefixes} (stored {a.received})"
            self._teardown_metric(ps, "max_prefixes")
            self._flush_job(addr)
            done.teardowns.append(str(addr))
            return [SendCommand(addr, msg.teardown(addr, CEASE_MAX_PREFIXES), "max_prefixes")]
        if u.reevaluate:
            self._jobs.append(self._reevaluate_job(addr, old_policy, u.policy, peer, done))
        return []

    def _reevaluate_job(self, addr: IPAddress, old_policy: ImportPolicy, policy: ImportPolicy, peer: Peer,
                        done: ReconfigureApplied, step: int = JOB_STEP) -> Iterator[list[FibDiff]]:
        """Re-run a peer's stored announcements through its new policy, ``step`` prefixes per slice."""
        a = self.rib.adj[addr]
        prefixes = list(a.accepted) + list(a.rejected)
        loc = self.rib.loc
        for i in range(0, len(prefixes), step):
            if self.rib.adj.get(addr) is not a:
                return  # removed meanwhile
            eligible = self.rib.eligible.get(addr, True)
            diffs = _Slice()
            diffs.cost = len(prefixes[i:i + step])
            for prefix in prefixes[i:i + step]:
                current = a.accepted.get(prefix)
                if current is not None:
                    stored = current
                else:
                    rej = a.rejected.get(prefix)
                    if rej is None:
                        continue
                    stored = rej[0]
                orig = self.rib.validated(original_path(stored, old_policy, peer), policy)
                verdict = policy.apply(orig)
                d: FibDiff | None = None
                if isinstance(verdict, Rejection):
                    a.reject(prefix, orig, verdict)
                    if current is None:
                        continue
                    done.became_rejected += 1
                    if eligible:
                        d = loc.remove_path(prefix, addr)
                else:
                    a.accept(prefix, verdict)
                    if current is None:
                        done.became_accepted += 1
                    elif current == verdict:
                        continue
                    else:
                        done.changed += 1
                    if eligible:
                        d = loc.set_path(verdict)
                if d is not None:
                    diffs.append(d)
            yield diffs

    def _remove_job(self, addr: IPAddress, step: int = JOB_STEP) -> Iterator[list[FibDiff]]:
        """Flush a removed peer's routes in slices, then forget its Adj-RIB-In."""
        a = self.rib.adj.get(addr)
        if a is None:
            return
        prefixes = list(a.accepted) + list(a.rejected)
        for i in range(0, len(prefixes), step):
            yield self.rib.withdraw(addr, prefixes[i:i + step])
        if self.rib.adj.get(addr) is a and addr not in self.peers:
            del self.rib.adj[addr]
            self.rib.eligible.pop(addr, None)

    def _announce_done(self, done: ReconfigureApplied) -> Iterator[list[FibDiff]]:
        self._notices.append(done)
        yield []

    # --- events ----------------------------------------------------------------------------------------
    def on_event(self, ev: object, now: float) -> list[Action]:
        if isinstance(ev, TimerFired) and ev.name == EXPORT_TIMER:
            self._export_armed = False
            return self._export_flush()
        if isinstance(ev, CommandDone) and ev.purpose == EXPORT_PURPOSE:
            self._export_done(ev.peer, ev.ok)
        return self._hold(self._on_event(ev, now)) + self._accepted_changes() + self._export(now)

    def _watch(self, peers: frozenset[IPAddress]) -> None:
        for addr, a in self.rib.adj.items():
            if addr not in peers:
                a.changes = None
            elif a.changes is None:  # newly watched: what it holds now, then every change
                a.changes = [(p, True) for p in a.accepted]
        self._watched = {a for a in peers if a in self.rib.adj}

    def _accepted_changes(self) -> list[Action]:
        """Drain the watched Adj-RIB-Ins' change recorders into one action (SAV accepted-routes)."""
        out: list[tuple[IPAddress, IPNetwork, bool]] = []
        for addr in self._watched:
            a = self.rib.adj.get(addr)
            if a is not None and a.changes:
                out += [(addr, p, ok) for p, ok in a.changes]
                a.changes.clear()
        return [AcceptedChanged(tuple(out))] if out else []

    def _on_event(self, ev: object, now: float) -> list[Action]:
        if type(ev) is msg.UpdateBatch:  # the bulk of a table's ingest: first, one dict probe
            ps = self.peers.get(ev.peer)
            if ps is not None:
                return self._updates(ps, ev.updates)
        if isinstance(ev, SpeakerDied):
            return self._speaker_died(ev.process, now)
        if isinstance(ev, TimerFired):
            return self._timer(ev.name)
        if isinstance(ev, CommandDone):
            if not ev.ok:
                self.counters.commands_failed += 1
            return []
        if isinstance(ev, msg.Shutdown | msg.RelayStats):
            return []
        if isinstance(ev, Reconfigure):
            return self._reconfigure(ev, now)
        if isinstance(ev, RpkiChanged):
            return self._rpki_changed(ev)
        if isinstance(ev, WatchAccepted):
            self._watch(ev.peers)
            return []
        addr = getattr(ev, "peer", None)
        ps = self.peers.get(addr) if addr is not None else None
        if ps is None:
            if addr in self._removed:
                return []
            self.counters.unknown_peer_events += 1
            log.warning("event for unconfigured peer %s dropped", addr)
            return []
        if isinstance(ev, msg.UpdateEvent):
            return self._update(ps, ev)
        if isinstance(ev, msg.StateEvent):
            return self._state(ps, ev, now)
        if isinstance(ev, msg.EorEvent):
            ps.eor.add(ev.afi)
            if ps.gr_helping:
                log.info("peer %s (%s): End-of-RIB after its graceful restart: sweeping what it did not "
                         "re-announce", ps.address, ps.customer)
                ps.gr_helping = False
            self._stale_sweep_job(ps.address)
            return self._startup_eor()
        if isinstance(ev, msg.OpenEvent):
            p = ps.peer
            ps.peer = Peer(p.address, p.customer, p.asn, p.local_asn, ev.router_id)
            ps.graceful_restart = ev.graceful_restart
            return self._gr_reopen(ps, now) if ps.gr_helping else []
        if isinstance(ev, msg.NotificationEvent):
            ps.last_down_reason = f"notification {ev.direction} ({ev.code},{ev.subcode})"
            ps.notified = True
            return []
        if isinstance(ev, BfdDown):
            return self._bfd_down(ps, ev)
        if isinstance(ev, BfdUp):
            ps.bfd_state = "up"
            if ps.bfd_strict:
                self._eligible_job(ps.address, True)
            return []
        if isinstance(ev, AdminReset):
            ps.teardown_reason = "operator reset"
            self._teardown_metric(ps, "admin")
            return [SendCommand(ps.address, msg.teardown(ps.address, CEASE_ADMIN_RESET), "admin")]
        raise TypeError(f"routing core cannot handle {type(ev).__name__}")

    def _rpki_changed(self, ev: RpkiChanged) -> list[Action]:
        """New VRPs: re-validate the stored paths inside the changed ranges in slices (routing/rov.py)."""
        self._jobs.append(self.rov.start(self.rib, ev, self.metrics))
        return []

    def _feed(self, ps: PeerStatus, inp: PeerInput, now: float, reason: str = "") -> Effect:
        was = ps.state
        new, effect = transition(was, inp)
        if new is not was:
            ps.since = now
        ps.state = new
        if ps.backbone:
            self._backbone_session(ps, was, effect)
        m = self.metrics
        if effect is Effect.ESTABLISHED:
            ps.established_count += 1
            ps.eor.clear()
            ps.notified = False
            if m is not None:
                m.bgp_session_up.labels(str(ps.address), ps.customer).set(1)
                m.bgp_session_established(str(ps.address), now)
            log.info("peer %s (%s) established", ps.address, ps.customer)
        elif effect is Effect.FLUSH or (effect is Effect.STALE and was is PeerState.ESTABLISHED):
            ps.flaps += 1
            ps.eor.clear()
            ps.last_down_reason = ps.teardown_reason or reason or ps.last_down_reason
            ps.teardown_reason = ""
            if m is not None:
                m.bgp_session_up.labels(str(ps.address), ps.customer).set(0)
                m.bgp_session_down(str(ps.address))
        elif effect is Effect.STALE:
            ps.eor.clear()
        elif effect is Effect.ATTEMPT_FAILED:
            ps.teardown_reason = ""  # an attempt we cut short is not a session that went down
        return effect

    def _state(self, ps: PeerStatus, ev: msg.StateEvent, now: float) -> list[Action]:
        if self.metrics is not None:
            self.metrics.bgp_session_transitions.labels(str(ps.address), ev.state).inc()
        try:
            inp = PeerInput(ev.state)
        except ValueError:
            log.warning("peer %s: unknown ExaBGP state %r ignored", ps.address, ev.state)
            return []
        if inp is PeerInput.DOWN and self._ends_gracefully(ps):
            inp = PeerInput.DOWN_GRACEFUL
        effect = self._feed(ps, inp, now, ev.reason)
        if effect is Effect.FLUSH:
            n = len(self.rib.adj[ps.address].accepted) if ps.address in self.rib.adj else 0
            log.warning("peer %s (%s) down: %s; flushing %d routes", ps.address, ps.customer,
                        ps.last_down_reason, n)
            ps.gr_helping = False
            self._flush_job(ps.address)
        elif effect is Effect.STALE and inp is PeerInput.DOWN_GRACEFUL:
            gr = ps.graceful_restart
            assert gr is not None
            kept = self.rib.mark_stale(ps.address)
            ps.gr_helping = True
            log.warning("peer %s (%s) down without a NOTIFICATION (%s): graceful-restart helper, keeping %d "
                        "paths as stale for its restart time of %ds", ps.address, ps.customer,
                        ev.reason or "no reason given", kept, gr.time_s)
            return [ArmTimer(f"{GR_TIMER}:{ps.address}", now + gr.time_s)]
        return []

    def _ends_gracefully(self, ps: PeerStatus) -> bool:
        """RFC 4724 §4.2: an Established session that ends with no NOTIFICATION, from a peer whose
        capability listed this session's AFI. Never when we closed it (BFD Down, max_prefixes, an
        operator): a BFD Down means the path is gone, and keeping routes over it is what BFD is for."""
        gr = ps.graceful_restart
        return (ps.state is PeerState.ESTABLISHED and gr is not None and gr.time_s > 0
                and ps.family in gr.afis and not ps.notified and not ps.teardown_reason)

    def _gr_reopen(self, ps: PeerStatus, now: float) -> list[Action]:
        """A helped peer's new OPEN: without the capability or the Forwarding State bit for this AFI
        it lost its forwarding state, so its stale paths go now (RFC 4724 §4.2); else they wait for its
        End-of-RIB, for at most :data:`GR_STALE_PATH_S`."""
        gr = ps.graceful_restart
        if gr is None or ps.family not in gr.forwarding:
            log.warning("peer %s (%s) is back without forwarding state for %s: sweeping its stale paths now",
                        ps.address, ps.customer, ps.family)
            ps.gr_helping = False
            self._stale_sweep_job(ps.address)
            return []
        return [ArmTimer(f"{GR_TIMER}:{ps.address}", now + GR_STALE_PATH_S)]

    def _speaker_died(self, process: int, now: float) -> list[Action]:
        """ExaBGP process ``process`` exited: its peers (only) keep their routes as stale."""
        kept = 0
        hit: set[IPAddress] = set()
        for ps in self.peers.values():
            if ps.speaker != process:
                continue
            hit.add(ps.address)
            if ps.state is PeerState.ESTABLISHED:
                ps.teardown_reason = f"BGP speaker exabgp-{process} restarting"
            self._feed(ps, PeerInput.SPEAKER_DIED, now)
            kept += self.rib.mark_stale(ps.address)
        log.warning("BGP speaker exabgp-%d died: %d sessions down, keeping %d paths as stale for up to %.0fs",
                    process, len(hit), kept, self.stale_timeout_s)
        return self._arm_stale(process, hit, now)

    def _timer(self, name: str) -> list[Action]:
        if name.startswith(GR_TIMER + ":"):
            ps = next((p for p in self.peers.values() if f"{GR_TIMER}:{p.address}" == name), None)
            if ps is not None and ps.gr_helping:
                log.warning("peer %s (%s): graceful restart not completed in time: sweeping its stale paths",
                            ps.address, ps.customer)
                ps.gr_helping = False
                self._stale_sweep_job(ps.address)
            return []
        if name.startswith(STALE_TIMER):
            for addr in sorted(self._stale_armed.pop(name, set()), key=str):
                if addr in self.peers:
                    self._stale_sweep_job(addr)
            return [SweepKernelStale()]
        if name == STARTUP_HOLD_TIMER and self._held is not None:
            log.info("startup hold over after %.0fs without End-of-RIB from every peer: %d FIB changes released",
                     self.startup_hold_s, len(self._held))
            return self._release()
        if name == STARTUP_SWEEP_TIMER and self._awaiting_startup_eor:
            self._awaiting_startup_eor = False
            log.info("startup sweep after %.0fs: End-of-RIB not seen from every peer", self.stale_timeout_s)
            return [*self._release(), SweepKernelStale()]
        return []

    def _startup_eor(self) -> list[Action]:
        if self._awaiting_startup_eor and all(p.family in p.eor for p in self.peers.values()):
            self._awaiting_startup_eor = False
            return [*self._release(), SweepKernelStale()]
        return []

    def _bfd_down(self, ps: PeerStatus, ev: BfdDown) -> list[Action]:
        ps.bfd_state = "down"
        ps.gr_helping = False  # the path is gone: no stale routes over it
        ps.bfd_down_at = ev.at
        if ps.state is not PeerState.ESTABLISHED:
            # Nothing to tear down. A NOTIFICATION (Cease/10) to a session still opening only restarts
            # the peer's error wait, and its next attempt re-creates its BFD session, whose first Down
            # packet reads as a Down of ours again: after a storm, the 50-customer soak showed every
            # session in that cycle, one round per ~11 s, for minutes (2026-12-01). A dead path fails
            # the OPEN exchange on its own; strict mode keeps such a session's paths ineligible anyway.
            if ps.bfd_strict:
                self._eligible_job(ps.address, False)
            return []
        ps.teardown_reason = f"BFD down ({ev.diag})"
        if ps.bfd_strict:
            self._eligible_job(ps.address, False)
        else:
            self._flush_job(ps.address)
        self._teardown_metric(ps, "bfd_down")
        return [SendCommand(ps.address, msg.teardown(ps.address, CEASE_BFD_DOWN), "bfd_down")]

    def _teardown_metric(self, ps: PeerStatus, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.bgp_teardowns.labels(str(ps.address), reason).inc()

    def _update(self, ps: PeerStatus, ev: msg.UpdateEvent) -> list[Action]:
        return self._updates(ps, (ev,))

    def _updates(self, ps: PeerStatus, evs: Sequence[msg.UpdateEvent]) -> list[Action]:
        """UPDATEs of one peer, in order (one, or an :class:`~routing.exabgp.messages.UpdateBatch`):
        the per-event work — counters, the rejection check, the FIB hand-off — once for all of them."""
        ps.updates += len(evs)
        addr = ps.address
        if self.metrics is not None:
            series = self._updates_series.get(addr)
            if series is None:
                series = self._updates_series[addr] = self.metrics.bgp_updates.labels(str(addr))
            series.inc(len(evs))
        adj = self.rib.adj[addr]
        seen = self._rejections_seen(addr, adj.rejected_total)
        diffs: list[FibDiff] = []
        actions: list[Action] = []
        rib, peer = self.rib, ps.peer
        for k, ev in enumerate(evs):
            if len(ev.announce) + len(ev.withdraw) > JOB_STEP:
                # A packed UPDATE (BIRD fits ~800 /24s in one) is ~20 ms of RIB work on a busy machine:
                # sliced like a flush, so it is never one long loop step in front of the failover lane;
                # the UPDATEs behind it are sliced after it, so none overtakes it.
                self._jobs.extend(self._update_job(ps, e) for e in evs[k:])
                break
            if ev.withdraw:
                diffs += rib.withdraw(addr, ev.withdraw)
            if ev.announce:
                attrs = ev.attrs
                paths = [new_path(p, peer, nh, attrs if not labels else intern_attrs(replace(attrs, labels=labels)))
                         for p, nh, labels in ev.announce]
                try:
                    diffs += rib.announce(addr, paths)
                except LimitExceeded as exc:
                    # The session is torn down and flushed: the rest of a batch would change nothing.
                    actions.append(self._over_limit(ps, exc))
                    break
        if sum(adj.rejected_total.values()) != seen.n:  # rejections are rare: no copy per UPDATE
            self._count_rejections(ps, adj.rejected_total, seen.by_reason)
            seen.n, seen.by_reason = sum(adj.rejected_total.values()), dict(adj.rejected_total)
        if diffs:
            actions.insert(0, SubmitFib(diffs))
        return actions

    def _over_limit(self, ps: PeerStatus, exc: LimitExceeded) -> Action:
        log.error("peer %s (%s) sent more than max_prefixes %d: tearing the session down (cease 1)",
                  ps.address, ps.customer, exc.limit)
        ps.teardown_reason = f"max_prefixes {exc.limit} exceeded"
        self._teardown_metric(ps, "max_prefixes")
        self._flush_job(ps.address)
        return SendCommand(ps.address, msg.teardown(ps.address, CEASE_MAX_PREFIXES), "max_prefixes")

    def _rejections_seen(self, addr: IPAddress, totals: Counter[str]) -> _RejectionsSeen:
        """The rejection totals of ``addr`` as last counted into the metric. Taken again when they moved
        outside :meth:`_update` (route origin validation and sliced jobs count their own) or belong to
        another Adj-RIB-In: the totals only grow, so an equal sum means nothing moved."""
        seen = self._rejections.get(addr)
        n = sum(totals.values())
        if seen is None or seen.totals is not totals or seen.n != n:
            seen = self._rejections[addr] = _RejectionsSeen(totals, n, dict(totals))
        return seen

    def _count_rejections(self, ps: PeerStatus, totals: dict[str, int], before: dict[str, int]) -> None:
        if self.metrics is None:
            return
        for reason, n in totals.items():
            delta = n - before.get(reason, 0)
            if delta:
                self.metrics.bgp_prefixes_rejected.labels(str(ps.address), reason).inc(delta)

    def _update_job(self, ps: PeerStatus, ev: msg.UpdateEvent, step: int = JOB_STEP) -> Iterator[list[FibDiff]]:
        """One big UPDATE in slices of ``step`` prefixes (withdrawals first, as in the message)."""
        addr = ps.address
        adj = self.rib.adj[addr]
        for i in range(0, len(ev.withdraw), step):
            if self.rib.adj.get(addr) is not adj:
                return  # the peer was removed by a reload meanwhile
            chunk = _Slice(self.rib.withdraw(addr, ev.withdraw[i:i + step]))
            chunk.cost = min(step, len(ev.withdraw) - i)
            yield chunk
        peer, attrs = ps.peer, ev.attrs
        for i in range(0, len(ev.announce), step):
            if self.rib.adj.get(addr) is not adj:
                return
            part = ev.announce[i:i + step]
            paths = [new_path(p, peer, nh, attrs if not labels else intern_attrs(replace(attrs, labels=labels)))
                     for p, nh, labels in part]
            before = dict(adj.rejected_total)
            chunk = _Slice()
            chunk.cost = len(part)
            try:
                chunk += self.rib.announce(addr, paths)
            except LimitExceeded as exc:
                self._notices.append(self._over_limit(ps, exc))
                self._count_rejections(ps, adj.rejected_total, before)
                yield chunk
                return
            self._count_rejections(ps, adj.rejected_total, before)
            yield chunk

    # --- export to the backbone (routing/backbone.py says how it stays right) ---------------------------
    def _init_backbone(self, install: bool) -> None:
        bb = {a: a.version for a, ps in self.peers.items() if ps.backbone}
        #: The backbone sessions' Adj-RIB-Out (None: no backbone configured, no best-path stream).
        self.backbone: BackboneExport | None = BackboneExport(bb) if bb else None
        self.backbone_install = install
        self._export_armed = False
        self._export_now = 0.0
        if self.backbone is not None:
            self.rib.loc.best_changes = []
        if not install:
            for a in bb:
                self.rib.set_eligible(a, False)  # kept in their Adj-RIB-In, never in the Loc-RIB

    def _best(self, prefix: IPNetwork) -> RoutePath | None:
        return self.rib.loc.best(prefix)

    def _communities_out(self, path: RoutePath) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int, int], ...]]:
        a = self.rib.adj.get(path.peer.address)
        out = getattr(a.policy, "communities_out", None) if a is not None else None
        return out(path) if out is not None else (path.attrs.communities, path.attrs.large_communities)

    def _export(self, now: float | None) -> list[Action]:
        """Take the Loc-RIB's best-path changes: flush at once when many are pending, else arm the
        short export timer so that changes arriving one per UPDATE still share commands."""
        bb = self.backbone
        if bb is None:
            return []
        changes = self.rib.loc.best_changes
        if changes:
            bb.dirty.update(c[0] for c in changes)
            changes.clear()
        if now is not None:
            self._export_now = now
        if not bb.dirty:
            return []
        if len(bb.dirty) >= FLUSH_AT:
            return self._export_flush()
        if self._export_armed:
            return []
        self._export_armed = True
        return [ArmTimer(EXPORT_TIMER, self._export_now + FLUSH_DELAY_S)]

    def _export_flush(self) -> list[Action]:
        bb = self.backbone
        if bb is None or not bb.dirty:
            return []
        dirty, bb.dirty = bb.dirty, set()
        out: list[Action] = []
        for addr in bb.peers:
            ps = self.peers.get(addr)
            if ps is None or ps.state is not PeerState.ESTABLISHED:
                continue  # the replay on its next Up reads the Loc-RIB as it is then
            lines = bb.reconcile(addr, dirty, self._best, self._communities_out)
            out += [SendCommand(addr, line, EXPORT_PURPOSE) for line in lines]
        return out

    def _backbone_session(self, ps: PeerStatus, was: PeerState, effect: Effect) -> None:
        bb = self.backbone
        if bb is None or ps.address not in bb.peers:
            return
        if effect is Effect.ESTABLISHED:
            bb.session_reset(ps.address)
            self._jobs.append(self._replay_job(ps.address, set()))
        elif was is PeerState.ESTABLISHED and ps.state is not PeerState.ESTABLISHED:
            n = bb.session_reset(ps.address)
            log.info("backbone peer %s left Established: its Adj-RIB-Out (%d routes) is replayed when it is back",
                     ps.address, n)

    def _export_done(self, addr: IPAddress | None, ok: bool) -> None:
        """An export command was answered. Refused or never acknowledged: what the session holds is
        unknown, so forget the Adj-RIB-Out and replay it, withdrawing what it held or the failed
        command carried that is no longer exported."""
        bb = self.backbone
        if bb is None or addr is None or addr not in bb.peers:
            return
        failed = bb.command_done(addr, ok)
        ps = self.peers.get(addr)
        if ok or ps is None or ps.state is not PeerState.ESTABLISHED:
            return
        forgotten = set(bb.sent.get(addr, {})) | set(failed)
        bb.session_reset(addr)
        log.warning("backbone peer %s: an export command failed: replaying its %d routes", addr, len(forgotten))
        self._jobs.append(self._replay_job(addr, forgotten))

    def _replay_job(self, addr: IPAddress, forgotten: set[IPNetwork],
                    step: int = JOB_STEP) -> Iterator[list[FibDiff]]:
        """Announce every exportable best path to ``addr`` in slices, then withdraw ``forgotten``
        prefixes that are no longer exported (the Loc-RIB as it is when each slice runs)."""
        bb = self.backbone
        assert bb is not None
        prefixes = [p for p in self.rib.loc.prefixes() if p.version == bb.peers[addr]]
        log.info("backbone peer %s: replaying the Adj-RIB-Out from %d Loc-RIB prefixes", addr, len(prefixes))
        for i in range(0, len(prefixes), step):
            ps = self.peers.get(addr)
            if ps is None or ps.state is not PeerState.ESTABLISHED:
                return  # gone again: the next Up starts over
            part = prefixes[i:i + step]
            lines = bb.reconcile(addr, part, self._best, self._communities_out)
            self._notices += [SendCommand(addr, line, EXPORT_PURPOSE) for line in lines]
            chunk = _Slice()
            chunk.cost = len(part)
            yield chunk
        gone = [p for p in forgotten if p not in bb.sent[addr]]
        if gone:
            # Not in the Adj-RIB-Out (cleared): a withdrawal for each, the only way to be sure.
            self._notices += [SendCommand(addr, line, EXPORT_PURPOSE) for line in bb.withdraw_lines(addr, gone)]
        yield _Slice()
