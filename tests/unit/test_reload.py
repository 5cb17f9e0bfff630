"""Live reconfiguration: the pure planner (table-driven config pairs) and the core applying a plan.

No processes and no clock: the routing core is driven with a fake time, its sliced jobs run with
``work(budget)`` like the owner would, and the FIB is what its SubmitFib actions say.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from common.model import Attributes, Origin, intern_attrs
from routing.config import Config, ConfigError, config_from_text, parse_config
from routing.core import ReconfigureApplied, RoutingCore, SendCommand, SubmitFib
from routing.daemon import peer_status, reconfigure_event
from routing.exabgp import messages as msg
from routing.policy import ImportPolicy
from routing.reload import config_document, plan_reload, render_text, running_config
from routing.rib import Rib
from tests.unit.factories import CONFIG

A = ipaddress.ip_address("10.0.1.2")
B = ipaddress.ip_address("10.0.2.2")
G = ipaddress.ip_address("10.0.3.2")
ACME = intern_attrs(Attributes(origin=Origin.IGP, as_path=(64512,)))
GLOBEX = intern_attrs(Attributes(origin=Origin.IGP, as_path=(4200000001,)))


def cfg(mutate: Callable[[dict], Any] | None = None) -> Config:
    d = copy.deepcopy(CONFIG)
    if mutate is not None:
        mutate(d)
    return parse_config(d)


def make_core(config: Config) -> RoutingCore:
    rib = Rib()
    peers = {}
    for c, p in config.peers():
        rib.add_peer(p.address, ImportPolicy(config.router, c), c.import_.max_prefixes)
        peers[p.address] = peer_status(config, c, p)
    return RoutingCore(rib, peers, stale_timeout_s=120.0)


def up(core: RoutingCore, peer: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    core.on_event(msg.StateEvent(peer, peer, "connected"), 1.0)
    core.on_event(msg.StateEvent(peer, peer, "up"), 1.0)


def announce(core: RoutingCore, peer: Any, attrs: Attributes, *prefixes: str) -> None:
    ann = tuple((ipaddress.ip_network(p), peer, ()) for p in prefixes)
    core.on_event(msg.UpdateEvent(peer, attrs, ann, ()), 2.0)
    while core.busy:  # a big UPDATE is applied in slices
        core.work()


def lab_core(config: Config | None = None) -> RoutingCore:
    """acme on A and B (ECMP) sends three prefixes and one it may not; globex on G sends its own."""
    core = make_core(config or cfg())
    for p in (A, B, G):
        up(core, p)
    for p in (A, B):
        announce(core, p, ACME, "198.51.100.0/24", "198.51.101.0/24", "203.0.113.0/24", "11.0.0.0/24")
    announce(core, G, GLOBEX, "203.0.113.0/24")
    return core


def acme(d: dict) -> dict:
    return d["customers"][0]


def globex(d: dict) -> dict:
    return d["customers"][1]


def set_(f: Callable[[dict], dict], key: str, value: Any) -> Callable[[dict], None]:
    return lambda d: f(d).__setitem__(key, value)


def peer0(f: Callable[[dict], dict], key: str, value: Any) -> Callable[[dict], None]:
    return lambda d: f(d)["peers"][0].__setitem__(key, value)


def imp(f: Callable[[dict], dict], key: str, value: Any) -> Callable[[dict], None]:
    return lambda d: f(d)["import"].__setitem__(key, value)


def add_customer(d: dict) -> None:
    d["customers"].append({"name": "initech", "asn": 64600, "import": {"prefixes": ["11.1.0.0/16 le 24"]},
                           "peers": [{"address": "10.0.5.2", "local_address": "10.0.5.1"}]})


def summary(plan: Any) -> dict[str, Any]:
    """The parts of a plan a row of the table checks, in a comparable shape."""
    d = plan.to_dict()
    return {
        "added": [s["peer"] for s in d["sessions_added"]],
        "removed": [(s["peer"], s["routes_withdrawn"]) for s in d["sessions_removed"]],
        "reset": {s["peer"]: s["reasons"] for s in d["sessions_reset"]},
        "limits": [(s["peer"], tuple(s["max_prefixes"]), "teardown" in s) for s in d["limits"]],
        "rejected": {p["peer"]: [(x["prefix"], x["reason"]) for x in p["first_rejected"]] for p in d["prefixes"]
                     if p["rejected"]},
        "accepted": {p["peer"]: [x["prefix"] for x in p["first_accepted"]] for p in d["prefixes"] if p["accepted"]},
        "changed": {p["peer"]: p["changed"] for p in d["prefixes"] if p["changed"]},
        "fib": {x["prefix"]: (x["change"], x["new"]) for x in d["fib"]["first"]},
        "bfd": {k: [s["peer"] for s in v] for k, v in d["bfd"].items() if v},
        "exports": {e["peer"]: (e["announce"], e["withdraw"]) for e in d["exports"]},
        "restart": d["needs_restart"],
    }


EMPTY = {"added": [], "removed": [], "reset": {}, "limits": [], "rejected": {}, "accepted": {}, "changed": {},
         "fib": {}, "bfd": {}, "exports": {}, "restart": []}

ROWS: list[tuple[str, Callable[[dict], Any] | None, dict[str, Any]]] = [
    ("nothing changed", None, {}),
    ("prefix list loses 198.51.100.0/22 le 24: two of acme's routes go (on both sessions)",
     imp(acme, "prefixes", ["203.0.113.0/24", "198.51.100.0/24", "2001:db8:100::/48"]),
     {"rejected": {"10.0.1.2": [("198.51.101.0/24", "not_in_prefix_list")],
                   "10.0.2.2": [("198.51.101.0/24", "not_in_prefix_list")]},
      "fib": {"198.51.101.0/24": ("removed", [])}}),
    ("prefix list gains 11.0.0.0/24: the stored rejection becomes a route",
     imp(acme, "prefixes", ["203.0.113.0/24", "198.51.100.0/22 le 24", "2001:db8:100::/48", "11.0.0.0/24"]),
     {"accepted": {"10.0.1.2": ["11.0.0.0/24"], "10.0.2.2": ["11.0.0.0/24"]},
      "fib": {"11.0.0.0/24": ("added", ["10.0.1.2", "10.0.2.2"])}}),
    ("local-pref up: same routes, globex now wins 203.0.113.0/24 over acme",
     imp(globex, "local_pref", 200),
     {"changed": {"10.0.3.2": 1}, "fib": {"203.0.113.0/24": ("changed", ["10.0.3.2"])}}),
    ("max length /23: every /24 is too specific",
     lambda d: d["router"].__setitem__("max_prefix_length_v4", 23),
     {"rejected": {p: [("198.51.100.0/24", "too_specific"), ("198.51.101.0/24", "too_specific"),
                       ("203.0.113.0/24", "too_specific")] for p in ("10.0.1.2", "10.0.2.2")}
      | {"10.0.3.2": [("203.0.113.0/24", "too_specific")]},
      "fib": {"198.51.100.0/24": ("removed", []), "198.51.101.0/24": ("removed", []),
              "203.0.113.0/24": ("removed", [])}}),
    ("bogons gain 198.51.100.0/23",
     lambda d: d["router"].__setitem__("bogons", ["10.0.0.0/8", "198.51.100.0/23"]),
     {"rejected": {p: [("198.51.100.0/24", "bogon"), ("198.51.101.0/24", "bogon")] for p in ("10.0.1.2", "10.0.2.2")},
      "fib": {"198.51.100.0/24": ("removed", []), "198.51.101.0/24": ("removed", [])}}),
    ("max_prefixes raised: a limit, nothing else", imp(acme, "max_prefixes", 1000),
     {"limits": [("10.0.1.2", (100, 1000), False), ("10.0.2.2", (100, 1000), False),
                 ("2001:db8:1::2", (100, 1000), False)]}),
    ("max_prefixes lowered below what acme stored: those sessions are torn down", imp(acme, "max_prefixes", 3),
     {"limits": [("10.0.1.2", (100, 3), True), ("10.0.2.2", (100, 3), True), ("2001:db8:1::2", (100, 3), False)]}),
    ("customer ASN changed: every acme session resets", set_(acme, "asn", 64513),
     {"reset": {a: ["customer ASN 64512 -> 64513"] for a in ("10.0.1.2", "10.0.2.2", "2001:db8:1::2")},
      "rejected": {}}),
    ("local address changed", peer0(globex, "local_address", "10.0.3.3"),
     {"reset": {"10.0.3.2": ["local address 10.0.3.1 -> 10.0.3.3"]}}),
    ("md5 key added", peer0(globex, "md5_password", "s3cret-md5"), {"reset": {"10.0.3.2": ["md5 key added"]}}),
    ("hold time", peer0(globex, "hold_time_s", 30), {"reset": {"10.0.3.2": ["hold time 90s -> 30s"]}}),
    ("GTSM", peer0(globex, "ttl_security", True), {"reset": {"10.0.3.2": ["ttl security (GTSM) on"]}}),
    ("router hold time: only sessions without their own",
     lambda d: (d["router"].__setitem__("hold_time_s", 60), globex(d)["peers"][0].__setitem__("hold_time_s", 90)),
     {"reset": {a: ["hold time 90s -> 60s"] for a in ("10.0.1.2", "10.0.2.2", "2001:db8:1::2")}}),
    ("customer added", add_customer, {"added": ["10.0.5.2"]}),
    ("customer removed: its route leaves, 203.0.113.0/24 falls back to acme", lambda d: d["customers"].pop(1),
     {"removed": [("10.0.3.2", 1)], "fib": {"203.0.113.0/24": ("changed", ["10.0.1.2", "10.0.2.2"])}}),
    ("BFD on for globex", set_(globex, "bfd", {"tx_interval_ms": 100}), {"bfd": {"added": ["10.0.3.2"]}}),
    ("exports: one prefix more, one less",
     lambda d: d["router"].__setitem__("announce", ["192.0.2.0/24", "198.18.0.0/24"]),
     {"exports": {a: (["198.18.0.0/24"], []) for a in ("10.0.1.2", "10.0.2.2", "10.0.3.2")}
      | {"2001:db8:1::2": ([], ["2001:db8:ffff::/48"])}}),
    ("fib protocol: needs a restart", lambda d: d.__setitem__("fib", {"protocol": 201}), {"restart": ["fib"]}),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in ROWS], ids=[r[0] for r in ROWS])
def test_plan_reload_table(mutate: Callable[[dict], Any] | None, expected: dict[str, Any]) -> None:
    core = lab_core()
    old, new = cfg(), cfg(mutate)
    before = snapshot(core.rib)
    plan = plan_reload(old, new, core.rib, core.peers)
    assert snapshot(core.rib) == before  # the preview never touches the RIB
    got = summary(plan)
    assert got == {**EMPTY, **expected}
    orjson.dumps(plan.to_dict())  # JSON-serialisable as it is
    assert render_text({"plan": plan.to_dict()})
    assert plan.empty == (mutate is None)


def snapshot(rib: Rib) -> tuple:
    return ({a: (dict(x.accepted), dict(x.rejected), x.policy, x.max_prefixes) for a, x in rib.adj.items()},
            {p: rib.loc.fib_entry(p) for p in rib.loc.prefixes()})


BFD = {"tx_interval_ms": 300, "rx_interval_ms": 300, "multiplier": 3}


@pytest.mark.parametrize(("change", "kind"), [
    ({"tx_interval_ms": 100}, "retimed"), ({"rx_interval_ms": 50}, "retimed"),
    ({"multiplier": 5}, "recreated"), ({"auth": {"type": "keyed-sha1", "secret": "bfd-key-1"}}, "recreated"),
    ({"enabled": False}, "removed"),
])
def test_plan_bfd_changes(change: dict, kind: str) -> None:
    old = cfg(set_(globex, "bfd", BFD))
    new = cfg(set_(globex, "bfd", {**BFD, **change}))
    plan = plan_reload(old, new).to_dict()
    assert {k: [s["peer"] for s in v] for k, v in plan["bfd"].items() if v} == {kind: ["10.0.3.2"]}
    assert plan["sessions_reset"] == []  # BFD never resets the BGP session


def test_plan_never_contains_a_secret() -> None:
    md5, bfd_key = "md5-Secret-Value", "bfd-Secret-Val"
    old = cfg(lambda d: (globex(d)["peers"][0].__setitem__("md5_password", "old-md5-value"),
                         globex(d).__setitem__("bfd", {"auth": {"type": "keyed-sha1", "secret": "old-bfd-key"}})))
    new = cfg(lambda d: (globex(d)["peers"][0].__setitem__("md5_password", md5),
                         globex(d).__setitem__("bfd", {"auth": {"type": "keyed-sha1", "secret": bfd_key}})))
    plan = plan_reload(old, new, lab_core().rib)
    text = orjson.dumps(plan.to_dict()).decode() + render_text({"plan": plan.to_dict()})
    text += orjson.dumps(config_document(new)).decode()
    for secret in (md5, bfd_key, "old-md5-value", "old-bfd-key"):
        assert secret not in text
    assert plan.to_dict()["sessions_reset"][0]["reasons"] == ["md5 key changed"]
    assert plan.to_dict()["bfd"]["recreated"][0]["reasons"] == ["authentication changed"]


def test_invalid_yaml_text_is_refused_like_check() -> None:
    with pytest.raises(ConfigError, match=r"^<request>: customers\[0\]\.asn: "):
        config_from_text("router: {asn: 65000, router_id: 192.0.2.1}\ncustomers:\n"
                         "  - {name: x, asn: 0, import: {prefixes: []}, peers: [{address: 10.0.0.2, "
                         "local_address: 10.0.0.1}]}\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        config_from_text("router: [")


def test_running_config_keeps_restart_only_keys() -> None:
    old, new = cfg(), cfg(lambda d: (d.__setitem__("fib", {"protocol": 201}), add_customer(d)))
    run = running_config(old, new)
    assert run.fib.protocol == old.fib.protocol and len(run.customers) == 3


# --- the core applying a plan ----------------------------------------------------------------------------
def apply(core: RoutingCore, old: Config, new: Config, budget: int = 2000) -> tuple[list, list, ReconfigureApplied]:
    """Post the reload's core event and run its jobs as the owner does: (immediate actions, slices, done)."""
    plan = plan_reload(old, new, core.rib, core.peers)
    first = core.on_event(reconfigure_event(7, old, new, plan), 10.0)
    slices, done = [], None
    while core.busy:
        out = core.work(budget)
        slices.append(out)
        for a in out:
            if isinstance(a, ReconfigureApplied):
                done = a
    assert done is not None and done.token == 7
    return first, slices, done


