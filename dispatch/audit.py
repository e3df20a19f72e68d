"""``dispatch audit verify``: check that the journal is an unbroken SHA-256 chain.

Every record carries the hash of the one before it, so an edited, removed or reordered
record breaks the chain at that record; the ``head`` row (last seq and hash, written in the
same transaction as the records) catches a removed tail. The first bad record is named.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import sys
from typing import Any

import orjson

from dispatch.core.records import GENESIS, Record, chain_break, verify_chain
from dispatch.store.redis_keys import REDIS_SCHEMES

Result = tuple[bool, str, int | None]


def verify_journal(store_or_path: Any) -> Result:
    """(ok, message, first bad seq or None) for a SQLite journal file, a ``MemoryStore``
    or a list of records. For any open store from async code use ``verify_store``."""
    if isinstance(store_or_path, str | os.PathLike):
        return _verify_sqlite(os.fspath(store_or_path))
    if hasattr(store_or_path, "path") and not hasattr(store_or_path, "records"):
        return _verify_sqlite(os.fspath(store_or_path.path))
    return _verify_records(list(getattr(store_or_path, "records", store_or_path)))


async def _verify_url(url: str) -> Result:
    from dispatch.store import open_store

    store = open_store(url)
    await store.open()
    try:
        return await verify_store(store)
    finally:
        await store.close()


async def verify_store(store: Any) -> Result:
    """The same check over any open ``Store`` (reads through the protocol)."""
    return _verify_records(await store.read())


def _verify_records(records: list[Record]) -> Result:
    bad = verify_chain(records)
    if bad is not None:
        return False, bad[1], bad[0]
    return True, f"OK: {len(records)} records, chain intact", None


def _verify_sqlite(path: str) -> Result:
    if not os.path.exists(path):
        return False, f"no journal at {path}", None
    try:
        return _scan(path)
    except sqlite3.DatabaseError as exc:
        return False, f"the journal file cannot be read: {exc}", None


def _scan(path: str) -> Result:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        prev, expect = GENESIS, 1
        cur = conn.execute("SELECT seq, hash, data FROM journal ORDER BY seq")
        for col_seq, stored, data in cur:
            try:
                d = orjson.loads(data)
                seq, prev_hash = int(d["seq"]), str(d["prev_hash"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return False, f"record {expect} is unreadable", expect
            if col_seq != seq:
                return False, f"record {expect} is out of place (row {col_seq} holds " \
                              f"record {seq})", expect
            raw = data.encode() if isinstance(data, str) else bytes(data)
            actual = hashlib.sha256(raw).hexdigest()
            bad = chain_break(seq, expect, prev_hash, prev, actual, stored)
            if bad:
                return False, bad, expect
            prev, expect = stored, expect + 1
        head = conn.execute("SELECT seq, hash FROM head").fetchone()
        count = expect - 1
        if head is not None and (head[0] != count or head[1] != prev):
            if head[0] > count:
                return False, f"record {count + 1} is missing (the journal ends early; " \
                              f"its head says {head[0]})", count + 1
            return False, f"the journal head does not match record {count}", count
        return True, f"OK: {count} records, chain intact", None
    finally:
        conn.close()


def verify_main(db_path: str) -> int:
    """Print OK or the first bad record; exit status 0 when intact, 1 otherwise.

    ``db_path`` is a SQLite journal file, or a ``redis://`` URL (the shared journal).
    """
    if db_path.startswith(REDIS_SCHEMES):
        ok, message, _ = asyncio.run(_verify_url(db_path))
    else:
        ok, message, _ = verify_journal(db_path)
    print(message if ok else f"TAMPERED: {message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(verify_main(sys.argv[1]))
