"""Export to the backbone: the filter, the Adj-RIB-Out and its commands, the core's stream and replay.

Command lines are also fed to ExaBGP 5.0.15's own API parser, so a syntax the installed ExaBGP does
not take fails here and not in a lab.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from common.model import BLACKHOLE, NO_ADVERTISE, NO_EXPORT, Attributes, Origin, Peer, intern_attrs
from routing.backbone import (
    EXPORT_TIMER,
    FLUSH_AT,
    PURPOSE,
    BackboneExport,
    BackboneImportPolicy,
    backbone_route,
)
from routing.config import parse_config
from routing.core import (
    ArmTimer,
    CommandDone,
    PeerState,
    PeerStatus,
    RoutingCore,
    SendCommand,
    SpeakerDied,
    SubmitFib,
    TimerFired,
)
from routing.exabgp import messages as msg
from routing.policy import ImportPolicy, Rejection
from routing.rib import Rib
from tests.unit.factories import CONFIG, customer_sessions, drain, path, peer, session_up

RR = ipaddress.ip_address("10.9.0.1")
RR6 = ipaddress.ip_address("2001:db8:9::1")
A = ipaddress.ip_address("10.0.1.2")
ATTRS = intern_attrs(Attributes(origin=Origin.IGP, as_path=(64512,)))


def net(s: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(s)


# --- the export filter ------------------------------------------------------------------------------
def test_customer_path_is_sent_with_its_attributes_and_prepend() -> None:
    p = path("198.51.100.0/24", as_path=(64512, 64999), med=7, local_pref=150)
    p = replace(p, prepend=2, attrs=replace(p.attrs, communities=((64512, 1),), large_communities=((65000, 1, 2),),
                                                ext_communities=(0x0002FDE800000001,)))
    r = backbone_route(p)
    assert r is not None
    assert r.as_path == (64512, 64512, 64512, 64999)  # the customer's AS twice more, then its path
    assert (r.origin, r.med, r.local_pref) == ("igp", 7, 150)
    assert r.communities == ((64512, 1),) and r.large_communities == ((65000, 1, 2),)
    assert r.text() == ("origin igp as-path [ 64512 64512 64512 64999 ] med 7 local-preference 150 "
                        "community [ 64512:1 ] large-community [ 65000:1:2 ] "
                        "extended-community [ 0x0002fde800000001 ]")


def test_no_advertise_is_not_sent_no_export_is_sent_and_kept() -> None:
    base = path("198.51.100.0/24")
    assert backbone_route(replace(base, attrs=replace(base.attrs, communities=(NO_ADVERTISE,)))) is None
    r = backbone_route(replace(base, attrs=replace(base.attrs, communities=(NO_EXPORT,))))
    assert r is not None and r.communities == (NO_EXPORT,)


def test_rtbh_path_is_tagged_blackhole_and_no_export() -> None:
    base = path("198.51.100.7/32")
    r = backbone_route(replace(base, rtbh=True))
    assert r is not None and set(r.communities) == {BLACKHOLE, NO_EXPORT}
    # Already tagged: not repeated.
    r = backbone_route(replace(base, rtbh=True, attrs=replace(base.attrs, communities=(BLACKHOLE,))))
    assert r is not None and r.communities == (BLACKHOLE, NO_EXPORT)


def test_ibgp_paths_are_never_sent_to_the_backbone() -> None:
    ibgp = peer("10.9.0.1", "backbone", 65000)
    assert backbone_route(path("198.51.100.0/24", p=ibgp, as_path=())) is None
    assert backbone_route(None) is None


def test_backbone_import_policy_accepts_own_as_and_default_refuses_bogons() -> None:
    c = parse_config(CONFIG)
    pol = BackboneImportPolicy(c.router)
    ibgp = peer("10.9.0.1", "backbone", 65000)
    ok = pol.apply(path("0.0.0.0/0", p=ibgp, as_path=(65000, 3356), nexthop="10.9.0.7"))
    assert not isinstance(ok, Rejection) and ok.local_pref == 100
    assert isinstance(pol.apply(path("10.1.0.0/16", p=ibgp, nexthop="10.9.0.7")), Rejection)
    assert isinstance(pol.apply(path("198.51.100.0/25", p=ibgp, nexthop="10.9.0.7")), Rejection)  # > /24
    lp = path("198.51.100.0/24", p=ibgp, nexthop="10.9.0.7")
    lp = replace(lp, attrs=replace(lp.attrs, local_pref=300))
    res = pol.apply(lp)
    assert not isinstance(res, Rejection) and res.local_pref == 300


# --- Adj-RIB-Out and its commands --------------------------------------------------------------------
def test_reconcile_batches_by_attributes_and_withdraws_and_skips_what_was_sent() -> None:
    bb = BackboneExport({RR: 4})
    best = {net("198.51.100.0/24"): path("198.51.100.0/24"), net("198.51.101.0/24"): path("198.51.101.0/24"),
            net("203.0.113.0/24"): replace(path("203.0.113.0/24"), prepend=1)}
    lines = bb.reconcile(RR, list(best), best.get)
    assert lines == [
        "neighbor 10.9.0.1 announce attributes origin igp as-path [ 64512 ] local-preference 100 "
        "next-hop self nlri 198.51.100.0/24 198.51.101.0/24",
        "neighbor 10.9.0.1 announce attributes origin igp as-path [ 64512 64512 ] local-preference 100 "
        "next-hop self nlri 203.0.113.0/24",
    ]
    assert bb.reconcile(RR, list(best), best.get) == []  # nothing changed: nothing sent
    del best[net("198.51.101.0/24")]
    assert bb.reconcile(RR, [net("198.51.101.0/24")], best.get) == [
        "neighbor 10.9.0.1 withdraw attributes next-hop self nlri 198.51.101.0/24"]
    assert set(bb.sent[RR]) == {net("198.51.100.0/24"), net("203.0.113.0/24")}
    assert [r["prefix"] for r in bb.rows(RR)] == ["198.51.100.0/24", "203.0.113.0/24"]


def test_reconcile_sends_each_family_to_its_own_sessions() -> None:
    bb = BackboneExport({RR: 4, RR6: 6})
    p6 = path("2001:db8:100::/48", p=peer("2001:db8:1::2"))
    best = {net("198.51.100.0/24"): path("198.51.100.0/24"), p6.prefix: p6}
    assert [ln.split(" nlri ")[1] for ln in bb.reconcile(RR, list(best), best.get)] == ["198.51.100.0/24"]
    assert [ln.split(" nlri ")[1] for ln in bb.reconcile(RR6, list(best), best.get)] == ["2001:db8:100::/48"]


def test_command_lines_parse_with_the_installed_exabgp() -> None:
    """The lines we build are what ExaBGP 5.0.15's API parser takes: routes, attributes, NLRI count."""
    pytest.importorskip("exabgp")
    from exabgp.environment import getenv
    from exabgp.logger import option
    from exabgp.reactor.api import API

    option.setup(getenv())
    api = API(None)
    p = path("198.51.100.0/24", as_path=(64512,), med=5)
    p = replace(p, rtbh=True, prepend=1, attrs=replace(p.attrs, communities=((64512, 1),),
                                                       large_communities=((65000, 1, 2),),
                                                       ext_communities=(0x0002FDE800000001,)))
    r = backbone_route(p)
    assert r is not None
    prefixes = [net(f"198.51.{i}.0/24") for i in range(100, 104)]
    for line, n in ((msg.announce_attributes(RR, r.text(), prefixes), 4), (msg.withdraw_attributes(RR, prefixes), 4)):
        command = line.split(" ", 2)[2]  # without "neighbor X": ExaBGP strips it before parsing
        changes = api.api_attributes(command, None)
        assert len(changes) == n, line
        text = changes[0].extensive()
        if "announce" in line:
            assert "as-path ( 64512 64512 )" in text and "blackhole" in text and "no-export" in text
            assert "64512:1" in text and "65000:1:2" in text and "target:65000:1" in text and "med 5" in text


