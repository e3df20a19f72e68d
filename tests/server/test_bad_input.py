"""Bad input: a clear JSON error naming the field, nothing created or changed (contract §3)."""

from __future__ import annotations

import json

import pytest

from tests.server.conftest import intake_body, point_in

JSON = {"Content-Type": "application/json"}


def _body(**over):
    b = intake_body(121.3, 28.6)
    b.update(over)
    return json.dumps(b).encode()


def _loc(**loc):
    b = intake_body(121.3, 28.6)
    b["location"] = loc
    return json.dumps(b).encode()


# (name, method, path, who, headers, raw body, status, code, field)
CASES = [
    ("malformed json", "POST", "/events", "intake", JSON, b'{"location": ', 400,
     "malformed_json", None),
    ("not utf-8", "POST", "/events", "intake", JSON, b'{"description": "\xff\xfe"}', 400,
     "invalid_utf8", None),
    ("deep nesting", "POST", "/events", "intake", JSON, b"[" * 100 + b"]" * 100, 400,
     "too_deep", None),
    ("array body", "POST", "/events", "intake", JSON, b"[1, 2]", 422, "invalid_field", None),
    ("wrong content type", "POST", "/events", "intake", {"Content-Type": "text/plain"},
     _body(), 415, "unsupported_media_type", "Content-Type"),
    ("no content type", "POST", "/events", "intake", {}, _body(), 415,
     "unsupported_media_type", "Content-Type"),
    ("oversize body", "POST", "/events", "intake", JSON,
     _body(description="x" * 70000), 413, "body_too_large", None),
    ("missing location", "POST", "/events", "intake", JSON,
     json.dumps({"category": "noise"}).encode(), 422, "invalid_field", "location"),
    ("location not object", "POST", "/events", "intake", JSON, _body(location=[121, 28]), 422,
     "invalid_field", "location"),
    ("lon missing", "POST", "/events", "intake", JSON, _loc(lat=28.6), 422, "invalid_field",
     "location.lon"),
    ("lon string", "POST", "/events", "intake", JSON, _loc(lon="121.3", lat=28.6), 422,
     "invalid_field", "location.lon"),
    ("lon bool", "POST", "/events", "intake", JSON, _loc(lon=True, lat=28.6), 422,
     "invalid_field", "location.lon"),
    ("lon NaN", "POST", "/events", "intake", JSON,
     b'{"location": {"lon": NaN, "lat": 28.6}, "category": "noise"}', 422, "invalid_field",
     "location.lon"),
    ("lat Infinity", "POST", "/events", "intake", JSON,
     b'{"location": {"lon": 121.3, "lat": Infinity}, "category": "noise"}', 422,
     "invalid_field", "location.lat"),
    ("lat -Infinity", "POST", "/events", "intake", JSON,
     b'{"location": {"lon": 121.3, "lat": -Infinity}, "category": "noise"}', 422,
     "invalid_field", "location.lat"),
    ("lon out of range", "POST", "/events", "intake", JSON, _loc(lon=181.0, lat=28.6), 422,
     "invalid_field", "location.lon"),
    ("lat out of range", "POST", "/events", "intake", JSON, _loc(lon=121.3, lat=-91), 422,
     "invalid_field", "location.lat"),
    ("unknown crs", "POST", "/events", "intake", JSON, _loc(lon=121.3, lat=28.6, crs="utm"), 422,
     "invalid_field", "location.crs"),
    ("crs not string", "POST", "/events", "intake", JSON, _loc(lon=121.3, lat=28.6, crs=4326),
     422, "invalid_field", "location.crs"),
    ("unknown category", "POST", "/events", "intake", JSON, _body(category="alien_landing"), 422,
     "invalid_field", "category"),
    ("missing category", "POST", "/events", "intake", JSON,
     json.dumps({"location": {"lon": 121.3, "lat": 28.6}}).encode(), 422, "invalid_field",
     "category"),
    ("description too long", "POST", "/events", "intake", JSON, _body(description="长" * 2001),
     422, "invalid_field", "description"),
    ("description not string", "POST", "/events", "intake", JSON, _body(description=12), 422,
     "invalid_field", "description"),
    ("priority zero", "POST", "/events", "intake", JSON, _body(priority=0), 422, "invalid_field",
     "priority"),
    ("priority float", "POST", "/events", "intake", JSON, _body(priority=1.5), 422,
     "invalid_field", "priority"),
    ("reporter not object", "POST", "/events", "intake", JSON, _body(reporter="张三"), 422,
     "invalid_field", "reporter"),
    ("reported_at garbage", "POST", "/events", "intake", JSON, _body(reported_at="yesterday"),
     422, "invalid_field", "reported_at"),
    ("reported_at naive", "POST", "/events", "intake", JSON,
     _body(reported_at="2026-11-27T10:00:00"), 422, "invalid_field", "reported_at"),
    ("outside jurisdiction", "POST", "/events", "intake", JSON, _loc(lon=116.4, lat=39.9), 422,
     "outside_jurisdiction", "location"),
    ("external_id too long", "POST", "/events", "intake", JSON, _body(external_id="x" * 200),
     422, "invalid_field", "external_id"),
    ("no token", "POST", "/events", None, JSON, _body(), 401, "unauthorized", None),
    ("bad token", "POST", "/events", "bogus", JSON, _body(), 401, "unauthorized", None),
    ("supervisor may not create", "POST", "/events", "supervisor", JSON, _body(), 403,
     "forbidden", None),
    ("unknown event", "GET", "/events/E9999999", "city", {}, b"", 404, "not_found", None),
    ("unknown action", "POST", "/events/{id}/explode", "city", JSON, b"{}", 404, "not_found",
     None),
    ("action at garbage", "POST", "/events/{id}/respond", "city", JSON, b'{"at": "soon"}', 422,
     "invalid_field", "at"),
    ("action note not string", "POST", "/events/{id}/escalate", "city", JSON, b'{"note": []}',
     422, "invalid_field", "note"),
    ("action malformed", "POST", "/events/{id}/respond", "city", JSON, b"{", 400,
     "malformed_json", None),
    ("illegal transition", "POST", "/events/{id}/arrive", "city", JSON, b"{}", 409,
     "illegal_transition", None),
    ("reassign unknown team", "POST", "/events/{id}/reassign", "city", JSON,
     b'{"team": "t-nowhere"}', 404, "not_found", "team"),
    ("position NaN", "PUT", "/units/u-0001/position", "admin", JSON,
     b'{"lon": NaN, "lat": 28.6}', 422, "invalid_field", "lon"),
    ("position negative accuracy", "PUT", "/units/u-0001/position", "admin", JSON,
     b'{"lon": 121.3, "lat": 28.6, "accuracy_m": -1}', 422, "invalid_field", "accuracy_m"),
    ("bad list limit", "GET", "/events?limit=0", "city", {}, b"", 422, "invalid_field", "limit"),
    ("bad since", "GET", "/events?since=tomorrow", "city", {}, b"", 422, "invalid_field",
     "since"),
    ("bad region level", "GET", "/regions?level=planet", "city", {}, b"", 422, "invalid_field",
     "level"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_rejected_and_changes_nothing(server, case):
    name, method, path, who, headers, raw, status, code, field = case
    lon, lat = point_in(server, "331003")
    _, ev = await server.call("POST", "/api/v1/events", "intake",
                              json=intake_body(lon, lat, external_id="baseline"))
    before_seq = server.state.runtime.engine.last_seq
    before_state = server.state.render(server.state.runtime.engine.get(ev["id"]))
    h = dict(headers)
    if who == "bogus":
        h["Authorization"] = "Bearer not-a-token"
    elif who is not None:
        h.update(server.auth(who))
    async with server.session.request(method, server.url + "/api/v1" + path.format(id=ev["id"]),
                                      data=raw or None, headers=h) as r:
        assert r.status == status, (name, await r.text())
        assert r.content_type == "application/json"
        err = (await r.json())["error"]
    assert err["code"] == code, err
    assert err["field"] == field, err
    assert err["message"]
    assert server.state.runtime.engine.last_seq == before_seq
    after_state = server.state.render(server.state.runtime.engine.get(ev["id"]))
    assert after_state["version"] == before_state["version"]
    _, listing = await server.call("GET", "/api/v1/events", "city")
    assert len(listing["events"]) == 1


async def test_rate_limit_answers_429(tmp_path):
    from tests.server.conftest import start_server

    srv = await start_server(tmp_path, limits={"rate_per_s": 1, "rate_burst": 3})
    try:
        codes = [(await srv.call("GET", "/api/v1/categories", "city"))[0] for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[-1] == 429
        _, body = await srv.call("GET", "/api/v1/categories", "city")
        assert body["error"]["code"] == "rate_limited"
    finally:
        await srv.session.close()
        await srv.runner.cleanup()

