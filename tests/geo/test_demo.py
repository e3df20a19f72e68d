"""The embedded Taizhou demo data set."""

import json
import time

import pytest

from geo import DEMO_DIR
from geo.cli import add_geo_commands, check_main
from geo.loader import load_dataset
from geo.router import Router
from geo.units import UnitIndex


def test_files_are_small():
    total = sum(p.stat().st_size for p in DEMO_DIR.iterdir() if p.is_file())
    assert total < 5_000_000


def test_load_time():
    t = time.perf_counter()
    ds = load_dataset(DEMO_DIR / "regions.geojson", DEMO_DIR / "zones.geojson",
                      DEMO_DIR / "teams.yaml")
    Router(ds)
    assert time.perf_counter() - t < 3.0  # target < 1 s; slack for a busy CI machine


def test_summary(demo_ds):
    s = demo_ds.summary()
    assert s["regions"]["city"] == 1 and s["regions"]["county"] == 9
    assert s["regions"]["township"] == 130 and s["regions"]["grid"] > 3000
    assert (s["townships_empowered"], s["townships_not_empowered"]) == (93, 37)
    assert s["units"] == 3468 and s["teams"] == 93 + 9 + 1
    assert sorted(demo_ds.units) == [f"u-{i:04d}" for i in range(1, 3469)]
    names = [r.name for r in demo_ds.regions.values() if r.level == "township"]
    assert sum(n.endswith("街道") for n in names) == 45
    assert sum(n.endswith("镇") for n in names) == 61
    assert sum(n.endswith("乡") for n in names) == 24


def test_changtan_goes_to_beiyang(demo_ds):
    beiyang = next(r.id for r in demo_ds.regions.values() if r.name == "北洋镇")
    r = Router(demo_ds).locate(121.08, 28.59)
    assert r.zone == "z-changtan" and r.team == f"t-{beiyang}"
    assert r.county == "331003" and r.explanation["rule"] == "zone"


def test_dachen_islands(demo_ds):
    dachen = next(r.id for r in demo_ds.regions.values() if r.name == "大陈镇")
    r = Router(demo_ds).locate(121.90, 28.46)  # sea between the islands, inside the zone
    assert r.team == f"t-{dachen}" and r.zone == "z-dachen"


def test_not_empowered_goes_to_brigade(demo_ds):
    router = Router(demo_ds)
    towns = [r for r in sorted(demo_ds.regions.values(), key=lambda r: r.id)
             if r.level == "township" and not demo_ds.is_empowered(r.id)
             and demo_ds.children(r.id)]
    # a grid point of a non-empowered township outside every special zone (a zone's own
    # team would take it first)
    found = None
    for town in towns:
        for child in demo_ds.children(town.id):
            p = demo_ds.regions[child].geometry.representative_point()
            r = router.locate(p.x, p.y)
            if r.zone is None:
                found = (town, r)
                break
        if found:
            break
    assert found is not None, "the demo data has no non-empowered township outside the zones"
    town, r = found
    assert r.team == f"t-{town.parent}" and r.team_level == "county"
    assert f"township {town.id} is not empowered → county brigade" in \
        r.explanation["fallbacks"]


def test_route_and_unit(demo_ds):
    router, units = Router(demo_ds), UnitIndex(demo_ds)
    r = router.locate(121.42, 28.66)
    pick = units.recommend(r.team, 121.42, 28.66, 0.0, set())
    assert pick.team == r.team and not pick.mutual_aid
    json.dumps(pick.explanation, ensure_ascii=False)


def test_cli_check_demo(capsys):
    assert check_main([str(DEMO_DIR)]) == 0
    out = capsys.readouterr().out
    assert "130 townships" in out and "93 empowered" in out and "3468" in out


def test_cli_check_reports_problems(tmp_path, capsys):
    import toy

    regions = toy.region_features()
    regions[4]["properties"]["parent"] = "nope"
    toy.write(tmp_path, regions=regions)
    assert check_main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ta2" in out and "does not exist" in out


@pytest.mark.parametrize("argv,code,needle", [
    (["geo", "locate", "121.08", "28.59", "--json"], 0, '"z-changtan"'),
    (["geo", "locate", "121.2", "28.7", "--crs", "gcj02"], 0, "WGS84"),
    (["geo", "locate", "130", "10"], 3, "outside"),
])
def test_cli_locate(argv, code, needle, capsys):
    import argparse

    p = argparse.ArgumentParser()
    add_geo_commands(p.add_subparsers(dest="cmd"))
    args = p.parse_args(argv)
    assert args.func(args) == code
    assert needle in capsys.readouterr().out
