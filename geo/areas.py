"""Areas in m² and local metric distances, for WGS84 lon/lat geometries."""

from __future__ import annotations

import math

import numpy as np
import shapely

R_EARTH_M = 6371008.8
_M_PER_DEG = math.pi * R_EARTH_M / 180.0


def areas_m2(geoms: np.ndarray | list) -> np.ndarray:
    """Areas in m² of lon/lat polygons: planar degree² area × the local scale at mid-latitude.

    An affine scale (not a curved projection) keeps what is collinear in lon/lat collinear,
    so the sliver between two borders that the planar routing sees as touching measures ~0;
    at city or province scale the error is well under 0.1%.
    """
    arr = np.asarray(geoms, dtype=object)
    if arr.size == 0:
        return np.zeros(0)
    _, y0, _, y1 = shapely.bounds(arr).T
    lat = np.nan_to_num((y0 + y1) / 2)  # empty → area 0 anyway
    return np.asarray(shapely.area(arr) * _M_PER_DEG**2 * np.cos(np.radians(lat)), dtype=float)


def local_metric(geom, lon: float, lat: float):
    """``geom`` in metres on a plane tangent at (lon, lat) (equirectangular; fine for km)."""
    kx = _M_PER_DEG * math.cos(math.radians(lat))
    ky = _M_PER_DEG
    return shapely.transform(geom, lambda c: (c - (lon, lat)) * (kx, ky))


def distance_m(geom, lon: float, lat: float) -> float:
    """Distance in metres from (lon, lat) to ``geom`` (0 inside), locally projected."""
    return float(shapely.distance(local_metric(geom, lon, lat), shapely.Point(0.0, 0.0)))


def haversine_m(lon1, lat1, lon2, lat2):
    """Great-circle distance in metres (R = 6,371,008.8 m); numpy-vectorised."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * R_EARTH_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
