"""The scope walk (issue 11, contract v2 §6): every route and every socket message, every role.

The target is an event ``E`` in county A (township ``ta1``, dispatched to one of its units) and
that unit. Each cell (route or message × role) expects one of:
- ``ok``: 2xx (or 409 for an action the event's status does not allow);
- ``role``: 403, the same answer for an unknown id (the role may never do this, whatever
  the target: supervisors never act, intake only creates);
- ``scope``: 404, the same answer as for an unknown id (the target is outside the caller's
  scope; it must not learn that the id exists).
The routes come from the app's router, so a new route without a row fails
``test_every_route_is_in_the_matrix``. The last tests prove that a county-B operator or
supervisor never receives county A's event by any channel, each "never" closed by an in-scope
marker that arrives after it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from dispatch.config import load_config
from dispatch.server.app import STATE, State, build_app
from tests.fuzz.net import (
    COUNTY_A,
    POINT_A,
    POINT_B,
    UNIT_B,
    UNITS_A,
    auth,
    free_port,
    intake_body,
    write_config,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROLES = ["admin", "op-city", "op-a", "op-b", "op-town", "sup-city", "sup-a", "sup-b",
         "field-own", "field-other", "intake", "dept-a", "dept-b"]
IN_SCOPE = {"admin", "op-city", "op-a", "op-town", "sup-city", "sup-a", "field-own"}
OPERATORS = {"admin", "op-city", "op-a", "op-town"}  # may act on E and report its unit
SUPERVISORS = {"sup-city", "sup-a", "sup-b"}
DEPARTMENTS = {"dept-a", "dept-b"}  # E is not transferred to them: they never see it
FIELD_ACTIONS = ("respond", "depart", "arrive", "resolve")
ANSWERS = ("accept", "return")  # a department's answers to a transfer (contract §8)
ACTIONS = (*FIELD_ACTIONS, "cancel", "escalate", "reassign", "transfer", *ANSWERS)
UNKNOWN_EVENT, UNKNOWN_UNIT = "E-net-unknown-0001", "u-net-unknown"
V1 = "/api/v1"


def read_cell(who: str) -> str:
    """GET of E (or its units): intake never reads; else in scope or not."""
    return "role" if who == "intake" else ("ok" if who in IN_SCOPE else "scope")


def action_cell(action: str) -> Callable[[str], str]:
    def cell(who: str) -> str:
        if who in OPERATORS:
            return "role" if action in ANSWERS else "ok"  # only a department answers
        if who == "field-own":
            return "ok" if action in FIELD_ACTIONS else "role"
        if who == "intake" or who in SUPERVISORS:
            return "role"  # never act, whatever the event: the same 403 for every id
        return "scope"  # op-b, field-other: E is not theirs to see
    return cell


def position_cell(who: str) -> str:
    """PUT the position of E's unit: operators over it, admin, the unit itself."""
    if who in OPERATORS or who == "field-own":
        return "ok"
    if who in ("intake", *SUPERVISORS, *DEPARTMENTS):
        return "role"
    return "scope"  # op-b, field-other


def create_cell(who: str) -> str:
    """POST /events at a county-A point."""
    return "ok" if who in OPERATORS or who == "intake" else "role"


def readers(who: str) -> str:
    return "role" if who == "intake" else "ok"


def stats_cell(who: str) -> str:
    return "ok" if who.startswith(("op-", "sup-")) or who == "admin" else "role"


def metrics_cell(who: str) -> str:
    return "ok" if who == "admin" or who in SUPERVISORS else "role"


def anyone(who: str) -> str:
    return "ok"


def not_open311(who: str) -> str:
    """Open311's public GET of E: E came in through /api/v1, so it is no Open311 request and
    answers 404 to everyone (the bearer token plays no part there)."""
    return "scope"


def open311_post(who: str) -> str:
    """Open311's POST without an ``api_key``: 403 whoever (a bearer token is not its key)."""
    return "role"

def admin_only(who: str) -> str:
    """The webhooks' endpoints: an admin's; every other role 403 whatever the id."""
    return "ok" if who == "admin" else "role"


WEBHOOK = "wh-walk"  # configured in ``net`` (its receiver is never up)


def attach_cell(who: str) -> str:
    """Evidence upload (contract §8): the assigned unit, an operator in scope, an admin."""
    if who in OPERATORS or who == "field-own":
        return "ok"
    if who in ("intake", *SUPERVISORS, *DEPARTMENTS):
        return "role"
    return "scope"  # op-b, field-other


