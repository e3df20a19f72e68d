"""Geography: load regions, zones and teams; route a point to a team; pick the nearest unit.

geopandas stays at the import edge (``geo.loader``); the hot path (``geo.router``,
``geo.units``) is shapely STRtrees and numpy.
"""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "data" / "taizhou"

__all__ = ["DEMO_DIR"]
