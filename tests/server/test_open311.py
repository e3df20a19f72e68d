"""Open311 GeoReport v2 (contract §8) against a real server on loopback.

``GeoReport`` below is a client written from the published GeoReport v2 specification
(http://wiki.open311.org/GeoReport_v2/), not from this server's code: the standard's own
endpoint names and fields, a form-encoded POST with ``api_key``, JSON read with the standard
library only. The event is then driven through its lifecycle with operator and field tokens
over the ordinary API, and the request's status read back the standard's way.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from dispatch.core import lifecycle
from dispatch.server.auth import issue_token, revoke_tokens
from tests.server.conftest import (
    BEIYANG_RESERVOIR,
    TOKENS,
    Server,
    intake_body,
    point_in,
    start_server,
)

HUANGYAN = "331003"
FORM = "application/x-www-form-urlencoded"


class GeoReport:
    """A GeoReport v2 client: ``{endpoint}/services.json``, ``requests.json``,
    ``requests/{service_request_id}.json``; errors are ``[{"code", "description"}]``."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str) -> None:
        self.session, self.endpoint = session, endpoint.rstrip("/")

    async def _answer(self, r: aiohttp.ClientResponse) -> tuple[int, Any]:
        text = await r.text(encoding="utf-8")
        assert r.headers.get("Content-Type", "").startswith("application/json"), (
            r.status, r.headers.get("Content-Type"), text[:200])
        return r.status, json.loads(text)

    async def services(self) -> tuple[int, Any]:
        async with self.session.get(f"{self.endpoint}/services.json") as r:
            return await self._answer(r)

    async def post_request(self, fields: dict[str, Any], **headers: str) -> tuple[int, Any]:
        """POST Service Request: the arguments form-encoded in the body (the standard's way)."""
        body = urlencode({k: v for k, v in fields.items() if v is not None})
        async with self.session.post(f"{self.endpoint}/requests.json", data=body.encode(),
                                     headers={"Content-Type": FORM, **headers}) as r:
            return await self._answer(r)

    async def get_request(self, request_id: str) -> tuple[int, Any]:
        async with self.session.get(f"{self.endpoint}/requests/{request_id}.json") as r:
            return await self._answer(r)

    async def get_requests(self, **params: str) -> tuple[int, Any]:
        async with self.session.get(f"{self.endpoint}/requests.json", params=params) as r:
            return await self._answer(r)


def client(srv: Server) -> GeoReport:
    return GeoReport(srv.session, srv.url + "/open311/v2")


def report(srv: Server, skip: int = 0, **kw: Any) -> dict[str, Any]:
    lon, lat = point_in(srv, HUANGYAN, skip)
    return {"api_key": TOKENS["intake"]["token"], "service_code": "street_vending",
            "lat": repr(lat), "long": repr(lon), "description": "路口有流动摊贩占道经营",
            "address_string": "黄岩区某路口", "email": "citizen@example.org",
            "phone": "13800000000", "first_name": "Private-First", "last_name": "Private-Last",
            **kw}


def is_error(body: Any, status: int) -> bool:
    """The standard's error shape: a list of {code, description}, code = the HTTP status."""
    return (isinstance(body, list) and len(body) >= 1 and all(
        set(e) == {"code", "description"} and isinstance(e["description"], str)
        and e["description"] for e in body) and body[0]["code"] == status)


async def head(srv: Server) -> int:
    async with srv.session.get(srv.url + "/healthz") as r:
        return int((await r.json())["seq"])


async def post_one(srv: Server, **kw: Any) -> str:
    status, body = await client(srv).post_request(report(srv, **kw))
    assert status == 201, body
    assert isinstance(body, list) and len(body) == 1, body
    return str(body[0]["service_request_id"])


# -- services ---------------------------------------------------------------------------------
async def test_services_are_the_categories(server: Server) -> None:
    status, services = await client(server).services()
    assert status == 200
    _, cats = await server.call("GET", "/api/v1/categories", "city")
    assert [s["service_code"] for s in services] == [c["id"] for c in cats["categories"]]
    for s, c in zip(services, cats["categories"], strict=True):
        assert s["service_name"] == c["name"]
        assert s["type"] == "realtime" and s["metadata"] is False
        assert isinstance(s["description"], str) and s["description"]
        assert isinstance(s["keywords"], str) and isinstance(s["group"], str)


