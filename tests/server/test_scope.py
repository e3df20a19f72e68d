"""Caller scope on a real server (issue 11, defects 2, 3 and 11; contract §3, §6).

Duplicate keys belong to the token that sent them; reassign names only units and teams in
the caller's region; an id outside the caller's scope answers 404 with the same body as an
unknown one, while a refusal because of the caller's role stays 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatch.server.auth import issue_token
from tests.server.conftest import Server, intake_body, point_in, start_server

HY, JJ = "331003", "331002"  # 黄岩区 (the "huangyan" operator), 椒江区 ("jiaojiang")
UNKNOWN_EVENT = "E9999999"


def extra_token(srv: Server, who: str, role: str, region: str | None = None,
                unit: str | None = None) -> str:
    """Issue one more token the way an admin does (the token file) and name it ``who``."""
    srv.extra_tokens[who] = issue_token(srv.state.config.token_file, role, region, unit,
                                        name=who)
    return who


def county_unit(srv: Server, county: str, skip: int = 0) -> str:
    ds = srv.state.runtime.dataset
    units = [u for u in sorted(ds.units)
             if ds.county_of(ds.teams[ds.units[u].team].region) == county]
    return units[skip]


def county_team(srv: Server, county: str) -> str:
    ds = srv.state.runtime.dataset
    return next(t for t in sorted(ds.teams) if ds.teams[t].level == "township"
                and ds.county_of(ds.teams[t].region) == county and ds.teams[t].units)


def same_but_id(a: dict[str, Any], b: dict[str, Any], id_a: str, id_b: str) -> bool:
    """Two error bodies that differ only in the id the caller itself sent."""
    return a["error"] == {**b["error"], "message": b["error"]["message"].replace(id_b, id_a)}


async def stop(srv: Server) -> None:
    await srv.session.close()
    await srv.runner.cleanup()


# -- defect 2: duplicates belong to the caller ---------------------------------------------
async def test_external_id_of_another_county_is_not_handed_back(server):
    theirs = intake_body(*point_in(server, JJ), external_id="12345-2026-000777",
                         reporter={"name": "王某", "phone": "13800000000"})
    s1, e_jj = await server.call("POST", "/api/v1/events", "jiaojiang", json=theirs)
    assert s1 == 201 and e_jj["county"] == JJ
    code, _ = await server.call("GET", f"/api/v1/events/{e_jj['id']}", "huangyan")
    assert code == 404
    # the same source + external_id from a huangyan operator, for a huangyan point
    mine = intake_body(*point_in(server, HY), external_id="12345-2026-000777")
    s2, e_hy = await server.call("POST", "/api/v1/events", "huangyan", json=mine)
    assert s2 == 201 and e_hy["id"] != e_jj["id"] and e_hy["county"] == HY
    assert e_hy["reporter"] is None
    # and each caller still gets its own event back on a retry
    s3, again = await server.call("POST", "/api/v1/events", "huangyan", json=mine)
    assert (s3, again["id"]) == (200, e_hy["id"])
    s4, again = await server.call("POST", "/api/v1/events", "jiaojiang", json=theirs)
    assert (s4, again["id"]) == (200, e_jj["id"])


async def test_idempotency_key_is_per_token(server):
    second = extra_token(server, "intake-2", "intake")
    key = {"Idempotency-Key": "shared-key-1"}
    lon, lat = point_in(server, JJ)
    s1, e1 = await server.call("POST", "/api/v1/events", "intake", headers=key,
                               json=intake_body(lon, lat, description="第一个系统"))
    s2, e2 = await server.call("POST", "/api/v1/events", second, headers=key,
                               json=intake_body(lon, lat, description="第二个系统"))
    assert (s1, s2) == (201, 201) and e1["id"] != e2["id"]
    assert e2["description"] == "第二个系统"
    s3, e3 = await server.call("POST", "/api/v1/events", "intake", headers=key,
                               json=intake_body(lon, lat, description="重发"))
    assert (s3, e3["id"], e3["description"]) == (200, e1["id"], "第一个系统")
    _, listing = await server.call("GET", "/api/v1/events?limit=1000", "admin")
    assert sorted(e["id"] for e in listing["events"]) == sorted([e1["id"], e2["id"]])
    for ev in (e1, e2, e3, *listing["events"]):
        assert "caller" not in ev and "idempotency_key" not in ev


async def test_caller_scoped_duplicates_survive_a_restart(tmp_path: Path):
    srv = await start_server(tmp_path)
    try:
        second = extra_token(srv, "intake-2", "intake")
        key = {"Idempotency-Key": "k-restart"}
        lon, lat = point_in(srv, JJ)
        body = intake_body(lon, lat, external_id="ext-restart")
        _, e1 = await srv.call("POST", "/api/v1/events", "intake", headers=key, json=body)
        extra = dict(srv.extra_tokens)
    finally:
        await stop(srv)
    srv = await start_server(tmp_path)
    srv.extra_tokens.update(extra)
    try:
        s, again = await srv.call("POST", "/api/v1/events", "intake", headers=key, json=body)
        assert (s, again["id"]) == (200, e1["id"])
        s, again = await srv.call("POST", "/api/v1/events", "intake", json=body)
        assert (s, again["id"]) == (200, e1["id"])
        s, other = await srv.call("POST", "/api/v1/events", second, headers=key, json=body)
        assert s == 201 and other["id"] != e1["id"]
    finally:
        await stop(srv)


# -- defect 3: reassign names only what the caller sees ------------------------------------
async def test_reassign_to_another_countys_unit_or_team_is_404(server):
    _, ev = await server.call("POST", "/api/v1/events", "intake",
                              json=intake_body(*point_in(server, HY)))
    assert ev["county"] == HY
    their_unit, their_team = county_unit(server, JJ), county_team(server, JJ)
    path = f"/api/v1/events/{ev['id']}/reassign"
    code, out = await server.call("POST", path, "huangyan", json={"unit": their_unit})
    assert code == 404 and out["error"]["field"] == "unit", out
    code, unknown = await server.call("POST", path, "huangyan", json={"unit": "u-nope"})
    assert code == 404 and same_but_id(out, unknown, their_unit, "u-nope")
    code, out = await server.call("POST", path, "huangyan", json={"team": their_team})
    assert code == 404 and out["error"]["field"] == "team", out
    code, unknown = await server.call("POST", path, "huangyan", json={"team": "t-nope"})
    assert code == 404 and same_but_id(out, unknown, their_team, "t-nope")
    # a huangyan unit with a jiaojiang team named beside it is still refused
    code, out = await server.call("POST", path, "huangyan",
                                  json={"unit": county_unit(server, HY, 3), "team": their_team})
    assert code == 404 and out["error"]["field"] == "team"
    # nothing changed, and the other county's unit is not tied up
    _, now = await server.call("GET", f"/api/v1/events/{ev['id']}", "huangyan")
    assert (now["unit"], now["team"], now["version"]) == (ev["unit"], ev["team"], ev["version"])
    assert their_unit not in server.state.runtime.engine.busy_units()
    # in its own county it works, and the admin may send any unit
    mine = county_unit(server, HY, 3)
    code, out = await server.call("POST", path, "huangyan", json={"unit": mine})
    assert code == 200 and out["unit"] == mine
    code, out = await server.call("POST", path, "admin", json={"unit": their_unit})
    assert code == 200 and out["unit"] == their_unit


async def test_reassign_over_the_socket_is_scoped_too(server):
    _, ev = await server.call("POST", "/api/v1/events", "intake",
                              json=intake_body(*point_in(server, HY)))
    their_unit = county_unit(server, JJ)
    async with server.session.ws_connect(server.ws_url, headers=server.auth("huangyan")) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        await ws.send_json({"type": "reassign", "id": 1, "event": ev["id"], "unit": their_unit})
        reply = await ws.receive_json(timeout=5)
        assert reply["type"] == "error" and reply["id"] == 1
        assert (reply["error"]["code"], reply["error"]["field"]) == ("not_found", "unit")
    assert their_unit not in server.state.runtime.engine.busy_units()


async def test_a_busy_unit_does_not_name_an_event_outside_scope(server):
    _, theirs = await server.call("POST", "/api/v1/events", "intake",
                                  json=intake_body(*point_in(server, JJ)))
    _, mine = await server.call("POST", "/api/v1/events", "intake",
                                json=intake_body(*point_in(server, HY)))
    unit = county_unit(server, HY, 7)
    assert unit != mine["unit"]
    # the admin lends a huangyan unit to the jiaojiang event
    code, lent = await server.call("POST", f"/api/v1/events/{theirs['id']}/reassign", "admin",
                                   json={"unit": unit})
    assert code == 200 and lent["unit"] == unit
    code, out = await server.call("POST", f"/api/v1/events/{mine['id']}/reassign", "huangyan",
                                  json={"unit": unit})
    assert code == 422 and out["error"]["field"] == "unit"
    assert theirs["id"] not in out["error"]["message"]
    # the admin, who reads every event, is told which one
    code, out = await server.call("POST", f"/api/v1/events/{mine['id']}/reassign", "admin",
                                  json={"unit": unit})
    assert code == 422 and theirs["id"] in out["error"]["message"]


# -- defect 11: out of scope answers as unknown --------------------------------------------
async def test_out_of_scope_event_answers_like_an_unknown_one(server):
    _, ev = await server.call("POST", "/api/v1/events", "intake",
                              json=intake_body(*point_in(server, JJ)))
    eid = ev["id"]
    for method, suffix, body in (("GET", "", None), ("GET", "/units", None),
                                 ("POST", "/escalate", None), ("POST", "/respond", {}),
                                 ("POST", "/cancel", {"note": "x"}),
                                 ("POST", "/reassign", {"team": county_team(server, HY)})):
        kw: dict[str, Any] = {} if body is None else {"json": body}
        c1, theirs = await server.call(method, f"/api/v1/events/{eid}{suffix}", "huangyan",
                                       **kw)
        c2, unknown = await server.call(method, f"/api/v1/events/{UNKNOWN_EVENT}{suffix}",
                                        "huangyan", **kw)
        assert (c1, c2) == (404, 404), (suffix, theirs, unknown)
        assert same_but_id(theirs, unknown, eid, UNKNOWN_EVENT), (suffix, theirs, unknown)
    # a body the server cannot parse does not tell them apart either
    for target in (eid, UNKNOWN_EVENT):
        async with server.session.post(f"{server.url}/api/v1/events/{target}/respond",
                                       data=b"{", headers={**server.auth("huangyan"),
                                                           "Content-Type": "application/json"}
                                       ) as r:
            assert r.status == 404
    _, still = await server.call("GET", f"/api/v1/events/{eid}", "jiaojiang")
    assert still["version"] == ev["version"]


async def test_field_unit_sees_only_its_own_event_ids(server):
    _, ev = await server.call("POST", "/api/v1/events", "intake",
                              json=intake_body(*point_in(server, HY)))
    other = county_unit(server, HY, 5)
    assert other != ev["unit"]
    who = server.field_token(other)
    for method, suffix in (("GET", ""), ("POST", "/respond"), ("GET", "/units")):
        c1, theirs = await server.call(method, f"/api/v1/events/{ev['id']}{suffix}", who)
        c2, unknown = await server.call(method, f"/api/v1/events/{UNKNOWN_EVENT}{suffix}", who)
        assert (c1, c2) == (404, 404), suffix
        assert same_but_id(theirs, unknown, ev["id"], UNKNOWN_EVENT)
    # its own event, but an action its role may not take: 403
    own = server.field_token(ev["unit"])
    code, out = await server.call("POST", f"/api/v1/events/{ev['id']}/escalate", own)
    assert code == 403 and out["error"]["code"] == "forbidden"


async def test_role_refusals_stay_403_whatever_the_id(server):
    _, ev = await server.call("POST", "/api/v1/events", "intake",
                              json=intake_body(*point_in(server, HY)))
    for target in (ev["id"], UNKNOWN_EVENT):
        for who, method, suffix in (("intake", "GET", ""), ("intake", "GET", "/units"),
                                    ("intake", "POST", "/respond"),
                                    ("supervisor", "POST", "/escalate")):
            code, out = await server.call(method, f"/api/v1/events/{target}{suffix}", who)
            assert code == 403 and out["error"]["code"] == "forbidden", (who, suffix, target)


async def test_position_of_a_unit_outside_scope_is_404(server):
    lon, lat = point_in(server, JJ)
    theirs = county_unit(server, JJ)
    c1, out = await server.call("PUT", f"/api/v1/units/{theirs}/position", "huangyan",
                                json={"lon": lon, "lat": lat})
    c2, unknown = await server.call("PUT", "/api/v1/units/u-nope/position", "huangyan",
                                    json={"lon": lon, "lat": lat})
    assert (c1, c2) == (404, 404) and same_but_id(out, unknown, theirs, "u-nope")
    who = server.field_token(county_unit(server, HY))
    c3, out = await server.call("PUT", f"/api/v1/units/{theirs}/position", who,
                                json={"lon": lon, "lat": lat})
    assert c3 == 404 and same_but_id(out, unknown, theirs, "u-nope")
    rt = server.state.runtime
    assert rt.units.position(theirs, server.state.clock.now())["source"] != "reported"


async def test_recommended_unit_is_scope_filtered(server):
    lon, lat = point_in(server, HY)
    _, ev = await server.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    their_team = county_team(server, JJ)
    # the city's admin sends the huangyan event to a jiaojiang team
    code, moved = await server.call("POST", f"/api/v1/events/{ev['id']}/reassign", "admin",
                                    json={"team": their_team})
    assert code == 200 and moved["team"] == their_team
    ds = server.state.runtime.dataset
    code, admin_view = await server.call("GET", f"/api/v1/events/{ev['id']}/units", "admin")
    assert code == 200 and admin_view["recommended"] is not None
    assert ds.county_of(ds.teams[admin_view["recommended"]["team"]].region) == JJ
    code, hy_view = await server.call("GET", f"/api/v1/events/{ev['id']}/units", "huangyan")
    assert code == 200
    assert hy_view["recommended"] is None
    for pick in hy_view["nearby"]:
        assert ds.county_of(ds.teams[pick["team"]].region) == HY


@pytest.mark.parametrize("who", ["huangyan", "jiaojiang"])
async def test_an_operators_key_never_returns_another_callers_event(server, who):
    """The intake system used a key for another county first; the operator's own report
    under the same key is a new event, not the other county's."""
    county = HY if who == "huangyan" else JJ
    key = {"Idempotency-Key": "same-everywhere"}
    _, first = await server.call("POST", "/api/v1/events", "intake", headers=key,
                                 json=intake_body(*point_in(server, HY if county == JJ
                                                            else JJ)))
    code, ev = await server.call("POST", "/api/v1/events", who, headers=key,
                                 json=intake_body(*point_in(server, county)))
    assert code == 201 and ev["id"] != first["id"] and ev["county"] == county


