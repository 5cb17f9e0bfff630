#!/usr/bin/env python3
"""Ingest benchmark: BIRD announces N IPv4 prefixes; time until all N are in pop-router's kernel FIB.

Reference in the same run: ExaBGP alone, same settings (log level WARNING, no adj-rib-in), delivering
the same N prefixes to a do-nothing API process. Both are timed from session Established to the
last prefix (pop-router: in the kernel; ExaBGP alone: End-of-RIB at the API process).

    .venv/bin/python benchmarks/ingest.py [--n 100000] [--runs 3] [--unique-attrs]

``--unique-attrs`` gives every prefix its own MED, so BIRD sends one prefix per UPDATE (the worst
case for ExaBGP); ``--per-update K`` gives each group of K prefixes its own MED (K per UPDATE: 4 is
the feed of ``fulltable.py --cases 1m``, close to a real table's ~3.7); by default prefixes share
attributes and BIRD packs ~700 per UPDATE. The reference ExaBGP runs with the environment pop-router
generates for its own (``routing.exabgp.conf.environment``: compact NLRI, PyPy's heap settings), so
the ratio is what the pipeline adds, not a difference of ExaBGP settings.
BIRD is woken every 20 ms through its control socket while it feeds (``labs/bird.py``, FeedWaker): BIRD
2.0.12 otherwise holds the last UPDATE of the table and the End-of-RIB back for up to 3 s in about
half the runs (a bug of its main loop, fixed in 2.14), which the timings would count as ours.
Prints a table and ends with ``RESULT {json}``. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.netns import netns  # noqa: E402
from fib.netlink import RouteSocket  # noqa: E402
from labs.bird import FeedWaker, logging_to_file  # noqa: E402
from routing.cli import api_call  # noqa: E402

SINK = r'''
import sys, time, json
out = sys.argv[1]
up = None
n = 0
for line in sys.stdin:
    if '"state": "up"' in line and up is None:
        up = time.monotonic()
    elif '"eor"' in line:
        json.dump({"up": up, "eor": time.monotonic(), "lines": n}, open(out, "w"))
        break
    n += 1
for line in sys.stdin:
    pass
'''


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


#: Where the prefixes come from: 64.0.0.0/4 holds 1,048,576 /24s, none a bogon (the table of
#: ``fulltable.py``); only routes exist in these namespaces, no traffic is sent.
PREFIX_SPACE, MAX_N = "64.0.0.0/4", 1 << 20


def prefixes(n: int) -> list[str]:
    if n > MAX_N:
        raise SystemExit(f"--n {n}: at most {MAX_N:,} /24s fit in {PREFIX_SPACE}")
    return [f"{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(n)]


def bird_conf(n: int, per_update: int) -> str:
    """``per_update``: prefixes per MED (0: one MED for all, BIRD packs them)."""
    body = "\n".join(
        f"  route {p} unreachable {{ bgp_med = {i // per_update}; }};" if per_update else f"  route {p} unreachable;"
        for i, p in enumerate(prefixes(n))
    )
    return f"""router id 10.255.0.2;
protocol device {{}}
protocol static s4 {{ ipv4;
{body}
}}
protocol bgp pop {{ local 10.0.1.2 as 64512; neighbor 10.0.1.1 as 65000;
  ipv4 {{ import none; export where source = RTS_STATIC; }}; }}
