"""Rolling maxima of time gaps, for attributing BFD Downs (sans-IO: the time is always passed in).

Theory of operation
-------------------
A BFD Down is either *our* detection (no packet from the peer for the detection time) or the
*peer's* signal (it stopped hearing us). Telling which side stalled needs the recent history of
gaps: between packets we received, between packets we sent, and between when our timer was due and
when it ran. Keeping every sample would cost memory per packet; what attribution needs is only the
largest gap of the last few seconds, so :class:`RollingMax` keeps one maximum per time bucket
(one second by default) and answers the largest over the buckets that overlap the window.

Invariant: ``max(now)`` covers at least the last ``window_s`` seconds and at most ``window_s`` plus
one bucket (the oldest bucket is kept whole). Values are seconds, reported by callers in ms.
"""

from __future__ import annotations

import math
from collections import deque

#: How far back "the largest gap recently seen" looks, in seconds.
GAP_WINDOW_S = 10.0


class RollingMax:
    """The largest value added in the last ``window_s`` seconds, kept as one maximum per bucket."""

    __slots__ = ("_buckets", "bucket_s", "window_s", "worst")

    def __init__(self, window_s: float = GAP_WINDOW_S, bucket_s: float = 1.0) -> None:
        if window_s <= 0 or bucket_s <= 0:
            raise ValueError("window and bucket must be positive")
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets: deque[list[float]] = deque()  # [bucket index, max value, bucket end], oldest first
        #: The largest value ever added (never expires): a soak reads it once at the end.
        self.worst = 0.0

    def _expire(self, now: float) -> None:
        oldest = math.floor((now - self.window_s) / self.bucket_s)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def add(self, now: float, value: float) -> None:
        # Hot path (every BFD packet): one comparison when the value fits the current bucket.
        if value > self.worst:
            self.worst = value
        buckets = self._buckets
        if buckets:
            last = buckets[-1]
            if now < last[2]:
                if value > last[1]:
                    last[1] = value
                return
        idx = math.floor(now / self.bucket_s)
        buckets.append([idx, value, (idx + 1) * self.bucket_s])
        self._expire(now)

    def max(self, now: float) -> float:
        self._expire(now)
        return max((b[1] for b in self._buckets), default=0.0)
