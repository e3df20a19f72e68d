"""``dispatch geo check PATH…`` and ``dispatch geo locate LON LAT`` (registered by dispatch.cli)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from geo import DEMO_DIR

_EXTS = (".geojson", ".json", ".gpkg", ".shp")


def _find(folder: Path, stem: str, exts: tuple[str, ...]) -> Path | None:
    for ext in exts:
        p = folder / f"{stem}{ext}"
        if p.exists():
            return p
    return None


def resolve_paths(paths: list[str]) -> tuple[Path, Path | None, Path]:
    """(regions, zones, teams) from a folder or from files named regions.*, zones.*, teams.*.

    Raises ``ValueError`` naming what is missing.
    """
    if len(paths) == 1 and Path(paths[0]).is_dir():
        d = Path(paths[0])
        regions = _find(d, "regions", _EXTS)
        zones = _find(d, "zones", _EXTS)
        teams = _find(d, "teams", (".yaml", ".yml", ".json"))
    else:
        files = [Path(p) for p in paths]
        pick = {k: next((f for f in files if f.name.lower().startswith(k)), None)
                for k in ("regions", "zones", "teams")}
        if len(files) == 3 and None in pick.values():  # unnamed: regions, zones, teams
            pick = dict(zip(("regions", "zones", "teams"), files, strict=True))
        elif len(files) == 2 and None in pick.values():
            pick = {"regions": files[0], "zones": None, "teams": files[1]}
        regions, zones, teams = pick["regions"], pick["zones"], pick["teams"]
    if regions is None or teams is None:
        raise ValueError("need a regions file and a teams file (a folder holding regions.*, "
                         "zones.*, teams.*, or the files themselves)")
    return regions, zones, teams


def check_main(paths: list[str], as_json: bool = False) -> int:
    """Validate a data set; print its summary and warnings, or every problem (exit 1)."""
    from geo.checks import dataset_warnings
    from geo.loader import GeoImportError, load_dataset

    try:
        regions, zones, teams = resolve_paths(paths)
    except ValueError as exc:
        print(f"dispatch geo check: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        ds = load_dataset(regions, zones, teams)
    except GeoImportError as exc:
        if as_json:
            print(json.dumps({"ok": False, "problems": [p.as_dict() for p in exc.problems]},
                             ensure_ascii=False, indent=2))
        else:
            print(f"{len(exc.problems)} problem(s); nothing was loaded:")
            for p in exc.problems:
                print(f"  {p.kind:8} {p.id or '-':16} {p.reason}")
        return 1
    load_s = time.perf_counter() - t0
    s = ds.summary()
    warns = [w.as_dict() for w in dataset_warnings(ds)]
    if as_json:
        print(json.dumps({"ok": True, "summary": s, "warnings": warns, "load_s": load_s},
                         ensure_ascii=False, indent=2))
        return 0
    lv = s["regions"]
    print(f"OK: {regions}, {zones or '(no zones)'}, {teams} (loaded in {load_s:.2f} s)")
    print(f"  regions: {lv['city']} city, {lv['county']} counties, {lv['township']} townships,"
          f" {lv['grid']} grid cells")
    print(f"  townships: {s['townships_empowered']} empowered, "
          f"{s['townships_not_empowered']} served by their county brigade")
    tl = s["teams_by_level"]
    print(f"  teams: {s['teams']} ({tl['township']} township, {tl['county']} county, "
          f"{tl['city']} city); units: {s['units']} "
          + ", ".join(f"{k} {v}" for k, v in s["units_by_kind"].items()))
    print(f"  zones: {s['zones']}")
    print(f"  warnings: {len(warns)}")
    for w in warns:
        pt = f" at {w['point'][0]:.6f},{w['point'][1]:.6f}" if w["point"] else ""
        print(f"    {w['kind']:8} {'/'.join(w['ids'])}: {w['area_m2']:,.1f} m²{pt}")
    return 0


def _data_paths(args: argparse.Namespace) -> tuple[Path, Path | None, Path, float, float]:
    snap_m, max_age = 2000.0, 300.0
    if getattr(args, "data", None):
        r, z, t = resolve_paths([args.data])
    elif getattr(args, "config", None):
        import yaml

        cfg_path = Path(args.config)
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        g = cfg.get("geo") or {}
        base = cfg_path.resolve().parent

        def rel(p: Any) -> Path | None:
            return None if not p else (base / p if not Path(p).is_absolute() else Path(p))

        r = rel(g.get("regions")) or DEMO_DIR / "regions.geojson"
        z = rel(g.get("zones")) if "zones" in g else DEMO_DIR / "zones.geojson"
        t = rel(g.get("teams")) or DEMO_DIR / "teams.yaml"
        routing = cfg.get("routing") or {}
        snap_m = float(routing.get("snap_m", snap_m))
        max_age = float(routing.get("position_max_age_s", max_age))
    else:
        r, z, t = resolve_paths([str(DEMO_DIR)])
    if getattr(args, "snap_m", None) is not None:
        snap_m = float(args.snap_m)
    return r, z, t, snap_m, max_age


def locate_main(args: argparse.Namespace) -> int:
    """Print where a point falls, which team gets it, why, and the unit it would get."""
    from geo.coords import CoordinateError, to_wgs84
    from geo.loader import GeoImportError, load_dataset
    from geo.router import OutsideJurisdictionError, Router
    from geo.units import UnitIndex

    try:
        lon, lat = to_wgs84(args.lon, args.lat, args.crs)
    except CoordinateError as exc:
        print(f"dispatch geo locate: {exc}", file=sys.stderr)
        return 2
    try:
        r, z, t, snap_m, max_age = _data_paths(args)
        ds = load_dataset(r, z, t)
    except (ValueError, OSError) as exc:
        print(f"dispatch geo locate: {exc}", file=sys.stderr)
        return 2
    except GeoImportError as exc:
        print(f"dispatch geo locate: the data set does not load: {exc}", file=sys.stderr)
        return 1
    router = Router(ds, snap_m=snap_m)
    try:
        route = router.locate(lon, lat)
    except OutsideJurisdictionError as exc:
        out = {"error": {"code": exc.code, "message": str(exc),
                         "distance_m": round(exc.distance_m, 1)}}
        print(json.dumps(out, ensure_ascii=False, indent=2) if args.json else str(exc))
        return 3
    pick = UnitIndex(ds, max_age).recommend(route.team, lon, lat, time.time()) \
        if route.team else None
    if args.json:
        out = {"input": {"lon": args.lon, "lat": args.lat, "crs": args.crs},
               "wgs84": [lon, lat], "team": route.team, "team_level": route.team_level,
               "zone": route.zone, "grid": route.grid, "township": route.township,
               "county": route.county, "city": route.city, "snapped_m": route.snapped_m,
               "explanation": route.explanation,
               "unit": None if pick is None else {
                   "unit": pick.unit, "team": pick.team, "mutual_aid": pick.mutual_aid,
                   "distance_m": round(pick.distance_m, 1), "explanation": pick.explanation}}
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0

    def name(rid: str | None) -> str:
        return f"{ds.regions[rid].name} ({rid})" if rid else "-"

    if args.crs != "wgs84":
        print(f"point: {args.lon}, {args.lat} ({args.crs}) → WGS84 {lon:.6f}, {lat:.6f}")
    else:
        print(f"point: {lon:.6f}, {lat:.6f} (WGS84)")
    print(f"zone:     {route.zone and ds.zones[route.zone].name} ({route.zone})"
          if route.zone else "zone:     -")
    print(f"grid:     {name(route.grid)}\ntownship: {name(route.township)}\n"
          f"county:   {name(route.county)}")
    team = ds.teams.get(route.team) if route.team else None
    print(f"team:     {team.name if team else '-'} ({route.team}, {route.team_level})")
    print(f"rule:     {route.explanation['rule']}")
    print("why:")
    for s in route.explanation["steps"]:
        print(f"  - {s['en']}\n    {s['zh']}")
    if pick is not None:
        aid = " (mutual aid)" if pick.mutual_aid else ""
        print(f"unit:     {pick.unit} {ds.units[pick.unit].name}{aid}, "
              f"{pick.distance_m:,.0f} m ({pick.explanation['position']} position)")
    return 0


def add_geo_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``geo check`` and ``geo locate`` on an argparse subparsers object.

    Each sets ``func`` to a handler taking the parsed args and returning an exit code.
    """
    geo = subparsers.add_parser("geo", help="check geography data, locate a point")
    sub = geo.add_subparsers(dest="geo_command", required=True)
    c = sub.add_parser("check", help="validate regions / zones / teams files and summarise")
    c.add_argument("paths", nargs="+", metavar="PATH",
                   help="a folder with regions.*, zones.*, teams.*, or the files")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=lambda a: check_main(a.paths, a.json))
    lo = sub.add_parser("locate", help="route a point and explain why")
    lo.add_argument("lon", type=float, metavar="LON")
    lo.add_argument("lat", type=float, metavar="LAT")
    lo.add_argument("--crs", default="wgs84", choices=["wgs84", "gcj02", "bd09"])
    lo.add_argument("--config", help="config.yaml whose geo/routing keys to use")
    lo.add_argument("--data", help="a folder with regions.*, zones.*, teams.* "
                                   "(default: the Taizhou demo)")
    lo.add_argument("--snap-m", type=float, default=None, help="override routing.snap_m")
    lo.add_argument("--json", action="store_true", help="print JSON")
    lo.set_defaults(func=locate_main)
    return geo


def main(argv: list[str] | None = None) -> int:
    """``python -m geo.cli check …`` / ``locate …`` without the dispatch package."""
    p = argparse.ArgumentParser(prog="geo")
    add_geo_commands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["geo", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