# -- a request through its whole life ---------------------------------------------------------
async def test_a_request_is_routed_timed_pushed_and_closed_when_resolved(server: Server
                                                                        ) -> None:
    geo = client(server)
    async with server.session.ws_connect(f"{server.ws_url}?token={server.token('huangyan')}"
                                         ) as ws:
        snap = await ws.receive_json(timeout=10)
        assert snap["type"] == "snapshot"
        status, body = await geo.post_request(report(server))
        assert status == 201, body
        assert set(body[0]) >= {"service_request_id", "service_notice"}
        rid = body[0]["service_request_id"]
        assert "Received" in body[0]["service_notice"] and "已受理" in body[0]["service_notice"]
        while True:  # the consoles are told at once
            msg = await ws.receive_json(timeout=10)
            if msg["type"] == "event.created" and msg["event"]["id"] == rid:
                break

    # an ordinary event: source open311, routed and timed, its reporter kept for the operator
    status, ev = await server.call("GET", f"/api/v1/events/{rid}", "huangyan")
    assert status == 200, ev
    assert ev["source"] == "open311" and ev["category"] == "street_vending"
    assert ev["status"] == "dispatched" and ev["unit"] and ev["deadlines"]["arrive"]
    assert ev["reporter"]["email"] == "citizen@example.org"
    assert ev["reporter"]["address_string"] == "黄岩区某路口"

    status, [req] = await geo.get_request(rid)
    assert status == 200
    assert req["service_request_id"] == rid and req["status"] == "open"
    assert req["service_code"] == "street_vending" and req["service_name"]
    assert req["description"] == "路口有流动摊贩占道经营"
    assert req["address"] == "黄岩区某路口"
    team = server.state.runtime.dataset.teams[ev["team"]].name
    assert req["agency_responsible"] == team and team in req["status_notes"]
    lon, lat = point_in(server, HUANGYAN)
    assert abs(req["lat"] - lat) < 1e-6 and abs(req["long"] - lon) < 1e-6
    requested = datetime.fromisoformat(req["requested_datetime"])
    assert requested.tzinfo is not None

    field = server.field_token(ev["unit"])
    notes = []
    for action in ("respond", "depart", "arrive", "resolve"):
        status, out = await server.call("POST", f"/api/v1/events/{rid}/{action}", field,
                                        json={})
        assert status == 200, (action, out)
        _, [req] = await geo.get_request(rid)
        notes.append(req["status_notes"])
        assert req["status"] == ("closed" if action == "resolve" else "open"), (action, req)
    assert len(set(notes)) == 4, notes  # each step says what happened
    assert "Resolved" in req["status_notes"] and "已办结" in req["status_notes"]
    assert datetime.fromisoformat(req["updated_datetime"]) > requested


async def test_cancel_closes_it_with_the_reason(server: Server) -> None:
    rid = await post_one(server)
    status, out = await server.call("POST", f"/api/v1/events/{rid}/cancel", "huangyan",
                                    json={"note": "重复上报 duplicate report"})
    assert status == 200, out
    _, [req] = await client(server).get_request(rid)
    assert req["status"] == "closed"
    assert req["status_notes"].startswith("已撤销")
    assert "Cancelled" in req["status_notes"] and "重复上报 duplicate report" in req["status_notes"]


async def test_a_json_body_and_idempotency_are_the_callers_own(server: Server) -> None:
    lon, lat = point_in(server, HUANGYAN)
    body = {"api_key": TOKENS["intake"]["token"], "service_code": "noise", "lat": lat,
            "long": lon, "description": "夜间施工噪声"}
    url = server.url + "/open311/v2/requests.json"
    key = {"Idempotency-Key": "o311-retry-1"}
    async with server.session.post(url, json=body, headers=key) as r:
        assert r.status == 201, await r.text()
        first = (await r.json())[0]["service_request_id"]
    seq = await head(server)
    async with server.session.post(url, json=body, headers=key) as r:  # a retry
        assert r.status == 200
        assert (await r.json())[0]["service_request_id"] == first
    assert await head(server) == seq  # nothing new in the journal
    other = issue_token(server.state.config.token_file, "intake", None, None, name="另一平台")
    async with server.session.post(url, json={**body, "api_key": other}, headers=key) as r:
        assert r.status == 201  # another caller's identical key is a different key
        assert (await r.json())[0]["service_request_id"] != first


