"""Redis down, hung and back: health says so within a second, appends never wait forever,
nothing answered is lost (a real redis-server with AOF ``appendfsync always``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from dispatch.core.records import verify_chain
from dispatch.store.redis import RedisStore, StoreTimeoutError
from tests.cluster.conftest import HY, auth, journal
from tests.redis_fixture import RedisServer, require_redis
from tests.server.conftest import intake_body

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))

from test_contract import rec  # noqa: E402

pytestmark = [pytest.mark.redis]


@pytest.fixture
def aof_redis(tmp_path: Path):
    require_redis()  # skips, or fails under DISPATCH_REQUIRE
    srv = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always").start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        os.kill(srv.proc.pid, signal.SIGCONT)
    srv.stop()


async def timed(coro):
    t0 = time.perf_counter()
    got = await coro
    return got, time.perf_counter() - t0


async def test_health_when_redis_is_killed_and_back(aof_redis: RedisServer) -> None:
    store = RedisStore(aof_redis.url)
    await store.open()
    try:
        assert await store.health() is None
        await store.append([rec(1), rec(2)])
        aof_redis.stop(kill=True)
        reason, took = await timed(store.health())
        assert reason is not None and reason.startswith("redis unreachable"), reason
        assert took < 1.5
        with pytest.raises(Exception) as err:  # refused at once, never a hang
            await asyncio.wait_for(store.append([rec(3)]), 5)
        assert not isinstance(err.value, TimeoutError)
        aof_redis.start()  # same port, same directory: the AOF is replayed
        assert await store.health() is None
        await store.append([rec(3)])
        got = await store.read()
        assert [r.seq for r in got] == [1, 2, 3] and verify_chain(got) is None
    finally:
        await store.close()


async def test_a_hung_redis_gets_an_answer_in_time(aof_redis: RedisServer) -> None:
    """SIGSTOP: the socket stays open and nothing answers (a frozen VM, a swap storm)."""
    store = RedisStore(aof_redis.url, append_timeout_s=0.5)
    await store.open()
    hooked: list[int] = []
    store.set_failure_hook(lambda seq, exc: hooked.append(seq))
    assert aof_redis.proc is not None
    try:
        await store.append([rec(1)])
        os.kill(aof_redis.proc.pid, signal.SIGSTOP)
        reason, took = await timed(store.health())
        assert reason == "redis unreachable: no answer within 1 s", reason
        assert took < 1.5
        t0 = time.perf_counter()
        with pytest.raises(StoreTimeoutError):
            await store.append([rec(2)])
        assert 0.45 < time.perf_counter() - t0 < 1.5
        assert hooked == [2]  # strict mode: the runtime is told to roll back
        os.kill(aof_redis.proc.pid, signal.SIGCONT)
        end = time.monotonic() + 10
        while await store.health() is not None:
            assert time.monotonic() < end, "health did not come back"
            await asyncio.sleep(0.1)
        # the given-up record may still have landed (an ambiguous outcome): go on after it
        last = await store.last_seq()
        assert last in (1, 2)
        await store.append([rec(last + 1)])
        assert verify_chain(await store.read()) is None
    finally:
        os.kill(aof_redis.proc.pid, signal.SIGCONT)
        await store.close()


async def test_health_says_a_refused_write(aof_redis: RedisServer) -> None:
    """Redis up but refusing writes (here: a replica, read-only): PING would say ok."""
    other = RedisServer(aof_redis.dir.parent / "other").start()
    store = RedisStore(aof_redis.url)
    await store.open()
    try:
        assert store.r is not None
        await store.r.execute_command("REPLICAOF", "127.0.0.1", other.port)
        reason = await store.health()
        assert reason is not None and reason.startswith("redis refuses writes: "), reason
        assert "READONLY" in reason or "read only" in reason
        await store.r.execute_command("REPLICAOF", "NO", "ONE")
        assert await store.health() is None
    finally:
        await store.close()
        other.stop()


@pytest.mark.slow
async def test_server_health_and_intake_while_redis_is_down_and_back(cluster_factory) -> None:
    c = cluster_factory(appendonly=True, appendfsync="always")
    (a,) = c.start(1)
    await c.wait_healthy([a])
    answered: list[str] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async def post(tag: str) -> tuple[int, dict]:
            async with s.post(a.url + "/api/v1/events", headers=auth("intake"),
                              json=intake_body(*HY, external_id=tag)) as r:
                body = await r.json()
                if r.status == 201:
                    answered.append(body["id"])
                return r.status, body

        async def healthz() -> tuple[int, dict]:
            async with s.get(a.url + "/healthz") as r:
                return r.status, await r.json()

        for i in range(10):
            assert (await post(f"before-{i}"))[0] == 201
        assert (await healthz())[0] == 200

        c.redis.stop(kill=True)
        t_down = time.monotonic()
        while True:
            status, body = await healthz()
            if status == 503:
                break
            assert time.monotonic() - t_down < 3, body
            await asyncio.sleep(0.05)
        to_503 = time.monotonic() - t_down
        assert body["status"] == "failing"
        assert body["reason"].startswith("redis unreachable"), body
        for i in range(3):
            status, body = await post(f"during-{i}")
            assert status == 503, body  # never a 201 for something not stored
            assert body["error"]["code"] == "store_unavailable"

        c.redis.start()  # same data dir, AOF appendfsync always
        t_up = time.monotonic()
        while (await healthz())[0] != 200:
            assert time.monotonic() - t_up < 5, "health did not come back"
            await asyncio.sleep(0.05)
        to_200 = time.monotonic() - t_up
        while (await post("after"))[0] != 201:
            assert time.monotonic() - t_up < 10, "intake did not come back"
            await asyncio.sleep(0.1)
        for eid in answered:
            async with s.get(f"{a.url}/api/v1/events/{eid}", headers=auth("admin")) as r:
                assert r.status == 200, eid
    recs = await journal(c.redis.url)
    assert verify_chain(recs) is None
    assert set(answered) <= {r.event_id for r in recs}
    assert len(answered) == 11
    print(f"\nredis down: /healthz 503 after {to_503:.2f} s; back: 200 after {to_200:.2f} s")
