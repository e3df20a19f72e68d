"""Who may see and do what (contract §6): every visibility and permission rule of the edge.

How it works: a principal's scope is a region, or for a field token its unit. It sees an
event when its region is on the event's region path (grid → township → county → city), a
unit or a team when its region is on the path of the team's region, and a region when that
region lies within its own (or is one of its own region's ancestors, drawn for context).
A field principal sees the events assigned to its unit (and the record that took one away
from it), its own unit and team, and the regions of its team's county. Admins and operators
or supervisors without a region see everything. A department principal (contract §8) sees
the events ever transferred to its department (``transferred_to``: the ones it answered
too, even after a return), answers only the one transferred to it now, and sees no unit,
team, region, zone or statistics.

REST, the WebSocket (snapshot, live fan-out, replay), statistics, exports and the regions
GeoJSON all ask these functions; the hub indexes clients by ``audience`` and a record by
``record_audiences`` so that its fan-out agrees with ``record_visible`` (a test checks it).
Outside the caller's scope answers as unknown (404), never as forbidden.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dispatch.core.lifecycle import ANSWERS
from dispatch.view import REGION_KEYS

ACTING_ROLES = ("operator", "field", "department", "admin")  # roles that act on events
READING_ROLES = ("operator", "supervisor", "field", "department", "admin")  # read events
STATS_ROLES = ("operator", "supervisor", "admin")
CREATING_ROLES = ("intake", "operator", "admin")
POSITION_ROLES = ("operator", "field", "admin")  # roles that report a unit's position
FIELD_ACTIONS = ("respond", "depart", "arrive", "resolve")

DOSSIER_ROLES = ("operator", "supervisor", "admin")  # who downloads an event's dossier
EVIDENCE_ROLES = ("operator", "field", "admin")  # who attaches evidence (contract §8)

# ("all", None) | ("region", id) | ("unit", id) | ("department", id)
Audience = tuple[str, str | None]
ALL: Audience = ("all", None)


@dataclass(frozen=True)
class Principal:
    """Who is calling: role plus region or unit (a token never appears here)."""

    role: str
    region: str | None
    unit: str | None
    name: str
    digest: str
    department: str | None = None  # a department token's (contract §8)

    @property
    def actor(self) -> str:
        """How the journal names this caller (never the token)."""
        return self.name


# -- events -----------------------------------------------------------------------------------
def sees_all(p: Principal) -> bool:
    return p.role == "admin" or (p.role in ("operator", "supervisor") and p.region is None)


def event_in_region(ev: Mapping[str, Any], region: str) -> bool:
    """Whether ``region`` is on the event's region path (the event lies within it)."""
    return any(ev.get(k) == region for k in REGION_KEYS)


def region_bound(p: Principal, narrow: str | None = None) -> str | None:
    """A region holding every event ``p`` may see (narrowed to ``narrow``), so a reader can
    look only at that region's events before ``event_visible``; None when there is none."""
    if narrow is not None:
        return narrow
    if p.role in ("operator", "supervisor") and p.region is not None:
        return p.region
    return None


def unit_bound(p: Principal) -> str | None:
    """The unit whose events are all ``p`` may see (a field token's), else None."""
    return p.unit if p.role == "field" else None


def event_visible(p: Principal, ev: Mapping[str, Any]) -> bool:
    """Whether ``p`` may read the event."""
    if sees_all(p):
        return True
    if p.role == "field":
        return p.unit is not None and ev.get("unit") == p.unit
    if p.role in ("operator", "supervisor") and p.region is not None:
        return event_in_region(ev, p.region)
    if p.role == "department":
        return p.department is not None and p.department in transferred_to(ev)
    return False


