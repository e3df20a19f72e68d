"""Import regions, zones and teams (contract §1) into a checked ``GeoDataset``.

The import edge: geopandas/pyogrio read any GeoJSON, Shapefile or GeoPackage, reproject to
EPSG:4326, and hand plain shapely geometries on. Every problem is collected (not just the
first) and reported together; on any problem nothing is returned.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from geo.areas import areas_m2
from geo.model import (
    LEVELS,
    TEAM_LEVELS,
    UNIT_KINDS,
    GeoDataset,
    GeoWarning,
    Region,
    Team,
    Unit,
    Zone,
)

_PARENT_LEVEL = {"county": "city", "township": "county", "grid": "township"}


@dataclass(frozen=True)
class GeoProblem:
    """One reason the import was rejected: which file kind, which feature id, why."""

    kind: str  # "regions" | "zones" | "teams"
    id: str | None
    reason: str

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.kind} {self.id if self.id is not None else '-'}: {self.reason}"


class GeoImportError(Exception):
    """The data set does not load; ``problems`` lists every reason found."""

    def __init__(self, problems: list[GeoProblem]) -> None:
        self.problems = problems
        head = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} problem(s): {head}{more}")


class _Problems(list):
    def add(self, kind: str, fid: Any, reason: str) -> None:
        self.append(GeoProblem(kind, None if fid is None else str(fid), reason))


def load_dataset(regions_path: str | Path, zones_path: str | Path | None,
                 teams_path: str | Path, gap_min_m2: float = 1.0) -> GeoDataset:
    """Read, check and assemble a data set; raise ``GeoImportError`` listing every problem.

    Invalid geometries are repaired with ``shapely.make_valid`` only where no area is lost
    (the repair is then a warning); anything else that is wrong rejects the whole import.
    """
    probs = _Problems()
    raw_regions = _read_layer(regions_path, "regions", probs)
    raw_zones = _read_layer(zones_path, "zones", probs) if zones_path else None
    raw_teams = _read_teams(teams_path, probs)
    repaired: list[GeoWarning] = []
    regions = _regions(raw_regions, probs, repaired) if raw_regions is not None else {}
    teams = _teams(raw_teams, regions, probs) if raw_teams is not None else {}
    zones = (_zones(raw_zones, teams, probs, repaired, raw_teams is not None)
             if raw_zones is not None else {})
    if probs:
        raise GeoImportError(list(probs))
    return GeoDataset(regions, zones, teams, repaired=repaired, gap_min_m2=gap_min_m2)


# -- reading ---------------------------------------------------------------------------------
def _read_layer(path: str | Path, kind: str, probs: _Problems) -> Any:
    import geopandas  # the import edge: geopandas lives here only

    try:
        gdf = geopandas.read_file(path, engine="pyogrio")
    except Exception as exc:  # noqa: BLE001 - any reader failure is a problem to report
        probs.add(kind, None, f"cannot read {path}: {exc}")
        return None
    if gdf.crs is not None and gdf.crs.to_epsg() not in (4326, 4490):
        try:
            gdf = gdf.to_crs(4326)
        except Exception as exc:  # noqa: BLE001
            probs.add(kind, None, f"cannot reproject {path} from {gdf.crs}: {exc}")
            return None
    return gdf


def _read_teams(path: str | Path, probs: _Problems) -> list[Any] | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
        if str(path).lower().endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception as exc:  # noqa: BLE001
        probs.add("teams", None, f"cannot read {path}: {exc}")
        return None
    if isinstance(data, dict) and isinstance(data.get("teams"), list):
        data = data["teams"]
    if not isinstance(data, list):
        probs.add("teams", None, f"{path} must hold a list of teams")
        return None
    return data


def _text(v: Any) -> str | None:
    """A property as a string id/name; None when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    s = str(v).strip()
    return s or None


def _column(gdf: Any, name: str) -> list[Any]:
    if name not in gdf.columns:
        return [None] * len(gdf)
    return gdf[name].tolist()


