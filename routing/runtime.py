"""Interpreter settings for a process that holds a full routing table and writes it to the kernel.

Garbage collector: CPython's cyclic collector runs a full (generation 2) pass whenever enough
objects survive the younger generations; each pass walks *every* tracked object. With a million
routes in memory that is hundreds of milliseconds, repeated throughout an ingest, and it made the
FIB writer ~2x slower at 1M routes than at 100k. Routing state is acyclic (dicts of frozen
dataclasses and tuples), so the collector has almost nothing to find there: we freeze what exists
at start, and collect rarely.

Collector pauses are event-loop stalls, and the event loop carries the failover lane (DESIGN.md:
a few milliseconds, whatever else is happening). Measured on the routing core alone ingesting
300k prefixes on this 2-vCPU machine (busy): with a 200,000-object young generation every
collection paused the loop 20-70 ms (175 ms at 1M), and the older generations, once reached, scan
millions of objects (seconds). So the young generation is 50,000 objects, and :func:`gc_pacer`
freezes the survivors once a second (after a young collection, so young cyclic garbage is freed
first): every collection then scans at most about a second's worth of allocations, never the
table. The price: a reference cycle that becomes garbage after it was frozen is never freed.
Routing state makes none (acyclic values); pop_router_gc_frozen_objects shows the frozen count.

GIL switch interval: the FIB writer plans batch N+1 in the event loop while a worker thread sends
batch N (the kernel does its work inside that thread's ``sendmsg``). The thread needs the GIL for a
few microseconds to start the send and to read the acks; with the default 5 ms interval it waited
~4 ms per batch while the planner held the GIL, leaving the kernel idle (measured with a timeline
of the 100k-route benchmark). 0.5 ms keeps the kernel fed; the extra switches cost nothing
measurable here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from typing import Any

SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLDS = (50_000, 20, 100)
GC_FREEZE_INTERVAL_S = 1.0
GC_WARN_S = 0.02
#: How often the frozen-object gauge is refreshed. ``gc.get_freeze_count()`` walks the whole
#: permanent generation (CPython's gc_list_size): ~200 ms with a 1M-route table, and called once a
#: second it stalled the event loop and the API thread (GIL) by that much every second (issue 9).
GC_FREEZE_COUNT_INTERVAL_S = 600.0

log = logging.getLogger(__name__)


def tune_runtime() -> None:
    gc.collect()
    gc.freeze()  # objects alive at start-up are never scanned again
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


class _GcTimer:
    """Times every collection (gc.callbacks): the histogram shows whether the collector is what made
    the loop late, and a long pause is logged with its generation."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        pause = time.perf_counter() - self._t0
        if self.metrics is not None:
            self.metrics.gc_pause_seconds.labels(str(info.get("generation", -1))).observe(pause)
        if pause > GC_WARN_S:
            log.warning("garbage collection of generation %s took %.0f ms (%s objects collected)",
                        info.get("generation"), pause * 1000, info.get("collected"))


async def gc_pacer(metrics: Any = None, interval_s: float = GC_FREEZE_INTERVAL_S,
                   count_every_s: float = GC_FREEZE_COUNT_INTERVAL_S) -> None:
    """Once a second: collect the young generation, freeze what survived (see the module docstring).
    Both are cheap (the young generation; a list splice). Counting the frozen objects is not, so the
    gauge is refreshed only every ``count_every_s``."""
    gc.callbacks.append(_GcTimer(metrics))
    counted = float("-inf")
    while True:
        await asyncio.sleep(interval_s)
        gc.collect(0)
        gc.freeze()
        now = time.monotonic()
        if metrics is not None and now - counted >= count_every_s:
            counted = now
            metrics.gc_frozen_objects.set(gc.get_freeze_count())
