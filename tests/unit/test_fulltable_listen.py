"""benchmarks/fulltable.py's sessions case: every feeder session listens on its own address.

With one wildcard listener BIRD 2.0.12's backlog of 8 is shared by all 1,000 sessions; its accept
queue overflows when ExaBGP connects them all within a second and the last 20-40 sessions come up
9 at a time on TCP's retransmission backoff (30-65 s instead of ~6 s). See ``STRICT_BIND``.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def fulltable():
    spec = importlib.util.spec_from_file_location("fulltable_under_test", ROOT / "benchmarks" / "fulltable.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path[:] = path
        sys.modules.pop(spec.name, None)


def bgp_lines(conf: str) -> list[str]:
    return [ln for ln in conf.splitlines() if ln.startswith("protocol bgp ")]


@pytest.mark.parametrize("passive", [False, True])
def test_feeder_sessions_listen_each_on_their_own_address(fulltable, passive):
    lines = bgp_lines(fulltable.feeder_sessions_conf(5, passive=passive))
    assert len(lines) == 5
    assert all("strict bind on;" in ln for ln in lines)


def test_bird_as_the_pop_keeps_one_listener(fulltable):
    """A real PoP listens once; its idle CPU is a reference figure (see STRICT_BIND)."""
    lines = bgp_lines(fulltable.bird_pop_sessions_conf(5, hold_s=9))
    assert len(lines) == 5
    assert not any("strict bind" in ln for ln in lines)


def test_wildcard_listen_reproduces_birds_default(fulltable):
    conf = fulltable.feeder_sessions_conf(3, passive=True, wildcard_listen=True)
    assert not any("strict bind" in ln for ln in bgp_lines(conf))


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD is not installed")
@pytest.mark.parametrize("which", ["feeder", "feeder-passive", "pop"])
def test_bird_parses_the_sessions_configurations(fulltable, tmp_path, which):
    conf = {"feeder": lambda: fulltable.feeder_sessions_conf(3, hold_s=9),
            "feeder-passive": lambda: fulltable.feeder_sessions_conf(3, passive=True),
            "pop": lambda: fulltable.bird_pop_sessions_conf(3)}[which]()
    path = tmp_path / "bird.conf"
    path.write_text(conf)
    done = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
