#!/usr/bin/env python3
"""XDP fast path vs kernel forwarding, same generator, same run: 64-byte frames through a router.

    .venv/bin/python benchmarks/xdp.py [--frames 3000000] [--trie 1000000]

Router R receives frames on rA and forwards them to B over rB. B's end runs a counting program that
drops (the receiver's rate is the forwarding rate). The generator is the kernel's BPF_PROG_RUN in
live-frames mode, injecting the same 64-byte UDP frame as if received on rA:
- kernel: the injected program returns XDP_PASS, so frames enter the stack and the kernel forwards;
- XDP: the injected program is pop-router's, which looks the route up and redirects to rB;
- XDP + MPLS: the nexthop pushes one label;
- XDP with --trie extra prefixes in the LPM trie (filled with bpf_map_update_batch; the rate of one
  update per prefix is measured on the first 100k for comparison).
Prints a table and RESULT {json}. Needs root, clang-built build/pop_xdp.o (`make`).
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fib.netns import netns  # noqa: E402
from fib.xdp.loader import LPM4_KEY, U32, Nexthop, XdpProgram  # noqa: E402


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def mac(ns: str, ifname: str) -> bytes:
    out = subprocess.run(["ip", "-n", ns, "-br", "link", "show", ifname], capture_output=True, text=True).stdout
    return bytes.fromhex(out.split()[2].replace(":", ""))


def frame(dst_mac: bytes) -> bytes:
    payload = b"\0" * 18  # 14 + 20 + 8 + 18 = 60 bytes (+ FCS on a wire = 64)
    udp = struct.pack("!HHHH", 4000, 9999, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton("10.9.0.2"), socket.inet_aton("198.51.100.10"))
    c = sum(struct.unpack("!10H", ip))
    c = (c & 0xFFFF) + (c >> 16)
    c = (c & 0xFFFF) + (c >> 16)
    ip = ip[:10] + struct.pack("!H", ~c & 0xFFFF) + ip[12:]
    return dst_mac + bytes.fromhex("020000000002") + b"\x08\x00" + ip + udp


def measure(x: XdpProgram, prog_fd: int, fr: bytes, rA: int, r: str, n: int, runs: int) -> float:
    rates = []
    for _ in range(runs):
        before = x.rx_count()
        t0 = time.perf_counter()
        x.run_live(prog_fd, fr, rA, n, r)
        dt = time.perf_counter() - t0
        time.sleep(0.05)  # poll: let the last redirected frames reach the counter
        rates.append((x.rx_count() - before) / dt)
    return statistics.median(rates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--trie", type=int, default=1_000_000)
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:4]
    r, b = f"bx{tag}r", f"bx{tag}b"
    x = None
    try:
        for n in (r, b):
            sh(f"ip netns add {n} && ip -n {n} link set lo up")
        sh(f"ip -n {r} link add rA type veth peer name aX")  # rA's peer stays in R, unused
        sh(f"ip link add rB netns {r} type veth peer name bR netns {b}")
        sh(f"ip -n {r} addr add 10.9.0.1/24 dev rA && ip -n {r} addr add 10.9.1.1/24 dev rB")
        sh(f"ip -n {r} link set rA up && ip -n {r} link set aX up && ip -n {r} link set rB up")
        sh(f"ip -n {b} addr add 10.9.1.2/24 dev bR && ip -n {b} link set bR up")
        sh(f"ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1")
        sh(f"ip netns exec {r} sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.rA.rp_filter=0")
        sh(f"ip -n {r} route add 198.51.100.0/24 via 10.9.1.2")
        sh(f"ip -n {r} neigh replace 10.9.1.2 lladdr {mac(b, 'bR').hex(':')} dev rB nud permanent")
        x = XdpProgram()
        x.attach("bR", b, fd=x.count_fd)
        with netns(r):
            rA, rB = socket.if_nametoindex("rA"), socket.if_nametoindex("rB")
        x.set_nexthop(1, Nexthop(rB, mac(r, "rB"), mac(b, "bR")), r)
        x.set_nexthop(2, Nexthop(rB, mac(r, "rB"), mac(b, "bR"), True, (100,)), r)
        x.set_group(10, [1])
        x.set_route(ipaddress.ip_network("198.51.100.0/24"), 10)
        fr = frame(mac(r, "rA"))
        x.set_generator_template(fr)
        results = {}
        results["kernel_ipv4_pps"] = measure(x, x.gen_pass_fd, fr, rA, r, args.frames, args.runs)
        results["xdp_ipv4_pps"] = measure(x, x.gen_forward_fd, fr, rA, r, args.frames, args.runs)
        x.set_group(10, [2])
        results["xdp_mpls_pps"] = measure(x, x.gen_forward_fd, fr, rA, r, args.frames, args.runs)
        x.set_group(10, [1])
        # Fill rate two ways: one bpf_map_update_elem per prefix on the first 100k (the reference), then
        # the whole table with bpf_map_update_batch (what the mirror does for a table load).
        one_n = min(100_000, args.trie)
        t0 = time.perf_counter()
        for i in range(one_n):
            x._update("lpm4", LPM4_KEY.pack(24, struct.pack("!I", (20 << 24) + (i << 8))), U32.pack(10))
        results["trie_fill_one_per_s"] = one_n / (time.perf_counter() - t0)
        table = [(ipaddress.IPv4Network(((20 << 24) + (i << 8), 24)), 10) for i in range(args.trie)]
        t0 = time.perf_counter()
        x.set_routes(table)
        fill_s = time.perf_counter() - t0
        del table
        results["xdp_1m_trie_pps"] = measure(x, x.gen_forward_fd, fr, rA, r, args.frames, args.runs)
        t0 = time.perf_counter()
        x.set_group(10, [2])
        results["failover_write_us"] = (time.perf_counter() - t0) * 1e6
        results["trie_fill_per_s"] = args.trie / fill_s
        stats = x.stats()
    finally:
        if x is not None:
            x.close()
        for n in (r, b):
            subprocess.run(["ip", "netns", "del", n], check=False)
    k = results["kernel_ipv4_pps"]
    print("| path | packets/s (median of runs) | ratio vs kernel |")
    print("|---|---|---|")
    print(f"| kernel forwarding (XDP_PASS into the stack) | {k:,.0f} | 1.0x |")
    for name, key in (("XDP, IPv4", "xdp_ipv4_pps"), ("XDP, IPv4 + MPLS push", "xdp_mpls_pps"),
                      (f"XDP, IPv4, {args.trie:,} prefixes in the trie", "xdp_1m_trie_pps")):
        print(f"| {name} | {results[key]:,.0f} | {results[key] / k:.2f}x |")
    print(f"trie fill: batched {results['trie_fill_per_s']:,.0f}/s, one update per prefix "
          f"{results['trie_fill_one_per_s']:,.0f}/s ({results['trie_fill_per_s'] / results['trie_fill_one_per_s']:.1f}x);"
          f" failover (one group write): "
          f"{results['failover_write_us']:.0f} us; program counters: {stats}")
    print("RESULT " + json.dumps({
        "ratio_ipv4": round(results["xdp_ipv4_pps"] / k, 2), "ratio_mpls": round(results["xdp_mpls_pps"] / k, 2),
        "ratio_1m_trie": round(results["xdp_1m_trie_pps"] / k, 2), "xdp_ipv4_pps": round(results["xdp_ipv4_pps"]),
        "kernel_ipv4_pps": round(k), "xdp_mpls_pps": round(results["xdp_mpls_pps"]),
        "xdp_1m_trie_pps": round(results["xdp_1m_trie_pps"]), "trie_fill_per_s": round(results["trie_fill_per_s"]),
        "trie_fill_one_per_s": round(results["trie_fill_one_per_s"]),
        "failover_write_us": round(results["failover_write_us"], 1), "trie_prefixes": args.trie,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
