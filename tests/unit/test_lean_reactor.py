"""The lean reactor pass (issue 12, idle CPU): which sessions a pass of ExaBGP's reactor visits.

The planner is pure: pass times, session keys and facts are injected, no socket and no ExaBGP. The
timer property is checked against a model of ExaBGP's own keepalive timer (``bgp/timer.py``
``SendTimer``: whole seconds of ``time.time()``): an idle session visited only by the lean passes
sends each keepalive on the same pass as one visited on every pass. The launcher itself is run
under the real interpreters (no network: ``exabgp version``), and against a stand-in ExaBGP of
another version to see it refuse to patch and run ExaBGP's entry point unpatched.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.config import ConfigError, config_from_text, parse_config
from routing.exabgp import lean_reactor
from routing.exabgp.conf import lean_environment
from routing.exabgp.lean_reactor import PassPlanner, needs_turn, sweep_from_env
from routing.exabgp.speaker import LEAN_LAUNCHER, ExabgpSpeaker, script_python
from routing.inbox import Inbox

SESSIONS = {"a", "b", "c"}
FDS = {10: "a", 11: "b", 12: "c"}


def owner(fd: int) -> str | None:
    return FDS.get(fd)


def visit(p: PassPlanner, now: float, attention: set[str] | None = None) -> set[str]:
    """The sessions a pass visits (a full sweep: all of them), as the adapter sees it."""
    chosen = p.plan(now, attention or set(), owner)
    return SESSIONS if chosen is None else chosen


def started(sweep_s: float = 1.0, at: float = 100.2) -> PassPlanner:
    """A planner past its first pass (a full sweep at ``at``)."""
    p = PassPlanner(sweep_s)
    assert p.plan(at, set(), owner) is None
    assert p.full_reasons == {"start": 1}
    return p


# --- which sessions a pass visits -----------------------------------------------------------------

def test_idle_sessions_are_left_alone_until_the_next_second() -> None:
    p = started()
    assert visit(p, 100.5) == set()
    assert visit(p, 100.99) == set()
    assert p.plan(101.01, set(), owner) is None  # the sweep: a new wall-clock second
    assert visit(p, 101.5) == set()
    assert p.passes == {"full": 2, "lean": 3} and p.full_reasons == {"start": 1, "sweep": 1}


def test_a_readable_socket_gives_its_session_a_turn_once() -> None:
    p = started()
    p.socket_ready(11)
    assert visit(p, 100.3) == {"b"}
    assert visit(p, 100.4) == set()


def test_a_socket_nobody_owns_makes_a_full_sweep() -> None:
    p = started()
    p.socket_ready(11)
    p.socket_ready(99)
    assert p.plan(100.3, set(), owner) is None
    assert p.full_reasons["unknown socket"] == 1


def test_a_busy_session_gets_its_turns_and_one_more() -> None:
    """(a)/(c)/(d): visited while busy, then once more (the End-of-RIB after the initial routes)."""
    p = started()
    assert visit(p, 100.3, {"c"}) == {"c"}
    assert visit(p, 100.4, {"c"}) == {"c"}
    assert visit(p, 100.5) == {"c"}  # the follow-up turn
    assert visit(p, 100.6) == set()


def test_work_seen_at_a_full_sweep_gets_its_follow_up() -> None:
    p = PassPlanner(1.0)
    assert p.plan(100.2, {"a"}, owner) is None
    assert visit(p, 100.3) == {"a"}
    assert visit(p, 100.4) == set()


@pytest.mark.parametrize("why", ["api command", "scheduled work", "reload", "accept", "poll error"])
def test_events_make_the_next_pass_a_full_sweep(why: str) -> None:
    p = started()
    p.request_full(why)
    p.request_full("something else")  # the first reason is the one counted
    assert p.plan(100.3, set(), owner) is None
    assert visit(p, 100.4) == set()
    assert p.full_reasons == {"start": 1, why: 1}


def test_a_clock_that_goes_back_sweeps() -> None:
    p = started()
    assert p.plan(99.5, set(), owner) is None


def test_a_long_sleep_sweeps_even_inside_one_slot() -> None:
    p = started(sweep_s=0.5, at=100.0)
    assert visit(p, 100.49) == set()
    assert p.plan(100.5, set(), owner) is None


def test_report() -> None:
    p = started()
    p.visited("full", 3)
    visit(p, 100.5, {"a"})
    p.visited("lean", 1)
    assert p.report() == {"sweep_s": 1.0, "passes": {"full": 1, "lean": 1}, "turns": {"full": 3, "lean": 1},
                          "full_reasons": {"start": 1}}


# --- the timer property ---------------------------------------------------------------------------

def keepalives_sent(visits: list[float], keepalive_s: int, start: float) -> list[float]:
    """ExaBGP's SendTimer (bgp/timer.py) checked on each visit: the visits that send a keepalive."""
    last_sent = int(start)
    sent = []
    for t in visits:
        if last_sent + keepalive_s - int(t) <= 0:
            last_sent = int(t)
            sent.append(t)
    return sent


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=30, max_size=300), st.integers(1, 5), st.integers(0, 999))
def test_idle_sessions_send_keepalives_on_the_same_pass_as_exabgp(gaps_ms: list[int], keepalive_s: int,
                                                                  phase_ms: int) -> None:
    """Passes at most one reactor timeout (0.1 s) apart: the lean planner's full sweeps send every
    keepalive of an idle session on exactly the pass ExaBGP's own reactor (a turn every pass) does."""
    t = 1000.0 + phase_ms / 1000
    passes = []
    for g in gaps_ms:
        t += g / 1000
        passes.append(t)
    p = PassPlanner(1.0)
    visited = [now for now in passes if p.plan(now, set(), owner) is None]
    assert keepalives_sent(visited, keepalive_s, passes[0]) == keepalives_sent(passes, keepalive_s, passes[0])


