"""The Store contract, run against every backend in ``conftest.BACKENDS``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from store_backends import BACKENDS, DURABLE

from dispatch.core.errors import ConflictError
from dispatch.core.records import Record, verify_chain
from dispatch.store import open_store
from dispatch.store.base import Store
from dispatch.store.memory import MemoryStore
from dispatch.store.sqlite import SqliteStore


def rec(seq: int, event: str = "E0000001", action: str = "created", **after: Any) -> Record:
    return Record(seq=seq, event_id=event, version=1, action=action, actor="t", at=1.5 * seq,
                  received_at=1.5 * seq + 0.25, before={"status": None},
                  after={"id": event, "status": "dispatched", "n": seq, **after},
                  note=None if seq % 2 else "注释", extra={"stage": "respond"} if seq % 3 else None)


async def test_append_read_roundtrip(store: Store) -> None:
    assert await store.last_seq() == 0 and await store.read() == []
    out = await store.append([rec(1), rec(2)])
    assert [r.seq for r in out] == [1, 2] and out[0].prev_hash == ""
    assert out[1].prev_hash == out[0].hash
    await store.append([rec(3)])
    got = await store.read()
    assert [r.seq for r in got] == [1, 2, 3] and await store.last_seq() == 3
    assert got[:2] == out
    assert got[1].note == "注释" and got[1].after["n"] == 2
    assert verify_chain(got) is None
    assert [r.seq for r in await store.read(after_seq=1, limit=1)] == [2]
    assert await store.read(after_seq=3) == []
    assert await store.append([]) == []


async def test_compare_and_set(store: Store) -> None:
    await store.append([rec(1)])
    for bad in ([rec(1)], [rec(3)], [rec(2), rec(4)]):
        with pytest.raises(ConflictError):
            await store.append(bad)
    assert await store.last_seq() == 1 and len(await store.read()) == 1
    await store.append([rec(2)])


async def test_concurrent_appends_keep_call_order(store: Store) -> None:
    outs = await asyncio.gather(*(store.append([rec(i)]) for i in range(1, 201)))
    assert [o[0].seq for o in outs] == list(range(1, 201))
    assert verify_chain(await store.read()) is None


async def test_conflict_in_a_group_fails_only_that_batch(store: Store) -> None:
    results = await asyncio.gather(store.append([rec(1)]), store.append([rec(5)]),
                                   store.append([rec(2)]), return_exceptions=True)
    assert isinstance(results[1], ConflictError)
    assert [r.seq for r in await store.read()] == [1, 2]


@pytest.mark.parametrize("name", sorted(DURABLE))
async def test_a_record_that_cannot_be_encoded_fails_only_its_caller(name: str,
                                                                    tmp_path: Path) -> None:
    """Defect 4 of issue 11: a lone surrogate fails its own append, never its batch."""
    s = BACKENDS[name](tmp_path)
    await s.open()
    try:
        results = await asyncio.gather(
            s.append([rec(1)]), s.append([rec(2, description="bad \ud800")]),
            s.append([rec(2)]), return_exceptions=True)
        assert [r.seq for r in results[0]] == [1]  # type: ignore[union-attr]
        assert isinstance(results[1], TypeError)
        assert [r.seq for r in results[2]] == [2]  # type: ignore[union-attr]
        got = await s.read()
        assert [r.seq for r in got] == [1, 2] and verify_chain(got) is None
    finally:
        await s.close()


async def test_health_of_a_writable_store(store: Store) -> None:
    assert await asyncio.wait_for(store.health(), 1.5) is None
    await store.append([rec(1)])
    assert await asyncio.wait_for(store.health(), 1.5) is None


async def test_snapshot(store: Store) -> None:
    assert await store.load_snapshot() is None
    await store.save_snapshot(3, b"abc")
    await store.save_snapshot(7, b"\x00state")
    assert await store.load_snapshot() == (7, b"\x00state")


async def test_reopen_keeps_everything(backend: str, tmp_path: Path) -> None:
    if backend not in DURABLE:
        pytest.skip("not a durable backend")
    s = BACKENDS[backend](tmp_path)
    await s.open()
    first = await s.append([rec(1), rec(2)])
    await s.save_snapshot(2, b"snap")
    await s.close()
    s2 = BACKENDS[backend](tmp_path)
    await s2.open()
    try:
        assert await s2.last_seq() == 2 and await s2.read() == first
        out = await s2.append([rec(3)])
        assert out[0].prev_hash == first[-1].hash
        assert await s2.load_snapshot() == (2, b"snap")
    finally:
        await s2.close()


async def test_open_store_dispatches_on_the_url(tmp_path: Path) -> None:
    assert isinstance(open_store("memory:"), MemoryStore)
    s = open_store(str(tmp_path / "x.db"), synchronous="NORMAL")
    assert isinstance(s, SqliteStore) and s.synchronous == "NORMAL"
    from dispatch.store.redis import RedisStore

    r = open_store("redis://127.0.0.1:6379/0?tag=c1&lease_s=2")
    assert isinstance(r, RedisStore) and r.keys.journal == "{c1}:journal" and r.lease_s == 2


async def test_sqlite_groups_commits(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "g.db"), synchronous="NORMAL")
    await s.open()
    try:
        await asyncio.gather(*(s.append([rec(i)]) for i in range(1, 1001)))
        assert await s.last_seq() == 1000
        assert s.commits < 1000  # many appends shared a transaction
    finally:
        await s.close()


async def test_replay_rebuilds_an_engine(store: Store) -> None:
    from dispatch_scenario import Scenario
    from table_routing import T1

    from dispatch.core.engine import Engine
    from dispatch.store import replay

    sc = Scenario()
    for _ in range(5):
        sc.create(T1)
    sc.act("E0000001", "respond")
    sc.at(100)
    await store.append(sc.records)
    eng = Engine(sc.policy, sc.routing)
    assert await replay(store, eng, batch=3) == len(sc.records)
    assert list(eng.events()) == list(sc.engine.events())
    assert await replay(store, eng) == 0


async def test_two_engines_share_a_store_with_compare_and_set(store: Store) -> None:
    """What several instances will do on Redis: conflict → rollback → catch up → retry."""
    from dispatch_scenario import Scenario
    from table_routing import T1

    from dispatch.core.engine import Engine
    from dispatch.store import replay

    sc = Scenario()
    a, b = Engine(sc.policy, sc.routing), Engine(sc.policy, sc.routing)
    now = sc.t0
    out_a = a.create(sc.fields(T1, external_id="A"), "op", now)
    await store.append(out_a.records)
    out_b = b.create(sc.fields(T1, external_id="B"), "op", now)
    with pytest.raises(ConflictError):
        await store.append(out_b.records)
    b.rollback(out_b.records[0].seq - 1)
    await replay(store, b)
    retry = b.create(sc.fields(T1, external_id="B"), "op", now)
    assert retry.event is not None and retry.event["id"] == "E0000002"
    assert retry.event["unit"] == "u2"  # it now knows u1 is busy on A's event
    await store.append(retry.records)
    await replay(store, a)
    assert list(a.events()) == list(b.events())
