"""REST handlers under ``/api/v1`` (contract §3, docs/api.md).

Scope (contract §6): an event, unit or team outside the caller's scope answers 404 with the
same body as an unknown id, so ids cannot be probed; a refusal because of the caller's role
(an intake token reading events, a field unit cancelling) answers 403 whatever the id.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from dispatch.core.errors import NotFoundError
from dispatch.routing import pick_to_dict
from dispatch.server import stats, validation
from dispatch.server.app import STATE, State, json_response, principal_of
from dispatch.server.auth import EVENT_PATH_KEYS, Principal
from dispatch.server.render import iso, unit_json
from dispatch.server.validation import ACTIONS, ApiError

FIELD_ACTIONS = ("respond", "depart", "arrive", "resolve")
V1 = "/api/v1"


def forbid(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def no_event(event_id: str) -> NotFoundError:
    """What an unknown event id answers; an event outside the caller's scope answers the
    same (the engine's own message for an unknown id)."""
    return NotFoundError(f"no event {event_id!r}")


def no_unit(unit_id: str, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", f"no unit {unit_id!r}", field)


def caller_id(p: Principal) -> str:
    """The opaque id under which a token's duplicate keys are kept (contract §3).

    Derived from the token's digest one way (the digest cannot be recovered from it) and
    stored on the events the token creates as ``caller``, which is never rendered.
    """
    return hashlib.sha256(b"caller:" + p.digest.encode("utf-8")).hexdigest()[:16]


def _bounds(state: State) -> dict[str, Any]:
    """The keyword arguments that bound client times at the door (contract §3)."""
    return {"now": state.clock.now(),
            "max_skew_s": float(state.config["offline"]["max_skew_s"])}


async def read_json(request: web.Request, state: State, optional: bool = False) -> Any:
    """The request body as JSON, or a 4xx naming what is wrong with it."""
    if optional and not request.body_exists:
        return None
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json",
                       "Content-Type")
    limit = int(state.config["limits"]["max_body_bytes"])
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"body is larger than {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"body is larger than {limit} bytes") from None
    if optional and not body.strip():
        return None
    return validation.parse_json(body, int(state.config["limits"]["max_json_depth"]))


# -- shared by HTTP and WebSocket -----------------------------------------------------------
def get_event(state: State, p: Principal, event_id: str) -> dict[str, Any]:
    """The event, if ``p`` may read it; else 404, the same as an unknown id."""
    ev = state.runtime.engine.get(event_id)
    if not p.can_read_event(ev):
        raise no_event(event_id)
    return ev


def check_actor(p: Principal) -> None:
    """403 for a role that acts on no event (before any id is looked up)."""
    if p.role not in ("operator", "field", "admin"):
        raise forbid(f"a {p.role} token may not act on events")


def actable_event(state: State, p: Principal, event_id: str) -> dict[str, Any]:
    """The event ``p`` may act on: 403 for a role that never acts, 404 for an unknown id
    or one outside the caller's scope (a field unit: not assigned to it)."""
    check_actor(p)
    ev = get_event(state, p, event_id)
    if not p.can_act(ev):  # every role left acts on what it reads; kept as a guard
        raise no_event(event_id)
    return ev


def check_reassign(state: State, p: Principal, event_id: str, unit: str | None,
                   team: str | None) -> None:
    """A reassign names only units and teams the caller sees (contract §3 bounds): an
    unknown one and one outside the caller's region both answer 404 naming the field. A
    unit busy on an event the caller may not read is refused without naming that event."""
    ds = state.runtime.dataset
    if unit is not None:
        u = ds.units.get(unit)
        if u is None or not unit_visible(state, p, u.id, u.team):
            raise no_unit(unit, "unit")
        engine = state.runtime.engine
        holder = engine.busy_units().get(unit)
        if holder is not None and holder != event_id and not p.can_read_event(
                engine.get(holder)):
            raise ApiError(422, "invalid_field", f"unit {unit!r} is busy on another event",
                           "unit")
    if team is not None and (team not in ds.teams or not (
            p.sees_all() or p.region in state.team_paths.get(team, ()))):
        raise ApiError(404, "not_found", f"no team {team!r}", "team")


async def apply_action(state: State, p: Principal, event_id: str, action: str,
                       data: Any) -> dict[str, Any]:
    """Check role and scope, then carry out one lifecycle action."""
    if action not in ACTIONS:
        raise ApiError(404, "not_found", f"unknown action {action!r}")
    actable_event(state, p, event_id)
    body = validation.action_body(data, **_bounds(state))
    if p.role == "field" and action not in FIELD_ACTIONS:
        raise forbid(f"a field unit may not {action}")
    if action == "reassign":
        check_reassign(state, p, event_id, body["unit"], body["team"])
    out = await state.runtime.act(event_id, action, p.actor, **body)
    return state.render(out.event)


def apply_position(state: State, p: Principal, unit_id: str, data: Any) -> dict[str, Any]:
    """Record a unit's position and push it to the clients that see the unit."""
    ds = state.runtime.dataset
    if p.role not in ("operator", "field", "admin"):
        raise forbid(f"a {p.role} token may not report positions")
    unit = ds.units.get(unit_id)
    if unit is None or not unit_visible(state, p, unit_id, unit.team):
        raise no_unit(unit_id)  # out of scope answers as unknown (contract §6)
    path = state.team_paths.get(unit.team, frozenset())
    bounds = _bounds(state)
    body = validation.position(data, **bounds)
    now = bounds["now"]
    at = body["at"] if body["at"] is not None else now
    state.runtime.units.update_position(unit_id, body["lon"], body["lat"], at,
                                        accuracy_m=body["accuracy_m"])
    state.runtime.share_position(unit_id, body["lon"], body["lat"], at, body["accuracy_m"])
    out = unit_json(ds, state.runtime.units, state.runtime.engine.busy_units(), unit_id, now,
                    state.tz)
    state.hub.publish_unit(out, path)
    return out


def units_in_scope(state: State, p: Principal, narrow: str | None = None
                   ) -> tuple[str, ...]:
    """The ids of the units ``p`` may see (within ``narrow``), in data set order.

    Units and teams are fixed by the data set, so each scope is computed once and kept:
    a snapshot for one of a thousand reconnecting clients then costs its own units only.
    """
    units = state.runtime.dataset.units
    if p.role == "field" and not p.sees_all():  # its own unit: no walk over all of them
        u = units.get(p.unit or "")
        return ((u.id,) if u is not None and (
            narrow is None or narrow in state.team_paths.get(u.team, ())) else ())
    key = (p.role, p.region, p.unit, p.sees_all(), narrow)
    ids = state.unit_scopes.get(key)
    if ids is None:
        ids = tuple(uid for uid, u in units.items()
                    if unit_visible(state, p, uid, u.team)
                    and (narrow is None or narrow in state.team_paths.get(u.team, ())))
        state.unit_scopes[key] = ids
    return ids


def unit_visible(state: State, p: Principal, unit_id: str, team: str) -> bool:
    if p.sees_all():
        return True
    if p.role == "field":
        return p.unit == unit_id
    return p.region in state.team_paths.get(team, ())


# -- handlers -------------------------------------------------------------------------------
async def create_event(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    if p.role not in ("intake", "operator", "admin"):
        raise forbid(f"a {p.role} token may not create events")
    data = await read_json(request, state)
    fields = validation.intake(data, state.runtime.policy.categories, **_bounds(state))
    key = validation.idempotency_key(request.headers.get("Idempotency-Key"))
    if p.role == "operator" and p.region is not None:
        r = state.runtime.port.route(fields["location"]["lon"], fields["location"]["lat"])
        if p.region not in (r.grid, r.township, r.county, r.city):
            raise forbid("the event's location is outside your region")
    # duplicates are the caller's own (contract §3): its id keys them, and an event stored
    # before callers were recorded is matched only when the caller may read it
    fields["caller"] = caller_id(p)
    out = await state.runtime.create(fields, p.actor, idempotency_key=key,
                                     may_read=p.can_read_event)
    return json_response(state.render(out.event), status=201 if out.created else 200)


async def list_events(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    if p.role == "intake":
        raise forbid("an intake token may only create events")
    q = request.query
    statuses = set(q["status"].split(",")) if q.get("status") else None
    region, team = q.get("region"), q.get("team")
    since = validation.timestamp(dict(q), "since", "since")
    until = validation.timestamp(dict(q), "until", "until")
    breached = q.get("breached")
    if breached not in (None, "true", "false"):
        raise ApiError(422, "invalid_field", "breached must be true or false", "breached")
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise ApiError(422, "invalid_field", "limit must be an integer", "limit") from None
    if not 1 <= limit <= 1000:
        raise ApiError(422, "invalid_field", "limit must be 1..1000", "limit")
    cursor = q.get("cursor")
    out: list[dict[str, Any]] = []
    more = False
    for ev in sorted(state.runtime.engine.events(), key=lambda e: e["id"], reverse=True):
        if cursor is not None and ev["id"] >= cursor:
            continue
        if not p.can_read_event(ev):
            continue
        if statuses and ev.get("status") not in statuses:
            continue
        if region and not any(ev.get(k) == region for k in EVENT_PATH_KEYS):
            continue
        if team and ev.get("team") != team:
            continue
        created = ev.get("created_at") or 0.0
        if (since is not None and created < since) or (until is not None and created >= until):
            continue
        if breached is not None and bool(ev.get("breaches")) != (breached == "true"):
            continue
        if len(out) == limit:
            more = True
            break
        out.append(state.render(ev))
    for e in out:
        e.pop("timeline", None)
    return json_response({"events": out, "next": out[-1]["id"] if more else None})


async def get_event_handler(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    if p.role == "intake":
        raise forbid("an intake token may only create events")
    return json_response(state.render(get_event(state, p, request.match_info["id"])))


async def event_units(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    if p.role == "intake":
        raise forbid("an intake token may only create events")
    ev = get_event(state, p, request.match_info["id"])
    rt, now = state.runtime, state.clock.now()
    busy = rt.engine.busy_units()
    lon, lat = ev["location"]["lon"], ev["location"]["lat"]
    rec = rt.port.recommend(ev["team"], lon, lat, now, busy) if ev.get("team") else None
    if rec is not None and not unit_visible(state, p, rec.unit, rec.team):
        rec = None  # e.g. the event was sent to another county's team: not the caller's
    nearby = rt.units.nearby(lon, lat, now, busy, n=8)
    return json_response({
        "recommended": pick_to_dict(rec) if rec else None,
        "nearby": [pick_to_dict(n) for n in nearby
                   if unit_visible(state, p, n.unit, n.team)],
    })


async def act_handler(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    event_id = request.match_info["id"]
    actable_event(state, p, event_id)  # 403/404 before the body is read, as apply_action
    data = await read_json(request, state, optional=True)
    return json_response(await apply_action(state, p, event_id, request.match_info["action"],
                                            data))


async def categories(request: web.Request) -> web.Response:
    state = request.app[STATE]
    out = []
    for c in state.runtime.policy.categories.values():
        w = state.runtime.policy.windows(c.id, None)
        out.append({"id": c.id, "name": c.name, "priority": c.priority,
                    "timers": {"respond_s": w.respond_s, "depart_s": w.depart_s,
                               "arrive_s": w.arrive_s, "warn_fraction": w.warn_fraction}})
    return json_response({"categories": out})


async def put_position(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    data = await read_json(request, state)
    return json_response(apply_position(state, p, request.match_info["id"], data))


async def list_units(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    if p.role == "intake":
        raise forbid("an intake token may only create events")
    ds, now = state.runtime.dataset, state.clock.now()
    busy = state.runtime.engine.busy_units()
    team = request.query.get("team")
    out = [unit_json(ds, state.runtime.units, busy, uid, now, state.tz)
           for uid, u in ds.units.items()
           if (team is None or u.team == team) and unit_visible(state, p, uid, u.team)]
    return json_response({"units": out})


async def list_teams(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    ds = state.runtime.dataset
    out = []
    for tid, t in ds.teams.items():
        if not (p.sees_all() or p.region in state.team_paths.get(tid, ())
                or (p.role == "field" and ds.units.get(p.unit or "") is not None
                    and ds.units[p.unit or ""].team == tid)):
            continue
        out.append({"id": tid, "name": t.name, "level": t.level, "region": t.region,
                    "base": list(t.base), "units": [u.id for u in t.units]})
    return json_response({"teams": out})


async def regions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    level = request.query.get("level")
    if level is not None and level not in ("city", "county", "township", "grid"):
        raise ApiError(422, "invalid_field", "level must be city, county, township or grid",
                       "level")
    levels = [level] if level else ["county", "township"]
    return json_response(state.runtime.dataset.regions_geojson(levels=levels))


async def zones(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].runtime.dataset.zones_geojson())


def _stats_groups(request: web.Request) -> tuple[State, list[dict[str, Any]], str]:
    state, p = request.app[STATE], principal_of(request)
    if p.role not in ("operator", "supervisor", "admin"):
        raise forbid(f"a {p.role} token may not read statistics")
    q = request.query
    group_by = q.get("group_by", "township")
    if group_by not in stats.GROUPS:
        raise ApiError(422, "invalid_field", f"group_by must be one of {', '.join(stats.GROUPS)}",
                       "group_by")
    since = validation.timestamp(dict(q), "since", "since")
    until = validation.timestamp(dict(q), "until", "until")
    region = q.get("region")
    ds = state.runtime.dataset
    cats = state.runtime.policy.categories

    def names(kind: str, key: str) -> str:
        if kind in ("township", "county") and key in ds.regions:
            return str(ds.regions[key].name)
        if kind == "team" and key in ds.teams:
            return str(ds.teams[key].name)
        if kind == "zone" and key in ds.zones:
            return str(ds.zones[key].name)
        if kind == "category" and key in cats:
            return str(cats[key].name)
        return key

    evs = (ev for ev in state.runtime.engine.events()
           if p.can_read_event(ev)
           and (region is None or any(ev.get(k) == region for k in EVENT_PATH_KEYS)))
    groups = stats.response_times(evs, group_by, state.clock.now(), state.tz, names,
                                  since=since, until=until)
    return state, groups, group_by


async def response_times(request: web.Request) -> web.Response:
    _, groups, _ = _stats_groups(request)
    return json_response({"groups": groups})


async def export_stats(request: web.Request) -> web.Response:
    _, groups, group_by = _stats_groups(request)
    fmt = request.query.get("format", "csv")
    if fmt == "csv":
        return web.Response(body=stats.to_csv(groups), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition":
                                     f'attachment; filename="response-times-{group_by}.csv"'})
    if fmt == "xlsx":
        return web.Response(
            body=stats.to_xlsx(groups, group_by),
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition":
                     f'attachment; filename="response-times-{group_by}.xlsx"'})
    raise ApiError(422, "invalid_field", "format must be csv or xlsx", "format")


async def me(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    ds = state.runtime.dataset
    team = ds.units[p.unit].team if p.unit and p.unit in ds.units else None
    region_name = ds.regions[p.region].name if p.region and p.region in ds.regions else None
    return json_response({"role": p.role, "region": p.region, "region_name": region_name,
                          "unit": p.unit, "team": team, "name": p.name})


async def ui(request: web.Request) -> web.Response:
    state = request.app[STATE]
    u = state.config["ui"]
    return json_response({"tiles": u.get("tiles"), "center": u["center"], "zoom": u["zoom"],
                          "timezone": state.config["timezone"],
                          "server_time": iso(state.clock.now(), state.tz)})


ROUTES: list[tuple[str, str, Any]] = [
    ("POST", f"{V1}/events", create_event),
    ("GET", f"{V1}/events", list_events),
    ("GET", f"{V1}/events/{{id}}", get_event_handler),
    ("GET", f"{V1}/events/{{id}}/units", event_units),
    ("POST", f"{V1}/events/{{id}}/{{action}}", act_handler),
    ("GET", f"{V1}/categories", categories),
    ("PUT", f"{V1}/units/{{id}}/position", put_position),
    ("GET", f"{V1}/units", list_units),
    ("GET", f"{V1}/teams", list_teams),
    ("GET", f"{V1}/regions", regions),
    ("GET", f"{V1}/zones", zones),
    ("GET", f"{V1}/stats/response-times", response_times),
    ("GET", f"{V1}/stats/export", export_stats),
    ("GET", f"{V1}/me", me),
    ("GET", f"{V1}/ui", ui),
]


def add_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)


__all__ = ["add_routes", "apply_action", "apply_position", "NotFoundError"]
