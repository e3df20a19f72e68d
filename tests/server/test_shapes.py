"""One schema per shape (issue 12): the response bodies are described once, in shapes.py.

A real server renders real events (intake, a duplicate, the whole lifecycle, a breach and
its escalation on a short timer, a manual escalation, a reassign, a cancel), units, teams,
regions, statistics, health, errors and WebSocket messages. Every answer is decoded into the
shape the OpenAPI document names for its path and status (``msgspec.json.decode(type=...)``
as a client would), and must be held exactly (``shapes.conforms``: no key the shape does not
know, none missing, every value kept), so ``render.py``/``api.py`` and ``shapes.py`` cannot
drift: a field added to or renamed in the renderer fails here until the shape has it.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dispatch.server import open311_openapi, schemas, shapes
from dispatch.server.openapi import DOCUMENT, SCHEMAS
from dispatch.server.stats import GROUPS
from tests.server.conftest import BEIYANG_RESERVOIR, Server, intake_body, point_in, start_server

REF = "#/components/schemas/"


def documented_shape(template: str, method: str, status: int) -> type[msgspec.Struct]:
    """The Struct the document names for this operation's ``status`` answer."""
    op = DOCUMENT["paths"][template][method.lower()]
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    return getattr(shapes, schema["$ref"].removeprefix(REF))


