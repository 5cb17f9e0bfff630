"""The BFD process's reports to the daemon: attribution keys on Down events and in the stats."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from bfd.packet import Diag, State
from bfd.process import BfdProcess, blame
from bfd.session import DownReport, SessionKey, StateChanged


class _Writer:
    """Collects what the process would write to the daemon's socket."""

    def __init__(self) -> None:
        self.lines: list[dict] = []

    def write(self, data: bytes) -> None:
        self.lines += [orjson.loads(x) for x in data.splitlines() if x]


def report(cause: str, max_tx_gap_s: float, remote: Diag = Diag.CONTROL_DETECTION_TIME_EXPIRED) -> DownReport:
    return DownReport(cause=cause, rx_gap_s=0.031, max_rx_gap_s=0.012, max_tx_gap_s=max_tx_gap_s,
                      detect_time_s=0.030, peer_detect_time_s=0.030, remote_diag=remote, tx_late=2)


def test_blame_rules() -> None:
    assert blame(report("detection", 0.010)) == "peer_or_path"
    assert blame(report("peer_signaled", 0.010)) == "peer_or_path"
    assert blame(report("peer_signaled", 0.031)) == "us"
    assert blame(report("peer_signaled", 0.010, Diag.ADMINISTRATIVELY_DOWN)) == "admin"
    assert blame(report("admin", 0.0)) == "admin"


async def test_down_event_and_stats_carry_the_attribution() -> None:
    w = _Writer()
    proc = BfdProcess(w)  # type: ignore[arg-type]
    try:
        key = SessionKey("10.0.0.2", "10.0.0.1", "", False)
        ch = StateChanged(State.UP, State.DOWN, Diag.CONTROL_DETECTION_TIME_EXPIRED, 12.5,
                          report("detection", 0.010))
        proc._on_state(key, None, ch)  # type: ignore[arg-type]
        ev = w.lines[-1]
        assert ev["event"] == "state" and ev["new"] == "down" and ev["at"] == 12.5
        assert ev["cause"] == "detection" and ev["blame"] == "peer_or_path"
        assert (ev["rx_gap_ms"], ev["max_rx_gap_ms"], ev["max_tx_gap_ms"]) == (31.0, 12.0, 10.0)
        assert ev["peer_detect_time_ms"] == 30.0 and ev["remote_diag"] == "control_detection_time_expired"
        assert ev["loop_lag_ms"] is not None and ev["timer_lag_ms"] is not None
        assert proc.downs[key][-1]["rx_gap_ms"] == 31.0
        deadline = time.monotonic() + 2.0
        while proc.stats()["loop_lag_ms"] is None:  # the sampler has not woken yet
            assert time.monotonic() < deadline, "the loop-lag sampler never ran"
            await asyncio.sleep(0.005)  # poll
        st = proc.stats()
        assert st["loop_lag_ms"] is not None and st["loop_lag_worst_ms"] >= 0 and st["gap_window_s"] == 10.0
        # An Up transition carries no attribution keys.
        proc._on_state(key, None, StateChanged(State.DOWN, State.UP, Diag.NONE, 13.0))  # type: ignore[arg-type]
        assert "blame" not in w.lines[-1]
    finally:
        proc.sampler.close()
        proc.transport.close()


class _Handle:
    def cancel(self) -> None:
        pass


class _FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.handles: list[tuple[float, object]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: object) -> _Handle:
        self.handles.append((when, cb))
        return _Handle()


def test_loop_lag_sampler_counts_the_stall_in_progress() -> None:
    from bfd.process import LoopLagSampler

    loop = _FakeLoop()
    smp = LoopLagSampler(loop, period_s=0.02)  # type: ignore[arg-type]
    loop.now = 100.025
    loop.handles[-1][1]()  # type: ignore[operator]  # ran 5 ms late
    assert smp.lag.max(loop.now) == pytest.approx(0.005)
    # A 130 ms stall: a Down handled before the overdue tick still sees it.
    loop.now += 0.150
    assert smp.current(loop.now) == pytest.approx(0.130)
    smp.close()


