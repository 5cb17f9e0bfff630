"""The systemd unit an operator installs: accepted by ``systemd-analyze verify`` and hardened.

``systemd-analyze verify`` parses the unit the way PID 1 would and checks that its commands exist
(the unit's /opt/pop-router paths are pointed at this checkout for that). It only *warns* about a
value it cannot parse, so any output at all fails the test. ``systemd-analyze security --offline``
scores the sandboxing without a running systemd (this container has none: the unit is not started
here; tests/integration/test_service_privileges.py runs its privileged operations under its
capability set instead).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "ops" / "systemd" / "pop-router.service"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def local_copy(tmp_path: Path) -> Path:
    if not (ROOT / ".venv" / "bin" / "pop-router").exists():
        pytest.skip("no .venv/bin/pop-router in this checkout (make deps)")
    path = tmp_path / "pop-router.service"
    path.write_text(UNIT.read_text().replace("/opt/pop-router", str(ROOT)))
    return path


@needs_analyze
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    r = subprocess.run(["systemd-analyze", "verify", str(local_copy(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(local_copy(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m[1]) <= 3.5, r.stdout


def test_least_privilege_and_restart_policy() -> None:
    s = settings()
    caps = set(s["CapabilityBoundingSet"][0].split())
    assert caps == {"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_BPF", "CAP_PERFMON"}
    assert set(s["AmbientCapabilities"][0].split()) == caps
    assert s["Restart"] == ["always"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["RuntimeDirectory"] == ["pop-router"] and s["RuntimeDirectoryMode"] == ["0700"]
    assert s["UMask"] == ["0077"] and s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"] and s["ProtectHome"] == ["yes"] and s["PrivateTmp"] == ["yes"]
    assert "LimitRTPRIO" in s  # the BFD process's SCHED_FIFO, without CAP_SYS_NICE
