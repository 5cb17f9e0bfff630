"""The layering DESIGN.md promises, checked on the source (imports read with ``ast``, nothing run).

- ``common/`` is the leaf: it imports none of our packages;
- ``fib/``, ``bfd/`` and ``rpki/`` never import ``routing/`` (only ``common/`` and themselves);
- the API depends on the narrow views object, never on the daemon (no cycle through the daemon).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"common", "routing", "fib", "bfd", "rpki", "labs"}


def imports(path: Path) -> set[str]:
    """Top-level modules of ours that ``path`` imports (at any depth of the file, lazy ones too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m for m in out if m.split(".")[0] in OURS}


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(("package", "allowed"), [
    ("common", {"common"}),
    ("fib", {"common", "fib"}),
    ("bfd", {"common", "bfd"}),
    ("rpki", {"common", "rpki"}),
])
def test_lower_packages_never_import_routing(package: str, allowed: set[str]) -> None:
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in files(package) for m in imports(p)
           if m.split(".")[0] not in allowed}
    assert not bad, sorted(bad)


def test_the_api_does_not_import_the_daemon() -> None:
    assert not {m for m in imports(ROOT / "routing" / "api.py") if m == "routing.daemon"}
    assert not {m for m in imports(ROOT / "routing" / "views.py") if m == "routing.daemon"}


def test_the_checker_sees_imports() -> None:
    """A check that cannot fail is a defect: the walker finds routing's own imports of fib."""
    assert "fib.kernel" in imports(ROOT / "routing" / "daemon.py")
