"""The NOC's Grafana dashboard: valid JSON whose every query selects metrics the daemon exports.

A panel querying a metric that was renamed shows "No data" forever without anyone noticing; here it
fails a unit test. The queries are also parsed by Prometheus itself (``promtool check rules`` on a
throwaway rule file), with Grafana's variables replaced by plain values.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.unit.exported import exported_series, metric_names

DASHBOARD = Path(__file__).parents[2] / "ops" / "grafana" / "pop-router.json"


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(d: dict) -> Iterator[dict]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def queries(d: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for p in panels(d):
        for t in p.get("targets", []):
            yield f"panel {p['title']!r} {t['refId']}", t["expr"]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            yield f"variable {v['name']}", q


def test_dashboard_is_valid_json_with_unique_ids() -> None:
    d = load()
    assert d["uid"] == "pop-router" and d["title"]
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids))
    assert {"instance", "customer", "datasource"} <= {v["name"] for v in d["templating"]["list"]}


def test_every_query_uses_exported_metrics_only() -> None:
    exported = exported_series()
    found: set[str] = set()
    for where, expr in queries(load()):
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by routing/metrics.py"
        found |= names
    # the list: sessions, prefixes per customer, BFD, FIB operations and failovers, XDP, restarts
    for needed in ("pop_router_bgp_session_up", "pop_router_bgp_prefixes_accepted", "pop_router_bfd_session_up",
                   "pop_router_fib_operations_total", "pop_router_fib_failover_seconds_count",
                   "pop_router_xdp_packets_total", "pop_router_child_restarts_total"):
        assert needed in found


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for p in panels(load()):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, p["title"]
        taken |= cells


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_prometheus_parses_every_panel_query(tmp_path: Path) -> None:
    rules = []
    for i, (_, expr) in enumerate(queries(load())):
        if expr.startswith("label_values("):
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr)
            if not m:
                continue
            expr = m[1]
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        expr = re.sub(r"\$\w+", ".*", expr)
        rules.append({"record": f"dashboard:query:{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
