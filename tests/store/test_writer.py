"""The SQLite writer thread: it outlives any batch's failure, appends never wait forever,
health() tells why the journal cannot be written, and one record that cannot be encoded
fails only its own caller (issue 11, defects 9 and 4).

Faults are injected in the real SQLite connection (a ``sqlite3.Connection`` subclass given to
the store's connection factory), never in the store itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.audit import verify_journal
from dispatch.core.errors import ConflictError, StoreTimeoutError
from dispatch.core.records import Record, canonical, encode, verify_chain
from dispatch.store.sqlite import SqliteStore, connect


def rec(seq: int, description: str = "ok", event: str = "E0000001") -> Record:
    return Record(seq=seq, event_id=event, version=seq, action="created", actor="t",
                  at=10.0 + seq, received_at=10.5 + seq, before={"status": None},
                  after={"id": event, "status": "dispatched", "description": description})


class Faults:
    """What the next statements on the writer's connections do (shared by all of them)."""

    def __init__(self) -> None:
        self.writes_fail: str | None = None  # every INSERT raises OperationalError(this)
        self.rollbacks_to_fail = 0  # this many ROLLBACKs raise
        self.begin_gate: threading.Event | None = None  # BEGIN waits for it (a hung disk)
        self.read_only = False  # SQLite itself refuses writes (PRAGMA query_only)
        self.connections = 0


def faulty_factory(faults: Faults) -> Any:
    class FaultyConnection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith("BEGIN") and faults.begin_gate is not None:
                faults.begin_gate.wait(10)
            if sql.startswith("BEGIN"):
                super().execute(f"PRAGMA query_only={int(faults.read_only)}")
            if sql.startswith("INSERT") and faults.writes_fail:
                raise sqlite3.OperationalError(faults.writes_fail)
            if sql == "ROLLBACK" and faults.rollbacks_to_fail > 0:
                faults.rollbacks_to_fail -= 1
                raise sqlite3.OperationalError("cannot rollback (injected)")
            return super().execute(sql, *args)

        def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith("INSERT") and faults.writes_fail:
                raise sqlite3.OperationalError(faults.writes_fail)
            return super().executemany(sql, *args)

    def connect_fn(path: str, synchronous: str) -> sqlite3.Connection:
        faults.connections += 1
        return connect(path, synchronous, factory=FaultyConnection)

    return connect_fn


@pytest.fixture
async def faulty(tmp_path: Path) -> Any:
    faults = Faults()
    store = SqliteStore(str(tmp_path / "j.db"), synchronous="NORMAL", append_timeout_s=2.0,
                        connect_fn=faulty_factory(faults))
    await store.open()
    yield store, faults
    if faults.begin_gate is not None:
        faults.begin_gate.set()
    await store.close()


async def test_writer_survives_a_rollback_that_raises(faulty: Any) -> None:
    store, faults = faulty
    await store.append([rec(1)])
    assert await store.health() is None
    faults.writes_fail = "disk I/O error"
    faults.rollbacks_to_fail = 1
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        await asyncio.wait_for(store.append([rec(2)]), 5)  # old code: waits forever
    assert store._thread is not None and store._thread.is_alive()
    reason = await asyncio.wait_for(store.health(), 1.5)  # its probe fails too
    assert reason == "the journal cannot be written: OperationalError: disk I/O error " \
                     f"({store.path})"
    faults.writes_fail = None
    # the next append works (on a new connection: the one that could not roll back is gone)
    out = await asyncio.wait_for(store.append([rec(2)]), 5)
    assert [r.seq for r in out] == [2] and faults.connections == 2
    assert await store.health() is None
    assert [r.seq for r in await store.read()] == [1, 2]
    assert verify_chain(await store.read()) is None
    assert verify_journal(store.path)[0]


async def test_every_caller_of_a_failed_batch_is_answered(faulty: Any) -> None:
    store, faults = faulty
    faults.writes_fail = "database or disk is full"
    faults.rollbacks_to_fail = 10
    results = await asyncio.wait_for(asyncio.gather(
        *(store.append([rec(1)]) for _ in range(50)), store.save_snapshot(0, b"s"),
        return_exceptions=True), 5)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert (await store.health() or "").startswith("disk full: ")
    faults.writes_fail = None
    assert await asyncio.wait_for(store.health(), 1.5) is None  # the probe saw the recovery
    await store.append([rec(1)])
    assert await store.last_seq() == 1


async def test_a_read_only_journal_is_reported_and_recovers(faulty: Any) -> None:
    store, faults = faulty
    await store.append([rec(1)])
    faults.read_only = True
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.append([rec(2)])
    reason = await store.health()
    assert reason is not None and reason.startswith("read-only: attempt to write a readonly")
    faults.read_only = False
    assert await asyncio.wait_for(store.health(), 1.5) is None
    await store.append([rec(2)])
    assert verify_journal(store.path) == (True, "OK: 2 records, chain intact", None)


async def test_a_dead_writer_is_reported_and_append_does_not_wait(faulty: Any) -> None:
    store, _ = faulty
    await store.append([rec(1)])
    store._q.put(None)  # the writer ends (as if killed)
    await asyncio.to_thread(store._thread.join, 5)
    assert await store.health() == "the journal writer thread is dead"
    with pytest.raises(StoreTimeoutError, match="writer thread is dead"):
        await asyncio.wait_for(store.append([rec(2)]), 1)


