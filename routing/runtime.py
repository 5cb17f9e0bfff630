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

Large allocations: glibc's malloc serves a block above its mmap threshold with its own mapping,
returned to the kernel on free, but it raises that threshold to the size of every such block freed
(up to 32 MiB): after a dict of the table resizes, its old 20 MiB index and entries - and from then on
every batch buffer and table of that size - come from the heap, where a freed block below live ones
is never returned. :func:`fixed_mmap_threshold` pins the threshold at :data:`MMAP_THRESHOLD` (which
also stops the adjustment): 1M prefixes at one session peaked ~10 MB lower in the daemon (410 -> 400
MB, RSS of the process, 2 runs each, 2026-12-02); the relay gets the same through ExaBGP's
environment (``MALLOC_MMAP_THRESHOLD_``, ``routing/exabgp/conf.py``). A mapping per large block costs
page faults when it is reused; at most a few thousand per table, not measurable against the ingest.

GIL switch interval: the FIB writer plans batch N+1 in the event loop while a worker thread sends
batch N (the kernel does its work inside that thread's ``sendmsg``). The thread needs the GIL for a
few microseconds to start the send and to read the acks; with the default 5 ms interval it waited
~4 ms per batch while the planner held the GIL, leaving the kernel idle (measured with a timeline
of the 100k-route benchmark). 0.5 ms keeps the kernel fed; the extra switches cost nothing
measurable here.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import time
from typing import Any

from common.model import interned_attrs, sweep_interned_attrs

SWITCH_INTERVAL_S = 0.0005
#: glibc's ``M_MMAP_THRESHOLD`` parameter number, and the value we pin it at (its initial default).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024
GC_THRESHOLDS = (50_000, 20, 100)
GC_FREEZE_INTERVAL_S = 1.0
GC_WARN_S = 0.02
#: How often the frozen-object gauge is refreshed. ``gc.get_freeze_count()`` walks the whole
#: permanent generation (CPython's gc_list_size): ~200 ms with a 1M-route table, and called once a
#: second it stalled the event loop and the API thread (GIL) by that much every second (issue 9).
GC_FREEZE_COUNT_INTERVAL_S = 600.0

#: The attribute-set intern table (:func:`attrs_sweeper`): looked at every ``ATTRS_SWEEP_INTERVAL_S``,
#: swept when it holds at least ``ATTRS_SWEEP_MIN`` sets and twice what the last sweep kept.
ATTRS_SWEEP_INTERVAL_S = 60.0
ATTRS_SWEEP_MIN = 10_000

#: Loop-lag sampling (:class:`LagPacer`): a sample is a timer of ``LAG_SAMPLE_S`` whose lateness is
#: the lag. A sample later than ``LAG_IDLE_S``, or one during which the routing core worked, keeps
#: the sampler running back to back; after ``LAG_QUIET_SAMPLES`` quiet samples in a row it parks
#: until the core works again, for at most ``LAG_PARK_S``.
LAG_SAMPLE_S = 0.01
LAG_IDLE_S = 0.005
LAG_QUIET_SAMPLES = 20
LAG_PARK_S = 1.0

log = logging.getLogger(__name__)


def fixed_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold (module docstring); False where the C library has no ``mallopt``
    (musl, other systems), which then keeps its own behaviour."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, size))


def tune_runtime() -> None:
    fixed_mmap_threshold()
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


class LagPacer:
    """When the daemon's loop-lag sampler takes its next sample: at once while the loop has work, or
    after parking while it is idle. Pure: the shell tells it each sample's lag and whether the
    routing core worked meanwhile.

    Why: the sampler is a 10 ms timer whose lateness is the event loop's lag
    (``pop_router_loop_lag_seconds``). Running 100 times a second it cost ~2.3 % of a core by itself
    on CPython (measured 2026-12-01) — most of the daemon's idle CPU, more than the issue's whole idle
    budget. An idle loop has no lag to find, so after :data:`LAG_QUIET_SAMPLES` quiet samples
    (on time, no routing work) the sampler parks until the routing core is woken again or
    :data:`LAG_PARK_S` has passed; one sample then follows. Lag from work that does not go through the
    routing core (an API request, a reload's preview) is still seen, by the once-a-park sample or
    because such work is followed by core events. While routes flow the core works continuously and
    the sampler runs back to back, as before.
    """

    def __init__(self, quiet_samples: int = LAG_QUIET_SAMPLES, idle_lag_s: float = LAG_IDLE_S) -> None:
        self.quiet_samples = quiet_samples
        self.idle_lag_s = idle_lag_s
        self._quiet = 0

    def after_sample(self, lag_s: float, core_worked: bool) -> bool:
        """True: park before the next sample (the loop is idle); False: sample again at once."""
        if core_worked or lag_s >= self.idle_lag_s:
            self._quiet = 0
            return False
        self._quiet += 1
        return self._quiet >= self.quiet_samples


async def attrs_sweeper(metrics: Any = None, interval_s: float = ATTRS_SWEEP_INTERVAL_S,
                        minimum: int = ATTRS_SWEEP_MIN) -> None:
    """Keeps the attribute-set intern table to the sets in use (:func:`common.model.sweep_interned_attrs`
    says why it grows). A sweep visits every set, so it runs only once the table has doubled since the
    last one (each set is visited a bounded number of times, amortised) and in slices of ~1 ms with
    the loop run between them (the failover lane must not wait for it)."""
    kept = 0
    while True:
        await asyncio.sleep(interval_s)
        n = interned_attrs()
        if metrics is not None:
            metrics.attr_sets_interned.set(n)
        if n < max(minimum, 2 * kept):
            continue
        t0 = time.monotonic()
        dropped = 0
        for dropped in sweep_interned_attrs():  # noqa: B007 - the last value is the total
            await asyncio.sleep(0)  # between slices: the loop's other work, the failover lane first
        kept = interned_attrs()
        if metrics is not None:
            metrics.attr_sets_interned.set(kept)
        log.info("attribute sets: %d no longer used dropped, %d kept (%.0f ms)", dropped, kept,
                 (time.monotonic() - t0) * 1000)
