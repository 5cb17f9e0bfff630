"""Local repair: the BFD process moves traffic off a dead neighbour itself, before telling anyone.

Why here (issue 9, measured): the daemon's failover lane runs on its event loop, and during a
full-table ingest the BFD event waited 7-35 ms for the loop's current step (and for a CPU shared
with ExaBGP) before the group rewrite could start, so a cut cost detection + ~20 ms. The BFD process
is the one part of pop-router that is never busy (real-time, pinned off the writer's CPU, nothing but
timers and packets), so the rewrite starts here — the shape of a router whose BFD offload triggers a
pre-programmed switchover on the line card.

How: the daemon keeps, per BFD peer, a *plan*: the netlink messages (RTM_NEWNEXTHOP group replaces
without NLM_F_CREATE, encoded by ``fib/``'s codec) that would move every group using that gateway
onto its remaining members or its backups under the current dead set, and the same rewrites as
writes to the XDP fast path's pinned ``groups`` map (path, key, value) when XDP is on. It recomputes and pushes the
plans whenever the FIB's groups change (``op: repair``). When a session goes from Up to Down,
:meth:`LocalRepair.trigger` hands that peer's plan to a worker thread that sends it on its own
NETLINK_ROUTE socket in the FIB's namespace and reads the acks — after the map writes, which take
no lock (XDP-forwarded traffic moves first, as in the daemon's own failover lane). The thread exists because the
kernel applies the messages inside ``sendmsg`` under RTNL, which the bulk FIB writer may hold for
one trie resize (10-45 ms): the BFD timers of every other session must not wait for that.

Safety: a plan only ever names ids of the group's own nexthops (ids are never reused within a
daemon's life and the plans die with it, since this process exits when the daemon does), and a
replace without NLM_F_CREATE cannot create anything, so a stale plan can at worst be refused
(ENOENT/EINVAL: counted) or pick members the daemon's failover lane corrects a few milliseconds
later — that lane still runs on every Down and is authoritative for the FIB's bookkeeping and the
XDP maps.

Stdlib only for netlink (no pyroute2): the bytes arrive encoded; this module checks their framing,
sets NLM_F_ACK on every message so each gets an answer, sends them and matches the answers. Map
writes go through libbpf (``bpf_obj_get``, ``bpf_map_update_elem`` with BPF_EXIST: an entry that is
gone is not recreated), only to a pinned map named ``groups``, with a group's sizes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.libbpf import errno_of, libbpf
from common.netns import netns as enter_netns

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


#: struct group in fib/xdp/pop_xdp.c: a u32 key, a count and 8 member ids.
GROUP_KEY_SIZE, GROUP_VALUE_SIZE = 4, 36
BPF_EXIST = 2

MapWrite = tuple[str, bytes, bytes]


def check_map_writes(writes: list[MapWrite]) -> list[MapWrite]:
    """Only rewrites of existing XDP groups: an absolute path to a pinned map named ``groups`` (the
    kernel refuses to open anything else as a map), with the group struct's key and value sizes."""
    for path, key, value in writes:
        if not path.startswith("/") or path.rsplit("/", 1)[-1] != "groups" or ".." in path.split("/"):
            raise PlanError(f"map path {path!r} is not a pinned XDP groups map")
        if len(key) != GROUP_KEY_SIZE or len(value) != GROUP_VALUE_SIZE:
            raise PlanError(f"group entry of {len(key)}+{len(value)} bytes")
    return writes


class BpfMaps:
    """Pinned maps opened by path (``common.libbpf``), fds cached."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def update(self, path: str, key: bytes, value: bytes) -> int:
        """0, or the errno of the failed write (ENOENT: no such map or group)."""
        lib = libbpf()
        fd = self.fds.get(path)
        if fd is None:
            fd = lib.bpf_obj_get(path.encode())
            if fd < 0:
                return errno_of(fd, errno.ENOENT)
            self.fds[path] = fd
        kb, vb = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
        rc = lib.bpf_map_update_elem(fd, kb, vb, BPF_EXIST)
        return 0 if rc == 0 else errno_of(rc, errno.EINVAL)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


@dataclass(frozen=True, slots=True)
class RepairResult:
    peer: str
    version: int
    detected_at: float
    #: CLOCK_MONOTONIC when the kernel had applied the plan (the last answer read).
    done_at: float
    messages: int
    errors: dict[int, int]  # sequence number -> errno
    map_writes: int = 0
    map_errors: int = 0


class LocalRepair:
    def __init__(self, on_result: Callable[[RepairResult], None], *,
                 open_socket: Callable[[], socket.socket] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        #: peer -> (version, netlink bytes, their sequence numbers, XDP map writes)
        self.plans: dict[str, tuple[int, bytes, list[int], list[MapWrite]]] = {}
        self.on_result = on_result
        self._open = open_socket or route_socket
        self.clock = clock
        self.rejected = 0
        self.triggered = 0
        self.maps = BpfMaps()
        self._q: queue.SimpleQueue[tuple[str, int, bytes, list[int], list[MapWrite], float] | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def set_plans(self, plans: dict[str, bytes | tuple[bytes, list[MapWrite]]], version: int) -> None:
        """Replace the plans of the peers named (an empty plan removes one); others stay. A plan is
        netlink bytes, or (netlink bytes, XDP map writes)."""
        for peer, plan in plans.items():
            raw, writes = (plan, []) if isinstance(plan, bytes) else plan
            if not raw and not writes:
                self.plans.pop(peer, None)
                continue
            try:
                data, seqs = prepare(raw)
                writes = check_map_writes(list(writes))
            except PlanError as exc:
                self.rejected += 1
                self.plans.pop(peer, None)
                log.error("repair plan for %s rejected: %s", peer, exc)
                continue
            self.plans[peer] = (version, data, seqs, writes)

    def trigger(self, peer: str, detected_at: float) -> int:
        """The session to ``peer`` went Down: send its plan now (worker thread). Returns the number of
        messages queued (0: no plan)."""
        plan = self.plans.pop(peer, None)  # used once: the daemon sends the next one
        if plan is None:
            return 0
        version, data, seqs, writes = plan
        self.triggered += 1
        if self._thread is None:
            # Created from the (real-time, pinned) BFD process: it inherits both.
            self._thread = threading.Thread(target=self._run, name="bfd-repair", daemon=True)
            self._thread.start()
        self._q.put((peer, version, data, seqs, writes, detected_at))
        return len(seqs) + len(writes)

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.maps.close()

    # --- worker thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            peer, version, data, seqs, writes, at = item
            # The XDP maps first: no lock there, while the netlink half waits for RTNL.
            map_errors = sum(1 for path, k, v in writes if self.maps.update(path, k, v))
            errors = self.send(data, seqs) if seqs else {}
            self.on_result(RepairResult(peer, version, at, self.clock(), len(seqs), errors, len(writes), map_errors))

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


def route_socket(netns: str | None = None) -> socket.socket:
    """A NETLINK_ROUTE socket, created in the FIB's namespace ``netns`` (None: this process's)."""
    with enter_netns(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s.bind((0, 0))
    return s
