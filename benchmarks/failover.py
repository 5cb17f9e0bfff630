#!/usr/bin/env python3
"""Failover benchmark: traffic gap when the primary link to a customer dies, for 1k and 1M prefixes.

    .venv/bin/python benchmarks/failover.py [--sizes 1000,1000000] [--pps 10000]

Namespaces: a sender S, the PoP P, a bridge B in the middle of the primary link, and the customer
C (BIRD running BFD on both links, 10 ms x 3). In P, the FIB writer installs N prefixes on one
nexthop group (primary: the link through B, backup: the direct link) and our BFD process (SCHED_FIFO)
watches both links. S sends UDP to an address inside the first prefix at --pps; C records arrival
times (CLOCK_MONOTONIC, shared by all processes). Blocking B's port cuts the primary path with no
interface event; the BFD Down event calls the same `KernelFib.fail_gateway` the daemon calls.

Reported per size: the traffic gap (largest inter-arrival time around the cut), BFD detection time
(Down event - cut), the writer's failover time (Down event -> groups rewritten), and, for reference,
how long re-pointing every route one by one takes on the same machine. Ends with RESULT {json}.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fib.kernel import KernelFib, set_compat_mode  # noqa: E402
from routing.model import FibEntry, Prefix4, parse_address  # noqa: E402
from routing.runtime import tune_runtime  # noqa: E402

SENDER = r"""
import socket, struct, sys, time
dst, pps, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
period = 1.0 / pps
t0 = time.monotonic(); seq = 0
while True:
    now = time.monotonic()
    if now - t0 > dur:
        break
    due = t0 + seq * period
    if now >= due:
        s.sendto(struct.pack("!Qd", seq, now), (dst, 9999)); seq += 1
    else:
        time.sleep(min(due - now, 0.0005)) if due - now > 0.0002 else None
"""

RECEIVER = r"""
import socket, struct, sys, time
out, dur = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999)); s.settimeout(0.5)
arr = []
t0 = time.monotonic()
while time.monotonic() - t0 < dur:
    try:
        d = s.recv(64)
    except socket.timeout:
        continue
    arr.append(time.monotonic())
