"""dispatch/server imports in one direction (issue 12): no module of it imports, directly or
round a circle, one that imports it back. Every import statement counts, function-local ones
too; only imports under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "dispatch" / "server"
PACKAGE = "dispatch.server"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules of dispatch.server that ``path`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([PACKAGE, base] if base else [PACKAGE])
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        out.update(n for n in names if n in modules)
    return out


def graph() -> dict[str, set[str]]:
    files = {f"{PACKAGE}.{p.stem}": p for p in SERVER.glob("*.py") if p.stem != "__init__"}
    mods = set(files)
    return {m: imports_of(p, mods) - {m} for m, p in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Each circle of imports once, as the modules on it (depth-first, three colours)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    return found


def test_the_walk_sees_a_circle_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_walk_reads_the_server_modules():
    g = graph()
    assert {"dispatch.server.app", "dispatch.server.api", "dispatch.server.scope"} <= set(g)
    assert "dispatch.server.api" in g["dispatch.server.app"]


def test_dispatch_server_has_no_import_cycle():
    assert cycles(graph()) == []


def test_only_app_imports_the_route_modules():
    """The handlers' modules are leaves: build_app wires them, nothing else imports them."""
    routes = {f"{PACKAGE}.{m}" for m in ("api", "ws", "health", "openapi")}
    importers = {m for m, deps in graph().items() if deps & routes}
    assert importers == {f"{PACKAGE}.app"}