# -- the public GETs --------------------------------------------------------------------------
async def test_filters_by_ids_status_code_and_dates(server: Server) -> None:
    geo = client(server)
    a = await post_one(server)
    b = await post_one(server, service_code="noise")
    c = await post_one(server, service_code="noise")
    await server.call("POST", f"/api/v1/events/{c}/cancel", "huangyan", json={})

    _, listed = await geo.get_requests()  # default: the last 90 days, newest first
    assert [r["service_request_id"] for r in listed] == [c, b, a]
    _, by_id = await geo.get_requests(service_request_id=f"{a},{c},E9999999")
    assert sorted(r["service_request_id"] for r in by_id) == [a, c]
    _, still = await geo.get_requests(service_request_id=c, status="open")
    assert [r["service_request_id"] for r in still] == [c]  # ids override the other filters
    _, opened = await geo.get_requests(status="open")
    assert {r["service_request_id"] for r in opened} == {a, b}
    _, closed = await geo.get_requests(status="closed")
    assert [r["service_request_id"] for r in closed] == [c]
    _, both = await geo.get_requests(status="open,closed")
    assert len(both) == 3
    _, noise = await geo.get_requests(service_code="noise")
    assert {r["service_request_id"] for r in noise} == {b, c}

    now = datetime.now(UTC)
    iso = lambda t: t.isoformat(timespec="seconds")  # noqa: E731
    _, today = await geo.get_requests(start_date=iso(now - timedelta(hours=1)),
                                      end_date=iso(now + timedelta(hours=1)))
    assert len(today) == 3
    _, later = await geo.get_requests(start_date=iso(now + timedelta(hours=1)))
    assert later == []
    _, earlier = await geo.get_requests(end_date=iso(now - timedelta(hours=1)))
    assert earlier == []
    for params, word in (({"status": "pending"}, "status"),
                         ({"start_date": "yesterday"}, "start_date"),
                         ({"end_date": "2026-01-01T00:00:00"}, "end_date"),  # no offset
                         ({"start_date": iso(now - timedelta(days=200)),
                           "end_date": iso(now)}, "90 days"),
                         ({"start_date": iso(now), "end_date": iso(now - timedelta(days=1))},
                          "end_date")):
        status, body = await geo.get_requests(**params)
        assert status == 400 and is_error(body, 400), (params, body)
        assert word in body[0]["description"], (params, body)


async def test_public_gets_show_only_open311_requests_and_no_personal_data(server: Server
                                                                           ) -> None:
    geo = client(server)
    status, hotline = await server.call("POST", "/api/v1/events", "intake", json=intake_body(
        *BEIYANG_RESERVOIR, reporter={"name": "王五", "phone": "13911112222"}))
    assert status == 201, hotline
    rid = await post_one(server)

    status, body = await geo.get_request(hotline["id"])
    assert status == 404 and is_error(body, 404)
    _, unknown = await geo.get_request("E9999999")
    assert unknown[0]["description"].replace("E9999999", "<id>") == body[0][
        "description"].replace(hotline["id"], "<id>")  # the same answer as an unknown id
    _, listed = await geo.get_requests()
    assert [r["service_request_id"] for r in listed] == [rid]
    _, by_id = await geo.get_requests(service_request_id=f"{hotline['id']},{rid}")
    assert [r["service_request_id"] for r in by_id] == [rid]

    _, ev = await server.call("GET", f"/api/v1/events/{rid}", "huangyan")
    _, [req] = await geo.get_request(rid)
    assert set(req) == {"service_request_id", "status", "status_notes", "service_name",
                        "service_code", "description", "agency_responsible", "service_notice",
                        "requested_datetime", "updated_datetime", "expected_datetime",
                        "address", "address_id", "zipcode", "lat", "long", "media_url"}
    text = json.dumps(listed + [req], ensure_ascii=False)
    for private in ("citizen@example.org", "13800000000", "Private-First", "Private-Last",
                    "reporter", "evidence", ev["unit"], ev["team"], "actor", "13911112222",
                    "王五"):
        assert private not in text, private


