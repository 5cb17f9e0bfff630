#!/usr/bin/env python3
"""ExaBGP's own per-UPDATE work against the lean launcher's replacements (issue 12), in one process.

Why: ExaBGP's CPU in a full-table ingest cannot be told apart from the machine's noise in end-to-end
runs (its CPU per 1M table moved by 20-40 % between identical runs on 2026-12-02), so each
replacement in ``routing/exabgp/lean_reactor.py`` is timed here against the ExaBGP code it replaces,
on the same messages, interleaved, in the interpreter ExaBGP runs on:

- **encoder**: ``JSON.update`` (ExaBGP's) against ``LeanUpdateJSON.update``, on UPDATEs of 4 /24s
  with ORIGIN, AS_PATH, NEXT_HOP and a MED each (the fulltable feed); the outputs are compared first;
- **reader**: ``Connection.reader()`` over ExaBGP's ``_reader`` against the buffered one, 250,000
  such messages through a socket pair (a thread writes them).

    .venv/bin/python benchmarks/exabgp_lean.py [--interpreter pypy|cpython] [--updates 100000] [--runs 5]

It re-runs itself under ExaBGP's interpreter (``.venv-pypy`` for PyPy, made by ``make deps``). Prints
a table (medians of ``--runs``) and ``RESULT {...}`` with microseconds per message and the ratios.
Takes ~30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INTERPRETERS = {"pypy": ROOT / ".venv-pypy" / "bin" / "python", "cpython": ROOT / ".venv" / "bin" / "python"}


def update_body(i: int) -> bytes:
    from routing.exabgp import lean_reactor as lr

    attrs = (lr.path_attribute(0x40, 1, b"\x00") + lr.path_attribute(0x40, 2, b"\x02\x01" + struct.pack("!I", 64512))
             + lr.path_attribute(0x40, 3, bytes([10, 0, 1, 2])) + lr.path_attribute(0x80, 4, struct.pack("!I", i)))
    nlri = b"".join(b"\x18" + struct.pack("!I", 0x40000000 + ((i * 4 + k) << 8))[:3] for k in range(4))
    return lr.update_wire(attrs, nlri)


def bench_encoder(n: int, runs: int) -> dict[str, Any]:
    from exabgp.bgp.message.direction import Direction
    from exabgp.bgp.message.update import Update
    from exabgp.reactor.api.response.json import JSON

    from routing.exabgp import lean_reactor as lr

    lean = lr.LeanUpdateJSON.from_exabgp()
    wires = [update_body(i) for i in range(n)]
    problem = lr.compare_update_json(lean, wires[:200], compact=True)
    if problem:
        raise SystemExit(f"the lean encoder's output differs: {problem}")
    updates = [Update.unpack_message(w, Direction.IN, lr.SampleNegotiated()) for w in wires]

    class Neighbor(dict):
        uid = "bench"

    neighbor = Neighbor({"local-address": "10.0.1.1", "peer-address": "10.0.1.2", "local-as": 65000,
                         "peer-as": 64512, "router-id": "10.0.1.2"})
    encoder = JSON("5.0.0")
    encoder.compact = True
    times: dict[str, list[float]] = {"exabgp": [], "lean": []}
    for _ in range(runs):
        for name in times:
            for u in updates:  # each UPDATE as ExaBGP has just parsed it: nothing rendered yet
                u.attributes._json = ""
                for nlri in u.nlris:
                    nlri.cidr._ip = None
            t0 = time.perf_counter()
            if name == "exabgp":
                for u in updates:
                    encoder.update(neighbor, "in", u, None, "", "")
            else:
                for u in updates:
                    lean.update(encoder, neighbor, "in", u, None, "", "")
            times[name].append((time.perf_counter() - t0) / n * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_reader(n: int, runs: int) -> dict[str, Any]:
    from exabgp.protocol.family import AFI
    from exabgp.reactor.network.connection import Connection

    from routing.exabgp import lean_reactor as lr

    data = b"".join(b"\xff" * 16 + struct.pack("!H", 19 + len(b)) + b"\x02" + b for b in map(update_body, range(n)))
    readers = {"exabgp": Connection._reader, "lean": lr.make_buffered_reader(Connection._reader)}
    times: dict[str, list[float]] = {"exabgp": [], "lean": []}
    try:
        for _ in range(runs):
            for name, impl in readers.items():
                Connection._reader = impl
                ours, theirs = socket.socketpair()
                ours.setblocking(False)
                conn = Connection(AFI.ipv4, "10.0.0.2", "10.0.0.1")
                conn.defensive = False
                conn.io = ours
                writer = threading.Thread(target=theirs.sendall, args=(data,))
                t0 = time.perf_counter()
                writer.start()
                got, gen = 0, conn.reader()
                while got < n:  # as ExaBGP's protocol does: one generator until it yields a message
                    if next(gen)[0]:
                        got += 1
                        gen = conn.reader()
                times[name].append((time.perf_counter() - t0) / n * 1e6)
                writer.join()
                conn.io = None
                ours.close()
                theirs.close()
    finally:
        Connection._reader = readers["exabgp"]
    return {k: statistics.median(v) for k, v in times.items()}


def inner(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from exabgp.environment import getenv
    from exabgp.logger import log

    log.init(getenv())  # ExaBGP's parser logs; its own entry point does this first
    from exabgp.version import version

    enc = bench_encoder(args.updates, args.runs)
    rd = bench_reader(args.messages, args.runs)
    print(f"\n### ExaBGP {version} on {sys.implementation.name} {sys.version.split()[0]}, medians of {args.runs}\n")
    print("| step | ExaBGP's own µs/message | lean launcher µs/message | ratio |")
    print("|---|---|---|---|")
    print(f"| UPDATE -> JSON (`JSON.update`), {args.updates:,} UPDATEs of 4 prefixes | {enc['exabgp']:.2f} | "
          f"{enc['lean']:.2f} | {enc['lean'] / enc['exabgp']:.2f} |")
    print(f"| reading messages (`Connection.reader`), {args.messages:,} through a socket pair | {rd['exabgp']:.2f} | "
          f"{rd['lean']:.2f} | {rd['lean'] / rd['exabgp']:.2f} |")
    print("RESULT " + json.dumps({
        "exabgp": version, "interpreter": sys.implementation.name,
        "encoder_us": {k: round(v, 3) for k, v in enc.items()}, "encoder_ratio": round(enc["lean"] / enc["exabgp"], 3),
        "reader_us": {k: round(v, 3) for k, v in rd.items()}, "reader_ratio": round(rd["lean"] / rd["exabgp"], 3)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interpreter", choices=sorted(INTERPRETERS), default="pypy")
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=250_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args)
        return
    python = INTERPRETERS[args.interpreter]
    if not python.exists():
        raise SystemExit(f"{python} missing: run make deps")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["exabgp_log_level"] = "CRITICAL"  # the reader bench closes its connections: no lines about that
    sys.exit(subprocess.run([str(python), str(Path(__file__).resolve()), "--inner", "--updates", str(args.updates),
                             "--messages", str(args.messages), "--runs", str(args.runs)], env=env, cwd=ROOT).returncode)


if __name__ == "__main__":
    main()
