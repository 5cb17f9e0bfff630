"""routing/runtime.py: the GC pacer freezes every interval but counts the frozen objects rarely
(counting walks all of them: ~200 ms per call with a 1M-route table, measured 2026-11-30)."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from common.model import Attributes, Origin
from routing.runtime import LAG_IDLE_S, LAG_QUIET_SAMPLES, LagPacer, _GcTimer, gc_pacer


class _Gauge:
    def __init__(self) -> None:
        self.values: list[float] = []

    def set(self, v: float) -> None:
        self.values.append(v)


class _Histogram:
    def __init__(self) -> None:
        self.observed: list[float] = []

    def labels(self, *_: str) -> _Histogram:
        return self

    def observe(self, v: float) -> None:
        self.observed.append(v)


class _Metrics:
    def __init__(self) -> None:
        self.gc_frozen_objects = _Gauge()
        self.gc_pause_seconds = _Histogram()


async def test_pacer_freezes_each_interval_and_counts_only_every_count_interval() -> None:
    m = _Metrics()
    frozen_before = gc.get_freeze_count()
    task = asyncio.create_task(gc_pacer(m, interval_s=0.01, count_every_s=3600))
    try:
        garbage_free = [object() for _ in range(1000)]  # survivors for the next freeze
        await asyncio.sleep(0.2)  # poll: ~20 pacer rounds
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.callbacks[:] = [c for c in gc.callbacks if not isinstance(c, _GcTimer)]
        frozen_after = gc.get_freeze_count()
        gc.unfreeze()
    assert len(m.gc_frozen_objects.values) == 1  # counted once, though it froze ~20 times
    assert len(m.gc_pause_seconds.observed) >= 2  # every young collection was timed
    # It froze (objects freed by reference counting leave the frozen set, so later counts may drop).
    assert m.gc_frozen_objects.values[0] > frozen_before and frozen_after > frozen_before
    assert garbage_free


# --- LagPacer: the loop-lag sampler parks while the daemon is idle ------------------------------

def test_parks_only_after_enough_quiet_samples() -> None:
    p = LagPacer()
    assert [p.after_sample(0.0, False) for _ in range(LAG_QUIET_SAMPLES)] == [False] * (LAG_QUIET_SAMPLES - 1) + [True]
    assert p.after_sample(0.0, False)  # still idle: park again after the single sample that ended the park


@pytest.mark.parametrize(("lag_s", "worked"), [(0.0, True), (LAG_IDLE_S, False), (0.2, True)])
def test_work_or_lag_keeps_sampling_and_restarts_the_quiet_count(lag_s: float, worked: bool) -> None:
    p = LagPacer(quiet_samples=3)
    assert [p.after_sample(0.0, False) for _ in range(3)] == [False, False, True]
    assert not p.after_sample(lag_s, worked)
    assert [p.after_sample(0.0, False) for _ in range(3)] == [False, False, True]


def test_an_ingest_never_parks() -> None:
    p = LagPacer(quiet_samples=2)
    assert not any(p.after_sample(0.001 * (i % 3), True) for i in range(1000))


# --- the attribute-set intern table is swept of sets no path holds (issue 12) --------------------

def _attrs(med: int) -> Attributes:
    """A fresh set, never interned before: its MED is one no other test uses."""
    return Attributes(Origin.IGP, (64512, 64513), med)


def test_sweep_drops_only_the_sets_nothing_holds() -> None:
    from common.model import intern_attrs, interned_attrs, sweep_interned_attrs

    held = intern_attrs(_attrs(900_000_001))
    path_like = (object(), intern_attrs(_attrs(900_000_002)))  # a reference from inside another object
    intern_attrs(_attrs(900_000_003))  # interned, then nobody keeps it
    before = interned_attrs()
    totals = list(sweep_interned_attrs(step=2))
    assert len(totals) == (before + 1) // 2 and totals == sorted(totals)  # one yield per slice, cumulative
    assert totals[-1] >= 1 and interned_attrs() == before - totals[-1]
    assert intern_attrs(_attrs(900_000_001)) is held and intern_attrs(_attrs(900_000_002)) is path_like[1]
    fresh = _attrs(900_000_003)
    assert intern_attrs(fresh) is fresh  # the old instance was dropped: a new equal set becomes the one


async def test_sweeper_waits_for_the_table_to_double_then_sweeps() -> None:
    from common.model import intern_attrs, interned_attrs
    from routing.runtime import attrs_sweeper

    m = _Metrics()
    m.attr_sets_interned = _Gauge()  # type: ignore[attr-defined]
    keep = [intern_attrs(_attrs(900_100_000 + i)) for i in range(50)]
    for i in range(50):
        intern_attrs(_attrs(900_200_000 + i))  # garbage once interned
    task = asyncio.create_task(attrs_sweeper(m, interval_s=0.001, minimum=1))
    try:
        for _ in range(500):
            await asyncio.sleep(0.002)  # poll: the sweeper's first round
            if len(m.attr_sets_interned.values) >= 3:
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    seen, after_sweep, next_look = m.attr_sets_interned.values[:3]
    assert seen >= 100 and after_sweep <= seen - 50  # the 50 unused sets went, the 50 held ones stayed
    assert next_look == after_sweep  # not doubled since: looked at, not swept again
    assert all(intern_attrs(_attrs(900_100_000 + i)) is keep[i] for i in range(50)) and interned_attrs() >= 50


_MMAP_PROBE = """
import sys
from routing.runtime import fixed_mmap_threshold
if sys.argv[1] == "pinned":
    assert fixed_mmap_threshold()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
a = bytearray(20 << 20)  # mapped; freeing it raises glibc's threshold to 20 MiB unless pinned
del a
before = rss()
b = bytearray(10 << 20)
c = [bytearray(600) for _ in range(100)]  # heap blocks above b
del b
print(rss() - before)
"""


@pytest.mark.parametrize("mode", ["pinned", "glibc"])
def test_a_freed_large_block_goes_back_to_the_kernel(mode: str) -> None:
    """What :func:`routing.runtime.fixed_mmap_threshold` is for: a 10 MiB buffer freed after a 20 MiB
    one. With glibc's moving threshold it came from the heap and stays in the process's RSS; pinned,
    it was its own mapping and is gone. Both shown, so the test proves the difference is real."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    from pathlib import Path

    kept = int(subprocess.run([sys.executable, "-c", _MMAP_PROBE, mode], capture_output=True, text=True,
                              check=True, timeout=60, cwd=Path(__file__).resolve().parents[2]).stdout)
    if mode == "pinned":
        assert kept < 2 << 20
    else:
        assert kept > 8 << 20
