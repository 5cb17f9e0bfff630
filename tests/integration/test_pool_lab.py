"""A pool of two ExaBGP processes against real peers: killing one flaps only its own customers.

The default lab (``containerlab/pop-basic.clab.yml``: acme on FRR, globex on BIRD, mallory on ExaBGP)
with a copy of the PoP's ``pop.yaml`` that sets ``exabgp.processes: 2``. Rendezvous hashing puts acme
on ``exabgp-1`` and globex and mallory on ``exabgp-0`` (checked below, so a change of the hash shows up
here first). Each process in turn is SIGKILLed — the PID comes from ``show status``, so it is one this
test's daemon started — and, until it is back:

- every accepted route stays in the kernel (the dead process's sessions are stale, not flushed);
- the other process's customers do not flap, seen from *their* side: FRR's ``connectionsEstablished``
  / ``connectionsDropped`` and BIRD's protocol "since" time are unchanged;
- the killed process restarts (same index, new PID, one more restart) and its sessions come back.

Then a reload changes the count (2 -> 3 -> 2): only the customer that moves (mallory) is reset.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labs.runner import Lab

from .lab import (
    CLAB,
    bird_protocols,
    established,
    kernel_routes,
    metric_value,
    metrics,
    peers,
    pop_basic_copy,
    run_in,
    running,
    same_bird,
    show,
)
from .netns import wait_for

ACME = {"10.0.1.2", "2001:db8:1::2", "10.0.2.2", "2001:db8:2::2"}
GLOBEX = {"10.0.3.2", "2001:db8:3::2"}
MALLORY = {"10.0.4.2", "2001:db8:4::2"}
ALL = ACME | GLOBEX | MALLORY
V4 = {"198.51.100.0/24": ["10.0.1.2", "10.0.2.2"], "203.0.113.0/24": ["10.0.3.2"]}
V6 = {"2001:db8:100::/48": ["2001:db8:1::2", "2001:db8:2::2"], "2001:db8:200::/48": ["2001:db8:3::2"],
      "2001:db8:301::/48": ["2001:db8:4::2"]}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pool")
    d.chmod(0o755)
    pop = yaml.safe_load((CLAB / "pop-basic/pop/pop.yaml").read_text())
    pop["fib"].pop("xdp", None)  # not what this test is about (and its maps are pinned machine-wide)
    pop.setdefault("exabgp", {})["processes"] = 2
    (d / "pop.yaml").write_text(yaml.safe_dump(pop))
    pop_basic_copy(d, "pool.clab.yml", {"pop-basic/pop/pop.yaml": d / "pop.yaml"})
    return d


@pytest.fixture(scope="module")
def lab(files: Path) -> Iterator[Lab]:
    with running(files / "pool.clab.yml", "pool") as lab:
        yield lab


@pytest.fixture(scope="module")
def converged(lab: Lab) -> Lab:
    wait_for(lambda: established(lab) == ALL, timeout=90, what="all sessions Established")
    wait_for(lambda: kernel_routes(lab) == V4 and kernel_routes(lab, "-6") == V6, timeout=30,
             what="accepted routes in the kernel")
    return lab


def frr_sessions(lab: Lab) -> dict[str, tuple[str, int, int]]:
    """acme's view of each session with us: (state, connections established, dropped)."""
    out = json.loads(run_in(lab, "acme", "vtysh", "-c", "show bgp neighbors json").stdout)
    return {a: (n["bgpState"], n.get("connectionsEstablished", 0), n.get("connectionsDropped", 0))
            for a, n in out.items()}


def processes(lab: Lab) -> list[dict[str, Any]]:
    return show(lab, "status")["exabgp_processes"]


