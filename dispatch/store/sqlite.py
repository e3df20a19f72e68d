"""The embedded journal: SQLite in WAL mode, one writer thread committing in groups.

How it works: ``append`` encodes the records (on the caller's side, so a record that JSON
cannot hold fails its own caller and nobody else's), puts them on a queue (synchronously, so
callers' order is kept) and awaits a future. One writer thread takes everything queued (up
to ``batch_max`` records), and in one ``BEGIN IMMEDIATE`` transaction re-reads the head,
checks each batch's seq (compare-and-set), chains the hashes and inserts; after ``COMMIT`` it
resolves the futures on the event loop (``call_soon_threadsafe``). A caller is answered only
after its records are committed, so an answered event survives ``kill -9``.

Each row keeps the record's canonical JSON (what is hashed) and its SHA-256; a ``head`` row
keeps the last seq and hash so a truncated tail is detected too.

Failures: the writer outlives any one transaction's failure (disk full, read-only file, a
``ROLLBACK`` that itself raises: the connection is then dropped and a new one opened for
the next batch); every future of a failed batch is settled with the error. ``append``
waits at most ``append_timeout_s`` (``StoreTimeoutError``; an append still queued then is
withdrawn, so nothing is written). ``health()`` names why the journal cannot be written
now; after a failed commit it sends a tiny probe transaction (``health_probe`` table), so
recovery (space freed, file writable again) is seen without waiting for a client write.

Group commit: the writer takes whatever is queued; when its last commit held more than one
append (several callers at once) it first waits ``GATHER_S`` (1 ms) for more, so that one
fsync serves a larger group (less CPU per append under load; a lone append never waits).

``synchronous="FULL"`` (default) fsyncs the WAL at every commit: survives power loss.
``"NORMAL"`` skips that fsync: still survives a killed process (the WAL is in the OS cache),
but the last commits may be lost on power failure; it is faster on slow disks.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from dispatch.core.errors import StoreTimeoutError
from dispatch.core.records import GENESIS, Encoded, Record, chain_pre_encoded, encode_all
from dispatch.store.base import check_batch

log = logging.getLogger(__name__)

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
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
# Written only by health probes after a failed commit (never part of the journal's chain).
PROBE_SCHEMA = """CREATE TABLE IF NOT EXISTS health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL)"""

PROBE_WAIT_S = 0.8  # health() answers within about a second (the probe may take longer)
# Under load (the last commit took several appends), the writer waits this long after the
# first append before it commits, so one fsync serves more of them: about a tenth less server
# CPU per intake at 16 in flight (docs/performance.md), for a millisecond more latency only
# while appends are coming together; one at a time, nothing waits.
GATHER_S = 0.001

# _Item.state: queued → taken by the writer → done; or queued → withdrawn (timed out first)
QUEUED, TAKEN, WITHDRAWN, LATE = "queued", "taken", "withdrawn", "late"


@dataclass
class _Item:
    records: list[Record]
    fut: asyncio.Future[Any]
    encoded: list[Encoded] = field(default_factory=list)
    snapshot: tuple[int, bytes] | None = None
    probe: bool = False
    value: tuple[str, bytes, bytes | None] | None = None  # set_value: key, value, expect
    written: bool = False  # set_value's answer
    out: list[Record] = field(default_factory=list)
    state: str = QUEUED
    deadline: float = 0.0  # loop time when its caller stops waiting


def connect(path: str, synchronous: str = "FULL",
            factory: type[sqlite3.Connection] = sqlite3.Connection) -> sqlite3.Connection:
    """A connection in autocommit mode with WAL and the chosen durability."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0,
                           factory=factory)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def row_to_record(hash_: str, data: bytes) -> Record:
    """A record from its stored row."""
    d = orjson.loads(data)
    d["hash"] = hash_
    return Record.from_dict(d)


