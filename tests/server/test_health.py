"""Issue 11 #7: /healthz tells the truth about the store, /metrics needs a token.

A real server on a loopback port. Store faults are real ones: SQLite writes failing in the
connection itself (the fault connection of tests/store/test_writer.py), Redis killed and
started again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dispatch.config import load_config
from dispatch.server.app import build_app
from dispatch.store.sqlite import SqliteStore
from tests.redis_fixture import RedisServer
from tests.server.conftest import (
    BEIYANG_RESERVOIR,
    Server,
    free_port,
    intake_body,
    start_server,
    write_config,
)
from tests.store.test_writer import Faults, faulty_factory


async def health(srv: Server) -> tuple[int, dict[str, Any]]:
    async with srv.session.get(srv.url + "/healthz") as r:
        return r.status, await r.json()


async def until_health(srv: Server, status: int, timeout: float = 10.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    code, body = await health(srv)
    while code != status and time.monotonic() < end:
        await asyncio.sleep(0.1)
        code, body = await health(srv)
    assert code == status, body
    return body


async def stop(srv: Server) -> None:
    await srv.session.close()
    await srv.runner.cleanup()


async def test_healthz_ok_names_seq_events_and_sockets(server: Server) -> None:
    code, ev = await server.call("POST", "/api/v1/events", "intake",
                                 json=intake_body(*BEIYANG_RESERVOIR))
    assert code == 201
    async with server.session.ws_connect(server.ws_url, headers=server.auth("city")) as ws:
        assert (await ws.receive_json())["type"] == "snapshot"
        code, body = await health(server)
    assert code == 200
    assert body == {"status": "ok", "seq": server.state.runtime.engine.last_seq, "events": 1,
                    "ws_clients": 1}


async def test_a_runtime_that_stopped_taking_changes_is_failing(server: Server) -> None:
    server.state.runtime.healthy = False
    code, body = await health(server)
    assert code == 503
    assert body["status"] == "failing" and "restart" in body["reason"]
    server.state.runtime.healthy = True  # lets the fixture's clean stop save its snapshot


async def test_sqlite_journal_that_cannot_be_written_is_failing_until_it_can(
        tmp_path: Path) -> None:
    faults = Faults()
    config = load_config(write_config(tmp_path))
    # The store the config names, with its connections able to fail like a full disk.
    app = build_app(config, store=SqliteStore(config.store, synchronous="NORMAL",
                                              connect_fn=faulty_factory(faults)))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    srv = Server(url=f"http://127.0.0.1:{port}", app=app, runner=runner,
                 config_path=tmp_path / "config.yaml", session=aiohttp.ClientSession())
    try:
        assert (await health(srv))[0] == 200
        faults.writes_fail = "database or disk is full"
        code, body = await srv.call("POST", "/api/v1/events", "intake",
                                    json=intake_body(*BEIYANG_RESERVOIR))
        assert code == 503 and body["error"]["code"] == "store_unavailable"
        code, body = await health(srv)  # old code: 200 "ok" while nothing can be written
        assert code == 503
        assert body["status"] == "failing" and body["reason"].startswith("disk full: ")
        faults.writes_fail = None  # space again: the store's probe sees it
        await until_health(srv, 200, timeout=5)
        code, _ = await srv.call("POST", "/api/v1/events", "intake",
                                 json=intake_body(*BEIYANG_RESERVOIR))
        assert code == 201
    finally:
        await stop(srv)


async def test_redis_down_is_failing_and_back_is_ok(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    srv = None
    try:
        srv = await start_server(tmp_path, store=redis.url)
        assert (await health(srv))[0] == 200
        redis.stop(kill=True)
        t0 = time.monotonic()
        body = await until_health(srv, 503, timeout=5)  # old code: 200 "ok" with Redis gone
        assert body["status"] == "failing" and "redis" in body["reason"]
        assert time.monotonic() - t0 < 5
        redis.start()
        await until_health(srv, 200, timeout=10)
    finally:
        if srv is not None:
            await stop(srv)
        redis.stop()


@pytest.mark.parametrize(("who", "status"), [
    (None, 401), ("intake", 403), ("city", 403), ("admin", 200), ("supervisor", 200)])
async def test_metrics_need_a_token_of_an_allowed_role(server: Server, who: str | None,
                                                        status: int) -> None:
    headers = server.auth(who) if who else {}
    async with server.session.get(server.url + "/metrics", headers=headers) as r:
        text = await r.text()
        assert r.status == status, text
    if status == 200:
        assert "dispatch_journal_seq" in text
        assert 'dispatch_auth_refused_total{reason="unauthorized"}' in text
    else:
        assert "dispatch_" not in text


async def test_metrics_roles_and_public_come_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "roles").mkdir()
    (tmp_path / "public").mkdir()
    srv = await start_server(tmp_path / "roles", metrics={"public": False, "roles": ["intake"]})
    try:
        async with srv.session.get(srv.url + "/metrics", headers=srv.auth("intake")) as r:
            assert r.status == 200
        async with srv.session.get(srv.url + "/metrics", headers=srv.auth("admin")) as r:
            assert r.status == 403
    finally:
        await stop(srv)
    srv = await start_server(tmp_path / "public", metrics={"public": True})
    try:
        async with srv.session.get(srv.url + "/metrics") as r:
            assert r.status == 200 and "dispatch_journal_seq" in await r.text()
    finally:
        await stop(srv)
