"""The routing core's inbox: an urgent lane that never waits and a bounded routing lane.

Theory of operation
-------------------
The routing core has one owner task; everything that wants a RIB change posts an event here.
Two kinds of producer must be treated differently (DESIGN.md, "Lanes"):

- **urgent** events — a BFD Down already handled by the failover lane and now to be reconciled, a
  dead ExaBGP, a timer, a command's outcome, an operator's reset — are few and must not wait behind
  a table: :meth:`Inbox.post` never blocks and the owner takes them first;
- **routing** events — ExaBGP's UPDATE stream — are many: :meth:`Inbox.put` waits while
  ``maxsize`` UPDATEs are queued (an event counts as its ``weight``, 1 unless it says otherwise: an
  ``UpdateBatch`` of 8 UPDATEs counts 8, so batching never lets more parsed UPDATEs wait here). The
  relay reader awaits it, so it stops reading its socket, the socket fills and the relay holds the
  rest (as raw bytes, counted): flow control instead of an unbounded backlog of parsed events in the
  daemon.

While the FIB writer is far behind, the daemon *holds* the routing lane (:meth:`Inbox.hold`): the owner
then gets urgent events only, the routing lane fills, and the relay keeps the rest, as above (issue
12: a waiting route costs far more here than in the relay; ``fib/dataplane.py``, "Backlog").

The owner may also peek at the urgent lane only (:meth:`Inbox.take_urgent`) while it works through a
long job (a flush), because routing events must not overtake a peer's flush.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Inbox:
    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._urgent: deque[object] = deque()
        self._routing: deque[object] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._weight = 0  # UPDATEs in the routing lane (events' ``weight``)
        #: Largest number of routing events queued at once, and how often a producer had to wait.
        self.max_depth = 0
        self.producer_waits = 0
        #: Routing events are not handed out (:meth:`hold`); how many times that happened.
        self.held = False
        self.holds = 0

    def __len__(self) -> int:
        return len(self._urgent) + len(self._routing)

    @property
    def routing_depth(self) -> int:
        return len(self._routing)

    def post(self, ev: object) -> None:
        """Urgent event: queued at once, taken before any routing event."""
        self._urgent.append(ev)
        self._readable.set()

    async def put(self, ev: object) -> None:
        """Routing event: waits while the lane is full (the caller stops reading its source)."""
        while self._weight >= self.maxsize:
            self.producer_waits += 1
            self._writable.clear()
            await self._writable.wait()
        self._routing.append(ev)
        self._weight += getattr(ev, "weight", 1)
        self.max_depth = max(self.max_depth, len(self._routing))
        self._readable.set()

    def hold(self, held: bool) -> None:
        """Stop (True) or resume (False) handing out routing events; urgent ones always go."""
        if held and not self.held:
            self.holds += 1
        self.held = held
        if not held and self._routing:
            self._readable.set()

    def take_urgent(self) -> object | None:
        return self._urgent.popleft() if self._urgent else None

    def get_nowait(self) -> object | None:
        """The next event (urgent first) without waiting; None when both lanes are empty."""
        if self._urgent:
            return self._urgent.popleft()
        if self._routing and not self.held:
            ev = self._routing.popleft()
            self._weight -= getattr(ev, "weight", 1)
            if self._weight < self.maxsize:
                self._writable.set()
            return ev
        return None

    async def get(self) -> object:
        while (ev := self.get_nowait()) is None:
            self._readable.clear()
            await self._readable.wait()
        return ev
