import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo.coords import (
    CoordinateError,
    bd09_to_gcj02,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    to_wgs84,
    validate,
    wgs84_to_gcj02,
)


def test_published_vectors():
    assert wgs84_to_gcj02(116.404, 39.915) == pytest.approx(
        (116.41024449916938, 39.91640428150164), abs=1e-9)
    assert gcj02_to_bd09(116.404, 39.915) == pytest.approx(
        (116.41036949371029, 39.92133699351021), abs=1e-9)


def test_inverse_of_the_vectors():
    assert gcj02_to_wgs84(116.41024449916938, 39.91640428150164) == pytest.approx(
        (116.404, 39.915), abs=1e-9)
    assert bd09_to_gcj02(116.41036949371029, 39.92133699351021) == pytest.approx(
        (116.404, 39.915), abs=1e-9)
    assert to_wgs84(116.41024449916938, 39.91640428150164, "gcj02") == pytest.approx(
        (116.404, 39.915), abs=1e-9)


@given(st.floats(73, 135), st.floats(18, 53))
def test_round_trips_in_china(lon, lat):
    assert gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat)) == pytest.approx((lon, lat), abs=1e-8)
    b = gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))
    assert to_wgs84(*b, "bd09") == pytest.approx((lon, lat), abs=1e-8)


def test_outside_china_no_offset():
    assert wgs84_to_gcj02(2.35, 48.85) == (2.35, 48.85)


@pytest.mark.parametrize("lon,lat,field", [
    (math.nan, 28.0, "lon"), (121.0, math.nan, "lat"), (math.inf, 28.0, "lon"),
    (121.0, -math.inf, "lat"), (180.5, 28.0, "lon"), (-181, 28.0, "lon"), (121.0, 90.01, "lat"),
    (121.0, -91, "lat"), (True, 28.0, "lon"), (121.0, False, "lat"), ("121", 28.0, "lon"),
    (None, 28.0, "lon"), (121.0, [28], "lat"),
])
def test_rejected(lon, lat, field):
    with pytest.raises(CoordinateError) as e:
        validate(lon, lat)
    assert e.value.field == field and e.value.message
    with pytest.raises(CoordinateError):
        to_wgs84(lon, lat, "gcj02")


def test_unknown_crs():
    with pytest.raises(CoordinateError) as e:
        to_wgs84(121.0, 28.0, "epsg:3857")
    assert e.value.field == "crs"


def test_edges_accepted():
    assert validate(180, -90) == (180.0, -90.0)
    assert to_wgs84(121, 28) == (121.0, 28.0)