@given(st.lists(st.floats(0.001, 0.3), min_size=2, max_size=200), st.sampled_from([0.1, 0.25, 0.5, 1.0]))
def test_full_sweeps_are_never_further_apart_than_sweep_s_plus_one_gap(gaps: list[float], sweep_s: float) -> None:
    p, t, last = PassPlanner(sweep_s), 50.0, None
    for g in gaps:
        t += g
        if p.plan(t, set(), owner) is None:
            if last is not None:
                assert t - last <= sweep_s + g + 1e-9
            last = t


# --- reading an ExaBGP Peer -----------------------------------------------------------------------

ESTABLISHED, LATER, NOW = 0x20, 0x02, 0x03


def peer(**changes: Any) -> SimpleNamespace:
    """A stand-in with the attributes ExaBGP 5.0's Peer has, idle and Established unless changed."""
    neighbor = SimpleNamespace(messages=[], refresh=[], eor=[],
                               rib=SimpleNamespace(outgoing=SimpleNamespace(pending=lambda: changes.pop("pending",
                                                                                                        False))))
    p = SimpleNamespace(fsm=ESTABLISHED, _teardown=None, _neighbor=None, neighbor=neighbor)
    p.__dict__[lean_reactor._LAST_ACTION] = LATER
    for k, v in changes.items():
        if k in ("messages", "refresh", "eor"):
            setattr(neighbor, k, v)
        elif k == "last":
            p.__dict__[lean_reactor._LAST_ACTION] = v
        elif k != "pending":
            setattr(p, k, v)
    return p


@pytest.mark.parametrize(("changes", "want"), [
    ({}, False),
    ({"fsm": 0x08}, True),                    # OPENSENT: being set up
    ({"_teardown": 3}, True),                 # teardown / stop / re-establish
    ({"_neighbor": object()}, True),          # a reload to apply
    ({"last": NOW}, True),                    # more to do now
    ({"last": None}, True),                   # never ran
    ({"messages": ["op"]}, True),             # operational queued by the API
    ({"refresh": ["rr"]}, True),
    ({"eor": ["eor"]}, True),
    ({"pending": True}, True),                # outgoing RIB changes
])
def test_needs_turn_reads_an_exabgp_peer(changes: dict[str, Any], want: bool) -> None:
    assert needs_turn(peer(**changes), ESTABLISHED, LATER) is want


