"""The store backends the contract suite runs against: add one line per backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatch.store.memory import MemoryStore
from dispatch.store.sqlite import SqliteStore

# name → factory(tmp_path) returning an unopened store; ``durable`` backends are reopened.
BACKENDS: dict[str, Callable[[Path], Any]] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SqliteStore(str(tmp / "journal.db"), synchronous="NORMAL"),
}
DURABLE = {"sqlite"}