def dossier_cell(who: str) -> str:
    """The dossier: operators, supervisors, admins, for the events they read."""
    if who.startswith("field") or who in ("intake", *DEPARTMENTS):
        return "role"
    return "ok" if who in IN_SCOPE else "scope"


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # what an evidence upload of the walk sends
UNKNOWN_SHA = "0" * 64


# (method, route as the router names it) → how every role fares against E.
MATRIX: dict[tuple[str, str], Callable[[str], str]] = {
    ("POST", f"{V1}/events"): create_cell,
    ("GET", f"{V1}/events"): readers,
    ("GET", f"{V1}/events/{{id}}"): read_cell,
    ("GET", f"{V1}/events/{{id}}/units"): read_cell,
    ("POST", f"{V1}/events/{{id}}/{{action}}"): action_cell("respond"),  # each action below
    **{("POST", f"{V1}/events/{{id}}/{a}"): action_cell(a) for a in ("transfer", *ANSWERS)},
    ("GET", f"{V1}/departments"): readers,
    ("GET", f"{V1}/categories"): anyone,
    ("PUT", f"{V1}/units/{{id}}/position"): position_cell,
    ("GET", f"{V1}/units"): readers,
    ("GET", f"{V1}/teams"): anyone,
    ("GET", f"{V1}/regions"): anyone,
    ("GET", f"{V1}/zones"): anyone,
    ("GET", f"{V1}/stats/response-times"): stats_cell,
    ("GET", f"{V1}/stats/export"): stats_cell,
    ("GET", f"{V1}/me"): anyone,
    ("GET", f"{V1}/ui"): anyone,
    ("GET", f"{V1}/webhooks/{{id}}/deliveries"): admin_only,
    ("POST", f"{V1}/webhooks/{{id}}/redeliver"): admin_only,
    ("GET", "/healthz"): anyone,
    ("GET", "/metrics"): metrics_cell,
    ("GET", "/ws"): readers,
    ("GET", "/api/openapi.json"): anyone,
    ("GET", "/"): anyone,
    ("GET", "/ops"): anyone,
    ("GET", "/field"): anyone,
    ("GET", "/supervisor"): anyone,
    ("GET", "/open311/v2/services.json"): anyone,
    ("GET", "/open311/v2/requests.json"): anyone,
    ("POST", "/open311/v2/requests.json"): open311_post,
    ("GET", "/open311/v2/requests/{id}.json"): not_open311,
    ("GET", "/department"): anyone,
    ("POST", f"{V1}/events/{{id}}/evidence"): attach_cell,
    ("GET", f"{V1}/events/{{id}}/dossier"): dossier_cell,
    ("GET", f"{V1}/evidence/{{sha256}}"): read_cell,  # whoever reads an event carrying it
}
ID_ROUTES = {f"{V1}/events/{{id}}", f"{V1}/events/{{id}}/units",
             f"{V1}/events/{{id}}/{{action}}", f"{V1}/units/{{id}}/position",
             *(f"{V1}/events/{{id}}/{a}" for a in ("transfer", *ANSWERS)),
             f"{V1}/events/{{id}}/evidence", f"{V1}/events/{{id}}/dossier",
             f"{V1}/evidence/{{sha256}}"}


@dataclass
class Net:
    url: str
    app: web.Application
    runner: web.AppRunner
    session: aiohttp.ClientSession
    seen: list[str] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def state(self) -> State:
        return self.app[STATE]

    async def call(self, method: str, path: str, who: str | None, **kw: Any
                   ) -> tuple[int, Any]:
        headers = {**auth(who), **kw.pop("headers", {})}
        async with self.session.request(method, self.url + path, headers=headers,
                                        allow_redirects=False, **kw) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.read()

    async def fresh_event(self) -> dict[str, Any]:
        """A new county-A event, dispatched to one of ta1's units."""
        n = next(self.counter)
        status, ev = await self.call("POST", f"{V1}/events", "admin", json=intake_body(
            POINT_A, external_id=f"net-a-{n}", source="net"))
        assert status == 201, ev
        assert ev["county"] == COUNTY_A and ev["unit"] in UNITS_A, ev
        return ev  # type: ignore[no-any-return]

    async def close_event(self, ev: dict[str, Any]) -> None:
        status, body = await self.call("POST", f"{V1}/events/{ev['id']}/cancel", "admin",
                                       json={})
        assert status in (200, 409), body


