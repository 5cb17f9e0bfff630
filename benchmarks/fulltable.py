#!/usr/bin/env python3
"""Full tables and many customers (issue 12): pop-router against BIRD-as-PoP on the same BIRD feed.

Why: a PoP has to take a full table (or three) and hundreds of customer sessions; this measures how
far we are from BIRD doing the same job on the same machine, and where our time and memory go per
prefix, so the cuts can be ranked (``benchmarks/RESULTS.md``).

Every case builds its own namespace pair (``ftNNNNNN-pop`` / ``ftNNNNNN-feed``, removed in ``finally``),
a BIRD feeder in the feed namespace, then runs the PoP under test in the pop namespace: pop-router
(``pop-router run``: daemon + ExaBGP + relay) and BIRD 2 (one ``bgp`` protocol per session and a
``kernel`` protocol exporting everything). Only routes are exchanged; no traffic is sent.

Cases (``--cases``, comma-separated; default ``1m,3peers,sessions``):

- ``1m``: ``--prefixes`` (default 1,000,000) IPv4 /24s, a MED per group of 4 so BIRD sends 4 per
  UPDATE; one session. Timed from Established (the daemon's timestamp; BIRD: first poll that sees it)
  until all of them are in the kernel (pop-router: FIB idle with N routes, then a netlink dump; BIRD:
  the kernel protocol's exported count, then the same dump). pop-router runs with ExaBGP under PyPy
  (``exabgp.interpreter: pypy``) and again under CPython (``--interpreters``). Peak RSS of every
  process of the PoP is sampled every 0.5 s and read from ``VmHWM`` at the end. At 1M with
  ``--interpreters pypy`` (2026-12-02): ~2 min in all (pop-router 21-25 s, BIRD 9-10 s, plus setup and
  flushes); the CPython run took 174 s on 2026-12-01, before the cuts of ``benchmarks/RESULTS.md``.
- ``3peers``: the same table from three sessions (three feeder protocols, three customers); done when
  the FIB holds N routes and every session's N paths are accepted (BIRD: imported by each protocol).
  ~4 min at 1M (2026-12-02: pop-router 97 s, BIRD 26 s), ~1 min at 100k.
- ``packed``: ``--packed-prefixes`` (default 100,000) packed /24s, pop-router against ExaBGP alone;
  this is ``benchmarks/ingest.py``'s run, reused, with ExaBGP under the same interpreter. ~30 s.
- ``sessions``: ``--sessions`` (default 200,1000) customer sessions of 10-50 /24s each (one customer
  each, one BIRD table per session on the feeder side). Timed from the PoP's start until every session
  is Established and the FIB holds every prefix (bounded by ``--converge-timeout``, default 150 s),
  then ``--soak`` seconds (default 60) in which dropped sessions are counted and the CPU of every PoP
  process is measured (idle: nothing changes). BIRD-as-PoP does the same. ~6 min for 200 and 1,000
  with ``--soak 30`` (1,000 on pop-router runs into the timeout). Reported per process too
  (``idle_cpu_pct_N_by_process``), with the PoP's keepalive gaps on the wire during the soak
  (``keepalive_gaps_s``). The soak should span the keepalive interval (hold / 3; 30 s by default):
  keepalives arrive in a burst per interval, and each wakes ExaBGP for a pass over every session.
  ``--soak-poll`` (the soak's API calls cost the daemon ~1 % at 1 s), ``--hold-time``,
  ``--feeder-passive`` (no connect race with BIRD's error wait), ``--exabgp-env K=V,...`` (sweeps) and
  ``--lean-reactor on,off [--rounds N]`` (pop-router with and without ``exabgp.lean_reactor``, one
  after the other, N times, the order reversed every other round; ``on:0.1`` also sets ``exabgp.lean_sweep_s``; the launcher's pass counts
  are in the RESULT as ``..._lean_reactor``). ``--settle S`` idles S seconds between convergence and
  the soak without measuring (steady state: PyPy compiles a loop only after ~1,000 iterations).

    PYTHONPATH=. .venv/bin/python benchmarks/fulltable.py --cases 1m --prefixes 100000
    PYTHONPATH=. .venv/bin/python benchmarks/fulltable.py --cases sessions --sessions 200 --soak 30
    PYTHONPATH=. .venv/bin/python benchmarks/fulltable.py --cases 1m --prefixes 300000 --pyspy /tmp/prof

``--pyspy DIR`` records py-spy profiles (raw collapsed stacks, ``--native``) of the daemon, the relay
and ExaBGP when it runs on CPython, from Established to converged; timings of a profiled run are
inflated by the sampling and are not comparable. Prints tables and ends with ``RESULT {json}``.
Not part of ``make test``. Needs root (network namespaces), ``bird``/``birdc`` and a free 2 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.netns import netns  # noqa: E402
from fib.netlink import RouteSocket  # noqa: E402
from labs.bird import FeedWaker, logging_to_file  # noqa: E402
from routing.cli import api_call  # noqa: E402

POP_PROTO = 200
BIRD_PROTO = 12  # RTPROT_BIRD
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
VENV_BIN = Path(sys.executable).parent
PYSPY = VENV_BIN / "py-spy"


def sh(*cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def table_prefix(i: int) -> str:
    """The i-th /24 of the table cases: 64.0.0.0/4 holds 1,048,576 of them, none a bogon."""
    return f"{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24"


def session_block(k: int) -> tuple[int, str]:
    """Session k's prefixes live in their own /18 of 80.0.0.0/4: (first address as int, the /18)."""
    base = (80 << 24) + (k << 14)
    return base, f"{base >> 24}.{(base >> 16) & 255}.{(base >> 8) & 255}.0/18"


