"""The systemd unit's capability set is enough for the daemon, and every capability in it is needed.

systemd cannot run in this container, so the unit is not started; instead its privileged
operations (tests/integration/privileged_ops.py) run as uid 0 with exactly the unit's
``CapabilityBoundingSet`` (``setpriv --bounding-set``), in a fresh namespace with a private bpffs.
SCHED_FIFO for BFD is granted by the unit's ``LimitRTPRIO=`` rather than CAP_SYS_NICE: checked
when this machine lets the test raise RLIMIT_RTPRIO (it needs CAP_SYS_RESOURCE), skipped otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import unique_prefix

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "ops" / "systemd" / "pop-router.service"
OPS = Path(__file__).with_name("privileged_ops.py")
NEEDS_NO_CAP = {"tcp_md5_key"}


def unit_caps() -> list[str]:
    for line in UNIT.read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            return line.partition("=")[2].split()
    raise AssertionError("no CapabilityBoundingSet in the unit")


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = unique_prefix("cap")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in ("link set lo up", "link add d0 type veth peer name d1", "link set d0 up", "link set d1 up",
                    "addr add 10.0.0.1/24 dev d0"):
            subprocess.run(["ip", "-n", name, *cmd.split()], check=True)
        yield name, tmp_path / "bpffs"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def run_ops(ns: tuple[str, Path], caps: list[str], rtprio: int | None = None) -> dict[str, str]:
    name, bpffs = ns
    bounding = ",".join(["-all", *("+" + c.removeprefix("CAP_").lower() for c in caps)])
    limit = f"prlimit --rtprio={rtprio} " if rtprio is not None else ""
    # The bpffs is mounted with full privileges first, as the unit's ExecStartPre=+ does.
    script = (f"mkdir -p {bpffs} && (mountpoint -q {bpffs} || mount -t bpf bpf {bpffs}) && "
              f"ip nexthop flush >/dev/null 2>&1; exec {limit}setpriv --bounding-set={bounding} --inh-caps=-all "
              f"-- {sys.executable} {OPS} {bpffs}")
    p = subprocess.run(["ip", "netns", "exec", name, "sh", "-c", script], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_unit_capabilities_are_enough(ns) -> None:
    got = run_ops(ns, unit_caps())
    failed = {k: v for k, v in got.items() if v != "ok" and k not in ("sched_fifo", "mount_bpffs")}
    assert not failed
    # Outside the set, on purpose: mounting a bpffs (ExecStartPre=+ does it) and SCHED_FIFO without
    # an RLIMIT_RTPRIO (LimitRTPRIO= grants it).
    assert "Operation not permitted" in got["mount_bpffs"]
    assert "Operation not permitted" in got["sched_fifo"]


@pytest.mark.parametrize("cap", unit_caps())
def test_each_capability_is_needed(ns, cap: str) -> None:
    got = run_ops(ns, [c for c in unit_caps() if c != cap])
    assert any(v != "ok" for k, v in got.items() if k not in ("sched_fifo", "mount_bpffs", *NEEDS_NO_CAP)), (
        f"nothing failed without {cap}: drop it from the unit"
    )


def test_limit_rtprio_grants_sched_fifo_without_cap_sys_nice(ns) -> None:
    if subprocess.run(["prlimit", "--rtprio=90", "true"], capture_output=True).returncode:
        pytest.skip("this machine cannot raise RLIMIT_RTPRIO (no CAP_SYS_RESOURCE): LimitRTPRIO= path unchecked")
    assert run_ops(ns, unit_caps(), rtprio=90)["sched_fifo"] == "ok"
