"""Every Redis key the dispatch server uses, in one place (arq's ``constants.py`` pattern).

All keys of one deployment share one hash tag (``{dispatch}`` by default), so they live in
one Redis Cluster slot and the append script may touch them all atomically. A province that
shards by county gives each county its own tag (``{331002}``, ``{331003}`` …): each tag is
then a separate journal with its own seq, on whichever node owns its slot.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TAG = "dispatch"
SENTINEL_SCHEME = "redis+sentinel://"
# Every ``store:`` value that names a Redis journal (the rest are SQLite paths or memory:).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)


@dataclass(frozen=True)
class Keys:
    """The key names for one tag (one journal)."""

    tag: str = DEFAULT_TAG

    def _k(self, name: str) -> str:
        return f"{{{self.tag}}}:{name}"

    @property
    def journal(self) -> str:
        """Stream: one entry per record, id ``<seq>-0``, fields ``h`` (hash), ``d`` (JSON)."""
        return self._k("journal")

    @property
    def head(self) -> str:
        """Hash {seq, hash}: the last record, the compare-and-set target of every append."""
        return self._k("head")

    @property
    def snapshot(self) -> str:
        """Hash {seq, blob}: the latest engine snapshot (a cache of the journal)."""
        return self._k("snapshot")

    @property
    def deadlines(self) -> str:
        """Sorted set ``<event>:<stage>:<kind>`` scored by due time (or lease expiry)."""
        return self._k("deadlines")

    @property
    def alive(self) -> str:
        """String, expires in 60 s: the health probe's write (``RedisStore.health``)."""
        return self._k("alive")

    @property
    def positions(self) -> str:
        """Hash unit → JSON {lon, lat, at, accuracy_m}: the latest position of each unit."""
        return self._k("positions")

    @property
    def positions_geo(self) -> str:
        """GEO set of the same positions (for GEOSEARCH by other tools)."""
        return self._k("positions:geo")

    @property
    def positions_channel(self) -> str:
        """Pub/sub channel: a position update, for the other instances' UnitIndex."""
        return self._k("positions:ch")

    @property
    def values(self) -> str:
        """Hash key → bytes: the small durable values (``get_value``/``set_value``)."""
        return self._k("values")

    def lease(self, name: str) -> str:
        """String, expiring: the instance holding the lease ``name`` (``hold_lease``)."""
        return self._k(f"lease:{name}")
