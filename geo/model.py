"""The loaded data set: regions, zones, teams and units, immutable once loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

LEVELS = ("city", "county", "township", "grid")
TEAM_LEVELS = ("city", "county", "township")
UNIT_KINDS = ("officer", "vehicle", "boat")


@dataclass(frozen=True)
class Region:
    """One region of any tier; ``area`` is in m² (geodesic)."""

    id: str
    name: str
    level: str
    parent: str | None
    geometry: BaseGeometry = field(repr=False, compare=False)
    area: float = 0.0


@dataclass(frozen=True)
class Zone:
    """A special geofence whose events all go to ``team``."""

    id: str
    name: str
    kind: str
    team: str
    priority: int
    geometry: BaseGeometry = field(repr=False, compare=False)
    area_m2: float = 0.0


@dataclass(frozen=True)
class Unit:
    id: str
    name: str
    kind: str
    team: str


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    level: str
    region: str
    base: tuple[float, float]
    units: tuple[Unit, ...] = ()


@dataclass(frozen=True)
class GeoWarning:
    """A gap or overlap between sibling regions (or another non-fatal finding)."""

    kind: str  # "gap" | "overlap" | "repaired"
    ids: tuple[str, ...]
    area_m2: float
    point: tuple[float, float] | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ids": list(self.ids), "area_m2": round(self.area_m2, 1),
                "point": list(self.point) if self.point else None, "message": self.message}


class GeoDataset:
    """Everything routing needs, checked and complete (the loader never returns a partial one).

    ``repaired`` lists the geometries the loader had to repair; the gaps and overlaps between
    siblings (at least ``gap_min_m2``) are not computed here, so that loading stays fast:
    ``geo.checks.dataset_warnings`` computes them for ``geo check``.
    """

    def __init__(self, regions: dict[str, Region], zones: dict[str, Zone],
                 teams: dict[str, Team], repaired: list[GeoWarning] | None = None,
                 gap_min_m2: float = 1.0) -> None:
        self.regions = regions
        self.zones = zones
        self.teams = teams
        self.units: dict[str, Unit] = {u.id: u for t in teams.values() for u in t.units}
        self.city_id: str = next(r.id for r in regions.values() if r.level == "city")
        self._own = {(t.region, t.level): t.id for t in teams.values()}
        self.repaired: tuple[GeoWarning, ...] = tuple(repaired or ())
        self.gap_min_m2 = gap_min_m2
        self._children: dict[str, list[str]] = {}
        for r in regions.values():
            if r.parent is not None:
                self._children.setdefault(r.parent, []).append(r.id)
        for v in self._children.values():
            v.sort()
        self._geojson_cache: dict[Any, dict[str, Any]] = {}

    # -- hierarchy -------------------------------------------------------------------------
    def parents(self) -> list[str]:
        """Ids of the regions that have children, sorted."""
        return sorted(self._children)

    def children(self, region_id: str) -> list[str]:
        """Ids of the regions one level below ``region_id``, sorted."""
        return list(self._children.get(region_id, ()))

    def own_team(self, region_id: str) -> str | None:
        """The team whose region is this region and whose level is the region's level."""
        r = self.regions.get(region_id)
        if r is None:
            return None
        return self._own.get((region_id, r.level))

    def is_empowered(self, township_id: str) -> bool:
        """A township is empowered (赋权) when it has its own team."""
        return self.own_team(township_id) is not None

    def region_path(self, region_id: str) -> list[str]:
        """The region and its ancestors up to the city, e.g. [grid, township, county, city]."""
        out: list[str] = []
        rid: str | None = region_id
        while rid is not None and rid in self.regions:
            out.append(rid)
            rid = self.regions[rid].parent
        return out

    def ancestor(self, region_id: str, level: str) -> str | None:
        """The ancestor of ``region_id`` (or itself) at ``level``, if any."""
        for rid in self.region_path(region_id):
            if self.regions[rid].level == level:
                return rid
        return None

    def county_of(self, region_id: str) -> str | None:
        """The county containing ``region_id`` (itself if a county); None for the city."""
        return self.ancestor(region_id, "county")

    def township_of(self, region_id: str) -> str | None:
        return self.ancestor(region_id, "township")

    # -- reports ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts per level, teams, units, and empowered vs not-empowered townships.

        Cheap: it does not compute ``warnings`` (gaps and overlaps), which ``geo check`` does.
        """
        levels = {lv: 0 for lv in LEVELS}
        for r in self.regions.values():
            levels[r.level] += 1
        towns = [r.id for r in self.regions.values() if r.level == "township"]
        emp = sum(1 for t in towns if self.is_empowered(t))
        kinds: dict[str, int] = {}
        for u in self.units.values():
            kinds[u.kind] = kinds.get(u.kind, 0) + 1
        team_levels = {lv: 0 for lv in TEAM_LEVELS}
        for t in self.teams.values():
            team_levels[t.level] += 1
        return {"regions": levels, "zones": len(self.zones), "teams": len(self.teams),
                "teams_by_level": team_levels, "units": len(self.units),
                "units_by_kind": dict(sorted(kinds.items())),
                "townships_empowered": emp, "townships_not_empowered": len(towns) - emp}

    # -- display ---------------------------------------------------------------------------
    def regions_geojson(self, levels: list[str] | tuple[str, ...] | None = None,
                        tolerance: float = 0.0005) -> dict[str, Any]:
        """Regions of ``levels`` (all if None) as a display-simplified FeatureCollection.

        Simplified with ``shapely.coverage_simplify`` per level so shared borders stay shared;
        cached per (levels, tolerance).
        """
        key = ("regions", tuple(levels) if levels else None, tolerance)
        if key not in self._geojson_cache:
            feats = []
            want = set(levels) if levels else set(LEVELS)
            for lv in LEVELS:
                if lv not in want:
                    continue
                rs = sorted((r for r in self.regions.values() if r.level == lv),
                            key=lambda r: r.id)
                geoms = _simplify([r.geometry for r in rs], tolerance)
                for r, g in zip(rs, geoms, strict=True):
                    feats.append({"type": "Feature", "id": r.id, "geometry": _gj(g),
                                  "properties": {"id": r.id, "name": r.name, "level": r.level,
                                                 "parent": r.parent,
                                                 "team": self.own_team(r.id)}})
            self._geojson_cache[key] = {"type": "FeatureCollection", "features": feats}
        return self._geojson_cache[key]

    def zones_geojson(self, tolerance: float = 0.0001) -> dict[str, Any]:
        """Zones as a FeatureCollection (id, name, kind, team, priority), cached."""
        key = ("zones", tolerance)
        if key not in self._geojson_cache:
            zs = sorted(self.zones.values(), key=lambda z: z.id)
            feats = [{"type": "Feature", "id": z.id,
                      "geometry": _gj(shapely.simplify(z.geometry, tolerance)),
                      "properties": {"id": z.id, "name": z.name, "kind": z.kind,
                                     "team": z.team, "priority": z.priority}} for z in zs]
            self._geojson_cache[key] = {"type": "FeatureCollection", "features": feats}
        return self._geojson_cache[key]


def _simplify(geoms: list[BaseGeometry], tolerance: float) -> list[BaseGeometry]:
    if not geoms or tolerance <= 0:
        return geoms
    try:
        return list(shapely.coverage_simplify(geoms, tolerance))
    except Exception:  # not a valid coverage: simplify one by one
        return list(shapely.simplify(geoms, tolerance, preserve_topology=True))


def _gj(g: BaseGeometry) -> dict[str, Any]:
    return shapely.geometry.mapping(shapely.set_precision(g, 1e-6))