def describe(exc: BaseException, path: str | None = None) -> str:
    """A short reason for a failed commit: "disk full: …", "read-only: …" or the error."""
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    where = f" ({path})" if path else ""
    if "full" in low or getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return f"disk full: {msg}{where}"
    if "readonly" in low or "read-only" in low or "read only" in low or _read_only_fs(path):
        return f"read-only: {msg}{where}"
    return f"the journal cannot be written: {type(exc).__name__}: {msg}{where}"


def _read_only_fs(path: str | None) -> bool:
    if path is None:
        return False
    try:
        return bool(os.statvfs(os.path.dirname(os.path.abspath(path))).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class SqliteStore:
    """The default store: a local SQLite file in WAL mode with group commit.

    ``connect_fn(path, synchronous)`` opens the writer's connections (tests inject faults
    there); ``append_timeout_s`` bounds every append and snapshot.
    """

    def __init__(self, path: str, batch_max: int = 512, synchronous: str = "FULL",
                 append_timeout_s: float = 10.0,
                 connect_fn: Callable[[str, str], sqlite3.Connection] = connect) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        if not append_timeout_s > 0:
            raise ValueError(f"append_timeout_s must be positive, not {append_timeout_s!r}")
        self.path = str(path)
        self.batch_max = batch_max
        self.synchronous = synchronous.upper()
        self.append_timeout_s = float(append_timeout_s)
        self._connect = connect_fn
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._rconn: sqlite3.Connection | None = None
        self._rlock = threading.Lock()
        self._state_lock = threading.Lock()  # guards _Item.state between loop and writer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_seq = 0
        self._failure: str | None = None  # why the last commit failed (None: it succeeded)
        self._diverged: str | None = None  # a commit landed after its caller gave up
        self._busy_since: float | None = None  # monotonic start of the running commit
        self._probe: _Item | None = None
        # appends waiting for the writer, oldest first, and the one timer that expires them
        # (a timer per append would cost more than the commit itself under load)
        self._pending: collections.deque[_Item] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self.commits = 0  # transactions committed (for benchmarks and metrics)
        self.failed_commits = 0

    async def open(self) -> None:
        """Create the file and schema, start the writer thread."""
        self._loop = asyncio.get_running_loop()
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        try:
            self._rconn = await asyncio.to_thread(self._init)
        except sqlite3.Error as exc:
            raise sqlite3.OperationalError(
                f"cannot open the journal: {describe(exc, self.path)}") from exc
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()

    def _init(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.executescript(SCHEMA)
            row = conn.execute("SELECT seq FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        except BaseException:
            conn.close()
            raise
        self._last_seq = row[0] if row else 0
        return conn

    async def close(self) -> None:
        """Commit everything queued, stop the writer, close connections."""
        if self._thread is not None:
            self._q.put(None)
            # a writer stuck on a hung disk must not hold the shutdown forever
            await asyncio.to_thread(self._thread.join, self.append_timeout_s + 5.0)
            if self._thread.is_alive():
                log.error("the journal writer did not stop within %.0f s; leaving it",
                          self.append_timeout_s + 5.0)
            self._thread = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for item in self._pending:  # only left when the writer was stuck
            if not item.fut.done():
                item.fut.set_exception(StoreTimeoutError(
                    "the store closed before the journal committed; the outcome is unknown"))
        self._pending.clear()
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    def _enqueue(self, item: _Item) -> None:
        if self._thread is None or self._loop is None:
            raise RuntimeError("the store is not open")
        if not self._thread.is_alive():
            raise StoreTimeoutError("the journal writer thread is dead; nothing was written")
        self._q.put(item)

    async def _wait(self, item: _Item) -> Any:
        assert self._loop is not None
        item.deadline = self._loop.time() + self.append_timeout_s
        self._pending.append(item)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(item.deadline, self._expire)
        return await item.fut

    def _expire(self) -> None:
        """Fail the appends whose time is up (on the loop; re-armed for the next one)."""
        assert self._loop is not None
        self._watchdog = None
        now = self._loop.time()
        while self._pending:
            item = self._pending[0]
            if not item.fut.done() and item.deadline > now:
                self._watchdog = self._loop.call_at(item.deadline, self._expire)
                return
            self._pending.popleft()
            if item.fut.done():
                continue
            with self._state_lock:
                withdrawn = item.state == QUEUED
                item.state = WITHDRAWN if withdrawn else LATE
            what = ("it was withdrawn, nothing was written" if withdrawn else
                    "its commit was still running, the outcome is unknown")
            item.fut.set_exception(StoreTimeoutError(
                f"the journal did not commit within {self.append_timeout_s:g} s; {what}"))

    def _forget_settled(self) -> None:
        """Drop answered appends from the front of the pending queue (on the loop)."""
        pending = self._pending
        while pending and pending[0].fut.done():
            pending.popleft()

    async def append(self, records: list[Record]) -> list[Record]:
        """Durable when it returns; ``ConflictError`` if the seqs do not follow the journal.

        A record JSON cannot hold raises ``TypeError`` here, before anything is queued (the
        other callers of the same group commit are not affected); ``StoreTimeoutError``
        after ``append_timeout_s``.
        """
        if not records:
            return []
        if self._loop is None:
            raise RuntimeError("the store is not open")
        item = _Item(list(records), self._loop.create_future(), encoded=encode_all(records))
        self._enqueue(item)
        return await self._wait(item)

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
        if self._loop is None:
            raise RuntimeError("the store is not open")
        item = _Item([], self._loop.create_future(), snapshot=(seq, bytes(blob)))
        self._enqueue(item)
        await self._wait(item)

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        def load() -> tuple[int, bytes] | None:
            assert self._rconn is not None
            with self._rlock:
                row = self._rconn.execute("SELECT seq, blob FROM snapshot").fetchone()
            return (row[0], bytes(row[1])) if row else None
        return await asyncio.to_thread(load)

    async def get_value(self, key: str) -> bytes | None:
        def get() -> bytes | None:
            assert self._rconn is not None, "the store is not open"
            with self._rlock:
                row = self._rconn.execute("SELECT value FROM kv WHERE key = ?",
                                          (key,)).fetchone()
            return bytes(row[0]) if row else None
        return await asyncio.to_thread(get)

    async def set_value(self, key: str, value: bytes, expect: bytes | None) -> bool:
        """Compare-and-set, committed by the writer in the journal's transaction stream."""
        if self._loop is None:
            raise RuntimeError("the store is not open")
        item = _Item([], self._loop.create_future(), value=(key, bytes(value), expect))
        self._enqueue(item)
        await self._wait(item)
        return item.written

    async def health(self) -> str | None:
        """None when the journal can be written now, else why not (answers within ~1 s).

        After a failed commit a probe transaction is queued (one at a time) and awaited
        briefly: a disk with space again or a file writable again is reported healthy
        without waiting for a client's write.
        """
        if self._thread is None or self._loop is None:
            return "the store is not open"
        if not self._thread.is_alive():
            return "the journal writer thread is dead"
        if self._diverged is not None:
            return self._diverged
        busy = self._busy_since
        if busy is not None and time.monotonic() - busy > self.append_timeout_s:
            return f"the journal writer is stuck in one commit for " \
                   f"{time.monotonic() - busy:.0f} s"
        if self._failure is None:
            return None
        probe = self._probe
        if probe is None or probe.fut.done():
            probe = _Item([], self._loop.create_future(), probe=True)
            probe.fut.add_done_callback(_retrieve)
            self._probe = probe
            self._q.put(probe)
        try:
            await asyncio.wait_for(asyncio.shield(probe.fut), PROBE_WAIT_S)
        except Exception:
            pass  # the probe failed or is still waiting: the last failure stands
        return self._failure

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        stop = False
        gather = False  # the last commit took more than one append: wait for company
        while not stop:
            first = self._q.get()
            if first is None:
                break
            if gather:
                time.sleep(GATHER_S)
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
            gather = len(batch) > 1
            try:
                conn = self._commit_safely(conn, batch)
            except BaseException:  # never let one batch end the writer
                log.exception("journal writer: unexpected failure (batch refused)")
        if conn is not None:
            _close_quietly(conn)

    def _commit_safely(self, conn: sqlite3.Connection | None,
                       batch: list[_Item]) -> sqlite3.Connection | None:
        """Commit ``batch``; whatever happens, settle every future of it exactly once."""
        with self._state_lock:
            batch = [item for item in batch if item.state == QUEUED]
            for item in batch:
                item.state = TAKEN
        if not batch:
            return conn
        errors: dict[int, BaseException] = {}
        self._busy_since = time.monotonic()
        try:
            if conn is None:
                conn = self._connect(self.path, self.synchronous)
            errors = self._commit(conn, batch)
            self._failure = None
            self.commits += 1
        except BaseException as exc:
            self.failed_commits += 1
            self._failure = describe(exc, self.path)
            log.error("journal commit of %d item(s) failed: %s", len(batch), self._failure)
            errors = {i: exc for i in range(len(batch))}
            conn = self._rollback(conn)
        finally:
            self._busy_since = None
            with self._state_lock:
                late = [i for i, item in enumerate(batch)
                        if item.state == LATE and i not in errors]
            if late:
                self._diverged = ("a change was committed after its caller had timed out; "
                                  "restart the server to reload the journal")
                log.error("journal: %s", self._diverged)
            self._settle(batch, errors)
        return conn

    def _rollback(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """Undo a failed transaction; a connection that cannot roll back is replaced."""
        if conn is None:
            return None
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return conn
        except BaseException as exc:
            log.error("journal ROLLBACK failed (%s); reconnecting for the next batch", exc)
            _close_quietly(conn)  # closing drops the open transaction
            return None

    def _settle(self, batch: list[_Item], errors: dict[int, BaseException]) -> None:
        assert self._loop is not None
        done = [(item, errors.get(i)) for i, item in enumerate(batch)]
        try:
            # one wake-up of the event loop per transaction, not one per waiting caller
            self._loop.call_soon_threadsafe(_settle, done, self._forget_settled)
        except RuntimeError:
            log.warning("journal: the event loop is closed; %d caller(s) not answered",
                        len(done))

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> dict[int, BaseException]:
        """One transaction for the batch; returns the items refused (compare-and-set)."""
        errors: dict[int, BaseException] = {}
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        last_seq, last_hash = (row[0], row[1]) if row else (0, GENESIS)
        rows: list[tuple[int, str, str, str, bytes]] = []
        for i, item in enumerate(batch):
            if item.probe:
                conn.execute(PROBE_SCHEMA)
                conn.execute("INSERT OR REPLACE INTO health_probe (id, at) VALUES (1, ?)",
                             (time.time(),))
                continue
            if item.snapshot is not None:
                conn.execute("INSERT OR REPLACE INTO snapshot (id, seq, blob) VALUES (1,?,?)",
                             item.snapshot)
                continue
            if item.value is not None:
                key, value, expect = item.value
                got = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
                item.written = (None if got is None else bytes(got[0])) == expect
                if item.written:
                    conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                                 (key, value))
                continue
            try:
                check_batch(item.records, last_seq)
            except Exception as exc:
                errors[i] = exc
                continue
            sealed = chain_pre_encoded(item.encoded, last_hash)
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
        return errors


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except BaseException:  # noqa: S110 - a broken connection is being dropped anyway
        pass


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a probe's exception as seen (nobody may be awaiting it any more)."""
    if not fut.cancelled():
        fut.exception()


def _settle(done: list[tuple[_Item, BaseException | None]],
            then: Callable[[], None]) -> None:
    for item, exc in done:
        if item.fut.done():
            continue
        if exc is not None:
            item.fut.set_exception(exc)
        else:
            item.fut.set_result(item.out)
    then()
