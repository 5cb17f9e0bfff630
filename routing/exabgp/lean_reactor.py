"""Start ExaBGP 5.0 with a lean reactor pass: a pass visits only the sessions that have something to do.

Theory of operation
-------------------
**Why.** ExaBGP 5's reactor (``exabgp/reactor/loop.py``, ``Reactor.run``) starts every pass with
``peers = self.active_peers()`` and gives *every* session a turn (``Peer.run``: a generator resumed,
a ``poll(0)`` on its socket, its timers), then sleeps in ``poll()`` on all sockets and the API pipes.
It wakes at least every ``exabgp.reactor.speed`` / 100 s and on every message a peer sends, so idle it
costs N sessions x (1 / timeout + N / (hold / 3)) turns a second: 8 % of a core with 200 sessions at
hold 90 s, and the keepalive-driven part grows with N\u00b2 (``benchmarks/RESULTS.md``, "idle CPU").
The sockets ``poll()`` reported ready are thrown away by the next pass's ``active_peers()``.

**What a pass visits.** :class:`PassPlanner` decides, at the start of each pass, between a *full
sweep* (every session ``active_peers()`` returns: ExaBGP's own behaviour) and a *lean pass*, which
visits a session only when

(a) it is not ESTABLISHED (connecting, opening, backing off: every pass, exactly as today), or it is
    being torn down, stopped or re-established (``Peer._teardown``);
(b) its socket was reported readable by the last ``poll()`` (``Reactor._wait_for_io``, fd -> session
    through ``Peer.socket()``; an fd we cannot place makes the pass a full sweep);
(c) its last ``Peer.run()`` returned something other than ``ACTION.LATER`` (it has more to do now);
(d) it has queued work: outgoing RIB changes (``rib.outgoing.pending()``), operational, route-refresh
    or End-of-RIB messages queued by the API, or a reload pending (``Peer._neighbor``); and a session
    that had any of (a), (c) or (d) gets one more turn on the next pass, because ExaBGP's session
    generator keeps some work in locals the reactor cannot see (the End-of-RIB it sends on the turn
    after its initial routes are out, a route-refresh still being written).

Whether a session needs a turn ((a), (c), (d)) is read right after each of its turns (``Peer.run``):
between two full sweeps that is the only time it can change, because everything else that changes
sessions (commands, scheduled work, signals, accepts) makes the next pass a full sweep. So a lean pass
costs what it visits, not one check per session (checking every session on every pass cost more
than the turns it visited at 200 sessions on CPython, py-spy; at 1,000 sessions on PyPy removing it
took the idle process from ~19 % to ~10 % of a core, ``benchmarks/RESULTS.md``).

A full sweep happens on the first pass after each ``sweep_s``-aligned boundary of ``time.time()``
(so at most ``sweep_s`` plus one reactor timeout apart), on the first pass, and on the pass after
anything that may have changed sessions behind the planner's back: an API command processed
(``api.process``), work the asynchronous scheduler ran (announcements are applied there), a signal
(``reload``, ``restart``, ``shutdown``, ``_pending_adjribout``), a connection accepted
(``handle_connection``), or ``poll()`` reporting an error or hang-up (ExaBGP's ``_prevent_spin``).
When in doubt, sweep.

**Why keepalives and hold timers stay right.** ExaBGP's timers count whole seconds of
``time.time()`` (``bgp/timer.py``: ``int(time.time())``): a keepalive or a hold-timer expiry can only
fall due when the wall-clock second changes. With ``sweep_s`` = 1 s the sweep comes on the first
pass of each new second, which is the very pass on which ExaBGP's own reactor would have sent that
keepalive (at most one reactor timeout after the second starts). A smaller ``sweep_s`` only sweeps
more often; a larger one would make keepalives late, so 1 s is the cap (pop-router's
``exabgp.lean_sweep_s``, at most a third of the shortest hold time it allows, 3 s). Messages from a
peer (b), commands (full sweep) and sessions being set up (a) never wait for a sweep.

**How it runs.** The daemon starts ``<ExaBGP's interpreter> /abs/path/lean_reactor.py <exabgp
args>``: the interpreter is the one from the ExaBGP console script's ``#!`` line (PyPy's venv holds
only ExaBGP and the standard library, not pop-router), so this file imports nothing but the standard
library and ExaBGP, and runs as a script. A script's directory is put first on ``sys.path``; it is
removed before ExaBGP is imported, so this package's modules (``conf``, ``messages``...) can never
shadow anything. A ``PYTHONPATH`` directory or ``sitecustomize`` would also reach the relay process
ExaBGP spawns (it inherits the environment), and a ``.pth`` file would mean writing into the venv.
After patching, ExaBGP's own entry point (``exabgp.application.main.main``, what the ``exabgp``
console script calls) runs with the same arguments and environment.

**API output, batched.** ExaBGP writes and flushes every message to the relay on its own
(``Processes.write``): a system call per UPDATE. The pipe to each API process is wrapped
(:class:`DeferredFlush`, installed by the patched ``Processes._start``) so that the flush waits: the
patched ``_wait_for_io`` flushes before the reactor sleeps, and while it stays busy (``poll(0)``)
once the oldest waiting message is :data:`MAX_HOLD_S` old (ExaBGP's own replies to commands
included).

**API input, read when there is some.** ExaBGP looks for commands from its API processes on every
pass (``Processes.received``: a ``waitpid``, a new ``poll`` object and a ``poll(0)`` per process per
pass, 5-6 % of its CPU in a full-table ingest, vmprof on PyPy). The API pipes are in the reactor's own
``poll()`` set, so the patched ``_wait_for_io`` notes when one is readable; ``received`` then runs on
the pass after that, on every full sweep (at least once a second) and whenever the planner is off. A
pipe that hangs up makes ExaBGP's ``_prevent_spin`` run, which makes the next pass a full sweep, so a
dead relay is found as before. Commands are not delayed on an idle ExaBGP: its ``poll()`` returns
because the pipe became readable and the very next pass reads it.

**UPDATEs to JSON, the same text in fewer steps** (:class:`LeanUpdateJSON`). ExaBGP's encoder for a
received UPDATE (``JSON.update``) was ~27 % of its CPU in a full-table ingest on PyPy: per message it
asks the system for the host name, groups the NLRI through a ``Family`` object each, renders every
prefix through generic helpers, and writes the AS_PATH through the standard ``json`` module (pure
Python on PyPy). :class:`LeanUpdateJSON` writes the same characters for the messages a table is made
of (plain IPv4/IPv6 unicast NLRI without path identifiers, any attributes) and hands anything else
(EOR, add-path, labels, VPN, flowspec, the ``negotiated``/``header``/``body`` options) to ExaBGP's own
method. Before it is installed it encodes sample UPDATEs both ways and is left out, with a line saying
so, if a single character differs (ExaBGP's format is what ``routing/exabgp/messages.py`` parses);
``tests/unit/test_lean_reactor.py`` compares the two on generated UPDATEs. The one value it reads less
often is the host name (once per process: ExaBGP prints it, nothing reads it).

**BGP messages read from a buffer.** ExaBGP reads each message with four system calls: a ``poll(0)``
and a ``recv`` of exactly the 19-byte header, then the same for the body (``Connection._reader``): a
million for a 1M-prefix table at 4 prefixes per UPDATE. :func:`make_buffered_reader` takes what the
socket holds (up to :data:`READ_AHEAD`) into a buffer of the connection and serves headers and bodies
from it; it polls and reads the socket only when the buffer lacks the bytes asked for, exactly where
ExaBGP's own reader would wait. So a session says it has nothing to read (and its reactor pass ends
with ``ACTION.LATER``) only when the socket is drained and the buffer holds less than a message, and
the bytes that complete it make the socket readable again: no message can wait in the buffer
unseen. Errors, end of stream and timeouts are raised as ExaBGP's reader raises them; with
``exabgp.debug.defensive`` (random errors injected for testing) ExaBGP's reader runs unchanged.

**Guards.** The patch needs ExaBGP 5.0.x internals: the version, the methods it wraps, and the lines
of ``Reactor.run`` and ``Peer`` it relies on (checked in their source). If any is missing, nothing is
patched, one line saying why goes to stderr (the daemon logs it) and ExaBGP runs unpatched. If the
planner ever fails while running, it says so once and every later pass is a full sweep.

**Settings and report** (environment, set by ``routing/exabgp/speaker.py``): ``POP_ROUTER_LEAN_SWEEP_S``
(default 1, range 0.01-1); ``POP_ROUTER_LEAN_STATS``: a file where the launcher writes, at start and
then at most every ``STATS_PERIOD_S`` during a full sweep, a JSON document (active or not and why,
passes and turns by kind, why full sweeps happened), read by ``pop-router show status``.

**UPDATEs passed on undecoded** (:class:`RawUpdates`, only with ``POP_ROUTER_RAW_UPDATES=1``, which the
daemon sets for ``exabgp.updates: raw``). Decoding a received UPDATE into ExaBGP's objects and encoding
them as JSON was most of ExaBGP's CPU in a full-table ingest (1M prefixes at 4 per UPDATE, ExaBGP alone
to a do-nothing API process: 28.0 s, 10.8 s without the decoding, this machine, 2026-12-02). With it,
``Update.unpack_message`` returns an empty :class:`RawUpdate` holding the body for every UPDATE received
on a session that negotiated four-octet AS numbers and no ADD-PATH, and ``JSON.update`` writes it as
``U <peer address> <hex of the body>``; the daemon parses it (``routing/exabgp/wire.py``), including the
RFC 7606 error handling ExaBGP no longer does for these messages. Any other session, and every message
ExaBGP sends, goes through ExaBGP's decoder as before. So the daemon can ask for the NOTIFICATION of
a session reset (UPDATE Message Error), a ``teardown`` code of ``TEARDOWN_UPDATE_ERROR`` + subcode
becomes NOTIFICATION 3/subcode instead of Cease/code (``Notify.__init__``).

Runs under Python 3.9 (Debian 12's PyPy): no syntax or library newer than that.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Hashable
from typing import Any

ENV_SWEEP_S = "POP_ROUTER_LEAN_SWEEP_S"
ENV_STATS = "POP_ROUTER_LEAN_STATS"
ENV_RAW_UPDATES = "POP_ROUTER_RAW_UPDATES"
#: ``neighbor X teardown <this + subcode>`` sends NOTIFICATION UPDATE Message Error / subcode.
TEARDOWN_UPDATE_ERROR = 0x300
DEFAULT_SWEEP_S = 1.0
MIN_SWEEP_S = 0.01
#: ExaBGP's timers count whole seconds: a 1 s sweep aligned on them sends keepalives on time.
MAX_SWEEP_S = 1.0
#: How often (at most) the report file is rewritten.
STATS_PERIOD_S = 2.0
SUPPORTED_VERSIONS = ("5.0.",)
LOG_PREFIX = "pop-router lean reactor"

#: Attribute names this module stores on ExaBGP's objects.
_STATE = "_pop_lean"
_LAST_ACTION = "_pop_lean_action"
_KEY = "_pop_lean_key"

#: Methods the patch wraps or calls, by ``(module, class)``.
REQUIRED_METHODS = {
    ("exabgp.reactor.loop", "Reactor"): (
        "__init__", "run", "active_peers", "_wait_for_io", "_prevent_spin", "_pending_adjribout", "reload",
        "restart", "shutdown", "handle_connection"),
    ("exabgp.reactor.peer", "Peer"): ("__init__", "run", "socket", "stopping", "_main"),
    ("exabgp.reactor.asynchronous", "ASYNC"): ("run", "ready"),
    ("exabgp.reactor.api", "API"): ("process",),
    ("exabgp.rib.outgoing", "OutgoingRIB"): ("pending",),
    ("exabgp.reactor.api.processes", "Processes"): ("_start", "write", "received"),
    ("exabgp.reactor.network.connection", "Connection"): ("_reader", "reader", "reading", "close", "session"),
}
#: Source lines the patch relies on: how a pass starts, runs a session, reads commands and waits.
REQUIRED_SOURCE = {
    ("exabgp.reactor.loop", "Reactor", "run"): (
        "peers = self.active_peers()", "action = peer.run()", "elif action == ACTION.LATER:",
        "self.api.process(self, service, command)", "self.asynchronous.run()",
        "for io in self._wait_for_io(sleep):", "if self._pending_adjribout():",
        "for service, command in self.processes.received():"),
    ("exabgp.reactor.loop", "Reactor", "active_peers"): (
        "for key, peer in self._peers.items():", "if peer.stopping():",
        "if peer.neighbor['passive'] and not peer.proto:"),
    ("exabgp.reactor.peer", "Peer", "__init__"): ("self._teardown = None", "self._neighbor = None"),
    ("exabgp.reactor.api.processes", "Processes", "_start"): (
        "self._process[process] = subprocess.Popen(", "stdin=subprocess.PIPE,"),
    ("exabgp.reactor.api.processes", "Processes", "write"): (
        "self._process[process].stdin.write(", "self._process[process].stdin.flush()"),
    ("exabgp.reactor.loop", "Reactor", "_wait_for_io"): (
        "for fd, event in self._poller.poll(sleeptime):", "self._prevent_spin()"),
    ("exabgp.reactor.network.connection", "Connection", "_reader"): (
        "if self.defensive and random.randint(0, 2):", "while not self.reading():",
        "read = self.io.recv(number)", "raise LostConnection(", "if exc.args[0] in error.block:"),
    ("exabgp.reactor.network.connection", "Connection", "reader"): (
        "for header in self._reader(Message.HEADER_LEN):", "for body in self._reader(number):"),
    ("exabgp.reactor.peer", "Peer", "_main"): (
        "if self._neighbor:", "self.neighbor.messages", "self.neighbor.refresh", "self.neighbor.eor",
        "elif send_eor:", "yield ACTION.LATER"),
}


class DeferredFlush:
    """ExaBGP's pipe to an API process (the ``stdin`` of its ``Popen``), whose ``flush`` waits until
    the reactor is about to sleep, or until the oldest unflushed message is :data:`MAX_HOLD_S` old.

    Why: ExaBGP writes each message to the relay and flushes it (``Processes.write``): one ``write``
    system call per UPDATE, ~10 % of ExaBGP's CPU in a full-table ingest on CPython (py-spy, issue
    12) and more of it on PyPy, where the Python around it is cheaper, plus one wake-up of the relay
    per line. Flushing once per reactor pass is not enough: while UPDATEs keep arriving ExaBGP reads
    one message per session per pass. Here ``flush`` only notes when data started waiting;
    :func:`flush_pipes` runs before every ``poll()`` of the reactor (the patched ``_wait_for_io``)
    and writes when the reactor will actually wait (nothing left to do: an idle PoP sees each message
    at once) or when the oldest message has waited ``MAX_HOLD_S``, so a busy ExaBGP still delivers a
    session's state change within a few milliseconds. The pipe's buffer (8 KiB) also flushes itself
    when full. Everything else (``close`` flushes first, ``fileno``) is the stream's own."""

    __slots__ = ("clock", "pending", "since", "stream")

    def __init__(self, stream: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.pending = False
        self.since = 0.0

    def write(self, data: bytes) -> int:
        return self.stream.write(data)

    def flush(self) -> None:
        if not self.pending:
            self.pending = True
            self.since = self.clock()

    def flush_now(self) -> None:
        if self.pending:
            self.pending = False
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


#: Longest a message to the relay waits in ExaBGP's buffer while its reactor stays busy.
MAX_HOLD_S = 0.005


def flush_pipes(processes: Any, idle: bool, now: float) -> None:
    """Flush the API pipes whose data must go now: all of them when the reactor is about to wait
    (``idle``), else those whose oldest message has waited :data:`MAX_HOLD_S` at ``now``. A failing
    flush keeps its data buffered for the next attempt, as ExaBGP's own ``write`` does; a dead helper
    is found by ExaBGP on its next write."""
    for proc in list(getattr(processes, "_process", {}).values()):
        stdin = getattr(proc, "stdin", None)
        if type(stdin) is DeferredFlush and stdin.pending and (idle or now - stdin.since >= MAX_HOLD_S):
            try:
                stdin.flush_now()
            except (OSError, ValueError):
                stdin.pending = True


# --------------------------------------------------------------------------------------------------
# UPDATEs to JSON (module docstring, "UPDATEs to JSON")
# --------------------------------------------------------------------------------------------------

#: Characters ``json.dumps`` writes as themselves (ensure_ascii: printable ASCII but ``"`` and ``\\``).
_JSON_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}
#: AS_PATH renderings kept, by the attribute's wire bytes (bounded by clearing).
ASPATH_CACHE_MAX = 4096


