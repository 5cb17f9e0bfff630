#!/usr/bin/env python3
"""Where the daemon's memory and CPU go per prefix, structure by structure, in one process (issue 12).

Why: the full-table benchmark (``benchmarks/fulltable.py``) gives RSS per process; this splits the
daemon's share by the structure holding it, with the daemon's own code on a synthetic table, so a cut
can be aimed at one structure. No root, no network: ExaBGP's JSON lines (the shape ExaBGP 5.0 emits,
4 prefixes per UPDATE with their own MED, as BIRD sends the issue's table) are made here and go
through the same functions the daemon runs:

1. the raw lines (what the relay holds while the daemon is behind, and the daemon's reader buffers);
2. ``messages.parse_line`` -> ``UpdateEvent`` (what the inbox holds while the RIB is behind);
3. ``Path`` objects as ``RoutingCore._update`` builds them, then ``Rib.announce`` (import policy,
   Adj-RIB-In, Loc-RIB paths, best path, FIB entries) - with 1 and with 3 peers;
4. the FIB writer's bookkeeping: ``FibTable.route_set`` for every prefix (``installed``) and the
   dataplane's ``pending`` dict while the batch waits.

Memory is ``tracemalloc``'s traced size after each stage minus before, grouped by the source line
that allocated it; CPU is wall time per prefix of each stage with tracemalloc off (a separate pass).

    PYTHONPATH=. .venv/bin/python benchmarks/fulltable_mem.py [--n 100000] [--peers 1,3]

~5 min at 100k (tracemalloc snapshots of a large heap are slow). Prints tables and ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

sys.path.insert(0, str(FsPath(__file__).resolve().parents[1]))

from common.model import IPNetwork, Peer, new_path
from common.model import Path as RoutePath
from fib.table import FibTable
from routing.config import parse_config
from routing.exabgp import messages
from routing.policy import ImportPolicy
from routing.rib import Rib


def prefix(i: int) -> str:
    return f"{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24"


def line(peer: str, asn: int, med: int, prefixes: list[str], counter: int) -> bytes:
    """One UPDATE as ExaBGP 5.0's JSON encoder writes it (field order and spacing as captured)."""
    nlri = ", ".join(f'{{ "nlri": "{p}" }}' for p in prefixes)
    return (
        f'{{ "exabgp": "5.0.0", "time": 1795712507.994449, "host" : "pop", "pid" : 4016, "ppid" : 1, '
        f'"counter": {counter}, "type": "update", "neighbor": {{ "address": {{ "local": "10.0.1.1", '
        f'"peer": "{peer}" }}, "asn": {{ "local": 65000, "peer": {asn} }}, "router-id": "192.0.2.1" , '
        f'"direction": "receive", "message": {{ "update": {{ "attribute": {{ "origin": "igp", '
        f'"as-path": {{"0": {{"element": "as-sequence", "value": [{asn}]}}}}, "confederation-path": [], '
        f'"med": {med} }}, "announce": {{ "ipv4 unicast": {{ "{peer}": [ {nlri} ] }} }} }} }} }} }}\n'
    ).encode()


def config(peers: int) -> Any:
    return parse_config({
        "router": {"asn": 65000, "router_id": "192.0.2.1"},
        "customers": [{"name": f"t{j}", "asn": 64512 + j,
                       "import": {"prefixes": ["64.0.0.0/4 le 24"], "max_prefixes": 2_000_000},
                       "peers": [{"address": f"10.0.1.{2 + j}", "local_address": "10.0.1.1"}]}
                      for j in range(peers)]})


def traced(fn: Callable[[], Any], groups: dict[str, int]) -> tuple[Any, int]:
    """Run ``fn`` under tracemalloc; returns its result and the bytes it left allocated; adds the
    growth per allocating file:line into ``groups``."""
    gc.collect()
    before = tracemalloc.take_snapshot()
    out = fn()
    gc.collect()
    after = tracemalloc.take_snapshot()
    diff = after.compare_to(before, "lineno")
    total = 0
    for st in diff:
        if st.size_diff <= 0:
            continue
        fr = st.traceback[0]
        key = f"{FsPath(fr.filename).name}:{fr.lineno}"
        groups[key] = groups.get(key, 0) + st.size_diff
        total += st.size_diff
    return out, total


