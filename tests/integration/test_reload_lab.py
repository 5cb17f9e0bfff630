"""Live reconfiguration against real peers: FRR (acme), BIRD with BFD (globex), ExaBGP (mallory).

The lab is the default one (``containerlab/pop-basic.clab.yml``) with copies of three node files in
a temporary directory, so the test can change them: the PoP's ``pop.yaml`` (what SIGHUP re-reads),
acme's FRR config (two more prefixes, 198.51.101.0/24 and 198.51.102.0/24), and globex's BIRD config
(BFD on its IPv4 session). Each step reloads and checks that the preview listed what then happened,
and every step checks that the sessions it did not touch kept their uptime *on the peer's side*
(FRR's ``connectionsEstablished``/``connectionsDropped``, BIRD's protocol "since" time).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
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
    peers,
    pop_basic_copy,
    run_in,
    running,
    same_bird,
    show,
)
from .netns import wait_for

ACME_V4 = ("10.0.1.2", "10.0.2.2")
ACME = (*ACME_V4, "2001:db8:1::2", "2001:db8:2::2")
GLOBEX = ("10.0.3.2", "2001:db8:3::2")
MALLORY = ("10.0.4.2", "2001:db8:4::2")


def pop_config() -> dict[str, Any]:
    d = yaml.safe_load((CLAB / "pop-basic/pop/pop.yaml").read_text())
    d["fib"].pop("xdp", None)  # not what this test is about
    d["customers"][0]["import"]["prefixes"] = ["198.51.100.0/22 le 24", "2001:db8:100::/48"]
    d["customers"][1]["peers"][0]["bfd"] = {"tx_interval_ms": 100, "rx_interval_ms": 100}
    return d


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("reload")
    d.chmod(0o755)
    (d / "pop.yaml").write_text(yaml.safe_dump(pop_config()))
    frr = (CLAB / "pop-basic/acme/frr.conf").read_text().replace(
        "  network 198.51.100.0/24\n",
        "  network 198.51.100.0/24\n  network 198.51.101.0/24\n  network 198.51.102.0/24\n")
    (d / "frr.conf").write_text(frr)
    bird = (CLAB / "pop-basic/globex/bird.conf").read_text()
    bird = bird.replace("protocol device {}", "protocol device {}\nprotocol bfd { }")
    bird = bird.replace("  neighbor 10.0.3.1 as 65000;\n", "  neighbor 10.0.3.1 as 65000;\n  bfd on;\n")
    (d / "bird.conf").write_text(bird)
    own = {"pop-basic/pop/pop.yaml": d / "pop.yaml", "pop-basic/acme/frr.conf": d / "frr.conf",
           "pop-basic/globex/bird.conf": d / "bird.conf"}
    pop_basic_copy(d, "reload.clab.yml", own)
    return d


@pytest.fixture(scope="module")
def lab(files: Path) -> Iterator[Lab]:
    with running(files / "reload.clab.yml", "rld") as lab:
        yield lab


ALL = {*ACME, *GLOBEX, *MALLORY}
V4 = {"198.51.100.0/24": list(ACME_V4), "198.51.101.0/24": list(ACME_V4), "198.51.102.0/24": list(ACME_V4),
      "203.0.113.0/24": ["10.0.3.2"]}


@pytest.fixture(scope="module")
def converged(lab: Lab) -> Lab:
    wait_for(lambda: established(lab) == ALL, timeout=90, what="all sessions Established")
    wait_for(lambda: kernel_routes(lab) == V4, timeout=30, what="acme's three and globex's routes in the kernel")
    wait_for(lambda: [s["state"] for s in show(lab, "bfd")] == ["up"], timeout=30, what="BFD with BIRD up")
    return lab


# --- the peers' side of the sessions ----------------------------------------------------------------
def frr_sessions(lab: Lab) -> dict[str, tuple[str, int, int]]:
    """acme's view of each session with us: (state, connections established, dropped)."""
    out = json.loads(run_in(lab, "acme", "vtysh", "-c", "show bgp neighbors json").stdout)
    return {a: (n["bgpState"], n.get("connectionsEstablished", 0), n.get("connectionsDropped", 0))
            for a, n in out.items()}


def bird_bfd(lab: Lab) -> str:
    return run_in(lab, "globex", "birdc", "-s", "/run/bird/bird.ctl", "show", "bfd", "sessions").stdout


def peer_side(lab: Lab) -> dict[str, Any]:
    return {"frr": frr_sessions(lab), "bird": bird_protocols(lab)}


def reload(lab: Lab, config: dict[str, Any] | None, files: Path, *extra: str, name: str = "new.yaml",
           check: bool = True) -> Any:
    args = [sys.executable, "-m", "routing.cli", "reload", "--json", *extra]
    if config is not None:
        path = files / name
        path.write_text(yaml.safe_dump(config))
        args += ["-c", str(path)]
    p = run_in(lab, "pop", *args, check=check, timeout=200)
    return json.loads(p.stdout) if p.returncode == 0 else p


