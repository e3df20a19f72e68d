"""The OpenAPI description of Open311 GeoReport v2 (``server/open311.py``, contract §8).

Merged into ``openapi.DOCUMENT``: the four operations with the standard's own shapes and its
error list ``[{"code", "description"}]`` (never contract §3's), so that schemathesis holds
them to it like the rest (``tests/fuzz/test_schemathesis.py``).
"""

from __future__ import annotations

from typing import Any

from dispatch.server.open311 import PREFIX, TEXT_FIELDS, V2
from dispatch.server.schemas import MAX_DESCRIPTION


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_NSTR: dict[str, Any] = {"type": ["string", "null"]}
_ERRORS_TEXT = {
    400: "a missing or invalid field (the description names it), a point outside the "
         "jurisdiction, or a body that does not decode",
    403: "api_key missing, invalid, revoked, or not an intake token",
    404: "unknown request (any event that did not come in through Open311 answers the same)",
    413: "body over limits.max_body_bytes",
    415: "Content-Type is neither application/x-www-form-urlencoded nor application/json",
    429: "over the api_key's rate limit, or too many bad keys from this address (Retry-After)",
    503: "the store cannot be written now; nothing was changed, retry",
}


def _answers(ok: dict[int, tuple[str, str]], errors: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        str(s): {"description": d, "content": {"application/json": {"schema": _ref(n)}}}
        for s, (d, n) in ok.items()}
    for s in errors:
        out[str(s)] = {"description": _ERRORS_TEXT[s],
                       "content": {"application/json": {"schema": _ref("Open311Errors")}}}
    return out


def _query(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": desc,
            "schema": {"type": "string"}}


SCHEMAS: dict[str, Any] = {
    "Open311Errors": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["code", "description"], "properties": {
            "code": {"type": "integer", "description": "the HTTP status"},
            "description": {"type": "string"}}}},
    "Open311Services": {"type": "array", "items": {
        "type": "object", "required": ["service_code", "service_name", "description",
                                       "metadata", "type", "keywords", "group"],
        "properties": {"service_code": {"type": "string"}, "service_name": {"type": "string"},
                       "description": {"type": "string"}, "metadata": {"const": False},
                       "type": {"const": "realtime"}, "keywords": {"type": "string"},
                       "group": {"type": "string"}}}},
    "Open311Created": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
        "type": "object", "required": ["service_request_id", "service_notice"],
        "properties": {"service_request_id": {"type": "string"},
                       "service_notice": {"type": "string"}, "account_id": {"type": "null"}}}},
    "Open311Requests": {"type": "array", "items": {
        "type": "object",
        "required": ["service_request_id", "status", "status_notes", "service_name",
                     "service_code", "description", "agency_responsible", "service_notice",
                     "requested_datetime", "updated_datetime", "expected_datetime", "address",
                     "address_id", "zipcode", "lat", "long", "media_url"],
        "properties": {
            "service_request_id": {"type": "string"},
            "status": {"type": "string", "enum": ["open", "closed"]},
            **{k: _NSTR for k in ("status_notes", "service_name", "service_code",
                                  "description", "agency_responsible", "service_notice",
                                  "expected_datetime", "address", "address_id", "zipcode",
                                  "media_url")},
            "requested_datetime": {"type": ["string", "null"], "format": "date-time"},
            "updated_datetime": {"type": ["string", "null"], "format": "date-time"},
            "lat": {"type": ["number", "null"]}, "long": {"type": ["number", "null"]}}}},
    "Open311Post": {
        "type": "object", "required": ["api_key", "service_code", "lat", "long"],
        "description": "GeoReport v2 POST Service Request (form-encoded, or the same as JSON)",
        "properties": {
            "api_key": {"type": "string", "description": "an intake token"},
            "service_code": {"type": "string", "description": "a service_code of "
                                                                "services.json"},
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "long": {"type": "number", "minimum": -180, "maximum": 180},
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            **{k: {"type": "string", "maxLength": n} for k, n in TEXT_FIELDS.items()}}},
}

_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
PATHS: dict[str, Any] = {
    f"{PREFIX}{V2}/services.json": {"get": {
        "operationId": "open311Services", "summary": "Open311: one service per category",
        "security": [], "responses": _answers({200: ("the services", "Open311Services")}, ())}},
    f"{PREFIX}{V2}/requests.json": {
        "post": {
            "operationId": "open311PostRequest",
            "summary": "Open311: report a problem; it becomes an event (source open311)",
            "security": [],
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 128}}],
            "requestBody": {"required": True, "content": {
                "application/x-www-form-urlencoded": {"schema": _ref("Open311Post")},
                "application/json": {"schema": _ref("Open311Post")}}},
            "responses": _answers(
                {201: ("created, routed and dispatched", "Open311Created"),
                 200: ("the caller's own request again (the same Idempotency-Key)",
                       "Open311Created")},
                (400, 403, 413, 415, 429, 503))},
        "get": {
            "operationId": "open311Requests",
            "summary": "Open311: requests (public; without ids the last 90 days, at most 1000)",
            "security": [],
            "parameters": [
                _query("service_request_id", "comma-separated ids (overrides the others)"),
                _query("service_code", "comma-separated service codes"),
                _query("status", "open, closed or open,closed"),
                _query("start_date", "ISO 8601 with offset"),
                _query("end_date", "ISO 8601 with offset (a range spans at most 90 days)")],
            "responses": _answers({200: ("the requests, newest first", "Open311Requests")},
                                  (400,))}},
    f"{PREFIX}{V2}/requests/{{id}}.json": {"get": {
        "operationId": "open311Request", "summary": "Open311: one request (public)",
        "security": [], "parameters": [_ID_PARAM],
        "responses": _answers({200: ("a list of the one request", "Open311Requests")},
                              (404,))}},
}