# --- the core: best-path stream, replay on Up, session resets ---------------------------------------
def make_core(install: bool = False) -> RoutingCore:
    c = parse_config({**CONFIG, "backbone": {"peers": [{"address": "10.9.0.1", "local_address": "10.9.0.2"}],
                                             "install": install}})
    rib = Rib()
    peers = customer_sessions(c, rib, limits=False)
    rib.add_peer(RR, BackboneImportPolicy(c.router), None)  # type: ignore[arg-type]
    peers[RR] = PeerStatus(RR, ipaddress.ip_address("10.9.0.2"), "backbone", "ipv4", Peer(RR, "backbone", 65000, 65000),
                           backbone=True)
    return RoutingCore(rib, peers, stale_timeout_s=120.0, backbone_install=install)


up = session_up


def update(core: RoutingCore, addr: ipaddress.IPv4Address, *prefixes: str, withdraw: tuple[str, ...] = (),
           attrs: Attributes = ATTRS, nexthop: str | None = None, now: float = 2.0) -> list:
    nh = ipaddress.ip_address(nexthop) if nexthop else addr
    ann = tuple((net(p), nh, ()) for p in prefixes)
    return core.on_event(msg.UpdateEvent(addr, attrs, ann, tuple(net(p) for p in withdraw)), now)


