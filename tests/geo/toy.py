"""A small hand-made data set covering every routing rule, written as files for load_dataset.

Layout (lon 120.00–120.11, lat 28.00–28.04, squares of 0.005°):
- city ``c``; county ``ca`` (west) with team, county ``cb`` (east + an island) without team.
- ``ta1`` has a hole that is the enclave township ``ta3``; ``ta1`` has two grid cells that
  share an edge; ``ta2`` is half covered by one grid cell and not empowered; ``ta3`` has no
  grid cells; ``tb1`` is a multipolygon with an island; ``tb2`` is not empowered and leaves a
  strip of county ``cb`` with no township; ``tb1`` grid cells leave the island uncovered.
- zones: ``z1`` (priority 1), ``z2`` and ``z0`` (same square, priority 1, inside z1),
  ``z9`` (priority 5), ``zsea`` off the coast.
"""

from __future__ import annotations

import json
from pathlib import Path

from shapely.geometry import box, mapping

ISLAND = box(120.08, 28.00, 120.09, 28.01)
HOLE = box(120.01, 28.005, 120.02, 28.015)

REGIONS = [
    ("c", "City", "city", None, box(120.00, 28.00, 120.06, 28.04).union(ISLAND)),
    ("ca", "County A", "county", "c", box(120.00, 28.00, 120.03, 28.04)),
    ("cb", "County B", "county", "c", box(120.03, 28.00, 120.06, 28.04).union(ISLAND)),
    ("ta1", "Town A1", "township", "ca", box(120.00, 28.00, 120.03, 28.02).difference(HOLE)),
    ("ta2", "Town A2", "township", "ca", box(120.00, 28.02, 120.03, 28.04)),
    ("ta3", "Town A3 (enclave)", "township", "ca", HOLE),
    ("tb1", "Town B1", "township", "cb", box(120.03, 28.00, 120.06, 28.02).union(ISLAND)),
    ("tb2", "Town B2", "township", "cb", box(120.03, 28.02, 120.05, 28.04)),
    ("ta1-g1", "A1 grid 1", "grid", "ta1", box(120.00, 28.00, 120.015, 28.02).difference(HOLE)),
    ("ta1-g2", "A1 grid 2", "grid", "ta1", box(120.015, 28.00, 120.03, 28.02).difference(HOLE)),
    ("ta2-g1", "A2 grid 1", "grid", "ta2", box(120.00, 28.02, 120.015, 28.04)),
    ("tb1-g1", "B1 grid 1", "grid", "tb1", box(120.03, 28.00, 120.045, 28.02)),
    ("tb1-g2", "B1 grid 2", "grid", "tb1", box(120.045, 28.00, 120.06, 28.02)),
]

ZONES = [
    ("z1", "Market", "market", "t-ta1", 1, box(120.005, 28.0175, 120.025, 28.035)),
    ("z2", "School", "school", "t-tb1", 1, box(120.01, 28.025, 120.02, 28.03)),
    ("z0", "School twin", "school", "t-ca", 1, box(120.01, 28.025, 120.02, 28.03)),
    ("z9", "Scenic", "scenic", "t-ta3", 5, box(120.04, 28.03, 120.05, 28.04)),
    ("zsea", "Sea farm", "other", "t-tb1", 0, box(120.10, 28.00, 120.11, 28.01)),
]


def _unit(n: int, kind: str = "officer") -> dict:
    return {"id": f"u-{n:04d}", "name": f"unit {n}", "kind": kind}


TEAMS = [
    {"id": "t-c", "name": "City", "level": "city", "region": "c", "base": [120.03, 28.03],
     "units": [_unit(1), _unit(2, "vehicle")]},
    {"id": "t-ca", "name": "County A", "level": "county", "region": "ca",
     "base": [120.02, 28.03], "units": [_unit(3), _unit(4)]},
    {"id": "t-ta1", "name": "Town A1", "level": "township", "region": "ta1",
     "base": [120.005, 28.005], "units": [_unit(5), _unit(6), _unit(7, "boat")]},
    {"id": "t-ta3", "name": "Town A3", "level": "township", "region": "ta3",
     "base": [120.015, 28.01], "units": [_unit(8)]},
    {"id": "t-tb1", "name": "Town B1", "level": "township", "region": "tb1",
     "base": [120.04, 28.01], "units": [_unit(9), _unit(10)]},
    # a township-level team serving a county region: never that county's own team
    {"id": "t-x", "name": "Odd", "level": "township", "region": "cb", "base": [120.05, 28.03],
     "units": []},
]


def fc(rows: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": rows}


def region_features(regions=REGIONS) -> list[dict]:
    return [{"type": "Feature", "properties": {"id": i, "name": n, "level": lv, "parent": p},
             "geometry": mapping(g) if g is not None else None}
            for i, n, lv, p, g in regions]


def zone_features(zones=ZONES) -> list[dict]:
    return [{"type": "Feature", "properties": {"id": i, "name": n, "kind": k, "team": t,
                                               "priority": pr},
             "geometry": mapping(g)} for i, n, k, t, pr, g in zones]


def write(d: Path, regions: list[dict] | None = None, zones: list[dict] | None = None,
          teams: list | None = None) -> tuple[Path, Path, Path]:
    """Write regions.geojson, zones.geojson and teams.json into ``d``; return the paths."""
    d.mkdir(parents=True, exist_ok=True)
    rp, zp, tp = d / "regions.geojson", d / "zones.geojson", d / "teams.json"
    rp.write_text(json.dumps(fc(region_features() if regions is None else regions)))
    zp.write_text(json.dumps(fc(zone_features() if zones is None else zones)))
    tp.write_text(json.dumps(TEAMS if teams is None else teams))
    return rp, zp, tp
