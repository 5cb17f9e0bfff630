"""Route origin validation in the RIB: re-validating stored paths when the VRP set changes.

Theory of operation
-------------------
Every path gets its RFC 6811 state before import policy (:meth:`routing.rib.Rib.validated`, against
``Rib.validator``, an immutable :class:`~rpki.vrp.Validator` snapshot); the policy reads that state
(``reject-invalid`` refuses ``invalid``). What this module adds is the other direction: the VRPs
change under paths already stored.

The RTR clients run on the control lane (``rpki/client.py``); on an effective change the daemon
posts :class:`RpkiChanged` (the new snapshot and the affected ranges: "every route equal to or more
specific than a changed VRP prefix") to the routing core's urgent lane. The core hands it to
:meth:`Revalidation.start`, which

1. swaps ``Rib.validator`` at once: paths announced from now on get the new state;
2. queues a core *job* (sliced like a flush, ``routing/core.py``) that walks every Adj-RIB-In whose
   policy validates (accepted *and* rejected paths: a rejected ``invalid`` path may become valid),
   skips paths outside the affected ranges, re-validates the others, and only for a path whose
   state changed recovers the announcement as received (:func:`routing.reload.original_path`),
   re-runs the import policy and moves the Loc-RIB. The diffs go to the FIB as any others; no
   session is touched.

Superseding: each change bumps a generation and appends its ranges to ``pending``. A job that sees a
newer generation stops at its next path; the newer job walks the union of every pending range with
the newer snapshot, so nothing an abandoned job had not reached is missed (re-validating a path
twice is harmless: an unchanged state is skipped). ``pending`` is cleared when the newest job ends.

Invariant (tested): once no job is pending, every stored path of a validating peer has the state
the current snapshot gives it, and its accepted/rejected verdict is the policy's for that state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.model import FibDiff, prefix_key
from routing.policy import Rejection
from routing.reload import original_path
from routing.rib import validation_state, with_rpki
from rpki.vrp import AffectedRanges, Validator

if TYPE_CHECKING:
    from routing.rib import Rib

log = logging.getLogger(__name__)

#: Paths re-validated (state changed: policy re-run, Loc-RIB moved) per slice, like a flush slice.
REVALIDATE_STEP = 100
#: Paths examined per slice (a range test, ~2 µs on a busy 2-vCPU machine; a path whose state changed
#: counts as 25: policy, Loc-RIB, best path): a slice stays within a few milliseconds
#: (benchmarks/policy.py prints the slice times).
SCAN_STEP = 600
CHANGE_COST = 25


@dataclass(frozen=True, slots=True)
class RpkiChanged:
    """The effective VRP set changed: the new snapshot and where it changed (routing core event)."""

    validator: Validator
    ranges: AffectedRanges


@dataclass(slots=True)
class RevalidationStats:
    """One job's work, for the log, ``show rpki`` and the benchmark."""

    generation: int
    examined: int = 0
    in_ranges: int = 0
    changed_state: int = 0
    became_rejected: int = 0
    became_accepted: int = 0
    done: bool = False
    superseded: bool = False


class _Slice(list):  # type: ignore[type-arg]
    """FIB diffs of one slice and how much work it was (the core's budget counts ``cost``)."""

    cost: int = 0


class Revalidation:
    """The routing core's re-validation state (see the module docstring)."""

    def __init__(self) -> None:
        self.generation = 0
        self.pending: list[AffectedRanges] = []
        self.last: RevalidationStats | None = None

    def start(self, rib: Rib, ev: RpkiChanged, metrics: Any = None) -> Iterator[list[FibDiff]]:
        rib.validator = ev.validator
        self.generation += 1
        self.pending.append(ev.ranges)
        return self._job(rib, self.generation, metrics)

    def _job(self, rib: Rib, gen: int, metrics: Any, step: int = REVALIDATE_STEP,
             scan: int = SCAN_STEP) -> Iterator[list[FibDiff]]:
        stats = self.last = RevalidationStats(gen)
        ranges = [r for r in self.pending if len(r)]
        validator, loc = rib.validator, rib.loc
        chunk, work = _Slice(), 0
        for addr, a in list(rib.adj.items()):
            if a.policy.rpki == "off" or not ranges:
                continue
            for prefix in list(a.accepted) + list(a.rejected):
                if work >= scan or len(chunk) >= step:
                    chunk.cost = step
                    yield chunk
                    chunk, work = _Slice(), 0
                if gen != self.generation:
                    stats.superseded = True
                    if chunk:
                        yield chunk  # what this job already moved in the Loc-RIB must reach the FIB
                    return
                if rib.adj.get(addr) is not a:
                    break  # the peer was removed meanwhile
                work += 1
                stats.examined += 1
                key = prefix_key(prefix)
                if not any(r.contains(*key) for r in ranges):
                    continue
                stats.in_ranges += 1
                current = a.accepted.get(prefix)
                if current is not None:
                    stored = current
                else:
                    rej = a.rejected.get(prefix)
                    if rej is None:
                        continue  # withdrawn meanwhile
                    stored = rej[0]
                state = validation_state(validator, stored)
                if state is stored.rpki:
                    continue
                stats.changed_state += 1
                work += CHANGE_COST
                orig = with_rpki(original_path(stored, a.policy, stored.peer), state)
                verdict = a.policy.apply(orig)
                eligible = rib.eligible.get(addr, True)
                d: FibDiff | None = None
                if isinstance(verdict, Rejection):
                    a.reject(prefix, orig, verdict)
                    if current is None:
                        continue
                    stats.became_rejected += 1
                    a.rejected_total[verdict.reason.value] += 1
                    if metrics is not None:
                        metrics.bgp_prefixes_rejected.labels(str(addr), verdict.reason.value).inc()
                    if eligible:
                        d = loc.remove_path(prefix, addr)
                else:
                    a.accept(prefix, verdict)
                    if current is None:
                        stats.became_accepted += 1
                    if eligible:
                        d = loc.set_path(verdict)
                if d is not None:
                    chunk.append(d)
        chunk.cost = max(1, len(chunk))
        if gen == self.generation:
            self.pending.clear()
        stats.done = True
        log.info("rpki: re-validation %d done: %d paths examined, %d inside the changed ranges, %d changed "
                 "state (%d now rejected, %d now accepted)", gen, stats.examined, stats.in_ranges,
                 stats.changed_state, stats.became_rejected, stats.became_accepted)
        yield chunk
