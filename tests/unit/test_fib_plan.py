"""The planner and the kernel provider's encoding, as pure logic (no socket: gateways' interfaces are
pre-resolved).

What is checked here is what the writer *would send*: the kernel round trips are in
tests/integration/test_fib_kernel.py. MPLS imposition is planned here because this machine's kernel
cannot take it (no CONFIG_MPLS_IPTUNNEL): the same plan is sent on a kernel that has it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from common.model import FibEntry
from fib import netlink as nl
from fib import ops as fo
from fib.dataplane import Dataplane, Pace
from fib.kernel_provider import KernelProvider
from fib.ops import Results
from fib.planner import Planner
from fib.table import FibTable

A = ipaddress.ip_address
N = ipaddress.ip_network
OIFS = {A("10.0.0.2"): 3, A("10.0.1.2"): 4}


@dataclass
class Writer:
    """Table, planner and kernel encoder wired as the dataplane wires them, with no socket."""

    mpls_encap: bool
    table: FibTable = field(default_factory=lambda: FibTable(200))

    def __post_init__(self) -> None:
        self.planner = Planner(self.table, OIFS.get)
        self.kernel = KernelProvider(protocol=200, table=254, metric=20, netns=None, mpls_encap=self.mpls_encap)
        self.dp = Dataplane(self.table, self.planner, self.kernel, pace=Pace(), clock=lambda: 0.0)

    def plan(self, work: list) -> list[fo.Op]:  # type: ignore[type-arg]
        return self.planner.routes(work, self.dp._unreachable)

    def complete(self, ops: list[fo.Op]) -> None:
        """The kernel accepted every operation."""
        self.dp.apply_results(ops, Results(ops))


def _writer(mpls_encap: bool) -> Writer:
    return Writer(mpls_encap)


_KIND = {fo.NexthopAdd: "nh", fo.GroupAdd: "group", fo.GroupReplace: "group", fo.RouteInstall: "route",
         fo.RouteReplace: "route", fo.RouteDelete: "route", fo.MplsLabelAdd: "mpls"}


def _decoded(w: Writer, ops: list[fo.Op]) -> dict[str, list]:
    out: dict[str, list] = {"nh": [], "group": [], "route": [], "mpls": []}
    for i, msg in enumerate(w.kernel.encode(ops)):
        assert nl.NLMSGHDR.unpack_from(msg, 0)[3] == i  # seq = index in the batch (nothing to patch)
        kind = _KIND[type(ops[i])]
        out[kind].append(nl.decode_nexthop(msg) if kind in ("nh", "group") else nl.decode_route(msg))
    return out


def test_labels_become_an_mpls_encap_where_the_kernel_has_mpls() -> None:
    w = _writer(mpls_encap=True)
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (300, 301), (A("10.0.1.2"),), (400,))
    plan = w.plan([(e.prefix, e)])
    d = _decoded(w, plan)
    assert sorted((str(n.gateway), n.oif, n.labels) for n in d["nh"]) == [
        ("10.0.0.2", 3, (300, 301)), ("10.0.1.2", 4, (400,))]
    (g,) = d["group"]
    primary = w.table.nexthops[(A("10.0.0.2"), 3, (300, 301))]
    assert [m for m, _w in g.group] == [primary]  # members: the live primaries only
    (r,) = d["route"]
    assert r.prefix == e.prefix and r.nhid == g.id
    w.complete(plan)  # the kernel accepted all: what drift repair reinstalls keeps the labels
    assert w.table.desired(e.prefix) == e


def test_labels_stay_in_memory_where_the_kernel_has_no_mpls() -> None:
    """Plain kernel objects, but one per label stack, so the XDP mirror can push the right labels."""
    w = _writer(mpls_encap=False)
    a = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (300,))
    b = FibEntry(N("198.51.100.0/24"), (A("10.0.0.2"),), ())
    d = _decoded(w, w.plan([(a.prefix, a), (b.prefix, b)]))
    assert [n.labels for n in d["nh"]] == [(), ()]
    assert sorted(k[2] for k in w.table.nh_key.values()) == [(), (300,)]
    assert len(d["group"]) == 2 and d["route"][0].nhid != d["route"][1].nhid


def test_failover_uses_the_backup_paths_own_labels() -> None:
    w = _writer(mpls_encap=True)
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (300,), (A("10.0.1.2"),), (400,))
    w.complete(w.plan([(e.prefix, e)]))
    w.table.dead.add(A("10.0.0.2"))
    plan = w.planner.regroup({A("10.0.0.2")})
    assert [type(op) for op in plan] == [fo.GroupReplace] and plan[0].failover
    (g,) = [nl.decode_nexthop(m) for m in w.kernel.encode(plan)]
    assert [w.table.nh_key[m][2] for m, _w in g.group] == [(400,)]
    (grp,) = w.table.group_by_id.values()
    assert grp.members == plan[0].old_members  # planned, not applied: members change on success only


def test_incoming_label_routes_per_next_hop_where_the_kernel_has_mpls_routing() -> None:
    """Each unlabeled nexthop object gets an AF_MPLS route popping a label derived from its id (so the
    same label after a restart, when the nexthop is adopted with its id); deleted with the nexthop."""
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    w = _writer(mpls_encap=True)
    w.planner.mpls_routing, w.planner.local_label_base = True, 100000
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (), (A("10.0.1.2"),), (400,))
    plan = w.plan([(e.prefix, e)])
    mpls = [m for m, op in zip(w.kernel.encode(plan), plan, strict=True) if isinstance(op, fo.MplsLabelAdd)]
    assert len(mpls) == 1  # the labeled backup hop gets none: a CE is reached by its plain nexthop
    m = rtmsg(mpls[0])
    m.decode()
    nid = w.table.nexthops[(A("10.0.0.2"), 3, ())]
    assert m["family"] == nl.AF_MPLS and m["proto"] == 200
    assert [x["label"] for x in m.get_attr("RTA_DST")] == [100000 + nid - (200 << 22) - 1]
    assert m.get_attr("RTA_NEWDST") is None  # pop
    assert m.get_attr("RTA_VIA")["addr"] == "10.0.0.2" and m.get_attr("RTA_OIF") == 3
    assert w.table.local_labels == {nid: 100000 + nid - (200 << 22) - 1}
    # Nobody uses the nexthop any more: the collector deletes the object and its label route.
    w.complete(plan)
    w.complete(w.plan([(e.prefix, None)]))
    col = w.planner.collect()
    assert any(isinstance(op, fo.MplsLabelDel) for op in col) and w.table.local_labels == {}
    (dl,) = [m for m, op in zip(w.kernel.encode(col), col, strict=True) if isinstance(op, fo.MplsLabelDel)]
    d = rtmsg(dl)
    d.decode()
    assert d["header"]["type"] == nl.RTM_DELROUTE and [x["label"] for x in d.get_attr("RTA_DST")] == [
        100000 + nid - (200 << 22) - 1]


def test_no_incoming_labels_without_kernel_mpls_routing() -> None:
    w = _writer(mpls_encap=False)
    w.planner.local_label_base = 100000  # configured, but the probe said no MPLS routing
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),))
    assert [type(op) for op in w.plan([(e.prefix, e)])] == [fo.NexthopAdd, fo.GroupAdd, fo.RouteInstall]
