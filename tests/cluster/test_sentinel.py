"""Redis Sentinel: ``store: redis+sentinel://…``, failover under load loses nothing answered.

A real deployment on loopback (tests/cluster/sentinel_fixture.py): a master and two replicas
(AOF ``appendfsync always``) and three sentinels with quorum 2.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from dispatch.core.records import verify_chain
from dispatch.store.redis import (
    RedisStore,
    ReplicaWaitError,
    SentinelTarget,
    parse_sentinel_url,
)
from tests.cluster.conftest import HY, Cluster, auth
from tests.cluster.sentinel_fixture import SentinelSet
from tests.redis_fixture import require_redis, require_redis_sentinel
from tests.server.conftest import intake_body, write_config

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))

from test_contract import rec  # noqa: E402


def test_sentinel_url() -> None:
    t, opts = parse_sentinel_url(
        "redis+sentinel://:s%40cret@10.0.0.1:26380,10.0.0.2,[::1]:26381/dispatch/2"
        "?tag=331002&wait_timeout_ms=500")
    assert t == SentinelTarget((("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 26381)),
                               "dispatch", 2, None, "s@cret")
    assert opts == {"tag": "331002", "wait_timeout_ms": "500"}
    assert parse_sentinel_url("redis+sentinel://h/m")[0] == SentinelTarget((("h", 26379),), "m")
    for bad in ("redis+sentinel://h:1/", "redis+sentinel://h:x/m", "redis+sentinel://h/m/0/1",
                "redis+sentinel://h/m/x", "redis+sentinel://,h/m", "redis+sentinel://h/m?db=1",
                "redis://h/m"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)
    s = RedisStore("redis+sentinel://h:1/m/3?lease_s=2")
    assert (s.sentinel, s.lease_s, s.wait_replicas) == (SentinelTarget((("h", 1),), "m", 3), 2, 1)
    assert RedisStore("redis://h:1/0").wait_replicas == 0  # plain Redis: no WAIT


@pytest.fixture
def sentinels(tmp_path: Path):
    # Without the programs: skip, or fail when DISPATCH_REQUIRE names them (.ci/run does).
    require_redis()
    require_redis_sentinel()
    made: list[SentinelSet] = []

    def make(replicas: int = 2) -> SentinelSet:
        s = SentinelSet(tmp_path / f"set-{len(made)}", replicas=replicas).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.mark.redis
@pytest.mark.slow
async def test_no_replica_no_answer(sentinels) -> None:
    """A write the master took but no replica has is not answered: a failover would lose it.

    Without WAIT the append succeeds here, and a failover to either replica drops it.
    """
    ss = sentinels(replicas=1)
    store = RedisStore(ss.url + "?wait_timeout_ms=300")
    await store.open()
    try:
        assert await store.health() is None
        await store.append([rec(1)])
        ss.replicas[0].kill()
        ss.wait_replicas(0)
        reason = await store.health()
        assert reason is not None and "0 of 1 replicas" in reason, reason
        with pytest.raises(ReplicaWaitError):
            await store.append([rec(2)])
        ss.replicas[0].start()
        ss.wait_replicas(1)
        assert await store.health() is None
        last = await store.last_seq()  # rec(2) reached the master: ambiguous, not answered
        assert last == 2
        await store.append([rec(3)])
        assert [r.seq for r in await store.read()] == [1, 2, 3]
    finally:
        await store.close()


@pytest.mark.redis
@pytest.mark.slow
async def test_store_follows_a_failover(sentinels) -> None:
    """RedisStore alone: appends under way, the master killed, appends go on to the new one."""
    ss = sentinels()
    store = RedisStore(ss.url)
    await store.open()
    acked: list[int] = []
    ok_at: list[float] = []
    failed = 0
    nxt = 1
    killed_at: float | None = None
    old = None
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 9:
            if killed_at is None and time.monotonic() - t0 > 2:
                old, killed_at = ss.kill_master(), time.monotonic()
            try:
                await store.append([rec(nxt)])
                acked.append(nxt)
                ok_at.append(time.monotonic())
                nxt += 1
            except Exception:
                failed += 1
                await asyncio.sleep(0.05)
                try:  # an ambiguous append may have landed: go on after the journal's head
                    nxt = await store.last_seq() + 1
                except Exception:
                    pass
            await asyncio.sleep(0.01)
        assert old is not None and killed_at is not None
        new = ss.wait_failover(old)
        assert new != old
        after = [t for t in ok_at if t > killed_at]
        assert failed > 0 and len(after) > 50, (failed, len(after))
        got = await store.read()
        assert verify_chain(got) is None
        assert set(acked) <= {r.seq for r in got}
        window = after[0] - max(t for t in ok_at if t <= killed_at)
        print(f"\nstore failover: {old} -> {new}, no append for {window:.2f} s, "
              f"{failed} failed appends, {len(acked)} acknowledged, all present")
    finally:
        await store.close()


@pytest.mark.redis
@pytest.mark.slow
async def test_server_keeps_going_through_a_failover(sentinels, tmp_path: Path) -> None:
    """``dispatch serve`` on ``redis+sentinel://``: 20 intakes/s for 10 s from a client that
    retries on 503 (same Idempotency-Key), the master ``kill -9``ed at 4 s."""
    ss = sentinels()
    cfg = write_config(tmp_path, store=ss.url + "?lease_s=1")
    c = Cluster(tmp_path, None, cfg)  # type: ignore[arg-type]
    (a,) = c.start(1)
    try:
        await c.wait_healthy([a])
        statuses: Counter[int] = Counter()
        answered: dict[str, str] = {}  # key -> event id
        ok_at: list[float] = []

        async def one(s: aiohttp.ClientSession, i: int) -> None:
            key = f"failover-{i}"
            end = time.monotonic() + 40
            while time.monotonic() < end:
                try:
                    async with s.post(a.url + "/api/v1/events",
                                      headers={**auth("intake"), "Idempotency-Key": key},
                                      json=intake_body(*HY, external_id=key)) as r:
                        statuses[r.status] += 1
                        if r.status in (200, 201):
                            answered[key] = (await r.json())["id"]
                            ok_at.append(time.monotonic())
                            return
                        assert r.status == 503, (r.status, await r.text())
                except (TimeoutError, aiohttp.ClientError):
                    statuses[0] += 1
                await asyncio.sleep(0.2)

        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            tasks = []
            t0 = time.monotonic()
            killed_at = old = None
            for i in range(200):  # 20/s for 10 s
                if killed_at is None and time.monotonic() - t0 >= 4:
                    old, killed_at = ss.kill_master(), time.monotonic()
                tasks.append(asyncio.create_task(one(s, i)))
                await asyncio.sleep(max(0.0, t0 + (i + 1) / 20 - time.monotonic()))
            await asyncio.gather(*tasks)
            assert old is not None and killed_at is not None
            new = ss.wait_failover(old)
            assert len(answered) == 200, (len(answered), statuses)
            assert statuses[500] == 0 and statuses[503] > 0, statuses
            assert sum(t > killed_at + 3 for t in ok_at) > 20  # kept going after it
            for eid in answered.values():
                async with s.get(f"{a.url}/api/v1/events/{eid}", headers=auth("admin")) as r:
                    assert r.status == 200, eid
            # healthy again once the remaining replica follows the new master (WAIT 1);
            # on a loaded machine its resync can outlast the last intake
            deadline = time.monotonic() + 30
            while True:
                async with s.get(a.url + "/healthz") as r:
                    if r.status == 200:
                        break
                    assert time.monotonic() < deadline, await r.text()
                await asyncio.sleep(0.2)
        store = RedisStore(ss.url)  # straight from the new master
        await store.open()
        try:
            recs = await store.read()
        finally:
            await store.close()
        assert verify_chain(recs) is None
        assert set(answered.values()) <= {r.event_id for r in recs if r.action == "created"}
        gaps = sorted(ok_at)
        window = max(b - x for x, b in zip(gaps, gaps[1:], strict=False)
                     if b > killed_at and x < killed_at + 10)
        print(f"\nserver failover: {old} -> {new}, longest gap between answers {window:.2f} s, "
              f"statuses {dict(statuses)}")
    finally:
        c.stop_all()

