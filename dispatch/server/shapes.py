"""The response bodies, described once: one ``msgspec.Struct`` per shape the API answers.

``openapi.py`` publishes ``components()`` as the document's response schemas (component name
= class name: ``Event``, ``EventSummary``, ``EventList``, ``Unit``, ``UnitList``, ``UnitPick``,
``EventUnits``, ``Categories``, ``Teams``, ``FeatureCollection``, ``Stats``, ``Me``, ``UI``,
``Health``, ``Error`` and what they refer to). ``tests/server/test_shapes.py`` decodes what a
real server renders into them with ``conforms`` (every key known, none missing, every value
kept), so ``render.py``/``api.py`` and this module cannot drift. The request bodies are
``schemas.py``'s.

The shapes describe what the server renders for the events it makes. A state stored by an
older version that ``render.py`` cannot make sense of is rendered with nulls (its last
resort) and is outside them.

Adding a field: add it here (with a ``Meta(description=...)``) and in the renderer, in one
commit; the test fails until both agree. A field sent only sometimes is ``X | UnsetType =
UNSET`` (not required in the document, omitted when absent); a field always sent but
possibly null is ``X | None`` with no default (required, nullable). Stage, status and tier
names come from ``dispatch/core/lifecycle.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from dispatch.core.lifecycle import STAGES, STATUSES, TIERS

REF_TEMPLATE = "#/components/schemas/{name}"

# -- the scalars -------------------------------------------------------------------------------
Time = Annotated[str, Meta(extra_json_schema={"format": "date-time"},
                           description="ISO 8601 with offset, in the configured time zone")]
Stage = Annotated[Literal[STAGES], Meta(description="a timer stage (contract §5: 1/3/15)")]
Status = Annotated[Literal[STATUSES], Meta(description="the event's status (contract §3)")]
Tier = Literal[TIERS]
# How the map colours an event (render.timer_state).
TimerState = Literal["on_time", "warning", "breached", "escalated", "transferred", "closed"]
# The roles a token can have; "department" is the §8 receiving department's.
Role = Literal["operator", "field", "supervisor", "intake", "department", "admin"]
Count = Annotated[int, Meta(ge=0)]


def _d(tp: Any, text: str) -> Any:
    """``tp`` with a description for the document."""
    return Annotated[tp, Meta(description=text)]


class Shape(Struct, kw_only=True):
    """Base of the response shapes (keyword-only fields, unknown keys ignored)."""


# -- the event ---------------------------------------------------------------------------------
class EventLocation(Shape):
    """Where the event is, in WGS84 (rounded to 7 decimals for display)."""

    lon: float
    lat: float
    crs: _d(str, "the reference system the point was given in") | UnsetType = UNSET
    original: _d(dict[str, Any], "the point as it was given") | UnsetType = UNSET


Deadlines = msgspec.defstruct(
    "Deadlines", [(s, _d(Time | None, f"when the {s} stage is due")) for s in STAGES],
    bases=(Shape,), kw_only=True, module=__name__)
Deadlines.__doc__ = "Each timer stage's deadline (null until dispatched)."


class NextDeadline(Shape):
    """The first stage not yet done while the event is open."""

    stage: Stage
    at: Time


class Escalation(Shape):
    """One raise of the tier: by a breach of a stage, or by hand."""

    at: Time | None
    from_: Tier = msgspec.field(name="from")
    to: Tier
    stage: _d(Stage | None, "the stage whose breach raised it; null when by hand")
    manual: bool


class TimelineEntry(Shape):
    """One step of the event's history (contract §3 timeline)."""

    at: _d(Time | None, "when it happened (the client's time for actions queued offline)")
    received_at: _d(Time | None, "when the server took it")
    action: _d(str, "what happened, past tense (created, dispatched, responded, ...)")
    actor: _d(str | None, "who did it (a token's name, or system)")
    from_: Status | None = msgspec.field(name="from")
    to: Status | None
    note: _d(str | None, "the action's note; for timer records the stage")
    evidence: _d(str, "an `attached` entry: the SHA-256 of the file it added") | UnsetType = (
        UNSET)
    department: _d(str, "a `transferred`, `accepted` or `returned` entry: the department") | (
        UnsetType) = UNSET


