#!/usr/bin/env python3
"""BFD benchmark: detection time against FRR bfdd and BIRD, and soak tests with many sessions.

    .venv/bin/python benchmarks/bfd.py [--cuts 50] [--soak-s 60] [--skip-detect] [--skip-soak]
    .venv/bin/python benchmarks/bfd.py --cpu-only [--sessions 53] [--cpu-s 25] [--runs 3]
                                       [--code /work/main --code .] [--pyspy DIR]

1. Detection (10 ms x 3). Our BFD process (SCHED_FIFO) peers with BIRD and with FRR bfdd, each
   through a bridge in a third namespace. Each cut blocks both bridge ports at once (no interface
   event anywhere). Every interface is captured with tcpdump; for each side and cut, detection
   latency = first Down packet it sends (diag 1) - last packet it received. The same method measures
   us, FRR and BIRD in the same run.
2. Soak. The whole daemon (`pop-router run`, BFD process SCHED_FIFO) holds N sessions against a
   BIRD that runs only BFD, for --soak-s seconds, while a second BIRD feeds it 100,000 prefixes
   over BGP (twice: at the start and in the middle of the window). Counts Up->Down transitions
   (false Downs: nothing was cut) and CPU per BFD packet of our BFD process and of BIRD.
3. ``--cpu-only`` (issue 9: CPU per packet). Our BFD process alone, started as the daemon starts it
   (``python -m bfd.process SOCKET --realtime 10``, driven over its socket by a small harness), holds
   N sessions at 10 ms x 3 against one BIRD that runs only BFD in another namespace, for --cpu-s
   seconds once every session is Up. Reports our µs of CPU per packet (tx + rx, from /proc), BIRD's,
   the ratio, our largest timer lag (rolling maximum from the stats) and false Downs. ``--code DIR``
   (repeatable) runs the BFD process of another checkout: with two of them the runs alternate
   within one invocation, so a noisy machine hits both alike; compare medians and ratios.

Prints tables and ends with RESULT {json}. Needs root, FRR and BIRD.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bfd.packet import DecodeError, Diag, State, decode  # noqa: E402
from labs.bird import logging_to_file  # noqa: E402
from routing.cli import api_call  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr}")
    return p


def nsx(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *cmd, check=check)


def proc_cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def proc_sys_s(pid: int) -> float:
    """The kernel part of proc_cpu_s (system calls, and the softirq work charged to them)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[12]) / CLK_TCK


def read_pcap(path: Path) -> list[tuple[float, str, Any]]:
    """(timestamp, source IPv4, decoded BFD packet) for every BFD packet in a pcap (Linux SLL2)."""
    d = path.read_bytes()
    if len(d) < 24:
        return []
    magic, = struct.unpack_from("<I", d, 0)
    linktype, = struct.unpack_from("<I", d, 20)
    off, out = 24, []
    while off + 16 <= len(d):
        ts, tu, incl, _orig = struct.unpack_from("<IIII", d, off)
        off += 16
        pkt = d[off: off + incl]
        off += incl
        l2 = 20 if linktype == 276 else 14  # SLL2 or Ethernet
        ip = pkt[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 15) * 4
        try:
            p = decode(ip[ihl + 8:])
        except DecodeError:
            continue
        out.append((ts + tu / (1e9 if magic == 0xA1B23C4D else 1e6), ".".join(map(str, ip[12:16])), p))
    return out


def latencies(pkts: list, me: str, cuts: list[tuple[float, float]]) -> list[float]:
    """Per cut: first Down (detection expired) sent by `me` after the cut - last packet `me` received."""
    out = []
    for t_cut, t_heal in cuts:
        downs = [t for t, src, p in pkts if src == me and t_cut - 0.2 < t < t_heal + 0.5 and p.state == State.DOWN
                 and p.diag == Diag.CONTROL_DETECTION_TIME_EXPIRED]
        if not downs:
            continue
        down = min(downs)
        rx = [t for t, src, _p in pkts if src != me and t < down and t > t_cut - 1.0]
        if rx:
            out.append((down - max(rx)) * 1000)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