def test_log_handler_never_blocks_on_a_full_pipe() -> None:
    import logging
    import os

    from bfd.process import NonBlockingLogHandler

    r, w = os.pipe()
    try:
        h = NonBlockingLogHandler(w)
        h.setFormatter(logging.Formatter("%(message)s"))
        rec = logging.LogRecord("bfd", logging.WARNING, __file__, 1, "x" * 200, None, None)
        for _ in range(2000):  # ~400 KB into a 64 KB pipe nobody reads: must return at once
            h.emit(rec)
        assert h.dropped > 0
        first = os.read(r, 201)
        assert first == b"x" * 200 + b"\n"
    finally:
        os.close(r)
        os.close(w)


def test_steal_clock_reports_the_most_any_cpu_lost_in_a_window() -> None:
    from bfd.steal import _TICK_S, StealClock

    readings = iter([{"cpu0": 100, "cpu1": 50}, {"cpu0": 100, "cpu1": 50}, {"cpu0": 104, "cpu1": 51},
                     {"cpu0": 104, "cpu1": 57}])
    c = StealClock(lambda: next(readings))
    c.sample(1.00)
    c.sample(1.05)
    c.sample(1.10)
    # From the last sample at or before 1.06 (t=1.05) to a fresh one at 1.20: cpu0 +4, cpu1 +7 ticks.
    assert c.stolen_s(1.06, 1.20) == pytest.approx(7 * _TICK_S)
    broken = StealClock(lambda: (_ for _ in ()).throw(OSError("no /proc")))
    broken.sample(1.0)
    assert broken.stolen_s(0.5, 1.5) is None and not broken.available


def test_a_down_inside_host_steal_is_blamed_on_the_host() -> None:
    r = report("detection", 0.010)  # detect time 30 ms
    assert blame(r, host_steal_s=0.020) == "host"
    assert blame(r, host_steal_s=0.010) == "peer_or_path"  # a third of the window: not enough
    assert blame(report("peer_signaled", 0.031), host_steal_s=0.0) == "us"
    assert blame(report("peer_signaled", 0.031), host_steal_s=0.02) == "host"
    assert blame(report("admin", 0.0), host_steal_s=1.0) == "admin"


async def test_transition_log_lines_wait_for_the_end_of_the_pass(caplog: pytest.LogCaptureFixture) -> None:
    # The daemon hears of the transition at once; the log line (the costly part) is written when the
    # loop's current pass is over, in the order the transitions came, with the attribution.
    w = _Writer()
    proc = BfdProcess(w)  # type: ignore[arg-type]
    try:
        caplog.set_level("INFO", logger="bfd")
        for i in range(3):
            key = SessionKey(f"10.0.0.{i + 2}", "10.0.0.1", "", False)
            proc._on_state(key, None, StateChanged(  # type: ignore[arg-type]
                State.UP, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, 1.0, report("peer_signaled", 0.031)))
        assert [x["peer"] for x in w.lines if x.get("event") == "state"] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
        assert not [r for r in caplog.records if "->" in r.getMessage()]
        await asyncio.sleep(0)  # poll: one pass of the loop runs what call_soon queued
        lines = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
        assert [x.split(":")[0] for x in lines] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
        assert all("UP -> DOWN" in x and "blame=us" in x for x in lines)
    finally:
        proc.sampler.close()
        proc.transport.close()


async def test_down_event_carries_the_blame_by_read_time_too() -> None:
    # Our gap to the Down's arrival (20 ms) is under the peer's 30 ms; to when we read it, 40 ms.
    w = _Writer()
    proc = BfdProcess(w)  # type: ignore[arg-type]
    try:
        r = DownReport(cause="peer_signaled", rx_gap_s=0.001, max_rx_gap_s=0.010, max_tx_gap_s=0.020,
                       detect_time_s=0.030, peer_detect_time_s=0.030,
                       remote_diag=Diag.CONTROL_DETECTION_TIME_EXPIRED, tx_late=0, max_tx_gap_read_s=0.040)
        proc._on_state(SessionKey("10.0.0.2", "10.0.0.1", "", False), None,  # type: ignore[arg-type]
                       StateChanged(State.UP, State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN, 1.0, r))
        ev = w.lines[-1]
        assert (ev["blame"], ev["blame_by_read_time"]) == ("peer_or_path", "us")
        assert (ev["max_tx_gap_ms"], ev["max_tx_gap_read_ms"]) == (20.0, 40.0)
    finally:
        proc.sampler.close()
        proc.transport.close()