def who_token(who: str, ev: dict[str, Any]) -> str:
    """The net's token name for a walk role (field-own: the unit E was dispatched to)."""
    if who == "field-own":
        return f"field-{ev['unit']}"
    if who == "field-other":
        return f"field-{next(u for u in UNITS_A if u != ev['unit'])}"
    return who


async def start(tmp: Path, **sections: Any) -> Net:
    app = build_app(load_config(write_config(tmp, **sections)))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return Net(url=f"http://127.0.0.1:{port}", app=app, runner=runner,
               session=aiohttp.ClientSession())


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Net]:
    srv = await start(tmp_path_factory.mktemp("walk"), webhooks=[
        {"id": WEBHOOK, "url": f"http://127.0.0.1:{free_port()}/", "secret": "walk"}])
    yield srv
    await srv.session.close()
    await srv.runner.cleanup()


def _same_answer(a: Any, b: Any, real: str, unknown: str) -> bool:
    """Two error answers are the same once the ids they name are put aside.

    Compared only for callers that may not see the target: one that sees it may be told
    more (a field unit asking to cancel its own event hears "a field unit may not cancel").
    """
    return json.dumps(a, sort_keys=True).replace(real, "<id>") == json.dumps(
        b, sort_keys=True).replace(unknown, "<id>")


def _judge(expect: str, status: int, body: Any, unknown: tuple[int, Any] | None,
           real: str, unknown_id: str) -> None:
    if expect == "ok":
        assert 200 <= status < 300 or status in (101, 302, 409), (status, body)
        return
    want = 403 if expect == "role" else 404
    assert status == want, f"expected {want} ({expect}), got {status}: {body}"
    if unknown is not None:
        assert unknown[0] == status and _same_answer(body, unknown[1], real, unknown_id), (
            f"out of scope {status} {body} differs from unknown id {unknown}")


async def test_every_route_is_in_the_matrix(net: Net) -> None:
    served = set()
    for route in net.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or path is None or path.startswith("/static"):
            continue
        served.add((route.method, path))
    missing = served - MATRIX.keys()
    assert not missing, f"routes the scope walk does not cover: {sorted(missing)}"
    assert not MATRIX.keys() - served, f"stale rows: {sorted(MATRIX.keys() - served)}"


REST_CELLS = [pytest.param(m, p, who, id=f"{m} {p} {who}")
              for (m, p) in MATRIX if p != f"{V1}/events/{{id}}/{{action}}" for who in ROLES]
ACTION_CELLS = [pytest.param(a, who, id=f"{a} {who}") for a in ACTIONS for who in ROLES]


def _path(path: str, ev: dict[str, Any], target: str | None = None) -> str:
    if path == f"{V1}/units/{{id}}/position":
        return path.replace("{id}", target or ev["unit"])
    if path.startswith(f"{V1}/webhooks/"):
        return path.replace("{id}", target or WEBHOOK)
    if "{sha256}" in path:  # the file attached to E (``_rest``), or an unknown hash
        return path.replace("{sha256}", UNKNOWN_SHA if target else ev["evidence"][0]["sha256"])
    return path.replace("{id}", target or ev["id"])


async def _rest(net: Net, method: str, path: str, who: str, ev: dict[str, Any],
                target: str | None = None) -> tuple[int, Any]:
    kw: dict[str, Any] = {}
    if method == "POST" and path == f"{V1}/events":
        kw["json"] = intake_body(POINT_A, external_id=f"walk-{next(net.counter)}")
    elif method == "PUT":
        kw["json"] = {"lon": POINT_A[0] + 0.001, "lat": POINT_A[1]}
    elif path.endswith("/redeliver"):
        kw["json"] = {"from_seq": 1}
    elif method == "POST" and path.rsplit("/", 1)[-1] in ("transfer", *ANSWERS):
        kw["json"] = _action_body(path.rsplit("/", 1)[-1], ev)
    elif path.endswith("/evidence"):
        kw["data"], kw["headers"] = PNG, {"Content-Type": "image/png"}
    elif "{sha256}" in path and not ev.get("evidence"):  # E carries a file (admin's upload)
        status, entry = await net.call("POST", f"{V1}/events/{ev['id']}/evidence", "admin",
                                       data=PNG, headers={"Content-Type": "image/png"})
        assert status in (200, 201), entry
        ev["evidence"] = [entry]
    if path == "/ws":
        try:
            async with net.session.ws_connect(net.url.replace("http", "ws") + "/ws",
                                              headers=auth(who_token(who, ev))):
                return 101, None
        except aiohttp.WSServerHandshakeError as e:
            return e.status, e.message
    return await net.call(method, _path(path, ev, target), who_token(who, ev), **kw)


