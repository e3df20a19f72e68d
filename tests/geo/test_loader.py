"""Import: every problem named with its feature id and reason; nothing half-loaded."""

import copy
import json

import pytest
import toy
from shapely.geometry import Point, Polygon, box, mapping

from geo.checks import dataset_warnings
from geo.loader import GeoImportError, load_dataset


def _regions(**changes):
    rows = toy.region_features()
    for rid, props in changes.items():
        row = next(r for r in rows if r["properties"]["id"] == rid)
        geom = props.pop("geometry", "keep")
        if geom != "keep":
            row["geometry"] = geom
        row["properties"].update(props)
    return rows


def _teams(edit):
    teams = copy.deepcopy(toy.TEAMS)
    edit(teams)
    return teams


TWICE_AROUND = {"type": "Polygon", "coordinates": [[[120.0, 28.0], [120.01, 28.0],
                [120.01, 28.01], [120.0, 28.01], [120.0, 28.0], [120.01, 28.0], [120.01, 28.01],
                [120.0, 28.01], [120.0, 28.0]]]}
FLAT = {"type": "Polygon", "coordinates": [[[120.0, 28.0], [120.01, 28.0], [120.02, 28.0],
                                            [120.0, 28.0]]]}

CASES = [
    ("duplicate region id", dict(regions=_regions() + [_regions()[3]]),
     "regions", "ta1", "duplicate id"),
    ("missing parent", dict(regions=_regions(ta2={"parent": None})),
     "regions", "ta2", "missing parent"),
    ("unknown parent", dict(regions=_regions(ta2={"parent": "nope"})),
     "regions", "ta2", "does not exist"),
    ("wrong-level parent", dict(regions=_regions(**{"ta2-g1": {"parent": "ca"}})),
     "regions", "ta2-g1", "expected a township"),
    ("bad level", dict(regions=_regions(ta2={"level": "village"})),
     "regions", "ta2", "level 'village'"),
    ("city with parent", dict(regions=_regions(c={"parent": "ca"})),
     "regions", "c", "no parent"),
    ("second city", dict(regions=_regions(ca={"level": "city", "parent": None})),
     "regions", "ca", "second city"),
    ("no id", dict(regions=_regions(ta2={"id": None})), "regions", None, "no id"),
    ("missing name", dict(regions=_regions(ta2={"name": None})),
     "regions", "ta2", "missing name"),
    ("empty geometry", dict(regions=_regions(ta2={"geometry": None})),
     "regions", "ta2", "empty"),
    ("point geometry", dict(regions=_regions(ta2={"geometry": mapping(Point(120, 28))})),
     "regions", "ta2", "expected Polygon"),
    ("unrepairable (ring twice around)", dict(regions=_regions(ta2={"geometry": TWICE_AROUND})),
     "regions", "ta2", "cannot be repaired"),
    ("unrepairable (no area)", dict(regions=_regions(ta2={"geometry": FLAT})),
     "regions", "ta2", "cannot be repaired"),
    ("coordinates out of range", dict(regions=_regions(
        ta2={"geometry": mapping(box(500000, 3000000, 510000, 3010000))})),
     "regions", "ta2", "CRS"),
    ("zone names unknown team", dict(zones=toy.zone_features(
        [("zq", "Q", "market", "t-nope", 0, box(120.0, 28.0, 120.01, 28.01))])),
     "zones", "zq", "team 't-nope' does not exist"),
    ("zone priority not an integer", dict(zones=toy.zone_features(
        [("zq", "Q", "market", "t-c", 1.5, box(120.0, 28.0, 120.01, 28.01))])),
     "zones", "zq", "not an integer"),
    ("duplicate zone id", dict(zones=toy.zone_features(toy.ZONES + [toy.ZONES[0]])),
     "zones", "z1", "duplicate id"),
    ("team names unknown region", dict(teams=_teams(lambda t: t[1].update(region="nope"))),
     "teams", "t-ca", "region 'nope' does not exist"),
    ("duplicate team id", dict(teams=_teams(lambda t: t.append(dict(t[0])))),
     "teams", "t-c", "duplicate id"),
    ("duplicate unit id", dict(teams=_teams(lambda t: t[1]["units"].append(
        {"id": "u-0001", "name": "x", "kind": "officer"}))), "teams", "t-ca", "duplicate unit"),
    ("bad unit kind", dict(teams=_teams(lambda t: t[1]["units"][0].update(kind="horse"))),
     "teams", "t-ca", "kind 'horse'"),
    ("bad team level", dict(teams=_teams(lambda t: t[1].update(level="village"))),
     "teams", "t-ca", "level 'village'"),
    ("bad base", dict(teams=_teams(lambda t: t[1].update(base=[float("nan"), 28.0]))),
     "teams", "t-ca", "base"),
    ("two own teams", dict(teams=_teams(lambda t: t.append(
        {"id": "t-ca2", "name": "x", "level": "county", "region": "ca", "base": [120, 28]}))),
     "teams", "t-ca2", "already has its own team"),
]


