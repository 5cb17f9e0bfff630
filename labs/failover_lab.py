"""A PoP under load, for measuring failover through the whole daemon (benchmark and lab test).

Theory of operation
-------------------
Issue 9 asks whether a customer's traffic moves to its backup within BFD detection time while the
daemon is busy with another customer's table, and whether BFD stays Up meanwhile. Both
``benchmarks/failover.py`` and ``tests/integration/test_failover_load.py`` build the same PoP from
this module, so they measure the same thing.

Namespaces (``<prefix><role>``, the prefix unique per run, all deleted in :meth:`FailoverLab.down`)::

    S (sender) --p0-- P (pop-router run) --p1-- B (bridge br0) -- A:a1   acme primary  10.1.1.0/24
                                          --p2------------------- A:a2   acme backup   10.1.2.0/24
                                          --p3------------------- F:f0   feeder        10.1.3.0/24
                                          --p4------------------- G:g0   globex        10.1.4.0/24
                                          --p5------------------- K:k0   soak customers 10.60.0.0/16

- **acme** (BIRD, ``SCHED_FIFO`` 8, below our BFD process: see ``FailoverLab._bird``): BGP + BFD
  10 ms x 3 on both links, announces 20.0.0.0/24 on both, the backup with a longer AS_PATH;
  20.0.0.1 is on its loopback, where the receiver listens. Cutting the primary blocks B's port
  towards acme (``bridge link set dev bc state 0``): no interface event anywhere, only missing
  packets.
- **globex** (BIRD, ``SCHED_FIFO`` 8): BGP + BFD 10 ms x 3, untouched: any Down of it is false.
- **feeder** (BIRD, normal priority: it is the load): ``prefixes`` /24s from 32.0.0.0 sharing one
  attribute set, its session configured ``disabled`` and enabled when an ingest starts.
- **soak customers** (optional, one BIRD ``SCHED_FIFO`` 8 for all): N customers, each one session
  with BGP + BFD 10 ms x 3 on the same session.
- The PoP runs ``pop-router run`` (our BFD process ``SCHED_FIFO`` 10, real ExaBGP).

Traffic: a sender in S (``SCHED_FIFO`` 5) sends UDP to 20.0.0.1 at ``pps``, in 1 ms ticks; the
receiver in A records each datagram's kernel arrival time (``SO_TIMESTAMPNS``, carried to
CLOCK_MONOTONIC), its sequence number and the interface it came in on (``IP_PKTINFO``), so a gap is
measured by the kernel, not by when the receiver was scheduled, and traffic seen on ``a2`` proves it
moved to the backup. CLOCK_MONOTONIC is shared by every process on the machine, so the cut time here
and the daemon's ``bfd_down_at`` compare directly.

Every process is started here and stopped by PID; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import cpus
from labs.bird import logging_to_file
from routing.cli import api_call

#: Our BFD process's SCHED_FIFO priority in this lab, the customers' routers' (below it) and the
#: traffic sender's (below them).
BFD_RT_PRIORITY = 10
PEER_RT_PRIORITY = 8
SENDER_RT_PRIORITY = 5
#: The PoP's metrics endpoint, inside its namespace (pop.yaml and the scrapes agree through this).
METRICS_LISTEN = "127.0.0.1:19326"

ROOT = Path(__file__).resolve().parents[1]
ACME_PREFIX = "20.0.0.0/24"
ACME_ADDR = "20.0.0.1"
ACME_PRIMARY, ACME_BACKUP, FEEDER, GLOBEX = "10.1.1.2", "10.1.2.2", "10.1.3.2", "10.1.4.2"
FEED_BASE = 32 << 24  # 32.0.0.0: the feeder's /24s follow one another from here

SENDER = r"""
import os, socket, struct, sys, time
dst, pps, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((dst, 9999))
t0 = time.monotonic(); seq = 0
while True:
    now = time.monotonic()
    if now - t0 > dur:
        break
    due = int((now - t0) * pps) + 1
    while seq < due:
        try:
            s.send(struct.pack("!Qd", seq, now))
        except OSError:
            pass  # no route for a moment: the packet is lost, as on a real link
        seq += 1
    time.sleep(0.001)
