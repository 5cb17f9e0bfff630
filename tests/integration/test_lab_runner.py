"""The namespace runner itself: links, exec, private mounts, prefixes, and `down` after a crash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from labs.runner import Lab
from labs.topology import load_topology

from .lab import run_in
from .netns import unique_prefix

TOPO = Path(__file__).parent / "fixtures" / "two-hosts.clab.yml"


def _lab() -> Lab:
    return Lab(load_topology(TOPO), unique_prefix("rn") + "-")


def test_two_labs_side_by_side_and_down_after_a_crash() -> None:
    one, two = _lab(), _lab()
    try:
        one.up(log=lambda *_: None)
        two.up(log=lambda *_: None)
        for lab in (one, two):
            assert run_in(lab, "a", "ping", "-c", "1", "-W", "2", "192.0.2.2").returncode == 0
            # /run is private to the node: what a node writes there, others and the machine never see.
            run_in(lab, "a", "sh", "-c", "echo x > /run/frr/marker 2>/dev/null || echo x > /run/bird/marker")
            assert run_in(lab, "b", "sh", "-c", "ls /run/bird").stdout.strip() == ""
        assert not Path("/run/bird/marker").exists()
        # Simulate a crash of whatever brought `one` up: its state is gone, its processes are not.
        shutil.rmtree(one.state)
        cmd_pid = None
        for line in subprocess.run(["ip", "netns", "pids", one.ns("b")], capture_output=True, text=True).stdout.split():
            cmd_pid = int(line)
        assert cmd_pid is not None
        assert sorted(one.down()) == [one.ns("a"), one.ns("b")]
        assert not Path(f"/proc/{cmd_pid}").exists() or "Z" in Path(f"/proc/{cmd_pid}/stat").read_text().split()[2]
        assert one.namespaces() == []
        # The other lab is untouched.
        assert run_in(two, "a", "ping", "-c", "1", "-W", "2", "192.0.2.2").returncode == 0
    finally:
        one.down()
        two.down()
    assert two.namespaces() == []


def _tx_checksum(ns: str, ifname: str) -> int:
    """``ethtool -k IFNAME`` tx-checksumming (1 on, 0 off): the SIOCETHTOOL ioctl ETHTOOL_GTXCSUM."""
    import array
    import fcntl
    import socket
    import struct

    from common.netns import netns

    value = array.array("I", [0x16, 0xFF])
    with netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(s, 0x8946, struct.pack("16sP", ifname.encode(), value.buffer_info()[0]))
    finally:
        s.close()
    return value[1]


def test_links_have_tx_checksum_offload_off_as_containerlab_makes_them() -> None:
    """containerlab runs `ethtool -K IF tx off` on both ends of each veth it creates; with it on, a
    TCP/UDP packet leaves a node with its checksum unfilled, and an XDP redirect delivers it so."""
    lab = _lab()
    try:
        lab.up(log=lambda *_: None)
        for link in lab.topo.links:
            for ep in (link.a, link.b):
                assert _tx_checksum(lab.ns(ep.node), ep.interface) == 0, (ep.node, ep.interface)
    finally:
        lab.down()
