"""The event's state as a type: every key the engine keeps, and what each holds; and the
report an intake brings (``Report``: what the door hands ``Engine.create``).

The engine keeps each event as a plain dict (a new one per change, never mutated once
sealed) because the journal, the committed view, the renderer and the webhooks all pass it
on as JSON-able data; ``Event`` says which keys that dict has. mypy checks every use in the
modules listed in ``pyproject.toml`` (``tests/test_types.py`` runs it), and
``tests/core/test_stateful.py`` checks every state the engine makes, replays or rolls back to
against it at run time (``msgspec.convert``, no key missing, none unknown).

Names the lifecycle owns (statuses, stages, tiers) are ``str`` here: they are defined once,
in ``lifecycle.py``; ``deadlines`` and ``warn_at`` are keyed by its ``STAGES``.
Keys marked ``NotRequired`` appear later in an event's life (``transfer``) or are missing
from events journaled before they existed (``evidence``: ``records.LATER_LISTS``).
"""

# No ``from __future__ import annotations`` here: ``NotRequired`` must be seen when the
# classes are made (``__required_keys__``), not left as a string.
from typing import Any, NotRequired, TypedDict


class Point(TypedDict):
    """Where it happened: WGS84 as routed, and the coordinates as the client sent them."""

    lon: float
    lat: float
    crs: str
    original: dict[str, float]


class Routing(TypedDict):
    """Why this team and this unit: ``geo``'s explanations, kept for the record."""

    route: dict[str, Any]
    snapped_m: float | None
    unit: dict[str, Any] | None
    distance_m: NotRequired[float | None]  # set by the first dispatch


# "from" is a keyword: the functional form
TimelineEntry = TypedDict("TimelineEntry", {
    "at": float,            # when it happened (a phone's offline time, bounded)
    "received_at": float,   # when the server took it
    "action": str,          # the record's action (past tense)
    "actor": str,
    "from": str | None,     # status before
    "to": str | None,       # status after
    "note": str | None,
    "department": NotRequired[str],  # transfer, accept, return (contract §8)
    "evidence": NotRequired[str],    # attached: the file's SHA-256
})

Escalation = TypedDict("Escalation", {
    "at": float, "from": str | None, "to": str, "stage": str | None, "manual": bool,
})


class Evidence(TypedDict):
    """A stored file on the event (contract §8); its bytes are kept by SHA-256."""

    id: str
    sha256: str
    size: int
    type: str
    name: str
    at: float           # taken
    received_at: float
    actor: str


class Transfer(TypedDict):
    """The event's current transfer to another department (contract §8, 移送)."""

    department: str
    at: float
    actor: str
    note: str | None
    answer: str | None          # lifecycle.ANSWER_OF's values once answered
    answered_at: float | None
    answer_note: str | None


class Report(TypedDict):
    """What an intake brings (contract §3), checked at the door: ``Engine.create`` takes it."""

    location: Point
    category: str
    description: str
    source: str
    priority: int | None        # None: the category's
    external_id: str | None
    reporter: dict[str, Any] | None
    reported_at: float | None
    caller: NotRequired[str | None]  # the creating token's opaque id (duplicates are its own)


class Event(TypedDict):
    """One event's full state (epoch seconds for every time)."""

    id: str
    status: str
    tier: str | None
    category: str
    description: str
    source: str | None
    priority: int
    external_id: str | None
    idempotency_key: str | None
    caller: str | None          # an opaque id of the creating token; never rendered
    location: Point
    reporter: dict[str, Any] | None
    reported_at: float | None
    # where (contract §2): the region path and the zone
    grid: str | None
    township: str | None
    county: str | None
    city: str | None
    zone: str | None
    # who
    team: str | None
    unit: str | None
    mutual_aid: bool
    routing: Routing
    # when
    created_at: float
    dispatched_at: float | None
    responded_at: float | None
    departed_at: float | None
    arrived_at: float | None
    resolved_at: float | None
    cancelled_at: float | None
    # the 1/3/15 clocks of the current dispatch, by stage
    deadlines: dict[str, float | None]
    warn_at: dict[str, float | None]
    fired: list[str]            # "stage:kind" fired since the current dispatch
    breaches: list[str]         # stages breached, ever
    # append-only lists (records carry what was appended: records.APPEND_ONLY)
    escalations: list[Escalation]
    evidence: NotRequired[list[Evidence]]
    timeline: list[TimelineEntry]
    # contract §8
    transfer: NotRequired[Transfer]
    transferred_to: NotRequired[list[str]]
    # the journal's bookkeeping
    version: int
    seq: int
    updated_at: float


__all__ = ["Escalation", "Event", "Evidence", "Point", "Report", "Routing", "TimelineEntry",
           "Transfer"]
