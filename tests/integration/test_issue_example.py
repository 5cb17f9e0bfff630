"""The issue's example configuration runs unchanged against a real peer (its `check` is in
tests/unit/test_cli.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.runner import Lab
from labs.topology import load_topology

from .lab import kernel_routes, peers, run_in
from .netns import unique_prefix, wait_for


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab(load_topology(Path(__file__).parent / "fixtures" / "issue-example.clab.yml"), unique_prefix("ex") + "-")
    try:
        lab.up(log=lambda *_: None)
        yield lab
    finally:
        lab.down()


def test_issue_example_runs_and_installs_what_policy_allows(lab: Lab) -> None:
    wait_for(lambda: all(p["state"] == "established" for p in peers(lab).values()), timeout=60,
             what="both sessions Established")
    wait_for(lambda: kernel_routes(lab) == {"203.0.113.0/24": ["10.0.1.2"], "198.51.101.0/24": ["10.0.1.2"]},
             timeout=30, what="allowed IPv4 routes installed")
    assert kernel_routes(lab, "-6") == {"2001:db8:100::/48": ["2001:db8:1::2"]}
    # 198.51.104.0/24 is outside "198.51.100.0/22 le 24": rejected, not installed.
    assert "198.51.104.0/24" not in kernel_routes(lab)
    # Our export reached the customer: BIRD holds 192.0.2.0/24 from AS 65000 with our next hop.
    out = run_in(lab, "acme", "birdc", "-s", "/run/bird/bird.ctl", "show", "route", "for", "192.0.2.0/24",
                 "all").stdout
    assert "192.0.2.0/24" in out and "BGP.as_path: 65000" in out and "BGP.next_hop: 10.0.1.1" in out
    out6 = run_in(lab, "acme", "birdc", "-s", "/run/bird/bird.ctl", "show", "route", "for", "2001:db8:ffff::/48",
                  "all").stdout
    assert "2001:db8:ffff::/48" in out6 and "BGP.as_path: 65000" in out6