async def test_ws_rejects_scope_without_revealing(server):
    _, ev = await server.call("POST", "/api/v1/events", "intake",
                              json=intake_body(*point_in(server, JJ)))
    async with aiohttp.ClientSession() as s, s.ws_connect(
            server.ws_url, headers=server.auth("huangyan")) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        replies = []
        for i, target in enumerate((ev["id"], UNKNOWN_EVENT)):
            await ws.send_json({"type": "escalate", "id": i, "event": target})
            replies.append(await ws.receive_json(timeout=5))
    a, b = replies
    assert a["error"]["code"] == b["error"]["code"] == "not_found"
    assert a["error"]["message"].replace(ev["id"], UNKNOWN_EVENT) == b["error"]["message"]


# -- the bounds of contract §3, wired to the server's clock --------------------------------
async def test_client_times_are_bounded_by_the_servers_clock(server):
    """``reported_at`` and a position's ``at`` later than now + ``offline.max_skew_s``
    answer 422 naming the field, and nothing is stored."""
    skew = float(server.state.config["offline"]["max_skew_s"])
    ahead = datetime.fromtimestamp(server.state.clock.now() + skew + 3600, UTC)
    lon, lat = point_in(server, HY)
    code, out = await server.call("POST", "/api/v1/events", "intake",
                                  json=intake_body(lon, lat, reported_at=ahead.isoformat()))
    assert code == 422 and out["error"]["field"] == "reported_at", out
    assert list(server.state.runtime.engine.events()) == []
    unit = county_unit(server, HY)
    code, out = await server.call("PUT", f"/api/v1/units/{unit}/position", "huangyan",
                                  json={"lon": lon, "lat": lat, "at": ahead.isoformat()})
    assert code == 422 and out["error"]["field"] == "at", out
    near = datetime.fromtimestamp(server.state.clock.now() - 5, UTC)
    code, out = await server.call("POST", "/api/v1/events", "intake",
                                  json=intake_body(lon, lat, reported_at=near.isoformat()))
    assert code == 201
    assert abs((datetime.fromisoformat(out["reported_at"]) - near).total_seconds()) < 0.001