# --- the test: one sequence, each step on the state the previous one left ---------------------------
def test_live_reconfiguration(converged: Lab, files: Path) -> None:
    lab = converged
    base = pop_config()
    before = peer_side(lab)
    assert all(s[0] == "Established" for s in before["frr"].values()), before
    running = show_config(lab)

    # 1. Invalid file: refused with check's words, nothing changes.
    bad = copy.deepcopy(base)
    bad["customers"][0]["import"]["prefixes"] = ["198.51.100.0/33"]
    p = reload(lab, bad, files, name="bad.yaml", check=False)
    assert p.returncode == 1 and f"{files}/bad.yaml: customers[0].import.prefixes[0]: " in p.stderr, p.stderr
    assert show_config(lab) == running
    code = ("import json; from routing.cli import api_call; from pathlib import Path; "
            "print(json.dumps(api_call(Path('/run/pop-router/api.sock'), 'POST', '/config/reload?dry_run=1')))")
    assert json.loads(run_in(lab, "pop", sys.executable, "-c", code).stdout)[0] == 401  # needs the token

    # 2. Prefix list narrowed: dry run first (lists exactly the two routes, changes nothing) ...
    narrow = copy.deepcopy(base)
    narrow["customers"][0]["import"]["prefixes"] = ["198.51.100.0/24", "2001:db8:100::/48"]
    doc = reload(lab, narrow, files, "--dry-run")
    plan = doc["plan"]
    assert {p["peer"]: sorted((x["prefix"], x["reason"]) for x in p["first_rejected"]) for p in plan["prefixes"]} == {
        a: [("198.51.101.0/24", "not_in_prefix_list"), ("198.51.102.0/24", "not_in_prefix_list")] for a in ACME_V4}
    assert (plan["fib"]["removed"], plan["fib"]["added"], plan["fib"]["changed"]) == (2, 0, 0)
    assert sorted(x["prefix"] for x in plan["fib"]["first"]) == ["198.51.101.0/24", "198.51.102.0/24"]
    assert plan["sessions_reset"] == [] and doc["outcome"] == {"applied": False}
    assert kernel_routes(lab) == V4 and show_config(lab) == running
    diff = run_in(lab, "pop", sys.executable, "-m", "routing.cli", "config", "diff", "-c", str(files / "new.yaml"),
                  check=False)
    assert diff.returncode == 3 and "-    - 198.51.100.0/22 le 24" in diff.stdout, diff.stdout
    # ... then for real: the two routes leave the kernel, no session is touched.
    doc = reload(lab, narrow, files)
    assert doc["outcome"]["rib"]["became_rejected"] == 4 and doc["outcome"]["exabgp"] == "unchanged"
    narrowed = {k: v for k, v in V4.items() if k not in ("198.51.101.0/24", "198.51.102.0/24")}
    wait_for(lambda: kernel_routes(lab) == narrowed, timeout=20, what="the two routes gone from the kernel")
    assert_untouched(lab, before, "narrowing the prefix list")
    same = run_in(lab, "pop", sys.executable, "-m", "routing.cli", "config", "diff", "-c", str(files / "new.yaml"))
    assert "same as the running configuration" in same.stdout

    # 3. Remove a customer (mallory): its sessions and its one accepted route go; others untouched.
    no_mallory = copy.deepcopy(narrow)
    no_mallory["customers"] = [c for c in no_mallory["customers"] if c["name"] != "mallory"]
    doc = reload(lab, no_mallory, files)
    assert sorted(s["peer"] for s in doc["plan"]["sessions_removed"]) == sorted(MALLORY)
    assert doc["outcome"]["exabgp"].startswith(("reloaded", "restarted"))
    wait_for(lambda: "2001:db8:301::/48" not in kernel_routes(lab, "-6"), timeout=20, what="mallory's route gone")
    assert set(peers(lab)) == {*ACME, *GLOBEX}
    assert_untouched(lab, before, "removing mallory")

    # 4. Add a customer (mallory again): its sessions come up, its route returns; others untouched.
    doc = reload(lab, narrow, files)
    assert sorted(s["peer"] for s in doc["plan"]["sessions_added"]) == sorted(MALLORY)
    wait_for(lambda: established(lab) == ALL, timeout=60, what="mallory established again")
    wait_for(lambda: "2001:db8:301::/48" in kernel_routes(lab, "-6"), timeout=20, what="mallory's route back")
    assert_untouched(lab, before, "adding mallory")

    # 5. Retime globex's BFD session: a Poll Sequence, no flap on either side.
    bfd_before = show(lab, "bfd")[0]
    retimed = copy.deepcopy(narrow)
    retimed["customers"][1]["peers"][0]["bfd"] = {"tx_interval_ms": 200, "rx_interval_ms": 150}
    doc = reload(lab, retimed, files)
    assert [s["peer"] for s in doc["plan"]["bfd"]["retimed"]] == ["10.0.3.2"]
    wait_for(lambda: show(lab, "bfd")[0]["tx_interval_ms"] >= 200, timeout=20, what="BFD retimed")
    s = show(lab, "bfd")[0]
    assert s["state"] == "up" and s["flaps"] == bfd_before["flaps"]
    assert "Up" in bird_bfd(lab)
    assert_untouched(lab, before, "retiming BFD")

    # 6. Export change by SIGHUP (the daemon re-reads its own file): FRR receives, then loses, it.
    exported = copy.deepcopy(retimed)
    exported["router"]["announce"] = [*base["router"]["announce"], "198.18.0.0/24"]
    (files / "pop.yaml").write_text(yaml.safe_dump(exported))  # in place: the bind mount follows the inode
    os.kill(int((lab.state / "pop.pop-router.pid").read_text()), signal.SIGHUP)
    wait_for(lambda: "198.18.0.0/24" in frr_received(lab), timeout=30, what="FRR receives the new export")
    assert "198.18.0.0/24" in show_config(lab)["router"]["announce"]
    doc = reload(lab, retimed, files)
    assert {e["peer"]: e["withdraw"] for e in doc["plan"]["exports"] if e["withdraw"]} == {
        a: ["198.18.0.0/24"] for a in (*ACME_V4, "10.0.3.2", "10.0.4.2")}
    assert all(r["ok"] for r in doc["outcome"]["exports"])
    wait_for(lambda: "198.18.0.0/24" not in frr_received(lab), timeout=30, what="FRR loses the withdrawn export")
    assert_untouched(lab, before, "changing exports")
    log = (lab.state / "pop.pop-router.log").read_text()
    assert "reload of" in log and "198.18.0.0/24" in log


