"""Export to the backbone and to each customer, against real BIRD routers (containerlab/pop-backbone.clab.yml).

A BIRD route reflector (iBGP, the PoP as ``rr client``) must see the customers' accepted routes with
next hop = the PoP and our informational communities, lose a route the customer withdraws, and have
everything again after our ExaBGP is killed and restarted by the daemon (the replay on Up). Each
customer's BIRD shows its own export policy. The RR's own route is in the PoP's Adj-RIB-In
(``show routes``) and not in its kernel. Every wait polls for the expected state.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.runner import Lab

from .lab import established, kernel_routes, metric_value, metrics, run_in, running, show
from .netns import wait_for

TOPOLOGY = Path(__file__).parents[2] / "containerlab" / "pop-backbone.clab.yml"
RR = "10.0.20.2"
ALL = {"10.0.3.2", "10.0.5.2", RR}
CUSTOMER_ROUTES = {"203.0.113.0/24", "203.0.113.128/25", "198.51.100.0/24"}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(TOPOLOGY, "bb") as lab:
        wait_for(lambda: established(lab) == ALL, timeout=90, what="all sessions Established")
        yield lab


def bird_routes(lab: Lab, node: str) -> dict[str, dict[str, str]]:
    """``birdc show route all``: prefix -> {"via": next hop, "BGP.as_path": ..., "BGP.community": ...}."""
    out = run_in(lab, node, "birdc", "-s", "/run/bird/bird.ctl", "show", "route", "all").stdout
    routes: dict[str, dict[str, str]] = {}
    cur: dict[str, str] | None = None
    for line in out.splitlines():
        m = re.match(r"^(\S+/\d+)\s+(unicast|unreachable|blackhole)", line)
        if m:
            cur = routes.setdefault(m[1], {"type": m[2]})
            continue
        if cur is None:
            continue
        m = re.match(r"^\s+via (\S+)", line)
        if m:
            cur["via"] = m[1]
            continue
        m = re.match(r"^\s+(BGP\.\w+): ?(.*)$", line)
        if m:
            cur[m[1]] = m[2].strip()
    return routes


def rr_customer_routes(lab: Lab) -> dict[str, dict[str, str]]:
    return {p: r for p, r in bird_routes(lab, "rr").items() if p in CUSTOMER_ROUTES}


def rr_has_all(lab: Lab) -> dict[str, dict[str, str]] | None:
    r = rr_customer_routes(lab)
    return r if set(r) == CUSTOMER_ROUTES else None


def test_customer_routes_reach_the_route_reflector_with_next_hop_self_and_communities(lab: Lab) -> None:
    routes = wait_for(lambda: rr_has_all(lab), timeout=60, what="the customers' routes at the RR")
    for p in CUSTOMER_ROUTES:
        assert routes[p].get("via") == "10.0.20.1" or routes[p].get("BGP.next_hop") == "10.0.20.1", routes[p]
    g = routes["203.0.113.0/24"]
    assert g["BGP.as_path"] == "4200000001"
    assert "(65000,1000)" in g["BGP.community"] and "(65000,2001)" in g["BGP.community"], g
    i = routes["198.51.100.0/24"]
    assert i["BGP.as_path"] == "64513" and "(65000,1000)" in i["BGP.community"], i
    assert "(65000,2001)" not in i["BGP.community"]  # globex's tag only on globex's routes
    exported = {r["prefix"]: r for r in show(lab, "routes", "--exported", RR)}
    assert set(exported) == CUSTOMER_ROUTES and exported["203.0.113.0/24"]["as_path"] == [4200000001]
    assert metric_value(metrics(lab), "pop_router_backbone_exported_routes", peer=RR) == 3.0


def test_each_customer_is_sent_its_own_export(lab: Lab) -> None:
    def ready() -> tuple[dict, dict] | None:
        g, i = bird_routes(lab, "globex"), bird_routes(lab, "initech")
        return (g, i) if "192.0.2.0/24" in g and {"192.0.2.0/25", "0.0.0.0/0"} <= set(i) else None

    g, i = wait_for(ready, timeout=60, what="each customer's export")
    assert g["192.0.2.0/24"]["BGP.as_path"] == "65000 65000 65000", g["192.0.2.0/24"]  # prepend 2
    assert "(65000,500)" in g["192.0.2.0/24"]["BGP.community"]
    assert "0.0.0.0/0" not in g
    assert "192.0.2.0/24" not in i and i["192.0.2.0/25"]["BGP.as_path"] == "65000"
    assert i["0.0.0.0/0"]["BGP.as_path"] == "65000"
    sent = {r["prefix"] for r in show(lab, "routes", "--exported", "10.0.5.2")}
    assert sent == {"192.0.2.0/25", "0.0.0.0/0"}


def test_the_rr_own_route_is_kept_but_not_installed(lab: Lab) -> None:
    def listed() -> dict | None:
        return next((r for r in show(lab, "routes") if r["prefix"] == "9.9.9.0/24"), None)

    r = wait_for(listed, timeout=60, what="the RR's route in show routes")
    assert r["peer"] == RR and r["customer"] == "backbone" and not r["best"] and r["reason"] == "not_installed"
    assert "9.9.9.0/24" not in kernel_routes(lab)
    # ...and never re-exported to the backbone (iBGP to iBGP), nor to the customers.
    assert "9.9.9.0/24" not in {x["prefix"] for x in show(lab, "routes", "--exported", RR)}
    assert "9.9.9.0/24" not in bird_routes(lab, "globex")


def test_a_withdrawal_at_the_customer_reaches_the_route_reflector(lab: Lab) -> None:
    wait_for(lambda: "203.0.113.128/25" in rr_customer_routes(lab), timeout=60, what="the /25 at the RR")
    run_in(lab, "globex", "birdc", "-s", "/run/bird/bird.ctl", "disable", "s4b")
    try:
        wait_for(lambda: "203.0.113.128/25" not in rr_customer_routes(lab), timeout=30,
                 what="the /25 withdrawn at the RR")
        assert "203.0.113.0/24" in rr_customer_routes(lab)
    finally:
        run_in(lab, "globex", "birdc", "-s", "/run/bird/bird.ctl", "enable", "s4b")
    wait_for(lambda: "203.0.113.128/25" in rr_customer_routes(lab), timeout=30, what="the /25 back at the RR")


def test_exabgp_killed_the_rr_has_the_routes_again_after_the_session_returns(lab: Lab) -> None:
    wait_for(lambda: set(rr_customer_routes(lab)) == CUSTOMER_ROUTES, timeout=60, what="all routes at the RR")
    pid = show(lab, "status")["exabgp_processes"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    # The RR loses the session (TCP closed with the process), so it drops what we sent it...
    wait_for(lambda: not rr_customer_routes(lab), timeout=30, what="the RR dropped our routes")
    # ...and has every route again once the daemon's new ExaBGP is back: the Adj-RIB-Out replay.
    wait_for(lambda: show(lab, "status")["exabgp_processes"][0]["pid"] not in (None, pid), timeout=30,
             what="ExaBGP restarted")
    wait_for(lambda: established(lab) == ALL, timeout=90, what="all sessions back")
    routes = wait_for(lambda: rr_has_all(lab), timeout=60, what="the customers' routes at the RR again")
    assert "(65000,1000)" in routes["203.0.113.0/24"]["BGP.community"]
    assert "9.9.9.0/24" not in kernel_routes(lab)