def session_prefixes(k: int) -> list[str]:
    base, _ = session_block(k)
    count = 10 + (k * 37) % 41  # 10..50, deterministic
    out = []
    for j in range(count):
        a = base + (j << 8)
        out.append(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.0/24")
    return out


def session_addr(k: int) -> str:
    """The feeder's address of session k on the 10.2.0.0/15 link."""
    h = k + 2
    return f"10.2.{h >> 8}.{h & 255}"


def session_local(k: int) -> str:
    """The PoP's address of session k. Every session has its own pair: BIRD runs only one protocol per
    neighbour address at a time (it locks the remote address), so one PoP address would let one
    feeder session up."""
    h = k + 2
    return f"10.3.{h >> 8}.{h & 255}"


def table_local(j: int) -> str:
    """The PoP's address of table session j (the feeder's is 10.0.1.(2 + j)); one pair per session."""
    return f"10.0.1.{101 + j}"


# --------------------------------------------------------------------------------------------------
# Processes: RSS and CPU of a process tree, sampled
# --------------------------------------------------------------------------------------------------

def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) * 1024
    return out


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                children.setdefault(_ppid(int(d)), []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def role_of(pid: int, root: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    text = b" ".join(argv).decode(errors="replace")
    if not text.strip(" "):
        return ""  # forked, not yet exec'd: asked again at the next sample
    if pid == root:
        return "bird" if "bird" in argv[0].decode(errors="replace") else "daemon"
    if "routing.exabgp.bridge" in text or "routing/exabgp/bridge.py" in text:
        m = re.search(r"exabgp-(\d+)\.sock", text)
        return f"relay-{m.group(1) if m else '?'}"
    if "exabgp" in text:
        m = re.search(r"exabgp-(\d+)\.conf", text)
        return f"exabgp-{m.group(1) if m else '?'}"
    if "bfd" in text:
        return "bfd"
    return Path(argv[0].decode(errors="replace")).name or "other"


@dataclass
class ProcStats:
    role: str
    baseline_rss: int = 0
    peak_rss: int = 0
    hwm: int = 0
    cpu_s: float = 0.0
    #: RSS at the latest sample: read when the table is in, it is what stays; peak minus it is
    #: transient (queues, garbage, a dict's resize, the relay's backlog).
    rss: int = 0


@dataclass
class Sampler:
    """Samples every process under ``root`` each ``period_s``: RSS, VmHWM, CPU; the peak of their sum."""

    root: int
    period_s: float = 0.5
    procs: dict[int, ProcStats] = field(default_factory=dict)
    peak_total: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        total = 0
        for pid in descendants(self.root):
            try:
                st, cpu = _status(pid), _cpu_s(pid)
            except (OSError, IndexError, ValueError):
                continue
            ps = self.procs.get(pid)
            if ps is None:
                ps = self.procs[pid] = ProcStats(role_of(pid, self.root), baseline_rss=st.get("VmRSS", 0))
            rss = st.get("VmRSS", 0)
            if not ps.role or ps.role.startswith("exabgp-"):
                # A child forked by ExaBGP shows ExaBGP's command line until it execs (the relay):
                # the role is asked again, and a process that turned out to be something else starts
                # its baseline at the exec.
                role = role_of(pid, self.root)
                if role != ps.role:
                    if ps.role:  # exec gave it a new address space: forget the forked one's
                        ps.baseline_rss = ps.peak_rss = rss
                        ps.hwm = 0
                    ps.role = role
            ps.peak_rss = max(ps.peak_rss, rss)
            ps.hwm = max(ps.hwm, st.get("VmHWM", 0))
            ps.rss = rss
            ps.cpu_s = cpu
            total += rss
        self.peak_total = max(self.peak_total, total)

    def mark_baseline(self) -> None:
        """RSS now is each process's baseline (before the routes arrive)."""
        self.sample()
        for pid, ps in self.procs.items():
            with contextlib.suppress(OSError):
                ps.baseline_rss = _status(pid).get("VmRSS", 0)
        self.peak_total = sum(ps.baseline_rss for ps in self.procs.values())

    def cpu_total(self) -> float:
        self.sample()
        return sum(ps.cpu_s for ps in self.procs.values())

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of each role (a window's per-process cost is the difference of two)."""
        self.sample()
        out: dict[str, float] = {}
        for ps in self.procs.values():
            out[ps.role or "other"] = out.get(ps.role or "other", 0.0) + ps.cpu_s
        return out

    def pid_of(self, role: str) -> int | None:
        self.sample()
        return next((p for p, s in self.procs.items() if s.role == role), None)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def by_role(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for ps in self.procs.values():
            r = out.setdefault(ps.role or "other", {"baseline_mb": 0.0, "peak_mb": 0.0, "hwm_mb": 0.0, "end_mb": 0.0,
                                         "cpu_s": 0.0})
            r["baseline_mb"] += ps.baseline_rss / 2**20
            r["end_mb"] += ps.rss / 2**20
            r["peak_mb"] += ps.peak_rss / 2**20
            r["hwm_mb"] += ps.hwm / 2**20
            r["cpu_s"] += ps.cpu_s
        return {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in sorted(out.items())}


# --------------------------------------------------------------------------------------------------
# Namespaces and BIRD
# --------------------------------------------------------------------------------------------------

class Lab:
    """A pop namespace and a feed namespace joined by a veth (v0 in pop, v1 in feed)."""

    def __init__(self, work: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.pop, self.feed = f"ft{tag}-pop", f"ft{tag}-feed"
        self.work = work
        self.pids: list[int] = []

    def up(self, pop_addrs: list[str], feed_addrs: list[str]) -> None:
        sh("ip", "netns", "add", self.pop)
        sh("ip", "netns", "add", self.feed)
        sh("ip", "link", "add", "v0", "netns", self.pop, "type", "veth", "peer", "name", "v1", "netns", self.feed)
        for ns, dev, addrs in ((self.pop, "v0", pop_addrs), (self.feed, "v1", feed_addrs)):
            batch = self.work / f"{dev}-addrs.batch"
            batch.write_text("".join(f"addr add {a} dev {dev}\n" for a in addrs))
            sh("ip", "-n", ns, "-batch", str(batch))
        for ns, dev in ((self.pop, "v0"), (self.feed, "v1")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for ns in (self.pop, self.feed):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in (self.pop, self.feed):
            # Routes first, synchronously, so the kernel's netns cleanup does not load the next case.
            sh("ip", "-n", ns, "route", "flush", "proto", str(POP_PROTO), check=False)
            sh("ip", "-n", ns, "route", "flush", "proto", "bird", check=False)
            sh("ip", "netns", "del", ns, check=False)


class Bird:
    """One BIRD in a namespace, driven through its own control socket."""

    def __init__(self, ns: str, work: Path, name: str, conf: str, wake: bool = False) -> None:
        self.ns = ns
        self.ctl = work / f"{name}.ctl"
        self.conf = work / f"{name}.conf"
        self.pidfile = work / f"{name}.pid"
        self.conf.write_text(logging_to_file(conf, work / f"{name}.log"))  # never syslog: see labs/bird.py
        self.pid: int | None = None
        #: A feeder is woken every 20 ms while it runs: BIRD 2.0.12 can otherwise hold the end of the
        #: table it sends back for up to 3 s (labs/bird.py, FeedWaker), which we would time as ours.
        self.waker = FeedWaker(self.ctl) if wake else None

    def start(self) -> None:
        self.pidfile.unlink(missing_ok=True)
        sh("ip", "netns", "exec", self.ns, "bird", "-c", str(self.conf), "-s", str(self.ctl), "-P", str(self.pidfile))
        deadline = time.monotonic() + 120
        while not self.pidfile.exists() or not self.pidfile.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError("bird did not start")
            time.sleep(0.05)  # poll: bird writes its pid file after parsing the configuration
        self.pid = int(self.pidfile.read_text())
        if self.waker:
            self.waker.start()

    def cmd(self, *words: str) -> str:
        return sh("birdc", "-s", str(self.ctl), *words, timeout=60).stdout

    def stop(self) -> None:
        if self.waker:
            self.waker.stop()
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{self.pid}").exists():
                time.sleep(0.05)  # poll: wait for it to exit
            self.pid = None

    def established(self) -> int:
        return sum(1 for ln in self.cmd("show", "protocols").splitlines() if " BGP " in ln and "Established" in ln)

    def routes(self, proto: str) -> tuple[int, int]:
        """(imported, exported) of a protocol's channel."""
        m = re.search(r"Routes:\s+(\d+) imported, (?:\d+ filtered, )?(\d+) exported", self.cmd("show", "protocols", "all", proto))
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


FEED_TIMERS = "connect delay time 1; connect retry time 2; error wait time 1, 5;"

#: One listening socket per session address in the sessions case, each bound to that address.
#: Without it BIRD 2.0.12 accepts every session on one wildcard socket (0.0.0.0:179) whose backlog
#: it fixes at 8 (``ss -tln``: Send-Q 8): 1,000 connections arriving within a second overflow its
#: accept queue (TcpExtListenOverflows 315, syncookies 97 in one run). The client's handshake
#: completes (SYN cookie) but the ACK carrying its OPEN is dropped, no state is kept on BIRD's side,
#: and only the client's TCP retransmission of the OPEN (RTO 0.2 s doubling: backoff 6, rto 13 s
#: seen) brings the connection in, 9 (backlog + 1) per wave: 30-65 s tails in ~4 runs out of 10
#: (benchmarks/RESULTS.md, "sessions case: the stragglers", 2026-12-02). 1,000 customers are 1,000
#: routers with a listener each, not one BIRD behind one backlog of 8: a lab artefact. Only the
#: feeder: BIRD as the PoP keeps one listener, as a real PoP would (1,000 listening sockets took its
#: idle CPU from 7.1 to 15.9 % of a core in one run each, 2.36-2.64 s to converge either way).
STRICT_BIND = "strict bind on; "


def feeder_table_conf(n: int, peers: int) -> str:
    lines = ["router id 10.255.0.2;", "protocol device {}", "protocol static s4 { ipv4;"]
    lines += [f"  route {table_prefix(i)} unreachable {{ bgp_med = {i // 4}; }};" for i in range(n)]
    lines.append("}")
    for j in range(peers):
        lines.append(f"protocol bgp p{j} {{ local 10.0.1.{2 + j} as {64512 + j}; neighbor {table_local(j)} as 65000; "
                     f"{FEED_TIMERS} ipv4 {{ import none; export where source = RTS_STATIC; }}; }}")
    return "\n".join(lines) + "\n"


def bird_pop_table_conf(peers: int) -> str:
    lines = ["router id 10.255.0.1;", "protocol device {}",
             "protocol kernel k4 { ipv4 { import none; export all; }; }"]
    for j in range(peers):
        lines.append(f"protocol bgp f{j} {{ local {table_local(j)} as 65000; neighbor 10.0.1.{2 + j} as {64512 + j}; "
                     f"{FEED_TIMERS} ipv4 {{ import all; export none; }}; }}")
    return "\n".join(lines) + "\n"


def hold_conf(hold_s: int | None) -> str:
    """BIRD's hold and keepalive timers for ``--hold-time`` (keepalive hold / 3, as RFC 4271 suggests)."""
    return "" if hold_s is None else f"hold time {hold_s}; keepalive time {max(1, hold_s // 3)}; "


def feeder_sessions_conf(sessions: int, hold_s: int | None = None, passive: bool = False,
                         wildcard_listen: bool = False) -> str:
    """``passive``: the feeder never connects out. Otherwise its attempts to the PoP's closed port 179
    (ExaBGP connects out and does not listen) put each protocol in BIRD's error wait (1-5 s), during
    which it refuses ExaBGP's connection too: the convergence time then varies with that race
    (7-41 s for 200 sessions, 2026-12-01). Each protocol listens on its own address
    (:data:`STRICT_BIND`) unless ``wildcard_listen`` (``--wildcard-listen``: BIRD's default, one
    0.0.0.0:179 socket, to reproduce the stragglers)."""
    lines = ["router id 10.255.0.2;", "protocol device {}"]
    for k in range(sessions):
        lines.append(f"ipv4 table t{k};")
        routes = " ".join(f"route {p} unreachable;" for p in session_prefixes(k))
        lines.append(f"protocol static s{k} {{ ipv4 {{ table t{k}; }}; {routes} }}")
        lines.append(f"protocol bgp c{k} {{ local {session_addr(k)} as {4200000000 + k}; neighbor {session_local(k)} as 65000; "
                     f"{FEED_TIMERS} {'' if wildcard_listen else STRICT_BIND}{hold_conf(hold_s)}{'passive on; ' if passive else ''}"
                     f"ipv4 {{ table t{k}; import none; export all; }}; }}")
    return "\n".join(lines) + "\n"


def bird_pop_sessions_conf(sessions: int, hold_s: int | None = None) -> str:
    lines = ["router id 10.255.0.1;", "protocol device {}",
             "protocol kernel k4 { ipv4 { import none; export all; }; }"]
    for k in range(sessions):
        _, block = session_block(k)
        lines.append(f"protocol bgp c{k} {{ local {session_local(k)} as 65000; neighbor {session_addr(k)} as {4200000000 + k}; "
                     f"{FEED_TIMERS} {hold_conf(hold_s)}ipv4 {{ import where net ~ [ {block}{{18,24}} ]; export none; }}; }}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# pop-router
# --------------------------------------------------------------------------------------------------

@dataclass
class Customer:
    name: str
    asn: int
    prefixes: list[str]
    address: str
    local: str
    max_prefixes: int


def lean_settings(lean: str | None) -> str:
    """pop.yaml's ``exabgp`` keys for a ``--lean-reactor`` variant: ``on``, ``off`` or ``on:SWEEP_S``."""
    if not lean:
        return ""
    on, _, sweep = lean.partition(":")
    if on not in ("on", "off"):
        raise ValueError(f"--lean-reactor variant {lean!r}: expected on, off or on:SWEEP_S")
    return f", lean_reactor: {'true' if on == 'on' else 'false'}" + (f", lean_sweep_s: {float(sweep)}" if sweep else "")


def pop_yaml(work: Path, customers: list[Customer], interpreter: str, processes: str,
             exabgp_env: dict[str, str] | None = None, hold_s: int | None = None, lean: str | None = None,
             updates: str = "raw") -> str:
    env = f", env: {json.dumps(exabgp_env)}" if exabgp_env else ""
    hold = f", hold_time_s: {hold_s}" if hold_s else ""
    out = [f"router: {{asn: 65000, router_id: 192.0.2.1{hold}}}",
           f"api: {{socket: {work / 'api.sock'}}}",
           "metrics: {listen: 127.0.0.1:19324}",
           "fib: {protocol: 200, stale_timeout_s: 600}",
           f"exabgp: {{run_dir: {work}, interpreter: {interpreter}, processes: {processes}, updates: {updates}"
           f"{env}{lean_settings(lean)}}}",
           "log_level: WARNING",
           "customers:"]
    for c in customers:
        out.append(f"  - {{name: {c.name}, asn: {c.asn}, import: {{prefixes: {json.dumps(c.prefixes)}, "
                   f"max_prefixes: {c.max_prefixes}}}, peers: [{{address: {c.address}, local_address: {c.local}}}]}}")
    return "\n".join(out) + "\n"


class PopRouter:
    def __init__(self, ns: str, work: Path, yaml_text: str) -> None:
        self.ns = ns
        self.work = work
        self.sock = work / "api.sock"
        self.cfg = work / "pop.yaml"
        self.cfg.write_text(yaml_text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.logf: Any = None

    def start(self) -> int:
        self.logf = open(self.work / "pop.log", "w")
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "routing.cli", "run", "-c", str(self.cfg)]
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        return self.proc.pid

    def api(self, path: str) -> Any:
        return api_call(self.sock, "GET", path)[1]

    def wait_api(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.api("/status")
                return
            except OSError:
                time.sleep(0.05)  # poll: the daemon is starting
        raise RuntimeError("pop-router API never answered")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.logf:
            self.logf.close()
            self.logf = None


def scrape(ns: str, names: tuple[str, ...] = ("pop_router_fib_write_seconds_count", "pop_router_fib_write_seconds_sum",
                                                "pop_router_gc_pause_seconds_count", "pop_router_gc_pause_seconds_sum",
                                                "pop_router_loop_lag_seconds_count",
                                                "pop_router_fib_operations_total")) -> dict[str, float]:
    """A few of the daemon's metrics (its endpoint listens inside the pop namespace): how many netlink
    batches carried the table (the trickle of 4-prefix UPDATEs makes many small ones), how many route
    operations (with several sessions, a prefix's install may be followed by replaces as its backup
    next hops arrive) and GC pauses."""
    import urllib.request

    with netns(ns):
        text = urllib.request.urlopen("http://127.0.0.1:19324/metrics", timeout=30).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return {k: round(v, 3) for k, v in out.items()}


def kernel_routes(ns: str, proto: int) -> int:
    with netns(ns):
        rs = RouteSocket()
    try:
        return len(rs.dump_owned(proto, 254))
    finally:
        rs.close()


class PySpy:
    """py-spy record (raw collapsed stacks) on a few PIDs; stopped with SIGINT so it writes its file."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def attach(self, pid: int, name: str) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{name}.txt"
        self.procs.append(subprocess.Popen(
            [str(PYSPY), "record", "--native", "--threads", "--rate", "50", "--format", "raw", "-o", str(out),
             "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        log(f"py-spy recording {name} (pid {pid}) -> {out}")

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


# --------------------------------------------------------------------------------------------------
# Table cases
# --------------------------------------------------------------------------------------------------

def run_pop_table(lab: Lab, n: int, peers: int, interpreter: str, processes: str, timeout_s: float,
                  pyspy: Path | None, updates: str = "raw") -> dict[str, Any]:
    customers = [Customer(f"t{j}", 64512 + j, ["64.0.0.0/4 le 24"], f"10.0.1.{2 + j}", table_local(j), n + 10)
                 for j in range(peers)]
    pop = PopRouter(lab.pop, lab.work, pop_yaml(lab.work, customers, interpreter, processes, updates=updates))
    feeder = Bird(lab.feed, lab.work, "feeder", feeder_table_conf(n, peers), wake=True)
    log(f"feeder: {n:,} prefixes x {peers} sessions")
    feeder.start()
    root = pop.start()
    spy = PySpy(pyspy)
    try:
        pop.wait_api()
        with Sampler(root) as smp:
            runs_on = pop.api("/status")["exabgp_processes"][0].get("runs_on")
            deadline = time.monotonic() + timeout_s
            t_up = None
            while time.monotonic() < deadline:
                ests = [p["since_monotonic"] for p in pop.api("/peers") if p["state"] == "established"]
                if ests:
                    t_up = min(ests)
                    break
                smp.mark_baseline()
                time.sleep(0.01)  # poll
            if t_up is None:
                raise RuntimeError("pop-router: no session came up")
            if pyspy is not None:
                spy.attach(root, f"daemon-{interpreter}-{peers}p")
                for pid, ps in list(smp.procs.items()):
                    if ps.role.startswith("relay") or (ps.role.startswith("exabgp") and interpreter == "cpython"):
                        spy.attach(pid, f"{ps.role}-{interpreter}-{peers}p")
            t_done = None
            last = 0.0
            while time.monotonic() < deadline:
                st = pop.api("/status")
                if st["fib_routes"] >= n and st["fib_pending"] == 0:
                    peers_now = pop.api("/peers")
                    if all(p["accepted"] >= n for p in peers_now):
                        t_done = time.monotonic()
                        break
                if time.monotonic() - last > 10:
                    last = time.monotonic()
                    log(f"pop-router: {st['fib_routes']:,} in FIB, relay backlog {st.get('relay_backlog')}")
                time.sleep(0.1)  # poll
            spy.stop()
            smp.sample()
        if t_done is None:
            raise RuntimeError(f"pop-router: not converged within {timeout_s} s")
        in_kernel = kernel_routes(lab.pop, POP_PROTO)
        status = pop.api("/status")
        try:
            metrics = scrape(lab.pop)
        except OSError as exc:
            metrics = {"error": str(exc)}  # type: ignore[dict-item]
        return {"s": round(t_done - t_up, 2), "in_kernel": in_kernel, "runs_on": runs_on, "metrics": metrics,
                "peak_total_mb": round(smp.peak_total / 2**20, 1), "procs": smp.by_role(),
                "relay_max_backlog": status.get("relay_backlog"), "loc_rib_prefixes": status["loc_rib_prefixes"],
                "cpu_s": round(sum(ps.cpu_s for ps in smp.procs.values()), 1)}
    finally:
        spy.stop()
        pop.stop()
        feeder.stop()
        sh("ip", "-n", lab.pop, "route", "flush", "proto", str(POP_PROTO), check=False)


def run_bird_table(lab: Lab, n: int, peers: int, timeout_s: float) -> dict[str, Any]:
    feeder = Bird(lab.feed, lab.work, "feeder", feeder_table_conf(n, peers), wake=True)
    pop = Bird(lab.pop, lab.work, "birdpop", bird_pop_table_conf(peers))
    log(f"feeder: {n:,} prefixes x {peers} sessions (BIRD as the PoP)")
    feeder.start()
    pop.start()
    assert pop.pid is not None
    try:
        with Sampler(pop.pid) as smp:
            deadline = time.monotonic() + timeout_s
            t_up = None
            while time.monotonic() < deadline:
                if pop.established():
                    t_up = time.monotonic()
                    break
                smp.mark_baseline()
                time.sleep(0.05)  # poll
            if t_up is None:
                raise RuntimeError("BIRD PoP: no session came up")
            t_done = None
            while time.monotonic() < deadline:
                if pop.routes("k4")[1] >= n and all(pop.routes(f"f{j}")[0] >= n for j in range(peers)):
                    t_done = time.monotonic()
                    break
                time.sleep(0.1)  # poll
            smp.sample()
        if t_done is None:
            raise RuntimeError(f"BIRD PoP: not converged within {timeout_s} s")
        in_kernel = kernel_routes(lab.pop, BIRD_PROTO)
        return {"s": round(t_done - t_up, 2), "in_kernel": in_kernel,
                "peak_total_mb": round(smp.peak_total / 2**20, 1), "procs": smp.by_role(),
                "cpu_s": round(sum(ps.cpu_s for ps in smp.procs.values()), 1)}
    finally:
        pop.stop()
        feeder.stop()
        sh("ip", "-n", lab.pop, "route", "flush", "proto", "bird", check=False)


def bytes_per_prefix(r: dict[str, Any], n: int, role_prefix: str = "") -> dict[str, float]:
    """Per role, in bytes: peak RSS / n ("total"), (peak - baseline) / n ("delta") and (RSS once the
    table is in - baseline) / n ("kept": what stays; delta - kept was transient)."""
    return {role: {"total": round(v["hwm_mb"] * 2**20 / n), "delta": round((v["peak_mb"] - v["baseline_mb"]) * 2**20 / n),
                   "kept": round((v.get("end_mb", 0.0) - v["baseline_mb"]) * 2**20 / n)}
            for role, v in r["procs"].items() if role.startswith(role_prefix)}


def print_table_case(title: str, n: int, rows: list[tuple[str, dict[str, Any]]]) -> None:
    print(f"\n### {title}: {n:,} prefixes\n")
    print("| PoP | seconds | in kernel | peak RSS sum MB | per process: VmHWM MB (baseline) | CPU s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        procs = ", ".join(f"{k} {v['hwm_mb']:.0f} ({v['baseline_mb']:.0f})" for k, v in r["procs"].items())
        print(f"| {name} | {r['s']:.2f} | {r['in_kernel']:,} | {r['peak_total_mb']:.0f} | {procs} | {r['cpu_s']} |")
    print()
    for name, r in rows:
        print(f"{name}: bytes per prefix (VmHWM / N, growth over baseline / N): {bytes_per_prefix(r, n)}")


# --------------------------------------------------------------------------------------------------
# Sessions case
# --------------------------------------------------------------------------------------------------

NEIGH = "/proc/sys/net/ipv4/neigh/default/gc_thresh{}"


@contextlib.contextmanager
def neighbour_table_for(entries: int, keep: bool) -> Iterator[None]:
    """Make the kernel's neighbour table big enough for ``entries`` for the run, then restore it.

    The table's hard limit (gc_thresh3, default 1,024) is shared by every namespace of the host: the
    PoP's and the feeder's namespaces hold one entry per session each, so 1,000 sessions need 2,000.
    Below that, sends fail with ENOBUFS and sessions die of hold-timer expiry (measured 2026-12-01:
    not converged in 150 s, 256 drops; with the limit raised: converged in 13.3 s, 0 drops), and so
    does every other namespace's traffic on the machine. A PoP with that many customers needs the same
    sysctls (README "Many sessions"); the run measures pop-router, not this lab artefact.
    """
    old = [int(Path(NEIGH.format(i)).read_text()) for i in (1, 2, 3)]
    want = [max(old[0], entries), max(old[1], 2 * entries), max(old[2], 4 * entries)]
    if keep or old[2] >= 2 * entries:
        yield
        return
    log(f"neighbour table: gc_thresh1-3 {old} -> {want} for this run (restored after)")
    try:
        for i, v in zip((3, 2, 1), (want[2], want[1], want[0]), strict=True):
            Path(NEIGH.format(i)).write_text(str(v))
        yield
    finally:
        for i, v in zip((1, 2, 3), old, strict=True):
            Path(NEIGH.format(i)).write_text(str(v))


def run_sessions(lab: Lab, sessions: int, pop_kind: str, interpreter: str, processes: str,
                 timeout_s: float, soak_s: float, soak_poll_s: float = 1.0,
                 exabgp_env: dict[str, str] | None = None, hold_s: int | None = None,
                 feeder_passive: bool = False, lean: str | None = None, settle_s: float = 0.0,
                 wildcard_listen: bool = False) -> dict[str, Any]:
    total = sum(len(session_prefixes(k)) for k in range(sessions))
    feeder = Bird(lab.feed, lab.work, "feeder",
                  feeder_sessions_conf(sessions, hold_s, feeder_passive, wildcard_listen))
    log(f"feeder: {sessions} sessions, {total:,} prefixes; PoP {pop_kind}")
    feeder.start()
    pop_r: PopRouter | None = None
    pop_b: Bird | None = None
    t0 = time.monotonic()
    if pop_kind == "pop-router":
        customers = [Customer(f"c{k}", 4200000000 + k, [f"{session_block(k)[1]} le 24"], session_addr(k),
                              session_local(k), 100) for k in range(sessions)]
        pop_r = PopRouter(lab.pop, lab.work,
                          pop_yaml(lab.work, customers, interpreter, processes, exabgp_env, hold_s, lean))
        root = pop_r.start()
        pop_r.wait_api()
    else:
        pop_b = Bird(lab.pop, lab.work, "birdpop", bird_pop_sessions_conf(sessions, hold_s))
        pop_b.start()
        assert pop_b.pid is not None
        root = pop_b.pid

    def state() -> tuple[int, int, int]:
        """(established, prefixes in the FIB, drops so far)."""
        if pop_r is not None:
            peers = pop_r.api("/peers")
            st = pop_r.api("/status")
            return (sum(p["state"] == "established" for p in peers), st["fib_routes"] if st["fib_pending"] == 0 else 0,
                    sum(p["flaps"] for p in peers))
        assert pop_b is not None
        out = pop_b.cmd("show", "protocols")
        est = sum(1 for ln in out.splitlines() if " BGP " in ln and "Established" in ln)
        return est, pop_b.routes("k4")[1], 0

    try:
        with Sampler(root, period_s=2.0) as smp:
            deadline = t0 + timeout_s
            t_est = t_conv = None
            est = fib = 0
            last = 0.0
            while time.monotonic() < deadline:
                est, fib, _ = state()
                now = time.monotonic()
                if est == sessions and t_est is None:
                    t_est = now
                if est == sessions and fib >= total:
                    t_conv = now
                    break
                if now - last > 10:
                    last = now
                    log(f"{pop_kind}: {est}/{sessions} established, {fib:,}/{total:,} in the FIB")
                time.sleep(0.25)  # poll
            # Settle: idle but not measured (PyPy's JIT compiles a loop after ~1,000 iterations: a lean
            # reactor makes ~20 passes a second, so right after convergence it still runs interpreted).
            settle_end = time.monotonic() + settle_s
            while time.monotonic() < settle_end:
                time.sleep(min(soak_poll_s, max(0.0, settle_end - time.monotonic())))  # poll: waiting out the settle
            # Soak: sessions that drop, and the CPU of every PoP process while nothing changes.
            est0, _, drops0 = state()
            downs_bird = 0
            kas = KeepaliveCapture(lab.pop, lab.work / f"ka-{pop_kind}-{sessions}.txt")
            role0 = smp.cpu_by_role()
            cpu0, w0 = sum(role0.values()), time.monotonic()
            min_est = est0
            while time.monotonic() < w0 + soak_s:
                time.sleep(soak_poll_s)  # poll: counting drops through the window
                e, _, _ = state()
                min_est = min(min_est, e)
            role1 = smp.cpu_by_role()
            cpu1, w1 = sum(role1.values()), time.monotonic()
            ka_gaps = kas.stop()
            est1, fib1, drops1 = state()
            lean_report = [p.get("lean_reactor") for p in pop_r.api("/status")["exabgp_processes"]] \
                if pop_r is not None else None
            if pop_b is not None:
                # BIRD: a session that went down and came back shows a recent "since"; count those not up,
                # and the lowest established count seen.
                downs_bird = est0 - min_est
            dropped = (drops1 - drops0) if pop_r is not None else downs_bird
        return {"sessions": sessions, "prefixes": total,
                "established_s": None if t_est is None else round(t_est - t0, 2),
                "converged_s": None if t_conv is None else round(t_conv - t0, 2),
                "established_at_timeout": est, "fib_at_timeout": fib,
                "soak_s": soak_s, "established_soak_start": est0, "established_soak_end": est1,
                "min_established_in_soak": min_est, "dropped_in_soak": dropped,
                "idle_cpu_pct": round(100 * (cpu1 - cpu0) / (w1 - w0), 1),
                "idle_cpu_pct_by_process": {r: round(100 * (role1[r] - role0.get(r, 0.0)) / (w1 - w0), 2)
                                            for r in sorted(role1)},
                "procs": smp.by_role(), "fib_end": fib1, "keepalive_gaps_s": ka_gaps, "lean_reactor": lean_report}
    finally:
        if pop_r is not None:
            pop_r.stop()
        if pop_b is not None:
            pop_b.stop()
        feeder.stop()
        sh("ip", "-n", lab.pop, "route", "flush", "proto", str(POP_PROTO), check=False)
        sh("ip", "-n", lab.pop, "route", "flush", "proto", "bird", check=False)


class KeepaliveCapture:
    """The PoP's keepalives on the wire during the soak: the longest gap between two a session sent.

    Why: a slower reactor (``exabgp.reactor_poll_s``) must not make keepalives late. tcpdump in the
    pop namespace captures outgoing TCP segments whose payload is exactly one 19-byte BGP message
    (a KEEPALIVE; an UPDATE is longer), timestamps per (source, destination).
    """

    FILTER = "tcp port 179 and (ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) == 19"

    def __init__(self, ns: str, out: Path) -> None:
        self.out = out
        self.f = open(out, "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", "v0", "-Q", "out", "-nn", "-tt", "-q",
                                      "-l", self.FILTER], stdout=self.f, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, Any]:
        """max / 99th percentile of the gaps, the keepalive count and how many sessions sent two or more."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.f.close()
        last: dict[str, float] = {}
        gaps: list[float] = []
        flows_with_gap: set[str] = set()
        count = 0
        for line in self.out.read_text().splitlines():
            parts = line.split()
            if len(parts) < 5 or parts[1] != "IP":
                continue
            count += 1
            t, flow = float(parts[0]), parts[2] + ">" + parts[4]
            if flow in last:
                gaps.append(t - last[flow])
                flows_with_gap.add(flow)
            last[flow] = t
        gaps.sort()
        return {"keepalives": count, "sessions_with_2": len(flows_with_gap),
                "max": round(gaps[-1], 3) if gaps else None,
                "p99": round(gaps[int(0.99 * (len(gaps) - 1))], 3) if gaps else None,
                "median": round(gaps[len(gaps) // 2], 3) if gaps else None}


# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def lab_for(work: Path, kind: str, count: int) -> Iterator[Lab]:
    lab = Lab(work)
    try:
        if kind == "table":
            lab.up([f"{table_local(j)}/24" for j in range(count)], [f"10.0.1.{2 + j}/24" for j in range(count)])
        else:
            lab.up([f"{session_local(k)}/15" for k in range(count)], [f"{session_addr(k)}/15" for k in range(count)])
        yield lab
    finally:
        lab.down()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1m,3peers,sessions")
    ap.add_argument("--keep-neigh-limits", action="store_true",
                    help="sessions: do not raise the kernel's neighbour-table limit for the run")
    ap.add_argument("--prefixes", type=int, default=1_000_000, help="table size of the 1m and 3peers cases")
    ap.add_argument("--packed-prefixes", type=int, default=100_000)
    ap.add_argument("--interpreters", default="pypy,cpython", help="ExaBGP interpreters for the 1m case")
    ap.add_argument("--processes", default="auto", help="exabgp.processes")
    ap.add_argument("--updates", default="raw", choices=("raw", "json"),
                    help="exabgp.updates of pop-router in the table cases (raw: the daemon decodes UPDATEs)")
    ap.add_argument("--sessions", default="200,1000")
    ap.add_argument("--converge-timeout", type=float, default=150.0, help="sessions case: seconds to converge")
    ap.add_argument("--soak", type=float, default=60.0, help="sessions case: seconds watched after convergence")
    ap.add_argument("--soak-poll", type=float, default=1.0,
                    help="sessions case: seconds between the soak's session counts (each is an API or birdc call)")
    ap.add_argument("--hold-time", type=int, default=None,
                    help="sessions case: hold time of every session, both sides (default: pop-router 90 s, BIRD 240 s)")
    ap.add_argument("--feeder-passive", action="store_true",
                    help="sessions case: the feeder BIRD only accepts (no connect race with the PoP)")
    ap.add_argument("--exabgp-env", default="",
                    help="sessions case: extra ExaBGP settings KEY=VALUE,... (pop.yaml exabgp.env), for sweeps")
    ap.add_argument("--lean-reactor", default="",
                    help="sessions case: pop-router variants run one after the other, e.g. on,off or on,on:0.1,off "
                         "(exabgp.lean_reactor, on:S also sets exabgp.lean_sweep_s); default: the configuration's")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="sessions case: seconds idle between convergence and the soak, not measured (JIT warm-up)")
    ap.add_argument("--rounds", type=int, default=1, help="sessions case: run the variants this many times, alternating")
    ap.add_argument("--table-timeout", type=float, default=900.0)
    ap.add_argument("--no-bird", action="store_true", help="skip BIRD-as-PoP (profiling runs)")
    ap.add_argument("--wildcard-listen", action="store_true",
                    help="sessions case: BIRD listens on one 0.0.0.0:179 socket (backlog 8), as before 2026-12-02: "
                         "reproduces the 30-65 s stragglers (see STRICT_BIND)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configurations) and say where")
    ap.add_argument("--pyspy", type=Path, default=None, help="record py-spy profiles into this directory")
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    exabgp_env = dict(kv.split("=", 1) for kv in args.exabgp_env.split(",") if kv)
    interpreters = args.interpreters.split(",")
    n = args.prefixes
    result: dict[str, Any] = {"load_start": loadavg()}
    if cases & {"1m", "3peers"}:
        result["prefixes"] = n
        result["updates"] = args.updates
    log(f"load average at start: {result['load_start']}")
    work = Path(tempfile.mkdtemp(prefix="pop-fulltable-"))
    try:
        if "1m" in cases:
            rows = []
            with lab_for(work, "table", 1) as lab:
                for interp in interpreters:
                    r = run_pop_table(lab, n, 1, interp, args.processes, args.table_timeout, args.pyspy, args.updates)
                    assert r["in_kernel"] == n, f"only {r['in_kernel']:,} of {n:,} in the kernel"
                    rows.append((f"pop-router, ExaBGP on {interp}", r))
                    log(f"pop-router ({interp}): {r['s']} s")
                if not args.no_bird:
                    rb = run_bird_table(lab, n, 1, args.table_timeout)
                    rows.append(("BIRD 2 as the PoP", rb))
                    log(f"BIRD: {rb['s']} s")
            print_table_case("1 session, 4 prefixes per UPDATE", n, rows)
            pop = rows[0][1]
            result["pop_1m_s"] = pop["s"]
            result["pop_1m_runs_on"] = pop["runs_on"]
            for name, r in rows[1:]:
                if "cpython" in name:
                    result["pop_1m_cpython_s"] = r["s"]
                    result["pypy_gain_1m"] = round(r["s"] / pop["s"], 2)
            result["pop_peak_mb"] = pop["peak_total_mb"]
            result["pop_bytes_per_prefix"] = round(pop["peak_total_mb"] * 2**20 / n)
            result["pop_bytes_per_prefix_by_process"] = bytes_per_prefix(pop, n)
            if not args.no_bird:
                b = rows[-1][1]
                result["bird_1m_s"] = b["s"]
                result["ratio_1m"] = round(pop["s"] / b["s"], 2)
                result["bird_peak_mb"] = b["peak_total_mb"]
                result["bird_bytes_per_prefix"] = round(b["peak_total_mb"] * 2**20 / n)
            result["table_1m"] = {name: r for name, r in rows}
        if "3peers" in cases:
            rows = []
            with lab_for(work, "table", 3) as lab:
                r = run_pop_table(lab, n, 3, interpreters[0], args.processes, args.table_timeout, args.pyspy,
                                  args.updates)
                assert r["in_kernel"] == n, f"only {r['in_kernel']:,} of {n:,} in the kernel"
                rows.append((f"pop-router, ExaBGP on {interpreters[0]}", r))
                log(f"pop-router 3 peers: {r['s']} s")
                if not args.no_bird:
                    rb = run_bird_table(lab, n, 3, args.table_timeout)
                    rows.append(("BIRD 2 as the PoP", rb))
                    log(f"BIRD 3 peers: {rb['s']} s")
            print_table_case("3 sessions with the same table", n, rows)
            result["pop_1m_3peers_s"] = rows[0][1]["s"]
            result["pop_3peers_bytes_per_prefix"] = round(rows[0][1]["peak_total_mb"] * 2**20 / n)
            result["pop_3peers_bytes_per_prefix_by_process"] = bytes_per_prefix(rows[0][1], n)
            if not args.no_bird:
                result["bird_1m_3peers_s"] = rows[1][1]["s"]
                result["ratio_1m_3peers"] = round(rows[0][1]["s"] / rows[1][1]["s"], 2)
                result["bird_3peers_bytes_per_prefix"] = round(rows[1][1]["peak_total_mb"] * 2**20 / n)
            result["table_3peers"] = {name: r for name, r in rows}
        if "packed" in cases:
            import ingest  # benchmarks/ingest.py: the same run, reused

            b = ingest.Bench(args.packed_prefixes, 0, work, interpreter=interpreters[0])
            try:
                b.setup()
                alone = b.exabgp_alone()
                pipe, in_kernel = b.pipeline()
            finally:
                b.teardown()
            assert in_kernel == args.packed_prefixes
            print(f"\n### packed: {args.packed_prefixes:,} prefixes, ExaBGP on {interpreters[0]}\n")
            print(f"ExaBGP alone {alone:.2f} s, pop-router {pipe:.2f} s, ratio {pipe / alone:.2f}")
            result.update({"packed_n": args.packed_prefixes, "packed_exabgp_alone_s": round(alone, 2),
                           "packed_pop_s": round(pipe, 2), "packed_ratio": round(pipe / alone, 2)})
        if "sessions" in cases:
            if exabgp_env:
                result["exabgp_env"] = exabgp_env
            if args.hold_time:
                result["hold_time_s"] = args.hold_time
            if args.feeder_passive:
                result["feeder_passive"] = True
            if args.settle:
                result["settle_s"] = args.settle
            print("\n### customer sessions (10-50 prefixes each)\n")
            print("| PoP | sessions | prefixes | all Established s | converged s | dropped in soak | soak s | idle CPU % of a core | processes: VmHWM MB |")
            print("|---|---|---|---|---|---|---|---|---|")
            variants = [v for v in args.lean_reactor.split(",") if v] or [None]
            for rnd in range(1, args.rounds + 1):
                for count in (int(x) for x in args.sessions.split(",")):
                    order = variants if rnd % 2 else variants[::-1]  # alternate which variant goes first
                    runs = [("pop-router", v) for v in order] + ([] if args.no_bird or rnd > 1 else [("bird", None)])
                    for kind, variant in runs:
                        with neighbour_table_for(2 * count, args.keep_neigh_limits), \
                                lab_for(work, "sessions", count) as lab:
                            r = run_sessions(lab, count, kind, interpreters[0], args.processes, args.converge_timeout,
                                             args.soak, args.soak_poll, exabgp_env, args.hold_time, args.feeder_passive,
                                             variant, args.settle, args.wildcard_listen)
                        procs = ", ".join(f"{k} {v['hwm_mb']:.0f}" for k, v in r["procs"].items())
                        name = kind if variant is None else f"{kind} (lean {variant}, round {rnd})"
                        print(f"| {name} | {count} | {r['prefixes']:,} | {r['established_s']} | {r['converged_s']} | "
                              f"{r['dropped_in_soak']} (min up {r['min_established_in_soak']}) | {r['soak_s']:.0f} | "
                              f"{r['idle_cpu_pct']} | {procs} |", flush=True)
                        tag = ("" if kind == "pop-router" else "bird_") + ("" if variant is None else f"{variant}#{rnd}_")
                        result[f"{tag}sessions_{count}_s"] = r["converged_s"]
                        result[f"{tag}sessions_{count}_established_s"] = r["established_s"]
                        result[f"{tag}sessions_{count}_dropped"] = r["dropped_in_soak"]
                        result[f"{tag}sessions_{count}_up_at_timeout"] = r["established_at_timeout"]
                        result[f"{tag}idle_cpu_pct_{count}"] = r["idle_cpu_pct"]
                        result[f"{tag}idle_cpu_pct_{count}_by_process"] = r["idle_cpu_pct_by_process"]
                        log(f"{name} {count}: idle CPU by process (% of a core) {r['idle_cpu_pct_by_process']}, "
                            f"keepalive gaps {r['keepalive_gaps_s']}, lean reactor {r['lean_reactor']}")
                        result[f"{tag}sessions_{count}_procs"] = r["procs"]
                        result[f"{tag}sessions_{count}_keepalive_gaps_s"] = r["keepalive_gaps_s"]
                        if r["lean_reactor"] is not None:
                            result[f"{tag}sessions_{count}_lean_reactor"] = r["lean_reactor"]
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["load_end"] = loadavg()
    log(f"load average at end: {result['load_end']}")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
