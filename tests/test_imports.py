"""The shape of the code (issue 12): no import cycle in ``dispatch/`` or ``geo/``, and no module
(there or in ``bench/``) reads or writes another module's underscore attributes.

Both checks read the source with ``ast``; nothing is imported. An import counts wherever it
is written (a function-level import still ties the two modules together), except under
``if TYPE_CHECKING:``, which never runs. ``from a import b`` is an edge to ``a.b`` when that
is a module, else to ``a``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dispatch", "geo")
# the benchmarks measure the product through its public API too
PRIVATE_CHECKED = (*PACKAGES, "bench")

# Underscore names that are public API of the standard library (namedtuple, os, sys).
PUBLIC_UNDERSCORE = frozenset(("_replace", "_asdict", "_fields", "_field_defaults", "_make",
                               "_exit", "_getframe"))
# Deliberate reads of a third-party private attribute, each with its reason.
ALLOWED = {
    # shapely's STRtree wraps a C tree: the per-call wrapper costs more than the query on
    # routing's hot path; getattr with a fallback to the public query if it ever goes.
    ("geo.router", "_tree"),
}


def modules(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of the packages: dotted name → file (a package is its __init__)."""
    out = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module of the packages, line) for each import in the module."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.append((sub if sub in known else mod, node.lineno))
    edges = []
    for target, line in out:
        while target and target not in known:  # ``import a.b.c`` of a package: nearest module
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.append((target, line))
    return edges


def components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(comps)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Per component, one shortest cycle through its smallest module."""
    return [_one_cycle(graph, set(c), c[0]) for c in components(graph)]


def _one_cycle(graph: dict[str, dict[str, int]], comp: set[str], start: str) -> list[str]:
    # breadth-first from start back to start inside the component: a shortest cycle
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w in comp and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]  # pragma: no cover - a component always has a cycle through each member


def import_graph() -> dict[str, dict[str, int]]:
    known = modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        graph[name] = {}
        for target, line in imports(name, path, known):
            graph[name].setdefault(target, line)
    return graph


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    lines = []
    for cyc, comp in zip(found, components(graph), strict=True):
        steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cyc, cyc[1:], strict=False)]
        lines.append(" → ".join([*steps, cyc[-1]]) + f"   [all tied: {', '.join(comp)}]")
    assert not found, "import cycles:\n  " + "\n  ".join(lines)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e": 5}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_imports_resolve_relative_and_from_forms(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    (pkg / "q").mkdir(parents=True)
    src = ("from typing import TYPE_CHECKING\nfrom . import r\nfrom .q import s\n"
           "import p.q\nif TYPE_CHECKING:\n    from p import t\n"
           "def f():\n    from p.q.s import thing\n")
    (pkg / "m.py").write_text(src)
    known = {"p": pkg / "__init__.py", "p.m": pkg / "m.py", "p.r": pkg / "r.py",
             "p.q": pkg / "q" / "__init__.py", "p.q.s": pkg / "q" / "s.py", "p.t": pkg / "t.py"}
    assert imports("p.m", pkg / "m.py", known) == [
        ("p.q.s", 8), ("p.q", 4), ("p.q.s", 3), ("p.r", 2)]


# -- underscore attributes ------------------------------------------------------------------

def _own_names(tree: ast.AST) -> set[str]:
    """Underscore names this module defines: functions, classes, module and class names,
    ``self._x = …`` / ``cls._x = …`` and ``__slots__`` entries."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and _is_self(node.value)):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif (isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)):
            out.update(c.value for c in ast.walk(node.value)
                       if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return {n for n in out if n.startswith("_")}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__") and name not in PUBLIC_UNDERSCORE


def _is_self(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id in ("self", "cls")) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == "super")


def private_reaches(name: str, path: Path) -> list[str]:
    """``X._name`` (and ``getattr``/``setattr``/``hasattr``/``delattr`` with ``"_name"``)
    where X is not self/cls/super() and ``_name`` is no name this module defines itself, or
    X is a module it imported (another module's private function or constant)."""
    tree = ast.parse(path.read_text(), str(path))
    own = _own_names(tree)
    imported_modules = {
        (a.asname or a.name).split(".")[0] for n in ast.walk(tree)
        if isinstance(n, ast.Import) for a in n.names}
    imported_modules |= {
        a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        for a in n.names}
    out = []
    for node in ast.walk(tree):
        target: ast.expr | None = None
        attr = ""
        if isinstance(node, ast.Attribute):
            target, attr = node.value, node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str)):
            target, attr = node.args[0], node.args[1].value
        if target is None or not _private(attr) or _is_self(target):
            continue
        if (name, attr) in ALLOWED:
            continue
        via_module = isinstance(target, ast.Name) and target.id in imported_modules
        if attr in own and not via_module:
            continue  # its own private name on another instance of its own class
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        out.append(f"{where}:{node.lineno}: {ast.unparse(target)}.{attr}")
    return out


def test_no_module_touches_anothers_private_attributes() -> None:
    found = [hit for name, path in modules(PRIVATE_CHECKED).items()
             for hit in private_reaches(name, path)]
    assert not found, "private attributes of another module:\n  " + "\n  ".join(found)


def test_the_private_check_sees_reads_writes_and_getattr(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import os\nimport other\n\nclass A:\n    def __init__(self):\n        self._mine = 1\n"
        "    def same(self, b: 'A'):\n        return b._mine + self._mine\n"
        "    def bad(self, x):\n        x._theirs = 2\n        getattr(x, '_watch', None)\n"
        "        other._helper()\n        os._exit(0)\n        return super()._p\n")
    hits = sorted(h.split(": ", 1)[1] for h in private_reaches("m", tmp_path / "m.py"))
    assert hits == ["other._helper", "x._theirs", "x._watch"]
