"""Timer windows (contract §5) and categories, with per-category and per-zone overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from dispatch.core.errors import InvalidActionError


@dataclass(frozen=True)
class TimerWindows:
    """1/3/15: respond 60 s, depart 180 s, arrive 900 s from dispatch; warn at 20 % lead."""

    respond_s: float = 60.0
    depart_s: float = 180.0
    arrive_s: float = 900.0
    warn_fraction: float = 0.2

    def window(self, stage: str) -> float:
        """The window of ``stage`` (respond/depart/arrive) in seconds."""
        return float(getattr(self, f"{stage}_s"))

    def merged(self, overrides: dict[str, Any] | None) -> TimerWindows:
        """These windows with the known keys of ``overrides`` replaced."""
        if not overrides:
            return self
        names = {f.name for f in fields(self)}
        return replace(self, **{k: float(v) for k, v in overrides.items() if k in names})


@dataclass(frozen=True)
class Category:
    """An event category: default priority and partial timer overrides."""

    id: str
    name: str
    priority: int = 2
    timers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Policy:
    """All timing rules: zone overrides beat category overrides beat defaults."""

    defaults: TimerWindows = field(default_factory=TimerWindows)
    categories: dict[str, Category] = field(default_factory=dict)
    zones: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_skew_s: float = 30.0

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, str | None], TimerWindows] = {}

    def category(self, category: str) -> Category:
        """The category, or ``InvalidActionError(field="category")``."""
        try:
            return self.categories[category]
        except KeyError:
            raise InvalidActionError(f"unknown category {category!r}", "category") from None

    def windows(self, category: str, zone: str | None = None) -> TimerWindows:
        """The timer windows for an event of ``category`` in ``zone``."""
        key = (category, zone)
        w = self._cache.get(key)
        if w is None:
            cat = self.category(category)
            w = self.defaults.merged(cat.timers).merged(self.zones.get(zone) if zone else None)
            self._cache[key] = w
        return w