def test_no_rib_yet_is_not_work() -> None:
    p = peer()
    p.neighbor.rib = None
    assert needs_turn(p, ESTABLISHED, LATER) is False


class FakeNeighbor(dict):
    """ExaBGP's Neighbor: settings by key, queues and the RIB as attributes."""

    def __init__(self, passive: bool = False) -> None:
        super().__init__(passive=passive)
        self.messages: list[str] = []
        self.refresh: list[str] = []
        self.eor: list[str] = []
        self.pending = False
        self.rib = SimpleNamespace(outgoing=SimpleNamespace(pending=lambda: self.pending))


class FakePeer:
    def __init__(self, fd: int, passive: bool = False) -> None:
        self.fsm, self._teardown, self._neighbor, self.proto = ESTABLISHED, None, None, object()
        self.neighbor = FakeNeighbor(passive)
        self.fd = fd

    def stopping(self) -> bool:
        return False

    def socket(self) -> int:
        return self.fd if self.proto is not None else -1


def test_the_adapter_visits_what_its_turns_left_busy() -> None:
    """LeanPass with a stand-in reactor: attention is read after each turn, a lean pass visits only
    it (plus follow-ups and readable sockets), and ExaBGP's own rule drops a passive peer with no
    connection; a full sweep asks ExaBGP for every session."""
    peers = {"a": FakePeer(10), "b": FakePeer(11), "p": FakePeer(12, passive=True)}
    reactor = SimpleNamespace(_peers=peers)
    lean = lean_reactor.LeanPass(reactor, 1.0, None, ESTABLISHED, LATER, 0x01, "5.0.15")
    every = lambda: set(peers)  # noqa: E731 - ExaBGP's active_peers() stand-in
    assert lean.plan(every) == {"a", "b", "p"}  # the first pass sweeps
    for peer in peers.values():
        lean.after_turn(peer, LATER)
    assert lean.attention == set()
    assert lean.plan(every) == set()
    peers["b"].neighbor.pending = True  # an announcement queued (the API's pass sweeps; here by hand)
    lean.after_turn(peers["b"], LATER)
    peers["p"].proto, peers["p"].fsm = None, 0x01  # the passive peer lost its connection
    lean.after_turn(peers["p"], LATER)
    assert lean.attention == {"b", "p"}
    assert lean.plan(every) == {"b"}  # p: ExaBGP's rule, no connection and passive
    peers["b"].neighbor.pending = False
    lean.after_turn(peers["b"], LATER)
    lean.planner.socket_ready(10)
    assert lean.plan(every) == {"a", "b"}  # a: readable; b: its follow-up turn
    lean.after_turn(peers["a"], LATER)
    assert lean.plan(every) == set()
    del peers["b"]
    lean.attention.add("b")
    assert lean.plan(every) == set() and "b" not in lean.attention  # gone from the reactor
    lean.after_turn(FakePeer(13), LATER)  # a session no sweep has seen: the next pass sweeps
    assert lean.plan(every) == {"a", "p"}
    assert lean.planner.full_reasons == {"start": 1, "unknown session": 1}


# --- settings -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "want", "complains"), [
    ({}, 1.0, False), ({"POP_ROUTER_LEAN_SWEEP_S": "0.25"}, 0.25, False),
    ({"POP_ROUTER_LEAN_SWEEP_S": "2"}, 1.0, True), ({"POP_ROUTER_LEAN_SWEEP_S": "x"}, 1.0, True),
    ({"POP_ROUTER_LEAN_SWEEP_S": "0"}, 1.0, True),
])
def test_sweep_from_env(env: dict[str, str], want: float, complains: bool) -> None:
    value, complaint = sweep_from_env(env)
    assert value == want and (complaint is not None) == complains


MINIMAL = "router: {asn: 65000, router_id: 192.0.2.1}\n"


