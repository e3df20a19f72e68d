"""Contract §2: route a WGS84 point to a zone, grid cell, township, county and team.

How it works: at construction every level (zones, grid cells, townships, counties, the city)
gets an STRtree whose geometries are ordered by the level's tie-break (zones by priority
descending, then area, then id; regions by id), and prepared geometries. A point is then a
bounding-box query plus a prepared ``intersects_xy`` (boundaries inclusive) on the few
candidates, and the *smallest index* among the hits is the winner. Each region's team and its
fallback chain (not empowered → county brigade → city detachment) is resolved once, so
``locate`` only assembles the answer and its explanation. (A vectorised batch router for the
benchmarks lives in ``bench/vector_router.py``, built on ``Router.levels``/``zone_level``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import shapely

from geo.areas import distance_m
from geo.coords import validate
from geo.model import GeoDataset

RULES = ("zone", "grid", "township", "county", "city", "snap")
_KIND_ZH = {"reservoir": "水库", "island": "海岛", "scenic": "景区", "school": "学校",
            "market": "市场"}
_LEVEL_ZH = {"city": "市", "county": "县（市、区）", "township": "乡镇（街道）", "grid": "网格"}


try:  # prepared geometries already; skip the wrapper's checks on the hot path
    from shapely.lib import intersects_xy as _intersects_xy
except ImportError:  # pragma: no cover
    _intersects_xy = shapely.intersects_xy


class OutsideJurisdictionError(Exception):
    """The point is outside every region and farther than ``snap_m`` from any township."""

    code = "outside_jurisdiction"

    def __init__(self, distance_m: float, snap_m: float = 0.0) -> None:
        self.distance_m = distance_m
        self.snap_m = snap_m
        super().__init__(f"outside the jurisdiction: {distance_m:,.0f} m from the nearest "
                         f"township (snap limit {snap_m:,.0f} m)")


@dataclass(frozen=True)
class Route:
    """Where a point falls, who gets it, and why (``explanation`` is JSON-able)."""

    team: str | None
    team_level: str | None
    grid: str | None
    township: str | None
    county: str | None
    city: str | None
    zone: str | None
    snapped_m: float | None
    explanation: dict[str, Any]


def _step(en: str, zh: str) -> tuple[str, str]:
    return (en, zh)


class Level:
    """One level's geometries in tie-break order: ``ids[i]`` is ``geoms[i]``, ``tree`` is
    their STRtree (prepared), ``index`` maps id → position. Read-only once built."""

    __slots__ = ("ids", "geoms", "tree", "index")

    def __init__(self, ids: list[str], geoms: list[Any]) -> None:
        self.ids = tuple(ids)
        self.geoms = np.array(geoms, dtype=object)
        shapely.prepare(self.geoms)
        self.tree = shapely.STRtree(self.geoms)
        self.index = {rid: i for i, rid in enumerate(ids)}

    def hits(self, pt: Any, x: float, y: float) -> list[int]:
        """Indices of the geometries covering (x, y), smallest (= winner) first.

        ``pt`` is a 1-element object array holding the point (built once per locate).
        """
        cand = self._query(pt)
        if len(cand) == 0:
            return []
        if len(cand) == 1:
            i = int(cand[0])
            return [i] if _intersects_xy(self.geoms[i], x, y) else []
        ok = _intersects_xy(self.geoms[cand], x, y)
        return sorted(cand[ok].tolist())

    def _query(self, pt: np.ndarray) -> np.ndarray:
        # the bounding-box query without the per-call wrapper of STRtree.query (hot path)
        raw = getattr(self.tree, "_tree", None)
        if raw is None:
            return self.tree.query(pt[0])
        return raw.query(pt, 0)[1]


class Router:
    """Routes points by contract §2; build once per data set (immutable, thread-safe)."""

    def __init__(self, dataset: GeoDataset, snap_m: float = 2000.0) -> None:
        self.dataset = ds = dataset
        self.snap_m = float(snap_m)
        # per region level (grid, township, county, city) its regions by id; zones by priority
        self.levels: dict[str, Level] = {}
        for lv in ("grid", "township", "county", "city"):
            rs = sorted((r for r in ds.regions.values() if r.level == lv), key=lambda r: r.id)
            self.levels[lv] = Level([r.id for r in rs], [r.geometry for r in rs])
        zs = sorted(ds.zones.values(), key=lambda z: (-z.priority, z.area_m2, z.id))
        self.zone_level = Level([z.id for z in zs], [z.geometry for z in zs])
        self._resolved: dict[str, tuple[str | None, list[str], list[tuple[str, str]]]] = {}
        for rid in ds.regions:
            self._resolved[rid] = self._resolve(rid)
        self._where_cache: dict[str, tuple[list[str], dict[str, str], tuple[str, str]]] = {}
        self._zone_step = {z.id: self._zone_text(z.id) for z in zs}
        # (zones hit, level, regions hit) → the answer without its point (see ``locate``);
        # bounded by the data set: each grid cell, township, … with the zones over it
        self._made: dict[tuple[tuple[int, ...], str, tuple[str, ...]], Route] = {}

    # -- static resolution ------------------------------------------------------------------
    def region_team(self, rid: str) -> str | None:
        """The team that serves region ``rid`` after the fallbacks (grids: their township's)."""
        return self._resolved[rid][0]

    def _name(self, rid: str) -> str:
        r = self.dataset.regions.get(rid)
        return f"{r.name} ({rid})" if r else rid

    def _team_name(self, tid: str) -> str:
        t = self.dataset.teams.get(tid)
        return f"{t.name} ({tid})" if t else tid

    def _resolve(self, rid: str) -> tuple[str | None, list[str], list[tuple[str, str]]]:
        """The team for a region (grids: their township's) with the fallbacks taken."""
        ds = self.dataset
        start = ds.township_of(rid) or rid
        fallbacks: list[str] = []
        steps: list[tuple[str, str]] = []
        for r in ds.region_path(start):
            reg = ds.regions[r]
            own = ds.own_team(r)
            if own is not None:
                t = self._team_name(own)
                if not fallbacks:
                    what = "is empowered" if reg.level == "township" else "has its own team"
                    zh = "为赋权乡镇" if reg.level == "township" else "有本级执法队"
                    steps.append(_step(f"{reg.level.capitalize()} {self._name(r)} {what} → "
                                       f"its own team {t}", f"{reg.name} {zh} → 由 {t} 承办"))
                else:
                    steps.append(_step(f"Served by {t}", f"由 {t} 承办"))
                return own, fallbacks, steps
            nxt = ds.regions[reg.parent] if reg.parent in ds.regions else None
            if nxt is None:
                break
            who = {"county": "county brigade", "city": "city detachment"}.get(nxt.level,
                                                                               nxt.level)
            who_zh = {"county": "县级执法大队", "city": "市级执法支队"}.get(nxt.level, "上级")
            if reg.level == "township":
                en = f"township {r} is not empowered → {who}"
                zh = f"{reg.name}（{r}）未赋权 → 由{who_zh}承办"
            else:
                en = f"{reg.level} {r} has no team → {who}"
                zh = f"{reg.name}（{r}）无本级执法队 → 由{who_zh}承办"
            fallbacks.append(en)
            steps.append(_step(en[0].upper() + en[1:], zh))
        steps.append(_step("No team serves this region or any region above it",
                           "该辖区及其上级均无执法队"))
        return None, fallbacks, steps

    def _zone_text(self, zid: str) -> tuple[str, str]:
        z = self.dataset.zones[zid]
        t = self._team_name(z.team)
        kind_zh = _KIND_ZH.get(z.kind, z.kind)
        return _step(f"In zone {z.name} ({zid}, {z.kind}, priority {z.priority}) → its "
                     f"designated team {t}",
                     f"位于专属区域 {z.name}（{kind_zh}，优先级 {z.priority}）"
                     f"→ 由指定执法队 {t} 承办")

    def _where(self, rid: str, level: str) -> tuple[list[str], dict[str, str], tuple[str, str]]:
        """(path, {level: id}, the "in grid X: city → county → …" step), cached per region."""
        hit = self._where_cache.get(rid)
        if hit is None:
            ds = self.dataset
            path = ds.region_path(rid)
            by_level = {ds.regions[p].level: p for p in path}
            names = " → ".join(ds.regions[p].name for p in reversed(path))
            r = ds.regions[rid]
            step = (f"In {level} {self._name(rid)}: {names}",
                    f"位于{_LEVEL_ZH[level]} {r.name}：{names}")
            hit = self._where_cache[rid] = (path, by_level, step)
        return hit

    # -- locating ----------------------------------------------------------------------------
    def _find_region(self, pt: Any, x: float, y: float) -> tuple[str | None, list[str]]:
        """The most specific region covering the point (and its tied siblings)."""
        for lv in ("grid", "township", "county", "city"):
            hits = self.levels[lv].hits(pt, x, y)
            if hits:
                ids = self.levels[lv].ids
                return lv, [ids[i] for i in hits]
        return None, []

    def nearest_township(self, lon: float, lat: float) -> tuple[str | None, float]:
        """The township nearest to a point (metres; ties → smallest id)."""
        lvl = self.levels["township"]
        if not lvl.ids:
            return None, math.inf
        pt = shapely.Point(lon, lat)
        first = lvl.tree.query_nearest(pt)
        d0 = float(shapely.distance(pt, lvl.geoms[int(first[0])]))
        reach = d0 / max(math.cos(math.radians(lat)), 1e-6) * (1 + 1e-9) + 1e-12
        cand = lvl.tree.query(pt, predicate="dwithin", distance=reach)
        best = sorted((distance_m(lvl.geoms[i], lon, lat), lvl.ids[i]) for i in cand.tolist())
        dmin = best[0][0]
        tied = [rid for d, rid in best if d <= dmin + 1e-6]
        return min(tied), dmin

    def locate(self, lon: float, lat: float) -> Route:
        """Route a WGS84 point (contract §2); raise ``OutsideJurisdictionError`` if beyond reach.

        Raises ``geo.coords.CoordinateError`` for NaN, infinite or out-of-range input.
        Everything but the point itself depends only on which geometries hold it, so the
        answer for each (zones hit, region hit) pair is built once and reused (a point snapped
        to a township is built every time: its distance is part of the answer).
        """
        x, y = validate(lon, lat)
        pt = shapely.points(np.array(((x, y),)))  # a 1-element array, as the tree wants
        zhits = tuple(self.zone_level.hits(pt, x, y)) if self.zone_level.ids else ()
        level, ties = self._find_region(pt, x, y)
        if level is not None:
            key = (zhits, level, tuple(ties))
            made = self._made.get(key)
            if made is None:
                made = self._made[key] = self._answer(x, y, list(zhits), level, ties, None)
            return replace(made, explanation={**made.explanation, "point": [x, y]})
        snapped = None
        tw, dist = self.nearest_township(x, y)
        if tw is None or dist > self.snap_m:
            if not zhits:
                raise OutsideJurisdictionError(dist, self.snap_m)
        else:
            level, ties, snapped = "township", [tw], dist
        return self._answer(x, y, list(zhits), level, ties, snapped)

    def _answer(self, x: float, y: float, zhits: list[int], level: str | None,
                ties: list[str], snapped: float | None) -> Route:
        """The route and its explanation once the geometries holding the point are known."""
        steps: list[dict[str, str]] = []
        rid = ties[0] if ties else None
        ds = self.dataset
        path, by_level, where = self._where(rid, level) if rid else ([], {}, None)
        expl: dict[str, Any] = {"rule": "", "point": [x, y], "zones": [], "zone": None,
                                "region": rid, "level": level,
                                "ties": ties if len(ties) > 1 else [],
                                "fallbacks": [], "snap_m": None, "steps": steps}
        if snapped is not None:
            r = ds.regions[rid]
            steps.append({"en": f"Outside every region, {snapped:,.0f} m from township "
                                f"{self._name(rid)} (within snap_m {self.snap_m:,.0f} m) → "
                                "routed as if inside it",
                          "zh": f"不在任何辖区内，距 {r.name} {snapped:,.0f} 米（吸附阈值 "
                                f"{self.snap_m:,.0f} 米内）→ 按 {r.name} 处理"})
            expl["snap_m"] = round(snapped, 1)
        elif where is not None:
            steps.append({"en": where[0], "zh": where[1]})
            if len(ties) > 1:
                steps.append({"en": f"On the shared border of {', '.join(ties)} → smallest id "
                                    f"{rid}",
                              "zh": f"位于 {'、'.join(ties)} 的公共边界 → 取编号最小的 {rid}"})
        if zhits:
            zid = self.zone_level.ids[zhits[0]]
            z = ds.zones[zid]
            team = z.team
            expl["rule"] = "zone"
            expl["zone"] = zid
            expl["zones"] = [{"id": (zz := ds.zones[self.zone_level.ids[i]]).id, "name": zz.name,
                              "priority": zz.priority, "area_m2": round(zz.area_m2, 1)}
                             for i in zhits]
            if len(zhits) > 1:
                steps.append({"en": f"{len(zhits)} zones contain the point; highest priority, "
                                    f"then smallest area, then smallest id → {zid}",
                              "zh": f"该点位于 {len(zhits)} 个专属区域内；按优先级最高、面积最小、"
                                    f"编号最小 → {zid}"})
            en, zh = self._zone_step[zid]
            steps.append({"en": en, "zh": zh})
        else:
            team, fallbacks, rsteps = self._resolved[rid]  # type: ignore[index]
            expl["rule"] = "snap" if snapped is not None else level
            expl["fallbacks"] = list(fallbacks)
            steps.extend({"en": en, "zh": zh} for en, zh in rsteps)
        expl["team"] = team
        t = ds.teams.get(team) if team else None
        return Route(team=team, team_level=t.level if t else None, grid=by_level.get("grid"),
                     township=by_level.get("township"), county=by_level.get("county"),
                     city=by_level.get("city") or (ds.city_id if path else None),
                     zone=expl["zone"], snapped_m=snapped, explanation=expl)