def assert_untouched(lab: Lab, before: dict[str, Any], what: str) -> None:
    """acme's and globex's sessions never dropped: the same connection counts and BIRD "since" times."""
    now = peer_side(lab)
    assert now["frr"] == before["frr"], f"{what}: FRR sessions changed: {before['frr']} -> {now['frr']}"
    assert same_bird(now["bird"], before["bird"]), f"{what}: BIRD sessions changed: {before['bird']} -> {now['bird']}"


def frr_received(lab: Lab) -> set[str]:
    out = json.loads(run_in(lab, "acme", "vtysh", "-c", "show bgp ipv4 unicast json").stdout)
    return set(out.get("routes", {}))


def show_config(lab: Lab) -> dict[str, Any]:
    code = ("import json; from routing.cli import api_call; from pathlib import Path; "
            "print(json.dumps(api_call(Path('/run/pop-router/api.sock'), 'GET', '/config')[1]))")
    return json.loads(run_in(lab, "pop", sys.executable, "-c", code).stdout)


def test_exabgp_reload_signal_touches_only_changed_neighbours(converged: Lab, files: Path) -> None:
    """The measurement behind ``Daemon.EXABGP_RELOAD = "signal"``: ExaBGP 5.0.15's SIGUSR1, repeated
    removal and addition of one customer's neighbours, and a hold-time change that must reset exactly
    one session. Untouched sessions keep their uptime on the FRR/BIRD side every time."""
    import time

    lab = converged
    cfg = pop_config()
    cfg["customers"][0]["import"]["prefixes"] = ["198.51.100.0/24", "2001:db8:100::/48"]
    cfg["customers"][1]["peers"][0]["bfd"] = {"tx_interval_ms": 200, "rx_interval_ms": 150}
    reload(lab, cfg, files)  # the state the previous test left, whatever the file says
    wait_for(lambda: established(lab) == ALL, timeout=60, what="all sessions Established")
    before = peer_side(lab)
    no_mallory = copy.deepcopy(cfg)
    no_mallory["customers"] = no_mallory["customers"][:2]
    back_s = []
    for _ in range(5):
        doc = reload(lab, no_mallory, files)
        assert doc["outcome"]["exabgp"] == "reloaded (SIGUSR1)"
        wait_for(lambda: set(peers(lab)) == {*ACME, *GLOBEX}, timeout=10, what="mallory removed")
        t0 = time.monotonic()
        reload(lab, cfg, files)
        wait_for(lambda: established(lab) == ALL, timeout=60, interval=0.05, what="mallory back")
        back_s.append(time.monotonic() - t0)
        assert_untouched(lab, before, "remove/add cycle")
    print(f"\nSIGUSR1 add of mallory's two neighbours -> Established: {[round(x, 2) for x in back_s]} s")
    # A hold-time change resets exactly that session (BIRD's pop6), nothing else.
    held = copy.deepcopy(cfg)
    held["customers"][1]["peers"][1]["hold_time_s"] = 20
    doc = reload(lab, held, files)
    assert [(s["peer"], s["reasons"]) for s in doc["plan"]["sessions_reset"]] == [
        ("2001:db8:3::2", ["hold time 30s -> 20s"])]
    wait_for(lambda: not same_bird({"pop6": bird_protocols(lab)["pop6"]}, {"pop6": before["bird"]["pop6"]}),
             timeout=30, what="pop6 re-opened")
    wait_for(lambda: established(lab) == ALL, timeout=60, what="pop6 Established again")
    now = peer_side(lab)
    assert now["frr"] == before["frr"] and same_bird({"pop4": now["bird"]["pop4"]}, {"pop4": before["bird"]["pop4"]}), \
        (before, now)