def test_config_defaults_and_environment(tmp_path: Path) -> None:
    c = parse_config({"router": {"asn": 65000, "router_id": "192.0.2.1"}})
    assert c.exabgp.lean_reactor is True and c.exabgp.lean_sweep_s == 1.0
    assert lean_environment(c, tmp_path / "x.json") == {"POP_ROUTER_LEAN_SWEEP_S": "1",
                                                        "POP_ROUTER_LEAN_STATS": str(tmp_path / "x.json"),
                                                        "POP_ROUTER_RAW_UPDATES": "1"}
    c = parse_config({"router": {"asn": 65000, "router_id": "192.0.2.1"}, "exabgp": {"updates": "json"}})
    assert lean_environment(c, tmp_path / "x.json")["POP_ROUTER_RAW_UPDATES"] == "0"


@pytest.mark.parametrize(("text", "field"), [
    ("exabgp: {lean_reactor: maybe}", "exabgp.lean_reactor"),
    ("exabgp: {updates: binary}", "exabgp.updates"),
    ("exabgp: {lean_sweep_s: 2}", "exabgp.lean_sweep_s"),
    ("exabgp: {lean_sweep_s: 0}", "exabgp.lean_sweep_s"),
])
def test_bad_settings_name_field_and_file(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_text(MINIMAL + text + "\n", "/etc/pop-router/pop.yaml")
    assert str(exc.value).startswith(f"/etc/pop-router/pop.yaml: {field}: ")


# --- how the daemon starts it -----------------------------------------------------------------------

def script(tmp_path: Path, first_line: str) -> Path:
    f = tmp_path / "exabgp"
    f.write_text(first_line + "\nimport sys\n")
    f.chmod(0o755)
    return f


def test_script_python(tmp_path: Path) -> None:
    assert script_python(script(tmp_path, f"#!{sys.executable}")) == sys.executable
    for first in ("#!/bin/sh", "#!/usr/bin/env python3", "import sys", f"#!{tmp_path}/missing/python"):
        assert script_python(script(tmp_path, first)) is None, first
    assert script_python(tmp_path / "absent") is None


def speaker(tmp_path: Path, binary: Path, lean: bool) -> ExabgpSpeaker:
    c = config_from_text(MINIMAL + f"exabgp: {{binary: {binary}, lean_reactor: {str(lean).lower()}}}\n")
    return ExabgpSpeaker(c, tmp_path / "run", Inbox())


def test_speaker_starts_exabgp_through_the_launcher(tmp_path: Path) -> None:
    s = speaker(tmp_path, script(tmp_path, f"#!{sys.executable}"), lean=True)
    assert s._argv() == [sys.executable, str(LEAN_LAUNCHER), str(s.conf_path)]
    assert s._environment()["POP_ROUTER_LEAN_STATS"] == str(s.lean_stats_path)
    assert s.lean_reactor() is None  # nothing reported yet
    s.lean_stats_path.parent.mkdir(parents=True)
    s.lean_stats_path.write_text('{"active": true}')
    assert s.lean_reactor() == {"active": True}
    s._before_start()  # a report from the previous process is not this one's
    assert not s.lean_stats_path.exists()


def test_speaker_without_the_launcher(tmp_path: Path) -> None:
    binary = script(tmp_path, f"#!{sys.executable}")
    off = speaker(tmp_path, binary, lean=False)
    assert off._argv() == [str(binary), str(off.conf_path)]
    assert "POP_ROUTER_LEAN_STATS" not in off._environment()
    assert off.lean_reactor() == {"active": False, "reason": "off in the configuration (exabgp.lean_reactor)"}
    shell = speaker(tmp_path, script(tmp_path, "#!/bin/sh"), lean=True)
    assert shell._argv() == [str(tmp_path / "exabgp"), str(shell.conf_path)]
    assert shell.lean_reactor()["active"] is False  # type: ignore[index]


# --- the launcher, run ------------------------------------------------------------------------------

def test_the_launcher_imports_only_the_standard_library() -> None:
    """PyPy's venv has ExaBGP and the standard library only: nothing of ours may be imported."""
    tree = ast.parse(Path(lean_reactor.__file__).read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules - {"__future__", "exabgp"} <= set(sys.stdlib_module_names)


def launch(python: str, tmp_path: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["POP_ROUTER_LEAN_STATS"] = str(tmp_path / "lean.json")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([python, str(LEAN_LAUNCHER), *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=tmp_path)


INTERPRETERS = [Path(sys.executable).with_name("exabgp"), Path(sys.executable).with_name("exabgp-pypy")]


@pytest.mark.parametrize("console", INTERPRETERS, ids=lambda p: p.name)
def test_the_launcher_patches_the_installed_exabgp(console: Path, tmp_path: Path) -> None:
    python = script_python(console) if console.exists() else None
    if python is None:
        pytest.skip(f"no {console.name} console script here (make deps installs it)")
    p = launch(python, tmp_path, "version")
    assert p.returncode == 0, p.stderr
    assert "ExaBGP : 5.0." in p.stdout  # ExaBGP's own entry point ran, with our arguments
    assert "pop-router lean reactor: active (ExaBGP 5.0." in p.stderr
    assert json.loads((tmp_path / "lean.json").read_text())["active"] is True


def test_another_exabgp_runs_unpatched(tmp_path: Path) -> None:
    """A stand-in ExaBGP 4.2 (its version and entry point only): no patch, one line why, ExaBGP runs."""
    pkg = tmp_path / "lib" / "exabgp"
    (pkg / "application").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "version.py").write_text("version = '4.2.21'\n")
    (pkg / "application" / "__init__.py").write_text("")
    (pkg / "application" / "main.py").write_text(
        "import sys\ndef main():\n    print('unpatched main', sys.argv[1:])\n    return 3\n")
    p = launch(sys.executable, tmp_path, "server", "x.conf", pythonpath=tmp_path / "lib")
    assert p.returncode == 3
    assert p.stdout.strip() == "unpatched main ['server', 'x.conf']"
    assert p.stderr.strip() == ("pop-router lean reactor: not applied, running ExaBGP unpatched: "
                                "ExaBGP 4.2.21 is not 5.0.x")
    doc = json.loads((tmp_path / "lean.json").read_text())
    assert doc["active"] is False and doc["reason"] == "ExaBGP 4.2.21 is not 5.0.x"


# --- API output: one write per reactor pass (issue 12) ---------------------------------------------

def test_deferred_flush_writes_when_the_reactor_waits_or_the_oldest_is_due() -> None:
    """Messages and their flushes make no system call while the reactor stays busy (``poll(0)``)
    until the oldest has waited MAX_HOLD_S; an idle reactor writes all of them at once before it
    sleeps; close still flushes what is left."""
    import io

    from routing.exabgp.lean_reactor import MAX_HOLD_S, DeferredFlush, flush_pipes

    class Raw(io.RawIOBase):
        def __init__(self) -> None:
            self.calls: list[bytes] = []

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.calls.append(bytes(b))
            return len(b)

    now = [100.0]
    raw = Raw()
    pipe = DeferredFlush(io.BufferedWriter(raw, 8192), clock=lambda: now[0])

    class Proc:
        stdin = pipe

    class Processes:
        _process = {"api": Proc()}

    for i in range(3):  # what Processes.write does per message, one message per busy pass
        pipe.write(f'{{"n": {i}}}\n'.encode())
        pipe.flush()
        now[0] += MAX_HOLD_S / 4
        flush_pipes(Processes(), False, now[0])
    assert raw.calls == [] and pipe.pending and pipe.since == 100.0  # the first message's time
    now[0] = 100.0 + MAX_HOLD_S * 1.01
    flush_pipes(Processes(), False, now[0])  # still busy, but the oldest is due
    assert raw.calls == [b'{"n": 0}\n{"n": 1}\n{"n": 2}\n'] and not pipe.pending
    pipe.write(b'{"n": 3}\n')
    pipe.flush()
    flush_pipes(Processes(), True, now[0])  # the reactor is about to sleep: at once
    assert raw.calls[-1] == b'{"n": 3}\n'
    flush_pipes(Processes(), True, now[0])
    assert len(raw.calls) == 2  # nothing pending: no call
    pipe.write(b"last\n")
    pipe.close()  # ExaBGP closing the pipe: the stream's own close, which flushes
    assert raw.calls[-1] == b"last\n" and pipe.closed


def test_a_failing_flush_keeps_the_data_for_the_next_pass() -> None:
    from routing.exabgp.lean_reactor import DeferredFlush, flush_pipes

    class Stream:
        def __init__(self) -> None:
            self.fail, self.flushed = True, 0

        def flush(self) -> None:
            if self.fail:
                raise BlockingIOError(11, "again")
            self.flushed += 1

    stream = Stream()
    pipe = DeferredFlush(stream)

    class Proc:
        stdin = pipe

    class Processes:
        _process = {"api": Proc()}

    pipe.flush()
    flush_pipes(Processes(), True, 0.0)
    assert pipe.pending and stream.flushed == 0
    stream.fail = False
    flush_pipes(Processes(), True, 0.0)
    assert not pipe.pending and stream.flushed == 1


# --- UPDATEs to JSON: the lean encoder writes ExaBGP's text (issue 12) -----------------------------

@pytest.fixture(scope="module")
def exabgp_logging() -> None:
    """ExaBGP's parser logs; its entry point sets logging up before any UPDATE is parsed."""
    from exabgp.environment import getenv
    from exabgp.logger import log

    log.init(getenv())


def _asn4(a: int) -> bytes:
    return a.to_bytes(4, "big")


#: AS_PATH segments: (type: set, sequence, confed sequence, confed set; the ASNs).
segments = st.lists(st.tuples(st.sampled_from([1, 2, 3, 4]),
                              st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=4)), max_size=3)
v4_prefixes = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=6)
v6_prefixes = st.lists(st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)), max_size=3)