def test_customers_spread_over_two_processes(converged: Lab) -> None:
    ps = processes(converged)
    assert [p["name"] for p in ps] == ["exabgp-0", "exabgp-1"]
    assert set(ps[0]["peers"]) == GLOBEX | MALLORY and set(ps[1]["peers"]) == ACME
    assert ps[0]["pid"] != ps[1]["pid"]
    for p in ps:
        assert p["restarts"] == 0 and p["cpu_s"] >= 0 and p["uptime_s"] >= 0
        # Each process runs its own relay, on its own socket.
        children = Path(f"/proc/{p['pid']}/task/{p['pid']}/children").read_text().split()
        cmdlines = [Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ") for c in children]
        assert any(b"routing/exabgp/bridge.py" in c and f"{p['name']}.sock".encode() in c for c in cmdlines)
    m = metrics(converged)
    assert metric_value(m, "pop_router_child_up", child="exabgp-0") == 1.0
    assert metric_value(m, "pop_router_child_up", child="exabgp-1") == 1.0


@pytest.mark.parametrize(("index", "victims"), [(1, ACME), (0, GLOBEX | MALLORY)])
def test_killing_one_process_flaps_only_its_customers(converged: Lab, index: int, victims: set[str]) -> None:
    wait_for(lambda: established(converged) == ALL, timeout=60, what="all sessions Established")
    all_before = processes(converged)
    before, other_before = all_before[index], all_before[1 - index]
    ours = peers(converged)
    frr, bird = frr_sessions(converged), bird_protocols(converged)
    os.kill(before["pid"], signal.SIGKILL)
    # Until the process is back with its sessions, the kernel keeps every route (poll all the way).
    deadline = time.monotonic() + 90
    back = saw_down = False
    while time.monotonic() < deadline:
        assert kernel_routes(converged) == V4
        assert kernel_routes(converged, "-6") == V6
        now = peers(converged)
        saw_down = saw_down or any(now[a]["state"] != "established" for a in victims)
        for a in ALL - victims:  # the other process's sessions never leave Established
            assert now[a]["state"] == "established", (a, now[a])
            assert now[a]["established_count"] == ours[a]["established_count"]
        st = processes(converged)[index]
        if (st["restarts"] == before["restarts"] + 1 and st["pid"] not in (None, before["pid"])
                and all(now[a]["state"] == "established" and now[a]["stale"] == 0 for a in victims)):
            back = True
            break
        time.sleep(0.2)  # poll
    assert back, "the killed process did not come back with its sessions"
    assert saw_down
    now = peers(converged)
    for a in victims:
        assert now[a]["established_count"] == ours[a]["established_count"] + 1
    for a in ALL - victims:
        assert now[a]["established_count"] == ours[a]["established_count"] and now[a]["flaps"] == ours[a]["flaps"]
    # The peers' side: the untouched customers' sessions kept their uptime.
    frr_after, bird_after = frr_sessions(converged), bird_protocols(converged)
    if victims == ACME:
        assert same_bird(bird_after, bird)
        wait_for(lambda: all(s[0] == "Established" for s in frr_sessions(converged).values()), timeout=30,
                 what="FRR sessions back")
        assert all(frr_sessions(converged)[a][1] == frr[a][1] + 1 for a in frr)
    else:
        assert frr_after == frr
        assert all(v.startswith("up") for v in bird_after.values())
        assert all(not same_bird({k: bird_after[k]}, {k: bird[k]}) for k in bird)  # globex's sessions did flap
    other = processes(converged)[1 - index]
    assert (other["pid"], other["restarts"]) == (other_before["pid"], other_before["restarts"])
    m = metrics(converged)
    assert metric_value(m, "pop_router_child_restarts_total", child=f"exabgp-{index}") == before["restarts"] + 1
    assert metric_value(m, "pop_router_child_restarts_total", child=f"exabgp-{1 - index}") == other_before["restarts"]
    assert kernel_routes(converged) == V4 and kernel_routes(converged, "-6") == V6


def reload_processes(lab: Lab, files: Path, processes: int) -> dict[str, Any]:
    import sys

    pop = yaml.safe_load((files / "pop.yaml").read_text())
    pop["exabgp"]["processes"] = processes
    path = files / f"pop-{processes}.yaml"
    path.write_text(yaml.safe_dump(pop))
    p = run_in(lab, "pop", sys.executable, "-m", "routing.cli", "reload", "--json", "-c", str(path), timeout=200)
    return json.loads(p.stdout)


def test_reload_changing_the_count_moves_only_the_moved_customer(converged: Lab, files: Path) -> None:
    """2 -> 3 processes moves mallory (exabgp-0 -> exabgp-2): exabgp-0 drops its neighbours by
    SIGUSR1, exabgp-2 starts with them; acme (FRR) and globex (BIRD, on the signalled exabgp-0) keep
    their sessions, and mallory's route stays in the kernel while it moves. Back to 2 undoes it."""
    wait_for(lambda: established(converged) == ALL, timeout=60, what="all sessions Established")
    for count, src, dst in ((3, 0, 2), (2, 2, 0)):
        ours, frr, bird = peers(converged), frr_sessions(converged), bird_protocols(converged)
        doc = reload_processes(converged, files, count)
        plan, outcome = doc["plan"], doc["outcome"]
        assert {s["peer"] for s in plan["sessions_reset"]} == MALLORY
        assert all(f"moved from exabgp-{src} to exabgp-{dst}" in s["reasons"][0] for s in plan["sessions_reset"])
        assert "exabgp" not in plan["needs_restart"]
        assert plan["exabgp_processes_changed"] == sorted([f"exabgp-{src}", f"exabgp-{dst}"])
        if count == 3:
            assert outcome["exabgp_processes"] == {"exabgp-0": "reloaded (SIGUSR1)", "exabgp-2": "started"}
        else:
            assert outcome["exabgp_processes"] == {"exabgp-2": "stopped (its customers moved to other processes)",
                                                   "exabgp-0": "reloaded (SIGUSR1)"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert kernel_routes(converged, "-6") == V6  # mallory's route too, stale while it moves
            now = peers(converged)
            if all(now[a]["state"] == "established" and now[a]["stale"] == 0
                   and now[a]["established_count"] > ours[a]["established_count"] for a in MALLORY):
                break
            time.sleep(0.2)  # poll
        now = peers(converged)
        assert all(now[a]["established_count"] == ours[a]["established_count"] + 1 for a in MALLORY)
        for a in ACME | GLOBEX:
            assert now[a]["established_count"] == ours[a]["established_count"] and now[a]["state"] == "established"
        assert frr_sessions(converged) == frr and same_bird(bird_protocols(converged), bird)
        ps = processes(converged)
        assert [p["name"] for p in ps] == [f"exabgp-{i}" for i in range(count)]
        assert set(ps[dst]["peers"]) >= MALLORY
        if src < count:
            assert not set(ps[src]["peers"]) & MALLORY
    assert kernel_routes(converged) == V4 and kernel_routes(converged, "-6") == V6