async def test_append_times_out_on_a_hung_disk(faulty: Any) -> None:
    store, faults = faulty
    store.append_timeout_s = 0.3
    faults.begin_gate = threading.Event()
    first = asyncio.ensure_future(store.append([rec(1)]))
    await asyncio.sleep(0.1)  # the writer took it and hangs in BEGIN
    second = asyncio.ensure_future(store.append([rec(2)]))
    with pytest.raises(StoreTimeoutError, match="outcome is unknown"):
        await first
    with pytest.raises(StoreTimeoutError, match="nothing was written"):
        await second
    await asyncio.sleep(0.1)
    assert "stuck in one commit" in (await store.health() or "")
    faults.begin_gate.set()  # the disk answers: the first commit lands after its caller left
    for _ in range(100):
        if store._busy_since is None and await store.last_seq() == 1:
            break
        await asyncio.sleep(0.02)
    assert [r.seq for r in await store.read()] == [1]  # the withdrawn one was never written
    assert "restart" in (await store.health() or "")  # the caller was told "unknown"


async def test_a_record_that_cannot_be_encoded_fails_only_its_caller(tmp_path: Path) -> None:
    """Defect 4: a lone surrogate used to fail the whole group commit."""
    store = SqliteStore(str(tmp_path / "j.db"), synchronous="NORMAL")
    await store.open()
    try:
        good = [store.append([rec(i, event=f"E{i:07d}")]) for i in (1, 2, 3)]
        bad = store.append([rec(4, description="bad \ud800 text", event="E0000004")])
        later = [store.append([rec(4, event="E0000004")])]  # the caller's retry, and more
        results = await asyncio.gather(*good, bad, *later, return_exceptions=True)
        assert [r[0].seq for r in results[:3]] == [1, 2, 3]
        assert isinstance(results[3], TypeError) and "record 4" in str(results[3])
        assert "surrogates" in str(results[3])
        assert [r.seq for r in results[4]] == [4]  # type: ignore[union-attr]
        assert [r.seq for r in await store.read()] == [1, 2, 3, 4]
        assert verify_journal(store.path) == (True, "OK: 4 records, chain intact", None)
        with pytest.raises(ConflictError):  # the bad one was never queued, seq 4 is taken
            await store.append([rec(4)])
    finally:
        await store.close()


def test_pre_encoding_gives_the_canonical_bytes() -> None:
    """The journal format is unchanged: old journals still verify (test_audit.py)."""
    tricky = Record(7, "E0000007", 3, "note", "a", 1.25, 2, {"prev_hash": ""},
                    {"x": '"prev_hash":""', "prev_hash": "", "n": [1, {"b": None, "a": "注"}]},
                    "注释", {"stage": "respond"})
    odd = Record(8, "E0000008", 1, "note", "a", 1.0, "not a number", {}, {})  # type: ignore[arg-type]
    for r in (rec(1), tricky, odd):
        for prev in ("", "0" * 64, "ab" * 32):
            assert encode(r).with_prev(prev) == canonical(r, prev)


async def test_a_bad_record_does_not_fail_a_timer_or_another_intake(tmp_path: Path) -> None:
    """Defect 4 through the runtime: the firing and the good intake that share the commit
    with the bad intake are stored and answered; only the bad intake is refused."""
    from dispatch.clock import FakeClock
    from dispatch.config import load_config
    from dispatch.runtime import Runtime, StoreUnavailableError
    from dispatch.store import replay
    from tests.server.conftest import BEIYANG_RESERVOIR, write_config

    lon, lat = BEIYANG_RESERVOIR

    def intake(n: int, description: str = "ok") -> dict[str, Any]:
        return {"category": "noise", "location": {"lon": lon, "lat": lat + n * 1e-4},
                "description": description}

    clock = FakeClock()
    store = SqliteStore(str(tmp_path / "rt.db"), synchronous="NORMAL")
    rt = Runtime(load_config(write_config(tmp_path)), clock=clock, store=store)
    await rt.start()
    try:
        ev = (await rt.create(intake(1), "op")).event
        assert ev is not None
        clock.set(ev["deadlines"]["respond"] + 0.01)
        fired, bad, good = await asyncio.wait_for(asyncio.gather(
            rt.fire_due(), rt.create(intake(2, "bad \ud800"), "op"), rt.create(intake(3), "op"),
            return_exceptions=True), 5)
        assert isinstance(bad, StoreUnavailableError)
        assert not isinstance(fired, BaseException) and not isinstance(good, BaseException)
        assert [r.action for r in fired.records] == ["breached", "escalated"]
        assert good.created and good.event is not None
        journal = await store.read()
        assert [r.action for r in journal] == ["created", "breached", "escalated", "created"]
        assert journal[-1].event_id == good.event["id"]
        assert verify_journal(store.path)[0]
        again = type(rt.engine)(rt.policy, rt.port)  # the journal replays to the same state
        await replay(store, again)
        assert list(again.events()) == list(rt.engine.events())
    finally:
        await rt.stop()


_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | _text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(after=st.dictionaries(_text, _json, max_size=6), note=st.none() | _text,
       actor=_text, at=st.floats(0, 4e9), received=st.floats(0, 4e9) | st.integers(0, 2**40),
       prev=st.sampled_from(["", "0" * 64, "f" * 64]))
def test_pre_encoding_matches_canonical_for_any_record(after: dict[str, Any], note: str | None,
                                                      actor: str, at: float,
                                                      received: float, prev: str) -> None:
    r = Record(5, "E0000005", 2, "note", actor, at, received, {"status": None}, after, note,
               after or None)
    assert encode(r).with_prev(prev) == canonical(r, prev)