# -- geometry --------------------------------------------------------------------------------
def _geoms(ids: list[str | None], gdf: Any, kind: str, probs: _Problems,
           repaired: list[GeoWarning]) -> list[Any]:
    """Checked polygonal geometries (None where rejected)."""
    geoms = np.asarray(gdf.geometry.array, dtype=object)
    out: list[Any] = [None] * len(geoms)
    valid = shapely.is_valid(geoms)
    for i, g in enumerate(geoms):
        fid = ids[i]
        if g is None or shapely.is_empty(g):
            probs.add(kind, fid, "empty or missing geometry")
            continue
        if g.geom_type not in ("Polygon", "MultiPolygon"):
            probs.add(kind, fid, f"geometry is a {g.geom_type}, expected Polygon or "
                                 "MultiPolygon")
            continue
        x0, y0, x1, y1 = g.bounds
        if not all(map(math.isfinite, (x0, y0, x1, y1))) or x0 < -180 or x1 > 180 \
                or y0 < -90 or y1 > 90:
            probs.add(kind, fid, "coordinates outside longitude/latitude range "
                                 "(wrong or missing CRS?)")
            continue
        if not valid[i]:
            fixed = _repair(g)
            if fixed is None:
                probs.add(kind, fid, f"invalid geometry ({shapely.is_valid_reason(g)}) that "
                                     "cannot be repaired without losing area")
                continue
            repaired.append(GeoWarning("repaired", (fid or "?",), 0.0, None,
                                       f"{kind} {fid}: invalid geometry "
                                       f"({shapely.is_valid_reason(g)}) repaired by make_valid"))
            g = fixed
        out[i] = g
    return out


