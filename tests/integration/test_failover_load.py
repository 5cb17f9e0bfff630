"""Issue 9: a customer's failover must not wait for another customer's table, and BFD must hold.

The PoP of ``labs/failover_lab.py`` (the same one ``benchmarks/failover.py`` measures): while the
feeder customer's 200,000 prefixes load, acme's primary link is cut at its bridge (no interface
event). Acme's traffic must come back over the backup link (counted at the receiver, by incoming
interface) while the ingest is still running, and globex, untouched, must keep its BFD session Up
(its transition counter in ``show bfd --json`` does not move). The gap bound is generous (CI machines
are noisy); the benchmark measures it precisely. A Down blamed on us fails the test at once; an attempt
in which a session went Down on evidence that blames the host's steal or a peer's silence is run again
(up to ATTEMPTS times), because that run did not test our code. Takes ~10-60 s per attempt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from labs.failover_lab import (
    ACME_BACKUP,
    ACME_PRIMARY,
    FEEDER,
    GLOBEX,
    ApiProbe,
    DownRecord,
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


#: Attempts before the test gives up on a machine whose hypervisor keeps stopping it (see below).
ATTEMPTS = 4


@dataclass
class Attempt:
    routes_at_cut: int
    routes_after_move: int
    t_cut: float
    t_check: float
    arrivals: list
    globex_flaps: int
    downs: list[DownRecord]


def run_once(lab: FailoverLab) -> Attempt:
    """One cut during the ingest, from a ready lab; the cut is healed afterwards (the feeder stays on)."""
    lab.wait_ready()
    with DownWatcher(lab, interval_s=0.25) as watch, ApiProbe(lab.sock, interval_s=0.05) as probe:
        globex_flaps = lab.bfd()[GLOBEX]["flaps"]
        stream = lab.start_stream(90)
        try:
            time.sleep(1.0)  # poll: traffic flowing over the primary before anything happens
            lab.feeder("enable")
            lab.wait(lambda: (probe.peers.get(FEEDER) or {}).get("state") == "established", 60,
                     "the feeder's session Established", interval=0.02)
            # The cut lands while the table is loading: once a fifth of it is in the FIB (a fixed
            # 1.5 s after Established found 84 % in, and the rest in by the check, once the ingest
            # got faster; the test then proved nothing about failover under load).
            lab.wait(lambda: lab.fib_routes() >= lab.baseline_routes() + PREFIXES // 5, 60,
                     "a fifth of the feeder's table in the FIB", interval=0.02)
            routes_at_cut = lab.fib_routes()
            t_cut = lab.cut()
            lab.wait(lambda: lab.route_via() == ACME_BACKUP, 30, "acme's route on the backup", interval=0.02)
            time.sleep(0.5)  # poll: packets over the backup reach the receiver
            t_check = time.monotonic()
            routes_after_move = lab.fib_routes()
        finally:
            arrivals = stream.stop()
            lab.heal()
    return Attempt(routes_at_cut, routes_after_move, t_cut, t_check, arrivals, globex_flaps, watch.downs())


def disturbed(a: Attempt) -> list[DownRecord]:
    """Downs no cut of ours explains and the evidence does not blame on us: the cut link's own Down
    excepted, every other Down blamed on the host (steal) or on a peer's silence (its packets' kernel
    arrival times). On this shared VM the hypervisor stops every vCPU for 30-90 ms at times (5-25 %
    steal in some minutes, 2026-12-01), which no BFD at 10 ms x 3 on either end survives."""
    return [d for d in a.downs if d.blame in ("host", "peer_or_path")
            and not (d.peer == ACME_PRIMARY and d.at >= a.t_cut)]


@pytest.mark.timeout(900)
def test_cut_during_ingest_moves_traffic_to_backup_and_untouched_bfd_stays_up(lab: FailoverLab) -> None:
    want = PREFIXES + lab.baseline_routes()
    seen: list[str] = []
    for attempt in range(ATTEMPTS):
        a = run_once(lab)
        # A Down blamed on us fails at once, whatever else happened.
        ours = [d.line() for d in a.downs if d.blame == "us"]
        assert not ours, ours
        noise = disturbed(a)
        if not noise:
            break
        seen.append(f"attempt {attempt + 1}: " + "; ".join(d.line() for d in noise[:3]))
        print(f"attempt {attempt + 1} disturbed by the host or a peer, again: {seen[-1]}")
        lab.feeder("disable")
        lab.wait_drained(120)
    else:
        pytest.fail(f"every one of {ATTEMPTS} attempts had Downs blamed on the host or a peer; this machine "
                    f"cannot run the test now:\n" + "\n".join(seen))
    assert a.routes_at_cut < want, "the ingest was over before the cut: the test did not test anything"
    g = lab.gap(a.arrivals, a.t_cut)
    assert g.resumed_via == "a2", f"traffic did not come back over the backup link: {g}"
    # Back over the backup while the table was still loading: the FIB was not yet full after the move.
    assert g.resumed_at is not None and g.resumed_at < a.t_check and a.routes_after_move < want, \
        f"traffic came back at {g.resumed_at}, FIB {a.routes_after_move:,}/{want:,} routes at {a.t_check}: {g}"
    assert g.gap_ms < GAP_BOUND_MS, f"traffic gap {g.gap_ms:.0f} ms: {g}"
    # The BFD process moved acme's group itself (local repair), and the kernel took every rewrite.
    repairs = [r for r in lab.api("/status")["local_repairs"] if r["peer"] == ACME_PRIMARY]
    assert repairs and repairs[-1]["groups"] >= 1 and repairs[-1]["errors"] == 0, repairs
    # The untouched customer: no Down reported, and the BFD process's own transition counter unmoved.
    assert not [d for d in a.downs if d.peer == GLOBEX], [d.line() for d in a.downs if d.peer == GLOBEX]
    assert lab.bfd()[GLOBEX]["flaps"] == a.globex_flaps and lab.bfd()[GLOBEX]["state"] == "up"
    assert lab.peers()[GLOBEX]["state"] == "established"
