"""RPKI origin validation end to end: real stayrtr, a real BIRD customer, the whole daemon.

The lab is ``containerlab/pop-rpki.clab.yml`` with its VRP directory copied to a temporary one the
test edits (stayrtr re-reads the file every second and sends a Serial Notify; the daemon's RTR client
fetches the change, the routing core re-validates). globex (BIRD) announces 203.0.113.0/24 and
198.51.100.0/24; the VRP file first says the second belongs to AS64999: it is rejected with
``rpki_invalid`` and not in the kernel, while the first is ``valid`` and installed. Then the file
gives it to globex's AS: it is installed, and the BGP session is the same one (the daemon's
established count, flaps and Established time, and BIRD's own "since" time, unchanged).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from labs.runner import Lab

from .lab import CLAB, bird_protocols, kernel_routes, metric_value, metrics, peers, running, same_bird, show
from .netns import wait_for

GLOBEX = "10.0.3.2"
LOW, HIGH = "203.0.113.0/24", "198.51.100.0/24"


def write_vrps(directory: Path, high_asn: int) -> None:
    doc = {"metadata": {"generated": int(time.time())},
           "roas": [{"prefix": LOW, "maxLength": 24, "asn": "AS4200000001", "ta": "lab"},
                    {"prefix": HIGH, "maxLength": 24, "asn": f"AS{high_asn}", "ta": "lab"}]}
    tmp = directory / "vrps.json.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(directory / "vrps.json")  # the directory is bound, so a rename is seen inside the node


@pytest.fixture(scope="module")
def vrp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rpki")
    d.chmod(0o755)
    vrps = d / "vrps"
    vrps.mkdir()
    write_vrps(vrps, 64999)
    topo = yaml.safe_load((CLAB / "pop-rpki.clab.yml").read_text())
    for name, node in topo["topology"]["nodes"].items():
        binds = []
        for b in node.get("binds", []):
            src, _, rest = b.partition(":")
            binds.append(f"{vrps if name == 'rpki' else (CLAB / src).resolve()}:{rest}")
        node["binds"] = binds
    (d / "rpki.clab.yml").write_text(yaml.safe_dump(topo))
    return d


@pytest.fixture(scope="module")
def lab(vrp_dir: Path) -> Iterator[Lab]:
    if not shutil.which("stayrtr"):
        pytest.fail("stayrtr is not installed (apt-get install -y stayrtr)")
    with running(vrp_dir / "rpki.clab.yml", "rov") as lab:
        yield lab


def routes(lab: Lab, *flags: str) -> dict[str, dict]:
    return {r["prefix"]: r for r in show(lab, "routes", *flags) if r["peer"] == GLOBEX}


def test_invalid_rejected_then_valid_installed_without_session_reset(lab: Lab, vrp_dir: Path) -> None:
    wait_for(lambda: peers(lab)[GLOBEX]["state"] == "established", timeout=90, what="globex Established")
    rpki = wait_for(lambda: (r := show(lab, "rpki"))["caches"][0]["up"] and r["vrps"]["ipv4"] == 2 and r,
                    timeout=60, what="the stayrtr cache up with the two VRPs")
    assert rpki["caches"][0]["cache"] == "10.0.6.2:8282" and rpki["caches"][0]["serial"] is not None

    # Invalid (wrong origin AS): rejected with its state, never in the kernel; the valid one installed.
    rejected = wait_for(lambda: routes(lab, "--rejected").get(HIGH), timeout=30, what=f"{HIGH} rejected")
    assert (rejected["reason"], rejected["rpki"], rejected["detail"]) == ("rpki_invalid", "invalid",
                                                                          "origin AS 4200000001")
    wait_for(lambda: kernel_routes(lab) == {LOW: [GLOBEX]}, timeout=30, what=f"only {LOW} in the kernel")
    assert routes(lab)[LOW]["rpki"] == "valid" and HIGH not in routes(lab)
    scrape = metrics(lab)
    assert metric_value(scrape, "pop_router_rpki_routes", state="invalid") == 1
    assert metric_value(scrape, "pop_router_rpki_cache_up", cache="10.0.6.2:8282") == 1

    session = {k: peers(lab)[GLOBEX][k] for k in ("established_count", "flaps", "since_monotonic")}
    bird = bird_protocols(lab)
    serial = rpki["caches"][0]["serial"]

    # The VRP file now gives the prefix to globex's AS: re-validated, installed, same session.
    write_vrps(vrp_dir / "vrps", 4200000001)
    wait_for(lambda: kernel_routes(lab) == {LOW: [GLOBEX], HIGH: [GLOBEX]}, timeout=60,
             what=f"{HIGH} installed after the VRP change")
    assert routes(lab)[HIGH]["rpki"] == "valid" and HIGH not in routes(lab, "--rejected")
    assert show(lab, "rpki")["caches"][0]["serial"] != serial
    assert {k: peers(lab)[GLOBEX][k] for k in session} == session
    assert same_bird(bird, bird_protocols(lab)), (bird, bird_protocols(lab))
    assert metric_value(metrics(lab), "pop_router_rpki_routes", state="valid") == 2
