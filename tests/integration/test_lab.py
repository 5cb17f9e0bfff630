"""End to end on the default lab: real FRR, BIRD and ExaBGP peers in namespaces.

One lab per module (bringing it up takes a few seconds); tests that disturb it restore what they
changed and poll for the expected state with a deadline.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.runner import Lab

from .lab import established, kernel_routes, metric_value, metrics, peers, prometheus, run_in, running, show
from .netns import wait_for

ROOT = Path(__file__).parents[2]
TOPOLOGY = ROOT / "containerlab" / "pop-basic.clab.yml"
ALL_PEERS = {"10.0.1.2", "2001:db8:1::2", "10.0.2.2", "2001:db8:2::2", "10.0.3.2", "2001:db8:3::2",
             "10.0.4.2", "2001:db8:4::2"}
ACCEPTED_V4 = {"198.51.100.0/24": ["10.0.1.2", "10.0.2.2"], "203.0.113.0/24": ["10.0.3.2"]}
ACCEPTED_V6 = {"2001:db8:100::/48": ["2001:db8:1::2", "2001:db8:2::2"], "2001:db8:200::/48": ["2001:db8:3::2"],
               "2001:db8:301::/48": ["2001:db8:4::2"]}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running(TOPOLOGY, "lab") as lab:
        yield lab


@pytest.fixture(scope="module")
def converged(lab: Lab) -> Lab:
    wait_for(lambda: established(lab) == ALL_PEERS, timeout=60, what="all sessions Established")
    wait_for(lambda: kernel_routes(lab) == ACCEPTED_V4 and kernel_routes(lab, "-6") == ACCEPTED_V6,
             timeout=30, what="accepted routes in the kernel")
    return lab


def test_sessions_established_with_frr_bird_and_exabgp(converged: Lab) -> None:
    ps = peers(converged)
    assert {ps[a]["customer"] for a in ALL_PEERS} == {"acme", "globex", "mallory"}
    assert ps["10.0.1.2"]["router_id"] == "10.255.0.1"  # FRR's BGP identifier, from its OPEN
    assert ps["10.0.3.2"]["asn"] == 4200000001  # BIRD with a 4-byte ASN
    m = metrics(converged)
    assert all(metric_value(m, "pop_router_bgp_session_up", peer=a) == 1.0 for a in ALL_PEERS)


def test_accepted_routes_in_kernel_with_our_protocol_and_ecmp(converged: Lab) -> None:
    assert kernel_routes(converged) == ACCEPTED_V4
    assert kernel_routes(converged, "-6") == ACCEPTED_V6
    fib = {r["prefix"]: r["nexthops"] for r in show(converged, "fib")}
    assert sorted(fib["198.51.100.0/24"]) == ["10.0.1.2", "10.0.2.2"]
    routes = show(converged, "routes")
    best = [r for r in routes if r["prefix"] == "198.51.100.0/24" and r["best"]]
    assert len(best) == 1 and best[0]["reason"] in ("router_id", "peer_address")
    assert all(r["multipath"] for r in routes if r["prefix"] == "198.51.100.0/24")
    m = metrics(converged)
    assert metric_value(m, "pop_router_fib_routes", afi="ipv4") == 2.0
    assert metric_value(m, "pop_router_fib_routes", afi="ipv6") == 3.0
    assert metric_value(m, "pop_router_bgp_prefixes_accepted", peer="10.0.3.2", afi="ipv4") == 1.0


def test_fib_diff_in_sync_and_drift_repaired(converged: Lab) -> None:
    import json
    import sys

    def diff() -> dict:
        p = run_in(converged, "pop", sys.executable, "-m", "routing.cli", "fib", "diff", "--json", check=False)
        return json.loads(p.stdout)

    d = diff()
    assert (d["missing"], d["extra"], d["different"], d["in_sync"]) == ([], [], [], 5)
    # Routes sit on nexthop groups of ours.
    groups = json.loads(run_in(converged, "pop", "ip", "-json", "nexthop", "show", "protocol", "200").stdout)
    assert any("group" in g for g in groups)
    run_in(converged, "pop", "ip", "route", "del", "203.0.113.0/24", "proto", "200")
    wait_for(lambda: kernel_routes(converged) == ACCEPTED_V4, timeout=10, what="deleted route repaired")
    assert (metric_value(metrics(converged), "pop_router_fib_drift_repaired_total", kind="route_deleted") or 0) >= 1
    d = diff()
    assert (d["missing"], d["extra"], d["different"]) == ([], [], [])


def xdp_forwarded(lab: Lab) -> int:
    x = show(lab, "xdp")
    return sum(c.get("forwarded", 0) for c in x["counters_by_interface"].values())


def test_xdp_fast_path_forwards_the_lab_traffic(converged: Lab) -> None:
    """The PoP's XDP program on eth1/eth2 forwards host1 -> host2 (through acme, towards globex) from
    the maps the writer mirrors; its counters are per interface, and fib diff finds the maps in sync."""
    import json

    x = show(converged, "xdp")
    assert x["enabled"] and sorted(a["mode"] for a in x["attached"]) == ["native", "native"]
    assert x["routes"] == len(ACCEPTED_V4) + len(ACCEPTED_V6) and x["pin_dir"] == "/sys/fs/bpf/pop-router"
    # The program shown is the one attached (same kernel id as `ip link` reports).
    link = run_in(converged, "pop", "ip", "-d", "link", "show", "eth1").stdout
    assert f"prog/xdp id {x['program']['id']} " in link
    before = xdp_forwarded(converged)
    for dst in ("203.0.113.10", "2001:db8:200::10"):
        p = run_in(converged, "host1", "ping", "-c", "5", "-i", "0.05", "-W", "2", dst)
        assert " 0% packet loss" in p.stdout
    assert xdp_forwarded(converged) >= before + 10  # the echo requests; replies come back via eth3
    m = metrics(converged)
    by_if = [metric_value(m, "pop_router_xdp_packets_total", interface=i, action="forwarded") or 0
             for i in ("eth1", "eth2")]
    assert sum(by_if) >= before + 10
    d = json.loads(run_in(converged, "pop", sys.executable, "-m", "routing.cli", "fib", "diff", "--json").stdout)
    assert d["xdp"]["in_sync"] == len(ACCEPTED_V4) + len(ACCEPTED_V6)
    assert (d["xdp"]["missing"], d["xdp"]["extra"], d["xdp"]["different"], d["xdp"]["bad_nexthops"]) == ([], [], [], [])


@pytest.mark.parametrize(("dst", "family"), [("203.0.113.10", "-4"), ("2001:db8:200::10", "-6")])
def test_ping_between_hosts_crosses_the_pop(converged: Lab, dst: str, family: str) -> None:
    p = run_in(converged, "host1", "ping", family, "-c", "3", "-i", "0.2", "-W", "2", dst)
    assert " 0% packet loss" in p.stdout
    # host1 -> acme -> pop -> globex -> host2: three routers decrement the TTL.
    assert ("ttl=61" in p.stdout) or ("hlim=61" in p.stdout)
    out = run_in(converged, "pop", "ip", family, "route", "get", dst).stdout
    assert "proto 200" in out or "via" in out


HOSTILE = {
    ("0.0.0.0/0", "10.0.4.2"): "default_route",
    ("10.99.0.0/16", "10.0.4.2"): "bogon",
    ("198.51.100.7/32", "10.0.4.2"): "too_specific",
    ("203.0.113.0/24", "10.0.4.2"): "not_in_prefix_list",
    ("198.51.100.0/24", "10.0.4.2"): "own_as_in_path",
    ("2001:db8:300::/48", "2001:db8:4::2"): "first_as_mismatch",
}


def test_hostile_announcements_rejected_counted_and_kept_out_of_kernel(converged: Lab) -> None:
    rejected = {(r["prefix"], r["peer"]): r["reason"] for r in show(converged, "routes", "--rejected")}
    for key, reason in HOSTILE.items():
        assert rejected.get(key) == reason, (key, rejected)
    m = metrics(converged)
    for (_, peer), reason in HOSTILE.items():
        assert (metric_value(m, "pop_router_bgp_prefixes_rejected_total", peer=peer, reason=reason) or 0) >= 1
    v4 = kernel_routes(converged)
    # None of mallory's IPv4 announcements made it: the hijacked prefixes still point at their owners.
    assert "0.0.0.0/0" not in v4 and "default" not in v4 and "10.99.0.0/16" not in v4
    assert "198.51.100.7" not in v4 and "198.51.100.7/32" not in v4
    assert v4["203.0.113.0/24"] == ["10.0.3.2"] and v4["198.51.100.0/24"] == ["10.0.1.2", "10.0.2.2"]
    assert "2001:db8:300::/48" not in kernel_routes(converged, "-6")
    # Nothing outside our protocol id is ours: the kernel's connected routes are untouched.
    assert len(kernel_routes(converged, "-4", "kernel")) == 5  # eth1-eth5 (eth5: the Prometheus link)


def test_withdrawal_at_frr_removes_kernel_route(converged: Lab) -> None:
    def vtysh(cmd: str) -> None:
        run_in(converged, "acme", "vtysh", "-c", "conf t", "-c", "router bgp 64512",
               "-c", "address-family ipv4 unicast", "-c", cmd)

    vtysh("no network 198.51.100.0/24")
    try:
        wait_for(lambda: "198.51.100.0/24" not in kernel_routes(converged), timeout=20, what="route withdrawn")
        assert established(converged) == ALL_PEERS  # a withdrawal, not a session loss
    finally:
        vtysh("network 198.51.100.0/24")
    wait_for(lambda: kernel_routes(converged) == ACCEPTED_V4, timeout=20, what="route re-announced")


def test_session_loss_flushes_routes_without_withdrawals(converged: Lab) -> None:
    """BGP sends no withdrawals when a session goes down: the daemon must flush the peer itself."""
    run_in(converged, "globex", "birdc", "-s", "/run/bird/bird.ctl", "disable", "pop4")
    try:
        wait_for(lambda: "203.0.113.0/24" not in kernel_routes(converged), timeout=20, what="routes flushed")
        assert peers(converged)["10.0.3.2"]["state"] != "established"
        assert "2001:db8:200::/48" in kernel_routes(converged, "-6")  # the IPv6 session is unaffected
    finally:
        run_in(converged, "globex", "birdc", "-s", "/run/bird/bird.ctl", "enable", "pop4")
    wait_for(lambda: kernel_routes(converged) == ACCEPTED_V4, timeout=30, what="routes back")


def test_promtool_check_metrics_passes_on_the_running_daemons_scrape(converged: Lab) -> None:
    """Prometheus' own linter on what the running daemon exposes (the unit test checks a scrape of
    a registry with every family populated; this one, the real thing with real peers)."""
    import subprocess

    text = metrics(converged)
    assert "pop_router_bgp_session_up" in text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_lab_prometheus_scrapes_the_pop_and_fires_an_alert_when_a_session_is_cut(converged: Lab) -> None:
    """The lab's real Prometheus (its node in pop-basic) scrapes the PoP and evaluates the shipped
    alert rules (ops/prometheus/alerts.yml): a cut customer session becomes a firing
    PopRouterBgpSessionDown (its ``for: 1m`` included), and resolves once the session is back."""
    def healthy() -> list:
        return [t for t in prometheus(converged, "/api/v1/targets")["activeTargets"] if t["health"] == "up"]

    (target,) = wait_for(healthy, timeout=60, interval=1, what="the PoP scraped by the lab's Prometheus")
    assert target["scrapeUrl"] == "http://10.0.9.1:9324/metrics" and target["lastError"] == ""
    rules = {r["name"] for g in prometheus(converged, "/api/v1/rules")["groups"] for r in g["rules"]}
    assert {"PopRouterBgpSessionDown", "PopRouterCustomerDisconnected", "PopRouterBfdFlapping"} <= rules

    def alert(state: str) -> bool:
        return any(a["labels"]["alertname"] == "PopRouterBgpSessionDown" and a["labels"].get("peer") == "10.0.3.2"
                   and a["state"] == state for a in prometheus(converged, "/api/v1/alerts")["alerts"])

    # An earlier test cut this session too: Prometheus clears that within an evaluation or two.
    wait_for(lambda: not alert("firing") and not alert("pending"), timeout=30, interval=1, what="no alert at first")
    run_in(converged, "globex", "birdc", "-s", "/run/bird/bird.ctl", "disable", "pop4")
    try:
        wait_for(lambda: alert("pending"), timeout=30, interval=1, what="the alert pending")
        wait_for(lambda: alert("firing"), timeout=120, interval=2, what="PopRouterBgpSessionDown firing")
    finally:
        run_in(converged, "globex", "birdc", "-s", "/run/bird/bird.ctl", "enable", "pop4")
    wait_for(lambda: kernel_routes(converged) == ACCEPTED_V4, timeout=30, what="routes back")
    wait_for(lambda: not alert("firing"), timeout=30, interval=1, what="the alert resolved")


def test_exabgp_runs_as_root_with_our_relay(converged: Lab) -> None:
    pid = show(converged, "status")["exabgp_processes"][0]["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    assert "\nUid:\t0\t0\t0\t0" in status  # it would drop to nobody unless told otherwise
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    cmdlines = [Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ") for c in children]
    assert any(b"routing/exabgp/bridge.py" in c for c in cmdlines)
    # exabgp.interpreter: auto runs it on PyPy where make installed exabgp-pypy (issue 12), and says so
    pypy = Path(sys.executable).with_name("exabgp-pypy").exists()
    exe = os.readlink(f"/proc/{pid}/exe")
    assert ("pypy" in exe) == pypy, exe
    assert ("PyPy" in show(converged, "status")["exabgp_processes"][0]["runs_on"]) == pypy


def test_killing_exabgp_keeps_kernel_routes_and_sessions_return(converged: Lab) -> None:
    before = show(converged, "status")["exabgp_processes"]
    assert len(before) == 1  # few sessions: `auto` runs one process
    before = before[0]
    os.kill(before["pid"], signal.SIGKILL)
    # From the kill until the sessions are back, the kernel keeps every route (poll all the way).
    deadline = time.monotonic() + 60
    restarted = False
    while time.monotonic() < deadline:
        assert kernel_routes(converged) == ACCEPTED_V4
        assert kernel_routes(converged, "-6") == ACCEPTED_V6
        st = show(converged, "status")["exabgp_processes"][0]
        if st["restarts"] == before["restarts"] + 1 and st["pid"] != before["pid"]:
            restarted = True
            if established(converged) == ALL_PEERS and all(p["stale"] == 0 for p in peers(converged).values()):
                break
        time.sleep(0.2)  # poll
    assert restarted
    assert established(converged) == ALL_PEERS
    assert kernel_routes(converged) == ACCEPTED_V4
    m = metrics(converged)
    assert metric_value(m, "pop_router_child_restarts_total", child="exabgp-0") == before["restarts"] + 1


def test_operator_reset_needs_token_and_commands_are_acked_one_by_one(converged: Lab) -> None:
    import json
    import sys

    code = (
        "import sys, json\n"
        "from routing.cli import api_call\n"
        "from pathlib import Path\n"
        "sock = Path('/run/pop-router/api.sock')\n"
        "print(json.dumps(api_call(sock, 'POST', '/peers/10.0.4.2/reset')))\n"
        "print(json.dumps(api_call(sock, 'POST', '/peers/10.0.4.2/reset', 'wrong')))\n"
    )
    out = run_in(converged, "pop", sys.executable, "-c", code).stdout.splitlines()
    assert [json.loads(x)[0] for x in out] == [401, 401]
    # Concurrent state-changing calls: ExaBGP acks out of order, so the daemon keeps one command in
    # flight; every call must get its own positive ack.
    code = (
        "import json, concurrent.futures\n"
        "from routing.cli import api_call\n"
        "from pathlib import Path\n"
        "sock = Path('/run/pop-router/api.sock'); tok = Path('/run/pop-router/api.token').read_text().strip()\n"
        "peers = ['10.0.4.2', '2001:db8:4::2'] * 3\n"
        "with concurrent.futures.ThreadPoolExecutor(6) as ex:\n"
        "    res = list(ex.map(lambda p: api_call(sock, 'POST', f'/peers/{p}/reset', tok), peers))\n"
        "print(json.dumps(res))\n"
    )
    res = json.loads(run_in(converged, "pop", sys.executable, "-c", code).stdout)
    assert [r[0] for r in res] == [200] * 6 and all(r[1]["reset"] for r in res)
    wait_for(lambda: established(converged) == ALL_PEERS, timeout=60, what="mallory back after resets")


def test_max_prefixes_tears_session_down(converged: Lab, tmp_path: Path) -> None:
    """mallory floods 30 prefixes past its limit of 20: the session goes, nothing reaches the kernel."""
    lab = converged
    routes = "\n".join(f"        route 198.51.{100 + i // 256}.{i % 256}/32 next-hop 10.0.4.2 as-path [ 64666 ];"
                       for i in range(30))
    conf = tmp_path / "flood.conf"
    conf.write_text(
        "neighbor 10.0.4.1 {\n    router-id 10.255.0.4;\n    local-address 10.0.4.2;\n    local-as 64666;\n"
        f"    peer-as 65000;\n    passive true;\n    family {{ ipv4 unicast; }}\n    static {{\n{routes}\n    }}\n}}\n"
    )
    pidfile = lab.state / "mallory.cmd.pid"
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    wait_for(lambda: peers(lab)["10.0.4.2"]["state"] != "established", timeout=30, what="mallory v4 down")
    node = lab.topo.nodes["mallory"]
    flood = lab._background(node, ["exabgp", str(conf)], "flood")
    try:
        wait_for(lambda: "max_prefixes 20 exceeded" in peers(lab)["10.0.4.2"]["last_down_reason"], timeout=60,
                 what="max_prefixes teardown")
        m = metrics(lab)
        assert (metric_value(m, "pop_router_bgp_teardowns_total", peer="10.0.4.2", reason="max_prefixes") or 0) >= 1
        assert (metric_value(m, "pop_router_bgp_prefixes_rejected_total", peer="10.0.4.2",
                             reason="max_prefixes") or 0) >= 1
        assert not any(k.startswith("198.51.100.") and k != "198.51.100.0/24" for k in kernel_routes(lab))
        log = (lab.state / "pop.pop-router.log").read_text()
        assert "sent more than max_prefixes 20" in log
    finally:
        os.kill(flood, signal.SIGTERM)
        lab._background(node, ["sh", "-c", f"exec {node.cmd}"], "cmd")
    wait_for(lambda: established(lab) == ALL_PEERS, timeout=60, what="mallory back with its normal config")


def test_daemon_sigkill_keeps_forwarding_and_restart_adopts_without_changes(converged: Lab) -> None:
    import subprocess

    lab = converged
    # A packet stream through the PoP for the whole kill/restart: not one packet may be lost.
    start = xdp_forwarded(lab)
    ping = subprocess.Popen([*lab.enter("host1"), "ping", "-c", "600", "-i", "0.02", "-W", "1", "203.0.113.10"],
                            stdout=subprocess.PIPE, text=True)
    # The stream is flowing through the PoP's fast path before the kill.
    wait_for(lambda: xdp_forwarded(lab) >= start + 10, timeout=10, what="the stream forwarded by XDP")
    pid = int((lab.state / "pop.pop-router.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
             timeout=10, what="daemon gone")
    # No daemon, no ExaBGP (it dies with its parent): the kernel still forwards, and so does the XDP
    # program, still attached with its pinned maps.
    assert kernel_routes(lab) == ACCEPTED_V4 and kernel_routes(lab, "-6") == ACCEPTED_V6
    assert all("prog/xdp" in run_in(lab, "pop", "ip", "-d", "link", "show", i).stdout for i in ("eth1", "eth2"))
    p = run_in(lab, "host1", "ping", "-c", "1", "-W", "2", "203.0.113.10", check=False)
    assert p.returncode == 0, p.stdout
    node = lab.topo.nodes["pop"]
    lab._background(node, [sys.executable, "-m", "routing.cli", "run", "-c", "/etc/pop-router/pop.yaml"],
                    "pop-router")
    wait_for(lambda: established(lab) == ALL_PEERS, timeout=60, what="sessions back after daemon restart")
    st = show(lab, "status")
    assert st["adopted_routes"] == len(ACCEPTED_V4) + len(ACCEPTED_V6)
    wait_for(lambda: all(p["stale"] == 0 for p in peers(lab).values()), timeout=30, what="paths refreshed")
    assert kernel_routes(lab) == ACCEPTED_V4 and kernel_routes(lab, "-6") == ACCEPTED_V6
    # Every adopted route was re-announced unchanged: the restarted daemon made no kernel change.
    m = metrics(lab)
    assert metric_value(m, "pop_router_fib_operations_total", op="install", result="ok") is None
    assert metric_value(m, "pop_router_fib_operations_total", op="delete", result="ok") is None
    # The restarted daemon took the pinned maps over as they were: not one map write at start.
    x = show(lab, "xdp")
    assert x["reused_pinned_maps"] and x["start_map_writes"] == 0, x
    out, _ = ping.communicate(timeout=60)
    assert "600 packets transmitted, 600 received, 0% packet loss" in out, out
    # The whole stream took the fast path, the downtime included (counters live in a pinned map):
    # at least 575 of its 600 requests, counted from before it started.
    assert xdp_forwarded(lab) >= start + 575
