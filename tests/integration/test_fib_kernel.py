"""The kernel writer on a real kernel in a fresh namespace, checked against `ip -json route`."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import subprocess

from fib.kernel import KernelFib
from fib.netlink import RTM_NEWROUTE, RouteSocket, encode_route
from fib.netns import netns as enter_netns
from routing.model import FibEntry

from .netns import ip_json

N = ipaddress.ip_network
A = ipaddress.ip_address
PROTO = 200


def kernel_routes(ns: str, family: str = "-4") -> dict[str, tuple[str, ...]]:
    out = {}
    for r in ip_json(ns, family, "route", "show", "proto", str(PROTO)):
        if "nexthops" in r:
            gws = tuple(sorted((n["gateway"] for n in r["nexthops"]), key=lambda g: int(A(g))))
        else:
            gws = (r["gateway"],)
        dst = r["dst"] if "/" in r["dst"] else r["dst"] + ("/32" if family == "-4" else "/128")
        out[dst] = gws
    return out


async def _apply(fib: KernelFib, entries: list[tuple[str, tuple[str, ...] | None]]) -> None:
    task = asyncio.create_task(fib.run())
    try:
        for prefix, nhs in entries:
            p = N(prefix)
            fib.submit(p, FibEntry(p, tuple(A(x) for x in nhs)) if nhs else None)
        await asyncio.wait_for(fib.wait_idle(), 30)
    finally:
        task.cancel()


def test_encoder_round_trip_against_ip_json(netns: str) -> None:
    with enter_netns(netns):
        s = RouteSocket()
    msgs = [
        encode_route(RTM_NEWROUTE, 0, N("198.51.100.0/24"), [A("10.0.0.2")], protocol=PROTO, table=254, metric=20),
        encode_route(RTM_NEWROUTE, 0, N("203.0.113.0/24"), [A("10.0.0.2"), A("10.0.0.3")],
                     protocol=PROTO, table=254, metric=20),
        encode_route(RTM_NEWROUTE, 0, N("2001:db8:100::/48"), [A("2001:db8:1::2")], protocol=PROTO, table=254,
                     metric=20),
        encode_route(RTM_NEWROUTE, 0, N("2001:db8:200::/48"), [A("2001:db8:1::2"), A("2001:db8:1::3")],
                     protocol=PROTO, table=254, metric=20),
    ]
    assert s.apply(msgs).errors == []
    assert kernel_routes(netns) == {"198.51.100.0/24": ("10.0.0.2",), "203.0.113.0/24": ("10.0.0.2", "10.0.0.3")}
    v6 = kernel_routes(netns, "-6")
    assert v6 == {"2001:db8:100::/48": ("2001:db8:1::2",), "2001:db8:200::/48": ("2001:db8:1::2", "2001:db8:1::3")}
    r4 = ip_json(netns, "-4", "route", "show", "203.0.113.0/24")[0]
    assert r4["protocol"] == str(PROTO) and r4["metric"] == 20
    # Our decoder reads back what we wrote.
    dumped = {str(r.prefix): tuple(map(str, r.nexthops)) for r in s.dump_owned(PROTO, 254)}
    assert dumped == {**kernel_routes(netns), **v6}
    s.close()


def test_errors_are_matched_to_operations(netns: str) -> None:
    with enter_netns(netns):
        s = RouteSocket()
    msgs = [
        encode_route(RTM_NEWROUTE, 0, N(f"198.51.{i}.0/24"), [A("10.0.0.2" if i != 3 else "10.9.9.9")],
                     protocol=PROTO, table=254, metric=20)
        for i in range(6)
    ]
    res = s.apply(msgs)
    assert [(i, e) for i, e in res.errors] == [(3, 101)]  # ENETUNREACH: gateway not on a connected net
    assert len(kernel_routes(netns)) == 5
    s.close()


async def test_writer_never_touches_other_protocols(netns: str) -> None:
    subprocess.run(["ip", "-n", netns, "route", "add", "198.51.100.0/24", "via", "10.0.0.9", "proto", "static",
                    "metric", "20"], check=True)
    fib = KernelFib(protocol=PROTO, netns=netns)
    p = N("198.51.100.0/24")
    # Same prefix and metric as a foreign route: we must not take it over (EEXIST, kept as failed).
    await _apply(fib, [("198.51.100.0/24", ("10.0.0.2",))])
    assert fib.failed[p].errno == 17 and p not in fib.installed
    await _apply(fib, [("198.51.100.0/24", None)])
    left = ip_json(netns, "-4", "route", "show", "198.51.100.0/24")
    assert [(r.get("protocol"), r.get("gateway")) for r in left] == [("static", "10.0.0.9")]
    fib.close()


async def test_failed_routes_are_retried_and_visible(netns: str) -> None:
    fib = KernelFib(protocol=PROTO, netns=netns)
    task = asyncio.create_task(fib.run())
    p = N("198.51.100.0/24")
    fib.submit(p, FibEntry(p, (A("10.5.0.2"),)))
    await asyncio.wait_for(fib.wait_idle(), 10)
    assert p in fib.failed and fib.failed[p].errno == 101
    # The missing link appears; the retry installs the route without any new RIB input.
    subprocess.run(["ip", "-n", netns, "addr", "add", "10.5.0.1/24", "dev", "d0"], check=True)
    for _ in range(100):
        if p not in fib.failed:
            break
        await asyncio.sleep(0.05)  # poll
    assert p not in fib.failed
    task.cancel()
    assert kernel_routes(netns) == {"198.51.100.0/24": ("10.5.0.2",)}
    fib.close()


async def test_adopt_after_restart_keeps_routes_and_sweeps_stale(netns: str) -> None:
    first = KernelFib(protocol=PROTO, netns=netns)
    await _apply(first, [("198.51.100.0/24", ("10.0.0.2",)), ("198.51.101.0/24", ("10.0.0.3",)),
                       ("2001:db8:100::/48", ("2001:db8:1::2",))])
    first.close()  # the "old daemon" is gone; its routes stay
    second = KernelFib(protocol=PROTO, netns=netns)
    assert second.adopt() == 3
    ops_before = second.operations
    # Re-announced unchanged: no kernel operation at all; the un-announced one is swept.
    await _apply(second, [("198.51.100.0/24", ("10.0.0.2",)), ("2001:db8:100::/48", ("2001:db8:1::2",))])
    assert second.operations == ops_before
    second.sweep_stale()
    await _apply(second, [])
    assert kernel_routes(netns) == {"198.51.100.0/24": ("10.0.0.2",)}
    assert second.operations == ops_before + 1
    second.close()


async def test_random_diff_sequences_leave_kernel_equal_to_desired(netns: str) -> None:
    rnd = random.Random(7)
    fib = KernelFib(protocol=PROTO, netns=netns, batch_size=7)
    desired: dict[str, tuple[str, ...]] = {}
    prefixes = [f"198.51.{i}.0/24" for i in range(40)]
    gws = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    for _round in range(5):
        ops = []
        for _ in range(60):
            p = rnd.choice(prefixes)
            if rnd.random() < 0.3:
                desired.pop(p, None)
                ops.append((p, None))
            else:
                nhs = tuple(sorted(rnd.sample(gws, rnd.randint(1, 3)), key=lambda g: int(A(g))))
                desired[p] = nhs
                ops.append((p, nhs))
        await _apply(fib, ops)
        assert kernel_routes(netns) == desired
    fib.close()
