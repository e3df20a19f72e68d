"""REST handlers under ``/api/v1`` (contract §3, docs/api.md): parse, call, render.

Who may see what is ``scope.py``'s; the changes are ``commands.py``'s (shared with the
WebSocket); reads go to the runtime's committed view. Scope (contract §6): an event, unit or
team outside the caller's scope answers 404 with the same body as an unknown id, so ids cannot
be probed; a refusal because of the caller's role (an intake token reading events, a field
unit cancelling) answers 403 whatever the id. ``GET /regions`` and ``GET /zones`` give each
caller the regions and zones of its scope (``scope.region_shown``, ``scope.zone_feature_shown``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatch.core.event import Event
from dispatch.core.lifecycle import TRANSFER_ACTIONS
from dispatch.routing import pick_to_dict
from dispatch.server import scope, stats, validation
from dispatch.server.commands import check_reader, forbid
from dispatch.server.render import iso, unit_json
from dispatch.server.state import STATE, V1, State, json_response, principal_of, read_json
from dispatch.server.validation import ApiError


# -- handlers -------------------------------------------------------------------------------
async def create_event(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    state.commands.check_creator(p)  # 403 before the body is read
    data = await read_json(request, state)
    out = await state.commands.create(p, data, request.headers.get("Idempotency-Key"))
    assert out.event is not None  # created, or the caller's duplicate
    return json_response(state.render(out.event), status=201 if out.created else 200)


def _list_filters(q: Any) -> dict[str, Any]:
    """The query of ``GET /events``, checked (422 naming the parameter)."""
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
    return {"statuses": set(q["status"].split(",")) if q.get("status") else None,
            "region": q.get("region"), "team": q.get("team"),
            "since": since, "until": until,
            "breached": None if breached is None else breached == "true",
            "limit": limit, "cursor": q.get("cursor")}


def _listed(ev: Event, f: dict[str, Any]) -> bool:
    if f["cursor"] is not None and ev["id"] >= f["cursor"]:
        return False
    if f["statuses"] and ev.get("status") not in f["statuses"]:
        return False
    if f["region"] and not scope.event_in_region(ev, f["region"]):
        return False
    if f["team"] and ev.get("team") != f["team"]:
        return False
    created = ev.get("created_at") or 0.0
    if (f["since"] is not None and created < f["since"]) or (
            f["until"] is not None and created >= f["until"]):
        return False
    return f["breached"] is None or bool(ev.get("breaches")) == f["breached"]


async def list_events(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    check_reader(p)
    f = _list_filters(request.query)
    out: list[dict[str, Any]] = []
    more = False
    for ev in sorted(state.runtime.view.events(), key=lambda e: e["id"], reverse=True):
        if not (scope.event_visible(p, ev) and _listed(ev, f)):
            continue
        if len(out) == f["limit"]:
            more = True
            break
        out.append(state.render(ev))
    for e in out:
        e.pop("timeline", None)
    return json_response({"events": out, "next": out[-1]["id"] if more else None})


async def get_event_handler(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    check_reader(p)
    return json_response(state.render(state.commands.readable_event(p, request.match_info["id"])))


async def event_units(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    check_reader(p)
    ev = state.commands.readable_event(p, request.match_info["id"])
    rt, areas, now = state.runtime, state.areas, state.clock.now()
    busy = rt.view.busy_units()
    lon, lat = ev["location"]["lon"], ev["location"]["lat"]
    team = ev["team"]
    rec = rt.port.recommend(team, lon, lat, now, busy) if team else None
    if rec is not None and not scope.unit_visible(areas, p, rec.unit):
        rec = None  # e.g. the event was sent to another county's team: not the caller's
    nearby = rt.units.nearby(lon, lat, now, busy, n=8)
    return json_response({
        "recommended": pick_to_dict(rec) if rec else None,
        "nearby": [pick_to_dict(n) for n in nearby if scope.unit_visible(areas, p, n.unit)],
    })


async def act_handler(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    event_id = request.match_info["id"]
    state.commands.actable_event(p, event_id)  # 403/404 before the body is read
    data = await read_json(request, state, optional=True)
    # /events/{id}/{action}, or one of the transfer routes (contract §8: their own paths)
    action = request.match_info.get("action") or request.path.rsplit("/", 1)[-1]
    ev = await state.commands.act(p, event_id, action, data)
    return json_response(state.render(ev))


async def departments(request: web.Request) -> web.Response:
    """Contract §8: the departments events may be transferred to (id and name only)."""
    state, p = request.app[STATE], principal_of(request)
    check_reader(p)
    return json_response({"departments": [{"id": d["id"], "name": d["name"]}
                                          for d in state.config.departments]})


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
    return json_response(state.commands.position(p, request.match_info["id"], data))


async def list_units(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    check_reader(p)
    rt, now = state.runtime, state.clock.now()
    busy = rt.view.busy_units()
    team = request.query.get("team")
    out = [unit_json(rt.dataset, rt.units, busy, uid, now, state.tz)
           for uid in scope.units_in_scope(state.areas, p)
           if team is None or rt.dataset.units[uid].team == team]
    return json_response({"units": out})


async def list_teams(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    out = [{"id": tid, "name": t.name, "level": t.level, "region": t.region,
            "base": list(t.base), "units": [u.id for u in t.units]}
           for tid, t in state.runtime.dataset.teams.items()
           if scope.team_in_scope(state.areas, p, tid)]
    return json_response({"teams": out})


async def regions(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    level = request.query.get("level")
    if level is not None and level not in ("city", "county", "township", "grid"):
        raise ApiError(422, "invalid_field", "level must be city, county, township or grid",
                       "level")
    levels = [level] if level else ["county", "township"]
    fc = state.runtime.dataset.regions_geojson(levels=levels)
    return json_response(scope.features_in_scope(state.areas, p, fc,
                                                 keep=scope.region_feature_shown))


async def zones(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    fc = state.runtime.dataset.zones_geojson()
    return json_response(scope.features_in_scope(state.areas, p, fc,
                                                 keep=scope.zone_feature_shown))


def _stats_groups(request: web.Request) -> tuple[State, list[dict[str, Any]], str,
                                                 list[dict[str, Any]]]:
    state, p = request.app[STATE], principal_of(request)
    if not scope.may_read_stats(p):
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

    evs = [ev for ev in state.runtime.view.events()
           if scope.event_visible(p, ev)
           and (region is None or scope.event_in_region(ev, region))]
    groups = stats.response_times(evs, group_by, state.clock.now(), state.tz, names,
                                  since=since, until=until)
    # contract §8: transfers per department and their answer times, over the same events
    transfers = stats.transfers(evs, {d["id"]: d["name"] for d in state.config.departments},
                                since=since, until=until)
    return state, groups, group_by, transfers


async def response_times(request: web.Request) -> web.Response:
    _, groups, _, transfers = _stats_groups(request)
    return json_response({"groups": groups, "transfers": transfers})


async def export_stats(request: web.Request) -> web.Response:
    _, groups, group_by, _ = _stats_groups(request)
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
                          "unit": p.unit, "team": team, "name": p.name,
                          "department": p.department})


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
    # contract §8 移送: before the generic route, which would take them with its body
    *(("POST", f"{V1}/events/{{id}}/{a}", act_handler) for a in TRANSFER_ACTIONS),
    ("POST", f"{V1}/events/{{id}}/{{action}}", act_handler),
    ("GET", f"{V1}/departments", departments),
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