def fib_changes(slices: list) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for s in slices:
        for a in s:
            if isinstance(a, SubmitFib):
                for d in a.diffs:
                    out[str(d.prefix)] = None if d.new is None else sorted(map(str, d.new.nexthops))
    return out


def test_policy_change_moves_only_the_changed_prefixes_and_resets_nothing() -> None:
    core = lab_core()
    old = cfg()
    new = cfg(imp(acme, "prefixes", ["203.0.113.0/24", "198.51.100.0/24", "2001:db8:100::/48"]))
    plan = plan_reload(old, new, core.rib, core.peers).to_dict()
    first, slices, done = apply(core, old, new)
    assert not [a for a in first + [x for s in slices for x in s] if isinstance(a, SendCommand)]
    assert fib_changes(slices) == {"198.51.101.0/24": None}  # exactly what the preview said
    assert plan["fib"]["first"] == [{"prefix": "198.51.101.0/24", "change": "removed",
                                     "old": ["10.0.1.2", "10.0.2.2"], "new": []}]
    assert (done.became_rejected, done.became_accepted) == (2, 0)
    rej = core.rib.adj[A].rejected[ipaddress.ip_network("198.51.101.0/24")][1]
    assert rej.reason.value == "not_in_prefix_list"
    assert all(core.peers[p].state.value == "established" and core.peers[p].flaps == 0 for p in (A, B, G))
    # A second reload back to the old list restores both routes from the stored announcements.
    _, slices, done = apply(core, new, old)
    assert fib_changes(slices) == {"198.51.101.0/24": ["10.0.1.2", "10.0.2.2"]} and done.became_accepted == 2


