"""The request bodies, described once (contract §3, §8): ``Intake``, ``Action``, ``Position``,
``Transfer``, ``Accept``, ``Return``.

Each ``msgspec.Struct`` here is the single description of its shape: ``validation.py``
converts a parsed body into it (types, required fields, lengths and ranges are checked in C),
the handlers get its fields, and ``openapi.py`` publishes ``components()`` as the request-body
schemas. What a JSON Schema cannot say stays in ``validation.py``: bad characters and
oversized integers anywhere in the body (``check_values``), a category the policy knows,
the coordinate conversion, and client times bounded by the clock.

``None`` stands for "not given" on every optional field, as it always has at this door.
Unknown keys are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from geo.coords import CRSS

MAX_DESCRIPTION = 2000
MAX_ACCURACY_M = 100_000.0

Lon = Annotated[float, Meta(ge=-180, le=180)]
Lat = Annotated[float, Meta(ge=-90, le=90)]
# Case-insensitive in geo.coords.to_wgs84, so not a closed enum here: the schema lists the
# names and the conversion refuses the others naming the field.
Crs = Annotated[str, Meta(extra_json_schema={"enum": list(CRSS)})]
# A client time (contract §3 Bounds): ISO 8601 with offset, or epoch seconds; the bounds
# depend on the clock and are checked by validation.client_time.
ClientTime = Annotated[
    Annotated[str, Meta(extra_json_schema={"format": "date-time"})] | float,
    Meta(description="between 2000-01-01 and now + offline.max_skew_s"),
]


def _text(n: int) -> Any:
    return Annotated[str, Meta(max_length=n)]


class Location(Struct, kw_only=True):
    lon: Lon
    lat: Lat
    crs: Crs = "wgs84"


class Intake(Struct, kw_only=True):
    """``POST /api/v1/events``."""

    location: Location
    category: _text(64)
    description: _text(MAX_DESCRIPTION) | None = None
    source: _text(64) | None = None
    priority: Annotated[int, Meta(ge=1, le=3)] | None = None
    external_id: _text(128) | None = None
    reporter: dict[str, Any] | None = None
    reported_at: ClientTime | None = None


class Action(Struct, kw_only=True):
    """``POST /api/v1/events/{id}/{action}`` and the WebSocket ``action`` message."""

    at: ClientTime | None = None
    unit: _text(64) | None = None
    team: _text(64) | None = None
    note: _text(MAX_DESCRIPTION) | None = None


class Position(Struct, kw_only=True):
    """``PUT /api/v1/units/{id}/position``."""

    lon: Lon
    lat: Lat
    crs: Crs = "wgs84"
    accuracy_m: Annotated[float, Meta(ge=0, le=MAX_ACCURACY_M)] | None = None
    at: ClientTime | None = None


# Text that says something: at least one character that is not white space.
Reason = Annotated[str, Meta(min_length=1, max_length=MAX_DESCRIPTION, pattern=r"\S")]


class Transfer(Struct, kw_only=True):
    """``POST /api/v1/events/{id}/transfer`` (contract §8): to which department, and why."""

    department: Annotated[str, Meta(min_length=1, max_length=64)]
    note: Reason


class Accept(Struct, kw_only=True):
    """``POST /api/v1/events/{id}/accept`` (contract §8): the department takes the case."""

    note: _text(MAX_DESCRIPTION) | None = None


class Return(Struct, kw_only=True):
    """``POST /api/v1/events/{id}/return`` (contract §8): the department sends it back; why."""

    note: Reason


class Redeliver(Struct, kw_only=True):
    """``POST /api/v1/webhooks/{id}/redeliver`` (contract v2 §8)."""

    from_seq: Annotated[int, Meta(ge=1, description="send again every message from this seq")]


REQUEST_BODIES: tuple[type[Struct], ...] = (Intake, Action, Position, Redeliver, Transfer,
                                              Accept, Return)


def components(ref_template: str = "#/components/schemas/{name}") -> dict[str, Any]:
    """JSON Schemas of the request bodies (and what they refer to), keyed by name."""
    _, defs = msgspec.json.schema_components(REQUEST_BODIES, ref_template=ref_template)
    return defs
