"""Read-only views of the daemon's state for the API, the CLI and the metrics endpoint.

Theory of operation
-------------------
The API depends on this narrow object, never on the daemon (no import cycle): :class:`Views` holds
references to the parts it reads (routing core, dataplane, BFD link, ExaBGP pool, XDP mirror) and one
coroutine for the only state-changing call (an operator reset, performed by the daemon through the
routing core). Views run on the event loop between the owner's steps, so they never see a
half-applied UPDATE; each is a plain function of current state.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from common.model import IPAddress, Path, afi
from routing.config import Config
from routing.core import RoutingCore
from routing.policy import format_ext_community


@dataclass(slots=True)
class Views:
    config: Config
    core: RoutingCore
    fib: Any
    bfd: Any
    speaker: Any
    lane: Any
    inbox: Any
    metrics: Any
    clock: Callable[[], float]
    started: float
    reset: Callable[[IPAddress], Awaitable[bool]]
    #: Preview or apply a configuration (a path, YAML text, or None: the start file) -> plan + outcome.
    reload: Callable[..., Awaitable[dict[str, Any]]] | None = None
    token: str = ""
    xdp: Any = None
    #: RTBH/SAV dataplane state (routing/policy_dataplane.py), or None.
    policy_dp: Any = None
    xdp_start_writes: int = 0
    adopted: int = 0
    mpls: Any = None
    loop_lag_max_ms: float = 0.0
    #: RTR clients and VRP snapshots (routing/rpki_link.py); None in tests without one.
    rpki: Any = None

    @property
    def peers(self) -> dict[IPAddress, Any]:
        return self.core.peers

    async def teardown(self, addr: IPAddress) -> bool:
        return await self.reset(addr)

    def config_view(self) -> dict[str, Any]:
        """The running configuration; secrets are masked by their serialiser."""
        from routing.reload import config_document

        return config_document(self.config)

    # --- metrics --------------------------------------------------------------------------------------
    def refresh_gauges(self) -> None:
        m = self.metrics
        for addr, a in self.core.rib.adj.items():
            for fam, (received, accepted) in a.counts().items():
                m.bgp_prefixes_received.labels(str(addr), fam).set(received)
                m.bgp_prefixes_accepted.labels(str(addr), fam).set(accepted)
        bb = self.core.backbone
        if bb is not None:
            for addr, sent in bb.sent.items():
                m.backbone_exported_routes.labels(str(addr)).set(len(sent))
            m.backbone_export_prefixes.labels("announce").set(bb.announced)
            m.backbone_export_prefixes.labels("withdraw").set(bb.withdrawn)
        m.inbox_depth.labels("routing").set(self.inbox.routing_depth)
        if self.rpki is not None:
            self.rpki.refresh_metrics(m, self.rpki_route_counts())
        m.inbox_depth.labels("urgent").set(len(self.inbox) - self.inbox.routing_depth)
        if self.xdp is not None:
            names = self.xdp_interface_names()
            for ifindex, counters in self.xdp.prog.stats_by_interface().items():
                for action, n in counters.items():
                    m.xdp_packets.labels(names.get(ifindex, str(ifindex)), action).set(n)
        counter = getattr(self.policy_dp, "counter", None)
        if counter is not None:
            for ifname, n in counter.read().items():
                m.kernel_blackhole_dropped.labels(ifname).set(n)

    # --- views --------------------------------------------------------------------------------------
    def peers_view(self) -> list[dict]:
        now = self.clock()
        out = []
        for addr, ps in self.core.peers.items():
            a = self.core.rib.adj[addr]
            counts = a.counts()
            out.append({
                "peer": str(addr),
                "customer": ps.customer,
                "asn": ps.peer.asn,
                "local_address": str(ps.local_address),
                "state": ps.state.value,
                "since_s": round(now - ps.since, 1),
                # The daemon's clock is CLOCK_MONOTONIC: comparable with other processes' (benchmarks).
                "since_monotonic": ps.since,
                "router_id": str(ps.peer.router_id),
                "received": sum(c[0] for c in counts.values()),
                "accepted": sum(c[1] for c in counts.values()),
                "rejected": len(a.rejected),
                "stale": len(a.stale),
                "max_prefixes": a.max_prefixes,
                "established_count": ps.established_count,
                "flaps": ps.flaps,
                "last_down_reason": ps.last_down_reason,
                "eor": sorted(ps.eor),
                "bfd": ps.bfd_state if ps.bfd else None,
                "bfd_down_at": ps.bfd_down_at,
                "bfd_down_detail": self.lane.last_down_detail.get(addr) if ps.bfd else None,
                # The peer's graceful-restart capability (its last OPEN) and whether we are keeping
                # its paths as stale for it right now (helper, RFC 4724).
                "graceful_restart": None if (g := ps.graceful_restart) is None else {
                    "restart_time_s": g.time_s, "afis": sorted(g.afis), "forwarding": sorted(g.forwarding)},
                "gr_helping": ps.gr_helping,
            })
        return out

    def routes_view(self, rejected: bool = False) -> list[dict]:
        rib = self.core.rib
        if rejected:
            out = []
            for addr, a in rib.adj.items():
                for prefix, (path, rej) in a.rejected.items():
                    out.append({
                        "prefix": str(prefix), "peer": str(addr), "customer": path.peer.customer,
                        "nexthop": str(path.nexthop), "as_path": list(path.attrs.as_path),
                        "reason": rej.reason.value, "detail": rej.detail, "rpki": _rpki(path),
                        **_received_communities(path),
                    })
            return sorted(out, key=lambda r: (r["peer"], r["prefix"]))
        out = []
        for prefix in rib.loc.prefixes():
            sel = rib.loc.selection(prefix)
            if sel is None:
                continue
            for p in sorted(rib.loc.paths(prefix), key=lambda p: (p is not sel.best, str(p.peer.address))):
                best = p is sel.best
                a = rib.adj.get(p.peer.address)
                communities_out = getattr(a.policy, "communities_out", None) if a is not None else None
                std, large = communities_out(p) if communities_out else (p.attrs.communities, p.attrs.large_communities)
                out.append({
                    "prefix": str(prefix), "afi": afi(prefix), "peer": str(p.peer.address),
                    "customer": p.peer.customer, "nexthop": str(p.nexthop), "as_path": list(p.attrs.as_path),
                    "origin": p.attrs.origin.name.lower(), "med": p.attrs.med, "local_pref": p.local_pref,
                    "best": best, "multipath": p in sel.multipath, "labels": list(p.attrs.labels),
                    "reason": sel.reason.value if best else "", "rpki": _rpki(p),
                    # What the path carries onwards: received minus our namespace, plus informational.
                    "communities": [f"{x}:{y}" for x, y in std],
                    "large_communities": [f"{x}:{y}:{z}" for x, y, z in large],
                    "ext_communities": [format_ext_community(v) for v in p.attrs.ext_communities],
                    "rtbh": p.rtbh, "prepend": p.prepend,
                    **_received_communities(p),
                })
        out += self._backbone_rows()
        return sorted(out, key=lambda r: (r["afi"], r["prefix"], not r["best"]))

    def rpki_route_counts(self) -> dict[str, int]:
        """Stored paths by origin validation state, over the peers whose policy validates. O(peers)."""
        out = {"valid": 0, "invalid": 0, "not_found": 0}
        for a in list(self.core.rib.adj.values()):
            for state, n in list(a.rpki_states.items()):
                if state is not None:
                    out[state.value] += n
        return out

    def rpki_view(self) -> dict:
        """``show rpki``: each cache (up, serial, VRPs, last update), VRPs in effect, paths by state,
        the last re-validation."""
        if self.rpki is None:
            return {"enabled": False, "caches": [], "vrps": {}, "routes": self.rpki_route_counts()}
        v = self.rpki.view(self.rpki_route_counts())
        last = self.core.rov.last
        v["revalidation"] = None if last is None else {
            "generation": last.generation, "done": last.done, "examined": last.examined,
            "in_ranges": last.in_ranges, "changed_state": last.changed_state,
            "became_rejected": last.became_rejected, "became_accepted": last.became_accepted}
        return v

    def _backbone_rows(self) -> list[dict]:
        """Backbone routes kept out of the Loc-RIB (``backbone.install: false``): listed, never best."""
        core = self.core
        rows = []
        for addr, ps in core.peers.items():
            if not ps.backbone or core.rib.eligible.get(addr, True):
                continue
            for prefix, p in core.rib.adj[addr].accepted.items():
                rows.append({
                    "prefix": str(prefix), "afi": afi(prefix), "peer": str(addr), "customer": ps.customer,
                    "nexthop": str(p.nexthop), "as_path": list(p.attrs.as_path), "origin": p.attrs.origin.name.lower(),
                    "med": p.attrs.med, "local_pref": p.local_pref, "best": False, "multipath": False,
                    "labels": list(p.attrs.labels), "reason": "not_installed",
                    "communities": [f"{x}:{y}" for x, y in p.attrs.communities],
                    "large_communities": [f"{x}:{y}:{z}" for x, y, z in p.attrs.large_communities],
                    "ext_communities": [format_ext_community(v) for v in p.attrs.ext_communities],
                    "rtbh": False, "prepend": 0, **_received_communities(p)})
        return rows

    def exported_view(self, peer: IPAddress) -> list[dict]:
        """What one session is sent (KeyError: not a configured peer). A customer session: its export
        policy (static routes in ExaBGP's configuration, next hop self). A backbone session: its
        Adj-RIB-Out, what the current session was announced."""
        from routing.policy import customer_exports, export_attributes

        ps = self.core.peers[peer]
        if ps.backbone:
            bb = self.core.backbone
            return bb.rows(peer) if bb is not None else []
        customer = next(c for c in self.config.customers if c.name == ps.customer)
        attrs = export_attributes(self.config.router, customer)
        as_path = list(attrs.as_path) or [self.config.router.asn]
        return [{"prefix": str(n), "nexthop": "self", "origin": "igp", "as_path": as_path, "med": None,
                 "local_pref": None, "communities": [f"{a}:{b}" for a, b in attrs.communities],
                 "large_communities": [f"{a}:{b}:{c}" for a, b, c in attrs.large_communities],
                 "ext_communities": []}
                for n in customer_exports(self.config.router, customer, peer.version)]

    def fib_view(self, failed: bool = False) -> list[dict]:
        fib = self.fib
        if failed:
            return [
                {"prefix": str(p), "nexthops": [str(n) for n in (f.entry.nexthops if f.entry else ())],
                 "op": "install" if f.entry else "delete", "error": errno.errorcode.get(f.errno, str(f.errno)),
                 "attempts": f.attempts}
                for p, f in sorted(fib.failed.items(), key=lambda x: str(x[0]))
            ]
        return [
            {"prefix": str(p), "afi": afi(p), "nexthops": [str(n) for n in fib.gateways(gid)],
             "nhid": gid, "stale": p in fib.stale}
            for p, gid in sorted(fib.installed.items(), key=lambda x: (x[0].version, x[0]))
        ]

    def exabgp_processes_view(self) -> list[dict]:
        """One row per ExaBGP process: which sessions it holds, its restarts and what it costs."""
        out = []
        for s in self.speaker.speakers:
            pid = s.child.pid
            cpu_s, uptime_s = proc_times(pid) if pid is not None else (None, None)
            relay = s.relay_stats
            out.append({
                "index": s.index, "name": s.name, "pid": pid, "peers": [str(a) for a in s.peers],
                "customers": sorted(s.customers) if s.customers is not None else None,
                "restarts": s.child.restarts, "cpu_s": cpu_s, "uptime_s": uptime_s,
                "malformed_messages": s.malformed,
                "relay_backlog_bytes": None if relay is None else relay.backlog_bytes,
                "runs_on": s.runs_on,
                "lean_reactor": s.lean_reactor(),
            })
        return out

    def status_view(self) -> dict:
        fib, mpls = self.fib, self.mpls
        stats = [s.relay_stats for s in self.speaker.speakers if s.relay_stats is not None]
        return {
            "router_id": str(self.config.router.router_id),
            "asn": self.config.router.asn,
            "uptime_s": round(self.clock() - self.started, 1),
            "exabgp_processes": self.exabgp_processes_view(),
            "exabgp_restarts": sum(s.child.restarts for s in self.speaker.speakers),
            "bfd_pid": self.bfd.child.pid,
            "bfd_restarts": self.bfd.child.restarts,
            "malformed_messages": sum(s.malformed for s in self.speaker.speakers),
            "adopted_routes": self.adopted,
            "fib_routes": len(fib.installed),
            "fib_pending": fib.pending_count,
            "fib_failed": len(fib.failed),
            "fib_nexthop_groups": len(fib.group_by_id),
            "kernel_mpls": mpls is not None and mpls.usable,
            "kernel_mpls_detail": mpls.detail if mpls is not None else None,
            "mpls_local_labels": {f"{k[0]}%{k[1]}" if k[2] == () else str(k): label
                                  for nid, label in fib.local_labels.items()
                                  if (k := fib.nh_key.get(nid)) is not None},
            "fib_last_failover_ms": self.lane.last_ms if self.lane.last_ms is not None else fib.last_failover_ms,
            "loc_rib_prefixes": len(self.core.rib.loc),
            "unknown_peer_events": self.core.counters.unknown_peer_events + self.lane.unknown_peer_events,
            "exabgp_commands_failed": self.core.counters.commands_failed,
            "rib_inbox_events": len(self.inbox),
            "rib_inbox_max_events": self.inbox.max_depth,
            # The routing lane waits for the FIB writer (fib/dataplane.py, "Backlog"): now, and how often.
            "rib_inbox_held": self.inbox.held,
            "rib_inbox_holds": self.inbox.holds,
            # Summed over the processes' relays (each process's own is in exabgp_processes).
            "relay_backlog": None if not stats else {
                "lines": sum(r.backlog_lines for r in stats), "bytes": sum(r.backlog_bytes for r in stats),
                "max_lines": sum(r.max_backlog_lines for r in stats),
                "max_bytes": sum(r.max_backlog_bytes for r in stats)},
            "loop_lag_max_ms": round(self.loop_lag_max_ms, 2),
            "failovers": list(self.lane.recent),
            "local_repairs": list(self.bfd.repairs),
        }

    def bfd_view(self) -> list[dict]:
        customers = {str(a): ps.customer for a, ps in self.core.peers.items()}
        return self.bfd.sessions_view(customers)

    def xdp_interface_names(self) -> dict[int, str]:
        from common.netns import netns as enter_netns

        names = {}
        with enter_netns(self.fib.netns):
            for name in self.config.fib.xdp.interfaces:
                with contextlib.suppress(OSError):
                    names[socket.if_nametoindex(name)] = name
        return names

    def xdp_view(self) -> dict:
        policy = self.policy_dp.view() if self.policy_dp is not None else {}
        if self.xdp is None:
            return {"enabled": False, "interfaces": self.config.fib.xdp.interfaces, **policy}
        v = self.xdp.view()
        names = self.xdp_interface_names()
        v["counters_by_interface"] = {names.get(int(i), i): c for i, c in v["counters_by_interface"].items()}
        return {"enabled": True, "interfaces": self.config.fib.xdp.interfaces,
                "start_map_writes": self.xdp_start_writes, **v, **policy}

    async def fib_diff(self) -> dict:
        """RIB versus kernel: what the kernel should forward (after failover) against what it does."""
        from common.netns import netns as enter_netns
        from fib.netlink import RouteSocket

        fib = self.fib

        def dump() -> tuple[list, list]:
            with enter_netns(fib.netns):
                s = RouteSocket()
            try:
                return s.dump_owned(fib.protocol, fib.table), s.dump_nexthops()
            finally:
                s.close()

        routes, nhs = await asyncio.get_running_loop().run_in_executor(None, dump)
        by_id = {n.id: n for n in nhs}

        def gws(nhid: int) -> list[str]:
            n = by_id.get(nhid)
            if n is None:
                return []
            if n.group:
                return sorted(g for m, _w in n.group for g in gws(m))
            return [str(n.gateway)] if n.gateway is not None else []

        kernel = {r.prefix: gws(r.nhid) if r.nhid else sorted(map(str, r.nexthops)) for r in routes
                  if r.metric == fib.metric}
        want = {}
        loc = self.core.rib.loc
        for prefix in loc.prefixes():
            e = loc.fib_entry(prefix)
            if e is not None:
                want[prefix] = sorted(str(g) for g in fib.active_gateways(e))
        missing = sorted((p for p in want if p not in kernel), key=lambda p: (p.version, p))
        extra = sorted((p for p in kernel if p not in want), key=lambda p: (p.version, p))
        different = sorted((p for p in want if p in kernel and kernel[p] != want[p]), key=lambda p: (p.version, p))
        return {
            "in_sync": len(want) - len(missing) - len(different),
            "missing": [{"prefix": str(p), "rib": want[p]} for p in missing],
            "extra": [{"prefix": str(p), "kernel": kernel[p]} for p in extra],
            "different": [{"prefix": str(p), "rib": want[p], "kernel": kernel[p]} for p in different],
            "pending": fib.pending_count, "failed": len(fib.failed), "stale": len(fib.stale),
            "xdp": await self._xdp_diff(routes, by_id),
        }

    async def _xdp_diff(self, routes: list, by_id: dict) -> dict | None:
        from fib.xdp.mirror import xdp_diff

        xdp = self.xdp
        if xdp is None:
            return None
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: xdp_diff(xdp.prog.dump(), routes, by_id, self.fib.metric))


def _received_communities(p: Path) -> dict[str, list[str]]:
    """The communities exactly as the customer sent them (action communities included)."""
    a = p.attrs
    return {"received_communities": [f"{x}:{y}" for x, y in a.communities]
            + [f"{x}:{y}:{z}" for x, y, z in a.large_communities]
            + [format_ext_community(v) for v in a.ext_communities]}


def _rpki(path: Any) -> str | None:
    """A path's origin validation state for views: None when its customer's RPKI mode is off."""
    return None if path.rpki is None else path.rpki.value


def proc_times(pid: int) -> tuple[float | None, float | None]:
    """CPU seconds used (user + system) and seconds since start of process ``pid``, from /proc.

    Read from the kernel rather than kept by the supervisor, so the numbers are the process's own
    (``utime``/``stime``, fields 14-15 of /proc/PID/stat, and ``starttime``, field 22, against
    /proc/uptime). (None, None) when the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
    except OSError:
        return None, None
    # The command name (field 2) may hold spaces and parentheses: fields are counted after its ")".
    fields = stat[stat.rindex(")") + 2:].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
    return round((utime + stime) / tick, 2), round(up - start / tick, 1)
