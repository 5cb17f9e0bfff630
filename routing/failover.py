"""The failover lane: a BFD transition moves traffic first, and only then tells the routing core.

Theory of operation
-------------------
DESIGN.md's "Lanes": BFD Down/Up → the dataplane's group rewrite (kernel and XDP) → done, waiting
for nothing else. :meth:`FailoverLane.on_bfd` is called synchronously by the BFD channel's reader
the moment the line arrives (``routing/bfd_link.py``), so its latency is one event-loop step, never
a queue: the routing core's inbox may hold a table's worth of UPDATEs.

- **Down** (a session that was Up): ``fib.fail_gateways_now`` rewrites every nexthop group using
  that neighbour in one netlink message on the loop's own socket and the same change in the XDP
  maps; every prefix behind those groups moves at once. Then :class:`routing.core.BfdDown` goes on
  the inbox's urgent lane: the core flushes (or, in strict mode, gates) the peer's paths in slices
  and tears the BGP session down as a tracked command.
- **Up**: ``fib.recover_gateways_now`` moves the groups back to their primaries, then
  :class:`routing.core.BfdUp` (strict mode lets the peer's paths back into the Loc-RIB).

Link down/up from the kernel takes the same path inside the dataplane (its link monitor); it never
involves the routing core at all.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from common.model import IPAddress
from routing.bfd_link import BfdEvent
from routing.core import BfdDown, BfdUp

log = logging.getLogger(__name__)


class FailoverLane:
    def __init__(self, fib: Any, post: Callable[[object], None], peers: dict[IPAddress, str],
                 clock: Callable[[], float], metrics: Any = None) -> None:
        self.fib = fib
        self.post = post
        #: Configured BFD peers -> customer name (events for anything else are counted and dropped).
        self.peers = peers
        self.clock = clock
        self.metrics = metrics
        self.unknown_peer_events = 0
        self.last_ms: float | None = None
        #: Attribution of the last Down per peer (receive gap, our send gap...), for `show peers`.
        self.last_down_detail: dict[IPAddress, dict[str, Any]] = {}
        #: The last failovers, newest last, for `show status` (benchmarks match a cut to its rewrite).
        self.recent: deque[dict[str, Any]] = deque(maxlen=16)

    def on_bfd(self, ev: BfdEvent) -> None:
        customer = self.peers.get(ev.peer)
        if customer is None:
            self.unknown_peer_events += 1
            return
        if self.metrics is not None:
            self.metrics.bfd_transitions.labels(str(ev.peer), ev.new).inc()
        if ev.new == "up":
            arrived = self.clock()
            res = self.fib.recover_gateways_now({ev.peer})
            self._record(ev, "recover", res, self.clock(), arrived)
            log.info("BFD %s (%s) up: %d groups back on primaries", ev.peer, customer, res.rewritten)
            self.post(BfdUp(ev.peer))
            return
        if ev.old != "up":
            return
        arrived = self.clock()  # the event's trip from the BFD process, and our loop's delay, end here
        res = self.fib.fail_gateways_now({ev.peer}, ev.at)
        done = self.clock()
        self.last_ms = (done - ev.at) * 1000
        self._record(ev, "fail", res, done, arrived)
        if self.metrics is not None:
            self.metrics.failover_lane_seconds.observe(max(0.0, done - ev.at))
            self.metrics.bfd_downs.labels(str(ev.peer), str(ev.detail.get("blame", "unknown"))).inc()
        self.last_down_detail[ev.peer] = dict(ev.detail)
        self.post(BfdDown(ev.peer, ev.diag, ev.at))
        log.warning("BFD %s (%s) down (%s%s): %d groups rewritten %.1f ms after detection (event arrived after "
                    "%.1f ms, rewrite took %.1f ms)%s; reconciling the RIB and tearing BGP down", ev.peer, customer,
                    ev.diag, _attribution(ev.detail), res.rewritten, self.last_ms, (arrived - ev.at) * 1000,
                    res.loop_ms, f", {res.errors} refused and rolled back" if res.errors else "")


    def _record(self, ev: BfdEvent, kind: str, res: Any, done: float, arrived: float) -> None:
        self.recent.append({"peer": str(ev.peer), "kind": kind, "detected_at": ev.at, "arrived_at": arrived,
                            "rewritten_at": done,
                            "ms": round((done - ev.at) * 1000, 3), "groups": res.rewritten, "errors": res.errors,
                            "loop_ms": round(res.loop_ms, 3), "diag": ev.diag})


def _attribution(detail: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted(detail.items()) if isinstance(v, int | float | str)]
    return ("; " + ", ".join(parts)) if parts else ""
