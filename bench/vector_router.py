"""A vectorised ``Router.locate`` for many points at once: the batch routing benchmark.

Bench-only (issue 12): the server routes one point per intake with ``geo.router.Router``;
this answers the same question for a million points, to show the geometry layer's ceiling.
It reads the router's public levels (``Router.levels``, ``Router.zone_level``) and
``Router.region_team``/``nearest_township``, so it routes exactly as the router does; a test
(tests/bench/test_vector_router.py) checks it against ``Router.locate`` point by point.

How it works: a lookup raster (cells a sixth of a typical grid cell, built on first use)
answers the points whose raster cell lies inside one grid cell and touches no zone; the rest
(borders, zones, coast) take the exact path: per level a vectorised bounding-box query plus
``intersects_xy``, the tie-break (smallest index) with one lexsort.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import shapely

from geo.router import Level, Router

Raster = tuple[np.ndarray, float, float, float, int, int]


class BatchRoutes(NamedTuple):
    """Per point, indices into the ``VectorRouter``'s id tuples (-1 = none)."""

    team: np.ndarray       # into team_ids; -1 outside the jurisdiction
    zone: np.ndarray       # into zone_ids
    grid: np.ndarray       # into level_ids["grid"]
    township: np.ndarray   # into level_ids["township"]
    county: np.ndarray     # into level_ids["county"]
    snapped_m: np.ndarray  # float, NaN where not snapped


