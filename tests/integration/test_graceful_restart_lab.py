"""Graceful restart (RFC 4724) against real peers, in the default lab (containerlab/pop-basic.clab.yml).

Helper side: acme's FRR runs with ``bgp graceful-restart`` and ``preserve-fw-state`` (its OPEN lists
IPv4 with the Forwarding State bit); its ``bgpd`` is killed (watchfrr starts it again), not the link:
the session ends without a NOTIFICATION, and we must keep acme's paths as stale — kernel routes and
traffic from host2 to host1 untouched — until its End-of-RIB after the restart. globex's BIRD is
killed and started with ``-R``: its IPv4 session (``graceful restart on``) is helped the same way,
its IPv6 one (BIRD's default capability lists no family) is flushed as before.

Restarting side: our own ExaBGP process is killed; FRR, our helper, keeps forwarding towards our
announced prefix from its side (its route to 192.0.2.0/24 stays) until our new session's End-of-RIB,
which follows our re-announcement (our exports are ExaBGP static routes, sent before its End-of-RIB).
Without our capability (checked by hand, 2026-11-30: the same lab with ``graceful_restart_s`` unset)
acme drops our prefix 0.1 s after the kill, so the 0.2 s poll below would see it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.runner import Lab

from .lab import CLAB, established, kernel_routes, peers, pop_basic_copy, run_in, running, show
from .netns import wait_for

ACME_V4 = ("10.0.1.2", "10.0.2.2")
ALL = {"10.0.1.2", "10.0.2.2", "2001:db8:1::2", "2001:db8:2::2", "10.0.3.2", "2001:db8:3::2", "10.0.4.2",
       "2001:db8:4::2"}
V4 = {"198.51.100.0/24": list(ACME_V4), "203.0.113.0/24": ["10.0.3.2"]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    d = tmp_path_factory.mktemp("gr")
    d.chmod(0o755)
    frr = (CLAB / "pop-basic/acme/frr.conf").read_text().replace(
        " timers bgp 10 30\n",
        " timers bgp 10 30\n bgp graceful-restart\n bgp graceful-restart preserve-fw-state\n")
    assert "bgp graceful-restart\n" in frr
    (d / "frr.conf").write_text(frr)
    # globex: graceful restart on its IPv4 session only; its IPv6 one keeps BIRD's default (the
    # capability without any family: nothing to help with).
    bird = (CLAB / "pop-basic/globex/bird.conf").read_text().replace(
        "  neighbor 10.0.3.1 as 65000;\n", "  neighbor 10.0.3.1 as 65000;\n  graceful restart on;\n")
    assert "graceful restart on" in bird
    (d / "bird.conf").write_text(bird)
    pop_basic_copy(d, "gr.clab.yml", {"pop-basic/acme/frr.conf": d / "frr.conf",
                                      "pop-basic/globex/bird.conf": d / "bird.conf"})
    with running(d / "gr.clab.yml", "gr") as lab:
        wait_for(lambda: established(lab) == ALL, timeout=90, what="all sessions Established")
        wait_for(lambda: kernel_routes(lab) == V4, timeout=30, what="acme's and globex's routes in the kernel")
        yield lab


def pids(lab: Lab, node: str, comm: str) -> list[int]:
    ns = lab.ns(node)
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout.split()
    found = []
    for p in out:
        try:
            if Path(f"/proc/{p}/comm").read_text().strip() == comm:
                found.append(int(p))
        except OSError:
            continue
    return found


def acme_has_ours(lab: Lab) -> bool:
    """acme's FRR has a route to our announced 192.0.2.0/24 (the restarting side's evidence)."""
    out = json.loads(run_in(lab, "acme", "vtysh", "-c", "show ip route 192.0.2.0/24 json").stdout or "{}")
    return bool(out.get("192.0.2.0/24"))


def pinger(lab: Lab, src: str, dst: str, seconds: float) -> subprocess.Popen[str]:
    """ping every 20 ms from ``src``: its summary counts what the restart cost."""
    n = int(seconds / 0.02)
    return subprocess.Popen([*lab.enter(src), "ping", "-n", "-q", "-i", "0.02", "-c", str(n), "-W", "1", dst],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=lab.node_env(lab.topo.nodes[src]))


def received(p: subprocess.Popen[str]) -> tuple[int, int]:
    out, _ = p.communicate(timeout=120)
    line = next(ln for ln in out.splitlines() if "packets transmitted" in ln)
    parts = line.split()
    return int(parts[0]), int(parts[3])


def test_helper_keeps_acme_paths_and_traffic_while_its_bgpd_restarts(lab: Lab) -> None:
    p = peers(lab)["10.0.1.2"]
    assert p["graceful_restart"] is not None and "ipv4" in p["graceful_restart"]["forwarding"], p
    (bgpd,) = pids(lab, "acme", "bgpd")
    ping = pinger(lab, "host2", "198.51.100.10", 25)
    time.sleep(1.0)  # poll: the stream runs before anything happens
    os.kill(bgpd, signal.SIGKILL)
    helped_seen = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # poll: from the kill until acme is back, the route stays
        assert kernel_routes(lab).get("198.51.100.0/24") == list(ACME_V4)
        ps = peers(lab)
        helped_seen |= ps["10.0.1.2"]["gr_helping"]
        if helped_seen and not ps["10.0.1.2"]["gr_helping"] and ps["10.0.1.2"]["state"] == "established":
            break
        time.sleep(0.2)  # poll
    assert helped_seen, "the session never went down gracefully (bgpd not restarted?)"
    ps = peers(lab)
    assert ps["10.0.1.2"]["state"] == "established" and ps["10.0.1.2"]["stale"] == 0
    assert ps["10.0.1.2"]["flaps"] >= 1 and p["flaps"] < ps["10.0.1.2"]["flaps"]
    assert pids(lab, "acme", "bgpd") and pids(lab, "acme", "bgpd") != [bgpd]
    sent, got = received(ping)
    # Every ping but those in flight at the kill came back (the route never moved).
    assert got >= sent - 3, f"{sent - got} of {sent} pings lost during acme's graceful restart"
    assert kernel_routes(lab) == V4


def test_bird_restarting_is_helped_on_ipv4_and_flushed_on_ipv6(lab: Lab) -> None:
    """BIRD killed and started again with ``-R`` (its graceful-restart recovery): the IPv4 session
    (``graceful restart on``: IPv4 listed, no F bit on a fresh start) keeps its route as stale; the
    new OPEN carries the F bit, so the route waits for BIRD's End-of-RIB and is never withdrawn. The
    IPv6 session (BIRD's default capability: no family) is flushed as any lost session."""
    g4, g6 = peers(lab)["10.0.3.2"], peers(lab)["2001:db8:3::2"]
    assert g4["graceful_restart"]["afis"] == ["ipv4"] and g4["graceful_restart"]["forwarding"] == []
    assert not (g6["graceful_restart"] or {}).get("afis"), g6
    (bird,) = pids(lab, "globex", "bird")
    os.kill(bird, signal.SIGKILL)
    try:
        wait_for(lambda: "2001:db8:200::/48" not in kernel_routes(lab, "-6"), timeout=60, what="globex's IPv6 flushed")
        assert peers(lab)["10.0.3.2"]["gr_helping"] and "203.0.113.0/24" in kernel_routes(lab)
        assert not peers(lab)["2001:db8:3::2"]["gr_helping"]
    finally:
        run_in(lab, "globex", "bird", "-R", "-c", "/etc/bird/bird.conf", "-s", "/run/bird/bird.ctl")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # poll: the IPv4 route stays until BIRD's End-of-RIB ends the help
        assert kernel_routes(lab).get("203.0.113.0/24") == ["10.0.3.2"], "globex's IPv4 route moved"
        g4 = peers(lab)["10.0.3.2"]
        if g4["state"] == "established" and not g4["gr_helping"]:
            break
        time.sleep(0.2)  # poll
    assert g4["graceful_restart"]["forwarding"] == ["ipv4"] and g4["stale"] == 0
    wait_for(lambda: kernel_routes(lab) == V4 and "2001:db8:200::/48" in kernel_routes(lab, "-6"), timeout=60,
             what="globex back on both families")


def test_our_speaker_restart_keeps_acme_forwarding_towards_us(lab: Lab) -> None:
    """The restarting side: FRR keeps our announced prefix (stale) while our ExaBGP restarts."""
    wait_for(lambda: established(lab) == ALL, timeout=90, what="all sessions Established")
    wait_for(lambda: acme_has_ours(lab), timeout=30, what="acme has our 192.0.2.0/24")
    pid = show(lab, "status")["exabgp_processes"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # poll: acme never loses our prefix
        assert acme_has_ours(lab), "acme dropped our prefix while our speaker restarted"
        if show(lab, "status")["exabgp_processes"][0]["pid"] not in (None, pid) and established(lab) == ALL:
            break
        time.sleep(0.2)  # poll
    assert established(lab) == ALL
    assert acme_has_ours(lab)


def test_daemon_restart_with_sigterm_keeps_acme_forwarding_towards_us(lab: Lab) -> None:
    """``systemctl restart``: SIGTERM, then a new daemon. With graceful restart negotiated ExaBGP
    closes its sessions on SIGTERM without a Cease (measured 2026-11-30: this test passes whether the
    daemon's stop terminates ExaBGP or kills it), so acme keeps our prefix until our new session's
    End-of-RIB (checked directly: acme also has a static default through us), and pings from host1 to the PoP's
    192.0.2.1 keep being answered (the PoP's kernel routes stay while no daemon runs)."""
    import sys

    wait_for(lambda: established(lab) == ALL, timeout=90, what="all sessions Established")
    wait_for(lambda: acme_has_ours(lab), timeout=30, what="acme has our 192.0.2.0/24")
    run_in(lab, "pop", "ip", "addr", "replace", "192.0.2.1/32", "dev", "lo")
    ping = pinger(lab, "host1", "192.0.2.1", 20)
    time.sleep(1.0)  # poll: the stream runs before the restart
    pid = int((lab.state / "pop.pop-router.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
        assert acme_has_ours(lab), "acme dropped our prefix while our daemon stopped"
        assert time.monotonic() < deadline, "the daemon did not stop"
        time.sleep(0.1)  # poll
    assert acme_has_ours(lab), "acme dropped our prefix: the speakers said goodbye (Cease) on the way out"
    node = lab.topo.nodes["pop"]
    lab._background(node, [sys.executable, "-m", "routing.cli", "run", "-c", "/etc/pop-router/pop.yaml"], "pop-router")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # poll: acme never loses our prefix until everything is back
        assert acme_has_ours(lab), "acme dropped our prefix while our daemon restarted"
        try:
            if established(lab) == ALL:
                break
        except (AssertionError, json.JSONDecodeError):
            pass  # the new daemon's API is not up yet
        time.sleep(0.2)  # poll
    assert established(lab) == ALL
    sent, got = received(ping)
    assert got >= sent - 3, f"{sent - got} of {sent} pings towards our prefix lost during the daemon restart"