class Evidence(Shape):
    """One evidence file of an event (contract §8): its SHA-256 is in the journal's chain."""

    id: str
    sha256: Annotated[str, Meta(pattern="^[0-9a-f]{64}$", description="hex SHA-256 of the bytes")]
    size: Annotated[int, Meta(ge=1, description="bytes")]
    type: _d(str, "the media type (image/jpeg, image/png, video/mp4, application/pdf)")
    name: _d(str, "the file name it was uploaded under")
    at: _d(Time | None, "when it was taken (the phone's time for files queued offline)")
    actor: _d(str, "who uploaded it")
    received_at: _d(Time | None, "when the server stored it")
    url: _d(str | None, "where its bytes are served")


class EventTransfer(Shape):
    """The event's transfer to another department (移送, contract §8)."""

    department: str
    at: _d(Time | None, "when it was transferred")
    actor: _d(str | None, "the operator who transferred it")
    note: _d(str | None, "why")
    answer: _d(Literal["accepted", "returned"] | None, "the department's answer, if any")
    answered_at: Time | None
    answer_note: _d(str | None, "the department's note with its answer")


class EventSummary(Shape):
    """An event as clients see it, without its timeline (as listed)."""

    id: str
    status: Status
    tier: _d(Tier | None, "who holds it now (contract §3)")
    category: str
    description: str | None
    source: _d(str | None, "who reported it (hotline, grid, api, ...)")
    priority: _d(int | None, "1 (most urgent) to 3")
    external_id: _d(str | None, "the reporting system's id")
    reporter: dict[str, Any] | None
    location: EventLocation
    grid: str | None
    township: str | None
    county: str | None
    city: str | None
    zone: str | None
    team: _d(str | None, "the team it is dispatched to")
    unit: _d(str | None, "the unit it is dispatched to")
    mutual_aid: _d(bool, "the unit is not of the event's team")
    routing: _d(dict[str, Any], "why it went where it went: rule, steps [{en, zh}], "
                "snapped_m, and the unit pick's explanation")
    breaches: _d(list[Stage], "stages whose deadline passed before they were done")
    version: _d(int, "how many changes the event has had")
    seq: _d(int | None, "the journal position of its last change")
    created_at: Time | None
    dispatched_at: Time | None
    responded_at: Time | None
    departed_at: Time | None
    arrived_at: Time | None
    resolved_at: Time | None
    cancelled_at: Time | None
    updated_at: Time | None
    reported_at: _d(Time | None, "when the reporter says the report was made")
    deadlines: Deadlines  # type: ignore[valid-type]
    next_deadline: NextDeadline | None
    timer_state: _d(TimerState, "how the map colours it")
    escalations: list[Escalation]
    evidence: _d(list[Evidence], "the files attached, oldest first")
    transfer: _d(EventTransfer | None, "its transfer to another department, if any")


class Event(EventSummary):
    """An event as clients see it, with its full timeline."""

    timeline: list[TimelineEntry]


class EventList(Shape):
    """A page of events in scope, newest first."""

    events: list[EventSummary]
    next: _d(str | None, "the cursor of the next page, null on the last")


# -- units and teams ---------------------------------------------------------------------------
class Unit(Shape):
    """A unit with its position (reported, stale or base) and availability."""

    id: str
    name: str
    kind: str
    team: str
    lon: float
    lat: float
    at: _d(Time | None, "when the position was reported; null for the base")
    age_s: _d(float | None, "how old the reported position is")
    accuracy_m: float | None
    source: _d(Literal["reported", "base", "stale"],
               "reported, or the base because none was reported or it is stale")
    available: _d(bool, "not busy on an event")
    event: _d(str | None, "the event it is busy on")


