"""Contract §2.5: the nearest available unit, own team first, then county mutual aid.

Positions live in numpy arrays (one slot per unit, units sorted by id); a team's and a
county's unit slots are precomputed, so a recommendation is one vectorised haversine over a
few dozen units. A position older than ``position_max_age_s`` is not trusted: the unit's
team base is used instead, and the explanation says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from geo.areas import R_EARTH_M, haversine_m
from geo.coords import validate
from geo.model import GeoDataset


class BusyMap(Protocol):
    """The busy units (e.g. the engine's ``BusyUnits``), telling each change to subscribers."""

    def __iter__(self) -> Iterator[str]: ...

    def __contains__(self, unit: object) -> bool: ...

    def subscribe(self, fn: Callable[[str, bool], None]) -> Callable[[], None]: ...


def _unit_xyz(lon: float, lat: float) -> tuple[float, float, float]:
    """The point's unit vector on the sphere. Every vector (bases, reports, queries) is made
    here, with the same arithmetic, so units at the same place tie exactly."""
    cl, rl = math.cos(math.radians(lat)), math.radians(lon)
    return cl * math.cos(rl), cl * math.sin(rl), math.sin(math.radians(lat))


def _xyz(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """``_unit_xyz`` of each point, as an (n, 3) array."""
    return np.array([_unit_xyz(float(x), float(y)) for x, y in zip(lon, lat, strict=True)],
                    dtype=float).reshape(len(lon), 3)


def _haversine1(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * R_EARTH_M * math.asin(math.sqrt(min(a, 1.0)))


class UnknownUnitError(KeyError):
    """No unit has this id."""

    def __init__(self, unit_id: str) -> None:
        super().__init__(unit_id)
        self.unit_id = unit_id

    def __str__(self) -> str:
        return f"unknown unit {self.unit_id!r}"


@dataclass(frozen=True)
class UnitPick:
    """The recommended unit, how far it is, and why it was picked."""

    unit: str
    team: str
    mutual_aid: bool
    distance_m: float
    explanation: dict[str, Any]


_SOURCE_ZH = {"reported": "最近上报位置", "stale": "上报位置已过期，按驻地",
              "base": "未上报位置，按驻地"}


class UnitIndex:
    """Unit positions and nearest-available-unit queries (one thread: queries update caches)."""

    def __init__(self, dataset: GeoDataset, position_max_age_s: float = 300.0) -> None:
        self.dataset = ds = dataset
        self.position_max_age_s = float(position_max_age_s)
        # slots ordered by (team, unit id): each team's units are one contiguous slice
        order = sorted(ds.units.values(), key=lambda u: (u.team, u.id))
        self.unit_ids: tuple[str, ...] = tuple(u.id for u in order)
        self._slot = {u: i for i, u in enumerate(self.unit_ids)}
        n = len(self.unit_ids)
        self._team = [u.team for u in order]
        base = np.array([ds.teams[t].base for t in self._team], dtype=float).reshape(n, 2)
        self._base_lon, self._base_lat = base[:, 0].copy(), base[:, 1].copy()
        self._lon = np.full(n, np.nan)
        self._lat = np.full(n, np.nan)
        self._at = np.full(n, np.nan)
        self._acc: list[float | None] = [None] * n
        # unit vectors on the sphere: ranking by great-circle distance = ranking by dot product
        self._bxyz = _xyz(self._base_lon, self._base_lat)  # (n, 3)
        # the position each slot is ranked by: its report while fresh, else its base
        self._exyz = self._bxyz.copy()
        self._using = np.zeros(n, dtype=bool)  # _exyz holds the report
        self._until = np.full(n, -np.inf)      # report trusted until this time
        self._last_now = -np.inf
        self._next_expiry = np.inf             # the earliest _until among used reports
        self._watched: object = None           # the busy map _mask follows (follow_busy)
        self._mask = np.zeros(n, dtype=bool)
        self._rank = np.array([u.id for u in order], dtype=object).argsort(kind="stable")
        self._id_rank = np.empty(n, dtype=np.int64)
        self._id_rank[self._rank] = np.arange(n)  # position of each slot in id order
        by_team: dict[str, list[int]] = {}
        by_county: dict[str, list[int]] = {}
        for i, t in enumerate(self._team):
            by_team.setdefault(t, []).append(i)
            team = ds.teams[t]
            county = ds.county_of(team.region)
            if county is not None and team.level != "city":
                by_county.setdefault(county, []).append(i)
        self._codes = {t: k for k, t in enumerate(sorted(ds.teams))}
        self._team_code = np.array([self._codes[t] for t in self._team], dtype=np.int64)
        self._by_team = {t: slice(v[0], v[-1] + 1) for t, v in by_team.items()}
        self._by_county = {c: np.array(v, dtype=np.int64) for c, v in by_county.items()}
        self._empty = np.zeros(0, dtype=np.int64)

    # -- positions ---------------------------------------------------------------------------
    def update_position(self, unit_id: str, lon: float, lat: float, at: float,
                        accuracy_m: float | None = None) -> bool:
        """Record a reported WGS84 position; an older report than the one held is ignored.

        Returns True if stored. Raises ``UnknownUnitError`` or ``CoordinateError``.
        """
        i = self._slot.get(unit_id)
        if i is None:
            raise UnknownUnitError(unit_id)
        x, y = validate(lon, lat)
        if not np.isnan(self._at[i]) and float(at) < self._at[i]:
            return False
        self._lon[i], self._lat[i], self._at[i] = x, y, float(at)
        self._exyz[i] = _unit_xyz(x, y)
        self._using[i] = True
        self._until[i] = float(at) + self.position_max_age_s
        self._next_expiry = min(self._next_expiry, self._until[i])
        self._acc[i] = None if accuracy_m is None else float(accuracy_m)
        return True

    def _effective(self, idx: np.ndarray, now: float) -> tuple[np.ndarray, ...]:
        at = self._at[idx]
        fresh = (now - at) <= self.position_max_age_s  # NaN (never reported) → False
        lon = np.where(fresh, self._lon[idx], self._base_lon[idx])
        lat = np.where(fresh, self._lat[idx], self._base_lat[idx])
        return lon, lat, fresh, at

    def position(self, unit_id: str, now: float) -> dict[str, Any]:
        """Where the unit is taken to be: reported, or its team base (stale or never reported)."""
        i = self._slot.get(unit_id)
        if i is None:
            raise UnknownUnitError(unit_id)
        at = None if np.isnan(self._at[i]) else float(self._at[i])
        age = None if at is None else max(0.0, now - at)
        if at is not None and now - at <= self.position_max_age_s:
            src, lon, lat = "reported", float(self._lon[i]), float(self._lat[i])
        else:
            src = "base" if at is None else "stale"
            lon, lat = float(self._base_lon[i]), float(self._base_lat[i])
        return {"unit": unit_id, "team": self._team[i], "lon": lon, "lat": lat, "at": at,
                "accuracy_m": self._acc[i], "source": src, "age_s": age}

    # -- picking -----------------------------------------------------------------------------
    def follow_busy(self, busy: BusyMap) -> Callable[[], None]:
        """Keep a boolean mask of ``busy``'s units, kept up to date by its subscription.

        Recommendations given this very map then cost no per-unit lookups; any other map is
        tested unit by unit. Returns a callable that stops following (a replaced engine).
        """
        mask = np.zeros(len(self.unit_ids), dtype=bool)
        for u in busy:
            s = self._slot.get(u)
            if s is not None:
                mask[s] = True

        def changed(unit: str, flag: bool) -> None:
            s = self._slot.get(unit)
            if s is not None and self._watched is busy:
                self._mask[s] = flag

        self._watched, self._mask = busy, mask
        unsubscribe = busy.subscribe(changed)

        def stop() -> None:
            unsubscribe()
            if self._watched is busy:
                self._watched = None
        return stop

    def _busy_mask(self, busy: Container[str]) -> np.ndarray | None:
        """The mask of ``busy`` when it is the followed map (``follow_busy``), else None."""
        return self._mask if busy is self._watched else None

    def _available(self, idx: np.ndarray, busy: Container[str]) -> np.ndarray:
        if len(idx) == 0:
            return idx
        mask = self._busy_mask(busy)
        if mask is not None:
            return idx[~mask[idx]]
        ids = self.unit_ids
        if isinstance(busy, set | frozenset | dict | MappingProxyType) and len(busy) < len(idx):
            if not busy:
                return idx
            gone = [s for u in busy if (s := self._slot.get(u)) is not None]
            return idx[~np.isin(idx, gone)] if gone else idx
        keep = [k for k, i in enumerate(idx.tolist()) if ids[i] not in busy]
        return idx[keep] if len(keep) != len(idx) else idx

    def _nearest(self, idx: np.ndarray, lon: float, lat: float, now: float,
                 n: int = 1) -> list[tuple[int, float, str, float | None]]:
        plon, plat, fresh, at = self._effective(idx, now)
        d = haversine_m(lon, lat, plon, plat)
        if n == 1:  # ties → smallest unit id
            best = np.flatnonzero(d == d.min())
            order = [best[0] if len(best) == 1 else best[np.argmin(self._id_rank[idx[best]])]]
        else:
            order = np.lexsort((self._id_rank[idx], d))[:n]
        out = []
        for k in (int(v) for v in order):
            src = "reported" if fresh[k] else ("base" if np.isnan(at[k]) else "stale")
            age = None if np.isnan(at[k]) else max(0.0, now - float(at[k]))
            out.append((int(idx[k]), float(d[k]), src, age))
        return out

    def _refresh(self, now: float) -> None:
        """Reports that went stale by ``now`` fall back to their base (one sweep per expiry)."""
        if now < self._last_now:  # time went back: re-derive which reports are fresh
            self._using[:] = (self._until >= now) & ~np.isnan(self._at)
            self._exyz[:] = self._bxyz
            if self._using.any():
                u = self._using
                self._exyz[u] = _xyz(self._lon[u], self._lat[u])
            self._next_expiry = float(self._until[self._using].min(initial=np.inf))
        self._last_now = now
        if now > self._next_expiry:
            k = np.flatnonzero(self._using & (self._until < now))
            self._exyz[k] = self._bxyz[k]
            self._using[k] = False
            self._next_expiry = float(self._until[self._using].min(initial=np.inf))

    def _nearest_in_slice(self, sl: slice, lon: float, lat: float, now: float,
                          busy: Container[str]) -> tuple[int, float, str, float | None] | None:
        """The hot path: one team's contiguous slots, views only, a dot product per unit."""
        if sl.start == sl.stop:
            return None
        self._refresh(now)
        dot = self._exyz[sl].dot(_unit_xyz(lon, lat))
        mask = self._busy_mask(busy)
        if mask is not None:
            dot[mask[sl]] = -np.inf
        elif not isinstance(busy, set | frozenset | dict | MappingProxyType | list | tuple) or busy:
            ids = self.unit_ids
            for k in range(sl.start, sl.stop):
                if ids[k] in busy:
                    dot[k - sl.start] = -np.inf
        # first maximum: slots are in id order within a team, so exact ties (units at the
        # same base) go to the smallest id; the dot product resolves distances to ~mm
        k = int(dot.argmax())
        if dot[k] == -np.inf:
            return None
        s = sl.start + k
        fresh = bool(self._using[s])
        ulon, ulat = ((self._lon[s], self._lat[s]) if fresh
                      else (self._base_lon[s], self._base_lat[s]))
        d = _haversine1(lon, lat, float(ulon), float(ulat))
        t = float(self._at[s])
        src = "reported" if fresh else ("base" if math.isnan(t) else "stale")
        return s, d, src, (None if math.isnan(t) else max(0.0, now - t))

    def _pick(self, slot: int, dist: float, src: str, age: float | None, mutual: bool,
              routed: str | None, county: str | None) -> UnitPick:
        uid, team = self.unit_ids[slot], self._team[slot]
        steps = []
        if routed is not None and mutual:
            steps.append({"en": f"No unit of team {routed} is available → mutual aid from "
                                f"team {team} in the same county {county}",
                          "zh": f"{routed} 无可用力量 → 由同县 {county} 的 {team} 支援"})
        src_en = {"reported": "its last reported position",
                  "stale": f"its team base (last position {age:,.0f} s old, over "
                           f"{self.position_max_age_s:,.0f} s)" if age is not None else "",
                  "base": "its team base (it never reported a position)"}[src]
        steps.append({"en": f"Nearest available unit {uid}, {dist:,.0f} m away by "
                            f"{src_en}",
                      "zh": f"最近的可用力量 {uid}，距离 {dist:,.0f} 米（{_SOURCE_ZH[src]}）"})
        return UnitPick(unit=uid, team=team, mutual_aid=mutual, distance_m=dist,
                        explanation={"position": src, "age_s": age,
                                     "max_age_s": self.position_max_age_s,
                                     "distance_m": round(dist, 1), "mutual_aid": mutual,
                                     "routed_team": routed, "county": county, "steps": steps})

    def recommend(self, team_id: str, lon: float, lat: float, now: float,
                  busy: Container[str] = frozenset()) -> UnitPick | None:
        """The nearest available unit of ``team_id``; else county mutual aid; else None.

        Mutual aid (contract §2.5) only draws on teams whose region lies in the same county as
        the routed team's region, never another county's and never the city's.
        """
        sl = self._by_team.get(team_id)
        if sl is not None:
            hit = self._nearest_in_slice(sl, lon, lat, now, busy)
            if hit is not None:
                return self._pick(*hit, False, team_id, None)
        team = self.dataset.teams.get(team_id)
        if team is None:
            return None
        county = self.dataset.county_of(team.region)
        if county is None:
            return None
        pool = self._by_county.get(county, self._empty)
        pool = self._available(pool[self._team_code[pool] != self._codes[team_id]], busy)
        if not len(pool):
            return None
        s, d, src, age = self._nearest(pool, lon, lat, now)[0]
        return self._pick(s, d, src, age, True, team_id, county)

    def nearby(self, lon: float, lat: float, now: float, busy: Container[str] = frozenset(),
               n: int = 5) -> list[UnitPick]:
        """The ``n`` nearest available units of any team (for an operator choosing by hand)."""
        pool = self._available(np.arange(len(self.unit_ids), dtype=np.int64), busy)
        return [self._pick(s, d, src, age, False, None, None)
                for s, d, src, age in self._nearest(pool, lon, lat, now, n)]
