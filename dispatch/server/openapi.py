"""The OpenAPI 3 document (``GET /api/openapi.json``); a test keeps it equal to the routes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dispatch.server.app import json_response

ERROR = {"$ref": "#/components/schemas/Error"}
EVENT = {"$ref": "#/components/schemas/Event"}


def _resp(desc: str, schema: dict[str, Any] | None = None,
          errors: tuple[int, ...] = (401, 403, 422, 429)) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": desc}
    if schema is not None:
        ok["content"] = {"application/json": {"schema": schema}}
    out: dict[str, Any] = {"200": ok}
    for code in errors:
        out[str(code)] = {"description": "error",
                          "content": {"application/json": {"schema": ERROR}}}
    return out


def _q(name: str, desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": desc,
            "schema": schema or {"type": "string"}}


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


LOCATION = {"type": "object", "required": ["lon", "lat"], "properties": {
    "lon": {"type": "number", "minimum": -180, "maximum": 180},
    "lat": {"type": "number", "minimum": -90, "maximum": 90},
    "crs": {"type": "string", "enum": ["wgs84", "gcj02", "bd09"], "default": "wgs84"}}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "field": {"type": ["string", "null"]}}}}},
    "Intake": {"type": "object", "required": ["location", "category"], "properties": {
        "location": LOCATION, "category": {"type": "string"},
        "description": {"type": "string", "maxLength": 2000},
        "source": {"type": "string"}, "priority": {"type": "integer", "minimum": 1, "maximum": 3},
        "external_id": {"type": "string"}, "reporter": {"type": "object"},
        "reported_at": {"type": "string", "format": "date-time"}}},
    "Action": {"type": "object", "properties": {
        "at": {"type": "string", "format": "date-time"}, "unit": {"type": "string"},
        "team": {"type": "string"}, "note": {"type": "string", "maxLength": 2000}}},
    "Position": {"type": "object", "required": ["lon", "lat"], "properties": {
        **LOCATION["properties"], "accuracy_m": {"type": "number"},
        "at": {"type": "string", "format": "date-time"}}},
    "Event": {"type": "object", "properties": {k: {} for k in (
        "id", "status", "tier", "category", "description", "source", "priority", "external_id",
        "location", "grid", "township", "county", "zone", "team", "unit", "mutual_aid",
        "created_at", "dispatched_at", "deadlines", "breaches", "timeline", "routing",
        "timer_state", "next_deadline", "escalations", "seq", "version")}},
}


def _body(name: str) -> dict[str, Any]:
    return {"required": name != "Action", "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/events": {
        "post": {"summary": "Take in an event; route and dispatch it",
                 "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                 "schema": {"type": "string"}}],
                 "requestBody": _body("Intake"),
                 "responses": {**_resp("existing event (idempotent replay)", EVENT,
                                       (400, 401, 403, 413, 415, 422, 429, 503)),
                               "201": {"description": "created",
                                       "content": {"application/json": {"schema": EVENT}}}}},
        "get": {"summary": "List events in scope", "parameters": [
            _q("status", "comma-separated statuses"), _q("region", "region id"),
            _q("team", "team id"), _q("since", "ISO 8601"), _q("until", "ISO 8601"),
            _q("breached", "true|false"), _q("limit", "1..1000", {"type": "integer"}),
            _q("cursor", "the `next` of the previous page")],
            "responses": _resp("events", {"type": "object"})}},
    "/api/v1/events/{id}": {"get": {"summary": "One event with its timeline",
                                    "parameters": [_p("id")],
                                    "responses": _resp("event", EVENT, (401, 403, 404))}},
    "/api/v1/events/{id}/units": {"get": {"summary": "Recommended and nearby units",
                                          "parameters": [_p("id")],
                                          "responses": _resp("units", {"type": "object"})}},
    "/api/v1/events/{id}/{action}": {"post": {
        "summary": "respond | depart | arrive | resolve | cancel | escalate | reassign",
        "parameters": [_p("id"), {**_p("action"), "schema": {"type": "string", "enum": [
            "respond", "depart", "arrive", "resolve", "cancel", "escalate", "reassign"]}}],
        "requestBody": _body("Action"),
        "responses": _resp("event after the action (or unchanged on a replay)", EVENT,
                           (400, 401, 403, 404, 409, 415, 422, 429, 503))}},
    "/api/v1/categories": {"get": {"summary": "Event categories and their timers",
                                   "responses": _resp("categories", {"type": "object"})}},
    "/api/v1/units/{id}/position": {"put": {"summary": "Report a unit's position",
                                            "parameters": [_p("id")],
                                            "requestBody": _body("Position"),
                                            "responses": _resp("unit", {"type": "object"})}},
    "/api/v1/units": {"get": {"summary": "Units in scope", "parameters": [_q("team", "team id")],
                              "responses": _resp("units", {"type": "object"})}},
    "/api/v1/teams": {"get": {"summary": "Teams in scope",
                              "responses": _resp("teams", {"type": "object"})}},
    "/api/v1/regions": {"get": {"summary": "Regions as simplified GeoJSON",
                                "parameters": [_q("level", "city|county|township|grid")],
                                "responses": _resp("FeatureCollection", {"type": "object"})}},
    "/api/v1/zones": {"get": {"summary": "Zones as simplified GeoJSON",
                              "responses": _resp("FeatureCollection", {"type": "object"})}},
    "/api/v1/stats/response-times": {"get": {
        "summary": "Response-time compliance per group",
        "parameters": [_q("group_by", "township|team|category|day|county|zone"),
                       _q("since", "ISO 8601"), _q("until", "ISO 8601"), _q("region", "id")],
        "responses": _resp("groups", {"type": "object"})}},
    "/api/v1/stats/export": {"get": {
        "summary": "The response-time table as CSV or Excel (Chinese headers)",
        "parameters": [_q("format", "csv|xlsx"), _q("group_by", "as above"),
                       _q("since", "ISO 8601"), _q("until", "ISO 8601"), _q("region", "id")],
        "responses": _resp("file")}},
    "/api/v1/me": {"get": {"summary": "Who the token is",
                           "responses": _resp("principal", {"type": "object"})}},
    "/api/v1/ui": {"get": {"summary": "Map settings for the pages",
                           "responses": _resp("settings", {"type": "object"})}},
    "/healthz": {"get": {"summary": "Liveness", "security": [],
                         "responses": _resp("ok", {"type": "object"}, (503,))}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                         "responses": _resp("text format", None, ())}},
    "/ws": {"get": {"summary": "WebSocket (contract §4); ?token=, ?since=",
                    "parameters": [_q("token", "bearer token for browsers"),
                                   _q("since", "last seq seen", {"type": "integer"})],
                    "responses": {"101": {"description": "switching protocols"}}}},
    "/api/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": _resp("OpenAPI 3", {"type": "object"}, ())}},
    "/": {"get": {"summary": "Redirect to /ops", "security": [],
                  "responses": {"302": {"description": "to /ops"}}}},
    "/ops": {"get": {"summary": "Operator live map", "security": [],
                     "responses": _resp("HTML", None, ())}},
    "/field": {"get": {"summary": "Field page", "security": [],
                       "responses": _resp("HTML", None, ())}},
    "/supervisor": {"get": {"summary": "Supervisor dashboard", "security": [],
                            "responses": _resp("HTML", None, ())}},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Taizhou law-enforcement dispatch API", "version": "1",
             "description": "Contract v1: intake, routing, 1/3/15 timers, escalation."},
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
