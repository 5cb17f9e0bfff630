"""The kernel writer on a real kernel in a fresh namespace, checked against `ip -json route/nexthop`."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import subprocess

from common.model import FibEntry
from common.netns import netns as enter_netns
from fib.kernel import KernelFib, set_compat_mode
from fib.netlink import RTM_NEWROUTE, RouteSocket, encode_group, encode_nexthop, encode_route_nhid
from tests.netlink_reference import encode_route

from .netns import ip_json, resolve_routes, write_fib

N = ipaddress.ip_network
A = ipaddress.ip_address
PROTO = 200


def kernel_routes(ns: str, family: str = "-4") -> dict[str, tuple[str, ...]]:
    routes = ip_json(ns, family, "route", "show", "proto", str(PROTO))
    nhs = ip_json(ns, "nexthop", "show")
    out = {}
    for dst, gws in resolve_routes(routes, nhs).items():
        if "/" not in dst:
            dst += "/32" if family == "-4" else "/128"
        out[dst] = tuple(gws)
    return out


def entry(prefix: str, *nhs: str, backup: tuple[str, ...] = ()) -> FibEntry:
    p = N(prefix)
    return FibEntry(p, tuple(A(x) for x in nhs), (), tuple(A(x) for x in backup))


async def _apply(fib: KernelFib, entries: list[tuple[str, tuple[str, ...] | None]]) -> None:
    await write_fib(fib, [(prefix, entry(prefix, *nhs) if nhs else None) for prefix, nhs in entries], 60)


def test_nexthop_and_group_encoders_round_trip_against_ip_json(netns: str) -> None:
    with enter_netns(netns):
        s = RouteSocket()
    oif = s.route_get(A("10.0.0.2"))[0]
    oif6 = s.route_get(A("2001:db8:1::2"))[0]
    assert oif > 0 and oif6 == oif
    msgs = [
        encode_nexthop(0, 101, A("10.0.0.2"), oif, protocol=PROTO),
        encode_nexthop(0, 102, A("10.0.0.3"), oif, protocol=PROTO),
        encode_nexthop(0, 103, A("2001:db8:1::2"), oif, protocol=PROTO),
        encode_group(0, 110, [101, 102], protocol=PROTO),
        encode_group(0, 111, [103], protocol=PROTO),
        encode_route_nhid(RTM_NEWROUTE, 0, N("198.51.100.0/24"), 110, protocol=PROTO, table=254, metric=20),
        encode_route_nhid(RTM_NEWROUTE, 0, N("2001:db8:100::/48"), 111, protocol=PROTO, table=254, metric=20),
        encode_route(RTM_NEWROUTE, 0, N("203.0.113.0/24"), [A("10.0.0.2"), A("10.0.0.3")], protocol=PROTO,
                     table=254, metric=20),
    ]
    assert s.apply(msgs).errors == []
    nh = {n["id"]: n for n in ip_json(netns, "nexthop", "show")}
    assert nh[101]["gateway"] == "10.0.0.2" and nh[101]["protocol"] == str(PROTO)
    assert [m["id"] for m in nh[110]["group"]] == [101, 102]
    assert nh[103]["gateway"] == "2001:db8:1::2"
    assert kernel_routes(netns) == {"198.51.100.0/24": ("10.0.0.2", "10.0.0.3"),
                                    "203.0.113.0/24": ("10.0.0.2", "10.0.0.3")}
    assert kernel_routes(netns, "-6") == {"2001:db8:100::/48": ("2001:db8:1::2",)}
    r = ip_json(netns, "-4", "route", "show", "198.51.100.0/24")[0]
    assert r["nhid"] == 110 and r["protocol"] == str(PROTO) and r["metric"] == 20
    # Our decoders read back what we wrote.
    mine = {n.id: n for n in s.dump_nexthops() if n.protocol == PROTO}
    assert mine[110].group == ((101, 1), (102, 1)) and str(mine[102].gateway) == "10.0.0.3"
    routes = {str(x.prefix): x for x in s.dump_owned(PROTO, 254)}
    assert routes["198.51.100.0/24"].nhid == 110 and routes["2001:db8:100::/48"].nhid == 111
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
    fib.submit(p, entry("198.51.100.0/24", "10.5.0.2"))
    await asyncio.wait_for(fib.wait_idle(), 10)
    assert p in fib.failed and fib.failed[p].errno == 101
    # The missing link appears; the retry installs the route without any new RIB input.
    subprocess.run(["ip", "-n", netns, "addr", "add", "10.5.0.1/24", "dev", "d0"], check=True)
    for _ in range(200):
        if p not in fib.failed and p in fib.installed:
            break
        await asyncio.sleep(0.05)  # poll
    assert p not in fib.failed
    task.cancel()
    assert kernel_routes(netns) == {"198.51.100.0/24": ("10.5.0.2",)}
    fib.close()


async def test_adopt_after_restart_keeps_routes_and_sweeps_stale(netns: str) -> None:
    first = KernelFib(protocol=PROTO, netns=netns)
    await _apply(first, [("198.51.100.0/24", ("10.0.0.2",)), ("198.51.101.0/24", ("10.0.0.3",)),
                         ("198.51.102.0/24", ("10.0.0.2", "10.0.0.3")), ("2001:db8:100::/48", ("2001:db8:1::2",))])
    first.close()  # the "old daemon" is gone; its routes, groups and nexthops stay
    before = kernel_routes(netns)
    second = KernelFib(protocol=PROTO, netns=netns)
    assert second.adopt() == 4
    ops_before = second.operations
    # Re-announced unchanged: no kernel operation at all; the un-announced one is swept.
    await _apply(second, [("198.51.100.0/24", ("10.0.0.2",)), ("198.51.102.0/24", ("10.0.0.2", "10.0.0.3")),
                          ("2001:db8:100::/48", ("2001:db8:1::2",))])
    assert second.operations == ops_before
    assert kernel_routes(netns) == before
    second.sweep_stale()
    await _apply(second, [])
    assert kernel_routes(netns) == {"198.51.100.0/24": ("10.0.0.2",), "198.51.102.0/24": ("10.0.0.2", "10.0.0.3")}
    # The swept route's group (10.0.0.3 alone) is gone from the kernel too; the others are kept.
    groups = [n for n in ip_json(netns, "nexthop", "show") if "group" in n]
    assert len(groups) == 3
    second.close()


async def test_failover_rewrites_groups_not_routes(netns: str) -> None:
    set_compat_mode(netns, 0)
    fib = KernelFib(protocol=PROTO, netns=netns)
    task = asyncio.create_task(fib.run())
    n = 1000
    for i in range(n):
        p = f"10.{100 + i // 256}.{i % 256}.0/24"
        fib.submit(N(p), entry(p, "10.0.0.2", backup=("10.0.0.3",)))
    await asyncio.wait_for(fib.wait_idle(), 30)
    nhid_before = {r["dst"]: r["nhid"] for r in ip_json(netns, "-4", "route", "show", "proto", str(PROTO))}
    assert len(nhid_before) == n and len(set(nhid_before.values())) == 1
    ops = fib.operations
    rewritten = await fib.fail_gateway(A("10.0.0.2"), detected_at=fib.clock())
    assert rewritten == 1
    # Every route moved to the backup, and not one route was written.
    assert set(kernel_routes(netns).values()) == {("10.0.0.3",)}
    assert {r["dst"]: r["nhid"] for r in ip_json(netns, "-4", "route", "show", "proto", str(PROTO))} == nhid_before
    assert fib.last_failover_ms is not None and fib.last_failover_ms < 1000
    await asyncio.wait_for(fib.wait_idle(), 10)
    assert fib.operations == ops  # the writer had nothing to do
    await fib.recover_gateway(A("10.0.0.2"))
    assert set(kernel_routes(netns).values()) == {("10.0.0.2",)}
    task.cancel()
    fib.close()


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
    # Nothing leaks: every nexthop object and group of ours in the kernel is in use.
    nhs = [n for n in ip_json(netns, "nexthop", "show")]
    used_groups = {r["nhid"] for r in ip_json(netns, "-4", "route", "show", "proto", str(PROTO))}
    assert {n["id"] for n in nhs if "group" in n} == used_groups
    members = {m["id"] for n in nhs if "group" in n for m in n["group"]}
    assert {n["id"] for n in nhs if "group" not in n} == members | {n["id"] for n in nhs if "group" not in n
                                                                    and n["id"] in _held(fib)}
    fib.close()


def _held(fib: KernelFib) -> set[int]:
    return {i for g in fib.group_by_id.values() for i in g.holds}


def test_compat_mode_is_per_namespace(netns: str) -> None:
    root_before = open("/proc/sys/net/ipv4/nexthop_compat_mode").read()
    assert set_compat_mode(netns, 0)
    out = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.nexthop_compat_mode"],
                         capture_output=True, text=True).stdout.strip()
    assert out == "0"
    assert open("/proc/sys/net/ipv4/nexthop_compat_mode").read() == root_before  # the machine's is untouched


async def test_drift_is_detected_and_repaired(netns: str) -> None:
    set_compat_mode(netns, 0)
    fib = KernelFib(protocol=PROTO, netns=netns)
    task = asyncio.create_task(fib.run())
    fib.start_monitor()
    for p in ("198.51.100.0/24", "198.51.101.0/24", "198.51.102.0/24"):
        fib.submit(N(p), entry(p, "10.0.0.2", backup=("10.0.0.3",)))
    await asyncio.wait_for(fib.wait_idle(), 10)
    want = kernel_routes(netns)
    # Someone deletes one of our routes, and re-points another to their own nexthop.
    subprocess.run(["ip", "-n", netns, "route", "del", "198.51.100.0/24", "proto", str(PROTO)], check=True)
    subprocess.run(["ip", "-n", netns, "nexthop", "add", "id", "7", "via", "10.0.0.9", "dev", "d0"], check=True)
    subprocess.run(["ip", "-n", netns, "route", "replace", "198.51.101.0/24", "nhid", "7", "proto", str(PROTO),
                    "metric", "20"], check=True)
    for _ in range(200):
        await asyncio.sleep(0.02)  # poll: notifications arrive on the monitor socket
        if fib.drift_repaired.get("route_deleted") and fib.drift_repaired.get("route_changed") and \
                kernel_routes(netns) == want:
            break
    assert kernel_routes(netns) == want
    assert fib.drift_repaired["route_deleted"] == 1 and fib.drift_repaired["route_changed"] == 1
    # Someone deletes our group: the kernel drops the routes on it silently; a resync puts it all back.
    gid = fib.installed[N("198.51.102.0/24")]
    subprocess.run(["ip", "-n", netns, "nexthop", "del", "id", str(gid)], check=True)
    for _ in range(200):
        await asyncio.sleep(0.02)  # poll
        if fib.drift_repaired.get("nexthop_deleted") and kernel_routes(netns) == want:
            break
    assert kernel_routes(netns) == want
    task.cancel()
    fib.close()


async def test_own_route_notifications_stay_in_the_kernel_while_writing(netns: str) -> None:
    """Issue 12: while batches are in the kernel, a socket filter drops the notifications of our own
    route writes before they reach the monitor (they were ~6 % of a full-table ingest's CPU); other
    notifications still arrive, the filter is gone once the writer is idle, and a foreign re-point
    afterwards is still found and repaired."""
    import socket
    import sys

    set_compat_mode(netns, 0)
    fib = KernelFib(protocol=PROTO, netns=netns)
    task = asyncio.create_task(fib.run())
    fib.start_monitor()
    mon = fib.monitor
    seen: list[tuple[int, int]] = []
    handle = mon._handle

    def counting(data: bytearray, end: int) -> None:
        off = 0
        while off + 16 <= end:  # (type, rtm_protocol) of every message the monitor reads
            length = int.from_bytes(data[off:off + 4], sys.byteorder)
            seen.append((int.from_bytes(data[off + 4:off + 6], sys.byteorder), data[off + 21] if length > 21 else -1))
            off += (length + 3) & ~3
        handle(data, end)

    mon._handle = counting  # type: ignore[method-assign]
    try:
        prefixes = [f"10.{64 + i // 256}.{i % 256}.0/24" for i in range(2000)]
        for p in prefixes:
            fib.submit(N(p), entry(p, "10.0.0.2", backup=("10.0.0.3",)))
        await asyncio.wait_for(fib.wait_idle(), 30)
        assert len(kernel_routes(netns)) == 2000
        subprocess.run(["ip", "-n", netns, "route", "add", "192.0.2.0/24", "via", "10.0.0.2", "proto", "99"],
                       check=True)
        for _ in range(200):
            await asyncio.sleep(0.02)  # poll: notifications arrive on the monitor socket
            if (RTM_NEWROUTE, 99) in seen:
                break
        assert (RTM_NEWROUTE, 99) in seen  # the socket still hears other writers
        assert sum(1 for t, proto in seen if t == RTM_NEWROUTE and proto == PROTO) == 0  # 2,000 writes, 0 heard
        assert fib.dataplane.own_route_notices == 0 and fib.dataplane.inflight_batches == 0
        assert mon._sock is not None
        assert mon._sock.getsockopt(socket.SOL_SOCKET, 26, 1024) == b""  # SO_GET_FILTER: none attached now
        # Idle: someone re-points one of ours with our protocol; the monitor hears it and repairs it.
        want = kernel_routes(netns)
        subprocess.run(["ip", "-n", netns, "route", "replace", prefixes[7], "via", "10.0.0.3", "proto", str(PROTO),
                        "metric", "20"], check=True)
        for _ in range(200):
            await asyncio.sleep(0.02)  # poll
            if mon.drift_repaired.get("route_changed") and kernel_routes(netns) == want:
                break
        assert mon.drift_repaired.get("route_changed") == 1 and kernel_routes(netns) == want
    finally:
        task.cancel()
        fib.close()


def test_mpls_probe_matches_this_kernel(netns: str) -> None:
    """Where /proc/sys/net/mpls is absent (this machine), both probes must say no, with the reason."""
    from pathlib import Path

    from fib.capabilities import probe_mpls

    m = probe_mpls(netns)
    with enter_netns(netns):
        has_proc = Path("/proc/sys/net/mpls/platform_labels").exists()
    if not has_proc:
        assert not m.routing and not m.usable
        assert "no /proc/sys/net/mpls" in m.detail
    if not m.iptunnel:
        assert "MPLS encap refused" in m.detail
    # The probe leaves nothing behind.
    assert not [n for n in ip_json(netns, "nexthop", "show") if n["id"] == 0x7FFFFFF0]


async def test_link_down_fails_over_to_the_backup(netns: str) -> None:
    """A second link carries the backup; downing the primary's link moves traffic without any BFD."""
    set_compat_mode(netns, 0)
    for cmd in ("link add e0 type veth peer name e1", "link set e0 up", "link set e1 up",
                "addr add 10.7.0.1/24 dev e0"):
        subprocess.run(["ip", "-n", netns, *cmd.split()], check=True)
    fib = KernelFib(protocol=PROTO, netns=netns)
    task = asyncio.create_task(fib.run())
    fib.start_monitor()
    for i in range(50):
        p = f"10.{100 + i}.0.0/24"
        fib.submit(N(p), entry(p, "10.0.0.2", backup=("10.7.0.2",)))
    await asyncio.wait_for(fib.wait_idle(), 10)
    assert set(kernel_routes(netns).values()) == {("10.0.0.2",)}
    subprocess.run(["ip", "-n", netns, "link", "set", "d1", "down"], check=True)  # carrier lost on d0
    for _ in range(200):
        await asyncio.sleep(0.02)  # poll
        routes = kernel_routes(netns)
        if len(routes) == 50 and set(routes.values()) == {("10.7.0.2",)}:
            break
    routes = kernel_routes(netns)
    assert len(routes) == 50 and set(routes.values()) == {("10.7.0.2",)}
    subprocess.run(["ip", "-n", netns, "link", "set", "d1", "up"], check=True)
    for _ in range(300):
        await asyncio.sleep(0.02)  # poll
        routes = kernel_routes(netns)
        if len(routes) == 50 and set(routes.values()) == {("10.0.0.2",)}:
            break
    assert set(kernel_routes(netns).values()) == {("10.0.0.2",)}
    task.cancel()
    fib.close()


async def test_withdrawing_a_whole_group_is_one_message(netns: str) -> None:
    set_compat_mode(netns, 0)
    fib = KernelFib(protocol=PROTO, netns=netns)
    task = asyncio.create_task(fib.run())
    primary, backup = (A("10.0.0.2"),), (A("10.0.0.3"),)
    keep = N("198.51.100.0/24")
    for i in range(500):
        p = N(f"10.{100 + i // 256}.{i % 256}.0/24")
        fib.submit(p, FibEntry(p, primary, (), backup))
    fib.submit(keep, FibEntry(keep, backup, (), ()))
    await asyncio.wait_for(fib.wait_idle(), 10)
    ops = fib.operations
    for i in range(500):
        fib.submit(N(f"10.{100 + i // 256}.{i % 256}.0/24"), None)
    await asyncio.wait_for(fib.wait_idle(), 10)
    assert kernel_routes(netns) == {"198.51.100.0/24": ("10.0.0.3",)}
    # One group delete for 500 routes, then only the now-unused nexthop object is collected.
    assert fib.operations - ops <= 3, fib.operations - ops
    assert len(fib.installed) == 1 and fib.route_counts[4] == 1
    task.cancel()
    fib.close()


async def test_failover_refused_for_one_group_is_rolled_back_and_counted(netns: str) -> None:
    """The failover lane on a real kernel: one of the two groups using the dead neighbour was deleted
    behind our back, so the kernel refuses its rewrite (twice: ENOENT, a rewrite never recreates a
    group); it is rolled back and counted, and the other group moves in the same call. No monitor
    runs, so nothing repairs the deletion meanwhile."""
    from routing.metrics import Metrics

    set_compat_mode(netns, 0)
    metrics = Metrics()
    fib = KernelFib(protocol=PROTO, netns=netns, metrics=metrics)
    task = asyncio.create_task(fib.run())
    try:
        for i in range(20):
            p = f"10.{100 + i}.0.0/24"
            fib.submit(N(p), entry(p, "10.0.0.2", backup=("10.0.0.3",)))
        fib.submit(N("198.51.100.0/24"), entry("198.51.100.0/24", "10.0.0.2", "10.0.0.4", backup=("10.0.0.3",)))
        await asyncio.wait_for(fib.wait_idle(), 10)
        keep = fib.installed[N("10.100.0.0/24")]
        gone = fib.installed[N("198.51.100.0/24")]
        members_before = fib.group_by_id[gone].members
        subprocess.run(["ip", "-n", netns, "nexthop", "del", "id", str(gone)], check=True)
        res = fib.fail_gateways_now({A("10.0.0.2")}, detected_at=fib.clock())
        assert (res.rewritten, res.errors) == (1, 1)
        assert res.ms_since_detected is not None and res.loop_ms < 100
        assert fib.group_by_id[gone].members == members_before  # rolled back: what we last wrote
        assert [fib.nh_key[m][0] for m in fib.group_by_id[keep].members] == [A("10.0.0.3")]
        assert fib.failover_errors == 1
        assert metrics.registry.get_sample_value("pop_router_fib_failover_errors_total") == 1
        routes = kernel_routes(netns)
        assert len(routes) == 20 and set(routes.values()) == {("10.0.0.3",)}
        # Recovery rewrites the surviving group only; the refused one is still refused, and counted.
        res = fib.recover_gateways_now({A("10.0.0.2")})
        assert res.rewritten == 1 and set(kernel_routes(netns).values()) == {("10.0.0.2",)}
    finally:
        task.cancel()
        fib.close()


async def test_local_repair_plan_sent_by_the_bfd_side_moves_traffic_and_stays_consistent(netns: str) -> None:
    """The BFD process's local repair (bfd/repair.py) on a real kernel: the dataplane's plan for a
    gateway, sent on a socket of its own, moves every route to the backup; the failover lane that
    follows is a no-op for the kernel and brings the bookkeeping along; a stale plan (group gone) is
    refused and counted, never creates anything."""
    from functools import partial

    from bfd.repair import LocalRepair, route_socket

    set_compat_mode(netns, 0)
    fib = KernelFib(protocol=PROTO, netns=netns)
    task = asyncio.create_task(fib.run())
    try:
        for i in range(200):
            p = f"10.{100 + i // 256}.{i % 256}.0/24"
            fib.submit(N(p), entry(p, "10.0.0.2", backup=("10.0.0.3",)))
        fib.submit(N("10.99.0.0/24"), entry("10.99.0.0/24", "10.0.0.4"))  # not behind 10.0.0.2: no plan
        await asyncio.wait_for(fib.wait_idle(), 30)
        dp = fib.dataplane
        plans = dp.repair_plans([A("10.0.0.2"), A("10.0.0.4"), A("10.0.0.9")])
        # A lone gateway has no backup; no XDP mirror here, so no map writes.
        assert plans[A("10.0.0.4")].netlink == b"" and plans[A("10.0.0.9")].netlink == b""
        assert plans[A("10.0.0.2")].maps == ()
        members_before = {g.id: g.members for g in fib.fib_table.group_by_id.values()}

        results = []
        lr = LocalRepair(results.append, open_socket=partial(route_socket, netns))
        lr.set_plans({"10.0.0.2": plans[A("10.0.0.2")].netlink}, version=1)
        assert lr.trigger("10.0.0.2", fib.clock()) == 1
        assert lr.trigger("10.0.0.2", fib.clock()) == 0  # a plan is used once
        for _ in range(200):
            if results:
                break
            await asyncio.sleep(0.01)  # poll
        (r,) = results
        assert r.errors == {} and r.messages == 1
        routes = kernel_routes(netns)
        assert {v for k, v in routes.items() if k != "10.99.0.0/24"} == {("10.0.0.3",)}
        assert routes["10.99.0.0/24"] == ("10.0.0.4",)
        # The plan did not touch the bookkeeping; the failover lane does, and agrees with the kernel.
        assert {g.id: g.members for g in fib.fib_table.group_by_id.values()} == members_before
        res = fib.dataplane.fail_gateways_now({A("10.0.0.2")}, fib.clock())
        assert res.rewritten == 1 and res.errors == 0
        assert set(kernel_routes(netns).values()) == {("10.0.0.3",), ("10.0.0.4",)}
        assert fib.dataplane.repair_plans([A("10.0.0.2")])[A("10.0.0.2")].netlink == b""  # dead: nothing to plan
        # A stale plan: its group no longer exists. Refused (ENOENT), nothing created.
        await fib.recover_gateway(A("10.0.0.2"))
        stale = fib.dataplane.repair_plans([A("10.0.0.2")])[A("10.0.0.2")].netlink
        for i in range(200):
            fib.submit(N(f"10.{100 + i // 256}.{i % 256}.0/24"), None)
        await asyncio.wait_for(fib.wait_idle(), 30)
        groups_before = {n["id"] for n in ip_json(netns, "nexthop", "show") if "group" in n}
        lr.set_plans({"10.0.0.2": stale}, version=2)
        lr.trigger("10.0.0.2", fib.clock())
        for _ in range(200):
            if len(results) == 2:
                break
            await asyncio.sleep(0.01)  # poll
        assert set(results[1].errors.values()) <= {2, 22} and len(results[1].errors) == 1  # ENOENT, EINVAL
        assert {n["id"] for n in ip_json(netns, "nexthop", "show") if "group" in n} == groups_before
        lr.close()
    finally:
        task.cancel()
        fib.close()