class UnitList(Shape):
    """Units in scope."""

    units: list[Unit]


class UnitPick(Shape):
    """A unit recommended for an event, how far it is and why."""

    unit: str
    team: _d(str, "the unit's own team (differs under mutual aid)")
    mutual_aid: bool
    distance_m: float
    explanation: dict[str, Any]


class EventUnits(Shape):
    """The recommended unit and the nearby ones, in the caller's scope."""

    recommended: UnitPick | None
    nearby: list[UnitPick]


class Team(Shape):
    """A team, where it is based and its units."""

    id: str
    name: str
    level: str
    region: str
    base: _d(list[float], "[lon, lat]")
    units: list[str]


class Teams(Shape):
    """Teams in scope."""

    teams: list[Team]


# -- categories --------------------------------------------------------------------------------
CategoryTimers = msgspec.defstruct(
    "CategoryTimers",
    [*((f"{s}_s", _d(float, f"seconds from dispatch to the {s} deadline")) for s in STAGES),
     ("warn_fraction", _d(float, "the warning comes this fraction of a window early"))],
    bases=(Shape,), kw_only=True, module=__name__)
CategoryTimers.__doc__ = "A category's timer windows (contract §5)."


class Category(Shape):
    """An event category."""

    id: str
    name: str
    priority: int
    timers: CategoryTimers  # type: ignore[valid-type]


class Categories(Shape):
    """Event categories and their timers."""

    categories: list[Category]


# -- regions and zones -------------------------------------------------------------------------
class Feature(Shape):
    """A region or zone, simplified for display."""

    type: Literal["Feature"]
    id: str
    geometry: dict[str, Any]
    properties: dict[str, Any]


class FeatureCollection(Shape):
    """GeoJSON, in the caller's scope."""

    type: Literal["FeatureCollection"]
    features: list[Feature]


# -- statistics --------------------------------------------------------------------------------
class StageStats(Shape):
    """One stage's response times in a group."""

    counted: _d(Count, "events for which the stage was done or its deadline passed")
    p50_s: float | None
    p90_s: float | None
    max_s: float | None
    within_pct: _d(float | None, "percent done by the deadline")


StatsGroup = msgspec.defstruct(
    "StatsGroup",
    [("key", str), ("name", str), ("count", Count), *((s, StageStats) for s in STAGES)],
    bases=(Shape,), kw_only=True, module=__name__)
StatsGroup.__doc__ = "Response-time compliance of one group."


class AnswerTimes(Shape):
    """Seconds from a transfer to the department's answer."""

    p50_s: float | None
    p90_s: float | None
    max_s: float | None


class DepartmentTransfers(Shape):
    """One department's transfers (contract §8): how many, how answered, how fast."""

    department: str
    name: str
    count: Count
    accepted: Count
    returned: Count
    pending: _d(Count, "not answered yet")
    cancelled: _d(Count, "withdrawn: cancelled while transferred")
    answer: AnswerTimes


class DepartmentRef(Shape):
    """A department events may be transferred to."""

    id: str
    name: str


class Departments(Shape):
    """The departments events may be transferred to (``GET /departments``)."""

    departments: list[DepartmentRef]


class Stats(Shape):
    """Response-time compliance per group."""

    groups: list[StatsGroup]  # type: ignore[valid-type]
    transfers: _d(list[DepartmentTransfers], "per department: transfers and answer times")


# -- who, the map, health, errors --------------------------------------------------------------
class Me(Shape):
    """Who the token is."""

    role: Role
    region: str | None
    region_name: str | None
    unit: str | None
    team: _d(str | None, "a field unit's team")
    name: str
    department: _d(str | None, "a department token's department")


class UI(Shape):
    """Map settings for the pages."""

    tiles: _d(dict[str, Any] | None, "{url, attribution, crs}, or null for the default")
    center: _d(list[float], "[lon, lat]")
    zoom: float
    timezone: str
    server_time: Time


