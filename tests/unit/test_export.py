"""Per-customer export and the generated ExaBGP configuration (customers' static routes, backbone
neighbours); the rendered text is read back by ExaBGP 5.0.15's own configuration parser."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from routing.config import parse_config
from routing.exabgp import messages as msg
from routing.exabgp.conf import render
from routing.exabgp.pool import BACKBONE, peer_processes, process_customers, process_of
from routing.policy import customer_exports, export_attributes, export_routes
from routing.reload import plan_reload
from tests.unit.factories import CONFIG


def cfg(**export: Any) -> Any:
    doc = {**CONFIG, "customers": [dict(CONFIG["customers"][0], export=export), CONFIG["customers"][1]],
           "backbone": {"peers": [{"address": "10.9.0.1", "local_address": "10.9.0.2"},
                                  {"address": "2001:db8:9::1", "local_address": "2001:db8:9::2"}]}}
    return parse_config(doc)


def test_default_export_is_router_announce_of_the_family_with_our_as_once() -> None:
    c = cfg()
    acme = c.customers[0]
    assert [str(n) for n in export_routes(c.router, acme, 4)] == ["192.0.2.0/24"]
    assert [str(n) for n in export_routes(c.router, acme, 6)] == ["2001:db8:ffff::/48"]
    assert export_attributes(c.router, acme).text() == ""  # ExaBGP's eBGP default: our AS once


def test_customer_export_prefixes_prepend_communities_and_default_route() -> None:
    c = cfg(prefixes=["192.0.2.0/25", "2001:db8:fffe::/48"], prepend=2, default_route=True,
            communities=["65000:100", "65000:1:2", "no-export"])
    acme = c.customers[0]
    assert [str(n) for n in export_routes(c.router, acme, 4)] == ["192.0.2.0/25", "0.0.0.0/0"]
    assert [str(n) for n in export_routes(c.router, acme, 6)] == ["2001:db8:fffe::/48", "::/0"]
    a = export_attributes(c.router, acme)
    assert a.as_path == (65000, 65000, 65000)  # ExaBGP sends an explicit AS_PATH as given
    assert a.text() == "as-path [ 65000 65000 65000 ] community [ 65000:100 65535:65281 ] large-community [ 65000:1:2 ]"
    # globex keeps the default
    assert customer_exports(c.router, c.customers[1], 4) == {ipaddress.ip_network("192.0.2.0/24"): ""}


def test_conf_renders_customer_exports_and_backbone_neighbours(tmp_path: Path) -> None:
    c = cfg(prepend=1, communities=["65000:100"], default_route=True)
    text = render(c, tmp_path / "s.sock", python="python")
    assert ("route 192.0.2.0/24 next-hop self as-path [ 65000 65000 ] community [ 65000:100 ];" in text)
    assert "route 0.0.0.0/0 next-hop self as-path [ 65000 65000 ] community [ 65000:100 ];" in text
    assert "route ::/0 next-hop self" in text
    bb = text[text.index("neighbor 10.9.0.1 {"):]
    bb = bb[:bb.index("\n}\n")]
    assert "peer-as 65000;" in bb and "local-as 65000;" in bb and "family { ipv4 unicast; }" in bb
    assert "static" not in bb  # the daemon announces through the API and replays on Up
    assert "neighbor 2001:db8:9::1 {" in text
    # ExaBGP's own parser takes the whole file.
    pytest.importorskip("exabgp")
    from exabgp.configuration.configuration import Configuration
    from exabgp.environment import getenv
    from exabgp.logger import option

    option.setup(getenv())
    f = tmp_path / "exabgp.conf"
    f.write_text(text)
    conf = Configuration([str(f)])
    assert conf.reload(), conf.error
    assert len(conf.neighbors) == 6


def test_backbone_sessions_share_one_process_and_move_nobody() -> None:
    c = cfg()
    for n in (1, 2, 3, 4):
        pp = peer_processes(c, n)
        b = process_of(BACKBONE, n)
        assert pp[ipaddress.ip_address("10.9.0.1")] == pp[ipaddress.ip_address("2001:db8:9::1")] == b
        assert BACKBONE in process_customers(c, n, b)
        assert all(BACKBONE not in process_customers(c, n, i) for i in range(n) if i != b)
        # customers are where they were without a backbone
        plain = parse_config(CONFIG)
        assert {a: i for a, i in pp.items() if a in peer_processes(plain, n)} == peer_processes(plain, n)
    text = render(c, Path("/dev/null"), python="python", customers={"globex"})
    assert "10.9.0.1" not in text


def test_reload_sends_changed_attributes_as_updates_without_a_reset() -> None:
    old, new = cfg(), cfg(prepend=1, communities=["65000:7"])
    plan = plan_reload(old, new)
    assert not plan.sessions_reset
    by_peer = {e["peer"]: e for e in plan.exports}
    e = by_peer["10.0.1.2"]
    assert e["announce"] == ["192.0.2.0/24"] and e["withdraw"] == []
    assert e["attributes"] == "as-path [ 65000 65000 ] community [ 65000:7 ]"
    assert "10.0.3.2" not in by_peer  # globex unchanged
    line = msg.announce_route(ipaddress.ip_address("10.0.1.2"), ipaddress.ip_network("192.0.2.0/24"), e["attributes"])
    assert line == ("neighbor 10.0.1.2 announce route 192.0.2.0/24 next-hop self "
                    "as-path [ 65000 65000 ] community [ 65000:7 ]")
    plan = plan_reload(old, cfg(prefixes=["192.0.2.0/25"], default_route=True))
    e = {x["peer"]: x for x in plan.exports}["10.0.1.2"]
    assert e["announce"] == ["0.0.0.0/0", "192.0.2.0/25"] and e["withdraw"] == ["192.0.2.0/24"]


def test_backbone_changes_need_a_restart() -> None:
    old = cfg()
    new = parse_config({**CONFIG, "backbone": {"peers": [], "install": True}})
    plan = plan_reload(old, new)
    assert "backbone" in plan.needs_restart
