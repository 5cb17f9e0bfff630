"""What the daemon exports, and which metric names a PromQL expression uses.

The alert rules and the Grafana dashboard are checked against the scrape of a fresh
:class:`routing.metrics.Metrics`, so a renamed metric fails a unit test instead of silently emptying
a NOC panel or muting an alert. Series names are derived from each family's type the way
prometheus_client names them: a counter ``x`` is scraped as ``x_total`` (and ``x_created``), a
histogram as ``x_bucket``/``x_sum``/``x_count``, a gauge as ``x``.
"""

from __future__ import annotations

import re

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from routing.metrics import Metrics

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

# Everything in PromQL that looks like an identifier but is not a metric name.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
    "inf", "nan", "atan2",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?")
#: Grafana template queries: ``label_values(metric{...}, label)`` or ``label_values(label)``.
_LABEL_VALUES = re.compile(r"\s*label_values\((?:(?P<query>.*),)?\s*\w+\s*\)\s*", re.S)
_NUMBER_UNIT = re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y|e[+-]?\d+)?\b")


def exported_series() -> set[str]:
    """Every series name a scrape of the daemon can contain."""
    text = generate_latest(Metrics().registry).decode()
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.update(fam.name + suffix for suffix in _SUFFIXES[fam.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels and variables removed)."""
    if m := _LABEL_VALUES.fullmatch(expr):
        expr = m["query"] or ""
    e = _GRAFANA_VARS.sub("1m", expr)
    e = _STRINGS.sub('""', e)
    e = _MATCHERS.sub("", e)
    e = _RANGES.sub("", e)
    e = _GROUPING.sub("", e)
    e = _NUMBER_UNIT.sub("", e)
    names = set()
    for m in _IDENT.finditer(e):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names