"""

RECEIVER = r"""
import signal, socket, struct, sys, time
out, dur = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 23)
s.setsockopt(socket.SOL_SOCKET, 35, 1)        # SO_TIMESTAMPNS
s.setsockopt(socket.IPPROTO_IP, 8, 1)         # IP_PKTINFO
s.bind(("0.0.0.0", 9999)); s.settimeout(0.2)
rows = []
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
t0 = time.monotonic()
offset = time.time() - time.monotonic()
next_sync = 0.0
while not stop and time.monotonic() - t0 < dur:
    mono = time.monotonic()
    if mono >= next_sync:  # kernel stamps are CLOCK_REALTIME: follow any step of it
        offset, next_sync = time.time() - time.monotonic(), mono + 0.5
    try:
        data, anc, _f, _a = s.recvmsg(64, 256)
    except (socket.timeout, InterruptedError):
        continue
    arrived, ifindex = None, 0
    for level, kind, c in anc:
        if level == socket.SOL_SOCKET and kind == 35:
            sec, nsec = struct.unpack("=qq", c[:16]); arrived = sec + nsec / 1e9 - offset
        elif level == socket.IPPROTO_IP and kind == 8:
            ifindex = struct.unpack("=i", c[:4])[0]
    if arrived is None:
        arrived = time.monotonic()
    rows.append(struct.pack("=dQi", arrived, struct.unpack("!Q", data[:8])[0], ifindex))
open(out, "wb").write(b"".join(rows))
"""


def sh(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no samples)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def feed_prefix(i: int) -> str:
    a = FEED_BASE + (i << 8)
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.0/24"


@dataclass
class Arrival:
    at: float
    seq: int
    ifindex: int


@dataclass
class GapReport:
    """The traffic around one cut, from the receiver's kernel timestamps."""

    gap_ms: float            # largest inter-arrival gap from just before the cut on
    gap_start: float | None   # last arrival before that gap: when the path really stopped carrying
    resumed_at: float | None  # first arrival after that gap (CLOCK_MONOTONIC)
    resumed_via: str          # interface of the first packets after the gap
    lost: int                 # sequence numbers never received in the window
    received: int


@dataclass
class Stream:
    """A running sender/receiver pair; :meth:`stop` returns the arrivals."""

    lab: FailoverLab
    out: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> list[Arrival]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        data = self.out.read_bytes() if self.out.exists() else b""
        return [Arrival(*r) for r in struct.iter_unpack("=dQi", data)]


def gap_around(arrivals: list[Arrival], t_cut: float, names: dict[int, str], window_s: float = 10.0) -> GapReport:
    """Largest inter-arrival gap in [cut - 50 ms, cut + window]: the traffic lost to the failover.
    If nothing arrives after the cut, the gap runs to the end of the window (a lower bound)."""
    win = sorted((a for a in arrivals if t_cut - 0.05 <= a.at <= t_cut + window_s), key=lambda a: a.at)
    if not win:
        return GapReport(window_s * 1000, None, None, "", 0, 0)
    best, start, resumed = 0.0, None, None
    for a, b in itertools.pairwise(win):
        if b.at - a.at > best:
            best, start, resumed = b.at - a.at, a.at, b
    if win[-1].at < t_cut:  # nothing arrived after the cut: the gap lasts at least to the window's end
        best, start, resumed = t_cut + window_s - win[-1].at, win[-1].at, None
    seqs = sorted(a.seq for a in win)
    lost = (seqs[-1] - seqs[0] + 1 - len(set(seqs))) if seqs else 0
    return GapReport(best * 1000, start, resumed.at if resumed else None,
                     names.get(resumed.ifindex, "?") if resumed else "", lost, len(win))


