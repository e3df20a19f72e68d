"""REST end to end on a real server (contract §3, §6)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import openpyxl

from dispatch.server import api, openapi
from tests.server.conftest import BEIYANG_RESERVOIR, intake_body, point_in


async def test_intake_routes_dispatches_and_shows_timeline(server):
    lon, lat = BEIYANG_RESERVOIR
    status, ev = await server.call("POST", "/api/v1/events", "intake",
                                   json=intake_body(lon, lat, category="illegal_fishing",
                                                    external_id="12345-1"))
    assert status == 201, ev
    ds = server.state.runtime.dataset
    zone = ds.zones[ev["zone"]]
    assert zone.kind == "reservoir" and ev["team"] == zone.team
    assert ev["status"] == "dispatched" and ev["county"] == "331003"
    assert ev["tier"] == ds.teams[ev["team"]].level
    assert ev["dispatched_at"] == ev["created_at"]
    created = datetime.fromisoformat(ev["created_at"])
    assert created.utcoffset() == timedelta(hours=8)
    assert datetime.fromisoformat(ev["deadlines"]["respond"]) - created == timedelta(seconds=60)
    assert datetime.fromisoformat(ev["deadlines"]["arrive"]) - created == timedelta(seconds=900)
    assert ev["mutual_aid"] is False and ev["unit"]
    assert ev["location"]["original"] == {"lon": lon, "lat": lat}
    assert ev["routing"]["rule"] == "zone"
    status, full = await server.call("GET", f"/api/v1/events/{ev['id']}", "city")
    assert status == 200
    assert [t["action"] for t in full["timeline"]][:2] == ["created", "dispatched"]


async def test_gcj02_input_is_converted_and_original_kept(server):
    lon, lat = point_in(server, "331002")
    from geo.coords import wgs84_to_gcj02

    glon, glat = wgs84_to_gcj02(lon, lat)
    status, ev = await server.call("POST", "/api/v1/events", "intake", json={
        "location": {"lon": glon, "lat": glat, "crs": "gcj02"}, "category": "noise"})
    assert status == 201
    assert abs(ev["location"]["lon"] - lon) < 1e-5 and abs(ev["location"]["lat"] - lat) < 1e-5
    assert ev["location"]["crs"] == "gcj02"
    assert ev["location"]["original"] == {"lon": glon, "lat": glat}


async def test_idempotent_intake_by_external_id_and_key(server):
    lon, lat = point_in(server, "331002")
    body = intake_body(lon, lat, external_id="12345-2026-000123")
    s1, e1 = await server.call("POST", "/api/v1/events", "intake", json=body)
    s2, e2 = await server.call("POST", "/api/v1/events", "intake", json=body)
    assert (s1, s2) == (201, 200) and e1["id"] == e2["id"]
    other = dict(body, source="grid")  # the same external id from another source is new
    s3, e3 = await server.call("POST", "/api/v1/events", "intake", json=other)
    assert s3 == 201 and e3["id"] != e1["id"]
    key = {"Idempotency-Key": "abc-123"}
    plain = intake_body(lon, lat)
    s4, e4 = await server.call("POST", "/api/v1/events", "intake", json=plain, headers=key)
    s5, e5 = await server.call("POST", "/api/v1/events", "intake", json=plain, headers=key)
    assert (s4, s5) == (201, 200) and e4["id"] == e5["id"]
    _, listing = await server.call("GET", "/api/v1/events?limit=1000", "city")
    assert len(listing["events"]) == 3


async def test_field_unit_lifecycle_replay_and_illegal(server):
    lon, lat = point_in(server, "331003")
    _, ev = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    who = server.field_token(ev["unit"])
    for action, status in (("respond", "responded"), ("depart", "departed")):
        code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/{action}", who,
                                      json={})
        assert code == 200 and out["status"] == status
    # a phone retrying an action that already happened: 200, nothing changes
    code, again = await server.call("POST", f"/api/v1/events/{ev['id']}/respond", who)
    assert code == 200 and again["status"] == "departed" and again["version"] == out["version"]
    code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/resolve", who)
    assert code == 409 and out["error"]["code"] == "illegal_transition"
    assert out["error"]["status"] == "departed"
    code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/cancel", who)
    assert code == 403  # a field unit may not cancel
    other = server.field_token("u-0002" if ev["unit"] != "u-0002" else "u-0003")
    code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/arrive", other)
    assert code == 404  # not its event: as if unknown (contract §6)
    code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/arrive", who)
    assert code == 200 and out["status"] == "arrived"
    code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/resolve", who,
                                  json={"note": "已处置"})
    assert code == 200 and out["status"] == "resolved" and out["next_deadline"] is None


async def test_offline_action_time_is_kept(server):
    lon, lat = point_in(server, "331003")
    _, ev = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    who = server.field_token(ev["unit"])
    at = datetime.fromisoformat(ev["created_at"]) + timedelta(seconds=0.5)
    code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/respond", who,
                                  json={"at": at.isoformat()})
    assert code == 200
    assert datetime.fromisoformat(out["responded_at"]) == at
    future = datetime.fromisoformat(ev["created_at"]) + timedelta(hours=1)
    code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/depart", who,
                                  json={"at": future.isoformat()})
    assert code == 422 and out["error"]["field"] == "at"


async def test_scope_county_operator_sees_only_its_county(server):
    hy = point_in(server, "331003")
    jj = point_in(server, "331002")
    _, e_hy = await server.call("POST", "/api/v1/events", "intake", json=intake_body(*hy))
    _, e_jj = await server.call("POST", "/api/v1/events", "intake", json=intake_body(*jj))
    _, mine = await server.call("GET", "/api/v1/events", "huangyan")
    assert [e["id"] for e in mine["events"]] == [e_hy["id"]]
    # out of scope answers 404, the same as an unknown id (contract §6)
    code, _ = await server.call("GET", f"/api/v1/events/{e_jj['id']}", "huangyan")
    assert code == 404
    code, _ = await server.call("POST", f"/api/v1/events/{e_jj['id']}/escalate", "huangyan")
    assert code == 404
    code, _ = await server.call("POST", "/api/v1/events", "huangyan", json=intake_body(*jj))
    assert code == 403
    code, _ = await server.call("GET", "/api/v1/events", "intake")
    assert code == 403
    async with server.session.get(server.url + "/api/v1/events") as r:
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    _, units = await server.call("GET", "/api/v1/units", "huangyan")
    ds = server.state.runtime.dataset
    assert units["units"] and all(
        ds.county_of(ds.teams[u["team"]].region) == "331003" for u in units["units"])


async def test_list_filters_and_pagination(server):
    lon, lat = point_in(server, "331002")
    ids = []
    for i in range(5):
        _, ev = await server.call("POST", "/api/v1/events", "intake",
                                  json=intake_body(lon, lat, external_id=f"p-{i}"))
        ids.append(ev["id"])
    await server.call("POST", f"/api/v1/events/{ids[0]}/cancel", "city", json={"note": "重复"})
    seen, cursor = [], None
    while True:
        q = "/api/v1/events?limit=2" + (f"&cursor={cursor}" if cursor else "")
        _, page = await server.call("GET", q, "city")
        seen += [e["id"] for e in page["events"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    _, cancelled = await server.call("GET", "/api/v1/events?status=cancelled", "city")
    assert [e["id"] for e in cancelled["events"]] == [ids[0]]
    _, none = await server.call("GET", "/api/v1/events?breached=true", "city")
    assert none["events"] == []


async def test_positions_scope_and_units(server):
    lon, lat = point_in(server, "331003")
    ds = server.state.runtime.dataset
    unit = next(u for u in sorted(ds.units) if ds.county_of(ds.teams[ds.units[u].team].region)
                == "331003")
    who = server.field_token(unit)
    code, out = await server.call("PUT", f"/api/v1/units/{unit}/position", who,
                                  json={"lon": lon, "lat": lat, "accuracy_m": 8})
    assert code == 200 and out["source"] == "reported" and abs(out["lon"] - lon) < 1e-6
    code, _ = await server.call("PUT", f"/api/v1/units/{unit}/position", "jiaojiang",
                                json={"lon": lon, "lat": lat})
    assert code == 404  # out of scope answers as unknown (contract §6)
    code, _ = await server.call("PUT", f"/api/v1/units/{unit}/position", "huangyan",
                                json={"lon": lon, "lat": lat})
    assert code == 200
    code, body = await server.call("PUT", "/api/v1/units/u-none/position", "admin",
                                   json={"lon": lon, "lat": lat})
    assert code == 404


async def test_stats_and_exports(server):
    lon, lat = point_in(server, "331003")
    _, ev = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    await server.call("POST", f"/api/v1/events/{ev['id']}/respond", "admin")
    code, stats = await server.call("GET", "/api/v1/stats/response-times?group_by=township",
                                    "supervisor")
    assert code == 200
    (g,) = stats["groups"]
    assert g["key"] == ev["township"] and g["count"] == 1
    assert g["respond"]["within_pct"] == 100.0 and g["respond"]["p50_s"] is not None
    assert g["depart"]["counted"] == 0
    code, data = await server.call("GET", "/api/v1/stats/export?format=xlsx&group_by=township",
                                   "supervisor")
    assert code == 200
    ws = openpyxl.load_workbook(io.BytesIO(data)).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][0] == "分组" and rows[1][0] == ev["township"]
    code, data = await server.call("GET", "/api/v1/stats/export?format=csv&group_by=day",
                                   "supervisor")
    assert code == 200 and data.decode("utf-8-sig").startswith("分组,名称,事件数")
    code, _ = await server.call("GET", "/api/v1/stats/response-times?group_by=planet",
                                "supervisor")
    assert code == 422
    code, _ = await server.call("GET", "/api/v1/stats/response-times", "intake")
    assert code == 403


async def test_metrics_health_categories_geojson(server):
    lon, lat = point_in(server, "331003")
    await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    async with server.session.get(server.url + "/metrics", headers=server.auth("admin")) as r:
        text = await r.text()
    assert 'dispatch_events{status="dispatched"' in text
    assert "dispatch_http_request_seconds_bucket" in text
    assert "dispatch_ws_clients" in text
    async with server.session.get(server.url + "/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    _, cats = await server.call("GET", "/api/v1/categories", "intake")
    assert {"id", "name", "priority", "timers"} <= set(cats["categories"][0])
    _, regions = await server.call("GET", "/api/v1/regions?level=county", "city")
    assert regions["type"] == "FeatureCollection" and len(regions["features"]) == 9
    _, zones = await server.call("GET", "/api/v1/zones", "city")
    assert any(f["properties"]["kind"] == "reservoir" for f in zones["features"])


async def test_openapi_lists_every_route(server):
    async with server.session.get(server.url + "/api/openapi.json") as r:
        doc = await r.json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = set()
    for route in server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path is None or route.method == "HEAD" or path.startswith("/static"):
            continue
        served.add((route.method, path))
    assert served == documented
    assert {(m, p) for m, p, _ in api.ROUTES} <= served
    assert openapi.DOCUMENT["openapi"].startswith("3.")
