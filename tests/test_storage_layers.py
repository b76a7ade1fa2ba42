"""The storage tier imports in one direction: no module of it imports one that imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import alf_session

PACKAGE = Path(alf_session.__file__).parent
TIER = ("_base", "_memory", "_redis", "_objects", "_file", "_adapt", "_encrypted", "storage")


def imports_of(module: str) -> set[str]:
    """The tier modules ``module`` imports, at its top or inside functions alike."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            found.update(name for name in names if name in TIER)
    return found


def test_the_storage_tier_has_no_import_cycle() -> None:
    graph = {module: imports_of(module) for module in TIER}
    assert graph["_encrypted"] == {"_adapt", "_base"}  # 0.1: _encrypted <-> storage
    assert "storage" not in set().union(*(graph[m] for m in TIER if m != "storage"))

    def reaches(start: str, target: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt}))
            for nxt in graph[start]
        )

    assert [m for m in TIER if reaches(m, m)] == []