class ApiProbe:
    """Polls ``GET /peers`` on the API socket every ``interval_s`` in a thread: latency samples
    (what an operator's ``show peers`` waits) and the latest document, for progress."""

    def __init__(self, sock: Path, interval_s: float = 0.05) -> None:
        self.sock = sock
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (monotonic start, latency s)
        self.errors = 0
        self.peers: dict[str, dict] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ApiProbe:
        self._t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._t.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                _, doc = api_call(self.sock, "GET", "/peers")
                self.peers = {p["peer"]: p for p in doc}
            except OSError:
                self.errors += 1
            dt = time.monotonic() - t0
            self.samples.append((t0, dt))
            self._stop.wait(max(0.0, self.interval_s - dt))

    def latencies_ms(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [dt * 1000 for t, dt in self.samples if since <= t <= until]


class FailoverLab:
    def __init__(self, prefixes: int, *, soak_customers: int = 0, pps: int = 10_000,
                 log: Callable[[str], None] = lambda _m: None, work: Path | None = None,
                 root: Path = ROOT) -> None:
        #: The checkout whose daemon (and BFD process) runs: another worktree measures "before".
        self.root = root
        self.prefixes = prefixes
        self.soak_customers = soak_customers
        self.pps = pps
        self.log = log
        self.tag = "fl" + uuid.uuid4().hex[:5]
        self.work = work or Path(tempfile.mkdtemp(prefix="pop-failover-lab-"))
        os.chmod(self.work, 0o755)
        roles = "spbafg" + ("k" if soak_customers else "")
        self.ns = {r: f"{self.tag}{r}" for r in roles}
        self.daemon: subprocess.Popen | None = None
        self.pidfiles: list[Path] = []
        self.sock = self.work / "api.sock"
        self.names: dict[int, str] = {}

    # --- plumbing --------------------------------------------------------------------------------
    def ip(self, role: str, *args: str) -> None:
        sh("ip", "-n", self.ns[role], *args)

    def nsx(self, role: str, *cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns[role], *cmd, check=check, timeout=timeout)

    def _link(self, a: str, a_if: str, b: str, b_if: str) -> None:
        sh("ip", "link", "add", a_if, "netns", self.ns[a], "type", "veth", "peer", "name", b_if, "netns", self.ns[b])

    def _addr(self, role: str, ifname: str, *addrs: str) -> None:
        for a in addrs:
            self.ip(role, "addr", "add", a, "dev", ifname)
        self.ip(role, "link", "set", ifname, "up")

    def _bird(self, role: str, name: str, conf: str, realtime: bool) -> None:
        path = self.work / f"{name}.conf"
        path.write_text(logging_to_file(conf, self.work / f"{name}.log"))  # never syslog: see labs/bird.py
        pid = self.work / f"{name}.pid"
        cmd = ["bird", "-c", str(path), "-s", str(self.work / f"{name}.ctl"), "-P", str(pid)]
        if realtime:
            # Customers' routers are other machines: they must not stall, neither behind other work nor
            # behind the PoP's FIB writer thread (its CPU runs long kernel sections, common/cpus.py).
            # Nor may they delay our BFD process, which they could not do from another machine: at the
            # same FIFO priority a BIRD thread that ran kept our BFD process waiting up to 144 ms on the
            # shared CPU (bpftrace, RESULTS.md "failover", 2026-12-01), and the peer's Downs of us that
            # followed were counted as ours. So they run just below it, above the traffic sender.
            cmd = ["chrt", "-f", str(PEER_RT_PRIORITY), *cmd]
            _writer, control = cpus.plan("auto", "auto")
            if control:
                cmd = ["taskset", "-c", ",".join(map(str, sorted(control))), *cmd]
        self.nsx(role, *cmd)
        self.pidfiles.append(pid)

    def birdc(self, name: str, *args: str) -> str:
        role = {"feeder": "f", "acme": "a", "globex": "g", "soak": "k"}[name]
        return self.nsx(role, "birdc", "-s", str(self.work / f"{name}.ctl"), *args).stdout

    # --- up / down -------------------------------------------------------------------------------
    def up(self, ready_timeout: float = 90) -> None:
        try:
            self._build()
            self._configs()
            self._start_daemon()
            self.wait_ready(ready_timeout)
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        for n in self.ns.values():
            sh("ip", "netns", "add", n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
        self._link("s", "s0", "p", "p0")
        self._link("p", "p1", "b", "bp")
        self._link("b", "bc", "a", "a1")
        self._link("p", "p2", "a", "a2")
        self._link("p", "p3", "f", "f0")
        self._link("p", "p4", "g", "g0")
        self.ip("b", "link", "add", "br0", "type", "bridge")
        for ifc in ("bp", "bc"):
            self.ip("b", "link", "set", ifc, "master", "br0")
            self.ip("b", "link", "set", ifc, "up")
        self.ip("b", "link", "set", "br0", "up")
        self._addr("s", "s0", "10.20.0.2/24")
        self._addr("p", "p0", "10.20.0.1/24")
        for i, (pif, role, rif) in enumerate((("p1", "a", "a1"), ("p2", "a", "a2"), ("p3", "f", "f0"),
                                              ("p4", "g", "g0")), start=1):
            self._addr("p", pif, f"10.1.{i}.1/24")
            self._addr(role, rif, f"10.1.{i}.2/24")
        self.ip("s", "route", "add", "default", "via", "10.20.0.1")
        self.ip("a", "addr", "add", f"{ACME_ADDR}/32", "dev", "lo")
        self.ip("a", "route", "add", "10.20.0.0/24", "via", "10.1.2.1")
        self.nsx("p", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for k in ("all", "default", "a1", "a2", "lo"):
            self.nsx("a", "sysctl", "-qw", f"net.ipv4.conf.{k}.rp_filter=0")
        if self.soak_customers:
            self._link("p", "p5", "k", "k0")
            n = self.soak_customers
            (self.work / "p5.batch").write_text("".join(f"addr add {self._soak_addr(i, 0)}/16 dev p5\n"
                                                        for i in range(n)) + "link set p5 up\n")
            (self.work / "k0.batch").write_text("".join(f"addr add {self._soak_addr(i, 1)}/16 dev k0\n"
                                                        for i in range(n)) + "link set k0 up\n")
            sh("ip", "-n", self.ns["p"], "-batch", str(self.work / "p5.batch"))
            sh("ip", "-n", self.ns["k"], "-batch", str(self.work / "k0.batch"))
        links = json.loads(sh("ip", "-n", self.ns["a"], "-json", "link").stdout)
        self.names = {ln["ifindex"]: ln["ifname"] for ln in links}

    @staticmethod
    def _soak_addr(i: int, side: int) -> str:
        return f"10.60.{side * 100 + i // 250}.{i % 250 + 1}"

    def _configs(self) -> None:
        bfd = '  interface "{p}*" {{ min rx interval 10 ms; min tx interval 10 ms; multiplier 3; }};\n'
        # BIRD waits 60-300 s after a session error before it reconnects (or accepts): a lab that
        # cuts links on purpose wants the sessions back in seconds.
        timers = "connect delay time 1; connect retry time 2; error wait time 1, 5;"
        self._timers = timers
        static = "protocol static s4 { ipv4; route %s blackhole; }\n"
        self._bird("a", "acme", (
            "router id 10.1.1.2;\nprotocol device {}\nprotocol bfd {\n" + bfd.format(p="a") + "}\n"
            + static % ACME_PREFIX
            + "protocol bgp link1 { local 10.1.1.2 as 64512; neighbor 10.1.1.1 as 65000; bfd on; " + timers + "\n"
              "  ipv4 { import none; export where source = RTS_STATIC; }; }\n"
              "protocol bgp link2 { local 10.1.2.2 as 64512; neighbor 10.1.2.1 as 65000; bfd on; " + timers + "\n"
              "  ipv4 { import none; export filter { if source != RTS_STATIC then reject;\n"
              "    bgp_path.prepend(64512); bgp_path.prepend(64512); accept; }; }; }\n"), realtime=True)
        self._bird("g", "globex", (
            "router id 10.1.4.2;\nprotocol device {}\nprotocol bfd {\n" + bfd.format(p="g") + "}\n"
            + static % "21.0.0.0/24"
            + "protocol bgp pop { local 10.1.4.2 as 64513; neighbor 10.1.4.1 as 65000; bfd on; " + timers + "\n"
              "  ipv4 { import none; export where source = RTS_STATIC; }; }\n"), realtime=True)
        routes = "".join(f"  route {feed_prefix(i)} unreachable;\n" for i in range(self.prefixes))
        self._bird("f", "feeder", (
            f"router id 10.1.3.2;\nprotocol device {{}}\nprotocol static s4 {{ ipv4;\n{routes}}}\n"
            "protocol bgp feed { disabled; local 10.1.3.2 as 64600; neighbor 10.1.3.1 as 65000; " + timers + "\n"
            "  ipv4 { import none; export where source = RTS_STATIC; }; }\n"), realtime=False)
        if self.soak_customers:
            conf = ["router id 10.60.100.1;\nprotocol device {}\nprotocol bfd {\n" + bfd.format(p="k") + "}\n"]
            for i in range(self.soak_customers):
                conf.append(
                    f"protocol static st{i} {{ ipv4; route 22.0.{i}.0/24 blackhole; }}\n"
                    f"protocol bgp c{i} {{ local {self._soak_addr(i, 1)} as {65100 + i}; "
                    f"neighbor {self._soak_addr(i, 0)} as 65000; bfd on; {timers}\n"
                    f"  ipv4 {{ import none; export where proto = \"st{i}\"; }}; }}\n")
            self._bird("k", "soak", "".join(conf), realtime=True)
        soak = "".join(
            f"  - name: soak{i}\n    asn: {65100 + i}\n    import: {{prefixes: [22.0.{i}.0/24]}}\n"
            f"    peers: [{{address: {self._soak_addr(i, 1)}, local_address: {self._soak_addr(i, 0)}}}]\n"
            for i in range(self.soak_customers))
        (self.work / "pop.yaml").write_text(f"""# generated by labs/failover_lab.py
router: {{asn: 65000, router_id: 192.0.2.1}}
api: {{socket: {self.sock}}}
metrics: {{listen: {METRICS_LISTEN}}}
exabgp: {{run_dir: {self.work}}}
log_level: WARNING
fib: {{protocol: 200}}
bfd: {{enabled: true, tx_interval_ms: 10, rx_interval_ms: 10, multiplier: 3, realtime_priority: {BFD_RT_PRIORITY}}}
customers:
  - name: acme
    asn: 64512
    import: {{prefixes: ["{ACME_PREFIX}"]}}
    peers:
      - {{address: {ACME_PRIMARY}, local_address: 10.1.1.1}}
      - {{address: {ACME_BACKUP}, local_address: 10.1.2.1}}
  - name: feeder
    asn: 64600
    import: {{prefixes: ["32.0.0.0/4 le 24"]}}
    bfd: {{enabled: false}}
    peers: [{{address: {FEEDER}, local_address: 10.1.3.1}}]
  - name: globex
    asn: 64513
    import: {{prefixes: [21.0.0.0/24]}}
    peers: [{{address: {GLOBEX}, local_address: 10.1.4.1}}]
{soak}""")

    def _start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            ["ip", "netns", "exec", self.ns["p"], sys.executable, "-m", "routing.cli", "run", "-c",
             str(self.work / "pop.yaml")], cwd=self.root, stdout=open(self.work / "pop.log", "w"),
            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(self.root)})

    def down(self) -> None:
        """Stop every process this lab started (by PID) and delete its namespaces."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        for pidf in self.pidfiles:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidf.read_text()), signal.SIGTERM)
        for n in self.ns.values():
            for pid in sh("ip", "netns", "pids", n, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", n, check=False)

    def cleanup_work(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    # --- observing ---------------------------------------------------------------------------------
    def api(self, path: str) -> Any:
        return api_call(self.sock, "GET", path)[1]

    def peers(self) -> dict[str, dict]:
        return {p["peer"]: p for p in self.api("/peers")}

    def downs_by_blame(self) -> dict[str, int]:
        """``pop_router_bfd_downs_total`` summed by blame, scraped inside the PoP's namespace: the
        daemon counts every Down event, where ``/bfd`` keeps only each session's last few."""
        code = f"import urllib.request;print(urllib.request.urlopen('http://{METRICS_LISTEN}/metrics').read().decode())"
        out: dict[str, int] = {}
        for line in self.nsx("p", sys.executable, "-c", code).stdout.splitlines():
            if line.startswith("pop_router_bfd_downs_total{"):
                labels, value = line.rsplit(" ", 1)
                blame = labels.split('blame="', 1)[1].split('"', 1)[0]
                out[blame] = out.get(blame, 0) + int(float(value))
        return out

    def bfd(self) -> dict[str, dict]:
        return {s["peer"]: s for s in self.api("/bfd")}

    def route_via(self, dst: str = ACME_ADDR) -> str:
        out = self.nsx("p", "ip", "-4", "route", "get", dst, check=False).stdout
        parts = out.split()
        return parts[parts.index("via") + 1] if "via" in parts else out.strip()

    def log_tail(self, n: int = 3000) -> str:
        p = self.work / "pop.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def failover_log_lines(self) -> list[str]:
        p = self.work / "pop.log"
        return [ln for ln in p.read_text(errors="replace").splitlines() if "groups rewritten" in ln] \
            if p.exists() else []

    def wait(self, fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = fn()
                if last:
                    return last
            except (OSError, KeyError, ValueError) as exc:
                last = exc
            if self.daemon is not None and self.daemon.poll() is not None:
                raise RuntimeError(f"pop-router exited ({self.daemon.returncode}):\n{self.log_tail()}")
            time.sleep(interval)  # poll
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}\n{self.log_tail()}")

    def bfd_peers(self) -> list[str]:
        return [ACME_PRIMARY, ACME_BACKUP, GLOBEX] + [self._soak_addr(i, 1) for i in range(self.soak_customers)]

    def _ready(self) -> bool:
        p, b = self.peers(), self.bfd()
        need = self.bfd_peers()
        return all(p[a]["state"] == "established" and b.get(a, {}).get("state") == "up" for a in need) \
            and self.route_via() == ACME_PRIMARY

    def wait_ready(self, timeout: float = 90) -> None:
        """Every BGP session with BFD Established and Up, acme's traffic on the primary."""
        self.wait(self._ready, timeout, "BGP Established, BFD Up and acme on its primary", interval=0.2)
        time.sleep(0.5)  # poll: let the Poll Sequences to the 10 ms rate complete

    def fib_routes(self) -> int:
        return int(self.api("/status")["fib_routes"])

    # --- acting ------------------------------------------------------------------------------------
    def cut(self) -> float:
        """Block acme's primary at the bridge; returns the CLOCK_MONOTONIC just before."""
        t = time.monotonic()
        self.nsx("b", "bridge", "link", "set", "dev", "bc", "state", "0")
        return t

    def heal(self) -> None:
        self.nsx("b", "bridge", "link", "set", "dev", "bc", "state", "3")

    def feeder(self, action: str) -> float:
        """``enable`` / ``disable`` / ``restart`` the feeder's session; returns the time of the request."""
        t = time.monotonic()
        self.birdc("feeder", action, "feed")
        return t

    def baseline_routes(self) -> int:
        return 2 + self.soak_customers  # acme's and globex's prefixes, one per soak customer

    def wait_drained(self, timeout: float) -> None:
        self.wait(lambda: self.fib_routes() <= self.baseline_routes(), timeout, "the feeder's routes withdrawn",
                  interval=0.5)

    def start_stream(self, duration_s: float) -> Stream:
        (self.work / "send.py").write_text(SENDER)
        (self.work / "recv.py").write_text(RECEIVER)
        out = self.work / f"rx-{time.monotonic_ns()}.bin"
        recv = subprocess.Popen(["ip", "netns", "exec", self.ns["a"], sys.executable, str(self.work / "recv.py"),
                                 str(out), str(duration_s + 5)])
        time.sleep(0.3)  # poll: the receiver binds before the first packet
        send = subprocess.Popen(["ip", "netns", "exec", self.ns["s"], "chrt", "-f", str(SENDER_RT_PRIORITY),
                                 sys.executable, str(self.work / "send.py"), ACME_ADDR, str(self.pps), str(duration_s)])
        return Stream(self, out, [send, recv])

    def gap(self, arrivals: list[Arrival], t_cut: float, window_s: float = 10.0) -> GapReport:
        return gap_around(arrivals, t_cut, self.names, window_s)

    def detection(self, t_cut: float, timeout: float = 20) -> float:
        """CLOCK_MONOTONIC of our BFD Down of acme's primary after ``t_cut``: the daemon's
        ``bfd_down_at`` when it has handled the event, else the BFD process's own report."""
        def seen() -> float | None:
            at = self.peers()[ACME_PRIMARY].get("bfd_down_at")
            if at is not None and at > t_cut:
                return float(at)
            for d in self.bfd().get(ACME_PRIMARY, {}).get("downs") or []:
                if d["at"] > t_cut:
                    return float(d["at"])
            return None
        return float(self.wait(seen, timeout, "acme's primary BFD Down", interval=0.02))


@dataclass
class DownRecord:
    """One BFD Down as the BFD process attributed it (keys of ``show bfd --json`` ``downs``)."""

    peer: str
    at: float
    diag: str
    blame: str
    rx_gap_ms: float | None
    max_rx_gap_ms: float | None
    max_tx_gap_ms: float | None
    peer_detect_time_ms: float | None
    remote_diag: str
    loop_lag_ms: float | None
    host_steal_ms: float | None = None
    max_tx_gap_read_ms: float | None = None
    #: The BFD process's blame under the rule before 2026-12-01 (our send gap counted up to when we
    #: read the peer's Down, not to its arrival), for comparisons with earlier runs.
    blame_by_read_time: str | None = None

    def ours_by_read_time(self) -> bool:
        return (self.blame_by_read_time or self.blame) == "us"

    def line(self) -> str:
        return (f"{self.peer} {self.diag} blame={self.blame} rx_gap={self.rx_gap_ms} ms "
                f"max_rx_gap={self.max_rx_gap_ms} ms max_tx_gap={self.max_tx_gap_ms} ms "
                f"(peer detects at {self.peer_detect_time_ms} ms, its diag {self.remote_diag}) "
                f"loop_lag={self.loop_lag_ms} ms host_steal={self.host_steal_ms} ms "
                f"max_tx_gap_read={self.max_tx_gap_read_ms} ms")


class DownWatcher:
    """Collects every BFD Down the BFD process reports (polling ``/bfd`` every ``interval_s``;
    each session keeps its last few reports, so none is missed between polls) and counts flaps."""

    def __init__(self, lab: FailoverLab, interval_s: float = 0.5) -> None:
        self.lab = lab
        self.interval_s = interval_s
        self.records: dict[tuple[str, float], DownRecord] = {}
        self.flaps0: dict[str, int] = {}
        self.flaps1: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _poll(self) -> None:
        with contextlib.suppress(OSError):
            for peer, s in self.lab.bfd().items():
                if peer not in self.flaps0:
                    self.flaps0[peer] = s.get("flaps", 0)
                self.flaps1[peer] = s.get("flaps", 0)
                for d in s.get("downs") or []:
                    self.records.setdefault((peer, d["at"]), DownRecord(
                        peer, d["at"], d.get("diag", ""), d.get("blame", "?"), d.get("rx_gap_ms"),
                        d.get("max_rx_gap_ms"), d.get("max_tx_gap_ms"), d.get("peer_detect_time_ms"),
                        d.get("remote_diag", ""), d.get("loop_lag_ms"), d.get("host_steal_ms"),
                        d.get("max_tx_gap_read_ms"), d.get("blame_by_read_time")))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> DownWatcher:
        self._poll()
        self.t0 = time.monotonic()
        self._t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._t.join(timeout=15)
        self._poll()

    def downs(self, peers: set[str] | None = None, since: float | None = None,
              until: float | None = None) -> list[DownRecord]:
        lo = self.t0 if since is None else since
        return sorted((r for r in self.records.values() if r.at >= lo and (until is None or r.at <= until)
                       and (peers is None or r.peer in peers)), key=lambda r: r.at)

    def flaps(self, peers: set[str] | None = None) -> int:
        """Up -> Down transitions counted by the BFD process meanwhile (also those not in ``downs``)."""
        return sum(self.flaps1.get(p, 0) - self.flaps0.get(p, 0) for p in self.flaps1
                   if peers is None or p in peers)


@contextlib.contextmanager
def failover_lab(prefixes: int, **kw: Any) -> Iterator[FailoverLab]:
    """A lab that is always taken down; its work directory (logs) is removed only on success."""
    lab = FailoverLab(prefixes, **kw)
    try:
        lab.up()
        yield lab
    except BaseException:
        lab.down()
        raise
    lab.down()
    lab.cleanup_work()