open(out, "w").write("\n".join(f"{t:.6f}" for t in arr))
"""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr}")
    return p


def build(tag: str, work: Path) -> dict[str, str]:
    ns = {k: f"fo{tag}{k}" for k in "spbc"}
    S, P, B, C = ns["s"], ns["p"], ns["b"], ns["c"]
    for n in ns.values():
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    sh("ip", "link", "add", "s0", "netns", S, "type", "veth", "peer", "name", "p0", "netns", P)
    sh("ip", "link", "add", "p1", "netns", P, "type", "veth", "peer", "name", "bp", "netns", B)
    sh("ip", "link", "add", "bc", "netns", B, "type", "veth", "peer", "name", "c1", "netns", C)
    sh("ip", "link", "add", "p2", "netns", P, "type", "veth", "peer", "name", "c2", "netns", C)
    sh("ip", "-n", B, "link", "add", "br0", "type", "bridge")
    for ifc in ("bp", "bc"):
        sh("ip", "-n", B, "link", "set", ifc, "master", "br0")
        sh("ip", "-n", B, "link", "set", ifc, "up")
    sh("ip", "-n", B, "link", "set", "br0", "up")
    for n, ifc, addr in ((S, "s0", "10.20.0.2/24"), (P, "p0", "10.20.0.1/24"), (P, "p1", "10.1.1.1/24"),
                         (C, "c1", "10.1.1.2/24"), (P, "p2", "10.1.2.1/24"), (C, "c2", "10.1.2.2/24")):
        sh("ip", "-n", n, "addr", "add", addr, "dev", ifc)
        sh("ip", "-n", n, "link", "set", ifc, "up")
    sh("ip", "-n", S, "route", "add", "default", "via", "10.20.0.1")
    sh("ip", "-n", C, "addr", "add", "20.0.0.1/32", "dev", "lo")
    sh("ip", "-n", C, "route", "add", "10.20.0.0/24", "via", "10.1.2.1")
    sh("ip", "netns", "exec", P, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for k in ("all", "default", "c1", "c2", "lo"):
        sh("ip", "netns", "exec", C, "sysctl", "-qw", f"net.ipv4.conf.{k}.rp_filter=0")
    (work / "bird.conf").write_text(
        'router id 10.1.1.2;\nprotocol device {}\nprotocol bfd {\n'
        '  interface "c*" { min rx interval 10 ms; min tx interval 10 ms; multiplier 3; };\n'
        '  neighbor 10.1.1.1 dev "c1";\n  neighbor 10.1.2.1 dev "c2";\n}\n')
    sh("ip", "netns", "exec", C, "bird", "-c", str(work / "bird.conf"), "-s", str(work / "bird.ctl"), "-P",
       str(work / "bird.pid"))
    return ns


async def run_size(n: int, pps: int, work: Path, ns: dict[str, str]) -> dict:
    P, S, B, C = ns["p"], ns["s"], ns["b"], ns["c"]
    primary, backup = parse_address("10.1.1.2"), parse_address("10.1.2.2")
    fib = KernelFib(protocol=200, netns=P)
    writer = asyncio.create_task(fib.run())
    prefixes = [Prefix4(((20 << 24) + (i << 8), 24)) for i in range(n)]
    t0 = time.perf_counter()
    for p in prefixes:
        fib.submit(p, FibEntry(p, (primary,), (), (backup,)))
    await fib.wait_idle()
    install_s = time.perf_counter() - t0
    assert len(fib.installed) == n and not fib.failed

    # Our BFD process, driven like the daemon drives it.
    sock = work / f"bfd{n}.sock"
    down: asyncio.Future = asyncio.get_running_loop().create_future()
    up: set[str] = set()
    ready = asyncio.Event()

    async def on_conn(reader: asyncio.StreamReader, writer_: asyncio.StreamWriter) -> None:
        spec = {"tx_ms": 10, "rx_ms": 10, "mult": 3}
        writer_.write(json.dumps({"op": "sessions", "sessions": [
            {"peer": "10.1.1.2", "local": "10.1.1.1", **spec}, {"peer": "10.1.2.2", "local": "10.1.2.1", **spec}]})
            .encode() + b"\n")
        while line := await reader.readline():
            m = json.loads(line)
            if m.get("event") != "state":
                continue
            if m["new"] == "up":
                up.add(m["peer"])
                if len(up) == 2:
                    ready.set()
            elif m["old"] == "up" and m["peer"] == "10.1.1.2" and not down.done():
                rewritten = await fib.fail_gateway(primary, detected_at=m["at"])
                down.set_result((m["at"], rewritten, fib.last_failover_ms))

    server = await asyncio.start_unix_server(on_conn, path=str(sock))
    bfd = subprocess.Popen(["ip", "netns", "exec", P, sys.executable, "-m", "bfd.process", str(sock), "--realtime",
                            "10"], cwd=ROOT, stdout=open(work / f"bfd{n}.log", "w"), stderr=subprocess.STDOUT)
    await asyncio.wait_for(ready.wait(), 30)
    await asyncio.sleep(1.0)  # poll: the sessions settle at 10 ms (Poll Sequences done)
    rx_file = work / f"rx{n}.txt"
    (work / "recv.py").write_text(RECEIVER)
    (work / "send.py").write_text(SENDER)
    recv = subprocess.Popen(["ip", "netns", "exec", C, sys.executable, str(work / "recv.py"), str(rx_file), "4"])
    await asyncio.sleep(0.3)  # poll: receiver bound
    send = subprocess.Popen(["ip", "netns", "exec", S, sys.executable, str(work / "send.py"), "20.0.0.1", str(pps),
                             "3"])
    await asyncio.sleep(1.0)  # poll: traffic flowing through the primary
    t_cut = time.monotonic()
    sh("ip", "netns", "exec", B, "bridge", "link", "set", "dev", "bc", "state", "0")
    at, rewritten, write_ms = await asyncio.wait_for(down, 10)
    send.wait()
    recv.wait()
    arrivals = [float(x) for x in rx_file.read_text().split()]
    window = [t for t in arrivals if t_cut - 0.2 < t < t_cut + 1.0]
    gaps = [(b - a) for a, b in itertools.pairwise(window)]
    gap_ms = max(gaps) * 1000 if gaps else float("nan")
    after = sum(1 for t in arrivals if t > t_cut + 0.2)
    # Reference: re-point every route, one route at a time, to a group on the backup only.
    t0 = time.perf_counter()
    for p in prefixes:
        fib.submit(p, FibEntry(p, (backup,), (), ()))
    await fib.wait_idle()
    reinstall_s = time.perf_counter() - t0
    bfd.send_signal(signal.SIGTERM)
    bfd.wait()
    server.close()
    for p in prefixes:
        fib.submit(p, None)
    await fib.wait_idle()
    writer.cancel()
    fib.close()
    sh("ip", "netns", "exec", B, "bridge", "link", "set", "dev", "bc", "state", "3")
    return {"n": n, "gap_ms": gap_ms, "detect_ms": (at - t_cut) * 1000, "write_ms": write_ms,
            "groups_rewritten": rewritten, "install_s": install_s, "reinstall_s": reinstall_s,
            "received_after_cut": after, "pps": pps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,1000000")
    ap.add_argument("--pps", type=int, default=10000)
    args = ap.parse_args()
    tune_runtime()
    work = Path(tempfile.mkdtemp(prefix="pop-failover-"))
    os.chmod(work, 0o755)
    tag = uuid.uuid4().hex[:4]
    ns: dict[str, str] = {}
    rows = []
    try:
        ns = build(tag, work)
        set_compat_mode(ns["p"], 0)
        for n in (int(x) for x in args.sizes.split(",")):
            r = asyncio.run(run_size(n, args.pps, work, ns))
            rows.append(r)
            print(f"{n:>9,} prefixes: gap {r['gap_ms']:.1f} ms, BFD detect {r['detect_ms']:.1f} ms after the cut, "
                  f"groups rewritten in {r['write_ms']:.2f} ms ({r['groups_rewritten']} group), "
                  f"route-by-route reinstall {r['reinstall_s']:.2f} s", flush=True)
    finally:
        pid = work / "bird.pid"
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)
        for n in ns.values():
            for p in sh("ip", "netns", "pids", n, check=False).stdout.split():
                os.kill(int(p), signal.SIGKILL)
            sh("ip", "netns", "del", n, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| prefixes | traffic gap ms | BFD detect ms (cut -> Down) | budget ms (detect + 10) | groups rewritten ms | "
          "route-by-route reinstall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['gap_ms']:.1f} | {r['detect_ms']:.1f} | {r['detect_ms'] + 10:.1f} | "
              f"{r['write_ms']:.2f} | {r['reinstall_s']:.2f} |")
    by = {r["n"]: r for r in rows}
    small, big = by.get(1000, rows[0]), by.get(1_000_000, rows[-1])
    print("RESULT " + json.dumps({
        "gap_ms_1k": round(small["gap_ms"], 2), "gap_ms_1m": round(big["gap_ms"], 2),
        "detect_ms": round(max(r["detect_ms"] for r in rows), 2), "write_ms_1m": round(big["write_ms"], 3),
        "reinstall_1m_s": round(big["reinstall_s"], 2), "pps": args.pps,
        "sizes": [r["n"] for r in rows],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