def transferred_to(ev: Mapping[str, Any]) -> list[str]:
    """Every department the event was ever transferred to (contract §8)."""
    deps = ev.get("transferred_to")
    return [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []


def holds_transfer(p: Principal, ev: Mapping[str, Any]) -> bool:
    """Whether ``p`` is the department the event is (or was last) transferred to: the only
    one that answers it (the lifecycle then allows it only while ``transferred``)."""
    return (p.role == "department" and p.department is not None
            and transfer_department(ev) == p.department)


def event_actable(p: Principal, ev: Mapping[str, Any]) -> bool:
    """Whether ``p`` may act on the event: an acting role that reads it."""
    return p.role in ACTING_ROLES and event_visible(p, ev)


def may_read_events(p: Principal) -> bool:
    """Whether ``p``'s role reads events at all (an intake token only creates them)."""
    return p.role != "intake"


def may_create(p: Principal) -> bool:
    return p.role in CREATING_ROLES


def may_read_stats(p: Principal) -> bool:
    return p.role in STATS_ROLES


def may_act_at_all(p: Principal) -> bool:
    """Whether ``p``'s role acts on any event (403 before any id is looked up)."""
    return p.role in ACTING_ROLES


def may_report_positions(p: Principal) -> bool:
    """Whether ``p``'s role reports unit positions (a department never does)."""
    return p.role in POSITION_ROLES


def may_take_action(p: Principal, action: str) -> bool:
    """A field unit only moves its own assignment along; a department only answers a
    transfer (accept, return); operators and admins do everything else (a department's
    answer is its own)."""
    if p.role == "field":
        return action in FIELD_ACTIONS
    if p.role == "department":
        return action in ANSWERS
    return action not in ANSWERS


# -- evidence (contract §8) -------------------------------------------------------------------
def may_attach_evidence(p: Principal) -> bool:
    """Roles that attach evidence at all (contract §8: the assigned unit, an operator in
    scope; and an admin); a supervisor, intake or department token gets 403 whatever the id."""
    return p.role in EVIDENCE_ROLES


def evidence_attachable(p: Principal, ev: Mapping[str, Any]) -> bool:
    """Who attaches evidence to an event: the unit it is assigned to (its field token), an
    operator whose region holds it, or an admin."""
    return may_attach_evidence(p) and event_visible(p, ev)


def evidence_readable(p: Principal, events: Iterable[Mapping[str, Any]]) -> bool:
    """A file is served to whoever may read one of the events that carry it."""
    return any(event_visible(p, ev) for ev in events)


def may_build_dossier(p: Principal) -> bool:
    """The dossier (legal review) goes to operators, supervisors and admins, for the events
    they read; a field unit or an intake token gets 403 whatever the id."""
    return p.role in DOSSIER_ROLES


def record_visible(p: Principal, after: Mapping[str, Any],
                   before: Mapping[str, Any] | None) -> bool:
    """Whether a journal record reaches ``p``: it reads the event as it is after the change,
    or, a field unit, the change took the event away from it."""
    if event_visible(p, after):
        return True
    return p.role == "field" and p.unit is not None and (before or {}).get("unit") == p.unit


def audience(p: Principal) -> Audience | None:
    """The one key a hub indexes a client of ``p`` under (None: it receives nothing)."""
    if sees_all(p):
        return ALL
    if p.role == "field":
        return ("unit", p.unit) if p.unit else None
    if p.role in ("operator", "supervisor") and p.region:
        return ("region", p.region)
    if p.role == "department" and p.department:
        return ("department", p.department)
    return None


def record_audiences(after: Mapping[str, Any], before: Mapping[str, Any] | None
                     ) -> set[Audience]:
    """Every audience a record reaches: ``audience(p)`` is in it iff ``record_visible``."""
    out: set[Audience] = {ALL}
    out.update(("region", str(after[k])) for k in REGION_KEYS if after.get(k))
    out.update(("department", d) for d in transferred_to(after))
    for unit in (after.get("unit"), (before or {}).get("unit")):
        if unit:
            out.add(("unit", str(unit)))
    return out


# -- Open311 GeoReport v2 (contract §8) -------------------------------------------------------
OPEN311_SOURCE = "open311"  # the source of the events that came in through /open311


def may_post_open311(p: Principal) -> bool:
    """Open311's ``api_key`` is an intake token (contract §8): no other role posts there."""
    return p.role == "intake"


def open311_public(ev: Mapping[str, Any]) -> bool:
    """Whether the public Open311 GETs show the event: only requests that came in through
    Open311 (and only their public fields, ``server/open311.py``), never another event."""
    return isinstance(ev, Mapping) and ev.get("source") == OPEN311_SOURCE

# -- webhooks (contract v2 §8) ----------------------------------------------------------------
def may_manage_webhooks(p: Principal) -> bool:
    """Only an admin reads a webhook's deliveries or asks for a redelivery."""
    return p.role == "admin"


def transfer_department(ev: Mapping[str, Any] | None) -> str | None:
    """The department an event is (or was last) transferred to: its ``transfer.department``."""
    t = (ev or {}).get("transfer")
    dept = t.get("department") if isinstance(t, Mapping) else None
    return dept if isinstance(dept, str) else None


def webhook_covers(source: str | None, region: str | None, departments: Iterable[str],
                   after: Mapping[str, Any], before: Mapping[str, Any] | None) -> bool:
    """Whether a change reaches a webhook: the event's ``source`` matches (any when None)
    and it lies inside ``region`` (anywhere when None); or the event is transferred to one
    of ``departments`` (those naming the webhook), from the transfer on: every later change
    of it too (``transferred_to`` keeps every department it went to), and the change that
    ends a transfer (``before`` still names the department)."""
    if (source is None or after.get("source") == source) and (
            region is None or event_in_region(after, region)):
        return True
    depts = departments if isinstance(departments, frozenset | set) else frozenset(departments)
    if not depts:
        return False
    return (transfer_department(after) in depts or transfer_department(before) in depts
            or not depts.isdisjoint(transferred_to(after)))


# -- units, teams, regions --------------------------------------------------------------------
class Dataset(Protocol):
    """What the scope rules read from the data set (geo.model.Dataset)."""

    @property
    def regions(self) -> Mapping[str, Any]: ...
    @property
    def teams(self) -> Mapping[str, Any]: ...
    @property
    def units(self) -> Mapping[str, Any]: ...

    def region_path(self, region_id: str) -> list[str]: ...


@dataclass
class Areas:
    """The region paths scope is judged on, fixed by the data set, computed once.

    ``team_paths[team]`` is the path of the team's region; unit scopes are cached per
    (principal scope, narrowing), so a snapshot for one of a thousand reconnecting clients
    costs its own units only.
    """

    dataset: Dataset
    team_paths: dict[str, frozenset[str]] = field(default_factory=dict)
    _unit_scopes: dict[tuple[Any, ...], tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.team_paths = {tid: frozenset(self.dataset.region_path(t.region))
                           for tid, t in self.dataset.teams.items()}

    def team_path(self, team: str) -> frozenset[str]:
        return self.team_paths.get(team, frozenset())

    def unit_path(self, unit_id: str) -> frozenset[str]:
        u = self.dataset.units.get(unit_id)
        return self.team_path(u.team) if u is not None else frozenset()


def unit_audiences(areas: Areas, unit_id: str) -> set[Audience]:
    """Every audience a unit's position reaches: ``audience(p)`` in it iff unit_visible."""
    out: set[Audience] = {ALL, ("unit", unit_id)}
    out.update(("region", r) for r in areas.unit_path(unit_id))
    return out


def unit_visible(areas: Areas, p: Principal, unit_id: str) -> bool:
    """Whether ``p`` sees the unit (a field token: its own; others: by its team's region)."""
    if unit_id not in areas.dataset.units:
        return False
    if sees_all(p):
        return True
    if p.role == "field":
        return p.unit == unit_id
    return p.region is not None and p.region in areas.unit_path(unit_id)


def unit_in_region(areas: Areas, unit_id: str, region: str | None) -> bool:
    return region is None or region in areas.unit_path(unit_id)


def units_in_scope(areas: Areas, p: Principal, narrow: str | None = None) -> tuple[str, ...]:
    """The ids of the units ``p`` may see (within ``narrow``), in data set order."""
    if p.role == "field" and not sees_all(p):  # its own unit: no walk over all of them
        uid = p.unit or ""
        return (uid,) if unit_visible(areas, p, uid) and unit_in_region(areas, uid, narrow) \
            else ()
    key = (p.role, p.region, p.unit, sees_all(p), narrow)
    ids = areas._unit_scopes.get(key)
    if ids is None:
        ids = tuple(uid for uid in areas.dataset.units
                    if unit_visible(areas, p, uid) and unit_in_region(areas, uid, narrow))
        areas._unit_scopes[key] = ids
    return ids


def team_in_scope(areas: Areas, p: Principal, team: str) -> bool:
    """Whether ``p`` sees the team (a field token: its own unit's team)."""
    if team not in areas.dataset.teams:
        return False
    if sees_all(p):
        return True
    if p.role == "field":
        u = areas.dataset.units.get(p.unit or "")
        return u is not None and u.team == team
    return p.region is not None and p.region in areas.team_path(team)


def region_in_scope(areas: Areas, p: Principal, region: str) -> bool:
    """Whether ``region`` lies within ``p``'s scope (a WebSocket may narrow to it)."""
    if region not in areas.dataset.regions:
        return False
    if sees_all(p):
        return True
    if p.role == "field" or p.region is None:
        return False
    return p.region in areas.dataset.region_path(region)


def home_region(areas: Areas, p: Principal) -> str | None:
    """The region whose map ``p`` is shown: its own; a field unit's, its team's county (or the
    team's region when that lies above county level); None for every other role."""
    if p.role == "field":
        u = areas.dataset.units.get(p.unit or "")
        t = areas.dataset.teams.get(u.team) if u is not None else None
        if t is None:
            return None
        path = areas.dataset.region_path(t.region)
        counties = [r for r in path if areas.dataset.regions[r].level == "county"]
        return counties[0] if counties else (path[0] if path else None)
    if p.role in ("operator", "supervisor"):
        return p.region
    return None


def region_shown(areas: Areas, p: Principal, region: str) -> bool:
    """Whether ``GET /regions`` gives ``p`` this region: everything to those who see all;
    else the regions within its home region plus that region's ancestors (outlines for
    context, no siblings); nothing to an intake token."""
    if region not in areas.dataset.regions:
        return False
    if sees_all(p):
        return True
    home = home_region(areas, p)
    if home is None:
        return False
    return home in areas.dataset.region_path(region) or region in areas.dataset.region_path(home)


def features_in_scope(areas: Areas, p: Principal, fc: Mapping[str, Any], *,
                      keep: Any) -> dict[str, Any]:
    """A FeatureCollection cut to the features for which ``keep(areas, p, properties)``."""
    if sees_all(p):
        return dict(fc)  # unchanged: every feature
    feats: Iterable[Mapping[str, Any]] = fc.get("features") or ()
    return {"type": "FeatureCollection",
            "features": [f for f in feats if keep(areas, p, f.get("properties") or {})]}


def region_feature_shown(areas: Areas, p: Principal, props: Mapping[str, Any]) -> bool:
    return region_shown(areas, p, str(props.get("id")))


def zone_feature_shown(areas: Areas, p: Principal, props: Mapping[str, Any]) -> bool:
    """A zone is shown when its team is in ``p``'s scope (as the ops page has always drawn)."""
    return team_in_scope(areas, p, str(props.get("team")))


def creates_only_in_region(p: Principal) -> bool:
    """Whether ``p``'s new events must lie in its region (an operator with a region)."""
    return p.role == "operator" and p.region is not None


def operator_may_create_at(p: Principal, route_path: Iterable[str | None]) -> bool:
    """An operator with a region creates events only inside it (``route_path``: the routed
    grid, township, county and city of the location)."""
    return not creates_only_in_region(p) or p.region in tuple(route_path)