@pytest.mark.parametrize(("method", "path", "who"), REST_CELLS)
async def test_rest_cell(net: Net, method: str, path: str, who: str) -> None:
    ev = await net.fresh_event()
    try:
        expect = MATRIX[(method, path)](who)
        status, body = await _rest(net, method, path, who, ev)
        unknown = None
        real = (ev["unit"] if "/units/" in path else ev["evidence"][0]["sha256"]
                if "{sha256}" in path else ev["id"])
        unknown_id = (UNKNOWN_UNIT if "/units/" in path else UNKNOWN_SHA
                      if "{sha256}" in path else UNKNOWN_EVENT)
        if path in ID_ROUTES and who not in IN_SCOPE:
            unknown = await _rest(net, method, path, who, ev, unknown_id)
        _judge(expect, status, body, unknown, real, unknown_id)
        if method == "POST" and path == f"{V1}/events" and status in (200, 201):
            await net.close_event(body)  # frees its unit for the next cells
    finally:
        await net.close_event(ev)


def _action_body(action: str, ev: dict[str, Any]) -> dict[str, Any]:
    if action == "reassign":
        return {"unit": next(u for u in UNITS_A if u != ev["unit"])}
    if action == "transfer":
        return {"department": "d-a", "note": "移送 (walk)"}
    if action in ANSWERS:
        return {"note": "答复 (walk)"}
    return {}


@pytest.mark.parametrize(("action", "who"), ACTION_CELLS)
async def test_action_cell(net: Net, action: str, who: str) -> None:
    ev = await net.fresh_event()
    try:
        expect = action_cell(action)(who)
        tok = who_token(who, ev)
        body = _action_body(action, ev)
        status, out = await net.call("POST", f"{V1}/events/{ev['id']}/{action}", tok, json=body)
        unknown = None
        if who not in IN_SCOPE:  # it must not learn that E exists
            unknown = await net.call("POST", f"{V1}/events/{UNKNOWN_EVENT}/{action}", tok,
                                     json=body)
        _judge(expect, status, out, unknown, ev["id"], UNKNOWN_EVENT)
    finally:
        await net.close_event(ev)


# -- the socket ---------------------------------------------------------------------------
WS_STATUS = {"not_found": 404, "forbidden": 403, "illegal_transition": 409}


async def _ask(ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any]) -> dict[str, Any]:
    """Send one message; the reply carrying its id (pushes in between are skipped)."""
    await ws.send_json(msg)
    while True:
        reply = await ws.receive_json(timeout=10)
        if reply.get("id") == msg["id"] and reply.get("type") in (
                "ack", "error", "pong", "subscribed"):
            return reply  # type: ignore[no-any-return]


def _ws_status(reply: dict[str, Any]) -> tuple[int, Any]:
    if reply["type"] == "error":
        return WS_STATUS.get(reply["error"]["code"], 400), reply["error"]
    return 200, reply


WS_MESSAGES = ["ping", "subscribe", "position", *ACTIONS]
WS_CELLS = [pytest.param(m, who, id=f"ws {m} {who}") for m in WS_MESSAGES for who in ROLES
            if who != "intake"]


async def test_every_socket_message_is_in_the_matrix() -> None:
    from dispatch.server.validation import ACTIONS as SERVED_ACTIONS

    assert set(WS_MESSAGES) == {"ping", "subscribe", "position", *SERVED_ACTIONS}
    assert set(ACTIONS) == set(SERVED_ACTIONS)


def ws_cell(kind: str, who: str) -> str:
    if kind == "ping":
        return "ok"
    if kind == "subscribe":  # to E's township
        return "ok" if who in IN_SCOPE - {"field-own"} else "role" if who.startswith(
            "field") else "scope"
    if kind == "position":
        return position_cell(who)
    return action_cell(kind)(who)


