"""``GET /regions`` and ``GET /zones`` give each caller its scope (issue 12, contract §6).

A county operator gets its county and everything below it, plus the city above it (its
outline, for context), never a sibling county or that county's townships and grids; a field
unit gets its team's county the same way; an intake token gets nothing; admins and city-wide
tokens get every feature, as before. Zones: those whose team the caller sees (``/teams``).
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.server.conftest import Server

HY, JJ, CITY = "331003", "331002", "331000"
LEVELS = ("city", "county", "township", "grid")


def as_sent(data: Any) -> Any:
    return orjson.loads(orjson.dumps(data))


def ids(fc: dict[str, Any]) -> set[str]:
    return {str(f["properties"]["id"]) for f in fc["features"]}


def under_or_above(srv: Server, home: str, level: str) -> set[str]:
    """The regions of ``level`` within ``home``, or on the path above it."""
    ds = srv.state.runtime.dataset
    return {rid for rid, r in ds.regions.items() if r.level == level
            and (home in ds.region_path(rid) or rid in ds.region_path(home))}


async def regions(srv: Server, who: str, level: str | None = None) -> dict[str, Any]:
    query = f"?level={level}" if level else ""
    code, fc = await srv.call("GET", f"/api/v1/regions{query}", who)
    assert code == 200, fc
    assert fc["type"] == "FeatureCollection"
    return fc


async def test_a_county_operator_gets_its_county_below_and_the_city_above(server):
    ds = server.state.runtime.dataset
    for level in LEVELS:
        got = ids(await regions(server, "huangyan", level))
        assert got == under_or_above(server, HY, level)
        assert got  # every level has something in 黄岩区 (the city above, for "city")
        assert not any(JJ in ds.region_path(rid) for rid in got)  # no sibling, nothing below it
    default = ids(await regions(server, "huangyan"))
    assert default == under_or_above(server, HY, "county") | under_or_above(server, HY,
                                                                             "township")
    assert default.isdisjoint({rid for rid in ds.regions if JJ in ds.region_path(rid)})


async def test_admin_and_city_wide_tokens_get_every_region_as_before(server):
    ds = server.state.runtime.dataset
    for who in ("admin", "city", "supervisor"):
        for level in (None, *LEVELS):
            fc = await regions(server, who, level)
            want = ds.regions_geojson(levels=[level] if level else ["county", "township"])
            assert fc == as_sent(want)


async def test_a_field_unit_gets_its_teams_county(server):
    ds = server.state.runtime.dataset
    unit = next(u for u in sorted(ds.units)
                if ds.county_of(ds.teams[ds.units[u].team].region) == JJ)
    who = server.field_token(unit)
    got = ids(await regions(server, who, "township"))
    assert got == under_or_above(server, JJ, "township") and got
    assert ids(await regions(server, who, "county")) == {JJ}


async def test_an_intake_token_gets_no_region_and_no_zone(server):
    assert (await regions(server, "intake"))["features"] == []
    code, zones = await server.call("GET", "/api/v1/zones", "intake")
    assert code == 200 and zones["features"] == []


async def test_zones_are_those_whose_team_the_caller_sees(server):
    ds = server.state.runtime.dataset
    _, everything = await server.call("GET", "/api/v1/zones", "admin")
    assert everything == as_sent(ds.zones_geojson())
    _, teams = await server.call("GET", "/api/v1/teams", "huangyan")
    seen = {t["id"] for t in teams["teams"]}
    _, zones = await server.call("GET", "/api/v1/zones", "huangyan")
    assert ids(zones) == {z.id for z in ds.zones.values() if z.team in seen}
    assert ids(zones) != ids(everything)  # the demo data has zones of other counties' teams
