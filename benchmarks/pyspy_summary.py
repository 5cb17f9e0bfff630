#!/usr/bin/env python3
"""Sum py-spy raw (collapsed) profiles into the cost categories of issue 12's ranked table.

Why: a flame graph shows one run; the RESULTS table needs the *share* of each stage of the pipeline
(JSON parsing, policy, best path, RIB, FIB writer, GC, event loop) per thread, from the profiles that
``benchmarks/fulltable.py --pyspy DIR`` records. A sample goes to the first category whose pattern
matches a frame, walking from the innermost frame outwards, so "policy inside the RIB step" counts
as policy, and garbage collection anywhere counts as GC.

    .venv/bin/python benchmarks/pyspy_summary.py DIR/daemon-pypy-1p.txt [--prefixes 100000] [--rate 50]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

#: (category, regex on one frame), innermost match wins.
RULES: list[tuple[str, str]] = [
    ("GC (cyclic collector)", r"gc_collect|collect_main|gcmodule\.c|gc_collect_region|_PyGC_Collect|deduce_unreachable"),
    ("metrics (prometheus_client)", r"prometheus_client|routing/metrics\.py"),
    ("API / views", r"routing/api\.py|routing/views\.py"),
    ("JSON: orjson.loads", r"orjson|loads \("),
    ("parse_line: events from JSON (prefix objects, attrs)", r"routing/exabgp/messages\.py|common/model\.py"),
    ("import policy", r"routing/policy\.py"),
    ("best path", r"routing/bestpath\.py"),
    ("RIB: Adj-RIB-In / Loc-RIB / FibEntry", r"routing/rib\.py"),
    ("FIB: planner + netlink encoding", r"fib/planner\.py|fib/ops\.py|fib/netlink\.py"),
    ("FIB: kernel provider (send/recv, writer thread)", r"fib/kernel_provider\.py|fib/kernel\.py"),
    ("FIB: dataplane + table bookkeeping", r"fib/dataplane\.py|fib/table\.py|fib/monitor\.py"),
    ("core: events, slices, peer FSM", r"routing/core\.py|routing/daemon\.py"),
    ("inbox / socket reading (LineServer)", r"routing/inbox\.py|routing/exabgp/channel|LineServer|readline|read_lines|StreamReader"),
    ("relay: stdin reader thread", r"Relay\.read_stdin"),
    ("relay: to daemon (sendall)", r"Relay\.to_daemon"),
    ("relay: from daemon", r"Relay\.from_daemon"),
    # ExaBGP's own code, when profiled under CPython
    ("ExaBGP: JSON encoder", r"exabgp/reactor/api/response/json\.py|exabgp/reactor/api/response/text\.py"),
    ("ExaBGP: API process write (pipes)", r"exabgp/reactor/api/processes\.py"),
    ("ExaBGP: BGP message parsing (update, attributes, NLRI)", r"exabgp/bgp/message|exabgp/bgp/message/update"),
    ("ExaBGP: network I/O (reader)", r"exabgp/reactor/network|exabgp/reactor/protocol\.py"),
    ("ExaBGP: reactor loop / peers", r"exabgp/reactor/"),
]
COMPILED = [(c, re.compile(p)) for c, p in RULES]


#: Native frames that mean the thread is not running: waiting for the GIL (CPython takes it in
#: ``take_gil`` -> ``pthread_cond_timedwait``), for a lock or queue, or in a blocking poll. py-spy
#: counts these as active, so they are split out instead of being charged to the Python frame above.
WAIT = re.compile(r"^(pthread_cond_timedwait|pthread_cond_wait|epoll_pwait|epoll_wait|PyThread_acquire_lock_timed|"
                  r"sem_wait|sem_timedwait|__futex|futex|poll|ppoll|recvmsg|recv|sendmsg|sendall|accept4?) \(")
#: The waker's side of a thread hand-off: ``sem_post`` / ``pthread_cond_signal`` where the woken thread
#: takes the CPU (2 CPUs, GIL switch).
HANDOFF = re.compile(r"^(sem_post|pthread_cond_signal|pthread_cond_broadcast) \(")


def categorize(frames: list[str]) -> str:
    native_tail = [f for f in frames[-4:] if not re.search(r"\.py:\d+\)$", f)]
    if any(WAIT.match(f) for f in native_tail):
        return "waiting (GIL, lock, queue or I/O)"
    if frames and HANDOFF.match(frames[-1]):
        return "thread hand-off (waking another thread)"
    for fr in reversed(frames):
        for cat, rx in COMPILED:
            if rx.search(fr):
                return cat
    return "event loop / other"


def summarize(path: str) -> tuple[Counter[str], Counter[str], int]:
    cats: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            thread = frames[0]
            m = re.match(r"thread \(\d+\): (.*)", thread)
            tname = m.group(1) if m else thread
            if tname.startswith("Thread-"):
                tname = "Thread-N"
            threads[tname] += n
            cats[f"[{tname}] {categorize(frames[1:])}"] += n
            total += n
    return cats, threads, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--prefixes", type=int, default=0, help="prefixes ingested, to print µs per prefix")
    ap.add_argument("--rate", type=int, default=50, help="py-spy sampling rate (per second)")
    args = ap.parse_args()
    for path in args.files:
        cats, _threads, total = summarize(path)
        print(f"\n#### {path}: {total} samples ({total / args.rate:.1f} s of non-idle thread time)\n")
        print("| thread / category | share | seconds | µs per prefix |")
        print("|---|---|---|---|")
        for cat, n in cats.most_common():
            per = f"{n / args.rate * 1e6 / args.prefixes:.1f}" if args.prefixes else ""
            print(f"| {cat} | {100 * n / total:.1f} % | {n / args.rate:.1f} | {per} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
