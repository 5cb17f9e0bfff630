"""Helpers to drive a running lab from tests: run commands in nodes, read the daemon's JSON."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from labs.runner import Lab
from labs.topology import load_topology

from .netns import resolve_routes, unique_prefix

CLAB = Path(__file__).resolve().parents[2] / "containerlab"


@contextlib.contextmanager
def running(topology: Path, prefix: str) -> Iterator[Lab]:
    """The lab of ``topology`` up on namespaces named with a unique ``prefix``; always taken down."""
    lab = Lab(load_topology(topology), unique_prefix(prefix) + "-")
    try:
        lab.up(log=lambda *_: None)
        yield lab
    finally:
        lab.down()


def pop_basic_copy(dest: Path, name: str, own: dict[str, Path]) -> Path:
    """``containerlab/pop-basic.clab.yml`` written to ``dest/name`` with the binds whose source is a
    key of ``own`` (as written in the topology, e.g. ``pop-basic/pop/pop.yaml``) pointing at this
    test's files instead; every other bind keeps the repository's file."""
    topo = yaml.safe_load((CLAB / "pop-basic.clab.yml").read_text())
    for node in topo["topology"]["nodes"].values():
        binds = []
        for b in node.get("binds", []):
            src, _, rest = b.partition(":")
            binds.append(f"{own.get(src, (CLAB / src).resolve())}:{rest}")
        if binds:
            node["binds"] = binds
    (dest / name).write_text(yaml.safe_dump(topo))
    return dest / name


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


def established(lab: Lab) -> set[str]:
    """Addresses of the sessions the daemon has Established."""
    return {a for a, p in peers(lab).items() if p["state"] == "established"}


def kernel_routes(lab: Lab, family: str = "-4", proto: str = "200") -> dict[str, list[str]]:
    out = json.loads(run_in(lab, "pop", "ip", "-json", family, "route", "show", "proto", proto).stdout or "[]")
    nhs = json.loads(run_in(lab, "pop", "ip", "-json", "nexthop", "show").stdout or "[]")
    return resolve_routes(out, nhs)


def metrics(lab: Lab) -> str:
    """A scrape of the PoP, from inside its namespace, at the ``metrics.listen`` its pop.yaml sets."""
    b = lab.topo.nodes["pop"].bind_for(".yaml", ".yml")
    listen = (yaml.safe_load(b.source.read_text()).get("metrics") or {}).get("listen", "127.0.0.1:9324") \
        if b else "127.0.0.1:9324"
    code = f"import urllib.request;print(urllib.request.urlopen('http://{listen}/metrics').read().decode())"
    return run_in(lab, "pop", sys.executable, "-c", code).stdout


def prometheus(lab: Lab, path: str) -> Any:
    """GET the lab's Prometheus HTTP API (``/api/v1/...``) from inside its node; the ``data`` part."""
    code = ("import urllib.request,sys;"
            f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9090{path}').read().decode())")
    doc = json.loads(run_in(lab, "prometheus", sys.executable, "-c", code).stdout)
    assert doc.get("status") == "success", doc
    return doc["data"]


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def bird_protocols(lab: Lab, node: str = "globex") -> dict[str, str]:
    """A BIRD node's BGP protocols: name -> "state since-time info" (the time changes when the session
    flaps; BIRD prints it to the millisecond from two clocks, so the same instant can read 1 ms apart
    from one call to the next: compare with :func:`same_bird`)."""
    out = run_in(lab, node, "birdc", "-s", "/run/bird/bird.ctl", "show", "protocols").stdout
    rows = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 6 and f[1] == "BGP":
            rows[f[0]] = f"{f[3]} {f[4]} {f[5]}"
    return rows


def same_bird(a: dict[str, str], b: dict[str, str]) -> bool:
    """The same sessions in the same states since the same instant, give or take BIRD's 1 ms jitter."""
    def parts(v: str) -> tuple[str, float, str]:
        state, since, info = v.split(" ", 2)
        h, m, sec = since.split(":") if since.count(":") == 2 else ("0", "0", "0")
        return state, int(h) * 3600 + int(m) * 60 + float(sec), info

    if a.keys() != b.keys():
        return False
    for k in a:
        (sa, ta, ia), (sb, tb, ib) = parts(a[k]), parts(b[k])
        if sa != sb or ia != ib or abs(ta - tb) > 0.005:
            return False
    return True
