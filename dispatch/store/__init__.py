"""Journal backends behind one protocol (``base.Store``): memory, SQLite (default), Redis."""

from __future__ import annotations

from typing import Any

from dispatch.store.base import Store


def open_store(url_or_path: str, **options: Any) -> Store:
    """The store for a config value: ``memory:``, ``redis://…`` or a SQLite file path.

    ``options`` go to the backend (e.g. ``synchronous="NORMAL"`` for SQLite). The store is
    returned unopened: call ``await store.open()``.
    """
    if url_or_path.startswith("memory:"):
        from dispatch.store.memory import MemoryStore

        return MemoryStore()
    if url_or_path.startswith(("redis://", "rediss://", "unix://")):
        raise NotImplementedError(
            "the Redis store is not built yet (a later issue); use a SQLite path or memory:")
    if url_or_path.startswith("sqlite:///"):
        url_or_path = url_or_path[len("sqlite:///"):]
    from dispatch.store.sqlite import SqliteStore

    return SqliteStore(url_or_path, **options)


__all__ = ["Store", "open_store"]