async def test_public_gets_need_no_token(server: Server) -> None:
    rid = await post_one(server)
    async with aiohttp.ClientSession() as anonymous:  # no Authorization anywhere
        geo = GeoReport(anonymous, server.url + "/open311/v2")
        assert (await geo.services())[0] == 200
        status, [req] = await geo.get_request(rid)
        assert status == 200 and req["service_request_id"] == rid
        assert (await geo.get_requests())[0] == 200


ODD_EVENTS = [
    {},
    {"id": "E1", "status": ["resolved"], "created_at": 1e300, "updated_at": float("nan"),
     "location": "nowhere", "reporter": [1], "timeline": "x", "transfer": 5,
     "team": {"a": 1}, "category": 7, "description": "lone \ud800 surrogate"},
    {"id": 10**30, "status": "cancelled", "cancelled_at": 1.0, "timeline": [None, {
        "action": "cancelled", "note": 5}], "location": {"lon": "x", "lat": float("inf")},
     "reporter": {"address_string": 5, "media_url": "https://example.org/\udfff"}},
    {"id": "E2", "status": "resolved", "transfer": {"department": ["x"]}},
]


@pytest.mark.parametrize("ev", ODD_EVENTS, ids=range(len(ODD_EVENTS)))
async def test_whatever_was_stored_renders(server: Server, ev: dict[str, Any]) -> None:
    """Contract §3 Bounds: one odd stored event never breaks the public answers."""
    import orjson

    from dispatch.server.open311 import Open311

    o311 = Open311(server.state)
    out = o311.render(ev)
    assert orjson.loads(orjson.dumps(out))["status"] in ("open", "closed")
    assert isinstance(o311.status_notes(ev), str)


# -- bad input --------------------------------------------------------------------------------
BAD_FORMS = [
    ({"service_code": None}, 400, "service_code"),
    ({"service_code": "parking_on_the_moon"}, 400, "service_code"),
    ({"lat": "north"}, 400, "lat"),
    ({"lat": "91"}, 400, "lat"),
    ({"long": "nan"}, 400, "long"),
    ({"long": "-181"}, 400, "long"),
    ({"lat": None}, 400, "lat"),
    ({"lat": "39.9042", "long": "116.4074"}, 400, "jurisdiction"),  # Beijing
    ({"description": "x" * 2001}, 400, "description"),
    ({"description": "bad\x00byte"}, 400, "description"),
    ({"email": "a" * 300}, 400, "email"),
    ({"media_url": "javascript:alert(1)"}, 400, "media_url"),
    ({"api_key": "not-a-key"}, 403, "api_key"),
    ({"api_key": None}, 403, "api_key"),
    ({"api_key": TOKENS["huangyan"]["token"]}, 403, "intake"),
]


async def test_bad_input_answers_the_standards_error_and_changes_nothing(server: Server
                                                                        ) -> None:
    geo = client(server)
    seq = await head(server)
    for change, want, word in BAD_FORMS:
        status, body = await geo.post_request(report(server, **change))
        assert status == want and is_error(body, want), (change, status, body)
        assert word in body[0]["description"], (change, body)
    url = server.url + "/open311/v2/requests.json"
    raw = [
        ({"Content-Type": "application/json"}, b'{"api_key": ', 400),
        ({"Content-Type": "application/json"}, b'["street_vending"]', 400),
        ({"Content-Type": "text/plain"}, b"service_code=noise", 415),
        ({"Content-Type": FORM}, b"description=" + b"x" * 70_000, 413),
        ({"Content-Type": FORM}, b"service_code=%ff%fe", 400),
    ]
    for headers, data, want in raw:
        async with server.session.post(url, data=data, headers=headers) as r:
            body = await r.json()
            assert r.status == want and is_error(body, want), (data[:40], r.status, body)
    for method, path, want in (("GET", "/open311/v2/requests/E0000001.xml", 404),
                               ("GET", "/open311/v2/services.xml", 404),
                               ("GET", "/open311/v2/nothing", 404),
                               ("GET", "/open311/v3/services.json", 404),
                               ("DELETE", "/open311/v2/services.json", 405)):
        async with server.session.request(method, server.url + path) as r:
            body = await r.json()
            assert r.status == want and is_error(body, want), (path, r.status, body)
            if path.endswith(".xml"):
                assert "JSON" in body[0]["description"]
            if want == 405:
                assert "GET" in r.headers["Allow"]
    assert await head(server) == seq  # nothing was written
    _, listed = await geo.get_requests()
    assert listed == []