"""


def exabgp_env() -> dict[str, str]:
    """The settings pop-router gives its own ExaBGP (log level, compact NLRI, PyPy's heap, ...)."""
    from routing.config import parse_config
    from routing.exabgp.conf import environment

    config = parse_config({"router": {"asn": 65000, "router_id": "192.0.2.1"}, "customers": []})
    return {**os.environ, **environment(config)}


class Bench:
    def __init__(self, n: int, per_update: int, work: Path, interpreter: str = "auto") -> None:
        self.n = n
        #: ExaBGP's interpreter for both runs (``exabgp.interpreter``): the reference and the pipeline
        #: must run the same ExaBGP, or the ratio measures PyPy against CPython.
        self.interpreter = interpreter
        self.per_update = per_update
        self.work = work
        tag = uuid.uuid4().hex[:6]
        self.a, self.b = f"bgi{tag}a", f"bgi{tag}b"
        self.bird: int | None = None
        #: Wakes the feeder so the end of its table is never held back (labs/bird.py).
        self.waker = FeedWaker(work / "bird.ctl")

    def setup(self) -> None:
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        sh("ip", "link", "add", "v0", "netns", self.a, "type", "veth", "peer", "name", "v1", "netns", self.b)
        for ns, dev, addr in ((self.a, "v0", "10.0.1.1/30"), (self.b, "v1", "10.0.1.2/30")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        (self.work / "bird.conf").write_text(  # never syslog: see labs/bird.py
            logging_to_file(bird_conf(self.n, self.per_update), self.work / "bird.log"))
        sh("ip", "netns", "exec", self.b, "bird", "-c", str(self.work / "bird.conf"), "-s",
           str(self.work / "bird.ctl"), "-P", str(self.work / "bird.pid"))
        self.bird = int((self.work / "bird.pid").read_text())
        self.waker.start()

    def teardown(self) -> None:
        self.waker.stop()
        if self.bird:
            os.kill(self.bird, signal.SIGTERM)
        for ns in (self.a, self.b):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)

    def exabgp_binary(self) -> str:
        pypy = Path(sys.executable).with_name("exabgp-pypy")
        if self.interpreter == "pypy" or (self.interpreter == "auto" and pypy.exists()):
            return str(pypy)
        return str(Path(sys.executable).with_name("exabgp"))

    def exabgp_alone(self) -> float:
        (self.work / "sink.py").write_text(SINK)
        result = self.work / "sink.json"
        result.unlink(missing_ok=True)
        conf = self.work / "exa.conf"
        conf.write_text(f"""process sink {{ run {sys.executable} {self.work / 'sink.py'} {result}; encoder json; }}
neighbor 10.0.1.2 {{ router-id 192.0.2.1; local-address 10.0.1.1; local-as 65000; peer-as 64512;
  adj-rib-in false; family {{ ipv4 unicast; }} capability {{ asn4 enable; }}
  api {{ processes [ sink ]; neighbor-changes; receive {{ parsed; update; }} }} }}
""")
        exa = subprocess.Popen(["ip", "netns", "exec", self.a, self.exabgp_binary(),
                                str(conf)], env=exabgp_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600
            while not result.exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # poll
            time.sleep(0.05)  # poll: let the sink finish writing its file
            r = json.loads(result.read_text())
            return r["eor"] - r["up"]
        finally:
            exa.terminate()
            exa.wait()

    def pipeline(self) -> tuple[float, int]:
        sock = self.work / "api.sock"
        cfg = self.work / "pop.yaml"
        cfg.write_text(f"""router: {{asn: 65000, router_id: 192.0.2.1}}
api: {{socket: {sock}}}
metrics: {{listen: 127.0.0.1:19324}}
fib: {{protocol: 200, stale_timeout_s: 600}}
exabgp: {{run_dir: {self.work}, interpreter: {self.interpreter}}}
log_level: WARNING
customers:
  - name: big
    asn: 64512
    import: {{prefixes: ["{PREFIX_SPACE} le 24"], max_prefixes: {self.n + 10}}}
    peers: [{{address: 10.0.1.2, local_address: 10.0.1.1}}]
""")
        log = open(self.work / "pop.log", "w")
        argv = ["ip", "netns", "exec", self.a, sys.executable, "-m", "routing.cli", "run", "-c", str(cfg)]
        d = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 900
            t_up = None
            while time.monotonic() < deadline:
                try:
                    _, peers = api_call(sock, "GET", "/peers")
                except OSError:
                    time.sleep(0.02)  # poll: the daemon is starting
                    continue
                if peers[0]["state"] == "established":
                    t_up = peers[0]["since_monotonic"]
                    break
                time.sleep(0.01)  # poll
            assert t_up is not None, "session never came up"
            while time.monotonic() < deadline:
                _, st = api_call(sock, "GET", "/status")
                if st["fib_routes"] >= self.n and st["fib_pending"] == 0:
                    t_done = time.monotonic()
                    break
                time.sleep(0.02)  # poll
            with netns(self.a):
                rs = RouteSocket()
            in_kernel = len(rs.dump_owned(200, 254))
            rs.close()
            return t_done - t_up, in_kernel
        finally:
            d.terminate()
            d.wait()
            log.close()
            # Next run starts from an empty FIB, not from adoption.
            with netns(self.a):
                subprocess.run(["ip", "route", "flush", "proto", "200"], check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--unique-attrs", action="store_true", help="one prefix per UPDATE (--per-update 1)")
    ap.add_argument("--per-update", type=int, default=0, help="prefixes per MED, so per UPDATE (0: packed)")
    ap.add_argument("--interpreter", default="auto", choices=("auto", "pypy", "cpython"),
                    help="ExaBGP's interpreter, for both the reference and the pipeline")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pop-ingest-"))
    per_update = 1 if args.unique_attrs else args.per_update
    b = Bench(args.n, per_update, work, args.interpreter)
    rows = []
    try:
        b.setup()
        for i in range(args.runs):
            alone = b.exabgp_alone()
            pipe, in_kernel = b.pipeline()
            assert in_kernel == args.n, f"only {in_kernel} of {args.n} routes in the kernel"
            rows.append((alone, pipe))
            print(f"run {i + 1}: exabgp alone {alone:7.2f} s   pipeline {pipe:7.2f} s   ratio {pipe / alone:5.2f}",
                  flush=True)
    finally:
        b.teardown()
        shutil.rmtree(work, ignore_errors=True)
    alone = statistics.median(r[0] for r in rows)
    pipe = statistics.median(r[1] for r in rows)
    attrs = f"one MED per {per_update} prefixes" if per_update else "shared (packed UPDATEs)"
    print()
    print(f"| N = {args.n:,} IPv4 prefixes, attributes {attrs}, median of {args.runs} | seconds |")
    print("|---|---|")
    print(f"| ExaBGP alone, to a do-nothing API process (Established -> End-of-RIB) | {alone:.2f} |")
    print(f"| pop-router pipeline (Established -> all N in the kernel) | {pipe:.2f} |")
    print(f"| ratio pipeline / ExaBGP alone | {pipe / alone:.2f} |")
    print("RESULT " + json.dumps({"n": args.n, "pipeline_s": round(pipe, 3), "exabgp_alone_s": round(alone, 3),
                                  "ratio": round(pipe / alone, 3), "per_update": per_update,
                                  "runs": args.runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
