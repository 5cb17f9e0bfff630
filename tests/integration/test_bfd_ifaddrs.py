"""The BFD process's address -> interface lookup (stdlib ioctl + /proc) on a real kernel, against
``ip -json addr``: it replaced a pyroute2 dump that blocked the BFD loop for 10-290 ms on a reload."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.netns import ip_json, sh

ROOT = Path(__file__).resolve().parents[2]
CODE = """
import json, sys, time
from bfd.transport import interfaces_by_address
t = time.perf_counter()
d = interfaces_by_address()
print(json.dumps({"map": d, "ms": (time.perf_counter() - t) * 1000}))
"""


def test_interfaces_by_address_matches_ip_addr(netns: str) -> None:
    sh("ip", "link", "add", "bfa0", "type", "veth", "peer", "name", "bfa1", ns=netns)
    sh("ip", "link", "add", "bfb0", "type", "veth", "peer", "name", "bfb1", ns=netns)
    for dev in ("bfa0", "bfa1", "bfb0", "bfb1", "lo"):
        sh("ip", "link", "set", dev, "up", ns=netns)
    sh("ip", "addr", "add", "192.0.2.1/24", "dev", "bfa0", ns=netns)
    sh("ip", "addr", "add", "192.0.2.9/24", "dev", "bfa0", ns=netns)  # secondary, no label
    sh("ip", "addr", "add", "198.51.100.1/24", "dev", "bfb0", "label", "bfb0:cust", ns=netns)  # alias label
    sh("ip", "addr", "add", "2001:db8::1/64", "dev", "bfa0", "nodad", ns=netns)
    sh("ip", "addr", "add", "2001:db8:2::1/64", "dev", "bfb0", "nodad", ns=netns)
    for i in range(100):  # more than the first ioctl buffer's 64 entries
        sh("ip", "addr", "add", f"10.77.{i}.1/32", "dev", "bfb1", ns=netns)
    expected: dict[str, str] = {}
    for link in ip_json(netns, "addr", "show"):
        for a in link.get("addr_info", []):
            expected.setdefault(a["local"], link["ifname"])
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", CODE], capture_output=True,
                         text=True, check=True, cwd=str(ROOT))
    got = json.loads(out.stdout)
    assert got["map"] == expected
    assert got["map"]["198.51.100.1"] == "bfb0"
    assert got["map"]["2001:db8::1"] == "bfa0"
    assert got["map"]["2001:db8:2::1"] == "bfb0"
    assert got["map"]["10.77.99.1"] == "bfb1"


def test_lookup_never_leaves_the_loop_waiting() -> None:
    """Called on the BFD loop at every reload: it must not block it (the pyroute2 dump did)."""
    from bfd.transport import interfaces_by_address

    async def run() -> float:
        t = time.perf_counter()
        interfaces_by_address()
        return time.perf_counter() - t

    worst = max(asyncio.run(run()) for _ in range(5))
    assert worst < 0.005, f"address lookup took {worst * 1000:.1f} ms"