async def test_revoked_api_key_stops_working(server: Server) -> None:
    key = issue_token(server.state.config.token_file, "intake", None, None, name="市民App")
    assert (await client(server).post_request(report(server, api_key=key)))[0] == 201
    revoke_tokens(server.state.config.token_file, server.state.config, name="市民App")
    start = time.monotonic()
    while True:
        status, body = await client(server).post_request(report(server, api_key=key))
        if status == 403:
            break
        assert status == 201 and time.monotonic() - start < 5, (status, body)
        await asyncio.sleep(0.1)
    assert is_error(body, 403)


async def test_rate_limit_and_failed_keys_answer_429_in_the_standards_shape(tmp_path: Path
                                                                            ) -> None:
    srv = await start_server(tmp_path, limits={"rate_per_s": 0.01, "rate_burst": 2,
                                               "auth_failures_per_min": 1,
                                               "auth_failures_burst": 2})
    try:
        geo = client(srv)
        for _ in range(2):
            assert (await geo.post_request(report(srv, lat="north")))[0] == 400
        status, body = await geo.post_request(report(srv))
        assert status == 429 and is_error(body, 429), body
        for _ in range(2):
            assert (await geo.post_request(report(srv, api_key="guess")))[0] == 403
        status, body = await geo.post_request(report(srv, api_key="guess"))
        assert status == 429 and is_error(body, 429), body
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


# -- durability -------------------------------------------------------------------------------
async def test_a_restart_keeps_the_requests(tmp_path: Path) -> None:
    srv = await start_server(tmp_path)
    try:
        rid = await post_one(srv)
        await srv.call("POST", f"/api/v1/events/{rid}/cancel", "huangyan",
                       json={"note": "已处理"})
        _, before = await client(srv).get_request(rid)
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
    srv = await start_server(tmp_path)  # the same journal
    try:
        status, after = await client(srv).get_request(rid)
        assert status == 200 and after == before and after[0]["status"] == "closed"
        _, listed = await client(srv).get_requests()
        assert [r["service_request_id"] for r in listed] == [rid]
        rid2 = await post_one(srv)  # and the index keeps up with what comes after
        _, listed = await client(srv).get_requests()
        assert [r["service_request_id"] for r in listed] == [rid2, rid]
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


# -- transfer (contract §8): runs once the lifecycle has the department's states -------------
@pytest.mark.skipif("handed_over" not in lifecycle.STATUSES,
                    reason="transfer to another department is not in this lifecycle yet")
async def test_handed_over_to_a_department_is_closed_naming_it(tmp_path: Path) -> None:
    dept = {"token": "t-dept-market", "role": "department", "department": "market"}
    srv = await start_server(tmp_path, departments=[{"id": "market", "name": "市场监管局"}],
                             auth={"tokens": [*TOKENS.values(), dept]})
    try:
        srv.extra_tokens["dept"] = dept["token"]
        rid = await post_one(srv)
        status, out = await srv.call("POST", f"/api/v1/events/{rid}/transfer", "huangyan",
                                     json={"department": "market", "note": "无照经营"})
        assert status == 200, out
        _, [req] = await client(srv).get_request(rid)
        assert req["status"] == "open" and "市场监管局" in req["status_notes"]
        status, out = await srv.call("POST", f"/api/v1/events/{rid}/accept", "dept", json={})
        assert status == 200, out
        _, [req] = await client(srv).get_request(rid)
        assert req["status"] == "closed" and "市场监管局" in req["status_notes"]
        assert req["agency_responsible"] == "市场监管局"
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