def _nlri(prefixes: list[tuple[int, int]], width: int) -> bytes:
    out = b""
    for addr, plen in prefixes:
        nbytes = (plen + 7) // 8
        out += bytes([plen]) + addr.to_bytes(width, "big")[:nbytes]
    return out


@st.composite
def updates(draw: st.DrawFn) -> tuple[bytes, bool]:
    """An UPDATE's body and whether it carries any NLRI."""
    pa = lean_reactor.path_attribute
    attrs = b""
    announce4 = draw(v4_prefixes)
    announce6 = draw(v6_prefixes)
    if announce4 or announce6 or draw(st.booleans()):
        attrs += pa(0x40, 1, bytes([draw(st.integers(0, 2))]))
        attrs += pa(0x40, 2, b"".join(bytes([t, len(a)]) + b"".join(_asn4(x) for x in a) for t, a in draw(segments)))
        if announce4:
            attrs += pa(0x40, 3, draw(st.binary(min_size=4, max_size=4)))
        for code, flags in ((4, 0x80), (5, 0x40)):
            if draw(st.booleans()):
                attrs += pa(flags, code, draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big"))
        if draw(st.booleans()):
            attrs += pa(0x40, 6, b"")
        comms = draw(st.lists(st.binary(min_size=4, max_size=4), max_size=3))
        if comms:
            attrs += pa(0xC0, 8, b"".join(comms))
        large = draw(st.lists(st.binary(min_size=12, max_size=12), max_size=2))
        if large:
            attrs += pa(0xC0, 32, b"".join(large))
        if announce6:
            nh = draw(st.binary(min_size=16, max_size=16))
            attrs += pa(0x80, 14, b"\x00\x02\x01\x10" + nh + b"\x00" + _nlri(announce6, 16))
    withdrawn6 = draw(v6_prefixes)
    if withdrawn6:
        attrs += pa(0x80, 15, b"\x00\x02\x01" + _nlri(withdrawn6, 16))
    withdrawn4 = draw(v4_prefixes)
    wire = lean_reactor.update_wire(attrs, _nlri(announce4, 4), withdrawn=_nlri(withdrawn4, 4))
    return wire, bool(announce4 or announce6 or withdrawn4 or withdrawn6)


@settings(max_examples=300, deadline=None)
@given(update=updates(), compact=st.booleans())
def test_the_lean_encoder_writes_what_exabgp_writes(exabgp_logging: None, update: tuple[bytes, bool],
                                                    compact: bool) -> None:
    """Generated UPDATEs (any mix of IPv4/IPv6 announcements and withdrawals, AS_PATH segments of
    every type, the common attributes) come out character for character as ExaBGP's own encoder writes
    them, for both directions and both NLRI forms; all of them through the lean encoder."""
    wire, has_nlri = update
    encoder = lean_reactor.LeanUpdateJSON.from_exabgp()
    assert lean_reactor.compare_update_json(encoder, [wire], compact=compact) is None
    # Rendered here, both directions; only an UPDATE without NLRI goes to ExaBGP's own encoder.
    assert (encoder.rendered, encoder.delegated) == ((2, 0) if has_nlri else (0, 2))


def test_the_lean_encoder_leaves_other_messages_to_exabgp(exabgp_logging: None) -> None:
    """Messages it does not render (End-of-RIB; the negotiated/header/body options) go to ExaBGP's own
    encoder, whose text is what comes out."""
    from exabgp.bgp.message.direction import Direction
    from exabgp.bgp.message.update import Update
    from exabgp.reactor.api.response.json import JSON

    encoder = lean_reactor.LeanUpdateJSON.from_exabgp()
    calls: list[tuple[Any, ...]] = []
    encoder.original = lambda *a: calls.append(a) or "exabgp's own"  # type: ignore[assignment]
    neighbor = {"local-address": "10.0.1.1", "peer-address": "10.0.1.2", "local-as": 1, "peer-as": 2, "router-id": ""}
    json_encoder = JSON("5.0.0")
    eor = Update.unpack_message(b"\x00\x00\x00\x00", Direction.IN, lean_reactor.SampleNegotiated())
    assert encoder.update(json_encoder, neighbor, "in", eor, None, "", "") == "exabgp's own"
    plain = Update.unpack_message(lean_reactor.sample_updates()[0], Direction.IN, lean_reactor.SampleNegotiated())
    assert encoder.update(json_encoder, neighbor, "in", plain, None, "ffff", "") == "exabgp's own"
    assert encoder.delegated == 2 and encoder.rendered == 0 and len(calls) == 2


def test_the_update_encoder_self_check_passes_on_the_installed_exabgp(exabgp_logging: None) -> None:
    encoder, problem = lean_reactor.lean_update_json()
    assert problem == "" and encoder is not None
    assert (encoder.rendered, encoder.delegated) == (0, 0)  # the self-check's own messages are not counted


def test_the_update_encoder_self_check_refuses_a_difference(exabgp_logging: None) -> None:
    encoder = lean_reactor.LeanUpdateJSON.from_exabgp()
    encoder._attributes = lambda a: '"origin": "egp"'  # type: ignore[method-assign]
    problem = lean_reactor.compare_update_json(encoder, lean_reactor.sample_updates(), compact=True)
    assert problem is not None and problem.startswith("differs from ExaBGP's for UPDATE ")


# --- API input: read when a pipe was readable -------------------------------------------------------

def test_commands_are_read_after_a_readable_poll_on_full_sweeps_and_without_the_planner() -> None:
    lean = lean_reactor.LeanPass(SimpleNamespace(_peers={}), 1.0, None, None, 0, 1, "5.0.15")
    assert lean.api_turn()  # the first pass reads
    lean._pass = ("lean", 0.0)
    assert not lean.api_turn()  # nothing readable since: skipped
    lean.api_readable = True
    assert lean.api_turn() and not lean.api_turn()  # once per readable poll
    lean._pass = ("full", 0.0)
    assert lean.api_turn() and lean.api_turn()  # a full sweep always reads
    lean._pass, lean.failed = ("lean", 0.0), "planner failed"
    assert lean.api_turn()
    assert lean.api_reads == {"read": 5, "skipped": 2}


# --- BGP messages read from a buffer ---------------------------------------------------------------

def _keepalive() -> bytes:
    return b"\xff" * 16 + (19).to_bytes(2, "big") + b"\x04"


def _update_message(body: bytes) -> bytes:
    return b"\xff" * 16 + (19 + len(body)).to_bytes(2, "big") + b"\x02" + body


def _next(gen: Any) -> tuple[Any, ...]:
    """One step of ExaBGP's ``Connection.reader()``: (length, type, header, body, notify)."""
    return next(gen)


def test_the_buffered_reader_serves_whole_messages_and_waits_only_on_a_drained_socket(
        exabgp_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """ExaBGP's own ``Connection.reader`` over the patched ``_reader``, on a real socket pair: messages
    that arrive together are all served from one ``recv``; a message cut in two is waited for (the
    reader's "nothing yet" step) and served once the rest arrives; the end of the stream is ExaBGP's
    ``LostConnection``."""
    import socket

    from exabgp.protocol.family import AFI
    from exabgp.reactor.network.connection import Connection
    from exabgp.reactor.network.error import LostConnection

    monkeypatch.setattr(Connection, "_reader", lean_reactor.make_buffered_reader(Connection._reader))
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = Connection(AFI.ipv4, "10.0.0.2", "10.0.0.1")
    conn.defensive = False
    conn.io = ours
    recvs = []
    real_recv = ours.recv

    class CountingSocket:  # socket.socket's recv cannot be patched on the instance
        def __getattr__(self, name: str) -> Any:
            return getattr(ours, name)

        def recv(self, n: int) -> bytes:
            recvs.append(n)
            return real_recv(n)

    conn.io = CountingSocket()
    upd = _update_message(lean_reactor.sample_updates()[0])
    try:
        theirs.sendall(_keepalive() + upd + _keepalive())
        got = [_next(conn.reader()) for _ in range(3)]
        assert [(g[0], g[1]) for g in got] == [(19, 4), (len(upd), 2), (19, 4)]
        assert got[1][2] + got[1][3] == upd and all(g[4] is None for g in got)
        assert len(recvs) == 1  # three messages, one system call
        theirs.sendall(upd[:30])
        gen = conn.reader()
        assert _next(gen)[:4] == (0, 0, b"", b"")  # half a message: nothing yet, the socket is drained
        theirs.sendall(upd[30:])
        while (step := _next(gen))[0] == 0:
            pass
        assert step[0] == len(upd) and step[2] + step[3] == upd
        theirs.close()
        with pytest.raises(LostConnection):
            for _ in range(5):
                _next(conn.reader())
    finally:
        conn.io = None
        ours.close()


TIMEOUT_PROBE = """
import socket, sys
sys.path.insert(0, sys.argv[1])
import lean_reactor
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.protocol.family import AFI
from exabgp.reactor.network.connection import Connection
from exabgp.reactor.network.error import TooSlowError

class TimingOut:
    def recv(self, n):
        raise socket.timeout("timed out")
    def close(self):
        pass

conn = Connection(AFI.ipv4, "10.0.0.2", "10.0.0.1")
conn.defensive = False
conn.io = TimingOut()
conn.reading = lambda: True
try:
    next(lean_reactor.make_buffered_reader(Connection._reader)(conn, 19))
except TooSlowError:
    print("TooSlowError")
except Exception as exc:
    print(type(exc).__name__)
"""


@pytest.mark.parametrize("console", INTERPRETERS, ids=lambda p: p.name)
def test_the_buffered_reader_raises_exabgps_timeout_error_on_each_interpreter(console: Path, tmp_path: Path) -> None:
    """A socket timeout is ExaBGP's ``TooSlowError``, as in its own reader, under the interpreter ExaBGP
    runs on: on Python 3.9 (Debian 12's PyPy) ``socket.timeout`` is not ``TimeoutError``."""
    python = script_python(console) if console.exists() else None
    if python is None:
        pytest.skip(f"no {console.name} console script here (make deps installs it)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["exabgp_log_level"] = "CRITICAL"
    p = subprocess.run([python, "-c", TIMEOUT_PROBE, str(LEAN_LAUNCHER.parent)], capture_output=True, text=True,
                       timeout=60, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "TooSlowError"
