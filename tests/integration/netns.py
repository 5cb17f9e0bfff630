"""Test helpers: uniquely named network namespaces that are always removed, and polling (for a
state, or for a FIB writer to have written what it was given)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def unique_prefix(tag: str) -> str:
    return f"prt{os.getpid() % 1000}{uuid.uuid4().hex[:4]}{tag}"[:12]


def sh(*args: str, check: bool = True, ns: str | None = None, timeout: float = 60) -> str:
    cmd = list(args)
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def ip_json(ns: str, *args: str) -> Any:
    out = sh("ip", "-n", ns, "-json", *args)
    return json.loads(out) if out.strip() else []


def wait_for(fn: Callable[[], T], *, timeout: float = 30, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``fn`` until it returns a truthy value (FRR topotests' run_and_expect)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # the state may not be observable yet
            last = exc
        time.sleep(interval)  # poll
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def resolve_routes(routes: list[dict], nexthops: list[dict]) -> dict[str, list[str]]:
    """`ip -json route` entries -> {dst: sorted gateways}, following nhid through `ip -json nexthop`
    (with nexthop_compat_mode=0 the kernel reports only the nhid of a route)."""
    by_id = {n["id"]: n for n in nexthops}

    def gws(nhid: int) -> list[str]:
        n = by_id.get(nhid, {})
        if "group" in n:
            return [g for m in n["group"] for g in gws(m["id"])]
        return [n["gateway"]] if "gateway" in n else []

    out = {}
    for r in routes:
        if "nhid" in r:
            g = gws(r["nhid"])
        elif "nexthops" in r:
            g = [n["gateway"] for n in r["nexthops"]]
        else:
            g = [r.get("gateway", "dev " + r.get("dev", "?"))]
        out[r["dst"]] = sorted(g, key=_addr_key)
    return out


def _addr_key(a: str) -> tuple[int, int, str]:
    import ipaddress

    try:
        ip = ipaddress.ip_address(a)
    except ValueError:
        return (9, 0, a)
    return (ip.version, int(ip), a)


async def write_fib(fib: Any, items: list[tuple[str, Any]], timeout_s: float = 30.0) -> None:
    """Run ``fib`` (a :class:`fib.kernel.KernelFib`) until it has written ``items``
    (``(prefix, FibEntry | None)``, None deletes) and is idle again."""
    import asyncio

    from common.model import parse_prefix

    task = asyncio.create_task(fib.run())
    try:
        for prefix, e in items:
            fib.submit(parse_prefix(prefix), e)
        await asyncio.wait_for(fib.wait_idle(), timeout_s)
    finally:
        task.cancel()
