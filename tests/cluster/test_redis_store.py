"""RedisStore beyond the shared contract: the deadline set, claims and leases, strict mode."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from dispatch.core.deadlines import Deadline
from dispatch.core.errors import ConflictError
from dispatch.store.redis import RedisStore

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
sys.path.insert(0, str(Path(__file__).parents[1] / "store"))

from dispatch_scenario import Scenario  # noqa: E402
from table_routing import T1  # noqa: E402
from test_contract import rec  # noqa: E402

pytestmark = pytest.mark.redis


@pytest.fixture
async def pair(redis_server):
    a, b = RedisStore(redis_server.url, lease_s=2.0), RedisStore(redis_server.url, lease_s=2.0)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def zset(store: RedisStore) -> dict[str, float]:
    assert store.r is not None
    got = await store.r.zrange(store.keys.deadlines, 0, -1, withscores=True)
    return {m.decode(): s for m, s in got}


async def test_deadline_set_mirrors_the_journal(pair):
    a, _ = pair
    sc = Scenario()
    e1, e2 = sc.create(T1), sc.create(T1)
    await a.append(sc.records)
    z = await zset(a)
    for ev in (e1, e2):
        for d in sc.engine.deadlines_of(ev["id"]):
            assert z[f"{ev['id']}:{d.stage}:{d.kind}"] == pytest.approx(d.due)
    assert len(z) == 12  # 3 stages x (warn, breach) x 2 events
    n = len(sc.records)
    sc.act(e1["id"], "respond")
    sc.act(e2["id"], "cancel")
    await a.append(sc.records[n:])
    z = await zset(a)
    assert not any(m.startswith(e2["id"]) for m in z)  # closed: no timers
    assert not any(m.startswith(f"{e1['id']}:respond") for m in z)  # stage done
    assert f"{e1['id']}:depart:breach" in z


async def test_deadline_set_takes_the_engines_effects(pair):
    """The append script writes the deadlines it is handed (the engine's ``Outcome``
    effects), replacing the event's members, and works out none itself."""
    a, _ = pair
    sc = Scenario()
    out = sc.engine.create(sc.fields(T1), "op", sc.clock.now())
    eid = out.event["id"]
    assert [tuple(d)[:2] for d in out.deadlines[eid]] == [
        (s, k) for s in ("respond", "depart", "arrive") for k in ("warn", "breach")]
    await a.append(out.records, {eid: (Deadline("depart", "breach", 1234.5),)})
    assert await zset(a) == {f"{eid}:depart:breach": 1234.5}
    later = sc.engine.act(eid, "respond", "op", sc.clock.now())
    await a.append(later.records, later.deadlines)
    assert await zset(a) == {f"{eid}:{d.stage}:{d.kind}": pytest.approx(d.due)
                             for d in later.deadlines[eid]}
    assert len(later.deadlines[eid]) == 4  # respond is done: depart and arrive remain


async def test_claims_are_exclusive_and_leased(pair):
    a, b = pair
    sc = Scenario()
    sc.create(T1)
    await a.append(sc.records)
    now = sc.t0 + 10_000  # everything is due
    got_a, lease_a = await a.claim(now)
    got_b, _ = await b.claim(now)
    assert len(got_a) == 6 and got_b == []
    assert lease_a == now + 2.0
    assert await b.next_deadline() == pytest.approx(lease_a)
    # a died without firing: when its lease runs out, b takes the deadlines over
    got_b, lease_b = await b.claim(lease_a + 0.01)
    assert sorted(got_b) == sorted(got_a)
    # a late release by a keeps nothing of b's claim from b
    assert await a.release(got_a, lease_a) == 0
    assert await b.release(got_b[:2], lease_b) == 2
    assert len(await zset(b)) == 4


async def test_concurrent_claims_split_without_overlap(pair):
    a, b = pair
    sc = Scenario()
    for _ in range(50):
        sc.create(T1)
    await a.append(sc.records)
    now = sc.t0 + 10_000
    results = await asyncio.gather(*(s.claim(now, limit=7) for s in (a, b) for _ in range(30)))
    members = [m for got, _ in results for m in got]
    assert len(members) == len(set(members)) == 300


async def test_strict_mode_fails_what_was_queued_behind_a_refusal(pair):
    a, b = pair
    calls: list[int] = []
    a.set_failure_hook(lambda seq, exc: calls.append(seq))
    await b.append([rec(1)])  # a does not know: its cached head is 0
    r1, r2 = await asyncio.gather(a.append([rec(1)]), a.append([rec(2)]),
                                  return_exceptions=True)
    assert isinstance(r1, ConflictError) and isinstance(r2, ConflictError)
    assert calls == [1]
    out = await a.append([rec(2)])  # it asked Redis for the head again
    assert out[0].prev_hash == (await b.read())[0].hash
    assert await a.last_seq() == 2


async def test_reply_lost_after_the_write_counts_as_written(pair):
    a, _ = pair
    first = await a.append([rec(1)])
    a._head = (0, "")  # as if the answer was lost: the same write is sent again
    assert await a.append([rec(1)]) == first  # the head is exactly ours: it is in, once
    a._head = (0, "")
    with pytest.raises(ConflictError):
        await a.append([rec(1, x=1)])  # other content: truly a conflict
    assert (await a.read()) == first


async def test_an_instance_rebuilds_when_redis_comes_back_with_less(redis_server, tmp_path):
    """Redis restarted without its data (no persistence): the journal is the truth."""
    from tests.server.conftest import intake_body, start_server

    srv = await start_server(tmp_path, store=redis_server.url)
    try:
        for i in range(3):
            status, ev = await srv.call("POST", "/api/v1/events", who="intake",
                                        json=intake_body(121.2611, 28.6408, external_id=str(i)))
            assert status == 201
        redis_server.stop(kill=True)
        status, body = await srv.call("POST", "/api/v1/events", who="intake",
                                      json=intake_body(121.2611, 28.6408, external_id="x"))
        assert status == 503 and body["error"]["code"] == "store_unavailable"
        redis_server.start()  # empty: persistence was off
        for _ in range(100):
            status, ev = await srv.call("POST", "/api/v1/events", who="intake",
                                        json=intake_body(121.2611, 28.6408, external_id="y"))
            if status == 201:
                break
            await asyncio.sleep(0.1)
        assert status == 201 and ev["id"] == "E0000001"
        assert srv.state.runtime.engine.last_seq == 1
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


def test_audit_verify_reads_the_shared_journal(redis_server, capsys):
    """`dispatch audit verify --db redis://…` checks the Redis journal's chain."""
    import asyncio as aio

    from dispatch.audit import verify_main
    from dispatch.core.records import Record
    from dispatch.store import open_store

    async def fill() -> None:
        store = open_store(redis_server.url)
        await store.open()
        try:
            await store.append([Record(seq=i, event_id="E0000001", version=i, action="created",
                                       actor="t", at=float(i), received_at=float(i), before={},
                                       after={"id": "E0000001", "n": i}) for i in (1, 2, 3)])
        finally:
            await store.close()

    aio.run(fill())
    assert verify_main(redis_server.url) == 0
    assert "OK: 3 records" in capsys.readouterr().out
