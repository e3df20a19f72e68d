"""A routing port from a small in-test table (the real geo package is built elsewhere).

Longitude bands stand in for regions (all in county C1 of city T):
  lon < 121.0          outside every region (OutsideJurisdictionError)
  121.0 <= lon < 121.5 township T1, empowered: own team team-t1 (units u1, u2)
  121.5 <= lon < 122.0 township T2, not empowered: served by the county team team-c1 (u3)
  122.0 <= lon < 122.5 township T3: no team anywhere (status stays ``new``)
  lat >= 29.0 (and lon >= 121.0) zone Z1, a reservoir owned by team-z1 (county level, u4)
Team team-t4 (township T4, same county, unit u5) only lends units by mutual aid.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from dispatch.core.errors import OutsideJurisdictionError
from dispatch.core.routing import Routing, UnitPick

TEAMS: dict[str, dict[str, Any]] = {
    "team-t1": {"level": "township", "units": ["u1", "u2"]},
    "team-c1": {"level": "county", "units": ["u3"]},
    "team-z1": {"level": "county", "units": ["u4"]},
    "team-t4": {"level": "township", "units": ["u5"]},
    "team-city": {"level": "city", "units": ["u6"]},
}
UNITS = {u: t for t, spec in TEAMS.items() for u in spec["units"]}

T1 = (121.2, 28.6)
T2 = (121.7, 28.6)
T3 = (122.2, 28.6)
Z1 = (121.2, 29.1)
OUTSIDE = (120.5, 28.6)


class TableRouting:
    """``RoutingPort`` over the table above; counts calls so tests can assert on them."""

    def __init__(self) -> None:
        self.route_calls = 0

    def route(self, lon: float, lat: float) -> Routing:
        self.route_calls += 1
        if lon < 121.0:
            raise OutsideJurisdictionError("outside every region")
        if lon < 121.5:
            township, team = "T1", "team-t1"
        elif lon < 122.0:
            township, team = "T2", "team-c1"
        else:
            township, team = "T3", None
        zone = None
        if lat >= 29.0:
            zone, team = "Z1", "team-z1"
        level = TEAMS[team]["level"] if team else None
        return Routing(team=team, team_level=level, grid=f"{township}-g1", township=township,
                       county="C1", city="T", zone=zone, snapped_m=None,
                       explanation={"rule": "zone" if zone else "grid", "steps": []})

    def recommend(self, team: str, lon: float, lat: float, now: float,
                  busy: Container[str]) -> UnitPick | None:
        for u in TEAMS[team]["units"]:
            if u not in busy:
                return UnitPick(u, team, False, 100.0, {"rule": "own team"})
        for t, spec in TEAMS.items():
            if t in (team, "team-city"):
                continue
            for u in spec["units"]:
                if u not in busy:
                    return UnitPick(u, t, True, 5000.0, {"rule": "mutual aid"})
        return None

    def unit_team(self, unit: str) -> str | None:
        return UNITS.get(unit)

    def team_level(self, team: str) -> str | None:
        spec = TEAMS.get(team)
        return spec["level"] if spec else None
