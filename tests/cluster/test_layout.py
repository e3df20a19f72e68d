"""The runtime and its two coordinations: no import cycle, no reaching into each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
MODULES = {"dispatch.runtime": "dispatch/runtime.py", "dispatch.cluster": "dispatch/cluster.py",
           "dispatch.coordination": "dispatch/coordination.py"}


def imported(path: str) -> set[str]:
    """Every module named by an import in ``path`` (function-level ones too; not those under
    ``if TYPE_CHECKING:``)."""
    tree = ast.parse((ROOT / path).read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def test_no_import_cycle_between_runtime_and_its_coordinations() -> None:
    graph = {m: imported(p) & set(MODULES) - {m} for m, p in MODULES.items()}
    assert "dispatch.runtime" not in graph["dispatch.cluster"]
    assert "dispatch.runtime" not in graph["dispatch.coordination"]
    assert "dispatch.cluster" not in graph["dispatch.coordination"]

    def reaches(a: str, b: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {a})) for n in graph[a])
    assert not any(reaches(m, m) for m in MODULES)


def test_coordinations_touch_no_private_field_of_another_object() -> None:
    """``self._x`` is a module's own; ``other._x`` (``self.rt._wake`` and the like) is not."""
    found = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            own = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id in ("self", "cls")
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and not own):
                found.append(f"{m}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found
