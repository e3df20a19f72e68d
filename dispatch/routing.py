"""The adapter that lets the pure core route through geo/ (the core's RoutingPort)."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import asdict, is_dataclass
from typing import Any

from dispatch.core.errors import OutsideJurisdictionError
from dispatch.core.routing import Routing, UnitPick
from geo.router import OutsideJurisdictionError as GeoOutsideError
from geo.router import Router
from geo.units import UnitIndex


class GeoRoutingPort:
    """Routes with a geo ``Router`` and picks units with a geo ``UnitIndex``."""

    def __init__(self, router: Router, units: UnitIndex) -> None:
        self.router = router
        self.units = units
        self.dataset = router.dataset if hasattr(router, "dataset") else units.dataset

    def route(self, lon: float, lat: float) -> Routing:
        try:
            r = self.router.locate(lon, lat)
        except GeoOutsideError as exc:
            raise OutsideJurisdictionError(
                f"the point is {exc.distance_m:.0f} m from the nearest township, beyond "
                f"routing.snap_m") from None
        return Routing(team=r.team, team_level=r.team_level, grid=r.grid, township=r.township,
                       county=r.county, city=r.city, zone=r.zone, snapped_m=r.snapped_m,
                       explanation=r.explanation)

    def recommend(self, team: str, lon: float, lat: float, now: float,
                  busy: Container[str]) -> UnitPick | None:
        pick = self.units.recommend(team, lon, lat, now, busy)
        if pick is None:
            return None
        return UnitPick(unit=pick.unit, team=pick.team, mutual_aid=pick.mutual_aid,
                        distance_m=float(pick.distance_m), explanation=pick.explanation)

    def unit_team(self, unit: str) -> str | None:
        u = self.dataset.units.get(unit)
        return u.team if u is not None else None

    def team_level(self, team: str) -> str | None:
        t = self.dataset.teams.get(team)
        return t.level if t is not None else None


def pick_to_dict(pick: Any) -> dict[str, Any]:
    """A unit pick (geo's or the core's) as JSON-able data."""
    if is_dataclass(pick) and not isinstance(pick, type):
        d = asdict(pick)
    else:
        d = dict(pick)
    d["distance_m"] = round(float(d["distance_m"]), 1)
    return d
