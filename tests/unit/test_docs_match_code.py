"""Words that must stay true: the API's documented endpoints are its route table, and every metric
the README lists is one the daemon defines.

Both read the code's own declarations (the aiohttp router that :func:`routing.api.build_app` fills,
the registry :class:`routing.metrics.Metrics` fills); nothing is started and no behaviour is faked.
"""

from __future__ import annotations

import re
import types
from pathlib import Path

from routing import api
from routing.metrics import Metrics

ROOT = Path(__file__).parents[2]


def _documented_endpoints() -> set[tuple[str, str]]:
    """(method, path) of each line of the API module's ``Endpoints`` block, query strings dropped."""
    doc = api.__doc__ or ""
    block = doc[doc.index("Endpoints"):]
    return {(m, p.split("[", 1)[0]) for m, p in re.findall(r"^\s+(GET|POST|PUT|DELETE)\s+(\S+)", block, re.M)}


def test_documented_api_endpoints_equal_the_route_table() -> None:
    # build_app only declares routes: its handlers close over the views object and touch it per
    # request, so an empty stand-in is enough to read the table.
    app = api.build_app(types.SimpleNamespace())  # type: ignore[arg-type]
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    assert routes, "no routes declared"
    assert _documented_endpoints() == routes


def _readme_metrics() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Metrics"):]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return set(re.findall(r"^\|\s*`(pop_router_[a-z0-9_]+)`", section, re.M))


def test_every_metric_in_the_readme_is_exported() -> None:
    exported: set[str] = set()
    for family in Metrics().registry.collect():  # a fresh registry per Metrics: no global state
        exported.add(family.name)
        if family.type == "counter":  # prometheus_client names the family without the _total suffix
            exported.add(family.name + "_total")
    documented = _readme_metrics()
    assert len(documented) > 20, "the README's metrics table was not found"
    assert documented - exported == set()