def json_string(text: str) -> str:
    """``json.dumps(text)`` for a ``str``, without the encoder's machinery when nothing needs escaping."""
    for ch in text:
        if ch not in _JSON_PLAIN:
            return json.dumps(text)
    return '"' + text + '"'


class LeanUpdateJSON:
    """ExaBGP's ``JSON.update`` text for received UPDATEs (module docstring). Built from ExaBGP's own
    classes (:meth:`from_exabgp`); :meth:`update` has ``JSON.update``'s signature and falls back to
    ``original`` for anything it does not render itself."""

    def __init__(self, original: Callable[..., str], inet: type, nopath: Any, announce: Any, withdraw: Any,
                 no_generation: Any, aspath: type, is_json_number: Callable[[str], bool]) -> None:
        self.original = original
        self.inet = inet
        self.nopath = nopath
        self.announce = announce
        self.withdraw = withdraw
        self.no_generation = no_generation
        self.aspath = aspath
        self.is_json_number = is_json_number
        self.host = ""
        self._families: dict[tuple[Any, Any], str] = {}
        self._aspaths: dict[bytes, str] = {}
        #: Messages rendered here and handed to ExaBGP's own encoder (the report's counts).
        self.rendered = 0
        self.delegated = 0

    @classmethod
    def from_exabgp(cls) -> LeanUpdateJSON:
        from exabgp.bgp.message import Action
        from exabgp.bgp.message.update.attribute import attributes as attributes_module
        from exabgp.bgp.message.update.attribute.aspath import ASPath
        from exabgp.bgp.message.update.nlri.inet import INET
        from exabgp.bgp.message.update.nlri.qualifier.path import PathInfo
        from exabgp.reactor.api.response.json import JSON

        return cls(JSON.update, INET, PathInfo.NOPATH, Action.ANNOUNCE, Action.WITHDRAW,
                   attributes_module.Attributes.NO_GENERATION, ASPath, attributes_module._is_json_number)

    def update(self, encoder: Any, neighbor: Any, direction: Any, update: Any, negotiated: Any, header: Any,
               body: Any) -> str:
        message = None if negotiated or header or body else self._message(update, encoder.compact)
        if message is None:
            self.delegated += 1
            return self.original(encoder, neighbor, direction, update, negotiated, header, body)
        self.rendered += 1
        if not self.host:
            self.host = socket.gethostname()
        router_id = neighbor["router-id"]
        rid = f', "router-id": "{router_id}"' if router_id else ""
        where = f', "direction": "{direction}", ' if direction else ", "
        return (f'{{ "exabgp": "{encoder.version}", "time": {encoder.time(time.time())}, "host" : "{self.host}", '
                f'"pid" : {os.getpid()}, "ppid" : {os.getppid()}, "counter": {encoder._counter(neighbor)}, '
                f'"type": "update", "neighbor": {{ "address": {{ "local": "{neighbor["local-address"]}", '
                f'"peer": "{neighbor["peer-address"]}" }}, "asn": {{ "local": {neighbor["local-as"]}, '
                f'"peer": {neighbor["peer-as"]} }}{rid} {where}"message": {{ {message} }} }} }}')

    def _message(self, update: Any, compact: bool) -> str | None:
        """``"update": {...}`` of ``JSON._update``, or None to leave the message to ExaBGP."""
        inet, nopath, announce, withdraw = self.inet, self.nopath, self.announce, self.withdraw
        plus: dict[str, dict[str, list[str]]] = {}
        minus: dict[str, list[str]] = {}
        last_nh: Any = None
        nh_text = "null"
        for nlri in update.nlris:
            if type(nlri) is not inet or nlri.path_info is not nopath:
                return None
            nh = nlri.nexthop
            if nh is not last_nh:  # an UPDATE's NLRI share one next-hop object
                last_nh = nh
                try:
                    nh_text = str(nh)
                except Exception:  # ExaBGP's own fallback
                    nh_text = "null"
            cidr = nlri.cidr
            packed = cidr._packed
            if cidr._ip is None and len(packed) == 4:
                # inet_ntop's text for IPv4, without a call into the C library per prefix
                cidr._ip = "%d.%d.%d.%d" % (packed[0], packed[1], packed[2], packed[3])  # noqa: UP031
            text = f'"{cidr.prefix()}"' if compact else f'{{ "nlri": "{cidr.prefix()}" }}'
            key = (nlri.afi, nlri.safi)
            family = self._families.get(key)
            if family is None:
                family = self._families[key] = f'"{key[0]} {key[1]}"'
            action = nlri.action
            if action == announce:
                by_nh = plus.get(family)
                if by_nh is None:
                    by_nh = plus[family] = {}
                texts = by_nh.get(nh_text)
                if texts is None:
                    texts = by_nh[nh_text] = []
                texts.append(text)
            if action == withdraw:
                texts = minus.get(family)
                if texts is None:
                    texts = minus[family] = []
                texts.append(text)
        if not plus and not minus:
            return None  # End-of-RIB or empty: ExaBGP's own
        parts = []
        if plus:
            parts.append('"announce": { ' + ", ".join(
                family + ": { " + ", ".join(f'"{nh}": [ {", ".join(texts)} ]' for nh, texts in by_nh.items()) + " }"
                for family, by_nh in plus.items()) + " }")
        if minus:
            parts.append('"withdraw": { ' + ", ".join(f"{family}: [ {', '.join(texts)} ]"
                                                      for family, texts in minus.items()) + " }")
        attributes = update.attributes
        if attributes:
            parts.insert(0, f'"attribute": {{ {self._attributes(attributes)} }}')
        return f'"update": {{ {", ".join(parts)} }}'

    def _attributes(self, attributes: Any) -> str:
        """``Attributes.json()``: the same text and the same cache on the object."""
        if attributes._json:
            return attributes._json
        out = []
        representation = attributes.representation
        for code in sorted(attributes.keys()):
            if code in self.no_generation:
                continue
            attribute = attributes[code]
            r = representation.get(code)
            if r is None:
                out.append(f'"attribute-0x{code:02X}-0x{attribute.FLAG:02X}": {json_string(str(attribute))}')
                continue
            how, _, name, _, presentation = r
            if how == "boolean":
                out.append(f'"{name}": {"true" if attributes.has(code) else "false"}')
            elif how == "string" or how == "inet":
                out.append(f'"{name}": {json_string(presentation % str(attribute))}')
            elif how == "list":
                value = self._aspath(attribute) if type(attribute) is self.aspath else attribute.json()
                out.append(f'"{name}": {presentation % value}')
            elif how == "multiple":
                for n in name:
                    value = attribute.json(n)
                    if value:
                        out.append(f'"{n}": {presentation % value}')
            else:
                value = presentation % str(attribute)
                out.append(f'"{name}": {value if self.is_json_number(value) else json_string(value)}')
        attributes._json = ", ".join(out)
        return attributes._json

    def _aspath(self, attribute: Any) -> str:
        """``ASPath.json()`` (``json.dumps`` of ``{position: {"element": NAME, "value": [ASNs]}}``),
        kept by the attribute's wire bytes: a table repeats a few AS paths in many UPDATEs."""
        raw = attribute.index
        if type(raw) is bytes:
            text = self._aspaths.get(raw)
            if text is not None:
                return text
        text = "{" + ", ".join(
            f'"{pos}": {{"element": {json_string(seg.NAME)}, "value": [{", ".join([str(int(a)) for a in seg])}]}}'
            for pos, seg in enumerate(attribute.aspath)) + "}"
        if type(raw) is bytes:
            if len(self._aspaths) >= ASPATH_CACHE_MAX:
                self._aspaths.clear()
            self._aspaths[raw] = text
        return text


