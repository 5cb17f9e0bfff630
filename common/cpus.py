"""CPU placement: keep real-time work off the CPU where the FIB writer is inside the kernel.

Why (measured, ``benchmarks/ROOTCAUSE-schedlat.md``): on a ``PREEMPT_NONE`` kernel a task inside a
system call leaves its CPU only when it returns to user space, sleeps or reaches a
``cond_resched()``. Writing routes runs long non-preemptible sections — the netlink batch itself
(~3 µs per route, no ``cond_resched`` in ``netlink_rcv_skb``) and, inside single inserts, fib trie
resizes of 10-45 ms that no batching avoids. A real-time task (our BFD process, a BIRD) woken on
that CPU is not moved to the other one: it waits, and a 10 ms x 3 BFD session goes Down. Priority
(nice 19, SCHED_IDLE) does not shorten a kernel section; placement does. So the kernel writer
thread gets its own CPU(s) (``cpus.writer``) and the BFD process and the daemon's event loop (the
failover lane) the others (``cpus.control``).

``auto``: with two or more CPUs the writer takes the last one and control the rest; with one CPU
nothing is pinned (there is nowhere else to go) and the daemon says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

log = logging.getLogger(__name__)


def available() -> set[int]:
    return set(os.sched_getaffinity(0))


def plan(writer: str | Iterable[int], control: str | Iterable[int],
         cpus: set[int] | None = None) -> tuple[set[int] | None, set[int] | None]:
    """(writer CPUs, control CPUs) from the configuration; None means "leave it unpinned"."""
    cpus = available() if cpus is None else cpus
    if writer == "off":
        w: set[int] | None = None
    elif writer == "auto":
        w = {max(cpus)} if len(cpus) >= 2 else None
    else:
        w = set(writer) & cpus or None  # type: ignore[arg-type]
    if control == "off":
        c: set[int] | None = None
    elif control == "auto":
        c = (cpus - w) or None if w else None
    else:
        c = set(control) & cpus or None  # type: ignore[arg-type]
    return w, c


def pin_thread(cpus: set[int] | None, what: str) -> None:
    """Pin the *calling* thread (Linux affinity is per thread); errors are logged, never raised."""
    if not cpus:
        return
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        log.warning("cannot pin %s to CPUs %s: %s", what, sorted(cpus), exc)
