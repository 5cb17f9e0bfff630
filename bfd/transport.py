"""BFD over UDP: the only module that touches sockets and the event loop (RFC 5881, RFC 5883).

Theory of operation
-------------------
- Receive: one socket per (family, single-hop | multihop) bound to UDP 3784 / 4784, read with
  ``recvmsg`` so the TTL / hop limit, the destination address and the kernel's arrival time come
  with each datagram (``IP_RECVTTL``/``IP_PKTINFO``, ``IPV6_RECVHOPLIMIT``/``IPV6_RECVPKTINFO``,
  ``SO_TIMESTAMPNS``: receive gaps are measured between arrivals, not between our reads). Single-hop packets
  must arrive with TTL 255 (RFC 5881 §5, GTSM); multihop ones with at least the session's
  ``min_ttl`` (RFC 5883 §2). Every drop is counted by reason, never raised.
- Transmit: one socket per session, bound to the local address and a source port in 49152-65535
  (RFC 5881 §4), to the interface for single-hop (``SO_BINDTODEVICE``), TTL / hop limit 255, DSCP
  CS6 (TOS 0xC0), connected to the peer.
- Timers: sessions are pure (``bfd.session``); this module keeps a heap of their
  ``next_deadline()`` values and re-arms a single ``loop.call_at`` to the earliest (aioquic's
  pattern). When it fires, the sockets are drained first — a packet that already arrived is
  processed before a detection timeout is declared — then every session due within the next
  :data:`TX_COALESCE_S` gets ``on_timer``: one wake-up sends the packets of every session due in
  that window (sessions are created with ``tx_early_s`` = that window, and keep the 75 % jitter
  bound themselves, see ``bfd.session``). Detection is never early: ``on_timer`` declares it only
  once its deadline has passed, and a session called early for it is simply put back on the heap.
- Cost per packet (issue 9: ~10,000 packets/s at 53 sessions x 10 ms on 2 shared vCPUs). The heap
  holds (deadline, seq, entry) and an entry remembers its one live heap item, so a received packet
  that leaves the session's next deadline where it was (the usual case: the next transmission comes
  before the detection deadline) costs no heap push and no timer re-arm, and nothing is keyed by
  :class:`SessionKey` (a dataclass hash per lookup) on the packet path. Receive looks the session up
  by Your Discriminator before building any key (the address key is only for packets without it),
  parses the control messages by kind, converts the destination address only when the key needs it,
  and carries kernel timestamps (CLOCK_REALTIME) to the loop's clock with one offset per drain
  instead of a ``time.time()`` per packet.
- Reading in batches: a reader wake-up per received packet cost about as much as the packet (epoll,
  the loop's turn, a failing ``recvmsg``). While the one timer is armed within :data:`RX_BATCH_S`,
  the receive sockets are taken off the loop and read when it fires (it drains them first anyway);
  once the next deadline is further away they are watched again. A packet thus waits at most
  ~``RX_BATCH_S`` plus epoll's millisecond rounding before it is read; detection counts from its
  kernel arrival time (``bfd.session``), so the wait does not lengthen detection, and a Final or a
  state change leaves that much later (the RFC asks for "as soon as practicable").
- ``tx_late`` is the sum of the sessions' own counts: a send more than 1.25 x the negotiated interval
  after the session's previous send (what makes the *peer* declare us dead is lateness, not loss).
  Sessions that were removed keep counting in the total, so it never goes backwards.
- ``timer_lag`` keeps the largest lateness of the one timer (when it ran - when it was due) over the
  last seconds: a stall of this process shows there, whatever its cause (scheduling, a long GC).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import heapq
import ipaddress
import logging
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bfd.gaps import GAP_WINDOW_S, RollingMax
from bfd.packet import DecodeError, DropReason, decode
from bfd.session import BfdSession, Dropped, Send, SessionConfig, SessionKey, SessionTable, StateChanged

log = logging.getLogger(__name__)

PORT_SINGLE_HOP = 3784
PORT_MULTIHOP = 4784
IP_TTL = 2
IP_PKTINFO = 8
IP_RECVTTL = 12
IP_FREEBIND = 15
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_FREEBIND = 78
SO_BINDTODEVICE = 25
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS too: a struct timespec (CLOCK_REALTIME) with each datagram
TOS_CS6 = 0xC0
#: One timer wake-up sends every periodic packet due within this window (each session caps it at
#: 10 % of its interval). With epoll's millisecond timeouts a wake-up is ~1 ms late anyway.
TX_COALESCE_S = 0.001
#: While the timer is due within this, the receive sockets are read by the timer, not by a reader.
RX_BATCH_S = 0.002
_TIMESPEC = struct.Struct("=qq")
_INT = struct.Struct("=i")
_YOUR_DISCRIMINATOR = struct.Struct("!I")  # at byte 8 of a control packet (RFC 5880 §4.1)
_SOL_SOCKET = socket.SOL_SOCKET
_IPPROTO_IP = socket.IPPROTO_IP
_IPPROTO_IPV6 = socket.IPPROTO_IPV6


@dataclass(slots=True)
class _Entry:
    key: SessionKey
    session: BfdSession
    sock: socket.socket | None
    min_ttl: int
    interface: str | None
    #: The entry's live item in the transport's heap (None: not on it); older items are stale.
    slot: tuple[float, int, _Entry] | None = field(default=None, repr=False)
    live: bool = True


class Transport:
    def __init__(self, on_state: Callable[[SessionKey, BfdSession, StateChanged], None],
                 tx_coalesce_s: float = TX_COALESCE_S) -> None:
        self.loop = asyncio.get_running_loop()
        self._clock = self.loop.time
        self.tx_coalesce_s = tx_coalesce_s
        self.on_state = on_state
        self.table = SessionTable()
        self.entries: dict[SessionKey, _Entry] = {}
        self.rx_socks: dict[tuple[int, bool], socket.socket] = {}
        self.dropped: Counter[str] = Counter()
        self._tx_late_removed = 0
        self.tx_errors = 0
        self.timer_lag = RollingMax(GAP_WINDOW_S)
        self._heap: list[tuple[float, int, _Entry]] = []
        #: Local discriminator -> entry (the session table finds sessions; this finds their sockets).
        self._by_discr: dict[int, _Entry] = {}
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._in_timer = False
        #: Whether the receive sockets are watched by loop readers (else the timer reads them).
        self._readers_on = True
        #: Timer wake-ups and reader wake-ups (how well the batching works).
        self.timer_wakeups = 0
        self.reader_wakeups = 0
        #: Source address as recvmsg returns it -> canonical text (the session table's key).
        self._peer_names: dict[str, str] = {}

    def timer_lag_now(self, now: float) -> float:
        """The rolling maximum of the timer's lateness, or its current lateness if it is overdue now."""
        overdue = now - self._timer_at if self._timer_at is not None and not self._in_timer else 0.0
        return max(self.timer_lag.max(now), overdue)

    @property
    def tx_late(self) -> int:
        return self._tx_late_removed + sum(e.session.tx_late for e in self.entries.values())

    # --- sessions ------------------------------------------------------------------------------------
    def add(self, key: SessionKey, cfg: SessionConfig, *, interface: str | None, min_ttl: int) -> BfdSession:
        fam = socket.AF_INET6 if ":" in key.peer else socket.AF_INET
        self._rx_socket(fam, key.multihop)
        s = BfdSession(cfg, self.loop.time(), tx_early_s=self.tx_coalesce_s)
        entry = _Entry(key, s, None, min_ttl, interface)
        entry.sock = self._tx_socket(key, fam, interface)
        self.entries[key] = entry
        self._by_discr[cfg.local_discriminator] = entry
        self.table.add(key, s, min_ttl)
        self._schedule(entry)
        return s

    def remove(self, key: SessionKey) -> None:
        e = self.entries.pop(key, None)
        if e is None:
            return
        e.live = False
        e.slot = None
        if self._by_discr.get(e.session.cfg.local_discriminator) is e:
            del self._by_discr[e.session.cfg.local_discriminator]
        self.table.remove(key)
        self._tx_late_removed += e.session.tx_late
        if e.sock is not None:
            e.sock.close()

    def close(self) -> None:
        for key in list(self.entries):
            self.remove(key)
        for s in self.rx_socks.values():
            if self._readers_on:
                self.loop.remove_reader(s.fileno())
            s.close()
        self.rx_socks.clear()
        if self._timer is not None:
            self._timer.cancel()

    # --- sockets -----------------------------------------------------------------------------------
    def _rx_socket(self, fam: int, multihop: bool) -> socket.socket:
        k = (fam, multihop)
        if k in self.rx_socks:
            return self.rx_socks[k]
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", PORT_MULTIHOP if multihop else PORT_SINGLE_HOP))
        s.setblocking(False)
        self.rx_socks[k] = s
        if self._readers_on:
            self.loop.add_reader(s.fileno(), self._on_readable, s, multihop)
        return s

    def _on_readable(self, sock: socket.socket, multihop: bool) -> None:
        self.reader_wakeups += 1
        self._drain(sock, multihop)

    def _set_readers(self, on: bool) -> None:
        """Watch the receive sockets with loop readers, or leave them to the timer (RX_BATCH_S)."""
        if on == self._readers_on:
            return
        self._readers_on = on
        for (_fam, multihop), s in self.rx_socks.items():
            if on:
                self.loop.add_reader(s.fileno(), self._on_readable, s, multihop)
            else:
                self.loop.remove_reader(s.fileno())

    def _tx_socket(self, key: SessionKey, fam: int, interface: str | None) -> socket.socket:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, IP_TTL, 255)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, TOS_CS6)
            s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, TOS_CS6)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        if interface and not key.multihop:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        for _ in range(64):
            try:
                s.bind((key.local, random.randint(49152, 65535)))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        s.connect((key.peer, PORT_MULTIHOP if key.multihop else PORT_SINGLE_HOP))
        s.setblocking(False)
        return s

    # --- receive -----------------------------------------------------------------------------------
    def _realtime_offset(self) -> float:
        """The loop's clock minus CLOCK_REALTIME, read back to back (retried if a preemption
        separated the reads: an offset off by a stall would move arrival times, and detection
        counts from them)."""
        for _ in range(3):
            r0 = time.time()
            m = self._clock()
            r1 = time.time()
            if r1 - r0 < 1e-4:
                break
        return m - (r0 + r1) / 2

    def _drain(self, sock: socket.socket, multihop: bool) -> None:
        recvmsg = sock.recvmsg
        clock = self._clock
        offset = None
        while True:
            try:
                data, anc, _flags, src = recvmsg(512, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.dropped["socket_error"] += 1
                return
            if offset is None:
                # Kernel stamps are CLOCK_REALTIME: one offset to the loop's clock per drain.
                offset = self._realtime_offset()
            self._receive(data, anc, src, multihop, clock(), offset)

    def _receive(self, data: bytes, anc: list, src: tuple, multihop: bool, now: float | None = None,
                 offset: float | None = None) -> None:
        if now is None:
            now = self._clock()
        if offset is None:
            offset = self._realtime_offset()
        ttl = 0
        pktinfo: tuple[int, bytes] | None = None
        arrived: float | None = None
        for level, kind, cdata in anc:
            if kind == SO_TIMESTAMPNS and level == _SOL_SOCKET:
                if len(cdata) >= 16:
                    sec, nsec = _TIMESPEC.unpack_from(cdata)
                    arrived = sec + nsec * 1e-9 + offset
            elif (kind == IP_TTL and level == _IPPROTO_IP) or (kind == IPV6_HOPLIMIT and level == _IPPROTO_IPV6):
                ttl = _INT.unpack_from(cdata)[0]
            elif (kind == IP_PKTINFO and level == _IPPROTO_IP) or (kind == IPV6_PKTINFO and level == _IPPROTO_IPV6):
                pktinfo = (level, cdata)
        peer = self._peer_names.get(src[0])
        if peer is None:  # canonical text form, once per source (ipaddress costs ~3 % of the process)
            peer = str(ipaddress.ip_address(src[0].split("%")[0]))
            if len(self._peer_names) < 4096:  # bounded: a flood of spoofed sources must not grow it
                self._peer_names[src[0]] = peer
        if len(data) >= 24:
            # The steady state first: the same bytes as the session's last steady packet (bfd.session
            # on_repeat) need no decoding, once demultiplexed as the decoded packet would be (§6.3).
            your = _YOUR_DISCRIMINATOR.unpack_from(data, 8)[0]
            if your:
                s, _reason = self.table.lookup_discriminator(your, peer, multihop, ttl)
                if s is not None and s.on_repeat(data, now, arrived):
                    # Nothing else changed, so no actions; and the deadline only moved later (detection
                    # counts from this arrival), so the heap item at the old one wakes the session
                    # early at worst, and on_timer never detects early: no _schedule needed.
                    return
        try:
            p = decode(data)
        except DecodeError as exc:
            self.dropped[exc.reason.value] += 1
            return
        if p.your_discriminator:  # §6.3: by Your Discriminator, no key needed
            s, reason = self.table.lookup_discriminator(p.your_discriminator, peer, multihop, ttl)
        else:
            dst = ""
            if pktinfo is not None:
                dst = socket.inet_ntop(socket.AF_INET, pktinfo[1][8:12]) if pktinfo[0] == _IPPROTO_IP else \
                    socket.inet_ntop(socket.AF_INET6, pktinfo[1][:16])
            s, reason = self.table.lookup(p, SessionKey(peer, dst, "", multihop), ttl)
        if s is None:
            self.dropped[(reason or DropReason.NO_SESSION).value] += 1
            return
        e = self._by_discr.get(s.cfg.local_discriminator)
        if e is None:
            return
        actions = s.on_packet(p, data, now, arrived)
        if actions:
            self._apply(e, actions)
        self._schedule(e)

    # --- actions and timers ------------------------------------------------------------------------
    def _apply(self, e: _Entry, actions: list) -> None:
        if not e.live:
            return
        for a in actions:
            if type(a) is Send:
                try:
                    if e.sock is not None:
                        e.sock.send(a.data)
                except OSError:
                    self.tx_errors += 1
            elif isinstance(a, StateChanged):
                self.on_state(e.key, e.session, a)
            elif isinstance(a, Dropped):
                self.dropped[a.reason.value] += 1

    def _schedule(self, e: _Entry) -> None:
        """Put the session's next deadline on the heap, unless its live item already says it."""
        if not e.live:
            return
        d = e.session.next_deadline()
        if d is None:
            e.slot = None
            return
        slot = e.slot
        if slot is not None and slot[0] == d:
            return
        self._seq += 1
        item = (d, self._seq, e)
        e.slot = item
        heapq.heappush(self._heap, item)
        if self._in_timer:
            return  # _on_timer arms the timer on the heap's earliest entry when it is done
        if self._timer_at is None or d < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = d
            self._timer = self.loop.call_at(d, self._on_timer)

    def _on_timer(self) -> None:
        self.timer_wakeups += 1
        if self._timer_at is not None:
            now = self._clock()
            self.timer_lag.add(now, max(0.0, now - self._timer_at))
        self._timer = None
        self._timer_at = None
        self._in_timer = True
        try:
            self._run_due()
        finally:
            self._in_timer = False
        self._arm()

    def _run_due(self) -> None:
        # Packets that already arrived count before any timeout is declared.
        for (_fam, multihop), s in self.rx_socks.items():
            self._drain(s, multihop)
        now = self._clock()
        limit = now + self.tx_coalesce_s
        heap = self._heap
        due: list[_Entry] = []
        while heap and heap[0][0] <= limit:
            item = heapq.heappop(heap)
            e = item[2]
            if e.slot is item:  # else stale: the deadline moved, and its new item is in the heap
                e.slot = None
                due.append(e)
        for e in due:
            if not e.live:
                continue
            actions = e.session.on_timer(now)
            if actions:
                self._apply(e, actions)
            self._schedule(e)

    def _arm(self) -> None:
        """Arm the one timer on the earliest live deadline. Every live deadline has a heap item
        (each change goes through _schedule); stale items on top are dropped here."""
        heap = self._heap
        while heap:
            item = heap[0]
            if item[2].slot is not item:
                heapq.heappop(heap)
                continue
            d = item[0]
            if self._timer is None or self._timer_at is None or d < self._timer_at:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = d
                self._timer = self.loop.call_at(d, self._on_timer)
            # Only ever moved earlier until it fires: while the readers are off, the timer stays
            # within RX_BATCH_S of this decision, and it reads the sockets first thing.
            self._set_readers(self._timer_at - self._clock() > RX_BATCH_S)
            return
        self._set_readers(True)

    def admin(self, key: SessionKey, down: bool) -> None:
        e = self.entries.get(key)
        if e is None:
            return
        now = self.loop.time()
        self._apply(e, e.session.admin_down(now) if down else e.session.admin_up(now))
        self._schedule(e)


def interfaces_by_address() -> dict[str, str]:
    """Every local address -> its interface's name, for ``SO_BINDTODEVICE`` of single-hop sessions.

    Why not a netlink dump: this runs on the BFD process's loop whenever the daemon adds sessions
    (at start and on every reload), while other sessions may be Up at 10 ms x 3. pyroute2's dump ran
    in a worker thread that the loop waited for: 290 ms the first time (importing pyroute2) and
    ~10 ms afterwards, long enough for every peer to declare us dead on a reload that adds one
    customer. The kernel answers the same question in microseconds through two stdlib paths, so the
    loop never waits: ``SIOCGIFCONF`` (every IPv4 address with its label, which is the interface's
    name unless an alias label was set: the part before ``:`` is the device) and
    ``/proc/net/if_inet6`` (every IPv6 address with its device). Both read the namespace this
    process runs in, which is the one its sockets live in.
    """
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        out.update(_ipv4_by_ioctl())
    with contextlib.suppress(OSError):
        out.update(_ipv6_from_proc())
    return out


SIOCGIFCONF = 0x8912
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: 16-byte name + 24-byte union


def _ipv4_by_ioctl() -> dict[str, str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        size = 64 * _IFREQ_SIZE
        while True:
            buf = array.array("B", bytes(size))
            addr, _ = buf.buffer_info()
            used = struct.unpack("iL", fcntl.ioctl(s.fileno(), SIOCGIFCONF, struct.pack("iL", size, addr)))[0]
            if used < size:  # the kernel filled less than offered: nothing was left out
                break
            size *= 4
        raw = buf.tobytes()[:used]
    out: dict[str, str] = {}
    for off in range(0, used, _IFREQ_SIZE):
        name = raw[off:off + 16].split(b"\0", 1)[0].decode(errors="replace").split(":", 1)[0]
        ip = socket.inet_ntop(socket.AF_INET, raw[off + 20:off + 24])  # sockaddr_in.sin_addr
        out.setdefault(ip, name)
    return out


def _ipv6_from_proc() -> dict[str, str]:
    out: dict[str, str] = {}
    with open("/proc/net/if_inet6") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6 or len(parts[0]) != 32:
                continue
            out.setdefault(str(ipaddress.IPv6Address(bytes.fromhex(parts[0]))), parts[5])
    return out
