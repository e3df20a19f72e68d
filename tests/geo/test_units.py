"""Contract §2.5: own team first, then same-county mutual aid; stale positions → base."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.areas import haversine_m
from geo.units import UnitIndex, UnknownUnitError

NOW = 1_800_000_000.0


@pytest.fixture
def units(toy_ds):
    return UnitIndex(toy_ds, position_max_age_s=300)


def test_base_when_never_reported(units):
    p = units.recommend("t-ta1", 120.005, 28.005, NOW, set())
    assert p.unit == "u-0005" and not p.mutual_aid  # all at base: tie → smallest id
    assert p.distance_m == pytest.approx(0.0, abs=1e-6)
    assert p.explanation["position"] == "base"


def test_reported_position_wins(units):
    units.update_position("u-0007", 120.02, 28.015, NOW - 10, accuracy_m=5)
    p = units.recommend("t-ta1", 120.021, 28.015, NOW, set())
    assert p.unit == "u-0007" and p.explanation["position"] == "reported"
    assert p.distance_m == pytest.approx(float(haversine_m(120.021, 28.015, 120.02, 28.015)))
    pos = units.position("u-0007", NOW)
    assert pos["source"] == "reported" and pos["accuracy_m"] == 5 and pos["age_s"] == 10


def test_stale_position_falls_back_to_base(units):
    units.update_position("u-0007", 120.02, 28.015, NOW - 301)
    pos = units.position("u-0007", NOW)
    assert pos["source"] == "stale" and (pos["lon"], pos["lat"]) == (120.005, 28.005)
    p = units.recommend("t-ta1", 120.021, 28.015, NOW, {"u-0005", "u-0006"})
    assert p.unit == "u-0007" and p.explanation["position"] == "stale"
    assert "old" in p.explanation["steps"][-1]["en"]


def test_older_report_is_ignored(units):
    assert units.update_position("u-0005", 120.01, 28.01, NOW)
    assert not units.update_position("u-0005", 120.02, 28.02, NOW - 5)
    assert units.position("u-0005", NOW)["lon"] == 120.01


def test_mutual_aid_same_county_only(units):
    busy = {"u-0005", "u-0006", "u-0007"}
    p = units.recommend("t-ta1", 120.005, 28.005, NOW, busy)
    # county A: t-ca (u-0003/4) and t-ta3 (u-0008); never t-c (city) nor t-tb1 (county B)
    assert p.mutual_aid and p.team in {"t-ca", "t-ta3"}
    assert p.explanation["mutual_aid"] is True and p.explanation["routed_team"] == "t-ta1"
    busy |= {"u-0003", "u-0004", "u-0008"}
    assert units.recommend("t-ta1", 120.005, 28.005, NOW, busy) is None


def test_city_team_gets_no_mutual_aid(units):
    assert units.recommend("t-c", 120.0, 28.0, NOW, {"u-0001", "u-0002"}) is None


def test_team_without_units_in_county_without_team(units):
    # t-x serves county cb and has no units: aid from t-tb1 (same county), never the city
    p = units.recommend("t-x", 120.05, 28.03, NOW, set())
    assert p.team == "t-tb1" and p.mutual_aid


def test_unknown_unit(units):
    with pytest.raises(UnknownUnitError):
        units.update_position("u-9999", 120, 28, NOW)
    with pytest.raises(KeyError):
        units.position("u-9999", NOW)


def test_bad_position_rejected(units):
    from geo.coords import CoordinateError

    with pytest.raises(CoordinateError):
        units.update_position("u-0001", float("nan"), 28, NOW)


def test_nearby(units):
    got = units.nearby(120.04, 28.01, NOW, {"u-0009"}, n=3)
    assert [g.unit for g in got][0] == "u-0010" and len(got) == 3
    assert all(a.distance_m <= b.distance_m for a, b in zip(got, got[1:], strict=False))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([f"u-{i:04d}" for i in range(1, 11)]),
                          st.floats(119.99, 120.07), st.floats(27.99, 28.05),
                          st.floats(0, 1000)), max_size=12),
       st.sets(st.sampled_from([f"u-{i:04d}" for i in range(1, 11)])),
       st.sampled_from(["t-c", "t-ca", "t-ta1", "t-ta3", "t-tb1", "t-x"]),
       st.floats(119.99, 120.07), st.floats(27.99, 28.05))
def test_recommend_matches_brute_force(toy_ds, reports, busy, team, x, y):
    ui = UnitIndex(toy_ds, 300)
    for uid, lon, lat, age in reports:
        ui.update_position(uid, lon, lat, NOW - age)
    got = ui.recommend(team, x, y, NOW, busy)

    def distances(cands: list[str]) -> dict[str, float]:
        out = {}
        for u in cands:
            pos = ui.position(u, NOW)
            out[u] = float(haversine_m(x, y, pos["lon"], pos["lat"]))
        return out

    own = [u.id for u in toy_ds.teams[team].units if u.id not in busy]
    county = toy_ds.county_of(toy_ds.teams[team].region)
    aid = [u.id for t in toy_ds.teams.values() if t.id != team and t.level != "city"
           and county is not None and toy_ds.county_of(t.region) == county
           for u in t.units if u.id not in busy]
    dist = distances(own or aid)
    assert (got is None) == (not dist)
    if got is None:
        return
    best = min(dist.values())
    assert got.unit in dist and got.mutual_aid == (not own)
    assert np.isfinite(got.distance_m)
    assert got.distance_m == pytest.approx(dist[got.unit], abs=1e-3)
    # the nearest (the team's hot path resolves distances to ~mm, so a unit within 1 cm of
    # the nearest may win) ...
    assert dist[got.unit] - best < 0.01
    # ... and of the units exactly as far as the pick (e.g. at one base), the smallest id
    assert got.unit == min(u for u, d in dist.items() if d == dist[got.unit])


def test_time_going_back_rederives_freshness(units):
    units.update_position("u-0005", 120.02, 28.02, NOW - 10)
    far = units.recommend("t-ta1", 120.02, 28.02, NOW + 400, set())
    assert far.explanation["position"] == "stale"
    back = units.recommend("t-ta1", 120.02, 28.02, NOW, set())
    assert back.unit == "u-0005" and back.explanation["position"] == "reported"
    assert back.distance_m == pytest.approx(0.0, abs=1e-6)


UNIT_IDS = [f"u-{i:04d}" for i in range(1, 11)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(UNIT_IDS), st.booleans()), max_size=30),
       st.sampled_from(["t-c", "t-ca", "t-ta1", "t-ta3", "t-tb1", "t-x"]),
       st.floats(119.99, 120.07), st.floats(27.99, 28.05))
def test_watched_busy_map_matches_a_plain_set(toy_ds, changes, team, x, y):
    """The mask the index keeps from the engine's BusyUnits answers as a plain set does,
    after every change, and a replaced map (a restored engine) no longer moves it."""
    from dispatch.core.engine import BusyUnits

    ui = UnitIndex(toy_ds, 300)
    ui.update_position("u-0003", 120.03, 28.02, NOW - 10)
    old, busy = BusyUnits(), BusyUnits()
    old["u-0001"] = "E0"
    stop_old = ui.follow_busy(old)  # the index follows ``old`` first (an engine later replaced)
    ui.recommend(team, x, y, NOW, old)
    stop_old()
    ui.follow_busy(busy)
    for unit, flag in changes:
        if flag:
            busy[unit] = "E1"
        elif unit in busy:
            del busy[unit]
        old[unit] = "E2"  # must not leak into the mask once ``busy`` is followed
        got, want = ui.recommend(team, x, y, NOW, busy), ui.recommend(team, x, y, NOW, set(busy))
        assert (got and (got.unit, got.mutual_aid)) == (want and (want.unit, want.mutual_aid))
        assert ([p.unit for p in ui.nearby(x, y, NOW, busy, n=4)]
                == [p.unit for p in ui.nearby(x, y, NOW, set(busy), n=4)])