class Health(Shape):
    """Health: ok with the journal head, or failing with the reason."""

    status: Literal["ok", "failing"]
    reason: _d(str, "why the store cannot be written (failing only)") | UnsetType = UNSET
    seq: _d(int, "the journal head (ok only)") | UnsetType = UNSET
    events: _d(int, "open events (ok only)") | UnsetType = UNSET
    ws_clients: _d(int, "connected sockets (ok only)") | UnsetType = UNSET


class ErrorDetail(Shape):
    """What went wrong, naming the field (contract §3)."""

    code: str
    message: str
    field: _d(str | None, "the field or parameter at fault, if one is")
    status: _d(Status, "the event's current status (409 only)") | UnsetType = UNSET
    retry_after_s: _d(float, "when to retry (429 only)") | UnsetType = UNSET


class Error(Shape):
    """Every 4xx/5xx body."""

    error: ErrorDetail


# -- webhooks (contract §8) -------------------------------------------------------------------
class Retrying(Shape):
    """The message a webhook is retrying now."""

    seq: int
    attempts: Count
    last_error: str | None
    last_attempt_at: Time | None
    next_attempt_at: Time | None


class PendingDelivery(Shape):
    """One covered change not yet answered 2xx."""

    seq: int
    delivery: _d(str, "the X-Dispatch-Delivery id (kept across retries)")
    type: _d(str, "the §4 message type")
    action: str
    event: str
    at: Time | None
    age_s: _d(float, "how long since the change")
    attempts: Count
    last_error: str | None
    last_attempt_at: Time | None
    next_attempt_at: Time | None


class Deliveries(Shape):
    """A webhook's progress: its cursor, what it is retrying, what is pending."""

    webhook: str
    url: str
    source: str | None
    region: str | None
    departments: _d(list[str], "departments whose transferred events it also receives")
    cursor: _d(int, "every covered message up to this seq was answered 2xx")
    last_delivered_seq: int | None
    journal_seq: int
    retrying: Retrying | None
    pending: list[PendingDelivery]
    more: _d(bool, "more are pending than listed (or the scan stopped)")
    oldest_pending_age_s: float | None


# The shapes the document's responses name; what they refer to comes with them.
RESPONSES: tuple[type[Struct], ...] = (
    Event, EventSummary, EventList, Unit, UnitList, UnitPick, EventUnits, Categories, Teams,
    FeatureCollection, Stats, Me, UI, Health, Error, Evidence, Deliveries, Departments)


def components(ref_template: str = REF_TEMPLATE) -> dict[str, Any]:
    """JSON Schemas of the response bodies (and what they refer to), keyed by name."""
    _, defs = msgspec.json.schema_components(RESPONSES, ref_template=ref_template)
    return defs


def conforms(shape: Any, data: Any) -> Any:
    """``data`` (parsed JSON) as ``shape``; raises ``ValueError`` naming the path unless the
    shape holds it exactly: no key it does not know, none it requires missing, every value
    of the right type and kept as it was (``msgspec.ValidationError`` is a ``ValueError``)."""
    out = msgspec.convert(data, shape)
    again = msgspec.to_builtins(out)
    where = _first_difference(data, again, "$")
    if where is not None:
        raise ValueError(f"{shape.__name__} does not hold {where}")
    return out


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a.keys() | b.keys():
            if k not in b:
                return f"{path}.{k} (a key the shape does not know)"
            if k not in a:
                return f"{path}.{k} (in the shape, not in the answer)"
            found = _first_difference(a[k], b[k], f"{path}.{k}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b and type(a) is type(b) or _same_number(a, b) else f"{path}: {a!r}"


def _same_number(a: Any, b: Any) -> bool:
    return (isinstance(a, int | float) and isinstance(b, int | float)
            and not isinstance(a, bool) and not isinstance(b, bool) and a == b)