def test_policy_reevaluation_is_sliced() -> None:
    def big(d: dict) -> None:
        acme(d)["import"].update(prefixes=["11.0.0.0/8 le 24"], max_prefixes=5000)

    def half(d: dict) -> None:
        acme(d)["import"].update(prefixes=["11.0.0.0/9 le 24"], max_prefixes=5000)

    old, new = cfg(big), cfg(half)
    core = make_core(old)
    up(core, A)
    nets = [f"11.{hi}.{lo}.0/24" for hi in (1, 2, 129, 130, 131) for lo in range(256)]  # 1,280 prefixes
    announce(core, A, ACME, *nets)
    assert len(core.rib.loc) == 1280
    first, slices, done = apply(core, old, new, budget=500)
    fib_slices = [s for s in slices if any(isinstance(a, SubmitFib) for a in s)]
    assert len(fib_slices) >= 2  # the loop got control back between slices
    gone = {n for n in nets if int(n.split(".")[1]) >= 128}
    assert fib_changes(slices) == dict.fromkeys(gone)
    assert done.became_rejected == 768 and not first


def test_add_and_remove_customers_and_late_events_of_removed_peers() -> None:
    core = lab_core()
    old = cfg()
    new = cfg(lambda d: (d["customers"].pop(1), add_customer(d)))
    first, slices, done = apply(core, old, new)
    assert not first and done.routes_withdrawn == 1
    assert G not in core.peers and G not in core.rib.adj
    assert fib_changes(slices) == {"203.0.113.0/24": ["10.0.1.2", "10.0.2.2"]}
    new_peer = ipaddress.ip_address("10.0.5.2")
    assert core.peers[new_peer].customer == "initech"
    up(core, new_peer)
    announce(core, new_peer, intern_attrs(Attributes(as_path=(64600,))), "11.1.0.0/24")
    assert str(core.rib.loc.fib_entry(ipaddress.ip_network("11.1.0.0/24")).nexthops[0]) == "10.0.5.2"
    # ExaBGP's "down" for the neighbour it just dropped: expected, not an unknown peer.
    core.on_event(msg.StateEvent(G, G, "down", "removed"), 11.0)
    assert core.counters.unknown_peer_events == 0


