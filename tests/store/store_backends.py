"""The store backends the contract suite runs against: add one line per backend."""

from __future__ import annotations

import atexit
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatch.store.memory import MemoryStore
from dispatch.store.sqlite import SqliteStore


def _redis(tmp: Path) -> Any:
    """A RedisStore on the session's own redis-server, one key tag per test directory."""
    from dispatch.store.redis import RedisStore
    from tests.redis_fixture import require_redis, session_redis, stop_session_redis

    require_redis()  # skips, or fails under DISPATCH_REQUIRE
    srv = session_redis(tmp.parent)
    atexit.register(stop_session_redis)
    tag = "t" + hashlib.sha1(str(tmp).encode()).hexdigest()[:12]
    return RedisStore(srv.url, tag=tag)


# name → factory(tmp_path) returning an unopened store; ``durable`` backends are reopened.
BACKENDS: dict[str, Callable[[Path], Any]] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SqliteStore(str(tmp / "journal.db"), synchronous="NORMAL"),
    "redis": _redis,
}
DURABLE = {"sqlite", "redis"}


async def created_event_ids(db: Path) -> set[str]:
    """The ids of the events a SQLite journal holds (its ``created`` records)."""
    s = SqliteStore(str(db))
    await s.open()
    try:
        return {r.event_id for r in await s.read() if r.action == "created"}
    finally:
        await s.close()