def commands(actions: list) -> list[str]:
    return [a.line for a in actions if isinstance(a, SendCommand) and a.purpose == PURPOSE]


def flush(core: RoutingCore, actions: list) -> list[str]:
    """Fire the export timer if the actions armed it; the commands it sends."""
    if any(isinstance(a, ArmTimer) and a.name == EXPORT_TIMER for a in actions):
        return commands(core.on_event(TimerFired(EXPORT_TIMER), 3.0))
    return commands(actions)


def nlri(lines: list[str]) -> set[str]:
    return {p for ln in lines for p in ln.split(" nlri ")[1].split()}


def test_customer_route_goes_to_the_established_backbone_and_is_withdrawn_when_it_goes() -> None:
    core = make_core()
    up(core, A)
    drain(core)
    up(core, RR)
    assert commands(drain(core)) == []  # nothing to replay yet
    acts = update(core, A, "198.51.100.0/24")
    assert commands(acts) == []  # batched: the timer is armed
    assert flush(core, acts) == ["neighbor 10.9.0.1 announce attributes origin igp as-path [ 64512 ] "
                                 "local-preference 100 next-hop self nlri 198.51.100.0/24"]
    acts = update(core, A, withdraw=("198.51.100.0/24",))
    assert flush(core, acts) == ["neighbor 10.9.0.1 withdraw attributes next-hop self nlri 198.51.100.0/24"]
    assert core.backbone is not None and core.backbone.sent[RR] == {}


def test_many_changes_flush_without_waiting_for_the_timer() -> None:
    core = make_core()
    up(core, A)
    up(core, RR)
    drain(core)
    prefixes = [f"198.51.{i // 4}.{(i % 4) * 64}/26" for i in range(FLUSH_AT)]
    core.rib.adj[A].policy = _AcceptAll()  # type: ignore[assignment]
    acts = update(core, A, *prefixes) + drain(core)
    assert len(nlri(commands(acts))) == FLUSH_AT


class _AcceptAll:
    rpki = "off"

    def apply(self, p):  # type: ignore[no-untyped-def]
        return p


def test_backbone_routes_are_kept_but_not_installed_by_default() -> None:
    core = make_core()
    up(core, RR)
    drain(core)
    ibgp = intern_attrs(Attributes(origin=Origin.IGP, as_path=(3356,), local_pref=200))
    acts = update(core, RR, "8.8.8.0/24", attrs=ibgp, nexthop="10.9.0.7")
    assert not any(isinstance(a, SubmitFib) for a in acts)
    assert net("8.8.8.0/24") in core.rib.adj[RR].accepted
    assert core.rib.loc.selection(net("8.8.8.0/24")) is None
    assert flush(core, acts) == []


def test_with_install_backbone_routes_are_installed_and_a_backbone_best_is_withdrawn_from_the_backbone() -> None:
    core = make_core(install=True)
    up(core, A)
    up(core, RR)
    drain(core)
    assert nlri(flush(core, update(core, A, "198.51.100.0/24"))) == {"198.51.100.0/24"}
    # The backbone now offers the same prefix with a higher LOCAL_PREF: its path wins, and an iBGP
    # best path is never re-exported to iBGP, so ours is withdrawn from the route reflector.
    ibgp = intern_attrs(Attributes(origin=Origin.IGP, as_path=(64512,), local_pref=500))
    acts = update(core, RR, "198.51.100.0/24", "8.8.8.0/24", attrs=ibgp, nexthop="10.9.0.7")
    fib = {str(d.prefix): d.new for a in acts if isinstance(a, SubmitFib) for d in a.diffs}
    assert fib["8.8.8.0/24"] is not None and [str(n) for n in fib["8.8.8.0/24"].nexthops] == ["10.9.0.7"]
    assert flush(core, acts) == ["neighbor 10.9.0.1 withdraw attributes next-hop self nlri 198.51.100.0/24"]


def test_replay_on_up_is_sliced_and_covers_the_whole_loc_rib() -> None:
    core = make_core()
    core.rib.adj[A].policy = _AcceptAll()  # type: ignore[assignment]
    up(core, A)
    prefixes = [f"10.{i // 256}.{i % 256}.0/24" for i in range(2500)]
    for i in range(0, len(prefixes), 500):
        update(core, A, *prefixes[i:i + 500])
        drain(core)
    assert core.on_event(TimerFired(EXPORT_TIMER), 3.0) == []  # the backbone is not up: nothing sent
    up(core, RR)
    assert core.busy  # the replay is a job
    per_slice = []
    while core.busy:
        per_slice.append(commands(core.work(100)))
    assert len(per_slice) >= 25  # 2,500 prefixes, 100 per slice: never one long step
    assert nlri([ln for s in per_slice for ln in s]) == set(prefixes)
    assert len(core.backbone.sent[RR]) == 2500  # type: ignore[union-attr]


