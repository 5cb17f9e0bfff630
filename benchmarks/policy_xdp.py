#!/usr/bin/env python3
"""XDP forwarding with issue 10's policy on, against plain XDP forwarding, same generator, same run.

    .venv/bin/python benchmarks/policy_xdp.py [--frames 1000000] [--runs 3] [--blackholes 10000]

Topology and generator are ``benchmarks/xdp.py``'s (BPF_PROG_RUN live frames injected as if received
on rA, forwarded by pop_xdp's own code to rB, counted by a sink on B). Measured, in this order:
- plain: the route, no SAV, no blackholes (runs interleaved with the next: plain, policy, plain...);
- policy: source address validation on rA (the frame's source in its allowed set, among
  ``--allowed`` other prefixes) and ``--blackholes`` blackhole /32s in the trie (none covering the
  destination): the cost a legitimate packet pays for the policy;
- spoofed: the same with the frame's source outside the allowed set: the rate at which XDP drops it
  (``dropped_spoofed`` per second).
Prints a table and ``RESULT {json}`` with ``xdp_sav_ratio`` (policy / plain). Needs root and
``make build/pop_xdp.o build/xdp_gen.o``. ``run()`` is importable (benchmarks/policy.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.netns import netns  # noqa: E402
from fib.xdp.loader import BLACKHOLE_GROUP, Nexthop, XdpProgram  # noqa: E402


def _xdp_bench() -> Any:
    """benchmarks/xdp.py's generator and helpers (loaded by path: benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("pop_router_bench_xdp", ROOT / "benchmarks" / "xdp.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _with_source(fr: bytes, src: str) -> bytes:
    """The frame with another IPv4 source and its header checksum recomputed."""
    ip = bytearray(fr[14:34])
    ip[12:16] = socket.inet_aton(src)
    ip[10:12] = b"\0\0"
    c = sum(struct.unpack("!10H", bytes(ip)))
    c = (c & 0xFFFF) + (c >> 16)
    c = (c & 0xFFFF) + (c >> 16)
    ip[10:12] = struct.pack("!H", ~c & 0xFFFF)
    return fr[:14] + bytes(ip) + fr[34:]


def run(frames: int = 1_000_000, runs: int = 3, blackholes: int = 10_000, allowed: int = 1000) -> dict[str, Any]:
    xb = _xdp_bench()
    tag = uuid.uuid4().hex[:4]
    r, b = f"bp{tag}r", f"bp{tag}b"
    x = g = None
    results: dict[str, Any] = {}
    try:
        for n in (r, b):
            xb.sh(f"ip netns add {n} && ip -n {n} link set lo up")
        xb.sh(f"ip -n {r} link add rA type veth peer name aX")
        xb.sh(f"ip link add rB netns {r} type veth peer name bR netns {b}")
        xb.sh(f"ip -n {r} addr add 10.9.0.1/24 dev rA && ip -n {r} addr add 10.9.1.1/24 dev rB")
        xb.sh(f"ip -n {r} link set rA up && ip -n {r} link set aX up && ip -n {r} link set rB up")
        xb.sh(f"ip -n {b} addr add 10.9.1.2/24 dev bR && ip -n {b} link set bR up")
        x = XdpProgram()
        g = xb.Generator(x)
        x.attach("bR", b, fd=g.count_fd)
        with netns(r):
            rA, rB = socket.if_nametoindex("rA"), socket.if_nametoindex("rB")
        x.count_rows.add(rA)
        x.set_nexthop(1, Nexthop(rB, xb.mac(r, "rB"), xb.mac(b, "bR")), r)
        x.set_group(10, [1])
        x.set_route(ipaddress.ip_network("198.51.100.0/24"), 10)
        fr = xb.frame(xb.mac(r, "rA"))  # source 10.9.0.2 -> 198.51.100.10
        g.set_template(fr)
        # Interleaved (plain, policy, plain, policy...): the machine's load moves between runs, and a
        # ratio of two back-to-back runs is steadier than one of two blocks of runs.
        bh = [(ipaddress.IPv4Network(((198 << 24) + (18 << 16) + i, 32)), BLACKHOLE_GROUP) for i in range(blackholes)]
        sav = [ipaddress.ip_network("10.9.0.0/24")] + [ipaddress.IPv4Network(((100 << 24) + (i << 8), 24))
                                                       for i in range(allowed)]
        plain, policy, fills = [], [], []
        for _ in range(runs):
            plain.append(xb.measure(g, g.forward_fd, fr, rA, r, frames, 1))
            for p in sav:  # SAV on rA, the frame's source allowed among other prefixes
                x.sav_allow(rA, p)
            x.sav_enable(rA, True)
            t0 = time.perf_counter()
            x.set_routes(bh)  # blackhole /32s elsewhere in the trie
            fills.append(time.perf_counter() - t0)
            policy.append(xb.measure(g, g.forward_fd, fr, rA, r, frames, 1))
            x.sav_enable(rA, False)
            for p, _g in bh:
                x.del_route(p)
        x.sav_enable(rA, True)
        x.set_routes(bh)
        results["plain_pps"] = statistics.median(plain)
        results["policy_pps"] = statistics.median(policy)
        results["ratios"] = [round(b / a, 3) for a, b in zip(plain, policy, strict=True)]
        results["blackhole_fill_s"] = statistics.median(fills)
        spoofed = _with_source(fr, "203.0.113.9")
        g.set_template(spoofed)
        before = x.stats(rA)["dropped_spoofed"]
        t0 = time.perf_counter()
        g.run_live(g.forward_fd, spoofed, rA, frames, r)
        dt = time.perf_counter() - t0
        results["spoofed_drop_pps"] = (x.stats(rA)["dropped_spoofed"] - before) / dt
        results["counters"] = x.stats(rA)
    finally:
        if x is not None:
            x.close()
        if g is not None:
            g.close()
        for n in (r, b):
            subprocess.run(["ip", "netns", "del", n], check=False)
    plain = results["plain_pps"]
    return {
        "xdp_sav_ratio": round(results["policy_pps"] / plain, 3),
        "xdp_sav_ratio_per_run": results["ratios"],
        "xdp_plain_pps": round(plain), "xdp_policy_pps": round(results["policy_pps"]),
        "xdp_spoofed_drop_pps": round(results["spoofed_drop_pps"]),
        "blackholes": blackholes, "sav_allowed_prefixes": allowed + 1,
        "blackhole_fill_s": round(results["blackhole_fill_s"], 3),
        "dropped_spoofed": results["counters"]["dropped_spoofed"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--blackholes", type=int, default=10_000)
    ap.add_argument("--allowed", type=int, default=1000)
    args = ap.parse_args()
    res = run(args.frames, args.runs, args.blackholes, args.allowed)
    p = res["xdp_plain_pps"]
    print("| XDP path (64-byte frames, median of runs) | packets/s | ratio vs plain |")
    print("|---|---|---|")
    print(f"| plain forwarding | {p:,} | 1.00x |")
    print(f"| SAV on ({res['sav_allowed_prefixes']:,} allowed prefixes) + {res['blackholes']:,} blackholes, "
          f"legitimate source | {res['xdp_policy_pps']:,} | {res['xdp_sav_ratio']:.2f}x |")
    print(f"| spoofed source, dropped by SAV | {res['xdp_spoofed_drop_pps']:,} | "
          f"{res['xdp_spoofed_drop_pps'] / p:.2f}x |")
    print("RESULT " + json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
