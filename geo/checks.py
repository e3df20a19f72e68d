"""Warnings that do not stop an import: gaps and overlaps between sibling regions."""

from __future__ import annotations

import numpy as np
import shapely

from geo.areas import areas_m2
from geo.model import GeoDataset, GeoWarning


def _point(g) -> tuple[float, float]:
    p = g.representative_point() if not g.is_empty else None
    return (round(p.x, 6), round(p.y, 6)) if p is not None else (0.0, 0.0)


def dataset_warnings(ds: GeoDataset) -> list[GeoWarning]:
    """What ``geo check`` reports: the loader's repairs, then the gaps and overlaps between
    siblings of at least ``ds.gap_min_m2`` m²."""
    return [*ds.repaired, *sibling_warnings(ds, ds.gap_min_m2)]


def sibling_warnings(ds: GeoDataset, min_m2: float = 1.0) -> list[GeoWarning]:
    """Overlaps between siblings and gaps left inside their parent, each ≥ ``min_m2`` m²."""
    out: list[GeoWarning] = []
    for parent in ds.parents():
        kids = ds.children(parent)
        geoms = np.array([ds.regions[k].geometry for k in kids], dtype=object)
        tree = shapely.STRtree(geoms)
        a, b = tree.query(geoms, predicate="intersects")
        pairs = [(i, j) for i, j in zip(a.tolist(), b.tolist(), strict=True) if i < j]
        if pairs:
            inter = shapely.intersection(geoms[[i for i, _ in pairs]],
                                         geoms[[j for _, j in pairs]])
            inter = np.array([_polygonal(g) for g in inter], dtype=object)
            area = areas_m2(inter)
            for (i, j), g, m2 in zip(pairs, inter, area, strict=True):
                if m2 >= min_m2:
                    out.append(GeoWarning(
                        "overlap", (kids[i], kids[j]), float(m2), _point(g),
                        f"{kids[i]} and {kids[j]} overlap by {m2:,.0f} m²"))
        gap = _polygonal(shapely.difference(ds.regions[parent].geometry,
                                            shapely.union_all(geoms)))
        if not gap.is_empty:
            m2 = float(areas_m2([gap])[0])
            if m2 >= min_m2:
                biggest = max(shapely.get_parts(gap), key=lambda g: g.area)
                out.append(GeoWarning(
                    "gap", (parent,), m2, _point(biggest),
                    f"the children of {parent} leave {m2:,.0f} m² of it uncovered"))
    return out


def _polygonal(g):
    parts = [p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()
