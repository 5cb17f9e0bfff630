"""Hypervisor steal time, so that a BFD Down during which the host took our CPUs says so.

Why: on a virtual machine the host can stop every vCPU for tens of milliseconds (measured here on
2026-11-30 during a 40-minute soak: 258 windows of 100 ms with 30 ms or more of steal, up to 80 ms).
Both ends of a lab link then go silent at the same instant and the BFD attribution (receive gap by
kernel arrival time, our own send gap) cannot tell that apart from a stall of ours or of the peer.
The kernel counts it per CPU in ``/proc/stat`` (the 8th value, in USER_HZ ticks), so the BFD
process samples those counters on its loop-lag tick and a Down reports the steal inside its
detection window (``host_steal_ms``; blame ``host`` when it covers half that window or more).

Granularity: one tick (10 ms with USER_HZ 100), so figures are multiples of it; a sample costs one
read of ``/proc/stat`` (tens of microseconds), taken at most every :data:`MIN_PERIOD_S`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

#: Samples kept: enough to cover the longest detection window we attribute (a few seconds).
KEEP_S = 10.0
MIN_PERIOD_S = 0.02
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def read_proc_stat(path: str = "/proc/stat") -> dict[str, int]:
    """Steal ticks per CPU (``cpu0``, ``cpu1``...), from the kernel's counters."""
    out: dict[str, int] = {}
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"cpu") and line[3:4] != b" ":
                parts = line.split()
                if len(parts) > 8:
                    out[parts[0].decode()] = int(parts[8])
    return out


class StealClock:
    def __init__(self, read: Callable[[], dict[str, int]] = read_proc_stat) -> None:
        self._read = read
        self.samples: deque[tuple[float, dict[str, int]]] = deque()
        self.available = True

    def sample(self, now: float) -> None:
        if not self.available or (self.samples and now - self.samples[-1][0] < MIN_PERIOD_S):
            return
        try:
            self.samples.append((now, self._read()))
        except (OSError, ValueError):
            self.available = False  # no /proc/stat (not Linux, or a restricted container): report None
            return
        while self.samples and now - self.samples[0][0] > KEEP_S:
            self.samples.popleft()

    def stolen_s(self, since: float, now: float) -> float | None:
        """The most any one CPU lost to the host between ``since`` and ``now`` (seconds), or None
        without samples. Taken from the last sample at or before ``since`` to a fresh one."""
        if not self.available:
            return None
        self.sample(now)
        if len(self.samples) < 2:
            return None
        # From the newest back: a storm asks this once per Down, and the deque holds KEEP_S of samples.
        base = self.samples[0][1]
        for t, v in reversed(self.samples):
            if t <= since:
                base = v
                break
        last = self.samples[-1][1]
        return max((last.get(c, 0) - n for c, n in base.items()), default=0) * _TICK_S