class BfdHarness:
    """Plays the daemon's side of the BFD process protocol (a Unix socket of JSON lines)."""

    def __init__(self, ns: str, work: Path, specs: list[dict], code: Path = ROOT) -> None:
        import socket as s

        self.path = work / "bfd.sock"
        self.srv = s.socket(s.AF_UNIX, s.SOCK_STREAM)
        self.srv.bind(str(self.path))
        self.srv.listen(1)
        env = {**os.environ, "PYTHONPATH": str(code)}
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "bfd.process", str(self.path),
                                      "--realtime", "10"], cwd=code, env=env, stdout=open(work / "bfd.log", "w"),
                                     stderr=subprocess.STDOUT)
        self.conn, _ = self.srv.accept()
        self.conn.sendall(json.dumps({"op": "sessions", "sessions": specs}).encode() + b"\n")
        self.conn.setblocking(False)
        self.buf = b""
        self.stats: dict = {}
        self.snapshots: list[dict] = []
        #: Transitions out of Up by the process's attribution (blame), since the last clear.
        self.blames: Counter[str] = Counter()

    def poll(self) -> None:
        while True:
            try:
                data = self.conn.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            m = json.loads(line)
            if m.get("event") == "stats":
                self.stats = m
                self.snapshots.append(m)
            elif m.get("event") == "state" and m.get("old") == "up":
                self.blames[m.get("blame", "?")] += 1

    def states(self) -> dict[str, str]:
        self.conn.setblocking(True)
        self.conn.sendall(b'{"op": "stats"}\n')
        self.conn.setblocking(False)
        time.sleep(0.02)  # poll: the answer arrives within the process's next loop turn
        self.poll()
        return {s["peer"]: s["state"] for s in self.stats.get("sessions", [])}

    def close(self) -> None:
        # Keep reading while it stops: its last writes (AdminDown events, stats of N sessions) wait
        # for us, and asyncio's close() flushes them before the process can exit.
        self.proc.terminate()
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.poll()
            time.sleep(0.05)  # poll
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()
        self.srv.close()


