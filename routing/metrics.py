"""Prometheus metrics for the NOC, on a registry owned by the daemon (no global registry).

Gauges that mirror RIB state (prefix counts, session state) are refreshed from the owner's state on
each scrape by :class:`RibCollector`-style callbacks set by the daemon, so they can never drift from
what ``pop-router show`` prints. Counters are incremented where the event happens.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
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
        self.bgp_updates = Counter(
            "pop_router_bgp_updates_received", "UPDATE messages received from ExaBGP", ["peer"], registry=r
        )
        self.bgp_teardowns = Counter(
            "pop_router_bgp_teardowns", "Sessions we tore down, by reason", ["peer", "reason"], registry=r
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
        # Read from the program's per-CPU counters at scrape time (monotonic while the program is loaded).
        self.xdp_packets = Gauge(
            "pop_router_xdp_packets_total", "Packets seen by the XDP fast path, by ingress interface and action "
            "(forwarded, mpls_pushed, passed_<reason>, dropped_<reason>)", ["interface", "action"],
            registry=r,
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
            "pop_router_bfd_tx_late", "BFD packets sent more than 25 % of their interval after they were due",
            registry=r,
        )