@pytest.mark.parametrize(("kind", "who"), WS_CELLS)
async def test_socket_cell(net: Net, kind: str, who: str) -> None:
    ev = await net.fresh_event()
    tok = who_token(who, ev)
    try:
        async with net.session.ws_connect(net.url.replace("http", "ws") + "/ws",
                                          headers=auth(tok)) as ws:
            first = await ws.receive_json(timeout=10)
            assert first["type"] == "snapshot"
            msg: dict[str, Any] = {"type": kind, "id": 1}
            real, unknown_id, key = ev["id"], UNKNOWN_EVENT, "event"
            if kind == "subscribe":
                msg["region"] = ev["township"]
                real = ev["township"]
                key = ""
            elif kind == "position":
                msg.update(unit=ev["unit"], lon=POINT_A[0] + 0.001, lat=POINT_A[1])
                real, unknown_id, key = ev["unit"], UNKNOWN_UNIT, "unit"
            elif kind != "ping":
                msg.update(event=ev["id"], **_action_body(kind, ev))
            status, body = _ws_status(await _ask(ws, msg))
            expect = ws_cell(kind, who)
            if expect == "scope" and kind == "subscribe":  # regions are public geography
                assert status in (403, 404), (status, body)
                return
            unknown = None
            if who not in IN_SCOPE and key:
                unknown = _ws_status(await _ask(ws, {**msg, "id": 2, key: unknown_id}))
                unknown = (unknown[0], {**unknown[1]})
            _judge(expect, status, body, unknown, real, unknown_id)
    finally:
        await net.close_event(ev)


async def test_intake_token_opens_no_socket(net: Net) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        async with net.session.ws_connect(net.url.replace("http", "ws") + "/ws",
                                          headers=auth("intake")):
            pass
    assert e.value.status == 403


# -- never, by any channel -------------------------------------------------------------------
FAST = {"id": "fast", "name": "快速 (test)", "priority": 1,
        "timers": {"respond_s": 1, "depart_s": 2, "arrive_s": 3}}


def mentions(data: Any, value: str) -> bool:
    """Whether ``value`` is any string in a decoded JSON value (keys included)."""
    if isinstance(data, str):
        return data == value
    if isinstance(data, dict):
        return any(mentions(k, value) or mentions(v, value) for k, v in data.items())
    if isinstance(data, list):
        return any(mentions(v, value) for v in data)
    return False


async def _until(ws: aiohttp.ClientWebSocketResponse, done: Callable[[dict[str, Any]], bool]
                 ) -> list[dict[str, Any]]:
    """Every message up to and including the first for which ``done`` holds."""
    out = []
    while True:
        msg = await ws.receive_json(timeout=15)
        out.append(msg)
        if done(msg):
            return out


