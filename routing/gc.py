"""Garbage-collector settings for a process that holds a full routing table.

CPython's cyclic collector runs a full (generation 2) pass whenever enough objects survive the
younger generations; each pass walks *every* tracked object. With a million routes in memory that
is hundreds of milliseconds, repeated throughout an ingest, and it made the FIB writer ~2x slower
at 1M routes than at 100k. Routing state is acyclic (dicts of frozen dataclasses and tuples), so
the collector has almost nothing to find there: we freeze what exists at start, and collect rarely.
"""

from __future__ import annotations

import gc


def tune_gc() -> None:
    gc.collect()
    gc.freeze()  # objects alive at start-up are never scanned again
    gc.set_threshold(200_000, 50, 1000)
