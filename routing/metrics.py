"""Prometheus metrics for the NOC, on a registry owned by the daemon (no global registry).

Gauges that mirror the owner's state (prefix counts per peer and family, inbox depths, XDP counters)
are set from that state on each scrape: the metrics endpoint calls ``Views.refresh_gauges()``
(:mod:`routing.views`) before rendering, so they can never drift from what ``pop-router show``
prints. Session state and counters are updated where the event happens.

Three families are not plain ``prometheus_client`` metrics, because their value lives elsewhere:

- ``pop_router_xdp_packets_total`` is a *counter* whose value is read from the XDP program's
  per-CPU counters at scrape time (``xdp_packets.labels(interface, action).set(n)``). Exposing it as
  a gauge named ``..._total`` made ``promtool check metrics`` fail and hid counter resets (a
  reloaded program starts from zero) from ``rate()``; :class:`ReadCounterFamily` keeps the last
  read value and yields it as a ``CounterMetricFamily``, so ``rate()``/``increase()`` apply.
- ``pop_router_bgp_session_uptime_seconds`` is computed at scrape time from the moment each session
  became Established (0 while it is not), as frr_exporter's ``frr_bgp_peer_uptime_seconds``.
- ``pop_router_bgp_session_flaps_total`` counts Established -> down transitions per peer, as GoBGP's
  ``flops``; it exists at 0 for every configured peer (:meth:`Metrics.configure_peers`), so the very
  first flap shows in ``increase()``.

Time is passed in as a clock (the daemon's), never read here on its own, so tests can move it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from routing.config import Config


class _ReadCounterChild:
    """One labelled series of a :class:`ReadCounterFamily`: remembers the last value read."""

    __slots__ = ("_family", "_key")

    def __init__(self, family: ReadCounterFamily, key: tuple[str, ...]) -> None:
        self._family, self._key = family, key

    def set(self, value: float) -> None:
        """Record the counter's current value as read from its source (not an increment)."""
        self._family._values[self._key] = float(value)