def run(n: int, peers: int, per_update: int = 4) -> dict[str, Any]:
    cfg = config(peers)
    rib = Rib()
    peer_objs = []
    for c, pc in cfg.peers():
        rib.add_peer(pc.address, ImportPolicy(cfg.router, c), c.import_.max_prefixes)
        peer_objs.append(Peer(pc.address, c.name, c.asn, cfg.router.asn, ipaddress.IPv4Address("10.255.0.2")))
    names = [prefix(i) for i in range(n)]
    stages: dict[str, dict[str, Any]] = {}
    groups: dict[str, int] = {}

    def mk_lines() -> list[bytes]:
        return [line(str(p.address), p.asn, i // per_update, names[i:i + per_update], i)
                for p in peer_objs for i in range(0, n, per_update)]

    held: dict[str, Any] = {}  # what a stage keeps alive; cleared when the daemon would drop it
    held["lines"], size = traced(mk_lines, {})
    stages["1 raw JSON lines (relay backlog / reader)"] = {"bytes": size}

    def parse() -> list[Any]:
        return [messages.parse_line(ln) for ln in held["lines"]]

    tracemalloc.stop()
    t = time.perf_counter()
    parse()
    stages["2 parse_line -> UpdateEvent"] = {"cpu_s": time.perf_counter() - t}
    tracemalloc.start(1)
    held["events"], size = traced(parse, groups)
    stages["2 parse_line -> UpdateEvent"]["bytes"] = size
    by_peer = {p.address: p for p in peer_objs}

    def make_paths() -> list[tuple[Any, list[RoutePath]]]:
        # As RoutingCore._update builds them (no labels here).
        return [(ev.peer, [new_path(p, by_peer[ev.peer], nh, ev.attrs) for p, nh, _ in ev.announce])
                for ev in held["events"]]

    held["paths"], size = traced(make_paths, groups)
    stages["3a Path objects (as routing.core builds them)"] = {"bytes": size}

    def announce() -> list[Any]:
        diffs = []
        for addr, ps in held["paths"]:
            diffs += rib.announce(addr, ps)
        return diffs

    # CPU of announce on a copy of the RIB state would need a second RIB; time the real one with
    # tracemalloc off, then measure memory on a fresh RIB.
    tracemalloc.stop()
    t = time.perf_counter()
    diffs = announce()
    stages["3b Rib.announce (policy, Adj-RIB-In, Loc-RIB, best path, FibEntry)"] = {"cpu_s": time.perf_counter() - t}
    del diffs
    rib2 = Rib()
    for c, pc in cfg.peers():
        rib2.add_peer(pc.address, ImportPolicy(cfg.router, c), c.import_.max_prefixes)
    rib = rib2
    tracemalloc.start(1)
    rgroups: dict[str, int] = {}
    diffs, size = traced(announce, rgroups)
    stages["3b Rib.announce (policy, Adj-RIB-In, Loc-RIB, best path, FibEntry)"]["bytes"] = size
    for k, v in rgroups.items():
        groups[k] = groups.get(k, 0) + v
    # Structure sizes by container, by removing references: what the Path objects cost once the
    # events and the per-UPDATE lists are gone (the daemon drops them after the RIB step).
    gc.collect()
    del held["events"], held["lines"]
    gc.collect()
    cur_after_drop = tracemalloc.get_traced_memory()[0]

    fib = FibTable(200)
    g = None

    def fib_book() -> None:
        nonlocal g
        pending: dict[IPNetwork, Any] = {}
        for d in diffs:
            pending[d.prefix] = d.new
        for pfx in pending:
            if g is None:
                g = fib.alloc()
            fib.route_set(pfx, g, None)
        return None

    tracemalloc.stop()
    t = time.perf_counter()
    fib_book()
    cpu = time.perf_counter() - t
    fib = FibTable(200)
    g = None
    tracemalloc.start(1)
    _, size = traced(fib_book, groups)
    stages["4 FIB writer bookkeeping (FibTable.installed; pending dict freed)"] = {"bytes": size, "cpu_s": cpu}
    del held["paths"]
    gc.collect()
    # tracemalloc was restarted for the FIB stage (which clears its traces): what stays is the RIB as
    # measured before that restart plus the FIB stage's growth.
    return {"n": n, "peers": peers, "stages": stages, "groups": groups,
            "held_after_ingest_bytes": cur_after_drop + size, "held_before_fib_bytes": cur_after_drop,
            "diffs": len(diffs), "loc_rib": len(rib.loc)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--peers", default="1,3")
    args = ap.parse_args()
    result: dict[str, Any] = {"n": args.n}
    for peers in (int(x) for x in args.peers.split(",")):
        tracemalloc.start(1)
        r = run(args.n, peers)
        tracemalloc.stop()
        n = args.n
        print(f"\n### {n:,} prefixes x {peers} peer(s), 4 per UPDATE\n")
        print("| stage | bytes per prefix (retained by the stage) | CPU µs per prefix |")
        print("|---|---|---|")
        for name, s in r["stages"].items():
            cpu = f"{s['cpu_s'] * 1e6 / (n * peers):.1f}" if "cpu_s" in s else ""
            print(f"| {name} | {s['bytes'] / n:,.0f} | {cpu} |")
        print(f"| held after the ingest (RIB + FIB bookkeeping, events and lines dropped) | "
              f"{r['held_after_ingest_bytes'] / n:,.0f} | |")
        print("\nTop allocation sites (bytes per prefix):")
        for k, v in sorted(r["groups"].items(), key=lambda kv: -kv[1])[:14]:
            print(f"  {v / n:8.1f}  {k}")
        result[f"peers_{peers}"] = {
            "stages_bytes_per_prefix": {k: round(s["bytes"] / n) for k, s in r["stages"].items()},
            "stages_cpu_us_per_prefix": {k: round(s["cpu_s"] * 1e6 / (n * peers), 1)
                                         for k, s in r["stages"].items() if "cpu_s" in s},
            "held_bytes_per_prefix": round(r["held_after_ingest_bytes"] / n),
            "top_sites": {k: round(v / n, 1) for k, v in sorted(r["groups"].items(), key=lambda kv: -kv[1])[:14]}}
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
