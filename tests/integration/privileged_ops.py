"""Run pop-router's privileged operations one by one; print {operation: "ok" | error} as JSON.

Started by test_service_privileges.py inside a namespace, under ``setpriv --bounding-set`` with the
systemd unit's capabilities: ``python privileged_ops.py BPFFS_DIR`` (veth ``d0`` with 10.0.0.1/24
must exist). Each operation is the one the daemon or a child performs, by the same code where it
is a library call (the XDP loader), or by the same system call otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

SO_BINDTODEVICE = 25
TCP_MD5SIG = 14


def netlink_nexthop_and_route(_: Path) -> None:
    """The FIB writer: a nexthop object and a route pointing at it, with our protocol id."""
    for cmd in (["ip", "nexthop", "replace", "id", "77", "via", "10.0.0.2", "dev", "d0"],
                ["ip", "route", "replace", "192.0.2.0/24", "nhid", "77", "proto", "200"]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise PermissionError(p.stderr.strip())


def sysctl_nexthop_compat_mode(_: Path) -> None:
    Path("/proc/sys/net/ipv4/nexthop_compat_mode").write_text("0\n")


def xdp_load_pin_attach(bpffs: Path) -> None:
    from fib.xdp.loader import XdpProgram

    prog = XdpProgram(pin_dir=bpffs / "pop-router")
    try:
        prog.attach("d0")
        prog.stats_by_interface()
    finally:
        prog.close(detach=True)


def bfd_single_hop_socket(_: Path) -> None:
    """bfd/transport.py: UDP 3784 bound to the interface, TTL 255 (RFC 5881)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, b"d0\0")
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        s.bind(("10.0.0.1", 3784))


def bgp_listen_179(_: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("10.0.0.1", 179))
        s.listen()


def tcp_md5_key(_: Path) -> None:
    """ExaBGP's md5-password: struct tcp_md5sig for peer 10.0.0.2."""
    addr = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton("10.0.0.2")).ljust(128, b"\0")
    key = b"example-key"
    md5sig = addr + struct.pack("=BBHI", 0, 0, len(key), 0) + key.ljust(80, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig)


def sched_fifo(_: Path) -> None:
    """bfd/process.py --realtime: SCHED_FIFO for itself (in a child, so this process stays normal)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        except OSError as exc:
            os._exit(exc.errno or 1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise PermissionError(os.strerror(code))


def mount_bpffs(bpffs: Path) -> None:
    from fib.xdp.loader import ensure_bpffs

    if not ensure_bpffs(bpffs.parent / "second-bpffs"):
        raise RuntimeError("already mounted")


OPERATIONS: list[Callable[[Path], None]] = [
    netlink_nexthop_and_route, sysctl_nexthop_compat_mode, xdp_load_pin_attach, bfd_single_hop_socket,
    bgp_listen_179, tcp_md5_key, sched_fifo, mount_bpffs,
]


def main() -> None:
    bpffs = Path(sys.argv[1])
    result = {}
    for op in OPERATIONS:
        try:
            op(bpffs)
            result[op.__name__] = "ok"
        except Exception as exc:
            result[op.__name__] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