class ReadCounterFamily(Collector):
    """A counter whose source of truth is outside the process (kernel/BPF counters read at scrape).

    ``prometheus_client.Counter`` only increments, and a gauge must not carry a counter's name, so
    the value read is stored and exposed as a counter; a source reset (value going down) is passed
    through unchanged and Prometheus' ``rate()`` treats it as a counter reset, which it is.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] | list[str],
                 registry: CollectorRegistry) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def labels(self, *values: object) -> _ReadCounterChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values!r}")
        return _ReadCounterChild(self, tuple(str(v) for v in values))

    def remove(self, *values: object) -> None:
        self._values.pop(tuple(str(v) for v in values), None)

    def clear(self) -> None:
        self._values.clear()

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in sorted(self._values.items()):
            fam.add_metric(list(key), value)
        yield fam


class SessionUptime(Collector):
    """``pop_router_bgp_session_uptime_seconds{peer}``: seconds since Established, 0 when not up."""

    name = "pop_router_bgp_session_uptime_seconds"
    documentation = "Seconds since the BGP session became Established (0 while it is not)"

    def __init__(self, clock: Callable[[], float], registry: CollectorRegistry) -> None:
        self._clock = clock
        self._since: dict[str, float | None] = {}
        registry.register(self)

    def configured(self, peer: str) -> None:
        self._since.setdefault(peer, None)

    def established(self, peer: str, at: float) -> None:
        self._since[peer] = at

    def down(self, peer: str) -> bool:
        """Mark the session down; True if it was Established (that is a flap)."""
        was_up = self._since.get(peer) is not None
        self._since[peer] = None
        return was_up

    def remove(self, peer: str) -> None:
        self._since.pop(peer, None)

    def peers(self) -> list[str]:
        return list(self._since)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=["peer"])

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        fam = GaugeMetricFamily(self.name, self.documentation, labels=["peer"])
        for peer, since in sorted(self._since.items()):
            fam.add_metric([peer], 0.0 if since is None else max(0.0, now - since))
        yield fam


class Metrics:
    """Every metric family the daemon exports, on its own registry (tests build as many as they like)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.bgp_session_up = Gauge(
            "pop_router_bgp_session_up", "1 if the BGP session is Established", ["peer", "customer"], registry=r
        )
        self.bgp_prefixes_received = Gauge(
            "pop_router_bgp_prefixes_received", "Prefixes in the peer's Adj-RIB-In (accepted + rejected)",
            ["peer", "afi"], registry=r,
        )
        self.bgp_prefixes_accepted = Gauge(
            "pop_router_bgp_prefixes_accepted", "Prefixes accepted by import policy", ["peer", "afi"], registry=r
        )
        self.bgp_prefixes_rejected = Counter(
            "pop_router_bgp_prefixes_rejected", "Announcements rejected by import policy, by reason",
            ["peer", "reason"], registry=r,
        )
        self.bgp_session_transitions = Counter(
            "pop_router_bgp_session_transitions", "BGP session state changes reported by ExaBGP",
            ["peer", "state"], registry=r,
        )
        self.bgp_session_flaps = Counter(
            "pop_router_bgp_session_flaps", "Times the BGP session went down from Established", ["peer"],
            registry=r,
        )
        self.bgp_session_uptime = SessionUptime(clock, r)
        self.bgp_max_prefixes = Gauge(
            "pop_router_bgp_max_prefixes", "The session's max_prefixes limit (received prefixes, accepted + "
            "rejected); absent when the customer has none", ["peer", "customer"], registry=r,
        )
        self.bgp_updates = Counter(
            "pop_router_bgp_updates_received", "UPDATE messages received from ExaBGP", ["peer"], registry=r
        )
        self.bgp_teardowns = Counter(
            "pop_router_bgp_teardowns", "Sessions we tore down, by reason", ["peer", "reason"], registry=r
        )
        self.update_errors = Counter(
            "pop_router_bgp_update_errors",
            "Malformed UPDATEs (RFC 7606) by what was done: treat_as_withdraw or session_reset",
            ["peer", "action"], registry=r,
        )
        self.api_malformed = Counter(
            "pop_router_exabgp_malformed_messages", "Lines from ExaBGP that could not be parsed (dropped)",
            registry=r,
        )
        self.fib_routes = Gauge("pop_router_fib_routes", "Routes of ours installed in the kernel", ["afi"], registry=r)
        self.fib_operations = Counter(
            "pop_router_fib_operations", "Kernel FIB operations, by operation and result", ["op", "result"],
            registry=r,
        )
        self.fib_errors = Counter("pop_router_fib_errors", "Kernel FIB errors by errno", ["errno"], registry=r)
        self.fib_write_seconds = Histogram(
            "pop_router_fib_write_seconds", "Time to write one netlink batch",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=r,
        )
        self.fib_nexthop_groups = Gauge(
            "pop_router_fib_nexthop_groups", "Kernel nexthop groups of ours", registry=r
        )
        self.fib_failover_seconds = Histogram(
            "pop_router_fib_failover_seconds", "From a BFD Down detection to the nexthop groups rewritten",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5), registry=r,
        )
        self.fib_failover_errors = Counter(
            "pop_router_fib_failover_errors", "Group rewrites the kernel refused twice (rolled back)", registry=r)
        self.fib_drift_repaired = Counter(
            "pop_router_fib_drift_repaired", "Routes or nexthops of ours changed by someone else and repaired",
            ["kind"], registry=r,
        )
        self.fib_failed_routes = Gauge(
            "pop_router_fib_failed_routes", "Routes the kernel refused, waiting for a retry", registry=r
        )
        self.child_restarts = Counter(
            "pop_router_child_restarts", "Supervised child processes restarted", ["child"], registry=r
        )
        self.child_up = Gauge("pop_router_child_up", "1 if the child process is running", ["child"], registry=r)
        # At 0 from the start: a counter series born at 1 shows no increase(), so the first restart
        # of a child would never page. The ExaBGP processes (exabgp-0, exabgp-1...) touch their own
        # label the same way when the pool creates them.
        self.child_restarts.labels("bfd")
        # Read from the program's per-CPU counters at scrape time (monotonic while the program is loaded).
        self.xdp_packets = ReadCounterFamily(
            "pop_router_xdp_packets", "Packets seen by the XDP fast path, by ingress interface and action "
            "(forwarded, mpls_pushed, passed_<reason>, dropped_<reason>)", ["interface", "action"],
            registry=r,
        )
        # Read from our nftables table at scrape time (fib/nft.py): what kernel blackhole routes dropped.
        self.kernel_blackhole_dropped = ReadCounterFamily(
            "pop_router_kernel_blackhole_dropped_packets", "Packets dropped by RTBH blackhole routes on the "
            "kernel path (not by XDP), by ingress interface", ["interface"], registry=r,
        )
        self.bfd_session_up = Gauge("pop_router_bfd_session_up", "1 if the BFD session is Up", ["peer"], registry=r)
        self.bfd_transitions = Counter(
            "pop_router_bfd_transitions", "BFD session state changes", ["peer", "state"], registry=r
        )
        self.bfd_rx_dropped = Counter(
            "pop_router_bfd_rx_dropped", "Received BFD packets discarded, by reason", ["reason"], registry=r
        )
        self.bfd_detect_time = Gauge(
            "pop_router_bfd_detect_time_seconds", "Negotiated BFD detection time", ["peer"], registry=r
        )
        self.bfd_tx_late = Counter(
            "pop_router_bfd_tx_late",
            "BFD packets sent more than 1.25 x the negotiated interval after the session's previous send",
            registry=r,
        )
        self.bfd_downs = Counter(
            "pop_router_bfd_downs", "BFD sessions going down from Up, by who the evidence blames "
            "(us: we sent late; peer_or_path; host: the hypervisor took our CPU; admin)", ["peer", "blame"],
            registry=r,
        )

        # Lanes (DESIGN.md): how late the event loop runs, and what waits in front of the RIB.
        self.loop_lag_seconds = Histogram(
            "pop_router_loop_lag_seconds", "Lateness of a 10 ms timer on the daemon's event loop",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1), registry=r,
        )
        self.gc_frozen_objects = Gauge(
            "pop_router_gc_frozen_objects", "Objects the daemon froze out of garbage collection (routing/runtime.py)",
            registry=r,
        )
        self.attr_sets_interned = Gauge(
            "pop_router_attr_sets_interned",
            "Distinct path attribute sets in the intern table (common/model.py; swept of unused ones)",
            registry=r,
        )
        self.gc_pause_seconds = Histogram(
            "pop_router_gc_pause_seconds", "Python garbage collections in the daemon, by generation (they stop "
            "the event loop)", ["generation"], buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1),
            registry=r,
        )
        self.relay_backlog_bytes = Gauge(
            "pop_router_exabgp_relay_backlog_bytes",
            "ExaBGP output waiting in the relay while the RIB catches up (flow control), per ExaBGP process",
            ["child"], registry=r,
        )
        self.inbox_depth = Gauge(
            "pop_router_rib_inbox_events", "Events queued for the routing core", ["lane"], registry=r,
        )
        self.exabgp_commands_failed = Counter(
            "pop_router_exabgp_commands_failed", "Commands to ExaBGP not acknowledged as done", ["purpose"],
            registry=r,
        )
        self.failover_lane_seconds = Histogram(
            "pop_router_failover_lane_seconds",
            "BFD detection to groups rewritten, through the failover lane (includes the event's trip)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5), registry=r,
        )
        self.bfd_local_repairs = Counter(
            "pop_router_bfd_local_repairs", "Local repairs sent by the BFD process itself on a Down "
            "(bfd/repair.py), by result (ok, refused: some rewrite was refused; the failover lane redoes it)",
            ["result"], registry=r,
        )
        self.backbone_exported_routes = Gauge(
            "pop_router_backbone_exported_routes",
            "Routes in a backbone session's Adj-RIB-Out: what the route reflector was sent", ["peer"], registry=r,
        )
        #: Counted by the routing core (routing/backbone.py), read at scrape time.
        self.backbone_export_prefixes = ReadCounterFamily(
            "pop_router_backbone_export_prefixes_total",
            "Prefixes announced or withdrawn towards the backbone, all sessions (action: announce, withdraw)",
            ["action"], r,
        )
        self.bfd_local_repair_seconds = Histogram(
            "pop_router_bfd_local_repair_seconds",
            "BFD detection to groups rewritten by the BFD process's local repair",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5), registry=r,
        )
        # Route origin validation (routing/rpki_link.py sets these at scrape time).
        self.rpki_routes = Gauge(
            "pop_router_rpki_routes", "Stored paths (accepted and rejected) of peers whose policy validates, "
            "by RFC 6811 origin validation state", ["state"], registry=r,
        )
        self.rpki_vrps = Gauge("pop_router_rpki_vrps", "VRPs in effect (validated against), by address family",
                               ["afi"], registry=r)
        self.rpki_cache_up = Gauge(
            "pop_router_rpki_cache_up", "1 if the RTR session to the cache is synchronised", ["cache"], registry=r)
        self.rpki_serial = Gauge("pop_router_rpki_serial", "Serial number of the cache's data we hold",
                                 ["cache"], registry=r)
        self.rpki_rtr_errors = ReadCounterFamily(
            "pop_router_rpki_rtr_errors", "RTR Error Reports (RFC 8210 §12), by cache, direction "
            "(received, sent) and error code", ["cache", "direction", "code"], registry=r,
        )
        for state in ("valid", "invalid", "not_found"):
            self.rpki_routes.labels(state)

    # --- per-peer series that follow the configuration and the session lifecycle -------------------
    def configure_peers(self, config: Config) -> None:
        """Create every configured peer's series (flaps and BFD Downs at 0, uptime 0, its limit), drop the others.

        Called at start and after a reload, so alerts see a limit change at once and a removed
        customer's series go away instead of freezing at their last value.
        """
        wanted: dict[str, tuple[str, int | None]] = {
            str(p.address): (c.name, c.import_.max_prefixes) for c, p in config.peers()
        }
        wanted.update({str(p.address): ("backbone", None) for p in config.backbone.peers})
        for p in config.backbone.peers:  # (backbone changes need a restart: nothing to remove)
            self.backbone_exported_routes.labels(str(p.address))
        bfd_peers = {str(p.address) for c, p in config.peers() if config.peer_bfd(c, p).enabled}
        for peer in self.bgp_session_uptime.peers():
            if peer not in wanted:
                self.bgp_session_uptime.remove(peer)
                self._remove(self.bgp_session_flaps, peer)
                self._remove(self.bfd_transitions, peer, "down")
        self.bgp_max_prefixes.clear()
        for peer, (customer, limit) in wanted.items():
            self.bgp_session_uptime.configured(peer)
            self.bgp_session_flaps.labels(peer)
            if peer in bfd_peers:  # BFD flaps alert on increase() of Down transitions: start at 0
                self.bfd_transitions.labels(peer, "down")
            if limit is not None:
                self.bgp_max_prefixes.labels(peer, customer).set(limit)

    def bgp_session_established(self, peer: str, at: float) -> None:
        """The session became Established at ``at`` (the daemon's clock)."""
        self.bgp_session_uptime.established(peer, at)

    def bgp_session_down(self, peer: str) -> None:
        """The session is not Established any more; counts a flap if it was."""
        if self.bgp_session_uptime.down(peer):
            self.bgp_session_flaps.labels(peer).inc()

    @staticmethod
    def _remove(metric: Counter | Gauge, *labels: str) -> None:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)
