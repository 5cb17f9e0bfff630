"""Idle cost: ExaBGP's reactor timeout, generated from pop.yaml (issue 12, idle CPU)."""

from __future__ import annotations

from typing import Any

import pytest

from routing.config import ConfigError, parse_config
from routing.exabgp.conf import HOLD_FRACTION, environment, reactor_poll_s


def cfg(router_hold: int = 90, peer_holds: tuple[int | None, ...] = (None,), backbone_hold: int | None = None,
        **exabgp: Any) -> Any:
    doc: dict[str, Any] = {
        "router": {"asn": 65000, "router_id": "192.0.2.1", "hold_time_s": router_hold},
        "exabgp": exabgp,
        "customers": [{"name": "c1", "asn": 64512, "import": {"prefixes": ["198.51.100.0/22 le 24"]},
                       "peers": [{"address": f"10.0.1.{2 + i}", "local_address": "10.0.1.1",
                                  **({} if h is None else {"hold_time_s": h})}
                                 for i, h in enumerate(peer_holds)]}],
    }
    if backbone_hold is not None:
        doc["backbone"] = {"peers": [{"address": "10.9.0.1", "local_address": "10.9.0.2",
                                      "hold_time_s": backbone_hold}]}
    return parse_config(doc)


# --- ExaBGP's reactor timeout --------------------------------------------------------------------

def test_reactor_poll_default_and_environment() -> None:
    c = cfg()
    assert reactor_poll_s(c) == 0.25  # the lean reactor is on by default
    assert environment(c)["exabgp_reactor_speed"] == "25"  # ExaBGP sleeps speed / 100 s
    assert reactor_poll_s(cfg(lean_reactor=False)) == 0.1  # without it every wake-up walks every session
    assert reactor_poll_s(cfg(reactor_poll_s=0.5)) == 0.5


@pytest.mark.parametrize(("router_hold", "peer_holds", "backbone_hold", "want"), [
    (90, (None,), None, 1.0),
    (3, (None,), None, 0.3),            # keepalive every 1 s: late by at most 0.3 s
    (90, (None, 4), None, 0.4),         # one customer session's own hold time
    (90, (None,), 3, 0.3),              # a backbone session counts too
    (90, (9, 30), None, 0.9),
])
def test_reactor_poll_is_capped_by_the_shortest_hold_time(router_hold: int, peer_holds: tuple[int | None, ...],
                                                          backbone_hold: int | None, want: float) -> None:
    c = cfg(router_hold, peer_holds, backbone_hold, reactor_poll_s=1.0)
    assert reactor_poll_s(c) == pytest.approx(want)
    holds = [h or router_hold for h in peer_holds] + ([backbone_hold] if backbone_hold else [])
    assert reactor_poll_s(c) <= min(holds) * HOLD_FRACTION


def test_the_default_is_below_every_cap() -> None:
    """The shortest hold time allowed (3 s) caps at 0.3 s: neither default ever needs capping."""
    assert reactor_poll_s(cfg(3, (3,), 3)) == reactor_poll_s(cfg()) == 0.25
    assert reactor_poll_s(cfg(3, (3,), 3, lean_reactor=False)) == 0.1


def test_reactor_poll_setting_and_env_override() -> None:
    assert environment(cfg(reactor_poll_s=0.01))["exabgp_reactor_speed"] == "1"  # ExaBGP's own default
    assert environment(cfg(reactor_poll_s=0.25))["exabgp_reactor_speed"] == "25"
    # exabgp.env is applied last: an operator's explicit speed wins.
    assert environment(cfg(env={"exabgp.reactor.speed": "2.0"}))["exabgp_reactor_speed"] == "2.0"


@pytest.mark.parametrize("bad", [0.0, 0.001, 1.5])
def test_reactor_poll_range(bad: float) -> None:
    with pytest.raises(ConfigError):
        cfg(reactor_poll_s=bad)


def test_exabgp_reads_the_speed_we_write() -> None:
    """ExaBGP 5.0.15's own parser for the setting takes our text, and its reactor sleeps speed / 100 s."""
    pytest.importorskip("exabgp")
    from exabgp.environment.setup import CONFIGURATION

    read = CONFIGURATION["reactor"]["speed"]["read"]
    for poll in (0.01, 0.3, 0.5, 1.0):
        speed = read(environment(cfg(reactor_poll_s=poll))["exabgp_reactor_speed"])
        assert speed / 100 == pytest.approx(poll)


# --- PyPy's nursery ------------------------------------------------------------------------------

def test_pypy_nursery_default_setting_and_off() -> None:
    assert environment(cfg())["PYPY_GC_NURSERY"] == "4MB"
    assert environment(cfg())["MALLOC_MMAP_THRESHOLD_"] == "131072"  # for the relay ExaBGP starts
    assert environment(cfg(pypy_nursery_mb=None))["PYPY_GC_MAJOR_COLLECT"] == "1.3"
    assert environment(cfg(pypy_nursery_mb=16))["PYPY_GC_NURSERY"] == "16MB"
    assert "PYPY_GC_NURSERY" not in environment(cfg(pypy_nursery_mb=None))  # PyPy's own choice
    with pytest.raises(ConfigError, match="pypy_nursery_mb"):
        cfg(pypy_nursery_mb=0)


def test_pypy_takes_the_nursery_we_set() -> None:
    """The ExaBGP interpreter under PyPy, with our environment, holds ExaBGP's reactor imported in
    about 85 MB whatever cache size the CPU reports (~180 MB on a host reporting a 480 MiB L3 when
    PyPy sizes its nursery itself): the setting reaches PyPy and bounds it."""
    import subprocess
    import sys
    from pathlib import Path

    from routing.exabgp.speaker import script_python

    pypy_exabgp = Path(sys.executable).with_name("exabgp-pypy")
    python = script_python(pypy_exabgp) if pypy_exabgp.exists() else None
    if python is None:
        pytest.skip("no exabgp-pypy (Debian pypy3 + make deps)")
    probe = ("import exabgp.reactor.loop\n"
             "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])")
    env = {"PATH": "/usr/bin:/bin", **environment(cfg(pypy_nursery_mb=2))}
    rss_kb = int(subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, check=True,
                                timeout=60).stdout)
    assert rss_kb < 130 * 1024