def detect_bench(work: Path, cuts: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:5]
    P, S, B, F = (f"bb{tag}{x}" for x in "psbf")
    procs: list[subprocess.Popen] = []
    try:
        for ns in (P, S, B, F):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", S, "link", "add", "br1", "type", "bridge")
        sh("ip", "-n", S, "link", "add", "br2", "type", "bridge")
        for a_ns, a_if, s_if, br in ((P, "pb", "spb", "br1"), (B, "b0", "sb", "br1"), (P, "pf", "spf", "br2"),
                                     (F, "f0", "sf", "br2")):
            sh("ip", "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", s_if, "netns", S)
            sh("ip", "-n", S, "link", "set", s_if, "master", br)
            sh("ip", "-n", S, "link", "set", s_if, "up")
            sh("ip", "-n", a_ns, "link", "set", a_if, "up")
        for br in ("br1", "br2"):
            sh("ip", "-n", S, "link", "set", br, "up")
        sh("ip", "-n", P, "addr", "add", "10.9.1.1/24", "dev", "pb")
        sh("ip", "-n", B, "addr", "add", "10.9.1.2/24", "dev", "b0")
        sh("ip", "-n", P, "addr", "add", "10.9.2.1/24", "dev", "pf")
        sh("ip", "-n", F, "addr", "add", "10.9.2.2/24", "dev", "f0")
        # BIRD, BFD only.
        (work / "bird.conf").write_text(logging_to_file('router id 10.9.1.2;\nprotocol device {}\nprotocol bfd {\n'
                                        '  interface "b0" { min rx interval 10 ms; min tx interval 10 ms; multiplier 3; };\n'
                                        '  neighbor 10.9.1.1 dev "b0";\n}\n', work / "bird.log"))
        nsx(B, "bird", "-c", str(work / "bird.conf"), "-s", str(work / "bird.ctl"), "-P", str(work / "bird.pid"))
        # FRR bfdd standalone.
        fdir = work / "frr"
        fdir.mkdir()
        (fdir / "bfdd.conf").write_text("bfd\n peer 10.9.2.1 local-address 10.9.2.2\n  detect-multiplier 3\n"
                                        "  receive-interval 10\n  transmit-interval 10\n exit\nexit\n")
        shutil.chown(fdir, "frr", "frr")
        shutil.chown(fdir / "bfdd.conf", "frr", "frr")
        procs.append(subprocess.Popen(["ip", "netns", "exec", F, "/usr/lib/frr/bfdd", "-f", str(fdir / "bfdd.conf"),
                                       "-i", str(fdir / "bfdd.pid"), "--vty_socket", str(fdir),
                                       "--bfdctl", str(fdir / "bfdd.sock")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        caps = {"pop_b": (P, "pb"), "pop_f": (P, "pf"), "bird": (B, "b0"), "frr": (F, "f0")}
        for name, (ns, ifname) in caps.items():
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-q", "-n", "-i", ifname, "-w",
                                           str(work / f"{name}.pcap"), "-U", "udp port 3784"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        spec = {"tx_ms": 10, "rx_ms": 10, "mult": 3}
        h = BfdHarness(P, work, [{"peer": "10.9.1.2", "local": "10.9.1.1", **spec},
                                 {"peer": "10.9.2.2", "local": "10.9.2.1", **spec}])
        windows: list[tuple[float, float]] = []
        try:
            for i in range(cuts):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    st = h.states()
                    if st and all(v == "up" for v in st.values()) and len(st) == 2:
                        break
                    time.sleep(0.05)  # poll
                else:
                    raise RuntimeError(f"sessions did not come back before cut {i}: {st}")
                time.sleep(0.3 + random.random() * 0.2)  # poll: settle at the fast rate, cut at a random phase
                t0 = time.time()
                nsx(S, "sh", "-c", "bridge link set dev sb state 0; bridge link set dev sf state 0")
                time.sleep(0.25)  # poll: longer than every detection time (30 ms)
                t1 = time.time()
                nsx(S, "sh", "-c", "bridge link set dev sb state 3; bridge link set dev sf state 3")
                windows.append((t0, t1))
                print(f"  cut {i + 1}/{cuts}", end="\r", flush=True)
        finally:
            h.close()
        print()
        time.sleep(0.5)  # poll: let tcpdump flush its last packets
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=10)
        bird_pid = work / "bird.pid"
        if bird_pid.exists():
            os.kill(int(bird_pid.read_text()), signal.SIGTERM)
        for ns in (P, S, B, F):
            sh("ip", "netns", "del", ns, check=False)
    ours = latencies(read_pcap(work / "pop_b.pcap"), "10.9.1.1", windows) + \
        latencies(read_pcap(work / "pop_f.pcap"), "10.9.2.1", windows)
    bird = latencies(read_pcap(work / "bird.pcap"), "10.9.1.2", windows)
    frr = latencies(read_pcap(work / "frr.pcap"), "10.9.2.2", windows)
    return {"ours": ours, "bird": bird, "frr": frr, "cuts": len(windows)}


def soak_bench(work: Path, n: int, interval_ms: int, soak_s: float, prefixes: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:5]
    P, B = f"bs{tag}p", f"bs{tag}b"
    d = None
    birds: list[Path] = []
    try:
        for ns in (P, B):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "v0", "netns", P, "type", "veth", "peer", "name", "v1", "netns", B)
        batch_p = "\n".join(f"addr add 10.10.0.{i + 1}/16 dev v0" if i < 254 else
                            f"addr add 10.10.3.{i - 253}/16 dev v0" for i in range(n))
        batch_b = "\n".join(f"addr add 10.10.1.{i + 1}/16 dev v1" if i < 254 else
                            f"addr add 10.10.4.{i - 253}/16 dev v1" for i in range(n))
        (work / "p.batch").write_text(batch_p + "\naddr add 10.10.2.1/16 dev v0\nlink set v0 up\n")
        (work / "b.batch").write_text(batch_b + "\naddr add 10.10.2.2/16 dev v1\nlink set v1 up\n")
        sh("ip", "-n", P, "-batch", str(work / "p.batch"))
        sh("ip", "-n", B, "-batch", str(work / "b.batch"))
        pairs = [((f"10.10.0.{i + 1}" if i < 254 else f"10.10.3.{i - 253}"),
                  (f"10.10.1.{i + 1}" if i < 254 else f"10.10.4.{i - 253}")) for i in range(n)]
        # BIRD #1: BFD only (its CPU per packet is measured); BIRD #2: the BGP feed.
        neigh = "\n".join(f'  neighbor {p_addr} dev "v1" local {b_addr};' for p_addr, b_addr in pairs)
        (work / "bird-bfd.conf").write_text(logging_to_file(
            f'router id 10.10.1.1;\nprotocol device {{}}\nprotocol bfd {{\n  interface "v1" {{ min rx interval '
            f'{interval_ms} ms; min tx interval {interval_ms} ms; multiplier 3; }};\n{neigh}\n}}\n', work / "bird-bfd.log"))
        routes = "\n".join(f"  route {20 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24 unreachable;"
                           for i in range(prefixes))
        (work / "bird-bgp.conf").write_text(logging_to_file(
            f"router id 10.10.2.2;\nprotocol device {{}}\nprotocol static s4 {{ ipv4;\n{routes}\n}}\n"
            "protocol bgp feed { disabled; local 10.10.2.2 as 64512; neighbor 10.10.2.1 as 65000;\n"
            "  ipv4 { import none; export where source = RTS_STATIC; }; }\n", work / "bird-bgp.log"))
        for name in ("bird-bfd", "bird-bgp"):
            nsx(B, "bird", "-c", str(work / f"{name}.conf"), "-s", str(work / f"{name}.ctl"), "-P",
                str(work / f"{name}.pid"))
            birds.append(work / f"{name}.pid")
        bird_bfd_pid = int((work / "bird-bfd.pid").read_text())
        peers = "\n".join(f"      - {{address: {b_addr}, local_address: {p_addr}, passive: true}}"
                          for p_addr, b_addr in pairs)
        sock = work / "api.sock"
        (work / "pop.yaml").write_text(f"""router: {{asn: 65000, router_id: 192.0.2.1}}
api: {{socket: {sock}}}
metrics: {{listen: 127.0.0.1:19325}}
exabgp: {{run_dir: {work}}}
log_level: WARNING
bfd: {{enabled: true, tx_interval_ms: {interval_ms}, rx_interval_ms: {interval_ms}, multiplier: 3, realtime_priority: 10}}
customers:
  - name: feed
    asn: 64512
    import: {{prefixes: ["20.0.0.0/7 le 24"]}}
    bfd: {{enabled: false}}
    peers: [{{address: 10.10.2.2, local_address: 10.10.2.1}}]
  - name: bfdonly
    asn: 64513
    import: {{prefixes: ["203.0.113.0/24"]}}
    peers:
{peers}
""")
        d = subprocess.Popen(["ip", "netns", "exec", P, sys.executable, "-m", "routing.cli", "run", "-c",
                              str(work / "pop.yaml")], cwd=ROOT, stdout=open(work / "pop.log", "w"),
                             stderr=subprocess.STDOUT)

        def bfd_view() -> list[dict]:
            return api_call(sock, "GET", "/bfd")[1]

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                v = bfd_view()
                if len(v) == n and all(s["state"] == "up" for s in v):
                    break
            except OSError:
                pass
            time.sleep(0.2)  # poll
        else:
            states = {}
            try:
                for s in bfd_view():
                    states[s["state"]] = states.get(s["state"], 0) + 1
            except OSError as exc:
                states = {"api": str(exc)}
            log = (work / "pop.log").read_text()[-3000:]
            raise RuntimeError(f"BFD sessions did not all come up: {states}\n{log}")
        time.sleep(1.0)  # poll: let the Poll Sequences to the fast rate finish
        v0 = bfd_view()
        st0 = api_call(sock, "GET", "/status")[1]
        bfd_pid = st0["bfd_pid"]
        cpu0, bird0 = proc_cpu_s(bfd_pid), proc_cpu_s(bird_bfd_pid)
        pk0 = sum(s["tx_packets"] + s["rx_packets"] for s in v0)
        flaps0 = sum(s["flaps"] for s in v0)
        t0 = time.monotonic()
        ingests = 0
        for at in (2.0, soak_s / 2):
            while time.monotonic() - t0 < at:
                time.sleep(0.1)  # poll
            nsx(B, "birdc", "-s", str(work / "bird-bgp.ctl"), "disable", "feed")
            nsx(B, "birdc", "-s", str(work / "bird-bgp.ctl"), "enable", "feed")
            ingests += 1
        fib_max = 0
        while time.monotonic() - t0 < soak_s:
            fib_max = max(fib_max, api_call(sock, "GET", "/status")[1]["fib_routes"])
            time.sleep(0.5)  # poll
        v1 = bfd_view()
        cpu1, bird1 = proc_cpu_s(bfd_pid), proc_cpu_s(bird_bfd_pid)
        assert api_call(sock, "GET", "/status")[1]["bfd_pid"] == bfd_pid, "the BFD process restarted"
        packets = sum(s["tx_packets"] + s["rx_packets"] for s in v1) - pk0
        return {
            "sessions": n, "interval_ms": interval_ms, "seconds": round(time.monotonic() - t0, 1),
            "false_downs": sum(s["flaps"] for s in v1) - flaps0,
            "down_now": sum(1 for s in v1 if s["state"] != "up"),
            "packets": packets, "ingests": ingests, "fib_routes_max": fib_max,
            "cpu_us_per_packet": (cpu1 - cpu0) / packets * 1e6 if packets else None,
            "bird_cpu_us_per_packet": (bird1 - bird0) / packets * 1e6 if packets else None,
        }
    finally:
        if d is not None:
            d.terminate()
            d.wait()
        for pidf in birds:
            if pidf.exists():
                os.kill(int(pidf.read_text()), signal.SIGTERM)
        for ns in (P, B):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)


