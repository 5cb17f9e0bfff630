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
The generators and the counting sink are benchmark programs in their own object,
build/xdp_gen.o (benchmarks/xdp_gen.c), loaded with the production object's maps reused.
Prints a table and RESULT {json}. Needs root, clang-built build/pop_xdp.o and build/xdp_gen.o (`make`).
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
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

from common.netns import netns  # noqa: E402
from fib.xdp.loader import LPM4_KEY, MAPS, U32, Nexthop, XdpError, XdpProgram  # noqa: E402

GEN_OBJECT = ROOT / "build" / "xdp_gen.o"
GEN_HDR = 42  # bytes of the frame the generators restore from gen_template (xdp_gen.c)


def _check(rc: int, what: str) -> int:
    """libbpf's convention: a negative return is -errno (or -1 with errno set)."""
    if rc < 0:
        err = -rc if rc < -1 else ctypes.get_errno()
        raise XdpError(err, f"{what}: {os.strerror(err)}")
    return rc


class _TestRunOpts(ctypes.Structure):  # struct bpf_test_run_opts (libbpf 1.1)
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p), ("data_out", ctypes.c_void_p),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_void_p), ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("repeat", ctypes.c_int),
                ("duration", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


class _XdpMd(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint32), ("data_end", ctypes.c_uint32), ("data_meta", ctypes.c_uint32),
                ("ingress_ifindex", ctypes.c_uint32), ("rx_queue_index", ctypes.c_uint32),
                ("egress_ifindex", ctypes.c_uint32)]


class Generator:
    """build/xdp_gen.o loaded beside a production :class:`XdpProgram`, sharing its maps: the
    generators (gen_forward, gen_pass) and the counting sink (xdp_count) with its rx_count map."""

    def __init__(self, prod: XdpProgram, obj_path: Path = GEN_OBJECT) -> None:
        if not obj_path.exists():
            raise XdpError(2, f"{obj_path} not built (make builds it from benchmarks/xdp_gen.c)")
        lib = self.lib = prod.lib
        lib.bpf_map__reuse_fd.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.bpf_program__set_autoload.argtypes = [ctypes.c_void_p, ctypes.c_bool]
        lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.c_void_p]
        self.obj = lib.bpf_object__open_file(str(obj_path).encode(), None)
        if not self.obj:
            raise XdpError(ctypes.get_errno(), f"cannot open {obj_path}")
        for name in MAPS:  # the production tables, not copies
            m = lib.bpf_object__find_map_by_name(self.obj, name.encode())
            _check(lib.bpf_map__reuse_fd(m, prod.fds[name]), f"reuse map {name}")
        for name in ("pop_xdp", "xdp_pass"):  # the production programs: loaded by XdpProgram, not here
            lib.bpf_program__set_autoload(lib.bpf_object__find_program_by_name(self.obj, name.encode()), False)
        _check(lib.bpf_object__load(self.obj), f"loading {obj_path}")
        self.fds = {n: _check(lib.bpf_object__find_map_fd_by_name(self.obj, n.encode()), n)
                    for n in ("gen_template", "rx_count")}
        self.forward_fd, self.pass_fd, self.count_fd = (
            _check(lib.bpf_program__fd(lib.bpf_object__find_program_by_name(self.obj, n.encode())), n)
            for n in ("gen_forward", "gen_pass", "xdp_count"))

    def close(self) -> None:
        self.lib.bpf_object__close(self.obj)

    def set_template(self, frame: bytes) -> None:
        kb = ctypes.create_string_buffer(U32.pack(0), 4)
        vb = ctypes.create_string_buffer(frame[:GEN_HDR].ljust(GEN_HDR, b"\0"), GEN_HDR)
        _check(self.lib.bpf_map_update_elem(self.fds["gen_template"], kb, vb, 0), "update gen_template")

    def rx_count(self) -> int:
        ncpu = self.lib.libbpf_num_possible_cpus()
        kb = ctypes.create_string_buffer(U32.pack(0), 4)
        vb = ctypes.create_string_buffer(8 * ncpu)
        self.lib.bpf_map_lookup_elem(self.fds["rx_count"], kb, vb)
        return sum(struct.unpack(f"={ncpu}Q", vb.raw))

    def run_live(self, prog_fd: int, frame: bytes, ingress_ifindex: int, repeat: int, ns: str | None = None) -> None:
        """Inject ``frame`` ``repeat`` times as if received on ``ingress_ifindex`` (BPF_PROG_RUN with
        BPF_F_TEST_XDP_LIVE_FRAMES: redirects really transmit, XDP_PASS really enters the stack).
        The kernel's generator: no packet generator that works on this kernel ships with Debian."""
        opts = _TestRunOpts()
        opts.sz = ctypes.sizeof(_TestRunOpts)
        buf = ctypes.create_string_buffer(frame, len(frame))
        opts.data_in = ctypes.cast(buf, ctypes.c_void_p)
        opts.data_size_in = len(frame)
        md = _XdpMd(0, len(frame), 0, ingress_ifindex, 0, 0)
        opts.ctx_in = ctypes.cast(ctypes.pointer(md), ctypes.c_void_p)
        opts.ctx_size_in = ctypes.sizeof(_XdpMd)
        opts.repeat = repeat
        opts.flags = 1 << 1  # BPF_F_TEST_XDP_LIVE_FRAMES
        opts.batch_size = 64
        with netns(ns):
            _check(self.lib.bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_RUN live frames")


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


def measure(g: Generator, prog_fd: int, fr: bytes, rA: int, r: str, n: int, runs: int) -> float:
    rates = []
    for _ in range(runs):
        before = g.rx_count()
        t0 = time.perf_counter()
        g.run_live(prog_fd, fr, rA, n, r)
        dt = time.perf_counter() - t0
        time.sleep(0.05)  # poll: let the last redirected frames reach the counter
        rates.append((g.rx_count() - before) / dt)
    return statistics.median(rates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--trie", type=int, default=1_000_000)
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:4]
    r, b = f"bx{tag}r", f"bx{tag}b"
    x = g = None
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
        g = Generator(x)
        x.attach("bR", b, fd=g.count_fd)
        with netns(r):
            rA, rB = socket.if_nametoindex("rA"), socket.if_nametoindex("rB")
        x.count_rows.add(rA)  # the generators inject as if received on rA: count that row
        x.set_nexthop(1, Nexthop(rB, mac(r, "rB"), mac(b, "bR")), r)
        x.set_nexthop(2, Nexthop(rB, mac(r, "rB"), mac(b, "bR"), True, (100,)), r)
        x.set_group(10, [1])
        x.set_route(ipaddress.ip_network("198.51.100.0/24"), 10)
        fr = frame(mac(r, "rA"))
        g.set_template(fr)
        results = {}
        results["kernel_ipv4_pps"] = measure(g, g.pass_fd, fr, rA, r, args.frames, args.runs)
        results["xdp_ipv4_pps"] = measure(g, g.forward_fd, fr, rA, r, args.frames, args.runs)
        x.set_group(10, [2])
        results["xdp_mpls_pps"] = measure(g, g.forward_fd, fr, rA, r, args.frames, args.runs)
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
        results["xdp_1m_trie_pps"] = measure(g, g.forward_fd, fr, rA, r, args.frames, args.runs)
        t0 = time.perf_counter()
        x.set_group(10, [2])
        results["failover_write_us"] = (time.perf_counter() - t0) * 1e6
        results["trie_fill_per_s"] = args.trie / fill_s
        stats = x.stats()
    finally:
        if x is not None:
            x.close()
        if g is not None:
            g.close()
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
