"""The router against a brute-force oracle that applies contract §2 to every polygon."""

import math

import pytest
import toy
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from geo.router import OutsideJurisdictionError, Router

SNAP_M = 600.0
TEAMS = {t["id"]: t for t in toy.TEAMS}
PARENT = {i: p for i, _, _, p, _ in toy.REGIONS}
LEVEL = {i: lv for i, _, lv, _, _ in toy.REGIONS}


def _own(rid):
    for t in toy.TEAMS:
        if t["region"] == rid and t["level"] == LEVEL[rid]:
            return t["id"]
    return None


def _dist_m(geom, x, y):
    """Independent metric distance: densify the boundary, equirectangular at the point."""
    k = 6371008.8 * math.pi / 180
    if geom.covers(Point(x, y)):
        return 0.0
    best = math.inf
    for poly in getattr(geom, "geoms", [geom]):
        for ring in [poly.exterior, *poly.interiors]:
            c = list(ring.coords)
            for (x0, y0), (x1, y1) in zip(c, c[1:], strict=False):
                ax, ay = (x0 - x) * k * math.cos(math.radians(y)), (y0 - y) * k
                bx, by = (x1 - x) * k * math.cos(math.radians(y)), (y1 - y) * k
                dx, dy = bx - ax, by - ay
                t = max(0.0, min(1.0, -(ax * dx + ay * dy) / (dx * dx + dy * dy)))
                best = min(best, math.hypot(ax + t * dx, ay + t * dy))
    return best


def oracle(x, y, snap_m=SNAP_M):
    """Contract §2 by brute force: every zone, every region, ``covers`` (inclusive)."""
    p = Point(x, y)
    zones = [z for z in toy.ZONES if z[5].covers(p)]
    region = None
    for level in ("grid", "township", "county", "city"):
        hits = sorted(i for i, _, lv, _, g in toy.REGIONS if lv == level and g.covers(p))
        if hits:
            region = hits[0]
            break
    snapped = None
    if region is None:
        towns = sorted((_dist_m(g, x, y), i) for i, _, lv, _, g in toy.REGIONS
                       if lv == "township")
        d, tw = towns[0]
        if d <= snap_m:
            region, snapped = tw, d
        elif not zones:
            return ("outside", d)
    if zones:
        kx = math.cos(math.radians(y))
        best = min(zones, key=lambda z: (-z[4], z[5].area * kx, z[0]))
        team, zone = best[3], best[0]
    else:
        zone = None
        start = region if LEVEL[region] != "grid" else PARENT[region]
        team = None
        r = start
        while r is not None:
            team = _own(r)
            if team:
                break
            r = PARENT[r]
    path = {}
    r = region
    while r is not None:
        path[LEVEL[r]] = r
        r = PARENT[r]
    return (team, zone, path.get("grid"), path.get("township"), path.get("county"),
            snapped is not None)


@pytest.fixture(scope="module")
def router(toy_ds):
    return Router(toy_ds, snap_m=SNAP_M)


def _route(router, x, y):
    try:
        r = router.locate(x, y)
    except OutsideJurisdictionError as e:
        return ("outside", e.distance_m)
    return (r.team, r.zone, r.grid, r.township, r.county, r.snapped_m is not None)


def _check(router, x, y):
    got, want = _route(router, x, y), oracle(x, y)
    if want[0] == "outside":
        assert got[0] == "outside", (x, y, got, want)
        assert got[1] == pytest.approx(want[1], rel=1e-3, abs=0.5)
    else:
        assert got == want, (x, y)


lattice = st.tuples(st.integers(-4, 26), st.integers(-4, 12)).map(
    lambda ij: (round(120.0 + ij[0] * 0.005, 3), round(28.0 + ij[1] * 0.005, 3)))
anywhere = st.tuples(st.floats(119.97, 120.13), st.floats(27.97, 28.07))


@settings(max_examples=400, deadline=None)
@given(lattice)
@example((120.015, 28.01))   # shared edge of ta1-g1/ta1-g2 inside the hole: enclave ta3
@example((120.015, 28.0))    # shared vertex of two grid cells on the coast
@example((120.03, 28.02))    # four townships, two counties meet
@example((120.09, 28.005))   # island edge
def test_lattice_points_on_vertices_and_edges(router, pt):
    _check(router, *pt)


@settings(max_examples=600, deadline=None)
@given(anywhere)
@example((120.012, 28.012))  # in the hole → enclave township ta3 (own team)
@example((120.085, 28.005))  # island of tb1, no grid cell
@example((120.055, 28.03))   # county cb strip without township → cb has no team → city
@example((120.02, 28.03))    # ta2 grid: not empowered → county A brigade (but zones z1/z0)
@example((120.027, 28.037))  # ta2 outside its grid: township rule, not empowered
@example((120.035, 28.03))   # tb2 not empowered, county without team → city team
@example((120.0635, 28.01))  # just off the coast: snapped
@example((120.105, 28.005))  # in zone zsea outside every region, beyond snap
@example((120.12, 28.06))    # far out: outside the jurisdiction
def test_random_points(router, pt):
    _check(router, *pt)


def test_rules_by_name(router):
    r = router.locate(120.012, 28.012)
    assert (r.township, r.grid, r.team, r.explanation["rule"]) == ("ta3", None, "t-ta3",
                                                                   "township")
    r = router.locate(120.015, 28.005)  # shared edge of ta1-g1 and ta1-g2
    assert r.grid == "ta1-g1" and r.explanation["ties"] == ["ta1-g1", "ta1-g2"]
    r = router.locate(120.027, 28.037)
    assert r.team == "t-ca" and r.team_level == "county"
    assert r.explanation["fallbacks"] == ["township ta2 is not empowered → county brigade"]
    r = router.locate(120.035, 28.03)
    assert r.team == "t-c" and len(r.explanation["fallbacks"]) == 2
    r = router.locate(120.055, 28.03)
    assert (r.township, r.county, r.team, r.explanation["rule"]) == (None, "cb", "t-c",
                                                                     "county")
    r = router.locate(120.015, 28.027)  # z1, z2, z0 all contain it: z0 (= z2 area, smaller id)
    assert r.zone == "z0" and [z["id"] for z in r.explanation["zones"]] == ["z0", "z2", "z1"]
    r = router.locate(120.045, 28.035)  # z9 priority 5
    assert r.zone == "z9" and r.team == "t-ta3"
    r = router.locate(120.0635, 28.01)
    assert r.snapped_m == pytest.approx(_dist_m(toy.REGIONS[6][4], 120.0635, 28.01), rel=1e-3)
    assert r.explanation["rule"] == "snap" and r.township == "tb1"
    with pytest.raises(OutsideJurisdictionError) as e:
        router.locate(120.07, 28.03)
    assert e.value.distance_m > SNAP_M
    r = router.locate(120.105, 28.005)
    assert r.zone == "zsea" and r.township is None


def test_explanation_is_json_and_bilingual(router):
    import json

    r = router.locate(120.027, 28.037)
    json.dumps(r.explanation)
    assert all(set(s) == {"en", "zh"} for s in r.explanation["steps"])


@pytest.mark.parametrize("bad", [(math.nan, 28.0), (120.0, math.inf), (190.0, 28.0)])
def test_locate_rejects_bad_points(router, bad):
    from geo.coords import CoordinateError

    with pytest.raises(CoordinateError):
        router.locate(*bad)