def cpu_bench(work: Path, n: int, interval_ms: int, seconds: float, code: Path,
              pyspy: Path | None = None) -> dict[str, Any]:
    """Our BFD process alone against a BIRD that runs only BFD: CPU per packet of each (see above)."""
    tag = uuid.uuid4().hex[:6]
    P, B = f"bfdcpu-{tag}-p", f"bfdcpu-{tag}-b"
    h: BfdHarness | None = None
    pidf = work / "bird.pid"
    try:
        for ns in (P, B):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "v0", "netns", P, "type", "veth", "peer", "name", "v1", "netns", B)
        pairs = [(f"10.11.{i >> 8}.{(i & 255) + 1}", f"10.12.{i >> 8}.{(i & 255) + 1}") for i in range(n)]
        (work / "p.batch").write_text("".join(f"addr add {a}/8 dev v0\n" for a, _ in pairs) + "link set v0 up\n")
        (work / "b.batch").write_text("".join(f"addr add {b}/8 dev v1\n" for _, b in pairs) + "link set v1 up\n")
        sh("ip", "-n", P, "-batch", str(work / "p.batch"))
        sh("ip", "-n", B, "-batch", str(work / "b.batch"))
        neigh = "\n".join(f'  neighbor {a} dev "v1" local {b};' for a, b in pairs)
        (work / "bird.conf").write_text(logging_to_file(
            f'router id 10.12.0.1;\nprotocol device {{}}\nprotocol bfd {{\n  interface "v1" {{ min rx interval '
            f'{interval_ms} ms; min tx interval {interval_ms} ms; multiplier 3; }};\n{neigh}\n}}\n', work / "bird.log"))
        nsx(B, "bird", "-c", str(work / "bird.conf"), "-s", str(work / "bird.ctl"), "-P", str(pidf))
        bird_pid = int(pidf.read_text())
        spec = {"tx_ms": interval_ms, "rx_ms": interval_ms, "mult": 3, "interface": "v0"}
        h = BfdHarness(P, work, [{"peer": b, "local": a, **spec} for a, b in pairs], code=code)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            st = h.states()
            if len(st) == n and all(v == "up" for v in st.values()):
                break
            time.sleep(0.2)  # poll
        else:
            raise RuntimeError(f"sessions did not all come up: {sorted(h.states().values())}")
        time.sleep(1.5)  # poll: the Poll Sequences to the fast rate end, and the start-up leaves the lag window
        h.states()
        s0 = h.stats
        cpu0, bird0, t0 = proc_cpu_s(h.proc.pid), proc_cpu_s(bird_pid), time.monotonic()
        sys0, bird_sys0 = proc_sys_s(h.proc.pid), proc_sys_s(bird_pid)
        h.snapshots.clear()
        h.blames.clear()
        spy = None
        if pyspy is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(h.proc.pid),
                                    "-r", "500", "-d", str(int(seconds)), "--nonblocking", "-f", "raw", "-o", str(pyspy)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)  # poll: the process sends its stats every second
            h.poll()
        cpu1, bird1, t1 = proc_cpu_s(h.proc.pid), proc_cpu_s(bird_pid), time.monotonic()
        sys1, bird_sys1 = proc_sys_s(h.proc.pid), proc_sys_s(bird_pid)
        h.states()
        s1 = h.stats
        if spy is not None:
            spy.wait(timeout=seconds + 30)

        def total(st: dict, k: str) -> int:
            return sum(x[k] for x in st["sessions"])

        packets = total(s1, "tx_packets") + total(s1, "rx_packets") - total(s0, "tx_packets") - total(s0, "rx_packets")
        lags = [x["timer_lag_ms"] or 0.0 for x in [*h.snapshots, s1]]
        ours = (cpu1 - cpu0) / packets * 1e6
        bird = (bird1 - bird0) / packets * 1e6
        return {
            "code": str(code), "sessions": n, "interval_ms": interval_ms, "seconds": round(t1 - t0, 1),
            "packets": packets, "pps": round(packets / (t1 - t0)), "cpu_us_per_packet": round(ours, 2),
            "bird_cpu_us_per_packet": round(bird, 2), "ratio": round(ours / bird, 2),
            "sys_us_per_packet": round((sys1 - sys0) / packets * 1e6, 2),
            "bird_sys_us_per_packet": round((bird_sys1 - bird_sys0) / packets * 1e6, 2),
            "cpu_share": round((cpu1 - cpu0) / (t1 - t0), 3), "timer_lag_max_ms": round(max(lags), 2),
            "false_downs": total(s1, "flaps") - total(s0, "flaps") + sum(1 for x in s1["sessions"] if x["state"] != "up"),
            "tx_late": s1["tx_late"] - s0["tx_late"], "blame": dict(h.blames), "loadavg": Path("/proc/loadavg").read_text().split()[0],
            "wakeups_per_s": (f"{(s1['timer_wakeups'] - s0['timer_wakeups']) / (t1 - t0):.0f}+"
                              f"{(s1['reader_wakeups'] - s0['reader_wakeups']) / (t1 - t0):.0f}")
            if "timer_wakeups" in s1 else None,
        }
    finally:
        if h is not None:
            h.close()
        if pidf.exists():
            with_suppress_kill(int(pidf.read_text()))
        for ns in (P, B):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with_suppress_kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)


