"""The package's one rule: imports point one way (scripts → train → models, heads, data,
metrics → adapters). Read from the source, so a new import that breaks it fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vlmtl"
# what each subpackage may not import (besides itself, registry, paths and distributed, which any may use)
FORBIDDEN = {
    "adapters": {"models", "heads", "data", "metrics", "train", "cli", "registry", "paths", "distributed"},
    "data": {"models", "heads", "train", "cli"},
    "metrics": {"models", "heads", "data", "train", "cli"},
    "heads": {"models", "data", "train", "cli"},
    "models": {"train", "cli", "data", "metrics"},
    "train": {"cli"},
}


def vlmtl_imports(path: Path) -> set[str]:
    """The vlmtl subpackages a module imports (absolute ``vlmtl.x`` imports; relative ones stay inside)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vlmtl" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("subpackage", sorted(FORBIDDEN))
def test_imports_point_one_way(subpackage):
    wrong = {}
    for path in sorted((PACKAGE / subpackage).rglob("*.py")):
        bad = vlmtl_imports(path) & FORBIDDEN[subpackage]
        if bad:
            wrong[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not wrong, f"imports against the layering: {wrong}"


def test_the_check_sees_imports():
    assert vlmtl_imports(PACKAGE / "train" / "engine.py") >= {"adapters"}
