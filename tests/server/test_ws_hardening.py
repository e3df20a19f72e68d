"""The hardened socket (issue 11 #1 hub part, #6), with real clients over loopback.

Each test fails on the socket as it was before issue 11. "Nothing arrives" is always shown by
an in-scope marker that arrives after it, never by a pause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import pytest
import websockets
import yaml

from dispatch.config import hash_token
from dispatch.server import scope as scope_module
from dispatch.server import ws as ws_module
from dispatch.server.auth import issue_token, revoke_tokens
from dispatch.server.ws import ERROR_MESSAGES
from tests.server.conftest import Server, intake_body, point_in, start_server

POSITIONS = ("unit.updated", "units.updated")


async def connect(srv: Server, who: str, since: int | None = None, **kw: Any):
    q = f"?since={since}" if since is not None else ""
    return await websockets.connect(srv.ws_url + q, additional_headers=srv.auth(who),
                                    max_size=None, **kw)


async def recv(ws, timeout: float = 3.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def next_change(ws, timeout: float = 3.0) -> dict[str, Any]:
    """The next message that is not a unit position."""
    while True:
        msg = await recv(ws, timeout)
        if msg["type"] not in POSITIONS:
            return msg


async def closed_code(ws, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    with pytest.raises(websockets.ConnectionClosed) as exc:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return exc.value.rcvd.code if exc.value.rcvd is not None else None


async def create(srv: Server, county: str = "331003", **kw: Any) -> dict[str, Any]:
    code, ev = await srv.call("POST", "/api/v1/events", "intake",
                              json=intake_body(*point_in(srv, county), **kw))
    assert code == 201, ev
    return ev


def poison_render(srv: Server, monkeypatch: pytest.MonkeyPatch, event_id: str) -> None:
    """Make one stored event impossible to render, as a record from before issue 11 was."""
    real = srv.state.render.event  # the one renderer REST, snapshots and the hub share

    def render(ev: dict[str, Any]) -> dict[str, Any]:
        if ev.get("id") == event_id:
            raise OverflowError("date value out of range")
        return real(ev)

    monkeypatch.setattr(srv.state.render, "event", render)


async def stop(srv: Server) -> None:
    await srv.session.close()
    await srv.runner.cleanup()


# -- defect 1: one record never breaks the others ----------------------------------------------

async def test_publish_skips_a_record_that_cannot_render_and_delivers_the_rest(
        server, monkeypatch, caplog):
    city = await connect(server, "city")
    await recv(city)
    bad, good = await create(server), await create(server)
    assert (await next_change(city))["event"]["id"] == bad["id"]
    assert (await next_change(city))["event"]["id"] == good["id"]
    recs = {r.after["id"]: r for r in await server.state.runtime.store.read(after_seq=0,
                                                                            limit=100)
            if r.action == "created"}
    poison_render(server, monkeypatch, bad["id"])
    caplog.set_level(logging.ERROR, logger="dispatch.hub")
    # one batch of two records: the bad one first
    server.state.hub.publish([recs[bad["id"]], recs[good["id"]]])
    msg = await next_change(city)
    assert msg["event"]["id"] == good["id"] and msg["seq"] == recs[good["id"]].seq
    server.state.hub.publish([recs[bad["id"]]])
    marker = await create(server)
    assert (await next_change(city))["event"]["id"] == marker["id"]
    logged = [r for r in caplog.records if f"seq {recs[bad['id']].seq} " in r.getMessage()]
    assert len(logged) == 1  # once, with its seq, however often it is met
    # a replay skips it the same way, and goes on
    again = await connect(server, "city", since=0)
    replayed = [(await next_change(again))["event"]["id"] for _ in range(2)]
    assert replayed == [good["id"], marker["id"]]
    await city.close()
    await again.close()


async def test_snapshot_leaves_out_an_event_that_cannot_render(server, monkeypatch):
    bad, good = await create(server), await create(server)
    poison_render(server, monkeypatch, bad["id"])
    ws = await connect(server, "city")
    snap = await recv(ws)
    assert snap["type"] == "snapshot"
    assert [e["id"] for e in snap["events"]] == [good["id"]]
    await ws.close()


async def test_failed_snapshot_closes_1011_and_registers_nothing(server, monkeypatch):
    def broken(*a: Any, **kw: Any) -> Any:
        raise RuntimeError("the units could not be listed")

    monkeypatch.setattr(scope_module, "units_in_scope", broken)
    for _ in range(3):
        ws = await connect(server, "city")
        assert await closed_code(ws) == 1011
    code, health = await server.call("GET", "/healthz")
    assert code == 200 and health["ws_clients"] == 0
    assert not server.state.hub.clients and not server.state.hub.connecting
    monkeypatch.undo()
    ws = await connect(server, "city")
    assert (await recv(ws))["type"] == "snapshot"
    marker = await create(server)
    assert (await next_change(ws))["event"]["id"] == marker["id"]
    code, health = await server.call("GET", "/healthz")
    assert health["ws_clients"] == 1
    await ws.close()


async def test_changes_published_while_the_snapshot_goes_out_are_not_lost(server, monkeypatch):
    created: list[dict[str, Any]] = []
    real_one = ws_module._one

    async def snapshot_then_changes(message: bytes):
        async for m in real_one(message):
            yield m
        # the snapshot is out, the client is not registered yet: two changes happen now
        created.append(await create(server))
        created.append(await create(server))

    monkeypatch.setattr(ws_module, "_one", snapshot_then_changes)
    ws = await connect(server, "city")
    snap = await recv(ws)
    gap = [await next_change(ws), await next_change(ws)]
    assert [m["event"]["id"] for m in gap] == [e["id"] for e in created]
    assert snap["seq"] < gap[0]["seq"] < gap[1]["seq"]
    monkeypatch.undo()
    live = await create(server)
    msg = await next_change(ws)
    assert msg["event"]["id"] == live["id"] and msg["seq"] > gap[1]["seq"]
    await ws.close()


# -- defect 6: the socket is no softer than HTTP --------------------------------------------

async def test_socket_messages_share_the_token_bucket_and_a_flood_is_closed(tmp_path):
    srv = await start_server(tmp_path, limits={"rate_per_s": 0.5, "rate_burst": 5})
    try:
        flood = await connect(srv, "city")  # the upgrade takes one token: four are left
        other = await connect(srv, "huangyan")
        await recv(flood)
        await recv(other)
        for i in range(12):
            await flood.send(json.dumps({"type": "ping", "id": i}))
        replies = []
        with pytest.raises(websockets.ConnectionClosed) as exc:
            while True:
                replies.append(await recv(flood))
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 1008
        assert [m["type"] for m in replies] == ["pong"] * 4 + ["error"] * 5
        for m in replies[4:]:
            assert m["error"]["code"] == "rate_limited" and m["error"]["retry_after_s"] > 0
        code, body = await srv.call("GET", "/api/v1/events", "city")
        assert code == 429 and body["error"]["code"] == "rate_limited"
        await other.send(json.dumps({"type": "ping", "id": "other"}))
        assert (await recv(other))["id"] == "other"  # another token is untouched
        await other.close()
    finally:
        await stop(srv)


async def test_replies_count_against_the_bound_of_a_client_that_never_reads(tmp_path):
    srv = await start_server(tmp_path, ws={"queue_size": 5},  # 10 KiB
                             limits={"rate_per_s": 1_000_000, "rate_burst": 1_000_000})
    try:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", int(srv.url.rsplit(":", 1)[1])))
        slow = await websockets.connect(srv.ws_url, sock=raw, additional_headers=srv.auth("city"),
                                        max_size=None)
        await recv(slow)
        watcher = await connect(srv, "city")
        await recv(watcher)
        [server_side] = [c for c in srv.state.hub.clients
                         if c.transport.get_extra_info("peername") == raw.getsockname()]
        # the server's side of the slow socket buffers little in the kernel
        server_side.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        slow.transport.pause_reading()
        sent = 0
        while not srv.state.hub.disconnected_slow and sent < 20_000:
            await slow.send(json.dumps({"type": "ping", "id": sent}))
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)
        assert srv.state.hub.disconnected_slow == 1
        assert sent < 5_000  # its replies alone took it past the bound
        marker = await create(srv)
        assert (await next_change(watcher))["event"]["id"] == marker["id"]
        assert len(srv.state.hub.clients) == 1
        # closed with 1008; the pings it kept sending may turn that into a reset: either way
        # the connection ends
        slow.transport.resume_reading()
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await slow.recv()
        await watcher.close()
    finally:
        await stop(srv)


MARK = "Zq<img src=x onerror=alert(7)>-fuzz-9d41"


async def test_error_replies_never_echo_client_text(server):
    ws = await connect(server, "city")
    await recv(ws)
    ev = await create(server)
    assert (await next_change(ws))["event"]["id"] == ev["id"]
    frames: list[str | bytes] = [
        json.dumps({"type": MARK, "id": "a1"}),
        json.dumps({"type": "subscribe", "region": MARK, "id": "a2"}),
        json.dumps({"type": "respond", "event": MARK, "id": "a3"}),
        json.dumps({"type": "position", "unit": MARK, "lon": 121.1, "lat": 28.6, "id": "a4"}),
        json.dumps({"type": "position", "unit": MARK, "lon": MARK, "id": "a5"}),
        json.dumps({"type": "reassign", "event": ev["id"], "team": MARK, "id": "a6"}),
        json.dumps({"type": "reassign", "event": ev["id"], "unit": MARK, "id": "a7"}),
        json.dumps({"type": "note", "event": ev["id"], "note": {MARK: 1}, "id": "a8"}),
        json.dumps({"type": "respond", "event": ev["id"], "at": MARK, "id": "a9"}),
        json.dumps({"type": "ping", "id": MARK * 3}),
        json.dumps({"type": "ping", "id": {"x": MARK}}),
        '{"type": "ping", "' + MARK + '": ',
        MARK,
        MARK.encode(),
    ]
    for frame in frames:
        await ws.send(frame)
    replies = [await asyncio.wait_for(ws.recv(), 3.0) for _ in frames]
    for text in replies:
        assert "Zq<" not in text and "fuzz-9d41" not in text, text
    msgs = [json.loads(t) for t in replies]
    assert [m["id"] for m in msgs[:9]] == [f"a{i}" for i in range(1, 10)]
    assert [m["type"] for m in msgs[9:11]] == ["pong", "pong"]
    assert msgs[9]["id"] is None and msgs[10]["id"] is None  # too long / not a str or int
    errors = [m for m in msgs if m["type"] == "error"]
    assert len(errors) == len(frames) - 2
    for m in errors:
        assert m["error"]["message"] in ERROR_MESSAGES.values()
    assert msgs[0]["error"]["code"] == "unknown_type"
    await ws.close()


async def test_removed_or_revoked_token_closes_its_sockets_with_4401(server):
    path = server.state.config.token_file
    tok = issue_token(path, "operator", "331003", None, name="removed-later")
    server.extra_tokens["filed"] = tok
    async with asyncio.timeout(5):  # the server sees the new file entry (it stats it)
        while not server.state.tokens.active(hash_token(tok)):
            await asyncio.sleep(0.1)
    filed = await connect(server, "filed")
    configured = await connect(server, "jiaojiang")
    city = await connect(server, "city")
    for ws in (filed, configured, city):
        assert (await recv(ws))["type"] == "snapshot"
    loop = asyncio.get_running_loop()
    # an admin removes the entry from the token file
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    kept = [e for e in entries if e.get("digest") != hash_token(tok)]
    assert len(kept) == len(entries) - 1
    path.write_text(yaml.safe_dump(kept, allow_unicode=True), encoding="utf-8")
    start = loop.time()
    assert await closed_code(filed, 6.0) == 4401
    assert loop.time() - start < 5.0
    # a configured token revoked the way `dispatch token revoke` does it
    revoke_tokens(path, server.state.config, token=server.token("jiaojiang"))
    start = loop.time()
    assert await closed_code(configured, 6.0) == 4401
    assert loop.time() - start < 5.0
    marker = await create(server)
    assert (await next_change(city))["event"]["id"] == marker["id"]
    assert server.state.hub.disconnected_revoked == 2
    await city.close()
