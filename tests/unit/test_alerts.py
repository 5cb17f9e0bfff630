"""The NOC's alert rules: valid for Prometheus, unit-tested with promtool, built on exported metrics.

``promtool`` comes from Debian's ``prometheus`` package (the Makefile's DEBS); ``promtool test rules``
runs ``ops/prometheus/alerts_test.yml``, where every alert has a firing case with its rendered
annotations and a case where it must stay quiet.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.exported import exported_series, metric_names

OPS = Path(__file__).parents[2] / "ops" / "prometheus"
RULES = OPS / "alerts.yml"
RULE_TESTS = OPS / "alerts_test.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed: make debs"
)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=OPS)


@needs_promtool
def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", RULES.name)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_test_rules() -> None:
    r = promtool("test", "rules", RULE_TESTS.name)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rules_use_only_exported_metrics() -> None:
    exported = exported_series()
    unknown = {r["alert"]: sorted(metric_names(r["expr"]) - exported) for r in rules()}
    assert not {k: v for k, v in unknown.items() if v}, "not exported by routing/metrics.py"
    assert all(metric_names(r["expr"]) for r in rules())  # the parser found something in each


def test_every_alert_has_severity_and_runbook() -> None:
    for r in rules():
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert {"summary", "description", "runbook"} <= set(r["annotations"]), r["alert"]


def test_every_alert_fires_in_a_unit_test() -> None:
    fired = {
        case["alertname"]
        for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {r["alert"] for r in rules()} <= fired