def with_suppress_kill(pid: int, sig: int = signal.SIGTERM) -> None:
    """Signal a process we started; it may already be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _stop_on_sigterm(signum: int, _frame: object) -> None:
    """A SIGTERM (timeout, Ctrl-C from a wrapper) unwinds through the finally blocks that remove
    the namespaces and stop BIRD, instead of leaving them behind."""
    raise KeyboardInterrupt(f"signal {signum}")


def cpu_main(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    codes = [Path(c).resolve() for c in (args.code or [str(ROOT)])]
    rows: list[dict[str, Any]] = []
    for r in range(args.runs):
        for i, code in enumerate(codes):
            sub = work / f"cpu{r}-{i}"
            sub.mkdir()
            os.chmod(sub, 0o755)
            spy = Path(args.pyspy) / f"bfd-{i}-{r}.txt" if args.pyspy else None
            print(f"cpu: run {r + 1}/{args.runs}, {code}: {args.sessions} sessions at {args.interval_ms} ms x 3, "
                  f"{args.cpu_s:.0f} s", flush=True)
            rows.append(cpu_bench(sub, args.sessions, args.interval_ms, args.cpu_s, code, spy))
    print("| code | run | packets/s | ours µs/pkt (kernel) | BIRD µs/pkt (kernel) | ratio | our CPU share | max timer lag ms "
          "| false Downs (blame) | tx_late | wake-ups/s (timer+reader) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i, x in enumerate(rows):
        print(f"| {x['code']} | {i // len(codes) + 1} | {x['pps']:,} | {x['cpu_us_per_packet']:.1f} "
              f"({x['sys_us_per_packet']:.1f}) | {x['bird_cpu_us_per_packet']:.1f} ({x['bird_sys_us_per_packet']:.1f}) | {x['ratio']:.2f} | {x['cpu_share']:.1%} | {x['timer_lag_max_ms']:.2f} "
              f"| {x['false_downs']} {x['blame'] or ''} | {x['tx_late']} | {x['wakeups_per_s'] or '-'} | {x['loadavg']} |")
    result: dict[str, Any] = {"sessions": args.sessions, "interval_ms": args.interval_ms, "seconds": args.cpu_s}
    for code in codes:
        mine = [x for x in rows if x["code"] == str(code)]
        result[str(code)] = {
            "cpu_us_per_packet_median": round(statistics.median(x["cpu_us_per_packet"] for x in mine), 2),
            "bird_cpu_us_per_packet_median": round(statistics.median(x["bird_cpu_us_per_packet"] for x in mine), 2),
            "ratio_median": round(statistics.median(x["ratio"] for x in mine), 2),
            "timer_lag_max_ms": max(x["timer_lag_max_ms"] for x in mine),
            "false_downs": sum(x["false_downs"] for x in mine), "runs": len(mine),
        }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", type=int, default=50)
    ap.add_argument("--soak-s", type=float, default=60.0)
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--skip-detect", action="store_true")
    ap.add_argument("--skip-soak", action="store_true")
    ap.add_argument("--cpu-only", action="store_true", help="only the CPU-per-packet mode (3. above)")
    ap.add_argument("--sessions", type=int, default=53)
    ap.add_argument("--interval-ms", type=int, default=10)
    ap.add_argument("--cpu-s", type=float, default=25.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--code", action="append", help="checkout whose bfd/ to run (repeatable; default: this one)")
    ap.add_argument("--pyspy", default=None, help="directory for py-spy raw profiles of our BFD process")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    result: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="pop-bfd-bench-"))
    os.chmod(work, 0o755)
    try:
        if args.cpu_only:
            result = cpu_main(args, work)
            print("RESULT " + json.dumps(result))
            return 0
        if not args.skip_detect:
            print(f"detection: {args.cuts} cuts at 10 ms x 3 (budget: 30 ms + 2 ms after the last packet)")
            (work / "detect").mkdir()
            r = detect_bench(work / "detect", args.cuts)
            print("| who | cuts measured | median ms | p99 ms | max ms |")
            print("|---|---|---|---|---|")
            for who in ("ours", "frr", "bird"):
                xs = r[who]
                if xs:
                    print(f"| {who} | {len(xs)} | {statistics.median(xs):.2f} | {pct(xs, 99):.2f} | {max(xs):.2f} |")
            result.update({
                "detect_p99_ms": round(pct(r["ours"], 99), 2), "detect_median_ms": round(statistics.median(r["ours"]), 2),
                "frr_detect_median_ms": round(statistics.median(r["frr"]), 2) if r["frr"] else None,
                "bird_detect_median_ms": round(statistics.median(r["bird"]), 2) if r["bird"] else None,
                "detect_samples": len(r["ours"]),
            })
        if not args.skip_soak:
            rows = []
            for n, ms, key in ((50, 10, "10ms_50"), (200, 50, "50ms_200")):
                sub = work / f"soak{n}"
                sub.mkdir()
                os.chmod(sub, 0o755)
                print(f"soak: {n} sessions at {ms} ms x 3 for {args.soak_s:.0f} s with {args.prefixes:,}-prefix ingests")
                s = soak_bench(sub, n, ms, args.soak_s, args.prefixes)
                rows.append(s)
                result[f"false_downs_{key}"] = s["false_downs"] + s["down_now"]
                result[f"cpu_us_per_packet_{key}"] = round(s["cpu_us_per_packet"], 1)
                result[f"bird_cpu_us_per_packet_{key}"] = round(s["bird_cpu_us_per_packet"], 1)
            print("| sessions | interval | seconds | ingests | max routes in FIB | false Downs | packets | ours µs/pkt "
                  "| BIRD µs/pkt |")
            print("|---|---|---|---|---|---|---|---|---|")
            for s in rows:
                print(f"| {s['sessions']} | {s['interval_ms']} ms | {s['seconds']} | {s['ingests']} x "
                      f"{args.prefixes:,} | {s['fib_routes_max']:,} | {s['false_downs'] + s['down_now']} | {s['packets']:,} | "
                      f"{s['cpu_us_per_packet']:.1f} | {s['bird_cpu_us_per_packet']:.1f} |")
            result["cpu_us_per_packet"] = round(statistics.mean(s["cpu_us_per_packet"] for s in rows), 1)
            result["bird_cpu_us_per_packet"] = round(statistics.mean(s["bird_cpu_us_per_packet"] for s in rows), 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
