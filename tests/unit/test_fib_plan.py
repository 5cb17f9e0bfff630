"""The kernel writer's planning, as pure logic (no socket: gateways' interfaces are pre-resolved).

What is checked here is what the writer *would send*: the kernel round trips are in
tests/integration/test_fib_kernel.py. MPLS imposition is planned here because this machine's kernel
cannot take it (no CONFIG_MPLS_IPTUNNEL): the same plan is sent on a kernel that has it.
"""

from __future__ import annotations

import ipaddress

from fib import netlink as nl
from fib.kernel import KernelFib
from routing.model import FibEntry

A = ipaddress.ip_address
N = ipaddress.ip_network


def _writer(mpls_encap: bool) -> KernelFib:
    fib = KernelFib(protocol=200, mpls_encap=mpls_encap)
    fib._oif.update({A("10.0.0.2"): 3, A("10.0.1.2"): 4})
    return fib


def _decoded(plan) -> dict[str, list]:  # type: ignore[no-untyped-def]
    out: dict[str, list] = {"nh": [], "group": [], "route": []}
    for i, msg in enumerate(plan.msgs):
        assert nl.NLMSGHDR.unpack_from(msg, 0)[3] == i  # seq = index in the batch (nothing to patch)
        kind = plan.ops[i][0]
        out[kind].append(nl.decode_nexthop(msg) if kind in ("nh", "group") else nl.decode_route(msg))
    return out


def test_labels_become_an_mpls_encap_where_the_kernel_has_mpls() -> None:
    fib = _writer(mpls_encap=True)
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (300, 301), (A("10.0.1.2"),), (400,))
    plan = fib._plan([(e.prefix, e)])
    d = _decoded(plan)
    assert sorted((str(n.gateway), n.oif, n.labels) for n in d["nh"]) == [
        ("10.0.0.2", 3, (300, 301)), ("10.0.1.2", 4, (400,))]
    (g,) = d["group"]
    primary = fib.nexthops[(A("10.0.0.2"), 3, (300, 301))]
    assert [m for m, _w in g.group] == [primary]  # members: the live primaries only
    (r,) = d["route"]
    assert r.prefix == e.prefix and r.nhid == g.id
    fib._inflight_batches = 1
    fib._complete(plan, [])  # the kernel accepted all: what drift repair reinstalls keeps the labels
    assert fib.desired(e.prefix) == e


def test_labels_stay_in_memory_where_the_kernel_has_no_mpls() -> None:
    """Plain kernel objects, but one per label stack, so the XDP mirror can push the right labels."""
    fib = _writer(mpls_encap=False)
    a = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (300,))
    b = FibEntry(N("198.51.100.0/24"), (A("10.0.0.2"),), ())
    d = _decoded(fib._plan([(a.prefix, a), (b.prefix, b)]))
    assert [n.labels for n in d["nh"]] == [(), ()]
    assert sorted(k[2] for k in fib.nh_key.values()) == [(), (300,)]
    assert len(d["group"]) == 2 and d["route"][0].nhid != d["route"][1].nhid


def test_failover_uses_the_backup_paths_own_labels() -> None:
    fib = _writer(mpls_encap=True)
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (300,), (A("10.0.1.2"),), (400,))
    fib._plan([(e.prefix, e)])
    fib.dead.add(A("10.0.0.2"))
    plan = fib._regroup({A("10.0.0.2")})
    (g,) = [nl.decode_nexthop(m) for m in plan.msgs]
    assert [fib.nh_key[m][2] for m, _w in g.group] == [(400,)]
    assert fib.desired(e.prefix) is None  # not installed yet: the plan was never completed


def test_incoming_label_routes_per_next_hop_where_the_kernel_has_mpls_routing() -> None:
    """Each unlabeled nexthop object gets an AF_MPLS route popping a label derived from its id (so the
    same label after a restart, when the nexthop is adopted with its id); deleted with the nexthop."""
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    fib = _writer(mpls_encap=True)
    fib.mpls_routing, fib.local_label_base = True, 100000
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),), (), (A("10.0.1.2"),), (400,))
    plan = fib._plan([(e.prefix, e)])
    mpls = [m for m, op in zip(plan.msgs, plan.ops, strict=True) if op[0] == "mpls"]
    assert len(mpls) == 1  # the labeled backup hop gets none: a CE is reached by its plain nexthop
    m = rtmsg(mpls[0])
    m.decode()
    nid = fib.nexthops[(A("10.0.0.2"), 3, ())]
    assert m["family"] == nl.AF_MPLS and m["proto"] == 200
    assert [x["label"] for x in m.get_attr("RTA_DST")] == [100000 + nid - (200 << 22) - 1]
    assert m.get_attr("RTA_NEWDST") is None  # pop
    assert m.get_attr("RTA_VIA")["addr"] == "10.0.0.2" and m.get_attr("RTA_OIF") == 3
    assert fib.local_labels == {nid: 100000 + nid - (200 << 22) - 1}
    # Nobody uses the nexthop any more: the collector deletes the object and its label route.
    fib._inflight_batches = 1
    fib._complete(plan, [])
    dplan = fib._plan([(e.prefix, None)])
    fib._inflight_batches = 1
    fib._complete(dplan, [])
    col = fib._collect()
    kinds = [op[0] for op in col.ops]
    assert "delmpls" in kinds and fib.local_labels == {}
    (dl,) = [m for m, op in zip(col.msgs, col.ops, strict=True) if op[0] == "delmpls"]
    d = rtmsg(dl)
    d.decode()
    assert d["header"]["type"] == nl.RTM_DELROUTE and [x["label"] for x in d.get_attr("RTA_DST")] == [
        100000 + nid - (200 << 22) - 1]


def test_no_incoming_labels_without_kernel_mpls_routing() -> None:
    fib = _writer(mpls_encap=False)
    fib.local_label_base = 100000  # configured, but the probe said no MPLS routing
    e = FibEntry(N("192.0.2.0/24"), (A("10.0.0.2"),))
    assert [op[0] for op in fib._plan([(e.prefix, e)]).ops] == ["nh", "group", "route"]