def first_many(level: Level, pts: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Per point, the smallest index of ``level`` covering it, or -1."""
    out = np.full(len(pts), -1, dtype=np.int64)
    if len(level.ids) == 0 or len(pts) == 0:
        return out
    inp, tr = level.tree.query(pts)
    ok = shapely.intersects_xy(level.geoms[tr], xs[inp], ys[inp])
    inp, tr = inp[ok], tr[ok]
    if len(inp) == 0:
        return out
    order = np.lexsort((tr, inp))
    inp, tr = inp[order], tr[order]
    first = np.empty(len(inp), dtype=bool)
    first[0] = True
    np.not_equal(inp[1:], inp[:-1], out=first[1:])
    out[inp[first]] = tr[first]
    return out


class VectorRouter:
    """``locate_many`` over a built ``Router`` (immutable once the raster is built)."""

    def __init__(self, router: Router, raster: bool = True) -> None:
        self.router = router
        ds = router.dataset
        self.levels = router.levels
        self.zones = router.zone_level
        self.level_ids: dict[str, tuple[str, ...]] = {lv: v.ids for lv, v in self.levels.items()}
        self.zone_ids = self.zones.ids
        self.team_ids: tuple[str, ...] = tuple(sorted(ds.teams))
        self.use_raster = raster
        self.raster: Raster | None = None
        team_index = {t: i for i, t in enumerate(self.team_ids)}

        def tix(team: str | None) -> int:
            return team_index.get(team, -1) if team else -1

        def ix(rid: str | None, level: str) -> int:
            return self.levels[level].index.get(rid, -1) if rid else -1

        # per level index → team index / township / county index
        self.team_of = {lv: np.array([tix(router.region_team(r)) for r in ids] or [], np.int64)
                        for lv, ids in self.level_ids.items()}
        self.zone_team = np.array([tix(ds.zones[z].team) for z in self.zone_ids] or [],
                                  np.int64)
        self.township_of_grid = np.array([ix(ds.ancestor(r, "township"), "township")
                                          for r in self.level_ids["grid"]] or [], np.int64)
        self.county_of = {lv: np.array([ix(ds.county_of(r), "county")
                                        for r in self.level_ids[lv]] or [], np.int64)
                          for lv in ("grid", "township")}

    def locate_many(self, lons: Any, lats: Any, workers: int = 1) -> BatchRoutes:
        """Route many WGS84 points: invalid points get team -1; points outside every region
        are snapped one by one (rare). ``workers`` > 1 splits the points over threads
        (shapely releases the GIL)."""
        xs = np.asarray(lons, dtype=float)
        ys = np.asarray(lats, dtype=float)
        if workers > 1 and len(xs) >= 20000:
            self.raster_index()  # once, before the threads share it
            cuts = np.linspace(0, len(xs), workers + 1).astype(int)
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(lambda ab: self._locate(xs[ab[0]:ab[1]],
                                                              ys[ab[0]:ab[1]]),
                                      zip(cuts[:-1], cuts[1:], strict=True)))
            return BatchRoutes(*(np.concatenate(col) for col in zip(*parts, strict=True)))
        return self._locate(xs, ys)

    def raster_index(self) -> Raster | None:
        """The lookup raster, built on first use (None without grid cells or when disabled).

        A raster cell (expanded by 1e-9° against rounding) that touches exactly one grid cell,
        lies inside it and touches no zone answers every point in it at once; any other
        raster cell (borders, zones, coast) sends its points down the exact path.
        """
        if self.raster is not None or not self.use_raster or not self.levels["grid"].ids:
            return self.raster
        lvl = self.levels["grid"]
        x0, y0, x1, y1 = shapely.total_bounds(lvl.geoms)
        med = float(np.median(np.sqrt(shapely.area(lvl.geoms))))
        h = max(med / 6, math.sqrt((x1 - x0) * (y1 - y0) / 4e6), 1e-6)
        nx, ny = int((x1 - x0) / h) + 1, int((y1 - y0) / h) + 1
        iy, ix = np.divmod(np.arange(nx * ny, dtype=np.int64), nx)
        e = 1e-9
        boxes = shapely.box(x0 + ix * h - e, y0 + iy * h - e, x0 + (ix + 1) * h + e,
                            y0 + (iy + 1) * h + e)
        inp, tr = lvl.tree.query(boxes, predicate="intersects")
        count = np.bincount(inp, minlength=len(boxes))
        owner = np.full(len(boxes), -1, np.int64)
        owner[inp] = tr
        single = np.flatnonzero(count == 1)
        pure = np.zeros(len(boxes), dtype=bool)
        pure[single] = shapely.covers(lvl.geoms[owner[single]], boxes[single])
        if self.zones.ids:
            zin, _ = self.zones.tree.query(boxes, predicate="intersects")
            pure[zin] = False
        self.raster = (np.where(pure, owner, -2), float(x0), float(y0), h, nx, ny)
        return self.raster

    def _locate(self, xs: np.ndarray, ys: np.ndarray) -> BatchRoutes:
        n = len(xs)
        ok = np.isfinite(xs) & np.isfinite(ys) & (np.abs(xs) <= 180) & (np.abs(ys) <= 90)
        zone = np.full(n, -1, np.int64)
        grid = np.full(n, -1, np.int64)
        rz = self.raster_index()
        if rz is not None:
            table, rx0, ry0, h, nx, ny = rz
            with np.errstate(invalid="ignore"):
                fx = np.floor((xs - rx0) / h)
                fy = np.floor((ys - ry0) / h)
                inb = ok & (fx >= 0) & (fx < nx) & (fy >= 0) & (fy < ny)
            cell = np.where(inb, fy * nx + fx, 0).astype(np.int64)
            hit = np.where(inb, table[cell], -2)
            fast = hit >= 0
            grid[fast] = hit[fast]
            slow = np.flatnonzero(~fast & ok)
        else:
            slow = np.flatnonzero(ok)
        pts = np.empty(n, dtype=object)
        pts[slow] = shapely.points(xs[slow], ys[slow])
        zone[slow] = first_many(self.zones, pts[slow], xs[slow], ys[slow])
        grid[slow] = first_many(self.levels["grid"], pts[slow], xs[slow], ys[slow])
        town = np.full(n, -1, np.int64)
        county = np.full(n, -1, np.int64)
        team = np.full(n, -1, np.int64)
        snapped = np.full(n, np.nan)
        g = grid >= 0
        town[g] = self.township_of_grid[grid[g]]
        county[g] = self.county_of["grid"][grid[g]]
        team[g] = self.team_of["grid"][grid[g]]
        rest = np.flatnonzero(~g & ok)
        if len(rest):
            t = first_many(self.levels["township"], pts[rest], xs[rest], ys[rest])
            hit = t >= 0
            town[rest[hit]] = t[hit]
            county[rest[hit]] = self.county_of["township"][t[hit]]
            team[rest[hit]] = self.team_of["township"][t[hit]]
            rest = rest[~hit]
        for lv in ("county", "city"):
            if len(rest):
                c = first_many(self.levels[lv], pts[rest], xs[rest], ys[rest])
                hit = c >= 0
                if lv == "county":
                    county[rest[hit]] = c[hit]
                team[rest[hit]] = self.team_of[lv][c[hit]]
                rest = rest[~hit]
        twx = self.levels["township"].index
        for i in rest.tolist():
            tw, dist = self.router.nearest_township(float(xs[i]), float(ys[i]))
            if tw is not None and dist <= self.router.snap_m:
                town[i] = twx[tw]
                county[i] = self.county_of["township"][twx[tw]]
                team[i] = self.team_of["township"][twx[tw]]
                snapped[i] = dist
        z = (zone >= 0) & ok
        team[z] = self.zone_team[zone[z]]
        team[~ok] = -1
        return BatchRoutes(team, zone, grid, town, county, snapped)
