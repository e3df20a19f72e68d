"""The OpenAPI 3.1 document (``GET /api/openapi.json``).

It tells the truth about every operation: each status code the server can answer (the
``/api/v1`` doors add 401 and 429 to every route, a body adds 400/413/415), the error body of
contract §3, and the shapes of the answers. ``tests/server/test_api.py`` keeps its paths equal
to the routes; ``tests/fuzz/test_schemathesis.py`` holds every answer to it. Ids of events and
units outside the caller's scope answer 404 like unknown ones (contract v2 §6). The links
from an intake to the operations on the event it made let a stateful fuzzer follow them.

No schema is written here (issue 12, one schema per shape): ``SCHEMAS`` is generated, the
response bodies from the Structs of ``shapes.py`` (held to what the server really renders by
``tests/server/test_shapes.py``), the request bodies from those of ``schemas.py`` (which
validate them at the door). This module writes the paths: operations, parameters, status
codes, links, and which component each answer is.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatch.core.lifecycle import ACTIONS, TRANSFER_ACTIONS
from dispatch.server import open311_openapi, schemas, shapes
from dispatch.server.state import json_response


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


STR = {"type": "string"}
ERROR_TEXT = {
    400: "malformed JSON, a bad character or an oversized integer in the body",
    401: "no or bad bearer token",
    403: "the caller's role may not do this (or the target is outside its region)",
    404: "unknown id, or an id outside the caller's scope (the same answer)",
    409: "illegal transition; the body carries the current status",
    413: "body over limits.max_body_bytes",
    415: "Content-Type is not application/json",
    422: "an invalid field (the error names it)",
    429: "over the token's rate limit; retry_after_s says when to retry",
    503: "the store cannot be written now; nothing was changed, retry",
}

# -- the components: generated, never written here ------------------------------------------
# Response bodies from shapes.py (one msgspec Struct per shape: Event, EventList, Unit, Error,
# ...), request bodies from schemas.py (Intake, Action, Position, Location). To add a field or
# a shape, edit shapes.py (its docstring says how); the paths below refer to them by name.
RESPONSE_SCHEMAS: dict[str, Any] = shapes.components()
REQUEST_SCHEMAS: dict[str, Any] = schemas.components()
if _shared := RESPONSE_SCHEMAS.keys() & REQUEST_SCHEMAS.keys():  # one would hide the other
    raise RuntimeError(f"a response shape and a request body share the names {_shared}")
# /open311 answers in the standard's own shapes (GeoReport v2), described beside its routes
SCHEMAS: dict[str, Any] = {**RESPONSE_SCHEMAS, **REQUEST_SCHEMAS, **open311_openapi.SCHEMAS}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def responses(ok: dict[str, Any], errors: tuple[int, ...]) -> dict[str, Any]:
    """``ok`` (status → (description, content or None)) plus one entry per error status."""
    out: dict[str, Any] = {}
    for status, (desc, content) in ok.items():
        out[str(status)] = {"description": desc, **({"content": content} if content else {})}
    for status in errors:
        out[str(status)] = {"description": ERROR_TEXT[status], "content": _json(ref("Error"))}
    return out


# The doors of every /api/v1 route (auth, rate limit) and of every request body.
API = (401, 429)
BODY = (400, 413, 415, 422)


def api_get(op_id: str, summary: str, schema: str, errors: tuple[int, ...] = (),
            parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"operationId": op_id, "summary": summary, "parameters": parameters or [],
            "responses": responses({200: (summary, _json(ref(schema)))},
                                   tuple(sorted({*API, *errors})))}


def _q(name: str, desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": desc,
            "schema": schema or {"type": "string"}}


def _p(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or STR}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": _json(ref(name))}


# transfer, accept and return have their own paths and bodies (contract §8)
ACTION_NAMES = [a for a in ACTIONS if a not in TRANSFER_ACTIONS]
EVENT_ID = "$response.body#/id"
LINKS = {
    "GetEvent": {"operationId": "getEvent", "parameters": {"id": EVENT_ID}},
    "EventUnits": {"operationId": "eventUnits", "parameters": {"id": EVENT_ID}},
    "ActOnEvent": {"operationId": "actOnEvent", "parameters": {"id": EVENT_ID}},
    "TransferEvent": {"operationId": "transferEvent", "parameters": {"id": EVENT_ID}},
}
TIME_FILTERS = [_q("since", "ISO 8601 with offset"), _q("until", "ISO 8601 with offset")]
HTML = {"text/html": {"schema": STR}}
PAGE_OK = {200: ("HTML page", HTML)}


def _intake() -> dict[str, Any]:
    made = {"description": "created and routed", "content": _json(ref("Event")), "links": LINKS}
    again = {"description": "the caller's own existing event (same external_id from the same "
             "source, or the same Idempotency-Key)", "content": _json(ref("Event")),
             "links": LINKS}
    out = responses({}, tuple(sorted({*API, *BODY, 403, 503})))
    return {"operationId": "createEvent", "summary": "Take in an event; route and dispatch it",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 128}}],
            "requestBody": _body("Intake"), "responses": {"200": again, "201": made, **out}}


# Evidence (contract §8): raw bytes in and out, one ZIP per event.
EVIDENCE_TYPES = ("image/jpeg", "image/png", "video/mp4", "application/pdf")
BINARY = {"type": "string", "format": "binary"}
EVIDENCE_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/events/{id}/evidence": {"post": {
        "operationId": "attachEvidence",
        "summary": "Attach a file (the raw bytes, with their Content-Type) to the event: the "
                   "assigned unit's field token or an operator in scope",
        "parameters": [
            _p("id"), _q("name", "file name, 1..200 characters, no / \\ or controls",
                         {"type": "string", "maxLength": 200}),
            _q("taken_at", "when it was taken: ISO 8601 with offset or epoch seconds, "
               "2000-01-01 .. now + offline.max_skew_s (default: now)")],
        "requestBody": {"required": True, "content": {t: {"schema": BINARY}
                                                      for t in EVIDENCE_TYPES}},
        "responses": {**responses(
            {201: ("stored and journalled", _json(ref("Evidence"))),
             200: ("this file is already on the event (a retry): its entry",
                   _json(ref("Evidence")))},
            (*API, 403, 404, 409, 422, 503)),
            "413": {"description": "the file is over evidence.max_bytes",
                    "content": _json(ref("Error"))},
            "415": {"description": "not one of the accepted types, or bytes that are not of "
                    "the declared type", "content": _json(ref("Error"))}}}},
    "/api/v1/evidence/{sha256}": {"get": {
        "operationId": "getEvidence",
        "summary": "The bytes of an evidence file, to whoever reads an event carrying it",
        "parameters": [_p("sha256"),
                       {"name": "If-None-Match", "in": "header", "required": False,
                        "schema": STR}],
        "responses": {**responses({200: ("the file", {t: {"schema": BINARY}
                                                     for t in EVIDENCE_TYPES})},
                                  (*API, 403, 404)),
                      "304": {"description": "not modified (the ETag is the SHA-256)"}}}},
    "/api/v1/events/{id}/dossier": {"get": {
        "operationId": "eventDossier",
        "summary": "One ZIP for legal review: event.json, records.json (hash, prev_hash, "
                   "seq, canonical bytes), the evidence files, verification.json/.txt",
        "parameters": [_p("id")],
        "responses": responses({200: ("the ZIP", {"application/zip": {"schema": BINARY}})},
                               (*API, 403, 404))}},
}

TRANSFER_DOCS = {
    "transfer": ("transferEvent", "Transfer the event to another department (移送; an "
                 "operator in scope): status transferred, clocks stopped, unit freed",
                 "Transfer", True),
    "accept": ("acceptTransfer", "The department the event is transferred to accepts it: "
               "status handed_over (terminal)", "Accept", False),
    "return": ("returnTransfer", "The department returns it with a note: dispatched again to "
               "its team, unit picked anew, clocks from the return", "Return", True),
}


def _transfer_op(action: str) -> dict[str, Any]:
    op_id, summary, body, required = TRANSFER_DOCS[action]
    return {"operationId": op_id, "summary": summary, "parameters": [_p("id")],
            "requestBody": _body(body, required=required),
            "responses": responses(
                {200: ("the event after it (unchanged on a replay)", _json(ref("Event")))},
                tuple(sorted({*API, *BODY, 403, 404, 409, 503})))}


PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/events": {
        "post": _intake(),
        "get": api_get("listEvents", "Events in scope, newest first", "EventList",
                       (403, 422), [
            _q("status", "comma-separated statuses"), _q("region", "region id"),
            _q("team", "team id"), *TIME_FILTERS, _q("breached", "true|false",
                                                     {"type": "string",
                                                      "enum": ["true", "false"]}),
            _q("limit", "1..1000", {"type": "integer", "minimum": 1, "maximum": 1000}),
            _q("cursor", "the `next` of the previous page")])},
    "/api/v1/events/{id}": {"get": api_get("getEvent", "One event with its timeline", "Event",
                                           (403, 404), [_p("id")])},
    "/api/v1/events/{id}/units": {"get": api_get(
        "eventUnits", "Recommended and nearby units (in the caller's scope)", "EventUnits",
        (403, 404), [_p("id")])},
    "/api/v1/events/{id}/{action}": {"post": {
        "operationId": "actOnEvent",
        "summary": "respond | depart | arrive | resolve | cancel | escalate | reassign",
        "parameters": [_p("id"), _p("action", {"type": "string", "enum": ACTION_NAMES})],
        "requestBody": _body("Action", required=False),
        "responses": responses(
            {200: ("the event after the action (unchanged on a replay)", _json(ref("Event")))},
            tuple(sorted({*API, *BODY, 403, 404, 409, 503})))}},
    **EVIDENCE_PATHS,
    **{f"/api/v1/events/{{id}}/{a}": {"post": _transfer_op(a)} for a in TRANSFER_ACTIONS},
    "/api/v1/departments": {"get": api_get(
        "departments", "The departments events may be transferred to", "Departments", (403,))},
    "/api/v1/categories": {"get": api_get("categories", "Event categories and their timers",
                                          "Categories")},
    "/api/v1/units/{id}/position": {"put": {
        "operationId": "putPosition", "summary": "Report a unit's position",
        "parameters": [_p("id")], "requestBody": _body("Position"),
        "responses": responses({200: ("the unit", _json(ref("Unit")))},
                               tuple(sorted({*API, *BODY, 403, 404})))}},
    "/api/v1/units": {"get": api_get("listUnits", "Units in scope", "UnitList", (403,),
                                     [_q("team", "team id")])},
    "/api/v1/teams": {"get": api_get("listTeams", "Teams in scope", "Teams")},
    "/api/v1/regions": {"get": api_get(
        "regions", "Regions in scope as simplified GeoJSON (the caller's region, those below "
        "it and those above it; a field unit's: its team's county)", "FeatureCollection", (422,),
        [_q("level", "default county and township",
            {"type": "string", "enum": ["city", "county", "township", "grid"]})])},
    "/api/v1/zones": {"get": api_get("zones", "Zones of the teams in scope as simplified "
                                     "GeoJSON", "FeatureCollection")},
    "/api/v1/stats/response-times": {"get": api_get(
        "responseTimes", "Response-time compliance per group (events in scope)", "Stats",
        (403, 422), [_q("group_by", "township|team|category|day|county|zone"), *TIME_FILTERS,
                     _q("region", "region id")])},
    "/api/v1/stats/export": {"get": {
        "operationId": "exportStats",
        "summary": "The response-time table as CSV or Excel (Chinese headers)",
        "parameters": [_q("format", "csv|xlsx"), _q("group_by", "as response-times"),
                       *TIME_FILTERS, _q("region", "region id")],
        "responses": responses({200: ("the file", {
            "text/csv": {"schema": STR},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":
                {"schema": {"type": "string", "format": "binary"}}})},
            tuple(sorted({*API, 403, 422})))}},
    "/api/v1/me": {"get": api_get("me", "Who the token is", "Me")},
    "/api/v1/webhooks/{id}/deliveries": {"get": api_get(
        "webhookDeliveries", "A webhook's pending messages (attempts, last error) and the last "
        "delivered seq (admin only)", "Deliveries", (403, 404, 422, 503),
        [_p("id"), _q("limit", "1..1000 pending messages shown (default 100)",
                      {"type": "integer", "minimum": 1, "maximum": 1000})])},
    "/api/v1/webhooks/{id}/redeliver": {"post": {
        "operationId": "webhookRedeliver",
        "summary": "Send again every message of the webhook from from_seq (admin only)",
        "parameters": [_p("id")], "requestBody": _body("Redeliver"),
        "responses": responses({200: ("the webhook's deliveries after the change",
                                      _json(ref("Deliveries")))},
                               tuple(sorted({*API, *BODY, 403, 404, 503})))}},
    "/api/v1/ui": {"get": api_get("ui", "Map settings for the pages", "UI")},
    "/healthz": {"get": {
        "operationId": "healthz", "summary": "Health: 503 with the reason while the store "
        "cannot be written", "security": [],
        "responses": {"200": {"description": "ok", "content": _json(ref("Health"))},
                      "503": {"description": "failing, with the reason",
                              "content": _json(ref("Health"))}}}},
    "/metrics": {"get": {
        "operationId": "metrics",
        "summary": "Prometheus metrics (a token of a role in metrics.roles, unless "
                   "metrics.public)",
        "security": [{"bearer": []}, {}],
        "responses": responses({200: ("text format", {"text/plain": {"schema": STR}})},
                               (401, 403, 429))}},
    "/ws": {"get": {
        "operationId": "websocket",
        "summary": "WebSocket (contract §4); ?token= for browsers, ?since= to catch up",
        "parameters": [_q("token", "bearer token for browsers"),
                       _q("since", "last seq seen", {"type": "integer", "minimum": 0}),
                       _q("positions", "batch: one frame per flush",
                          {"type": "string", "enum": ["batch"]})],
        "responses": {"101": {"description": "switching protocols"},
                      **responses({}, (400, 401, 403, 422, 429))}}},
    "/api/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                  "security": [], "responses": {"200": {
                                      "description": "OpenAPI 3.1",
                                      "content": _json({"type": "object"})}}}},
    "/": {"get": {"operationId": "root", "summary": "Redirect to /ops", "security": [],
                  "responses": {"302": {"description": "to /ops"}}}},
    "/ops": {"get": {"operationId": "opsPage", "summary": "Operator live map", "security": [],
                     "responses": responses(PAGE_OK, ())}},
    "/field": {"get": {"operationId": "fieldPage", "summary": "Field page", "security": [],
                       "responses": responses(PAGE_OK, ())}},
    "/supervisor": {"get": {"operationId": "supervisorPage", "summary": "Supervisor dashboard",
                            "security": [], "responses": responses(PAGE_OK, ())}},
    **open311_openapi.PATHS,  # GeoReport v2 (contract §8): public GETs, api_key POST
    "/department": {"get": {"operationId": "departmentPage", "summary": "A department's "
                            "transfers (移送): accept or return", "security": [],
                            "responses": responses(PAGE_OK, ())}},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Taizhou law-enforcement dispatch API", "version": "2",
             "description": "Contract v2: intake, routing, 1/3/15 timers, escalation, scope. "
                            "Every 4xx/5xx body is the Error schema (under /open311, "
                            "Open311 GeoReport v2, the standard's Open311Errors)."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                   "schemas": SCHEMAS},
    "paths": PATHS,
}


async def openapi(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", openapi)
