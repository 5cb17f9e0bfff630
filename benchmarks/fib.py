#!/usr/bin/env python3
"""FIB writer benchmark: install and delete 100k / 1M IPv4 and 200k IPv6 routes through the writer,
next to `ip -batch` doing the same in the same run, in a fresh namespace.

    .venv/bin/python benchmarks/fib.py [--sizes 100000,1000000] [--v6 200000] [--repeat 3]

The writer path is the daemon's: FibEntry -> plan (nexthop objects, groups, routes on nhid) ->
~1 MiB netlink batches -> errors matched back. `ip -batch` adds plain `via` routes (protocol 201).
Memory per route is the writer process's RSS growth per installed route. Each size runs --repeat
times, writer and ip -batch alternating; the table shows medians. Ends with RESULT {json}.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.model import FibEntry, Prefix4, Prefix6, parse_address  # noqa: E402
from common.netns import netns  # noqa: E402
from fib.kernel import KernelFib, set_compat_mode  # noqa: E402
from fib.netlink import RouteSocket  # noqa: E402
from routing.runtime import tune_runtime  # noqa: E402

GW4 = [parse_address(f"10.0.0.{i}") for i in (2, 3, 4, 5)]
GW6 = [parse_address(f"2001:db8:1::{i}") for i in (2, 3, 4, 5)]


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def prefixes(n: int, v6: bool) -> list:
    if v6:
        return [Prefix6((0x20010DB8_0100_0000_0000_0000_0000_0000 + (i << 64), 64)) for i in range(n)]
    return [Prefix4(((20 << 24) + (i << 8), 24)) for i in range(n)]


def entries(pfx: list, v6: bool) -> list[FibEntry]:
    gws = GW6 if v6 else GW4
    # Realistic sharing: a handful of (primary, backup) sets, as shared tuples (the RIB interns them).
    sets = [((gws[0],), (gws[2],)), ((gws[1],), (gws[3],))]
    return [FibEntry(p, sets[i % 2][0], (), sets[i % 2][1]) for i, p in enumerate(pfx)]


async def writer_run(ns: str, ents: list[FibEntry]) -> tuple[float, float, int]:
    tune_runtime()
    fib = KernelFib(protocol=200, netns=ns)
    task = asyncio.create_task(fib.run())
    gc.collect()
    r0 = rss()
    t0 = time.perf_counter()
    fib.submit_many((e.prefix, e) for e in ents)  # the daemon hands each RIB diff over this way
    await fib.wait_idle()
    t_install = time.perf_counter() - t0
    r1 = rss()
    assert len(fib.installed) == len(ents) and not fib.failed, (len(fib.installed), len(fib.failed))
    t0 = time.perf_counter()
    fib.submit_many((e.prefix, None) for e in ents)
    await fib.wait_idle()
    t_delete = time.perf_counter() - t0
    assert not fib.installed
    task.cancel()
    fib.close()
    return t_install, t_delete, r1 - r0


def ip_batch(ns: str, pfx: list, v6: bool, work: Path) -> tuple[float, float]:
    gws = GW6 if v6 else GW4
    add = work / "add.batch"
    dele = work / "del.batch"
    add.write_text("".join(f"route add {p} via {gws[i % 2]} proto 201 metric 30\n" for i, p in enumerate(pfx)))
    dele.write_text("".join(f"route del {p} proto 201 metric 30\n" for p in pfx))
    t0 = time.perf_counter()
    subprocess.run(["ip", "-n", ns, "-batch", str(add)], check=True)
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["ip", "-n", ns, "-batch", str(dele)], check=True)
    return t_add, time.perf_counter() - t0


def count_routes(ns: str) -> int:
    with netns(ns):
        s = RouteSocket()
    n = len(s.dump_routes())
    s.close()
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--v6", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; medians are reported")
    args = ap.parse_args()
    ns = f"bfib{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="pop-fib-bench-"))
    rows = []
    result: dict = {}
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for cmd in ("link add d0 type veth peer name d1", "link set d0 up", "link set d1 up",
                    "addr add 10.0.0.1/24 dev d0", "addr add 2001:db8:1::1/64 dev d0 nodad"):
            subprocess.run(["ip", "-n", ns, *cmd.split()], check=True)
        set_compat_mode(ns, 0)
        runs = [(int(n), False) for n in args.sizes.split(",") if n] + ([(args.v6, True)] if args.v6 else [])
        for n, v6 in runs:
            pfx = prefixes(n, v6)
            ents = entries(pfx, v6)
            for p in pfx:  # in the daemon every prefix has been a RIB dict key (hash cached) before the FIB
                hash(p)
            samples = []
            for _ in range(args.repeat):  # alternate writer and reference so both see the same noise
                base = count_routes(ns)
                ins, dele, mem = asyncio.run(writer_run(ns, ents))
                assert count_routes(ns) == base
                ref_add, ref_del = ip_batch(ns, pfx, v6, work)
                samples.append((ins, dele, ref_add, ref_del, mem / n))
            ins, dele, ref_add, ref_del, _ = (statistics.median(col) for col in zip(*samples, strict=True))
            per_route = max(s[4] for s in samples)  # later runs reuse freed memory: the first is the honest one
            fam = "IPv6" if v6 else "IPv4"
            rows.append((fam, n, ins, dele, ref_add, ref_del, per_route))
            spread = ", ".join(f"{s[2] / s[0]:.1f}x" for s in samples)
            print(f"{fam} {n:>9,}: writer install {ins:6.2f} s, delete {dele:6.2f} s | ip -batch add {ref_add:6.2f} s, "
                  f"del {ref_del:6.2f} s | ratio {ref_add / ins:4.1f}x / {ref_del / dele:4.1f}x | {per_route:5.0f} B/route"
                  f" | medians of {len(samples)}; install ratios per run {spread}", flush=True)
            del pfx, ents
            gc.collect()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print()
    print("| family | routes | writer install s | writer delete s | ip -batch add s | ip -batch del s | install ratio | delete ratio | writer B/route |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fam, n, ins, dele, ra, rd, b in rows:
        print(f"| {fam} | {n:,} | {ins:.2f} | {dele:.2f} | {ra:.2f} | {rd:.2f} | {ra / ins:.1f}x | {rd / dele:.1f}x | {b:.0f} |")
    by = {(f, n): r for r in rows for f, n in [(r[0], r[1])]}
    big = max((r for r in rows if r[0] == "IPv4"), key=lambda r: r[1])
    result = {
        "install_1m_s": round(big[2], 2) if big[1] >= 1_000_000 else None,
        "ip_batch_1m_s": round(big[4], 2) if big[1] >= 1_000_000 else None,
        "ratio_vs_ip_batch": round(min(r[4] / r[2] for r in rows), 2),
        "bytes_per_route": round(max(r[6] for r in rows)),
        "runs": [{"family": r[0], "n": r[1], "install_s": round(r[2], 3), "delete_s": round(r[3], 3),
                  "ip_batch_add_s": round(r[4], 3), "ip_batch_del_s": round(r[5], 3)} for r in rows],
    }
    del by
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