def _is(kind: str, key: str, value: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == kind and (m.get(key) or {}).get("id") == value


@pytest.mark.parametrize("who", ["op-b", "sup-b"])
async def test_other_county_never_receives_the_event(tmp_path: Path, who: str) -> None:
    from dispatch.config import DEFAULT_CATEGORIES

    net = await start(tmp_path, categories=[*DEFAULT_CATEGORIES, FAST])
    ws_url = net.url.replace("http", "ws") + "/ws"
    try:
        live = await net.session.ws_connect(ws_url, headers=auth(who))
        watch = await net.session.ws_connect(ws_url, headers=auth("admin"))
        for ws in (live, watch):
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
        # county A: an event that is created, responded to, moved, breached and escalated
        body = intake_body(POINT_A, category="fast", source="net-src", external_id="net-ext-A")
        status, ev = await net.call("POST", f"{V1}/events", "intake", json=body,
                                    headers={"Idempotency-Key": "net-key-A"})
        assert status == 201, ev
        unit_a = ev["unit"]
        status, _ = await net.call("PUT", f"{V1}/units/{unit_a}/position", "admin",
                                   json={"lon": POINT_A[0], "lat": POINT_A[1]})
        assert status == 200
        await _until(watch, lambda m: m.get("type") == "event.escalated"
                     and m["event"]["id"] == ev["id"])  # the timers fired, in scope
        # duplicate detection: the same keys from other callers are other keys
        for caller, point in ((who, POINT_B), ("intake-2", POINT_A)):
            for headers, extra in (({}, {}), ({"Idempotency-Key": "net-key-A"},
                                               {"external_id": f"other-{caller}"})):
                dup = {**body, "location": {"lon": point[0], "lat": point[1]}, **extra}
                status, got = await net.call("POST", f"{V1}/events", caller, json=dup,
                                             headers=headers)
                if caller == who and who.startswith("sup"):
                    assert status == 403, got  # a supervisor never creates
                    continue
                assert status == 201 and not mentions(got, ev["id"]), (caller, status, got)
        # the marker: county B's own event and unit, after all of the above
        status, marker = await net.call("POST", f"{V1}/events", "admin",
                                        json=intake_body(POINT_B, external_id="net-marker"))
        assert status == 201 and marker["county"] == "cb", marker
        status, _ = await net.call("PUT", f"{V1}/units/{UNIT_B}/position", "admin",
                                   json={"lon": POINT_B[0], "lat": POINT_B[1]})
        assert status == 200
        in_b = 3 if who == "op-b" else 1  # op-b's two "duplicates" are new county-B events
        pushed = await _until(live, _is("unit.updated", "unit", UNIT_B))
        assert any(_is("event.created", "event", marker["id"])(m) for m in pushed)
        assert not [m for m in pushed if mentions(m, ev["id"]) or mentions(m, unit_a)]
        # a fresh snapshot, and a replay from the start
        async with net.session.ws_connect(ws_url, headers=auth(who)) as ws:
            snap = await ws.receive_json(timeout=10)
            assert snap["type"] == "snapshot" and mentions(snap, marker["id"])
            assert not mentions(snap, ev["id"]) and not mentions(snap, unit_a)
        async with net.session.ws_connect(ws_url + "?since=0", headers=auth(who)) as ws:
            replay = await _until(ws, _is("event.created", "event", marker["id"]))
            assert not [m for m in replay if mentions(m, ev["id"])]
        # REST: every read, with the marker in the same answer where there is a list
        status, page = await net.call("GET", f"{V1}/events?limit=1000", who)
        assert status == 200 and mentions(page, marker["id"]) and not mentions(page, ev["id"])
        for path in (f"{V1}/events/{ev['id']}", f"{V1}/events/{ev['id']}/units"):
            status, got = await net.call("GET", path, who)
            unknown = await net.call("GET", path.replace(ev["id"], UNKNOWN_EVENT), who)
            assert status == 404 and (status, got) == (
                unknown[0], json.loads(json.dumps(unknown[1]).replace(
                    UNKNOWN_EVENT, ev["id"]))), (got, unknown)
        status, units = await net.call("GET", f"{V1}/units", who)
        assert status == 200 and mentions(units, UNIT_B) and not mentions(units, unit_a)
        status, teams = await net.call("GET", f"{V1}/teams", who)
        assert status == 200 and mentions(teams, "t-tb1") and not mentions(teams, "t-ta1")
        for group_by in ("township", "team", "county", "category", "day", "zone"):
            q = f"group_by={group_by}"
            status, groups = await net.call("GET", f"{V1}/stats/response-times?{q}", who)
            assert status == 200, groups
            assert sum(g["count"] for g in groups["groups"]) == in_b, groups
            assert not any(mentions(groups, k) for k in ("ta1", "t-ta1", COUNTY_A))
            status, csv = await net.call("GET", f"{V1}/stats/export?{q}&format=csv", who)
            assert status == 200 and b"Town A1" not in csv and b"t-ta1" not in csv
    finally:
        await net.session.close()
        await net.runner.cleanup()


async def test_recommended_and_nearby_units_are_in_the_callers_scope(tmp_path: Path) -> None:
    """With ta1's own units busy the pick is mutual aid from another team of county A: a
    township operator of ta1 does not see that team's units, so it is not shown them."""
    net = await start(tmp_path)
    try:
        busy = [await net.fresh_event() for _ in UNITS_A]
        assert sorted(e["unit"] for e in busy) == sorted(UNITS_A)
        path = f"{V1}/events/{busy[0]['id']}/units"
        status, full = await net.call("GET", path, "admin")
        assert status == 200 and full["recommended"] is not None, full
        assert full["recommended"]["unit"] not in UNITS_A and full["recommended"]["mutual_aid"]
        _, units = await net.call("GET", f"{V1}/units", "op-town")
        visible = {u["id"] for u in units["units"]}
        assert full["recommended"]["unit"] not in visible, (full, visible)
        status, out = await net.call("GET", path, "op-town")
        assert status == 200, out
        shown = {p["unit"] for p in out["nearby"]} | (
            {out["recommended"]["unit"]} if out["recommended"] else set())
        assert shown <= visible, (out, visible)
    finally:
        await net.session.close()
        await net.runner.cleanup()
