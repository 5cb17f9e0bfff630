"""Helpers to drive a running lab from tests: run commands in nodes, read the daemon's JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from labs.runner import Lab

from .netns import resolve_routes


def run_in(lab: Lab, node: str, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run([*lab.enter(node), *argv], capture_output=True, text=True, timeout=timeout,
                       env=lab.node_env(lab.topo.nodes[node]))
    if check and p.returncode != 0:
        raise AssertionError(f"{node}: {' '.join(argv)} failed ({p.returncode}): {p.stderr or p.stdout}")
    return p


def show(lab: Lab, *what: str) -> Any:
    p = run_in(lab, "pop", sys.executable, "-m", "routing.cli", "show", *what, "--json")
    return json.loads(p.stdout)


def peers(lab: Lab) -> dict[str, dict]:
    return {p["peer"]: p for p in show(lab, "peers")}


def kernel_routes(lab: Lab, family: str = "-4", proto: str = "200") -> dict[str, list[str]]:
    out = json.loads(run_in(lab, "pop", "ip", "-json", family, "route", "show", "proto", proto).stdout or "[]")
    nhs = json.loads(run_in(lab, "pop", "ip", "-json", "nexthop", "show").stdout or "[]")
    return resolve_routes(out, nhs)


def metrics(lab: Lab) -> str:
    import urllib.request  # noqa: F401 - the request is made inside the pop namespace by python below

    code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9324/metrics').read().decode())"
    return run_in(lab, "pop", sys.executable, "-c", code).stdout


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None
