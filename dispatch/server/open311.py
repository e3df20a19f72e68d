"""Open311 GeoReport v2 under ``/open311/v2`` (contract §8), JSON only.

How it works: a sub-application mounted at ``/open311`` with its own error middleware, so
that every answer under ``/open311`` (unknown paths, a wrong method, a bad body) takes the
standard's error shape ``[{"code", "description"}]`` and never contract §3's. Four endpoints:

- ``GET services.json``: one service per category (``service_code`` = category id).
- ``POST requests.json`` (form-encoded or JSON, ``api_key`` = an intake token): the request
  becomes an ordinary event (source ``open311``) through ``Commands.create``, the same
  command path as ``POST /api/v1/events``: routed, timed, durable before the 201, pushed to
  the consoles, duplicates (``Idempotency-Key``) the caller's own.
- ``GET requests/{id}.json`` and ``GET requests.json``: public, only events that came in
  through Open311 (``scope.open311_public``), only their public fields: never the reporter,
  evidence, the actors or an internal id beyond the request id (the event id).

The api_key is checked like a bearer token (``middleware.check_token``: revocation, the
per-address failure limit) and takes the token's rate limit. Status follows the event:
``closed`` once it is terminal in the lifecycle (resolved, cancelled, handed over), with
``status_notes`` saying what happened, Chinese first with English.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from dispatch.core.errors import DispatchError, NotFoundError, OutsideJurisdictionError
from dispatch.core.event import Event
from dispatch.core.lifecycle import PAST, STAGE_DONE, STEP_FIELD, TERMINAL_STATUSES
from dispatch.core.records import Record
from dispatch.runtime import StoreUnavailableError
from dispatch.server import scope, validation
from dispatch.server.middleware import check_token, rate_limit
from dispatch.server.render import display_point, iso, plain
from dispatch.server.schemas import MAX_DESCRIPTION
from dispatch.server.state import STATE, State, json_response
from dispatch.server.validation import ApiError

log = logging.getLogger("dispatch.open311")

PREFIX = "/open311"
V2 = "/v2"
MAX_REQUESTS = 1000  # GeoReport v2: at most 1000 requests per answer ...
WINDOW_S = 90 * 86400  # ... and, without ids, the last 90 days (a range spans at most 90)
MAX_IDS = 1000
MAX_FORM_FIELDS = 100
GROUP = "综合行政执法 Comprehensive law enforcement"
# Optional POST fields kept with the event (in its ``reporter``, which only tokens in scope
# read) and their longest accepted length.
TEXT_FIELDS = {"address_string": 500, "email": 254, "phone": 64, "first_name": 100,
               "last_name": 100, "device_id": 128, "account_id": 128, "media_url": 2000}
# The public fields that come from what the citizen posted (shown by the GETs).
PUBLIC_POSTED = ("address_string", "media_url")
_XML = re.compile(r"\.xml$", re.IGNORECASE)


class Open311Error(Exception):
    """An answer in the standard's error shape: ``[{"code": status, "description"}]``."""

    def __init__(self, status: int, description: str, **headers: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers


def error_response(status: int, description: str, headers: Mapping[str, str] | None = None
                   ) -> web.Response:
    return json_response([{"code": status, "description": description}], status=status,
                         headers=dict(headers or {}))


def is_closed(ev: Mapping[str, Any]) -> bool:
    """GeoReport's ``closed``: the event is terminal in the lifecycle (resolved, cancelled,
    handed over to a department). Derived from ``TERMINAL_STATUSES`` rather than from a list
    of names, so a terminal status the lifecycle adds is closed here too; a status that can
    still move on (``transferred`` waits for the department's answer) stays ``open``."""
    status = ev.get("status")
    return isinstance(status, str) and status in TERMINAL_STATUSES


# -- the error middleware ---------------------------------------------------------------------
_FIELDS = {"location.lon": "long", "location.lat": "lat", "location": "lat/long",
           "category": "service_code", "reporter": "contact fields"}


def _from_api_error(e: ApiError) -> Open311Error:
    field = e.field
    name = _FIELDS.get(field or "", field)
    text = e.message
    if field and name != field:
        text = text.replace(field, name or "")
    if name and not text.startswith(name):
        text = f"{name}: {text}"
    if e.status == 401:
        return Open311Error(403, "api_key: missing or invalid (an intake token is required)")
    if e.status == 429:
        retry = e.extra.get("retry_after_s", 1)
        return Open311Error(429, f"too many requests: {text}",
                            **{"Retry-After": str(max(1, math.ceil(retry)))})
    if e.status in (403, 404, 413, 415, 503):
        return Open311Error(e.status, text)
    return Open311Error(400, text)  # 400/422 at the door: the standard's 400


@web.middleware
async def open311_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure under ``/open311`` in the standard's shape, with the right status."""
    try:
        return await handler(request)
    except Open311Error as e:
        err = e
    except ApiError as e:
        err = _from_api_error(e)
    except OutsideJurisdictionError as e:
        err = Open311Error(400, f"lat/long: the point lies outside the jurisdiction ({e})")
    except NotFoundError as e:
        err = Open311Error(404, str(e))
    except DispatchError as e:
        err = Open311Error(e.status if 400 <= e.status < 600 else 400, str(e))
    except StoreUnavailableError:
        err = Open311Error(503, "the journal could not be written; nothing was changed, retry")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        resp = error_response(e.status, _http_text(request, e))
        if "Allow" in e.headers:  # RFC 9110 §15.5.6
            resp.headers["Allow"] = e.headers["Allow"]
        return resp
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = Open311Error(500, "internal error; it has been logged")
    return error_response(err.status, err.description, err.headers)


def _http_text(request: web.Request, e: web.HTTPException) -> str:
    if e.status == 404:
        if _XML.search(request.path):
            return "only the JSON format is served: use .json instead of .xml"
        return (f"no such Open311 resource {request.path!r}: see {PREFIX}{V2}/services.json, "
                f"{PREFIX}{V2}/requests.json and {PREFIX}{V2}/requests/{{id}}.json")
    if e.status == 413:
        return "the body is larger than limits.max_body_bytes"
    return e.reason


# -- reading a POST ---------------------------------------------------------------------------
async def _post_params(request: web.Request, state: State) -> dict[str, Any]:
    """The POST's parameters: the query string, overridden by the body (form-encoded or a
    JSON object). 413 over the body limit, 415 another content type, 400 a body that does
    not decode."""
    limit = int(state.config["limits"]["max_body_bytes"])
    if request.content_length is not None and request.content_length > limit:
        raise Open311Error(413, f"the body is larger than {limit} bytes")
    params: dict[str, Any] = dict(request.query)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Open311Error(413, f"the body is larger than {limit} bytes") from None
    ctype = request.content_type
    if not body.strip() and ctype in ("application/octet-stream", ""):
        return params  # no body at all
    if ctype == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, encoding="utf-8",
                              errors="strict", max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Open311Error(400, f"the form body does not decode: {exc}") from None
        params.update(pairs)
    elif ctype == "application/json":
        data = validation.parse_json(body, int(state.config["limits"]["max_json_depth"]))
        if not isinstance(data, dict):
            raise Open311Error(400, "a JSON body must be an object of the request's fields")
        params.update(data)
    else:
        raise Open311Error(415, "Content-Type must be application/x-www-form-urlencoded or "
                                "application/json")
    validation.check_values(params)  # control characters, lone surrogates, long integers
    return params


def _text(params: Mapping[str, Any], key: str, limit: int) -> str | None:
    v = params.get(key)
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise Open311Error(400, f"{key}: must be text")
    v = str(v)
    if len(v) > limit:
        raise Open311Error(400, f"{key}: at most {limit} characters")
    return v


def _coordinate(params: Mapping[str, Any], key: str, bound: float) -> float:
    """WGS84 ``lat`` (±90) or ``long`` (±180): a finite number within its range."""
    v = params.get(key)
    if v is None or v == "":
        raise Open311Error(400, f"{key}: required (lat and long in WGS84; an address_string "
                                "alone cannot be placed on the map)")
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise Open311Error(400, f"{key}: must be a number")
    try:
        f = float(v)
    except (ValueError, OverflowError):
        raise Open311Error(400, f"{key}: must be a number") from None
    if not math.isfinite(f) or not -bound <= f <= bound:
        raise Open311Error(400, f"{key}: must be a finite number between -{bound:g} and "
                                f"{bound:g} (WGS84)")
    return f


def _intake(params: Mapping[str, Any], categories: Mapping[str, Any]) -> dict[str, Any]:
    """An Open311 POST as the body of an ordinary intake (contract §3 shape)."""
    code = _text(params, "service_code", 64)
    if code is None:
        raise Open311Error(400, "service_code: required (GET services.json lists them)")
    if code not in categories:
        raise Open311Error(400, f"service_code: {code!r} is not a service of this "
                                "jurisdiction (GET services.json lists them)")
    lat = _coordinate(params, "lat", 90)
    lon = _coordinate(params, "long", 180)
    description = _text(params, "description", MAX_DESCRIPTION) or ""
    posted = {k: _text(params, k, n) for k, n in TEXT_FIELDS.items()}
    url = posted["media_url"]
    if url is not None and (urlsplit(url).scheme.lower() not in ("http", "https")
                            or not urlsplit(url).netloc):
        raise Open311Error(400, "media_url: must be an http or https URL")
    reporter = {k: v for k, v in posted.items() if v is not None}
    return {"location": {"lon": lon, "lat": lat, "crs": "wgs84"}, "category": code,
            "description": description, "source": scope.OPEN311_SOURCE,
            "reporter": {"channel": scope.OPEN311_SOURCE, **reporter}}


# -- what the GETs show -----------------------------------------------------------------------
class Open311:
    """The Open311 answers over the committed view: which events are requests (an index of
    their ids, kept by the runtime's records) and how each is shown."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._ids: set[str] | None = None  # built on first use, then kept by the records
        state.runtime.subscribe(self._on_records)

    def _on_records(self, records: Iterable[Record]) -> None:
        if self._ids is None:
            return
        for r in records:
            if scope.open311_public(r.after):
                self._ids.add(r.event_id)

    def requests(self) -> list[Event]:
        """Every event that came in through Open311, as the committed view has it."""
        view = self.state.runtime.view
        if self._ids is None:
            self._ids = {ev["id"] for ev in view.events() if scope.open311_public(ev)}
        out = []
        for eid in self._ids:
            try:
                out.append(view.get(eid))
            except NotFoundError:
                continue
        return out

    def request(self, request_id: str) -> Event:
        """One Open311 request; 404 for an unknown id and for any other event alike."""
        try:
            ev = self.state.runtime.view.get(request_id)
        except NotFoundError:
            ev = None
        if ev is None or not scope.open311_public(ev):
            raise Open311Error(404, f"no service request {request_id!r}")
        return ev

    # -- names ------------------------------------------------------------------------------
    def team_name(self, team: Any) -> str | None:
        t = self.state.runtime.dataset.teams.get(team) if isinstance(team, str) else None
        return str(t.name) if t is not None else None

    def department_name(self, dept: Any) -> str | None:
        for d in self.state.config.raw.get("departments") or ():
            if isinstance(d, dict) and d.get("id") == dept:
                return str(d.get("name") or dept)
        return str(dept) if isinstance(dept, str) else None

    def service_name(self, code: Any) -> str | None:
        c = self.state.runtime.policy.categories.get(code) if isinstance(code, str) else None
        return str(c.name) if c is not None else None

    # -- rendering --------------------------------------------------------------------------
    def status_notes(self, ev: Mapping[str, Any]) -> str:
        """What happened to the request, Chinese first with English."""
        transfer = ev.get("transfer") if isinstance(ev.get("transfer"), dict) else None
        dept = (self.department_name(transfer.get("department")) if transfer else None) or (
            "相关部门")
        if is_closed(ev):
            if ev.get(STEP_FIELD["resolve"]) is not None:
                return "已办结。Resolved."
            if ev.get(STEP_FIELD["cancel"]) is not None:
                reason = _last_note(ev, PAST["cancel"])
                return (f"已撤销：{reason}。Cancelled: {reason}." if reason
                        else "已撤销。Cancelled.")
            if transfer is not None:
                return f"已移送{dept}并由其接收办理。Handed over to {dept}, which accepted it."
            return "已关闭。Closed."
        if transfer is not None and not transfer.get("answer"):
            return f"已移送{dept}，等待其答复。Transferred to {dept}; awaiting its answer."
        team = self.team_name(ev.get("team")) or "执法队"
        for stage, zh, en in (("arrive", "执法人员已到场处置", "Officers are on scene"),
                              ("depart", "执法人员已出发", "Officers are on their way"),
                              ("respond", "执法队已接单", "Accepted by the team")):
            if ev.get(STAGE_DONE[stage]) is not None:
                return f"{zh}（{team}）。{en} ({team})."
        if ev.get("dispatched_at") is not None:
            return f"已派至{team}处理。Dispatched to {team}."
        return "已受理，等待派遣。Received; awaiting dispatch."

    def agency(self, ev: Mapping[str, Any]) -> str | None:
        transfer = ev.get("transfer")
        if is_closed(ev) and isinstance(transfer, dict) and ev.get(
                STEP_FIELD["resolve"]) is None and ev.get(STEP_FIELD["cancel"]) is None:
            return self.department_name(transfer.get("department"))
        return self.team_name(ev.get("team"))

    def render(self, ev: Mapping[str, Any]) -> dict[str, Any]:
        """A request as GeoReport v2 lists it: public fields only (no reporter, evidence,
        actor or internal id beyond the request id). Never raises on odd stored data."""
        tz = self.state.tz
        loc = display_point(ev.get("location")) or {}
        given = ev.get("reporter")
        reporter = given if isinstance(given, dict) else {}
        posted = {k: reporter.get(k) if isinstance(reporter.get(k), str) else None
                  for k in PUBLIC_POSTED}
        desc = ev.get("description")
        return plain({  # what an older version stored may not encode as it is
            "service_request_id": str(ev.get("id")),
            "status": "closed" if is_closed(ev) else "open",
            "status_notes": self.status_notes(ev),
            "service_name": self.service_name(ev.get("category")),
            "service_code": ev.get("category") if isinstance(ev.get("category"), str) else None,
            "description": desc if isinstance(desc, str) else None,
            "agency_responsible": self.agency(ev),
            "service_notice": None,
            "requested_datetime": iso(ev.get("created_at"), tz),
            "updated_datetime": iso(ev.get("updated_at"), tz),
            "expected_datetime": None,
            "address": posted["address_string"],
            "address_id": None,
            "zipcode": None,
            "lat": loc.get("lat"),
            "long": loc.get("lon"),
            "media_url": posted["media_url"],
        })

    def service_notice(self, ev: Mapping[str, Any]) -> str:
        """The POST's notice: where the request went and when officers are due on scene."""
        team = self.team_name(ev.get("team"))
        if team is None:
            return "已受理，等待派遣。Received; awaiting dispatch."
        given = ev.get("deadlines")
        deadlines = given if isinstance(given, dict) else {}
        due, start = deadlines.get("arrive"), ev.get("dispatched_at")
        if isinstance(due, int | float) and isinstance(start, int | float):
            minutes = max(1, round((due - start) / 60))
            return (f"已受理并派至{team}，{minutes}分钟内到场。"
                    f"Received and dispatched to {team}; on scene within {minutes} min.")
        return f"已受理并派至{team}。Received and dispatched to {team}."

    def services(self) -> list[dict[str, Any]]:
        policy = self.state.runtime.policy
        out = []
        for c in policy.categories.values():
            w = policy.windows(c.id, None)
            zh, _, en = str(c.name).partition(" ")
            r, d, a = (round(w.respond_s), round(w.depart_s), round(w.arrive_s))
            out.append({
                "service_code": c.id, "service_name": c.name,
                "description": f"{c.name}：派遣后{r}秒内响应、{d}秒内出发、{a}秒内到场。"
                               f"Respond within {r} s, depart within {d} s and be on scene "
                               f"within {a} s of dispatch.",
                "metadata": False, "type": "realtime",
                "keywords": ", ".join(k for k in (zh, en, c.id) if k),
                "group": GROUP,
            })
        return out


def _last_note(ev: Mapping[str, Any], action: str) -> str | None:
    given = ev.get("timeline")
    timeline = given if isinstance(given, list) else []
    for entry in reversed(timeline):
        if isinstance(entry, dict) and entry.get("action") == action:
            note = entry.get("note")
            return note[:500] if isinstance(note, str) and note.strip() else None
    return None


# -- handlers ---------------------------------------------------------------------------------
OPEN311: web.AppKey[Open311] = web.AppKey("open311", Open311)


async def services(request: web.Request) -> web.Response:
    return json_response(request.app[OPEN311].services())


async def post_request(request: web.Request) -> web.Response:
    state, o = request.app[OPEN311].state, request.app[OPEN311]
    params = await _post_params(request, state)
    api_key = params.get("api_key")
    p = check_token(request, api_key if isinstance(api_key, str) else None)
    if not scope.may_post_open311(p):
        raise Open311Error(403, f"api_key: the key's role ({p.role}) may not post requests "
                                "(an intake token is required)")
    rate_limit(state, p)
    body = _intake(params, state.runtime.policy.categories)
    out = await state.commands.create(p, body, request.headers.get("Idempotency-Key"))
    ev = out.event
    assert ev is not None  # created, or the caller's duplicate
    return json_response([{"service_request_id": ev["id"], "service_notice":
                           o.service_notice(ev), "account_id": None}],
                         status=201 if out.created else 200)


def _filters(q: Mapping[str, str], now: float) -> dict[str, Any]:
    """The query of ``GET requests.json``; 400 naming the parameter."""
    ids = [i for i in (q.get("service_request_id") or "").split(",") if i.strip()]
    if len(ids) > MAX_IDS:
        raise Open311Error(400, f"service_request_id: at most {MAX_IDS} ids")
    statuses = {s.strip() for s in (q.get("status") or "").split(",") if s.strip()}
    if statuses - {"open", "closed"}:
        raise Open311Error(400, "status: must be open, closed or open,closed")
    codes = {c.strip() for c in (q.get("service_code") or "").split(",") if c.strip()}
    given_start = validation.timestamp(dict(q), "start_date", "start_date")
    given_end = validation.timestamp(dict(q), "end_date", "end_date")
    # neither: the last 90 days; one: 90 days from or to it
    if given_start is None:
        end = now if given_end is None else given_end
        start = end - WINDOW_S
    else:
        start = given_start
        end = start + WINDOW_S if given_end is None else given_end
    if end < start:
        raise Open311Error(400, "end_date: before start_date")
    if end - start > WINDOW_S:
        raise Open311Error(400, "start_date/end_date: a range spans at most 90 days")
    return {"ids": [i.strip() for i in ids], "statuses": statuses, "codes": codes,
            "start": start, "end": end}


def _created(ev: Mapping[str, Any]) -> float:
    t = ev.get("created_at")
    return float(t) if isinstance(t, int | float) and math.isfinite(t) else 0.0


def _newest_first(ev: Mapping[str, Any]) -> tuple[float, str]:
    return _created(ev), str(ev.get("id"))


async def list_requests(request: web.Request) -> web.Response:
    o = request.app[OPEN311]
    f = _filters(request.query, o.state.clock.now())
    if f["ids"]:  # GeoReport v2: ids override every other parameter; unknown ids are left out
        found = []
        for eid in dict.fromkeys(f["ids"]):
            try:
                found.append(o.request(eid))
            except Open311Error:
                continue
        return json_response([o.render(ev) for ev in found])
    out = []
    for ev in sorted(o.requests(), key=_newest_first, reverse=True):
        t = _created(ev)
        if not f["start"] <= t <= f["end"]:
            continue
        if f["codes"] and ev.get("category") not in f["codes"]:
            continue
        if f["statuses"] and ("closed" if is_closed(ev) else "open") not in f["statuses"]:
            continue
        out.append(o.render(ev))
        if len(out) == MAX_REQUESTS:
            break
    return json_response(out)


async def get_request(request: web.Request) -> web.Response:
    o = request.app[OPEN311]
    return json_response([o.render(o.request(request.match_info["id"]))])


def add_routes(app: web.Application, state: State) -> None:
    """Mount ``/open311`` (its own error middleware) on ``app``."""
    sub = web.Application(middlewares=[open311_errors])
    sub[STATE] = state
    sub[OPEN311] = Open311(state)
    sub.router.add_get(f"{V2}/services.json", services)
    sub.router.add_post(f"{V2}/requests.json", post_request)
    sub.router.add_get(f"{V2}/requests.json", list_requests)
    sub.router.add_get(f"{V2}/requests/{{id}}.json", get_request)
    app.add_subapp(PREFIX, sub)