#: Most bytes one ``recv`` takes into a connection's read buffer.
READ_AHEAD = 1 << 16
_READ_BUFFER = "_pop_lean_rbuf"


def make_buffered_reader(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Connection._reader`` served from a per-connection buffer (module docstring, "BGP messages read
    from a buffer"); ``original``: ExaBGP's, for ``exabgp.debug.defensive``."""

    from exabgp.logger import lazyformat, log
    from exabgp.logger.option import option
    from exabgp.reactor.network.error import LostConnection, NetworkError, NotConnected, TooSlowError, error
    from exabgp.util.errstr import errstr

    def _reader(self: Any, number: int) -> Any:
        if self.defensive:
            yield from original(self, number)
            return
        if not self.io:
            self.close()
            raise NotConnected("Trying to read on a closed TCP connection")
        if number == 0:
            yield b""
            return
        buf = self.__dict__.get(_READ_BUFFER)
        if buf is None:
            buf = self.__dict__[_READ_BUFFER] = bytearray()
        reported = ""
        while len(buf) < number:
            while not self.reading():
                yield b""
            try:
                read = self.io.recv(max(READ_AHEAD, number - len(buf)))
            # socket.timeout, not TimeoutError: on Python 3.9 (Debian 12's PyPy, which runs this) the two
            # are different classes, and ExaBGP's own reader catches socket.timeout.
            except socket.timeout as exc:  # noqa: UP041
                self.close()
                log.warning(lambda: f"{self.name()} {self.peer} peer is too slow", self.session())
                raise TooSlowError(f"Timeout while reading data from the network ({errstr(exc)})") from None
            except OSError as exc:
                if exc.args[0] in error.block:
                    message = (f"{self.name()} {self.peer} blocking io problem mid-way through reading a message "
                               f"{errstr(exc)}, trying to complete")
                    if message != reported:
                        reported = message
                        log.debug(lambda message=message: message, self.session())
                    yield b""
                    continue
                if exc.args[0] in error.fatal:
                    self.close()
                    raise LostConnection(f"issue reading on the socket: {errstr(exc)}") from None
                log.critical(lambda: f"{self.name()} {self.peer} undefined error reading on socket", self.session())
                raise NetworkError(f"Problem while reading data from the network ({errstr(exc)})") from None
            if not read:
                self.close()
                log.warning(lambda: f"{self.name()} {self.peer} lost TCP session with peer", self.session())
                raise LostConnection("the TCP connection was closed by the remote end")
            buf += read
            if len(buf) < number:
                yield b""
        data = bytes(buf[:number])
        del buf[:number]
        if option.logit.get("DEBUG", False):  # what log.debug itself checks first, without its arguments
            log.debug(lazyformat("received TCP payload", data), self.session())
        yield data

    _reader.__doc__ = original.__doc__
    return _reader


class SampleNegotiated:
    """What ExaBGP's UPDATE parser reads of a session (``Negotiated``), for parsing sample UPDATEs:
    4-byte ASNs, IPv4 and IPv6 unicast, no add-path."""

    asn4 = True
    aigp = False
    local_as = 65000
    peer_as = 64512
    nexthopself = None
    cached_wire = None
    cached_attributes = None
    msg_size = 4096

    def __init__(self) -> None:
        from exabgp.protocol.family import AFI, SAFI

        self.families = [(AFI.ipv4, SAFI.unicast), (AFI.ipv6, SAFI.unicast)]
        self.nexthop: list[Any] = []
        self.addpath = self

    def receive(self, afi: Any, safi: Any) -> bool:
        return False

    def send(self, afi: Any, safi: Any) -> bool:
        return False


def path_attribute(flags: int, code: int, data: bytes) -> bytes:
    """One path attribute on the wire (RFC 4271 §4.3), extended length when it needs it."""
    if len(data) > 255:
        return bytes([flags | 0x10, code]) + len(data).to_bytes(2, "big") + data
    return bytes([flags, code, len(data)]) + data


def update_wire(attributes: bytes, nlri: bytes = b"", withdrawn: bytes = b"") -> bytes:
    """An UPDATE message's body (no BGP header), as ExaBGP's ``Update.unpack_message`` takes it."""
    return (len(withdrawn).to_bytes(2, "big") + withdrawn + len(attributes).to_bytes(2, "big") + attributes + nlri)


def sample_updates() -> list[bytes]:
    """UPDATEs covering what the lean encoder renders itself: IPv4 announce and withdraw in one, AS_SET,
    every common attribute, a prefix of each length class, IPv6 through MP_REACH / MP_UNREACH."""
    nh4 = path_attribute(0x40, 3, bytes([10, 0, 1, 2]))
    base = (path_attribute(0x40, 1, b"\x00")
            + path_attribute(0x40, 2, b"\x02\x02" + (64512).to_bytes(4, "big") + (65001).to_bytes(4, "big")
                             + b"\x01\x02" + (64999).to_bytes(4, "big") + (64998).to_bytes(4, "big")))
    full = (base + nh4 + path_attribute(0x80, 4, (7).to_bytes(4, "big"))
            + path_attribute(0x40, 5, (200).to_bytes(4, "big"))
            + path_attribute(0x40, 6, b"") + path_attribute(0xC0, 8, bytes([0xFD, 0xE8, 0, 1, 0xFF, 0xFF, 0, 0]))
            + path_attribute(0xC0, 32, (64512).to_bytes(4, "big") * 3)
            + path_attribute(0xC0, 16, bytes([0, 2, 0xFD, 0xE8, 0, 0, 0, 7])))
    v4 = b"\x18\x40\x00\x01" + b"\x20\xc6\x33\x64\x01" + b"\x08\x0a" + b"\x00" + b"\x11\xc0\x00\x80"
    nh6 = bytes.fromhex("20010db8000000000000000000000001")
    v6 = b"\x30" + bytes.fromhex("20010db80001") + b"\x40" + bytes.fromhex("20010db800020000")
    mp_reach = path_attribute(0x80, 14, b"\x00\x02\x01\x10" + nh6 + b"\x00" + v6)
    mp_unreach = path_attribute(0x80, 15, b"\x00\x02\x01" + b"\x30" + bytes.fromhex("20010db80003"))
    return [
        update_wire(base + nh4 + path_attribute(0x80, 4, (5).to_bytes(4, "big")), v4),
        update_wire(full, v4, withdrawn=b"\x18\xcb\x00\x71"),
        update_wire(b"", withdrawn=b"\x18\xcb\x00\x71\x10\x0a\x63"),
        update_wire(base + mp_reach),
        update_wire(mp_unreach),
    ]


def compare_update_json(lean: LeanUpdateJSON, wires: list[bytes], compact: bool) -> str | None:
    """Encode each UPDATE with ExaBGP's ``JSON.update`` and with ``lean``; the first difference, or
    None. The time and the message counter are the only parts that may differ between two calls."""
    from exabgp.bgp.message.direction import Direction
    from exabgp.bgp.message.update import Update
    from exabgp.reactor.api.response.json import JSON

    class Neighbor(dict):  # what the encoders read of ExaBGP's Neighbor: its keys and uid
        uid = "pop-router-self-check"

    neighbor = Neighbor({"local-address": "10.0.1.1", "peer-address": "10.0.1.2", "local-as": 65000,
                         "peer-as": 64512, "router-id": "10.0.1.2"})
    encoder = JSON("5.0.0")
    encoder.compact = compact
    encoder.time = lambda _t: 0
    def parsed(wire: bytes) -> Any:
        return Update.unpack_message(wire, Direction.IN, SampleNegotiated())

    for wire in wires:
        for direction in ("in", None):
            theirs = lean.original(encoder, neighbor, direction, parsed(wire), None, "", "")
            encoder._count.pop(neighbor.uid, None)
            ours = lean.update(encoder, neighbor, direction, parsed(wire), None, "", "")
            encoder._count.pop(neighbor.uid, None)
            if ours != theirs:
                return f"differs from ExaBGP's for UPDATE {wire.hex()}: {ours!r} != {theirs!r}"
    return None


# --------------------------------------------------------------------------------------------------
# The decision (pure: time, sessions and facts in, the sessions to visit out)
# --------------------------------------------------------------------------------------------------

class PassPlanner:
    """Which sessions a reactor pass visits; one per reactor. Nothing here touches ExaBGP or a clock.

    Each pass: :meth:`plan`, with the sessions that need a turn (``attention``: (a), (c) or (d) held
    after their last turn, which is the only time those can change between full sweeps), returns
    None for a full sweep or the sessions to visit. Between passes the adapter reports what happened:
    :meth:`socket_ready` for every fd ``poll()`` said is readable (API pipes excluded),
    :meth:`request_full` for every event after which a full sweep is due. A lean pass costs what it
    visits: nothing here walks every session.
    """

    def __init__(self, sweep_s: float) -> None:
        self.sweep_s = sweep_s
        self._full_why: str | None = "start"
        self._last_full: float | None = None
        self._ready: list[int] = []
        self._followup: frozenset[Hashable] = frozenset()
        self.passes = {"full": 0, "lean": 0}
        self.turns = {"full": 0, "lean": 0}
        self.full_reasons: dict[str, int] = {}

    def request_full(self, why: str) -> None:
        """Make the next pass a full sweep (the first reason given is the one counted)."""
        if self._full_why is None:
            self._full_why = why

    def socket_ready(self, fd: int) -> None:
        self._ready.append(fd)

    def sweep_due(self, now: float) -> bool:
        """A new ``sweep_s``-aligned slot of wall-clock time began since the last full sweep (or the
        clock went back, or ``sweep_s`` passed)."""
        last = self._last_full
        if last is None or now < last or now - last >= self.sweep_s:
            return True
        return math.floor(now / self.sweep_s) != math.floor(last / self.sweep_s)

    def plan(self, now: float, attention: set[Hashable] | frozenset[Hashable],
             owner: Callable[[int], Hashable | None]) -> set[Hashable] | None:
        """None: this pass is a full sweep. Otherwise the sessions it visits: those in ``attention``,
        those in it at the previous pass (their follow-up turn) and those whose socket is readable.

        ``owner(fd)``: the session whose socket ``fd`` is, None if it cannot be told (a full sweep
        then).
        """
        why = self._full_why
        if why is None and self.sweep_due(now):
            why = "sweep"
        ready, self._ready = self._ready, []
        chosen: set[Hashable] = set()
        if why is None:
            for fd in ready:
                key = owner(fd)
                if key is None:
                    why = "unknown socket"
                    break
                chosen.add(key)
        followup, self._followup = self._followup, frozenset(attention)
        if why is not None:
            self._full_why = None
            self._last_full = now
            self.full_reasons[why] = self.full_reasons.get(why, 0) + 1
            self.passes["full"] += 1
            return None
        self.passes["lean"] += 1
        chosen |= attention
        chosen |= followup
        return chosen

    def visited(self, kind: str, turns: int) -> None:
        """How many sessions the pass (``full`` or ``lean``) really visited, for the report."""
        self.turns[kind] += turns

    def report(self) -> dict[str, Any]:
        return {"sweep_s": self.sweep_s, "passes": dict(self.passes), "turns": dict(self.turns),
                "full_reasons": dict(self.full_reasons)}


def sweep_from_env(environ: dict[str, str] | os._Environ[str]) -> tuple[float, str | None]:
    """(sweep_s, a complaint or None): ``POP_ROUTER_LEAN_SWEEP_S`` if it is a number in range."""
    text = environ.get(ENV_SWEEP_S)
    if text is None:
        return DEFAULT_SWEEP_S, None
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_SWEEP_S, f"{ENV_SWEEP_S}={text!r} is not a number; using {DEFAULT_SWEEP_S:g} s"
    if not MIN_SWEEP_S <= value <= MAX_SWEEP_S:
        return DEFAULT_SWEEP_S, (f"{ENV_SWEEP_S}={text!r} is outside {MIN_SWEEP_S:g}-{MAX_SWEEP_S:g} s; "
                                 f"using {DEFAULT_SWEEP_S:g} s")
    return value, None


# --------------------------------------------------------------------------------------------------
# The adapter: ExaBGP's objects -> the planner's questions
# --------------------------------------------------------------------------------------------------

def needs_turn(peer: Any, established: Any, later: int) -> bool:
    """(a), (c) or (d) of the module docstring, read from an ExaBGP ``Peer``."""
    if peer.fsm != established or peer._teardown is not None or peer._neighbor is not None:
        return True
    if peer.__dict__.get(_LAST_ACTION) != later:
        return True
    neighbor = peer.neighbor
    if neighbor.messages or neighbor.refresh or neighbor.eor:
        return True
    rib = neighbor.rib
    return rib is not None and rib.outgoing.pending()


class LeanPass:
    """One reactor's planner, the facts it is fed, and its report file."""

    def __init__(self, reactor: Any, sweep_s: float, stats_path: str | None, established: Any, later: int,
                 close: int, version: str, encoder: LeanUpdateJSON | None = None, encoder_problem: str = "",
                 raw: RawUpdates | None = None) -> None:
        self.reactor = reactor
        self.raw = raw
        self.encoder = encoder
        self.encoder_problem = encoder_problem
        #: An API pipe was readable at the last poll() (module docstring, "API input").
        self.api_readable = True
        self.api_reads = {"read": 0, "skipped": 0}
        self.planner = PassPlanner(sweep_s)
        self.stats_path = stats_path
        self.established = established
        self.later = later
        self.close = close
        self.version = version
        #: Sessions that need a turn, as of the end of their last turn (see :class:`PassPlanner`).
        self.attention: set[Hashable] = set()
        #: fd -> the Peer that last registered it with the reactor's poller (on ACTION.LATER).
        self.fd_owner: dict[int, Any] = {}
        self.failed: str | None = None
        self._stats_at = 0.0
        #: Seconds from the start of a pass to its poll(), by kind (the report's ``work_s``).
        self.work_s = {"full": 0.0, "lean": 0.0}
        self._pass: tuple[str, float] | None = None

    def api_turn(self) -> bool:
        """Whether this pass looks for commands: an API pipe was readable at the last poll(), the pass
        is a full sweep, or the planner is off."""
        due = self.api_readable or self.failed is not None or self._pass is None or self._pass[0] == "full"
        self.api_readable = False
        self.api_reads["read" if due else "skipped"] += 1
        return due

    def pass_done(self) -> None:
        """The pass reached its poll(): add what it took to ``work_s``."""
        if self._pass is not None:
            kind, started = self._pass
            self.work_s[kind] += time.perf_counter() - started
            self._pass = None

    def plan(self, every_session: Callable[[], set[Hashable]]) -> set[Hashable]:
        """This pass's sessions; ``every_session()``: ExaBGP's own ``active_peers()``, for a sweep."""
        if self.failed is not None:
            return every_session()
        try:
            started, now = time.perf_counter(), time.time()
            chosen = self.planner.plan(now, self.attention, self.owner)
            self._pass = ("lean" if chosen is not None else "full", started)
            if chosen is None:
                active = every_session()
                peers = self.reactor._peers
                for key in active:
                    peers[key].__dict__[_KEY] = key  # for owner() and after_turn(): a Peer does not know it
                self.planner.visited("full", len(active))
                if now - self._stats_at >= STATS_PERIOD_S:
                    self._stats_at = now
                    self.write_stats()
                return active
            chosen = {key for key in chosen if self.eligible(key)}
            self.planner.visited("lean", len(chosen))
            return chosen
        except Exception as exc:  # never take the reactor down: fall back to ExaBGP's behaviour
            self.failed = f"{type(exc).__name__}: {exc}"
            say(f"planner failed ({self.failed}); every pass is a full sweep from now on")
            self.write_stats()
            return every_session()

    def eligible(self, key: Hashable) -> bool:
        """ExaBGP's own ``active_peers()`` rule for one session (checked against its source): still
        configured, and a passive neighbour only once it has a connection or is on its way out."""
        peer = self.reactor._peers.get(key)
        if peer is None:
            self.attention.discard(key)
            return False
        return peer.stopping() or not (peer.neighbor["passive"] and not peer.proto)

    def after_turn(self, peer: Any, action: Any) -> None:
        """Called after every ``Peer.run()``: is the session still in need of a turn?"""
        peer.__dict__[_LAST_ACTION] = action
        key = peer.__dict__.get(_KEY)
        if key is None:  # a session no sweep has seen: sweep now rather than guess
            self.planner.request_full("unknown session")
            return
        if action == self.later:
            # Reactor.run registers this socket with its poller now: remember whose it is.
            fd = peer.socket()
            if fd != -1:
                self.fd_owner[fd] = peer
        if action != self.close and needs_turn(peer, self.established, self.later):
            self.attention.add(key)
        else:
            self.attention.discard(key)

    def owner(self, fd: int) -> Hashable | None:
        peer = self.fd_owner.get(fd)
        if peer is None or peer.socket() != fd:
            return None
        return peer.__dict__.get(_KEY)

    def write_stats(self) -> None:
        doc = {"active": self.failed is None, "exabgp": self.version, "pid": os.getpid(), "at": time.time(),
               **self.planner.report(), "work_s": {k: round(v, 3) for k, v in self.work_s.items()},
               "api_reads": dict(self.api_reads)}
        if self.encoder is not None:
            doc["update_json"] = {"lean": True, "rendered": self.encoder.rendered, "delegated": self.encoder.delegated}
        else:
            doc["update_json"] = {"lean": False, "reason": self.encoder_problem}
        if self.raw is not None:
            doc["raw_updates"] = self.raw.report()
        if self.failed is not None:
            doc["reason"] = f"planner failed: {self.failed}"
        if not write_stats(self.stats_path, doc):
            self.stats_path = None  # said once; the reactor runs on without a report


def write_stats(path: str | None, doc: dict[str, Any]) -> bool:
    """Replace the report file atomically (a reader never sees half of it); False (said) if it failed."""
    if not path:
        return True
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except OSError as exc:
        say(f"cannot write {path}: {exc.strerror}; no report from now on")
        return False
    return True


def say(line: str) -> None:
    print(f"{LOG_PREFIX}: {line}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# The patch
# --------------------------------------------------------------------------------------------------

def unsupported() -> str | None:
    """Why this ExaBGP cannot be patched, or None when every internal the patch needs is there."""
    import importlib

    try:
        version = importlib.import_module("exabgp.version").version
    except (ImportError, AttributeError) as exc:
        return f"cannot read ExaBGP's version ({exc})"
    if not version.startswith(SUPPORTED_VERSIONS):
        return f"ExaBGP {version} is not {'/'.join(v + 'x' for v in SUPPORTED_VERSIONS)}"
    try:
        for (module, cls), names in REQUIRED_METHODS.items():
            obj = getattr(importlib.import_module(module), cls)
            missing = [n for n in names if not callable(getattr(obj, n, None))]
            if missing:
                return f"ExaBGP {version}: {cls} has no {', '.join(missing)}"
        for (module, cls, method), lines in REQUIRED_SOURCE.items():
            source = inspect.getsource(getattr(getattr(importlib.import_module(module), cls), method))
            absent = [line for line in lines if line not in source]
            if absent:
                return f"ExaBGP {version}: {cls}.{method} no longer has {absent[0]!r}"
        peer_module = importlib.import_module("exabgp.reactor.peer")
        if not all(hasattr(peer_module.ACTION, a) for a in ("LATER", "CLOSE")) or \
                not hasattr(peer_module.FSM, "ESTABLISHED"):
            return f"ExaBGP {version}: no ACTION.LATER, ACTION.CLOSE or FSM.ESTABLISHED"
    except (ImportError, AttributeError, OSError, TypeError) as exc:
        return f"ExaBGP {version}: cannot inspect its reactor ({type(exc).__name__}: {exc})"
    return None


def install(sweep_s: float, stats_path: str | None) -> str:
    """Patch ExaBGP's reactor (call :func:`unsupported` first); returns ExaBGP's version."""
    from exabgp.reactor import peer as peer_module
    from exabgp.reactor.api.processes import Processes
    from exabgp.reactor.loop import Reactor
    from exabgp.version import version

    later, close, established = peer_module.ACTION.LATER, peer_module.ACTION.CLOSE, peer_module.FSM.ESTABLISHED
    run_code = Reactor.run.__code__
    originals = {name: getattr(Reactor, name) for name in REQUIRED_METHODS[("exabgp.reactor.loop", "Reactor")]}
    peer_run = peer_module.Peer.run
    processes_start, processes_received = Processes._start, Processes.received
    #: The UPDATE encoder, chosen when the first reactor is built: the self-check parses sample UPDATEs,
    #: and ExaBGP's parser logs, which it can only once its own entry point has set logging up.
    encoders: dict[str, Any] = {}

    def state_of(reactor: Any) -> LeanPass | None:
        return reactor.__dict__.get(_STATE)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        originals["__init__"](self, *args, **kwargs)
        try:
            attach(self)
        except Exception as exc:  # without its state the reactor behaves as ExaBGP's own
            say(f"not attached to the reactor, every pass is a full sweep: {type(exc).__name__}: {exc}")
            self.__dict__.pop(_STATE, None)

    def attach(self: Any) -> None:
        if not encoders:
            encoders["lean"], encoders["problem"] = install_update_json()
            if os.environ.get(ENV_RAW_UPDATES) == "1":
                encoders["raw"] = install_raw_updates()
        lean = LeanPass(self, sweep_s, stats_path, established, later, close, version, encoders["lean"],
                        encoders["problem"], encoders.get("raw"))
        # Per instance: the API handler and the scheduler belong to this reactor only.
        api_process, async_run, scheduler = self.api.process, self.asynchronous.run, self.asynchronous

        def process(*a: Any, **kw: Any) -> Any:
            lean.planner.request_full("api command")
            return api_process(*a, **kw)

        def run_scheduled(*a: Any, **kw: Any) -> Any:
            if not scheduler.ready():
                lean.planner.request_full("scheduled work")
            return async_run(*a, **kw)

        self.api.process = process
        self.asynchronous.run = run_scheduled
        self.__dict__[_STATE] = lean
        lean.write_stats()

    def active_peers(self: Any) -> Any:
        lean = state_of(self)
        # Only the pass of Reactor.run is planned; any other caller gets every session.
        if lean is None or sys._getframe(1).f_code is not run_code:
            return originals["active_peers"](self)
        return lean.plan(lambda: originals["active_peers"](self))

    def wait_for_io(self: Any, sleeptime: Any) -> Any:
        lean = state_of(self)
        if lean is not None:
            lean.pass_done()
        if self.processes is not None:  # messages leave before the reactor waits, or once MAX_HOLD_S old
            flush_pipes(self.processes, bool(sleeptime), time.monotonic())
            if lean is not None:  # the processes exist from the reactor's run on: their reads follow this pass
                self.processes.__dict__[_STATE] = lean
        api_fds = self.processes.fds if self.processes is not None else ()
        for fd in originals["_wait_for_io"](self, sleeptime):
            if lean is not None:
                if fd in api_fds:
                    lean.api_readable = True
                else:
                    lean.planner.socket_ready(fd)
            yield fd

    def full_after(name: str, why: str) -> Callable[..., Any]:
        original = originals[name]

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            lean = state_of(self)
            if lean is not None:
                lean.planner.request_full(why)
            return original(self, *args, **kwargs)

        wrapper.__name__ = name
        wrapper.__doc__ = original.__doc__
        return wrapper

    def run_peer(self: Any) -> Any:
        action = peer_run(self)
        lean = state_of(self.reactor)
        if lean is not None:
            lean.after_turn(self, action)
        return action

    def received(self: Any) -> Any:
        lean = self.__dict__.get(_STATE)
        return processes_received(self) if lean is None or lean.api_turn() else ()

    def start_process(self: Any, process: Any) -> Any:
        result = processes_start(self, process)
        proc = self._process.get(process)
        if proc is not None and proc.stdin is not None and type(proc.stdin) is not DeferredFlush:
            proc.stdin = DeferredFlush(proc.stdin)
        return result

    Reactor.__init__ = init
    Reactor.active_peers = active_peers
    Reactor._wait_for_io = wait_for_io
    for name, why in (("_prevent_spin", "poll error"), ("_pending_adjribout", "signal"), ("reload", "reload"),
                      ("restart", "restart"), ("shutdown", "shutdown"), ("handle_connection", "accept")):
        setattr(Reactor, name, full_after(name, why))
    peer_module.Peer.run = run_peer
    Processes._start = start_process
    Processes.received = received
    from exabgp.reactor.network.connection import Connection

    Connection._reader = make_buffered_reader(Connection._reader)
    return version


class RawUpdate:
    """Stands for a received UPDATE that ExaBGP did not decode; made a subclass of ExaBGP's ``Update``
    (with no routes and no attributes, so nothing in ExaBGP acts on it) by :func:`install_raw_updates`."""


class RawUpdates:
    """Counts what :func:`install_raw_updates` passed on and what it left to ExaBGP's decoder, and why."""

    def __init__(self) -> None:
        self.passed = 0
        self.decoded: dict[str, int] = {}
        self.problem = ""

    def report(self) -> dict[str, Any]:
        if self.problem:
            return {"active": False, "reason": self.problem}
        return {"active": True, "passed": self.passed, "decoded": dict(self.decoded)}


def install_raw_updates() -> RawUpdates:
    """Patch ``Update.unpack_message``, ``JSON.update`` and ``Notify.__init__`` (module docstring)."""
    raw = RawUpdates()
    try:
        from exabgp.bgp.message.direction import Direction
        from exabgp.bgp.message.notification import Notify
        from exabgp.bgp.message.update import Update
        from exabgp.bgp.message.update.attribute import Attributes
        from exabgp.reactor.api.response.json import JSON

        decode = Update.unpack_message  # bound to Update
        encode = JSON.update
        notify_init = Notify.__init__
        incoming = Direction.IN

        class Raw(RawUpdate, Update):
            def __init__(self, body: bytes) -> None:
                Update.__init__(self, [], Attributes())
                self.body = body

        def why_decoded(negotiated: Any) -> str:
            if not negotiated.asn4:
                return "no four-octet AS numbers"
            if negotiated.addpath._receive and any(negotiated.addpath._receive.values()):
                return "ADD-PATH"
            return ""

        def unpack_message(cls: Any, data: bytes, direction: Any, negotiated: Any) -> Any:
            if direction == incoming and negotiated is not None:
                why = why_decoded(negotiated)
                if not why:
                    raw.passed += 1
                    return Raw(bytes(data))
                raw.decoded[why] = raw.decoded.get(why, 0) + 1
            return decode(data, direction, negotiated)

        def update(self: Any, neighbor: Any, direction: Any, update: Any, negotiated: Any, header: Any,
                   body: Any) -> str:
            if isinstance(update, RawUpdate):
                return f"U {neighbor['peer-address']} {update.body.hex()}"
            return encode(self, neighbor, direction, update, negotiated, header, body)

        def init(self: Any, code: int, subcode: int, data: Any = None) -> None:
            if code == 6 and TEARDOWN_UPDATE_ERROR < subcode < TEARDOWN_UPDATE_ERROR + 256:
                code, subcode = 3, subcode - TEARDOWN_UPDATE_ERROR
            notify_init(self, code, subcode, data)

        Update.unpack_message = classmethod(unpack_message)
        JSON.update = update
        Notify.__init__ = init
    except Exception as exc:  # an ExaBGP whose internals moved: it decodes every UPDATE, said once
        raw.problem = f"not applied ({type(exc).__name__}: {exc})"
        say(f"raw UPDATEs: {raw.problem}; ExaBGP decodes UPDATEs")
        return raw
    say("raw UPDATEs: received UPDATEs go to the daemon undecoded")
    return raw


def install_update_json() -> tuple[LeanUpdateJSON | None, str]:
    """Put :class:`LeanUpdateJSON` in place of ``JSON.update`` if it passes its self-check; else say why."""
    encoder, problem = lean_update_json()
    if encoder is None:
        say(f"UPDATE encoder left as ExaBGP's: {problem}")
        return None, problem
    from exabgp.reactor.api.response.json import JSON

    def update(self: Any, neighbor: Any, direction: Any, update: Any, negotiated: Any, header: Any, body: Any) -> str:
        return encoder.update(self, neighbor, direction, update, negotiated, header, body)

    update.__doc__ = encoder.original.__doc__
    JSON.update = update
    return encoder, ""


def lean_update_json() -> tuple[LeanUpdateJSON | None, str]:
    """The lean encoder if it writes what ExaBGP's own writes for the samples; else None and why."""
    try:
        encoder = LeanUpdateJSON.from_exabgp()
        problem = (compare_update_json(encoder, sample_updates(), compact=True)
                   or compare_update_json(encoder, sample_updates(), compact=False))
    except Exception as exc:  # an ExaBGP whose internals moved: its own encoder, said once
        return None, f"self-check failed ({type(exc).__name__}: {exc})"
    if problem is not None:
        return None, problem
    encoder.rendered = encoder.delegated = 0
    return encoder, ""


def main() -> int:
    """Patch (when this ExaBGP allows it), then run ExaBGP's own entry point with our arguments."""
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == here:
        del sys.path[0]  # our package's modules must not shadow anything ExaBGP imports
    stats_path = os.environ.get(ENV_STATS) or None
    sweep_s, complaint = sweep_from_env(os.environ)
    if complaint:
        say(complaint)
    problem = unsupported()
    if problem is None:
        try:
            version = install(sweep_s, stats_path)
        except Exception as exc:  # half-applied is impossible to reason about: say so and stop here
            say(f"patching failed ({type(exc).__name__}: {exc})")
            raise
        say(f"active (ExaBGP {version}, full sweep every {sweep_s:g} s)")
        write_stats(stats_path, {"active": True, "exabgp": version, "pid": os.getpid(), "at": time.time(),
                                 **PassPlanner(sweep_s).report()})
    else:
        say(f"not applied, running ExaBGP unpatched: {problem}")
        write_stats(stats_path, {"active": False, "reason": problem, "pid": os.getpid(), "at": time.time()})
    from exabgp.application.main import main as exabgp_main

    sys.argv = ["exabgp", *sys.argv[1:]]
    return exabgp_main()


if __name__ == "__main__":
    sys.exit(main())
