"""Several real server processes on one real redis-server (``python -m dispatch serve``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.redis_fixture import (
    RedisServer,
    free_port,
    redis_server,  # noqa: F401  (a fixture)
    require_redis,
)
from tests.server.conftest import TOKENS, intake_body, write_config

DISPATCH = [sys.executable, "-m", "dispatch"]
# A plain township point in 黄岩区 of the demo data (tests/server/test_process.py checks it).
HY = (121.2611, 28.6408)


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]['token']}"}


@dataclass
class Instance:
    """One ``dispatch serve`` process."""

    port: int
    proc: subprocess.Popen[str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def kill9(self) -> None:
        with_pg = os.getpgid(self.proc.pid)
        os.killpg(with_pg, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@dataclass
class Cluster:
    """A redis-server and the instances started on it."""

    tmp: Path
    redis: RedisServer
    config: Path
    instances: list[Instance] = field(default_factory=list)

    def start(self, n: int = 1) -> list[Instance]:
        out = []
        for _ in range(n):
            port = free_port()
            i = len(self.instances)
            log = self.tmp / f"instance-{i}.log"
            proc = subprocess.Popen(
                [*DISPATCH, "serve", "--config", str(self.config), "--port", str(port)],
                stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
                start_new_session=True)
            inst = Instance(port, proc, log)
            self.instances.append(inst)
            out.append(inst)
        return out

    async def wait_healthy(self, insts: list[Instance], timeout: float = 40) -> None:
        end = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            for inst in insts:
                while True:
                    assert inst.proc.poll() is None, inst.log.read_text()
                    assert time.monotonic() < end, "instance did not become healthy"
                    try:
                        async with s.get(inst.url + "/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)

    def stop_all(self) -> None:
        for inst in self.instances:
            inst.stop()


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Any]:
    """``make(appendonly=False, appendfsync="everysec", lease_s=1.0, **config sections)``."""
    require_redis()  # skips, or fails under DISPATCH_REQUIRE
    made: list[Cluster] = []

    def make(appendonly: bool = False, appendfsync: str = "everysec", lease_s: float = 1.0,
             **sections: Any) -> Cluster:
        redis = RedisServer(tmp_path / "redis", appendonly=appendonly,
                            appendfsync=appendfsync).start()
        cfg = write_config(tmp_path, store=f"{redis.url}?lease_s={lease_s}", **sections)
        c = Cluster(tmp_path, redis, cfg)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop_all()
        c.redis.stop()


async def post_events(url: str, n: int, prefix: str, pause_s: float = 0.002,
                      statuses: list[int] | None = None) -> list[str]:
    """POST ``n`` events concurrently; the ids answered 201 (statuses of all answers)."""
    ids: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        async def one(i: int) -> None:
            try:
                async with s.post(url + "/api/v1/events", headers=auth("intake"),
                                  json=intake_body(*HY, external_id=f"{prefix}-{i}")) as r:
                    if statuses is not None:
                        statuses.append(r.status)
                    if r.status == 201:
                        ids.append((await r.json())["id"])
            except (TimeoutError, aiohttp.ClientError):
                if statuses is not None:
                    statuses.append(0)

        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(pause_s)
        await asyncio.gather(*tasks)
    return ids


async def journal(redis_url: str) -> list[Any]:
    """Every record in the shared journal (read straight from Redis)."""
    from dispatch.store.redis import RedisStore

    s = RedisStore(redis_url)
    await s.open()
    try:
        return await s.read()
    finally:
        await s.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
