"""Local repair: the BFD process moves traffic off a dead neighbour itself, before telling anyone.

Why here (issue 9, measured): the daemon's failover lane runs on its event loop, and during a
full-table ingest the BFD event waited 7-35 ms for the loop's current step (and for a CPU shared
with ExaBGP) before the group rewrite could start, so a cut cost detection + ~20 ms. The BFD process
is the one part of pop-router that is never busy (real-time, pinned off the writer's CPU, nothing but
timers and packets), so the rewrite starts here — the shape of a router whose BFD offload triggers a
pre-programmed switchover on the line card.

How: the daemon keeps, per BFD peer, a *plan*: the netlink messages (RTM_NEWNEXTHOP group replaces
without NLM_F_CREATE, encoded by ``fib/``'s codec) that would move every group using that gateway
onto its remaining members or its backups under the current dead set. It recomputes and pushes the
plans whenever the FIB's groups change (``op: repair``). When a session goes from Up to Down,
:meth:`LocalRepair.trigger` hands that peer's plan to a worker thread that sends it on its own
NETLINK_ROUTE socket in the FIB's namespace and reads the acks. The thread exists because the
kernel applies the messages inside ``sendmsg`` under RTNL, which the bulk FIB writer may hold for
one trie resize (10-45 ms): the BFD timers of every other session must not wait for that.

Safety: a plan only ever names ids of the group's own nexthops (ids are never reused within a
daemon's life and the plans die with it, since this process exits when the daemon does), and a
replace without NLM_F_CREATE cannot create anything, so a stale plan can at worst be refused
(ENOENT/EINVAL: counted) or pick members the daemon's failover lane corrects a few milliseconds
later — that lane still runs on every Down and is authoritative for the FIB's bookkeeping and the
XDP maps.

Stdlib only (no pyroute2): the bytes arrive encoded; this module checks their framing, sets
NLM_F_ACK on every message so each gets an answer, sends them and matches the answers.
"""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("bfd.repair")

_NLMSGHDR = struct.Struct("=IHHII")
_NLMSGERR = struct.Struct("=i")
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
RTM_NEWNEXTHOP = 104
#: Longest wait for the kernel's answers (RTNL held by a bulk write): afterwards the socket is reopened.
ACK_TIMEOUT_S = 1.0


class PlanError(ValueError):
    """A plan's bytes are not a sequence of well-formed RTM_NEWNEXTHOP requests."""


def prepare(plan: bytes) -> tuple[bytes, list[int]]:
    """Check a plan's framing and set NLM_F_ACK on each message. Returns (bytes to send, sequence
    numbers). Only RTM_NEWNEXTHOP is accepted: this process must not be able to touch routes."""
    buf = bytearray(plan)
    seqs: list[int] = []
    off = 0
    while off < len(buf):
        if len(buf) - off < _NLMSGHDR.size:
            raise PlanError(f"truncated header at byte {off}")
        length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(buf, off)
        if length < _NLMSGHDR.size or off + length > len(buf):
            raise PlanError(f"bad length {length} at byte {off}")
        if mtype != RTM_NEWNEXTHOP:
            raise PlanError(f"message type {mtype} at byte {off} is not RTM_NEWNEXTHOP")
        if flags & 0x400:  # NLM_F_CREATE: a repair only rewrites groups that exist
            raise PlanError(f"NLM_F_CREATE set at byte {off}")
        struct.pack_into("=H", buf, off + 6, flags | NLM_F_ACK)
        seqs.append(seq)
        off += (length + 3) & ~3
    return bytes(buf), seqs


@dataclass(frozen=True, slots=True)
class RepairResult:
    peer: str
    version: int
    detected_at: float
    #: CLOCK_MONOTONIC when the kernel had applied the plan (the last answer read).
    done_at: float
    messages: int
    errors: dict[int, int]  # sequence number -> errno


class LocalRepair:
    def __init__(self, on_result: Callable[[RepairResult], None], *,
                 open_socket: Callable[[], socket.socket] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        #: peer -> (version, bytes, sequence numbers)
        self.plans: dict[str, tuple[int, bytes, list[int]]] = {}
        self.on_result = on_result
        self._open = open_socket or _route_socket
        self.clock = clock
        self.rejected = 0
        self.triggered = 0
        self._q: queue.SimpleQueue[tuple[str, int, bytes, list[int], float] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def set_plans(self, plans: dict[str, bytes], version: int) -> None:
        """Replace the plans of the peers named (an empty plan removes one); others stay."""
        for peer, raw in plans.items():
            if not raw:
                self.plans.pop(peer, None)
                continue
            try:
                data, seqs = prepare(raw)
            except PlanError as exc:
                self.rejected += 1
                self.plans.pop(peer, None)
                log.error("repair plan for %s rejected: %s", peer, exc)
                continue
            self.plans[peer] = (version, data, seqs)

    def trigger(self, peer: str, detected_at: float) -> int:
        """The session to ``peer`` went Down: send its plan now (worker thread). Returns the number of
        messages queued (0: no plan)."""
        plan = self.plans.pop(peer, None)  # used once: the daemon sends the next one
        if plan is None:
            return 0
        version, data, seqs = plan
        self.triggered += 1
        if self._thread is None:
            # Created from the (real-time, pinned) BFD process: it inherits both.
            self._thread = threading.Thread(target=self._run, name="bfd-repair", daemon=True)
            self._thread.start()
        self._q.put((peer, version, data, seqs, detected_at))
        return len(seqs)

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # --- worker thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            peer, version, data, seqs, at = item
            errors = self.send(data, seqs)
            self.on_result(RepairResult(peer, version, at, self.clock(), len(seqs), errors))

    def send(self, data: bytes, seqs: list[int]) -> dict[int, int]:
        """Send one plan and wait for every answer; a timeout or socket error fails all of it."""
        try:
            if self._sock is None:
                self._sock = self._open()
                self._sock.settimeout(ACK_TIMEOUT_S)
            self._sock.sendall(data)
            return self._acks(self._sock, set(seqs))
        except OSError as exc:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            code = exc.errno or 110  # ETIMEDOUT
            return dict.fromkeys(seqs, code)

    @staticmethod
    def _acks(sock: socket.socket, waiting: set[int]) -> dict[int, int]:
        errors: dict[int, int] = {}
        while waiting:
            buf = sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(buf):
                length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(buf, off)
                if length < _NLMSGHDR.size:
                    break
                if mtype == NLMSG_ERROR and seq in waiting:
                    (err,) = _NLMSGERR.unpack_from(buf, off + _NLMSGHDR.size)
                    waiting.discard(seq)
                    if err:
                        errors[seq] = -err
                off += (length + 3) & ~3
        return errors


def _route_socket() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s.bind((0, 0))
    return s