def test_session_reset_and_speaker_death_forget_the_adj_rib_out_and_replay_on_up() -> None:
    core = make_core()
    up(core, A)
    up(core, RR)
    drain(core)
    flush(core, update(core, A, "198.51.100.0/24", "203.0.113.0/24"))
    bb = core.backbone
    assert bb is not None and len(bb.sent[RR]) == 2
    core.on_event(msg.StateEvent(RR, RR, "down", "hold timer expired"), 4.0)
    drain(core)
    assert bb.sent[RR] == {} and core.peers[RR].state is PeerState.IDLE
    # While it is down, changes are not sent (ExaBGP would queue them for a session that starts empty).
    assert flush(core, update(core, A, withdraw=("203.0.113.0/24",))) == []
    assert nlri(commands(up(core, RR) + drain(core))) == {"198.51.100.0/24"}
    # ExaBGP dies: the same, and its customers' routes are kept as stale, so the replay has them.
    core.on_event(SpeakerDied(0), 5.0)
    assert bb.sent[RR] == {}
    up(core, A, now=6.0)
    assert nlri(commands(up(core, RR, now=6.0) + drain(core))) == {"198.51.100.0/24"}


def test_a_failed_export_command_replays_and_withdraws_what_is_no_longer_exported() -> None:
    core = make_core()
    up(core, A)
    up(core, RR)
    drain(core)
    flush(core, update(core, A, "198.51.100.0/24", "203.0.113.0/24"))
    bb = core.backbone
    assert bb is not None
    # The withdrawal of 203.0.113.0/24 is refused: the next replay withdraws it again.
    acts = update(core, A, withdraw=("203.0.113.0/24",))
    flush(core, acts)
    core.on_event(CommandDone(RR, PURPOSE, False), 4.0)
    lines = commands(drain(core))
    assert any("announce" in ln and ln.endswith("198.51.100.0/24") for ln in lines)
    assert "neighbor 10.9.0.1 withdraw attributes next-hop self nlri 203.0.113.0/24" in lines


def test_backbone_is_sent_the_communities_the_import_policy_carries_onwards() -> None:
    """Our informational communities are added and a customer's forged ones in our namespace scrubbed
    (the import policy's ``communities_out``), RTBH paths get BLACKHOLE + NO_EXPORT."""
    doc = {**CONFIG, "router": {**CONFIG["router"], "communities": ["65000:1000"]},
           "customers": [dict(CONFIG["customers"][0], communities=["65000:2001"],
                              **{"import": dict(CONFIG["customers"][0]["import"], rtbh=True)}),
                         CONFIG["customers"][1]],
           "backbone": {"peers": [{"address": "10.9.0.1", "local_address": "10.9.0.2"}]}}
    c = parse_config(doc)
    rib = Rib()
    acme = c.customers[0]
    rib.add_peer(A, ImportPolicy(c.router, acme), None)
    rib.add_peer(RR, BackboneImportPolicy(c.router), None)  # type: ignore[arg-type]
    peers = {A: PeerStatus(A, A, "acme", "ipv4", Peer(A, "acme", 64512, 65000)),
             RR: PeerStatus(RR, RR, "backbone", "ipv4", Peer(RR, "backbone", 65000, 65000), backbone=True)}
    core = RoutingCore(rib, peers, stale_timeout_s=120.0)
    up(core, A)
    up(core, RR)
    drain(core)
    sent = intern_attrs(Attributes(origin=Origin.IGP, as_path=(64512,), communities=((64512, 7), (65000, 9999))))
    lines = flush(core, update(core, A, "198.51.100.0/24", attrs=sent))
    assert len(lines) == 1 and "community [ 64512:7 65000:1000 65000:2001 ]" in lines[0], lines
    bh = intern_attrs(Attributes(origin=Origin.IGP, as_path=(64512,), communities=(BLACKHOLE,)))
    lines = flush(core, update(core, A, "198.51.100.7/32", attrs=bh))
    assert len(lines) == 1 and "65535:666" in lines[0] and "65535:65281" in lines[0], lines
    assert core.rib.adj[A].accepted[net("198.51.100.7/32")].rtbh
