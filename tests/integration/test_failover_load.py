"""Issue 9: a customer's failover must not wait for another customer's table, and BFD must hold.

The PoP of ``labs/failover_lab.py`` (the same one ``benchmarks/failover.py`` measures): while the
feeder customer's 200,000 prefixes load, acme's primary link is cut at its bridge (no interface
event). Acme's traffic must come back over the backup link (counted at the receiver, by incoming
interface) while the ingest is still running, and globex, untouched, must keep its BFD session Up
(its transition counter in ``show bfd --json`` does not move). The gap bound is generous (CI machines
are noisy); the benchmark measures it precisely. Takes ~30-60 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from labs.failover_lab import (
    ACME_BACKUP,
    ACME_PRIMARY,
    FEEDER,
    GLOBEX,
    ApiProbe,
    DownWatcher,
    FailoverLab,
    failover_lab,
)

pytestmark = pytest.mark.failover_load

PREFIXES = 200_000
GAP_BOUND_MS = 1000.0


@pytest.fixture(scope="module")
def lab() -> Iterator[FailoverLab]:
    with failover_lab(PREFIXES) as lab:
        yield lab


@pytest.mark.timeout(240)
def test_cut_during_ingest_moves_traffic_to_backup_and_untouched_bfd_stays_up(lab: FailoverLab) -> None:
    lab.wait_ready()
    want = PREFIXES + lab.baseline_routes()
    with DownWatcher(lab, interval_s=0.25) as watch, ApiProbe(lab.sock, interval_s=0.05) as probe:
        globex_flaps = lab.bfd()[GLOBEX]["flaps"]
        stream = lab.start_stream(90)
        try:
            time.sleep(1.0)  # poll: traffic flowing over the primary before anything happens
            lab.feeder("enable")
            lab.wait(lambda: (probe.peers.get(FEEDER) or {}).get("state") == "established", 60,
                     "the feeder's session Established", interval=0.02)
            time.sleep(1.5)  # poll: the cut lands while the table is loading
            routes_at_cut = lab.fib_routes()
            t_cut = lab.cut()
            lab.wait(lambda: lab.route_via() == ACME_BACKUP, 30, "acme's route on the backup", interval=0.02)
            time.sleep(0.5)  # poll: packets over the backup reach the receiver
            t_check = time.monotonic()
            routes_after_move = lab.fib_routes()
        finally:
            arrivals = stream.stop()
            lab.heal()
    assert routes_at_cut < want, "the ingest was over before the cut: the test did not test anything"
    g = lab.gap(arrivals, t_cut)
    assert g.resumed_via == "a2", f"traffic did not come back over the backup link: {g}"
    # Back over the backup while the table was still loading: the FIB was not yet full after the move.
    assert g.resumed_at is not None and g.resumed_at < t_check and routes_after_move < want, \
        f"traffic came back at {g.resumed_at}, FIB {routes_after_move:,}/{want:,} routes at {t_check}: {g}"
    assert g.gap_ms < GAP_BOUND_MS, f"traffic gap {g.gap_ms:.0f} ms: {g}"
    # The BFD process moved acme's group itself (local repair), and the kernel took every rewrite.
    repairs = [r for r in lab.api("/status")["local_repairs"] if r["peer"] == ACME_PRIMARY]
    assert repairs and repairs[-1]["groups"] >= 1 and repairs[-1]["errors"] == 0, repairs
    # The untouched customer: no Down reported, and the BFD process's own transition counter unmoved.
    assert not watch.downs({GLOBEX}), [d.line() for d in watch.downs({GLOBEX})]
    assert lab.bfd()[GLOBEX]["flaps"] == globex_flaps and lab.bfd()[GLOBEX]["state"] == "up"
    assert lab.peers()[GLOBEX]["state"] == "established"
