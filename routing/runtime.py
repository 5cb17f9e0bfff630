"""Interpreter settings for a process that holds a full routing table and writes it to the kernel.

Garbage collector: CPython's cyclic collector runs a full (generation 2) pass whenever enough
objects survive the younger generations; each pass walks *every* tracked object. With a million
routes in memory that is hundreds of milliseconds, repeated throughout an ingest, and it made the
FIB writer ~2x slower at 1M routes than at 100k. Routing state is acyclic (dicts of frozen
dataclasses and tuples), so the collector has almost nothing to find there: we freeze what exists
at start, and collect rarely.

GIL switch interval: the FIB writer plans batch N+1 in the event loop while a worker thread sends
batch N (the kernel does its work inside that thread's ``sendmsg``). The thread needs the GIL for a
few microseconds to start the send and to read the acks; with the default 5 ms interval it waited
~4 ms per batch while the planner held the GIL, leaving the kernel idle (measured with a timeline
of the 100k-route benchmark). 0.5 ms keeps the kernel fed; the extra switches cost nothing
measurable here.
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL_S = 0.0005


def tune_runtime() -> None:
    gc.collect()
    gc.freeze()  # objects alive at start-up are never scanned again
    gc.set_threshold(200_000, 50, 1000)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
