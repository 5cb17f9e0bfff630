"""The lean reactor pass against a real BIRD: sessions, keepalives, announcements and teardowns.

A two-node lab written here (``pop`` running pop-router, ``bird`` a BIRD 2 that is both a customer
and the backbone's route reflector), every session at hold time 3 s / keepalive 1 s, ExaBGP started
through ``routing/exabgp/lean_reactor.py`` (the default). Checked:

- the launcher patched ExaBGP and its lean passes outnumber its full sweeps (``show status``);
- both sessions stay up for 10 s and BIRD receives our keepalives on time (tcpdump in BIRD's
  namespace: every gap between two of our KEEPALIVEs on a session under 1.5 s, hold 3 s);
- a route the customer announces reaches the route reflector through pop-router's own path into
  ExaBGP's API (UPDATE in -> daemon -> ``announce`` command -> ExaBGP -> UPDATE out) in under 1 s,
  and its withdrawal too: neither waits for a sweep;
- an operator's reset (``pop-router reset``: ExaBGP's teardown) ends the session and it comes back.
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labs.bird import logging_to_file
from labs.runner import Lab

from .lab import bird_protocols, established, peers, run_in, running, same_bird, show
from .netns import wait_for

CUSTOMER, RR = "10.0.3.2", "10.0.20.2"
PROBE = "203.0.113.128/25"  # the customer's second route, switched on and off by the test

POP_YAML: dict[str, Any] = {
    "router": {"asn": 65000, "router_id": "192.0.2.1", "announce": ["192.0.2.0/24"], "hold_time_s": 3,
               "max_prefix_length_v4": 25},
    "api": {"socket": "/run/pop-router/api.sock"},
    "fib": {"protocol": 200, "stale_timeout_s": 60},
    # JSON UPDATEs: this lab checks the lean JSON encoder, which sessions the raw path does not take
    # (two-octet AS, ADD-PATH) still use; test_raw_updates_lab.py covers the default, raw.
    "exabgp": {"lean_reactor": True, "updates": "json"},
    "backbone": {"peers": [{"address": RR, "local_address": "10.0.20.1"}]},
    "customers": [{"name": "globex", "asn": 4200000001, "import": {"prefixes": ["203.0.113.0/24 le 25"]},
                   "peers": [{"address": CUSTOMER, "local_address": "10.0.3.1"}]}],
}

BIRD_CONF = """router id 10.255.0.3;
protocol device {}
protocol static s4 { ipv4; route 203.0.113.0/24 unreachable; }
protocol static probe { disabled; ipv4; route 203.0.113.128/25 unreachable; }
ipv4 table bbtab;
protocol bgp customer {
  local 10.0.3.2 as 4200000001; neighbor 10.0.3.1 as 65000;
  hold time 3; keepalive time 1; error wait time 1, 2;
  ipv4 { import all; export where source = RTS_STATIC; };
}
protocol bgp reflector {
  local 10.0.20.2 as 65000; neighbor 10.0.20.1 as 65000; rr client; direct;
  hold time 3; keepalive time 1; error wait time 1, 2;
  ipv4 { table bbtab; import all; export none; gateway direct; };
}
"""

TOPOLOGY = {
    "name": "lean",
    "topology": {
        "defaults": {"kind": "linux"},
        "nodes": {
            "pop": {"image": "pop-router:latest", "binds": ["pop.yaml:/etc/pop-router/pop.yaml"],
                    "exec": ["ip addr add 10.0.3.1/30 dev eth1", "ip addr add 10.0.20.1/30 dev eth2"]},
            "bird": {"image": "pop-router-bird:latest", "binds": ["bird.conf:/etc/bird/bird.conf"],
                     "exec": ["ip addr add 10.0.3.2/30 dev eth1", "ip addr add 10.0.20.2/30 dev eth2"]},
        },
        "links": [{"endpoints": ["pop:eth1", "bird:eth1"]}, {"endpoints": ["pop:eth2", "bird:eth2"]}],
    },
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    d = tmp_path_factory.mktemp("lean")
    d.chmod(0o755)
    (d / "pop.yaml").write_text(yaml.safe_dump(POP_YAML))
    (d / "bird.conf").write_text(logging_to_file(BIRD_CONF, Path("/run/bird/bird.log")))  # never syslog
    (d / "lean.clab.yml").write_text(yaml.safe_dump(TOPOLOGY))
    with running(d / "lean.clab.yml", "lean") as lab:
        wait_for(lambda: established(lab) == {CUSTOMER, RR}, timeout=60, what="both sessions Established")
        yield lab


def lean_report(lab: Lab) -> dict[str, Any]:
    (process,) = show(lab, "status")["exabgp_processes"]
    return process["lean_reactor"] or {}


def birdc(lab: Lab, *args: str) -> str:
    return run_in(lab, "bird", "birdc", "-s", "/run/bird/bird.ctl", *args).stdout


def at_rr(lab: Lab, prefix: str) -> bool:
    """The route reflector holds ``prefix`` (birdc exits 1, "Network not found", when it does not)."""
    out = run_in(lab, "bird", "birdc", "-s", "/run/bird/bird.ctl", "show", "route", "table", "bbtab", prefix,
                 check=False).stdout
    return prefix in out


def seconds_until(fn: Any, what: str, timeout: float = 5.0) -> float:
    """Poll ``fn`` every 10 ms; the seconds it took to become true."""
    start = time.monotonic()
    wait_for(fn, timeout=timeout, interval=0.01, what=what)
    return time.monotonic() - start


def test_lean_reactor_is_active(lab: Lab) -> None:
    def lean_passes() -> bool:
        r = lean_report(lab)
        return r.get("active") is True and r["passes"]["lean"] > r["passes"]["full"] > 0

    wait_for(lean_passes, timeout=15, interval=0.5, what="lean passes reported")
    r = lean_report(lab)
    assert r["sweep_s"] == 1.0 and r["exabgp"].startswith("5.0.")
    assert r["full_reasons"]["sweep"] > 0


def test_sessions_stay_up_and_keepalives_arrive_on_time(lab: Lab) -> None:
    flaps = {a: p["flaps"] for a, p in peers(lab).items()}
    bird = bird_protocols(lab, "bird")
    # Our KEEPALIVEs as BIRD receives them: TCP segments to it carrying exactly one 19-byte message.
    cap = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("bird"), "tcpdump", "-i", "any", "-Q", "in", "-nn", "-tt", "-q", "-l",
         "tcp src port 179 or tcp dst port 179", "and",
         "(ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) == 19"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # both sessions up through the whole window
            assert established(lab) == {CUSTOMER, RR}
            time.sleep(0.5)  # poll
    finally:
        cap.send_signal(signal.SIGINT)
        out, _ = cap.communicate(timeout=10)
    assert {a: p["flaps"] for a, p in peers(lab).items()} == flaps
    assert same_bird(bird_protocols(lab, "bird"), bird)  # same states since the same instants: no flap
    times: dict[str, list[float]] = {}
    for line in out.splitlines():
        m = re.match(r"^(\d+\.\d+) .*IP (\S+) > (\S+):", line)
        if m and m[2].rsplit(".", 1)[0] in ("10.0.3.1", "10.0.20.1"):
            times.setdefault(m[2] + ">" + m[3], []).append(float(m[1]))
    assert len(times) == 2, times.keys()
    for flow, ts in times.items():
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        print(f"{flow}: {len(ts)} keepalives in 10 s, gaps {min(gaps):.3f}-{max(gaps):.3f} s")
        assert len(ts) >= 8, (flow, ts)
        assert max(gaps) < 1.5, (flow, gaps)
    print(f"lean reactor: {lean_report(lab)}")


def test_an_announcement_crosses_without_waiting_for_a_sweep(lab: Lab) -> None:
    took = []
    for _ in range(3):
        birdc(lab, "enable", "probe")
        took.append(seconds_until(lambda: at_rr(lab, PROBE), "the customer's route at the route reflector"))
        birdc(lab, "disable", "probe")
        took.append(seconds_until(lambda: not at_rr(lab, PROBE), "its withdrawal at the route reflector"))
    print(f"customer -> pop-router -> route reflector: {', '.join(f'{t:.3f}' for t in took)} s")
    assert max(took) < 1.0, took
    assert lean_report(lab)["full_reasons"].get("api command", 0) > 0
    # The customer's UPDATEs went through the lean encoder, the announcements to the route reflector
    # in through the API reads the launcher gates (the report is rewritten every couple of seconds).
    wait_for(lambda: lean_report(lab)["update_json"].get("rendered", 0) >= 3, timeout=10,
             what="UPDATEs rendered by the lean encoder")
    r = lean_report(lab)
    assert r["update_json"]["lean"] is True
    assert r["api_reads"]["read"] > 0 and r["api_reads"]["skipped"] > 0, r["api_reads"]


def test_an_operator_reset_tears_the_session_down_and_it_returns(lab: Lab) -> None:
    before = peers(lab)[CUSTOMER]["flaps"]
    since = bird_protocols(lab, "bird")["customer"]
    p = run_in(lab, "pop", sys.executable, "-m", "routing.cli", "reset", CUSTOMER)
    assert p.returncode == 0, p.stderr
    wait_for(lambda: peers(lab)[CUSTOMER]["flaps"] == before + 1, timeout=10, what="the session torn down")
    wait_for(lambda: bird_protocols(lab, "bird")["customer"] != since, timeout=10, what="BIRD saw it end")
    wait_for(lambda: established(lab) == {CUSTOMER, RR}, timeout=30, what="the session back")
    assert lean_report(lab)["active"] is True