class Checked:
    """Calls a real server and holds each JSON answer to its documented shape."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.seen: dict[str, int] = {}

    async def __call__(self, method: str, template: str, who: str | None = "admin",
                       status: int = 200, params: dict[str, str] | None = None,
                       query: str = "", **kw: Any) -> Any:
        headers = {**(self.srv.auth(who) if who else {}), **kw.pop("headers", {})}
        url = self.srv.url + template.format(**(params or {})) + query
        async with self.srv.session.request(method, url, headers=headers, **kw) as r:
            raw = await r.read()
            assert r.status == status, (method, url, r.status, raw[:300])
            assert r.content_type == "application/json", (url, r.content_type)
        return self.check(documented_shape(template, method, status), raw)

    def check(self, shape: type[msgspec.Struct], raw: bytes) -> Any:
        msgspec.json.decode(raw, type=shape)  # what a typed client does with the answer
        data = json.loads(raw)
        shapes.conforms(shape, data)  # ...and nothing of it is lost or unknown
        self.seen[shape.__name__] = self.seen.get(shape.__name__, 0) + 1
        return data


async def until_event(call: Checked, eid: str, pred: Any, timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        ev = await call("GET", "/api/v1/events/{id}", params={"id": eid})
        if pred(ev):
            return ev
        assert loop.time() < end, f"timed out waiting on {eid}: {ev['timeline']}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def srv(tmp_path: Path):
    # 1 s to respond (a breach and its escalation come by themselves within the test); two
    # failed logins per address before 429 (the last check of the test).
    s = await start_server(tmp_path, timers={"respond_s": 1.0, "depart_s": 600, "arrive_s": 900},
                           limits={"auth_failures_burst": 2, "auth_failures_per_min": 1},
                           # a receiver that is never up: its deliveries stay pending
                           webhooks=[{"id": "wh-shape", "url": "http://127.0.0.1:9/hook",
                                      "secret": "shape-secret"}],
                           departments=[{"id": "d-market", "name": "市场监管局"}])
    yield s
    await s.session.close()
    await s.runner.cleanup()


async def test_every_answer_is_exactly_its_documented_shape(srv):
    call = Checked(srv)
    ev_path, act_path = "/api/v1/events/{id}", "/api/v1/events/{id}/{action}"
    # -- a WebSocket open before anything happens: its pushes are the Event shape
    ws = await srv.session.ws_connect(srv.ws_url, headers=srv.auth("admin"))
    snap = await ws.receive_json(timeout=5)
    assert snap["type"] == "snapshot"

    # -- intake: created, duplicate by key, in a zone with everything optional given
    lon, lat = point_in(srv, "331003")
    a = await call("POST", "/api/v1/events", "intake", 201, json=intake_body(lon, lat),
                   headers={"Idempotency-Key": "k-1"})
    again = await call("POST", "/api/v1/events", "intake", 200, json=intake_body(lon, lat),
                       headers={"Idempotency-Key": "k-1"})
    assert again["id"] == a["id"]
    b = await call("POST", "/api/v1/events", "intake", 201, json=intake_body(
        *BEIYANG_RESERVOIR, category="illegal_fishing", external_id="12345-1", priority=1,
        reporter={"name": "王先生", "phone": "138"}, reported_at=a["created_at"],
        location={"lon": BEIYANG_RESERVOIR[0], "lat": BEIYANG_RESERVOIR[1], "crs": "gcj02"}))
    assert b["zone"] and b["reporter"]["name"] == "王先生"
    c = await call("POST", "/api/v1/events", "city", 201,
                   json=intake_body(*point_in(srv, "331002")))

    # -- a's whole lifecycle by its own unit, on time (and a retried respond)
    unit = srv.field_token(a["unit"])
    for action in ("respond", "respond", "depart", "arrive"):
        await call("POST", act_path, unit, params={"id": a["id"], "action": action}, json={})
    done = await call("POST", act_path, unit, params={"id": a["id"], "action": "resolve"},
                      json={"note": "已处置"})
    assert done["status"] == "resolved" and done["timer_state"] == "closed"

    # -- c breaches its 1 s respond window and escalates by itself, d by hand; c reassigned
    c = await until_event(call, c["id"], lambda e: e["escalations"])
    assert c["breaches"] == ["respond"] and c["timer_state"] == "escalated"
    assert [t["action"] for t in c["timeline"]][-3:] == ["warned", "breached", "escalated"]
    d = await call("POST", "/api/v1/events", "city", 201,
                   json=intake_body(*point_in(srv, "331003", skip=1)))
    assert d["tier"] != "city"
    d = await call("POST", act_path, "city", params={"id": d["id"], "action": "escalate"})
    assert d["escalations"][-1]["manual"] is True and d["escalations"][-1]["stage"] is None
    picks = await call("GET", "/api/v1/events/{id}/units", params={"id": c["id"]})
    assert picks["recommended"] is not None and picks["nearby"]
    call.check(shapes.UnitPick, json.dumps(picks["recommended"]).encode())
    other = next(p["unit"] for p in picks["nearby"] if p["unit"] != c["unit"])
    c = await call("POST", act_path, "city", params={"id": c["id"], "action": "reassign"},
                   json={"unit": other, "note": "换人"})
    assert c["unit"] == other and c["deadlines"]["respond"]
    await call("GET", "/api/v1/events/{id}/units", params={"id": b["id"]})

    # -- reads: one event, pages of the list, every filter's page shape
    await call("GET", ev_path, "city", params={"id": b["id"]})
    page = await call("GET", "/api/v1/events", "city", query="?limit=1")
    assert page["next"] is not None and "timeline" not in page["events"][0]
    await call("GET", "/api/v1/events", "city", query=f"?limit=1000&cursor={page['next']}")
    await call("GET", "/api/v1/events", "supervisor", query="?breached=true&status=dispatched")

    # -- units, positions, teams, categories, regions, zones, stats, who, map, health
    moved = await call("PUT", "/api/v1/units/{id}/position", unit, params={"id": a["unit"]},
                       json={"lon": lon, "lat": lat, "accuracy_m": 8})
    assert moved["source"] == "reported"
    units = await call("GET", "/api/v1/units", "city")
    assert {u["source"] for u in units["units"]} >= {"reported", "base"}
    assert not all(u["available"] for u in units["units"])
    await call("GET", "/api/v1/units", unit)
    await call("GET", "/api/v1/teams", "huangyan")
    cats = await call("GET", "/api/v1/categories", "intake")
    assert cats["categories"][0]["timers"]["respond_s"] == 1.0
    for level in ("", "?level=grid", "?level=city"):
        await call("GET", "/api/v1/regions", "city", query=level)
    await call("GET", "/api/v1/zones", "huangyan")
    for group_by in GROUPS:
        stats = await call("GET", "/api/v1/stats/response-times", "supervisor",
                           query=f"?group_by={group_by}")
        assert stats["groups"]
    for who in ("admin", "city", "intake", unit):
        await call("GET", "/api/v1/me", who)
    ui = await call("GET", "/api/v1/ui", "city")
    assert ui["server_time"]
    health = await call("GET", "/healthz", None)
    assert health["status"] == "ok" and health["ws_clients"] == 1

    # -- the pushes: every message's event is an Event, the snapshot's are summaries
    pushed = 0
    while True:
        try:
            msg = await ws.receive_json(timeout=0.5)
        except TimeoutError:
            break
        if "event" in msg:
            call.check(shapes.Event, json.dumps(msg["event"]).encode())
            pushed += 1
        for u in msg.get("units") or ([msg["unit"]] if "unit" in msg else []):
            call.check(shapes.Unit, json.dumps(u).encode())
    assert pushed >= 12
    await ws.close()
    ws = await srv.session.ws_connect(srv.ws_url, headers=srv.auth("city"))
    snap = await ws.receive_json(timeout=5)
    assert snap["type"] == "snapshot" and snap["events"]
    for e in snap["events"]:
        call.check(shapes.EventSummary, json.dumps(e).encode())
    for u in snap["units"]:
        call.check(shapes.Unit, json.dumps(u).encode())
    await ws.close()

    # -- cancel, then every kind of error body
    await call("POST", act_path, "city", params={"id": c["id"], "action": "cancel"})
    conflict = await call("POST", act_path, "city", 409,
                          params={"id": c["id"], "action": "resolve"})
    assert conflict["error"]["status"] == "cancelled"
    # -- evidence on a (contract §8): the upload's answer, then the event carrying it
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    ev_file = await call("POST", "/api/v1/events/{id}/evidence", "city", 201,
                         params={"id": a["id"]}, query="?name=scene.png", data=png,
                         headers={"Content-Type": "image/png"})
    assert ev_file["size"] == len(png)
    held = await call("GET", ev_path, "city", params={"id": a["id"]})
    assert [e["sha256"] for e in held["evidence"]] == [ev_file["sha256"]]
    # -- a transfer to a department (contract §8): the event carries it, stats count it
    deps = await call("GET", "/api/v1/departments", "city")
    assert [d["id"] for d in deps["departments"]] == ["d-market"]
    t = await call("POST", "/api/v1/events", "city", 201,
                   json=intake_body(*point_in(srv, "331003", skip=2)))
    t = await call("POST", act_path, "city", params={"id": t["id"], "action": "transfer"},
                   json={"department": "d-market", "note": "移送市场监管"})
    assert t["status"] == "transferred" and t["transfer"]["department"] == "d-market"
    assert t["timer_state"] == "transferred"
    st = await call("GET", "/api/v1/stats/response-times", "city")
    assert [r["department"] for r in st["transfers"]] == ["d-market"]
    # -- a webhook's deliveries: every change above is pending (its receiver is down)
    dl = await call("GET", "/api/v1/webhooks/{id}/deliveries", params={"id": "wh-shape"})
    assert dl["pending"] or dl["retrying"]

    missing = await call("GET", ev_path, "city", 404, params={"id": "E9999999"})
    assert missing["error"]["field"] is None
    bad = await call("GET", "/api/v1/events", "city", 422, query="?limit=0")
    assert bad["error"]["field"] == "limit"
    bad = await call("POST", "/api/v1/events", "intake", 422, json={"location": {"lon": 1}})
    assert bad["error"]["field"] == "location.lat"
    await call("GET", "/api/v1/events", "intake", 403)
    await call("POST", "/api/v1/events", "intake", 415, data=b"{}",
               headers={"Content-Type": "text/plain"})
    await call("POST", "/api/v1/events", "intake", 400, data=b'{"a": ',
               headers={"Content-Type": "application/json"})
    await call("POST", "/api/v1/events", "intake", 413, data=b"[" + b" " * 70_000 + b"]",
               headers={"Content-Type": "application/json"})
    await call("GET", "/api/v1/me", None, 401)
    await call("GET", "/api/v1/me", None, 401)
    limited = await call("GET", "/api/v1/me", None, 429)
    assert limited["error"]["retry_after_s"] > 0

    # every response shape the document names was rendered and held at least once
    assert set(call.seen) >= {s.__name__ for s in shapes.RESPONSES}, call.seen


def test_the_response_components_are_generated_from_the_shapes():
    generated = shapes.components()
    for name, schema in generated.items():
        assert SCHEMAS[name] == schema, name
    # nothing in the document is written by hand: every component is a shape or a body
    # (but for the Open311 standard's own shapes, described beside its routes)
    assert set(SCHEMAS) == (set(generated) | set(schemas.components())
                            | set(open311_openapi.SCHEMAS))
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(DOCUMENT)))
    assert refs <= set(SCHEMAS), refs - set(SCHEMAS)
    # the names the paths (and schemathesis' links, tests, clients) use stay what they were
    named = {"Event", "EventSummary", "EventList", "Unit", "UnitList", "UnitPick",
             "EventUnits", "Categories", "Teams", "FeatureCollection", "Stats", "Me", "UI",
             "Health", "Error", "Evidence", "Deliveries", "Departments"}
    assert named == {s.__name__ for s in shapes.RESPONSES} and named <= refs
    event = SCHEMAS["Event"]
    assert set(event["required"]) == set(event["properties"])  # render sends every key
    assert set(SCHEMAS["EventSummary"]["properties"]) == set(event["properties"]) - {"timeline"}
    assert SCHEMAS["Error"]["properties"]["error"] == {"$ref": REF + "ErrorDetail"}
    assert SCHEMAS["ErrorDetail"]["required"] == ["code", "message", "field"]
    assert SCHEMAS["Escalation"]["required"] == ["at", "from", "to", "stage", "manual"]


async def test_conforms_fails_when_the_renderer_and_the_shape_drift(server):
    """What the strict check catches: a key added, renamed or dropped, a value changed."""
    lon, lat = point_in(server, "331002")
    _, ev = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    shapes.conforms(shapes.Event, ev)
    drifted: list[tuple[str, Any]] = [
        ("a key the shape does not know", {**ev, "archived_by": None}),
        ("missing required field `unit`",
         {**{k: v for k, v in ev.items() if k != "unit"}, "unit_id": ev["unit"]}),
        ("missing required field", {k: v for k, v in ev.items() if k != "version"}),
        ("a key the shape does not know",
         {**ev, "timeline": [{**ev["timeline"][0], "by": "x"}]}),
        ("a key the shape does not know",
         {**ev, "location": {**ev["location"], "alt": 3}}),
        ("Expected `str | null`, got `int` - at `$.created_at`", {**ev, "created_at": 1}),
        ("Invalid enum value", {**ev, "status": "archived"}),
        ("Invalid enum value", {**ev, "timer_state": "late"}),
    ]
    for why, data in drifted:
        with pytest.raises(ValueError, match=re.escape(why)):
            shapes.conforms(shapes.Event, data)
    with pytest.raises(ValueError, match="timeline"):
        shapes.conforms(shapes.EventSummary, ev)  # a listed event has no timeline
    listed = {k: v for k, v in ev.items() if k != "timeline"}
    shapes.conforms(shapes.EventSummary, listed)
    with pytest.raises(ValueError, match="missing required field `timeline`"):
        shapes.conforms(shapes.Event, listed)

