"""bench/vector_router.py: the batch router agrees with ``Router.locate`` point by point.

Moved here from tests/geo/ with the batch router itself (issue 12: bench-only code in bench/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo import DEMO_DIR
from geo.loader import load_dataset
from geo.router import OutsideJurisdictionError, Router

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``bench`` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "geo"))

import toy  # noqa: E402  (the hand-made toy data set of tests/geo)

from bench.vector_router import VectorRouter  # noqa: E402

SNAP_M = 600.0
lattice = st.tuples(st.integers(-4, 26), st.integers(-4, 12)).map(
    lambda ij: (round(120.0 + ij[0] * 0.005, 3), round(28.0 + ij[1] * 0.005, 3)))
anywhere = st.tuples(st.floats(119.97, 120.13), st.floats(27.97, 28.07))


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    return Router(load_dataset(*toy.write(tmp_path_factory.mktemp("toy"))), snap_m=SNAP_M)


@pytest.fixture(scope="module")
def demo_router() -> Router:
    return Router(load_dataset(DEMO_DIR / "regions.geojson", DEMO_DIR / "zones.geojson",
                               DEMO_DIR / "teams.yaml"))


def _route(router: Router, x: float, y: float) -> tuple:
    try:
        r = router.locate(x, y)
    except OutsideJurisdictionError as e:
        return ("outside", e.distance_m)
    return (r.team, r.zone, r.grid, r.township, r.county, r.snapped_m is not None)


@settings(max_examples=20, deadline=None)
@given(st.lists(anywhere | lattice, min_size=1, max_size=200))
def test_locate_many_matches_locate(router: Router, pts: list[tuple[float, float]]) -> None:
    vr = VectorRouter(router)
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    b = vr.locate_many(xs, ys)
    for k, (x, y) in enumerate(pts):
        got = _route(router, x, y)
        if got[0] == "outside":
            assert b.team[k] == -1
            continue
        team, zone, grid, town, county, snapped = got
        assert vr.team_ids[b.team[k]] == team
        assert (vr.zone_ids[b.zone[k]] if b.zone[k] >= 0 else None) == zone
        assert (vr.level_ids["grid"][b.grid[k]] if b.grid[k] >= 0 else None) == grid
        assert (vr.level_ids["township"][b.township[k]] if b.township[k] >= 0
                else None) == town
        assert (vr.level_ids["county"][b.county[k]] if b.county[k] >= 0 else None) == county
        assert np.isnan(b.snapped_m[k]) != snapped


def test_locate_many_rejects_bad_points(router: Router) -> None:
    b = VectorRouter(router).locate_many([np.nan, 120.02, 500.0], [28.01, np.inf, 28.01])
    assert list(b.team) == [-1, -1, -1]


def test_batch_raster_matches_exact_path(demo_router: Router) -> None:
    ds = demo_router.dataset
    rng = np.random.default_rng(3)
    x0, y0, x1, y1 = ds.regions[ds.city_id].geometry.bounds
    xs, ys = rng.uniform(x0, x1, 20000), rng.uniform(y0, y1, 20000)
    fast = VectorRouter(demo_router).locate_many(xs, ys)
    exact_vr = VectorRouter(demo_router, raster=False)  # every point on the exact path
    exact = exact_vr.locate_many(xs, ys)
    assert exact_vr.raster is None
    for f in ("team", "zone", "grid", "township", "county"):
        assert (getattr(fast, f) == getattr(exact, f)).all(), f
    for k in rng.choice(20000, 300, replace=False).tolist():
        got = _route(demo_router, float(xs[k]), float(ys[k]))
        if got[0] == "outside":
            assert fast.team[k] == -1
            continue
        assert exact_vr.team_ids[fast.team[k]] == got[0]


def test_threads_split_the_points_and_agree(demo_router: Router) -> None:
    ds = demo_router.dataset
    rng = np.random.default_rng(5)
    x0, y0, x1, y1 = ds.regions[ds.city_id].geometry.bounds
    xs, ys = rng.uniform(x0, x1, 40000), rng.uniform(y0, y1, 40000)
    vr = VectorRouter(demo_router)
    one, two = vr.locate_many(xs, ys), vr.locate_many(xs, ys, workers=2)
    for f in ("team", "zone", "grid", "township", "county"):
        assert (getattr(one, f) == getattr(two, f)).all(), f
