"""WebSocket end to end with real `websockets` clients over loopback (contract §4)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import websockets

from tests.server.conftest import intake_body, point_in, start_server


async def connect(srv, who: str, since: int | None = None):
    q = f"?since={since}" if since is not None else ""
    return await websockets.connect(srv.ws_url + q, additional_headers=srv.auth(who),
                                    max_size=None)


async def recv(ws, timeout: float = 3.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, pred, timeout: float = 5.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        msg = await recv(ws, max(0.01, end - loop.time()))
        if pred(msg):
            return msg


async def marker_comes_next(srv, ws, lon: float, lat: float) -> dict[str, Any]:
    """Proves that nothing (but unit.updated) arrived on ``ws`` since its last message.

    Posts a marker event at (lon, lat), which must lie in the socket's scope: the hub sends in
    seq order, so anything that was on its way arrives before the marker's event.created, and
    the next message must be the marker's. No sleep: a slow machine cannot make it pass.
    """
    status, marker = await srv.call("POST", "/api/v1/events", "intake",
                                    json=intake_body(lon, lat, description="marker"))
    assert status == 201, marker
    msg = await recv_until(ws, lambda m: m["type"] != "unit.updated")
    assert (msg["type"], msg.get("event", {}).get("id")) == ("event.created", marker["id"]), msg
    return msg


async def test_created_reaches_operators_in_scope_only(server):
    hy = await connect(server, "huangyan")
    jj = await connect(server, "jiaojiang")
    city = await connect(server, "city")
    for ws in (hy, jj, city):
        snap = await recv(ws)
        assert snap["type"] == "snapshot" and snap["events"] == [] and "seq" in snap
    lon, lat = point_in(server, "331003")
    _, ev = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    for ws in (hy, city):
        msg = await recv_until(ws, lambda m: m["type"] == "event.created")
        assert msg["event"]["id"] == ev["id"] and msg["event"]["team"] == ev["team"]
        assert msg["seq"] == ev["seq"]
    await marker_comes_next(server, jj, *point_in(server, "331002"))
    for ws in (hy, jj, city):
        await ws.close()


async def test_subscribe_narrows_and_refuses_outside_scope(server):
    hy = await connect(server, "city")
    await recv(hy)
    await hy.send(json.dumps({"type": "subscribe", "region": "331002", "id": 1}))
    ack = await recv_until(hy, lambda m: m.get("id") == 1)
    assert ack["type"] == "subscribed"
    lon, lat = point_in(server, "331003")
    await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    await marker_comes_next(server, hy, *point_in(server, "331002"))
    county = await connect(server, "huangyan")
    await recv(county)
    await county.send(json.dumps({"type": "subscribe", "region": "331002", "id": 2}))
    err = await recv_until(county, lambda m: m.get("id") == 2)
    assert err["type"] == "error" and err["error"]["code"] == "forbidden"
    await hy.close()
    await county.close()


async def test_field_unit_acts_over_the_socket(server):
    lon, lat = point_in(server, "331003")
    _, ev = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    who = server.field_token(ev["unit"])
    ops = await connect(server, "huangyan")
    await recv(ops)
    phone = await connect(server, who)
    snap = await recv(phone)
    assert [e["id"] for e in snap["events"]] == [ev["id"]]
    assert [u["id"] for u in snap["units"]] == [ev["unit"]]  # its own unit, nothing else
    await phone.send(json.dumps({"type": "respond", "event": ev["id"], "id": "r1"}))
    ack = await recv_until(phone, lambda m: m.get("id") == "r1")
    assert ack["type"] == "ack" and ack["event"]["status"] == "responded"
    upd = await recv_until(ops, lambda m: m["type"] == "event.updated")
    assert upd["event"]["status"] == "responded"
    await phone.send(json.dumps({"type": "position", "lon": lon, "lat": lat, "id": "p1"}))
    ack = await recv_until(phone, lambda m: m.get("id") == "p1")
    assert ack["type"] == "ack" and ack["unit"]["source"] == "reported"
    moved = await recv_until(ops, lambda m: m["type"] == "unit.updated")
    assert moved["unit"]["id"] == ev["unit"]
    for bad, code in (("not json", "malformed_json"), ('{"type": "fly"}', "unknown_type"),
                      ('{"no": "type"}', "invalid_message"),
                      ('{{"type": "cancel", "event": "{}"}}'.format(ev["id"]), "forbidden")):
        await phone.send(bad)
        err = await recv_until(phone, lambda m: m["type"] == "error")
        assert err["error"]["code"] == code
    await phone.send(json.dumps({"type": "ping"}))
    assert (await recv_until(phone, lambda m: m["type"] == "pong"))["type"] == "pong"
    await ops.close()
    await phone.close()


async def test_breach_escalates_to_county_socket(tmp_path):
    srv = await start_server(tmp_path, timers={"respond_s": 0.6, "depart_s": 1.2,
                                               "arrive_s": 30, "warn_fraction": 0.5})
    try:
        lon, lat = point_in(srv, "331003")
        ds = srv.state.runtime.dataset
        county = await connect(srv, "huangyan")
        await recv(county)
        _, ev = await srv.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
        assert ev["tier"] == "township", "demo point must go to an empowered township"
        types = []
        while "event.escalated" not in types or types.count("timer.breached") < 1:
            msg = await recv_until(county, lambda m: m["type"] != "unit.updated", 3.0)
            types.append(msg["type"])
            if msg["type"] == "timer.breached":
                assert msg["stage"] == "respond" and "respond" in msg["event"]["breaches"]
            if msg["type"] == "event.escalated":
                assert msg["event"]["tier"] == "county"
                assert msg["from"] == "township" and msg["to"] == "county"
        assert types.index("timer.warning") < types.index("timer.breached")
        # the depart deadline escalates to the city next
        msg = await recv_until(county, lambda m: m["type"] == "event.escalated", 3.0)
        assert msg["event"]["tier"] == "city"
        assert ds.county_of(ev["township"]) == "331003"
        await county.close()
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


async def test_reconnect_with_since_gets_exactly_what_was_missed(server):
    lon, lat = point_in(server, "331003")
    jj = point_in(server, "331002")
    ws = await connect(server, "huangyan")
    snap = await recv(ws)
    _, first = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    msg = await recv_until(ws, lambda m: m["type"] == "event.created")
    last = msg["seq"]
    await ws.close()
    # changes while away: two in scope, one outside
    _, second = await server.call("POST", "/api/v1/events", "intake",
                                  json=intake_body(lon, lat))
    await server.call("POST", "/api/v1/events", "intake", json=intake_body(*jj))
    await server.call("POST", f"/api/v1/events/{first['id']}/respond", "admin")
    ws = await connect(server, "huangyan", since=last)
    got = [await recv(ws), await recv(ws)]
    assert [(m["type"], m["event"]["id"]) for m in got] == [
        ("event.created", second["id"]), ("event.updated", first["id"])]
    assert got[0]["seq"] < got[1]["seq"] and got[0]["seq"] > last
    assert got[1]["event"]["status"] == "responded"
    # then live messages, nothing repeated
    _, third = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    live = await recv_until(ws, lambda m: m["type"] != "unit.updated")
    assert live["event"]["id"] == third["id"] and live["seq"] > got[1]["seq"]
    await marker_comes_next(server, ws, lon, lat)
    await ws.close()
    assert snap["seq"] == 0


async def test_since_too_old_gets_snapshot(tmp_path):
    srv = await start_server(tmp_path, ws={"replay_max": 2})
    try:
        lon, lat = point_in(srv, "331003")
        for _ in range(4):
            await srv.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
        ws = await connect(srv, "huangyan", since=0)
        snap = await recv(ws)
        assert snap["type"] == "snapshot" and len(snap["events"]) == 4
        assert snap["seq"] == srv.state.runtime.engine.last_seq
        await ws.close()
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


async def test_long_replay_streams_in_batches_complete_and_in_order(server, monkeypatch):
    from dispatch.server import ws as ws_module

    monkeypatch.setattr(ws_module, "REPLAY_BATCH", 7)  # many batches from a short journal
    lon, lat = point_in(server, "331003")
    outside = point_in(server, "331002")
    ids = []
    for i in range(30):
        _, ev = await server.call("POST", "/api/v1/events", "intake",
                                  json=intake_body(*(outside if i % 3 == 0 else (lon, lat))))
        ids.append((ev["id"], i % 3 != 0))
    ws = await connect(server, "huangyan", since=0)
    got = [await recv(ws) for _ in range(20)]
    assert [m["event"]["id"] for m in got] == [eid for eid, mine in ids if mine]
    assert [m["seq"] for m in got] == sorted(m["seq"] for m in got)
    _, live = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    msg = await recv_until(ws, lambda m: m["type"] != "unit.updated")
    assert msg["event"]["id"] == live["id"] and msg["seq"] > got[-1]["seq"]
    await ws.close()


async def test_slow_client_is_dropped_while_others_keep_up(tmp_path):
    srv = await start_server(tmp_path, ws={"queue_size": 5})
    try:
        lon, lat = point_in(srv, "331003")
        # a client with a tiny receive window that stops reading
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", int(srv.url.rsplit(":", 1)[1])))
        slow = await websockets.connect(srv.ws_url, sock=raw, additional_headers=srv.auth("city"),
                                        max_size=None)
        fast = await connect(srv, "city")
        await recv(fast)
        # the slow client stops reading: its transport fills, then its queue overflows
        slow.transport.pause_reading()
        received = 0
        for _i in range(1500):
            await srv.call("POST", "/api/v1/events", "intake",
                           json=intake_body(lon, lat, description="长" * 1500))
            msg = await recv_until(fast, lambda m: m["type"] == "event.created", 2.0)
            received += 1
            assert msg["event"]["description"].startswith("长")
            if srv.state.hub.disconnected_slow:
                break
        assert srv.state.hub.disconnected_slow == 1
        assert len(srv.state.hub.clients) == 1
        await fast.close()
        slow.transport.resume_reading()
        with pytest.raises(websockets.ConnectionClosed) as exc:
            while True:
                await recv(slow, 3.0)
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 1008
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


async def test_websocket_rejects_missing_token_and_intake(server):
    with pytest.raises(websockets.InvalidStatus) as exc:
        await websockets.connect(server.ws_url)
    assert exc.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as exc:
        await connect(server, "intake")
    assert exc.value.response.status_code == 403


async def test_oversize_frame_closes_only_that_socket(server):
    big = await connect(server, "city")
    other = await connect(server, "city")
    await recv(big)
    await recv(other)
    await big.send(json.dumps({"type": "ping", "pad": "x" * 70000}))
    with pytest.raises(websockets.ConnectionClosed) as exc:
        while True:
            await recv(big)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 1009
    await other.send(json.dumps({"type": "ping"}))
    assert (await recv_until(other, lambda m: m["type"] == "pong"))["type"] == "pong"
    await other.close()


async def test_batched_positions_arrive_as_one_frame_per_flush(tmp_path):
    srv = await start_server(tmp_path, ws={"position_flush_s": 0.2})
    try:
        batched = await websockets.connect(srv.ws_url + "?positions=batch",
                                           additional_headers=srv.auth("huangyan"))
        plain = await connect(srv, "huangyan")
        await recv(batched)
        await recv(plain)
        ds = srv.state.runtime.dataset
        units = [u for u in sorted(ds.units)
                 if ds.county_of(ds.teams[ds.units[u].team].region) == "331003"][:3]
        lon, lat = point_in(srv, "331003")
        for _i, u in enumerate(units):
            for step in range(2):  # two reports each: only the latest is sent
                code, _ = await srv.call("PUT", f"/api/v1/units/{u}/position", "admin",
                                         json={"lon": lon + 0.001 * step, "lat": lat})
                assert code == 200
        msg = await recv_until(batched, lambda m: m["type"] == "units.updated", 2.0)
        assert sorted(x["id"] for x in msg["units"]) == units
        assert all(abs(x["lon"] - (lon + 0.001)) < 1e-6 for x in msg["units"])
        singles = [await recv_until(plain, lambda m: m["type"] == "unit.updated")
                   for _ in range(6)]
        assert [m["unit"]["id"] for m in singles] == [u for u in units for _ in range(2)]
        await batched.close()
        await plain.close()
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


async def test_a_replay_from_zero_shows_each_change_as_the_live_push_did(server):
    """Records carry the change, not the event: a replay rebuilds each message's event (its
    whole timeline and escalations included) exactly as it was pushed live."""
    lon, lat = point_in(server, "331003")
    ws = await connect(server, "city")
    await recv(ws)  # snapshot
    _, ev = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    eid = ev["id"]
    for i in range(6):
        await server.call("POST", f"/api/v1/events/{eid}/reassign", "admin",
                          json={"team": ev["team"], "note": f"改派 {i}"})
        if i % 2:
            await server.call("POST", f"/api/v1/events/{eid}/escalate", "admin",
                              json={"note": f"上报 {i}"})
    await server.call("POST", f"/api/v1/events/{eid}/respond", "admin")
    live = []
    while not live or live[-1].get("action") != "responded":
        m = await recv_until(ws, lambda m: m.get("event", {}).get("id") == eid)
        live.append(m)
    await ws.close()
    ws = await connect(server, "city", since=0)
    replayed = [await recv_until(ws, lambda m: m.get("event", {}).get("id") == eid)
                for _ in live]
    await ws.close()

    def same(m: dict[str, Any]) -> dict[str, Any]:
        e = {k: v for k, v in m["event"].items() if k != "timer_state"}
        return {"seq": m["seq"], "type": m["type"], "event": e}

    assert [same(m) for m in replayed] == [same(m) for m in live]
    assert len(live[-1]["event"]["timeline"]) >= 8 and live[-1]["event"]["escalations"]