def test_lowered_max_prefixes_tears_down_only_that_session() -> None:
    core = lab_core()
    old, new = cfg(), cfg(imp(acme, "max_prefixes", 3))
    first, _slices, done = apply(core, old, new)
    cmds = [a for a in first if isinstance(a, SendCommand)]
    assert sorted((str(a.peer), a.line) for a in cmds) == [
        ("10.0.1.2", "neighbor 10.0.1.2 teardown 1"), ("10.0.2.2", "neighbor 10.0.2.2 teardown 1")]
    assert sorted(done.teardowns) == ["10.0.1.2", "10.0.2.2"]


def test_strict_bfd_turned_on_gates_the_peer_until_bfd_is_up() -> None:
    core = lab_core()
    old = cfg()
    new = cfg(set_(globex, "bfd", {"strict": True}))
    _, slices, _ = apply(core, old, new)
    assert fib_changes(slices) == {"203.0.113.0/24": ["10.0.1.2", "10.0.2.2"]}
    assert core.peers[G].bfd_strict


def test_export_commands_are_ascii_checked() -> None:
    assert msg.announce_route(A, ipaddress.ip_network("192.0.2.0/24")) == \
        "neighbor 10.0.1.2 announce route 192.0.2.0/24 next-hop self"
    assert msg.withdraw_route(ipaddress.ip_address("2001:db8:1::2"), ipaddress.ip_network("2001:db8:ffff::/48")) == \
        "neighbor 2001:db8:1::2 withdraw route 2001:db8:ffff::/48"
    with pytest.raises(msg.BadCommand):
        msg.announce_route(A, "192.0.2.0/24 next-hop 1.2.3.4\nneighbor")  # type: ignore[arg-type]


def test_customer_removed_and_added_back_before_its_flush_ran() -> None:
    core = lab_core()
    with_g, without_g = cfg(), cfg(lambda d: d["customers"].pop(1))
    strict = cfg(imp(globex, "prefixes", ["2001:db8:200::/48"]))  # globex back, no longer allowed 203.0.113.0/24
    core.on_event(reconfigure_event(1, with_g, without_g, plan_reload(with_g, without_g, core.rib, core.peers)), 5.0)
    assert core.busy and G in core.rib.adj  # the flush has not run
    core.on_event(reconfigure_event(2, without_g, strict, plan_reload(without_g, strict, core.rib, core.peers)), 6.0)
    while core.busy:
        core.work()
    assert G in core.peers and G in core.rib.adj and core.rib.adj[G].received == 0
    up(core, G)
    announce(core, G, GLOBEX, "203.0.113.0/24")
    assert core.rib.adj[G].rejected[ipaddress.ip_network("203.0.113.0/24")][1].reason.value == "not_in_prefix_list"