@pytest.mark.parametrize("name,files,kind,fid,reason", CASES, ids=[c[0] for c in CASES])
def test_import_error(tmp_path, name, files, kind, fid, reason):
    paths = toy.write(tmp_path, **files)
    with pytest.raises(GeoImportError) as e:
        load_dataset(*paths)
    probs = e.value.problems
    assert any(p.kind == kind and p.id == fid and reason in p.reason for p in probs), probs
    assert all(p["reason"] for p in probs)  # dict-style access too


def test_unreadable_files(tmp_path):
    with pytest.raises(GeoImportError) as e:
        load_dataset(tmp_path / "none.geojson", None, tmp_path / "none.yaml")
    assert {p.kind for p in e.value.problems} == {"regions", "teams"}


def test_teams_file_not_a_list(tmp_path):
    rp, zp, tp = toy.write(tmp_path)
    tp.write_text(json.dumps({"id": "x"}))
    with pytest.raises(GeoImportError, match="list of teams"):
        load_dataset(rp, zp, tp)


def test_all_problems_reported_at_once(tmp_path):
    regions = _regions(ta2={"parent": "nope"}, tb2={"level": "x"})
    teams = _teams(lambda t: t[1].update(region="nope"))
    with pytest.raises(GeoImportError) as e:
        load_dataset(*toy.write(tmp_path, regions=regions, teams=teams))
    assert {p.id for p in e.value.problems} >= {"ta2", "tb2", "t-ca"}


def test_bowtie_is_repaired_without_losing_area(tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[120.0, 28.02], [120.03, 28.04],
              [120.03, 28.02], [120.0, 28.04], [120.0, 28.02]]]}
    ds = load_dataset(*toy.write(tmp_path, regions=_regions(ta2={"geometry": bowtie})))
    assert ds.regions["ta2"].geometry.is_valid and ds.regions["ta2"].geometry.area > 0
    assert any(w.kind == "repaired" and w.ids == ("ta2",) for w in dataset_warnings(ds))


def test_gaps_and_overlaps_are_warnings(tmp_path):
    # tb2 grows into ta2's county? no: siblings ta1/ta2 overlap by a strip, tb1 shrinks
    regions = _regions(ta2={"geometry": mapping(box(120.0, 28.018, 120.03, 28.04))},
                       tb1={"geometry": mapping(box(120.03, 28.0, 120.06, 28.015)
                                                .union(toy.ISLAND))})
    ds = load_dataset(*toy.write(tmp_path, regions=regions))
    over = [w for w in dataset_warnings(ds) if w.kind == "overlap" and set(w.ids) == {"ta1", "ta2"}]
    assert len(over) == 1
    strip_m2 = 0.03 * 0.002 * (6371008.8 * 3.141592653589793 / 180) ** 2 * 0.8829
    assert over[0].area_m2 == pytest.approx(strip_m2, rel=0.01)
    assert box(120.0, 28.018, 120.03, 28.02).covers(Point(over[0].point))
    gaps = [w for w in dataset_warnings(ds) if w.kind == "gap" and w.ids == ("cb",)]
    assert len(gaps) == 1 and gaps[0].area_m2 > 0
    assert ds.regions["cb"].geometry.covers(Point(gaps[0].point))


def test_reprojected_on_import(tmp_path):
    import geopandas

    rp, zp, tp = toy.write(tmp_path)
    gdf = geopandas.read_file(rp).set_crs(4326).to_crs(32651)
    gdf.to_file(tmp_path / "regions_utm.gpkg", driver="GPKG")
    ds = load_dataset(tmp_path / "regions_utm.gpkg", zp, tp)
    assert ds.regions["ta3"].geometry.centroid.x == pytest.approx(120.015, abs=1e-6)


def test_toy_summary_and_hierarchy(toy_ds):
    s = toy_ds.summary()
    assert s["regions"] == {"city": 1, "county": 2, "township": 5, "grid": 5}
    assert s["townships_empowered"] == 3 and s["townships_not_empowered"] == 2
    assert toy_ds.region_path("ta1-g1") == ["ta1-g1", "ta1", "ca", "c"]
    assert toy_ds.county_of("ta1-g1") == "ca" and toy_ds.county_of("c") is None
    assert toy_ds.own_team("cb") is None  # t-x serves cb but is township-level
    assert toy_ds.is_empowered("ta1") and not toy_ds.is_empowered("ta2")
    assert toy_ds.city_id == "c"
    assert Polygon(toy_ds.zones["z1"].geometry.exterior).area > 0


def test_geojson_exports_are_cached(toy_ds):
    a = toy_ds.regions_geojson(levels=["county", "township"])
    assert a is toy_ds.regions_geojson(levels=["county", "township"])
    assert {f["properties"]["level"] for f in a["features"]} == {"county", "township"}
    z = toy_ds.zones_geojson()
    assert {f["properties"]["id"] for f in z["features"]} == {"z0", "z1", "z2", "z9", "zsea"}
    json.dumps(a)
    json.dumps(z)