def _repair(g: Any) -> Any:
    """``make_valid`` keeping only polygonal parts, or None if that would lose area."""
    mv = shapely.make_valid(g)
    parts = [p for p in shapely.get_parts(mv) if p.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return None
    fixed = shapely.union_all(parts)
    if fixed.is_empty or fixed.area <= 0:
        return None
    if fixed.area < abs(g.area) * (1 - 1e-6):  # more than 1 ppm gone: area was lost
        return None
    return fixed


# -- regions ---------------------------------------------------------------------------------
def _regions(gdf: Any, probs: _Problems, repaired: list[GeoWarning]) -> dict[str, Region]:
    ids = [_text(v) for v in _column(gdf, "id")]
    names = [_text(v) for v in _column(gdf, "name")]
    levels = [_text(v) for v in _column(gdf, "level")]
    parents = [_text(v) for v in _column(gdf, "parent")]
    geoms = _geoms(ids, gdf, "regions", probs, repaired)
    rows: dict[str, int] = {}
    for i, fid in enumerate(ids):
        if fid is None:
            probs.add("regions", None, f"feature #{i} has no id")
        elif fid in rows:
            probs.add("regions", fid, "duplicate id")
        else:
            rows[fid] = i
    for fid, i in rows.items():
        if names[i] is None:
            probs.add("regions", fid, "missing name")
        if levels[i] not in LEVELS:
            probs.add("regions", fid, f"level {levels[i]!r} is not one of {', '.join(LEVELS)}")
    cities = [fid for fid, i in rows.items() if levels[i] == "city"]
    if not cities and not any(p.kind == "regions" and p.id is None for p in probs):
        probs.add("regions", None, "no region has level 'city'")
    for extra in sorted(cities)[1:]:
        probs.add("regions", extra, f"a second city (the city is {sorted(cities)[0]})")
    for fid, i in rows.items():
        lv, par = levels[i], parents[i]
        if lv not in LEVELS:
            continue
        if lv == "city":
            if par is not None:
                probs.add("regions", fid, f"the city must have no parent (has {par!r})")
            continue
        if par is None:
            probs.add("regions", fid, f"missing parent (a {lv} needs a {_PARENT_LEVEL[lv]})")
        elif par not in rows:
            probs.add("regions", fid, f"parent {par!r} does not exist")
        elif levels[rows[par]] != _PARENT_LEVEL[lv]:
            probs.add("regions", fid, f"parent {par!r} is a {levels[rows[par]]}, "
                                      f"expected a {_PARENT_LEVEL[lv]}")
    ok = [(fid, i) for fid, i in rows.items() if geoms[i] is not None]
    area = areas_m2([geoms[i] for _, i in ok]) if ok else []
    return {fid: Region(fid, names[i] or fid, levels[i] or "", parents[i], geoms[i],
                        float(a)) for (fid, i), a in zip(ok, area, strict=True)}


# -- teams -----------------------------------------------------------------------------------
def _base(v: Any) -> tuple[float, float] | None:
    from geo.coords import CoordinateError, validate

    if isinstance(v, dict):
        v = [v.get("lon"), v.get("lat")]
    if not isinstance(v, list | tuple) or len(v) != 2:
        return None
    try:
        return validate(v[0], v[1])
    except CoordinateError:
        return None


def _teams(raw: list[Any], regions: dict[str, Region], probs: _Problems) -> dict[str, Team]:
    teams: dict[str, Team] = {}
    unit_ids: set[str] = set()
    own: dict[tuple[str, str], str] = {}
    for n, t in enumerate(raw):
        if not isinstance(t, dict):
            probs.add("teams", None, f"entry #{n} is not a mapping")
            continue
        tid = _text(t.get("id"))
        if tid is None:
            probs.add("teams", None, f"entry #{n} has no id")
            continue
        if tid in teams:
            probs.add("teams", tid, "duplicate id")
            continue
        bad = len(probs)
        level, region = _text(t.get("level")), _text(t.get("region"))
        if level not in TEAM_LEVELS:
            probs.add("teams", tid, f"level {level!r} is not one of {', '.join(TEAM_LEVELS)}")
        if region is None:
            probs.add("teams", tid, "missing region")
        elif region not in regions:
            probs.add("teams", tid, f"region {region!r} does not exist")
        base = _base(t.get("base"))
        if base is None:
            probs.add("teams", tid, f"base {t.get('base')!r} is not a valid [lon, lat]")
        units = []
        raw_units = t.get("units") or []
        if not isinstance(raw_units, list):
            probs.add("teams", tid, "units must be a list")
            raw_units = []
        for k, u in enumerate(raw_units):
            uid = _text(u.get("id")) if isinstance(u, dict) else None
            if uid is None:
                probs.add("teams", tid, f"unit #{k} has no id")
                continue
            if uid in unit_ids:
                probs.add("teams", tid, f"duplicate unit id {uid!r}")
                continue
            unit_ids.add(uid)
            kind = _text(u.get("kind"))
            if kind not in UNIT_KINDS:
                probs.add("teams", tid, f"unit {uid!r}: kind {kind!r} is not one of "
                                        f"{', '.join(UNIT_KINDS)}")
            units.append(Unit(uid, _text(u.get("name")) or uid, kind or "", tid))
        if level and region and region in regions and regions[region].level == level:
            if (region, level) in own:
                probs.add("teams", tid, f"region {region!r} already has its own team "
                                        f"{own[(region, level)]!r}")
            else:
                own[(region, level)] = tid
        if len(probs) == bad:
            teams[tid] = Team(tid, _text(t.get("name")) or tid, level or "", region or "",
                              base or (0.0, 0.0), tuple(sorted(units, key=lambda u: u.id)))
    return teams


# -- zones -----------------------------------------------------------------------------------
def _zones(gdf: Any, teams: dict[str, Team], probs: _Problems, repaired: list[GeoWarning],
           teams_ok: bool) -> dict[str, Zone]:
    ids = [_text(v) for v in _column(gdf, "id")]
    names = [_text(v) for v in _column(gdf, "name")]
    kinds = [_text(v) for v in _column(gdf, "kind")]
    team_ids = [_text(v) for v in _column(gdf, "team")]
    prios = _column(gdf, "priority")
    geoms = _geoms(ids, gdf, "zones", probs, repaired)
    seen: set[str] = set()
    keep: list[tuple[str, int, int]] = []
    for i, fid in enumerate(ids):
        if fid is None:
            probs.add("zones", None, f"feature #{i} has no id")
            continue
        if fid in seen:
            probs.add("zones", fid, "duplicate id")
            continue
        seen.add(fid)
        bad = len(probs)
        if team_ids[i] is None:
            probs.add("zones", fid, "missing team")
        elif teams_ok and team_ids[i] not in teams:
            probs.add("zones", fid, f"team {team_ids[i]!r} does not exist")
        p = prios[i]
        if p is None or (isinstance(p, float) and math.isnan(p)):
            p = 0
        if isinstance(p, bool) or not isinstance(p, int | float | np.integer | np.floating) \
                or not float(p).is_integer():
            probs.add("zones", fid, f"priority {p!r} is not an integer")
            p = 0
        if len(probs) == bad and geoms[i] is not None:
            keep.append((fid, i, int(p)))
    area = areas_m2([geoms[i] for _, i, _ in keep]) if keep else []
    return {fid: Zone(fid, names[i] or fid, kinds[i] or "other", team_ids[i] or "", p,
                      geoms[i], float(a)) for (fid, i, p), a in zip(keep, area, strict=True)}
