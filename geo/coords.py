"""Coordinate checks and the Chinese map datums (GCJ-02, BD-09) to WGS84.

GCJ-02 ("Mars coordinates", AMap/Tencent) and BD-09 (Baidu) use the published formulas
(the Krasovsky-ellipsoid offset series, and Baidu's polar shift); GCJ-02 → WGS84 is the
exact iterative inverse (to ~1e-10°), not the one-step approximation. Outside China the
GCJ-02 offset is not applied, as the map providers do.
"""

from __future__ import annotations

import math

CRSS = ("wgs84", "gcj02", "bd09")

_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = math.pi * 3000.0 / 180.0


class CoordinateError(ValueError):
    """A coordinate that cannot be routed; ``field`` is "lon", "lat" or "crs"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy as np

            if isinstance(value, np.floating | np.integer) and not isinstance(value, np.bool_):
                value = float(value)
            else:
                raise TypeError
        except TypeError:
            raise CoordinateError(field, "must be a number") from None
    v = float(value)  # type: ignore[arg-type]
    if math.isnan(v):
        raise CoordinateError(field, "must not be NaN")
    if math.isinf(v):
        raise CoordinateError(field, "must be finite")
    return v


def validate(lon: object, lat: object) -> tuple[float, float]:
    """Check a lon/lat pair and return it as floats; raise ``CoordinateError`` if unusable.

    Rejects non-numbers (bools too), NaN, infinities, lon outside -180..180 and lat outside
    -90..90: such a point is never routed.
    """
    x = _number(lon, "lon")
    y = _number(lat, "lat")
    if not -180.0 <= x <= 180.0:
        raise CoordinateError("lon", f"{x} is outside -180..180")
    if not -90.0 <= y <= 90.0:
        raise CoordinateError("lat", f"{y} is outside -90..90")
    return x, y


def out_of_china(lon: float, lat: float) -> bool:
    """True where GCJ-02 applies no offset (outside China's rough bounding box)."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _delta(lon: float, lat: float) -> tuple[float, float]:
    x, y = lon - 105.0, lat - 35.0
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y
            + 0.2 * math.sqrt(abs(x)))
    dlat += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2 / 3
    dlat += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2 / 3
    dlat += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2 / 3
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    dlon += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2 / 3
    dlon += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2 / 3
    dlon += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2 / 3
    radlat = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(radlat) ** 2
    sqrtmagic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrtmagic) * math.pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * math.cos(radlat) * math.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """WGS84 → GCJ-02 (AMap, Tencent)."""
    if out_of_china(lon, lat):
        return lon, lat
    dlon, dlat = _delta(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """GCJ-02 → WGS84 by fixed-point iteration on the forward formula (error < 1e-9°)."""
    if out_of_china(lon, lat):
        return lon, lat
    wlon, wlat = lon, lat
    for _ in range(30):
        glon, glat = wgs84_to_gcj02(wlon, wlat)
        ex, ey = glon - lon, glat - lat
        wlon, wlat = wlon - ex, wlat - ey
        if abs(ex) < 1e-12 and abs(ey) < 1e-12:
            break
    return wlon, wlat


def gcj02_to_bd09(lon: float, lat: float) -> tuple[float, float]:
    """GCJ-02 → BD-09 (Baidu)."""
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * _X_PI)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * _X_PI)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def bd09_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """BD-09 → GCJ-02, iterating the forward formula to an exact inverse."""
    x, y = lon - 0.0065, lat - 0.006
    z = math.sqrt(x * x + y * y) - 0.00002 * math.sin(y * _X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * _X_PI)
    glon, glat = z * math.cos(theta), z * math.sin(theta)
    for _ in range(10):
        blon, blat = gcj02_to_bd09(glon, glat)
        ex, ey = blon - lon, blat - lat
        glon, glat = glon - ex, glat - ey
        if abs(ex) < 1e-12 and abs(ey) < 1e-12:
            break
    return glon, glat


def to_wgs84(lon: object, lat: object, crs: str = "wgs84") -> tuple[float, float]:
    """Validate a point given in ``crs`` ("wgs84", "gcj02" or "bd09") and return it in WGS84.

    Raises ``CoordinateError`` (field "crs") for an unknown datum, and (field "lon"/"lat")
    for NaN, infinities or out-of-range values, before and after conversion.
    """
    if not isinstance(crs, str) or crs.lower() not in CRSS:
        raise CoordinateError("crs", f"unknown crs {crs!r}; use one of {', '.join(CRSS)}")
    x, y = validate(lon, lat)
    c = crs.lower()
    if c == "gcj02":
        x, y = gcj02_to_wgs84(x, y)
    elif c == "bd09":
        x, y = gcj02_to_wgs84(*bd09_to_gcj02(x, y))
    return validate(x, y)
