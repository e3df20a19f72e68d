"""The port the engine routes through; the geo adapter (dispatch/routing.py) implements it."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Routing:
    """Where an event belongs (contract §2): the team and the regions around the point."""

    team: str | None
    team_level: str | None
    grid: str | None
    township: str | None
    county: str | None
    city: str | None
    zone: str | None
    snapped_m: float | None
    explanation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitPick:
    """The recommended unit; ``team`` is the unit's own team (differs under mutual aid)."""

    unit: str
    team: str
    mutual_aid: bool
    distance_m: float
    explanation: dict[str, Any] = field(default_factory=dict)


class RoutingPort(Protocol):
    """What the engine needs from geography."""

    def route(self, lon: float, lat: float) -> Routing:
        """Route a WGS84 point; raises ``OutsideJurisdictionError``."""
        ...

    def recommend(self, team: str, lon: float, lat: float, now: float,
                  busy: Container[str]) -> UnitPick | None:
        """The nearest available unit for ``team`` (mutual aid allowed), or None."""
        ...

    def unit_team(self, unit: str) -> str | None:
        """The team of a unit, or None if the unit is unknown."""
        ...

    def team_level(self, team: str) -> str | None:
        """The level (township/county/city) of a team, or None if unknown."""
        ...
