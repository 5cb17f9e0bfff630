"""BFD against real FRR bfdd and BIRD in the pop-bfd lab: sessions, timers, auth, multihop, path cuts.

Paths are cut by blocking a port of the switch node's bridge (`bridge link set dev X state 0`): the
routers see no interface event, only missing packets, as with a failed transport circuit.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.runner import Lab
from labs.topology import load_topology

from .lab import kernel_routes, metric_value, metrics, peers, run_in, show
from .netns import unique_prefix, wait_for

ROOT = Path(__file__).parents[2]
TOPOLOGY = ROOT / "containerlab" / "pop-bfd.clab.yml"
BFD_PEERS = {"10.0.1.2", "2001:db8:1::2", "10.0.3.2", "10.0.2.2", "2001:db8:2::2", "10.255.0.3",
             "10.0.11.2", "10.0.12.2", "10.0.13.2", "10.0.14.2", "10.0.15.2"}
BGP_PEERS = {"10.0.1.2", "2001:db8:1::2", "10.0.3.2", "10.0.2.2", "2001:db8:2::2"}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab(load_topology(TOPOLOGY), unique_prefix("bfd") + "-")
    try:
        lab.up(log=lambda *_: None)
        yield lab
    finally:
        lab.down()


def bfd(lab: Lab) -> dict[str, dict]:
    return {s["peer"]: s for s in show(lab, "bfd")}


def all_up(lab: Lab) -> bool:
    b = bfd(lab)
    est = {a for a, p in peers(lab).items() if p["state"] == "established"}
    return set(b) == BFD_PEERS and all(s["state"] == "up" for s in b.values()) and BGP_PEERS <= est


@pytest.fixture(scope="module")
def converged(lab: Lab) -> Lab:
    wait_for(lambda: all_up(lab), timeout=60, what="all BFD sessions Up and BGP Established")
    # FRR 8.4 resets its BFD session once when its BGP session first reaches Established (we then
    # tear BGP down as BFD asks); wait until that settles.
    wait_for(lambda: all_up(lab) and kernel_routes(lab).get("198.51.100.0/24") and
             kernel_routes(lab).get("203.0.113.0/24"), timeout=60, what="routes installed")
    return lab


def test_sessions_up_with_frr_and_bird_ipv4_ipv6_and_timers_negotiated(converged: Lab) -> None:
    b = bfd(converged)
    # Ours: we asked 20/30 ms, FRR 40/50 ms -> we send every max(20, 50) = 50 ms, FRR every 40 ms,
    # and we detect after 3 x max(30, 40) = 120 ms.
    for a in ("10.0.1.2", "2001:db8:1::2"):
        assert (b[a]["tx_interval_ms"], b[a]["rx_interval_ms"], b[a]["detect_time_ms"]) == (50, 40, 120)
    for a in ("10.0.2.2", "2001:db8:2::2"):
        assert (b[a]["tx_interval_ms"], b[a]["detect_time_ms"]) == (10, 30)
    frr = json.loads(run_in(converged, "frr", "vtysh", "-c", "show bfd peers json").stdout)
    by_peer = {p["peer"]: p for p in frr}
    for a in ("10.0.1.1", "2001:db8:1::1", "10.0.3.1"):
        p = by_peer[a]
        assert p["status"] == "up"
        # FRR's side of the same negotiation: what we told it, and what it uses.
        assert (p["remote-receive-interval"], p["remote-transmit-interval"]) == (30, 20)
        assert (p["receive-interval"], p["transmit-interval"]) == (50, 40)
    out = run_in(converged, "bird", "birdc", "-s", "/run/bird/bird.ctl", "show", "bfd", "sessions").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isdigit()}
    assert rows["10.0.2.1"][2] == "Up" and rows["10.0.2.1"][-2:] == ["0.010", "0.030"]
    assert rows["2001:db8:2::1"][2] == "Up"


def test_bird_every_authentication_type(converged: Lab) -> None:
    b = bfd(converged)
    expected = {"10.0.11.2": "simple", "10.0.12.2": "keyed-md5", "10.0.13.2": "meticulous-keyed-md5",
                "10.0.14.2": "keyed-sha1", "10.0.15.2": "meticulous-keyed-sha1"}
    for peer, auth in expected.items():
        assert b[peer]["state"] == "up" and b[peer]["auth"] == auth
        assert b[peer]["rx_packets"] > 0
    out = run_in(converged, "bird", "birdc", "-s", "/run/bird/bird.ctl", "show", "bfd", "sessions").stdout
    for i in range(11, 16):
        assert any(line.startswith(f"10.0.{i}.1 ") and " Up " in line for line in out.splitlines()), out
    m = metrics(converged)
    assert not metric_value(m, "pop_router_bfd_rx_dropped_total", reason="auth_failed")


def test_multihop_with_bird(converged: Lab) -> None:
    s = bfd(converged)["10.255.0.3"]
    assert s["multihop"] and s["state"] == "up" and s["detect_time_ms"] == 150
    out = run_in(converged, "bird", "birdc", "-s", "/run/bird/bird.ctl", "show", "bfd", "sessions").stdout
    assert any(line.startswith("10.255.0.1 ") and " Up " in line for line in out.splitlines()), out


def _rx_packets(lab: Lab, node: str, ifname: str) -> int:
    """Packets received on a node's interface (the kernel's counter, read as `ip -s link` shows it)."""
    (link,) = json.loads(run_in(lab, node, "ip", "-s", "-json", "link", "show", "dev", ifname).stdout)
    return int(link["stats64"]["rx"]["packets"])


def _cut(lab: Lab, port: str, state: int) -> float:
    t = time.monotonic()
    run_in(lab, "sw", "bridge", "link", "set", "dev", port, "state", str(state))
    return t


@pytest.mark.parametrize(
    ("port", "peer", "prefix", "detect_ms", "backup"),
    [("eth4", "10.0.2.2", "203.0.113.0/24", 30, None), ("eth2", "10.0.1.2", "198.51.100.0/24", 120, "10.0.3.2")],
    ids=["bird-10ms", "frr-40ms-with-backup"],
)
def test_path_cut_detected_bgp_and_routes_go_then_return(converged: Lab, port: str, peer: str, prefix: str,
                                                          detect_ms: int, backup: str | None) -> None:
    lab = converged
    # The route must be on its primary before the cut. A 10 ms x 3 session on this shared VM can go
    # Down on its own when the host steals a 30 ms stretch (issue 9: such Downs are blamed on the host
    # in `show bfd`), and CI once met the prefix out of the kernel here; wait for it to come back
    # rather than cut a path that carries nothing.
    wait_for(lambda: bfd(lab)[peer]["state"] == "up" and prefix in kernel_routes(lab), timeout=60,
             what=f"{prefix} installed over {peer} before the cut")
    primary = kernel_routes(lab)[prefix]
    t_cut = _cut(lab, port, 0)
    try:
        if backup is None:
            wait_for(lambda: prefix not in kernel_routes(lab), timeout=5, interval=0.01, what="routes withdrawn")
        else:
            wait_for(lambda: kernel_routes(lab).get(prefix) == [backup], timeout=5, interval=0.01,
                     what="traffic moved to the backup")
        p = peers(lab)[peer]
        assert p["bfd"] == "down" and p["state"] != "established"
        assert p["last_down_reason"].startswith("BFD down (control_detection_time_expired)")
        # Detected no later than the negotiated detection time after the cut, plus scheduling slack
        # of the test itself (the benchmark measures it precisely).
        assert p["bfd_down_at"] - t_cut <= detect_ms / 1000 + 0.1
        assert bfd(lab)[peer]["local_diag"] == "control_detection_time_expired"
        m = metrics(lab)
        assert (metric_value(m, "pop_router_bfd_transitions_total", peer=peer, state="down") or 0) >= 1
        assert (metric_value(m, "pop_router_bgp_teardowns_total", peer=peer, reason="bfd_down") or 0) >= 1
    finally:
        _cut(lab, port, 3)
    wait_for(lambda: bfd(lab)[peer]["state"] == "up" and peers(lab)[peer]["state"] == "established",
             timeout=60, what="BFD and BGP back after the heal")
    wait_for(lambda: kernel_routes(lab).get(prefix) == primary, timeout=30, what="routes back on the primary")


def test_traffic_continues_over_the_backup_when_the_primary_is_cut(converged: Lab) -> None:
    """hsrc -> pop -> frr (dual-homed) -> hdst at 100 packets/s; the primary link is cut mid-stream."""
    import subprocess

    lab = converged
    wait_for(lambda: kernel_routes(lab).get("198.51.100.0/24") == ["10.0.1.2"], timeout=30, what="primary in use")
    start = _rx_packets(lab, "hdst", "eth1")
    ping = subprocess.Popen([*lab.enter("hsrc"), "ping", "-c", "300", "-i", "0.01", "-W", "1", "198.51.100.10"],
                            stdout=subprocess.PIPE, text=True)
    # The stream reaches hdst (over the primary: the route is on it) before the cut.
    wait_for(lambda: _rx_packets(lab, "hdst", "eth1") >= start + 20, timeout=10, what="traffic flowing to hdst")
    _cut(lab, "eth2", 0)
    try:
        out, _ = ping.communicate(timeout=30)
    finally:
        _cut(lab, "eth2", 3)
    sent, received = (int(x) for x in
                      next(line for line in out.splitlines() if "packets transmitted" in line).split()[0:4:3])
    # BFD detects in 120 ms here (FRR asks 40 ms x 3); the replies also need FRR to move to its backup.
    assert sent == 300 and received >= sent - 40, out
    last = [line for line in out.splitlines() if "icmp_seq=" in line][-1]
    assert "icmp_seq=300" in last or int(last.split("icmp_seq=")[1].split()[0]) > 280, out
    m = metrics(lab)
    assert (metric_value(m, "pop_router_fib_failover_seconds_count") or 0) >= 1
    wait_for(lambda: bfd(lab)["10.0.1.2"]["state"] == "up", timeout=60, what="primary BFD back")


def test_bfd_process_restart_keeps_requests(converged: Lab) -> None:
    lab = converged
    pid = show(lab, "status")["bfd_pid"]
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: show(lab, "status")["bfd_pid"] not in (None, pid), timeout=30, what="BFD process restarted")
    wait_for(lambda: all(s["state"] == "up" for s in bfd(lab).values()) and set(bfd(lab)) == BFD_PEERS,
             timeout=60, what="sessions re-requested from the new BFD process and Up")
    assert show(lab, "status")["bfd_restarts"] == 1
    m = metrics(lab)
    assert (metric_value(m, "pop_router_child_restarts_total", child="bfd") or 0) >= 1


def test_strict_mode_keeps_routes_out_while_bfd_is_not_up(converged: Lab) -> None:
    """2001:db8:2::2 is `strict`: with its BFD packets dropped at BIRD (nft), BGP comes back but
    the routes stay out of the kernel until BFD is Up again."""
    lab = converged
    nft = "nft add table inet popt; nft add chain inet popt in '{ type filter hook input priority 0; }'; " \
          "nft add rule inet popt in ip6 saddr 2001:db8:2::1 udp dport 3784 drop"
    run_in(lab, "bird", "sh", "-c", nft)
    try:
        wait_for(lambda: peers(lab)["2001:db8:2::2"]["bfd"] != "up", timeout=10, what="BFD not Up")
        wait_for(lambda: peers(lab)["2001:db8:2::2"]["state"] == "established"
                 and peers(lab)["2001:db8:2::2"]["accepted"] == 1, timeout=60, what="BGP back with BFD down")
        assert "2001:db8:200::/48" not in kernel_routes(lab, "-6")
        assert peers(lab)["2001:db8:2::2"]["bfd"] != "up"
    finally:
        run_in(lab, "bird", "nft", "delete", "table", "inet", "popt")
    wait_for(lambda: "2001:db8:200::/48" in kernel_routes(lab, "-6"), timeout=60, what="routes in once BFD is Up")
    assert peers(lab)["2001:db8:2::2"]["bfd"] == "up"


def test_graceful_stop_sends_admin_down(converged: Lab) -> None:
    """Stopping the daemon (SIGTERM) stops the BFD process, which tells every peer AdminDown."""
    lab = converged
    pid = int((lab.state / "pop.pop-router.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    def bird_sessions() -> str:
        return run_in(lab, "bird", "birdc", "-s", "/run/bird/bird.ctl", "show", "bfd", "sessions").stdout
    wait_for(lambda: "10.0.11.1" in bird_sessions() and all(
        " Up " not in line for line in bird_sessions().splitlines() if line.startswith("10.0.1")),
        timeout=20, what="BIRD sees our sessions go down")
    frr = json.loads(run_in(lab, "frr", "vtysh", "-c", "show bfd peers json").stdout)
    wait_for(lambda: all(p["status"] != "up" for p in
                         json.loads(run_in(lab, "frr", "vtysh", "-c", "show bfd peers json").stdout)),
             timeout=20, what="FRR sees our sessions go down")
    frr = json.loads(run_in(lab, "frr", "vtysh", "-c", "show bfd peers json").stdout)
    assert all(p.get("remote-diagnostic") == "administratively down" for p in frr), frr
