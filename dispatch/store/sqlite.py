"""The embedded journal: SQLite in WAL mode, one writer thread committing in groups.

How it works: ``append`` puts the records on a queue (synchronously, so callers' order is
kept) and awaits a future. One writer thread takes everything queued (up to ``batch_max``
records), and in one ``BEGIN IMMEDIATE`` transaction re-reads the head, checks each batch's
seq (compare-and-set), chains the hashes and inserts; after ``COMMIT`` it resolves the
futures on the event loop (``call_soon_threadsafe``). A caller is answered only after its
records are committed, so an answered event survives ``kill -9``.

Each row keeps the record's canonical JSON (what is hashed) and its SHA-256; a ``head`` row
keeps the last seq and hash so a truncated tail is detected too.

``synchronous="FULL"`` (default) fsyncs the WAL at every commit: survives power loss.
``"NORMAL"`` skips that fsync: still survives a killed process (the WAL is in the OS cache),
but the last commits may be lost on power failure; it is faster on slow disks.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson

from dispatch.core.records import GENESIS, Record, chain_encoded
from dispatch.store.base import check_batch

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    action TEXT NOT NULL,
    hash TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, blob BLOB NOT NULL
);
"""


@dataclass
class _Item:
    records: list[Record]
    fut: asyncio.Future[Any]
    snapshot: tuple[int, bytes] | None = None
    out: list[Record] = field(default_factory=list)


def connect(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode with WAL and the chosen durability."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def row_to_record(hash_: str, data: bytes) -> Record:
    """A record from its stored row."""
    d = orjson.loads(data)
    d["hash"] = hash_
    return Record.from_dict(d)


class SqliteStore:
    """The default store: a local SQLite file in WAL mode with group commit."""

    def __init__(self, path: str, batch_max: int = 512, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = str(path)
        self.batch_max = batch_max
        self.synchronous = synchronous.upper()
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._rconn: sqlite3.Connection | None = None
        self._rlock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_seq = 0
        self.commits = 0  # transactions committed (for benchmarks and metrics)

    async def open(self) -> None:
        """Create the file and schema, start the writer thread."""
        self._loop = asyncio.get_running_loop()
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        self._rconn = await asyncio.to_thread(self._init)
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    def _init(self) -> sqlite3.Connection:
        conn = connect(self.path, self.synchronous)
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT seq FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        self._last_seq = row[0] if row else 0
        return conn

    async def close(self) -> None:
        """Commit everything queued, stop the writer, close connections."""
        if self._thread is not None:
            self._q.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    async def append(self, records: list[Record]) -> list[Record]:
        """Durable when it returns; ``ConflictError`` if the seqs do not follow the journal."""
        if not records:
            return []
        if self._thread is None or self._loop is None:
            raise RuntimeError("the store is not open")
        item = _Item(list(records), self._loop.create_future())
        self._q.put(item)
        return await item.fut  # type: ignore[no-any-return]

    async def read(self, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        return await asyncio.to_thread(self._read, after_seq, limit)

    def _read(self, after_seq: int, limit: int | None) -> list[Record]:
        assert self._rconn is not None, "the store is not open"
        with self._rlock:
            rows = self._rconn.execute(
                "SELECT hash, data FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, -1 if limit is None else limit)).fetchall()
        return [row_to_record(h, d) for h, d in rows]

    async def last_seq(self) -> int:
        return self._last_seq

    async def save_snapshot(self, seq: int, blob: bytes) -> None:
        """Kept in the same transaction stream as appends (through the writer)."""
        if self._thread is None or self._loop is None:
            raise RuntimeError("the store is not open")
        item = _Item([], self._loop.create_future(), snapshot=(seq, bytes(blob)))
        self._q.put(item)
        await item.fut

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        def load() -> tuple[int, bytes] | None:
            assert self._rconn is not None
            with self._rlock:
                row = self._rconn.execute("SELECT seq, blob FROM snapshot").fetchone()
            return (row[0], bytes(row[1])) if row else None
        return await asyncio.to_thread(load)

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        conn = connect(self.path, self.synchronous)
        stop = False
        try:
            while not stop:
                first = self._q.get()
                if first is None:
                    break
                batch, n = [first], len(first.records)
                while n < self.batch_max:
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                    n += len(nxt.records)
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        errors: dict[int, BaseException] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
            last_seq, last_hash = (row[0], row[1]) if row else (0, GENESIS)
            rows: list[tuple[int, str, str, str, bytes]] = []
            for i, item in enumerate(batch):
                if item.snapshot is not None:
                    conn.execute("INSERT OR REPLACE INTO snapshot (id, seq, blob) VALUES (1,?,?)",
                                 item.snapshot)
                    continue
                try:
                    check_batch(item.records, last_seq)
                except Exception as exc:
                    errors[i] = exc
                    continue
                sealed = chain_encoded(item.records, last_hash)
                item.out = [r for r, _ in sealed]
                rows.extend((r.seq, r.event_id, r.action, r.hash, d) for r, d in sealed)
                last_seq, last_hash = item.out[-1].seq, item.out[-1].hash
            if rows:
                conn.executemany(
                    "INSERT INTO journal (seq, event_id, action, hash, data) VALUES (?,?,?,?,?)",
                    rows)
                conn.execute("INSERT OR REPLACE INTO head (id, seq, hash) VALUES (1,?,?)",
                             (last_seq, last_hash))
            conn.execute("COMMIT")
            self._last_seq = last_seq
            self.commits += 1
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            errors = {i: exc for i in range(len(batch))}
        assert self._loop is not None
        # one wake-up of the event loop per transaction, not one per waiting caller
        self._loop.call_soon_threadsafe(_settle, [(item, errors.get(i))
                                                  for i, item in enumerate(batch)])


def _settle(done: list[tuple[_Item, BaseException | None]]) -> None:
    for item, exc in done:
        if item.fut.done():
            continue
        if exc is not None:
            item.fut.set_exception(exc)
        else:
            item.fut.set_result(item.out)
