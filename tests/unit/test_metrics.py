"""Metrics: the scrape passes ``promtool check metrics`` and the families behave as documented.

``promtool check metrics`` is Prometheus' own linter for an exposition (names, types, units,
``_total`` only on counters). It runs on a scrape with *every* family populated, so a family added
later without a sample here fails :func:`test_every_family_is_populated` first.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from routing.metrics import Metrics
from tests.unit.factories import config


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def populated(clock: FakeClock | None = None) -> Metrics:
    """A Metrics with at least one sample in every family, set the way the daemon sets them."""
    m = Metrics(clock=clock or FakeClock())
    m.configure_peers(config())
    m.bgp_session_up.labels("10.0.1.2", "acme").set(1)
    m.bgp_prefixes_received.labels("10.0.1.2", "ipv4").set(3)
    m.bgp_prefixes_accepted.labels("10.0.1.2", "ipv4").set(2)
    m.bgp_prefixes_rejected.labels("10.0.1.2", "bogon").inc()
    m.bgp_session_transitions.labels("10.0.1.2", "up").inc()
    m.bgp_session_established("10.0.1.2", 900.0)
    m.bgp_updates.labels("10.0.1.2").inc()
    m.bgp_teardowns.labels("10.0.1.2", "admin").inc()
    m.api_malformed.inc()
    m.fib_routes.labels("ipv4").set(2)
    m.fib_operations.labels("replace", "ok").inc(2)
    m.fib_errors.labels("EINVAL").inc()
    m.fib_write_seconds.observe(0.002)
    m.fib_nexthop_groups.set(1)
    m.fib_failover_seconds.observe(0.003)
    m.fib_drift_repaired.labels("route_deleted").inc()
    m.fib_failed_routes.set(0)
    m.child_restarts.labels("exabgp").inc()
    m.child_up.labels("exabgp").set(1)
    m.xdp_packets.labels("eth1", "forwarded").set(42)
    m.kernel_blackhole_dropped.labels("eth1").set(3)
    m.backbone_export_prefixes.labels("announce").set(3)
    m.backbone_exported_routes.labels("10.0.0.9").set(3)
    m.bfd_session_up.labels("10.0.1.2").set(1)
    m.bfd_transitions.labels("10.0.1.2", "up").inc()
    m.bfd_rx_dropped.labels("auth_failed").inc()
    m.bfd_detect_time.labels("10.0.1.2").set(0.9)
    m.bfd_tx_late.inc()
    m.rpki_rtr_errors.labels("127.0.0.1:323", "received", "2").set(1)
    for metric in vars(m).values():  # families added later get a placeholder sample, so promtool sees them
        if isinstance(metric, MetricWrapperBase) and not any(s for f in metric.collect() for s in f.samples):
            child = metric.labels(*["x"] * len(metric._labelnames)) if metric._labelnames else metric
            if isinstance(child, Histogram):
                child.observe(0.001)
            elif isinstance(child, Gauge):
                child.set(1)
            else:
                child.inc()
    return m


def scrape(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_every_family_is_populated() -> None:
    empty = [fam.name for fam in text_string_to_metric_families(scrape(populated())) if not fam.samples]
    assert not empty, f"populate these in tests/unit/test_metrics.py::populated: {empty}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_check_metrics_passes() -> None:
    text = scrape(populated())
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_xdp_packets_is_a_counter_of_the_last_read_value() -> None:
    m = Metrics()
    m.xdp_packets.labels("eth1", "forwarded").set(10)
    m.xdp_packets.labels("eth1", "forwarded").set(15)
    text = scrape(m)
    assert "# TYPE pop_router_xdp_packets_total counter" in text
    assert samples(text, "pop_router_xdp_packets_total") == {(("action", "forwarded"), ("interface", "eth1")): 15.0}
    with pytest.raises(ValueError):
        m.xdp_packets.labels("eth1")


def test_uptime_and_flaps_follow_the_session() -> None:
    clock = FakeClock()
    m = Metrics(clock=clock)
    m.configure_peers(config())
    up = {(("peer", "10.0.1.2"),): 0.0}
    assert samples(scrape(m), "pop_router_bgp_session_flaps_total")[(("peer", "10.0.1.2"),)] == 0
    assert samples(scrape(m), "pop_router_bgp_session_uptime_seconds").items() >= up.items()
    m.bgp_session_down("10.0.1.2")  # a failed attempt before the first Established is no flap
    m.bgp_session_established("10.0.1.2", clock.now)
    clock.now += 30
    assert samples(scrape(m), "pop_router_bgp_session_uptime_seconds")[(("peer", "10.0.1.2"),)] == 30
    m.bgp_session_down("10.0.1.2")
    m.bgp_session_down("10.0.1.2")  # a second down report without an Established in between
    text = scrape(m)
    assert samples(text, "pop_router_bgp_session_uptime_seconds")[(("peer", "10.0.1.2"),)] == 0
    assert samples(text, "pop_router_bgp_session_flaps_total")[(("peer", "10.0.1.2"),)] == 1


def test_configure_peers_sets_limits_and_drops_removed_peers() -> None:
    m = Metrics()
    m.configure_peers(config())
    limits = samples(scrape(m), "pop_router_bgp_max_prefixes")
    assert limits == {
        (("customer", "acme"), ("peer", a)): 100.0 for a in ("10.0.1.2", "10.0.2.2", "2001:db8:1::2")
    }  # globex has no max_prefixes: no series, so a ratio against it is simply absent
    smaller = config().model_copy(update={"customers": config().customers[1:]})
    m.configure_peers(smaller)
    text = scrape(m)
    assert samples(text, "pop_router_bgp_max_prefixes") == {}
    assert set(samples(text, "pop_router_bgp_session_flaps_total")) == {(("peer", "10.0.3.2"),)}
    assert set(samples(text, "pop_router_bgp_session_uptime_seconds")) == {(("peer", "10.0.3.2"),)}


def test_bfd_down_transitions_start_at_zero_for_bfd_peers() -> None:
    from routing.config import parse_config
    from tests.unit.factories import CONFIG

    m = Metrics()
    m.configure_peers(parse_config({**CONFIG, "bfd": {"enabled": True}}))
    downs = samples(scrape(m), "pop_router_bfd_transitions_total")
    assert downs[(("peer", "10.0.3.2"), ("state", "down"))] == 0
    assert len(downs) == 4
