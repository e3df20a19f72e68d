"""The core is pure: no I/O, event loop or clock imports (house style)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dispatch.core

FORBIDDEN = {"asyncio", "aiohttp", "sqlite3", "redis", "time", "socket", "threading",
             "aiosqlite", "datetime", "os"}
FILES = sorted(Path(dispatch.core.__file__).parent.glob("*.py"))


def test_the_core_modules_are_found() -> None:
    """An empty FILES would skip the check below instead of failing it."""
    names = {p.name for p in FILES}
    assert {"engine.py", "lifecycle.py", "policy.py", "records.py"} <= names, names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_core_module_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & FORBIDDEN, f"{path.name} imports {names & FORBIDDEN}"
