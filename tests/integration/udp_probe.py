"""Tagged UDP datagrams for lab tests, run inside a node: ``recv PORT`` or ``send DST PORT TAG COUNT [SRC]``.

``recv`` binds every address of the node and prints one line per datagram, ``SRC DST PAYLOAD`` (DST
read with IP_PKTINFO: which of the node's addresses it was sent to), flushed at once, after a first
line ``listening``; the test reads the lines from the log the lab runner gives a background process.
``send`` sends ``COUNT`` datagrams ``TAG i`` to ``DST:PORT``, from ``SRC`` when given (an address of
the node: a test adds a spoofed one with ``ip addr add`` first).
"""

from __future__ import annotations

import socket
import struct
import sys

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # <linux/in.h>; older Pythons lack the name


def recv(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s.bind(("0.0.0.0", port))
    print("listening", flush=True)
    while True:
        data, anc, _, (src, _) = s.recvmsg(2048, socket.CMSG_SPACE(12))
        dst = "?"
        for level, kind, value in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                dst = socket.inet_ntoa(struct.unpack("i4s4s", value[:12])[2])
        print(src, dst, data.decode(errors="replace"), flush=True)


def send(dst: str, port: int, tag: str, count: int, src: str | None = None) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if src:
        s.bind((src, 0))
    for i in range(count):
        s.sendto(f"{tag} {i}".encode(), (dst, port))


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        recv(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), *sys.argv[6:7])
