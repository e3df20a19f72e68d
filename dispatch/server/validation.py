"""Bad input never gets in: body parsing and field validation (contract §3 Errors).

Every failure is an ``ApiError`` with the HTTP status, a code and the field it names;
``errors.py`` renders it. Nothing here touches state.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from geo.coords import CoordinateError, to_wgs84, validate

MAX_DESCRIPTION = 2000
ACTIONS = ("respond", "depart", "arrive", "resolve", "cancel", "escalate", "reassign")


class ApiError(Exception):
    """An error answered to the client as ``{"error": {code, message, field}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra


class _NonFinite(float):
    """Stands in for NaN/Infinity literals so validation can name their field."""


def _parse_constant(name: str) -> float:
    return _NonFinite("nan")


def parse_json(body: bytes, max_depth: int) -> Any:
    """Decode UTF-8 JSON; 400 for invalid UTF-8, malformed JSON or nesting deeper than allowed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_utf8", f"body is not valid UTF-8 at byte {exc.start}") \
            from None
    if _depth_exceeds(text, max_depth):
        raise ApiError(400, "too_deep", f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_parse_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ApiError(400, "malformed_json", f"malformed JSON: {msg}") from None


def _depth_exceeds(text: str, max_depth: int) -> bool:
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def require_object(data: Any, field: str | None = None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_field", "expected a JSON object", field)
    return data


def number(data: dict[str, Any], key: str, field: str, required: bool = True) -> float | None:
    v = data.get(key)
    if v is None:
        if required:
            raise ApiError(422, "invalid_field", f"{field} is required", field)
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ApiError(422, "invalid_field", f"{field} must be a number", field)
    if isinstance(v, _NonFinite) or not math.isfinite(v):
        raise ApiError(422, "invalid_field", f"{field} must be a finite number", field)
    return float(v)


def string(data: dict[str, Any], key: str, field: str, max_len: int,
           required: bool = False) -> str | None:
    v = data.get(key)
    if v is None:
        if required:
            raise ApiError(422, "invalid_field", f"{field} is required", field)
        return None
    if not isinstance(v, str):
        raise ApiError(422, "invalid_field", f"{field} must be a string", field)
    if len(v) > max_len:
        raise ApiError(422, "invalid_field", f"{field} is longer than {max_len} characters",
                       field)
    return v


def timestamp(data: dict[str, Any], key: str, field: str) -> float | None:
    """An ISO 8601 time with offset (or epoch seconds) as UTC epoch seconds."""
    v = data.get(key)
    if v is None:
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        if isinstance(v, _NonFinite) or not math.isfinite(v):
            raise ApiError(422, "invalid_field", f"{field} must be a finite time", field)
        return float(v)
    if not isinstance(v, str):
        raise ApiError(422, "invalid_field", f"{field} must be an ISO 8601 time", field)
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "invalid_field", f"{field} is not an ISO 8601 time", field) from None
    if dt.tzinfo is None:
        raise ApiError(422, "invalid_field", f"{field} must carry a UTC offset", field)
    return dt.timestamp()


def location(data: dict[str, Any], field: str = "location") -> dict[str, Any]:
    """A location object → WGS84 point plus the original (contract §2: both are kept)."""
    def name(key: str) -> str:
        return f"{field}.{key}" if field else key

    loc = require_object(data, field or None)
    lon = number(loc, "lon", name("lon"))
    lat = number(loc, "lat", name("lat"))
    crs = loc.get("crs", "wgs84")
    if not isinstance(crs, str):
        raise ApiError(422, "invalid_field", f"{name('crs')} must be a string", name("crs"))
    assert lon is not None and lat is not None
    try:
        validate(lon, lat)
        wlon, wlat = to_wgs84(lon, lat, crs)
    except CoordinateError as exc:
        raise ApiError(422, "invalid_field", exc.message, name(exc.field)) from None
    return {"lon": round(wlon, 7), "lat": round(wlat, 7), "crs": crs,
            "original": {"lon": lon, "lat": lat}}


def intake(data: Any, categories: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``POST /events`` (contract §3), validated."""
    body = require_object(data)
    if "location" not in body:
        raise ApiError(422, "invalid_field", "location is required", "location")
    loc = location(body["location"])
    category = string(body, "category", "category", 64, required=True)
    if category not in categories:
        raise ApiError(422, "invalid_field", f"unknown category {category!r}", "category")
    priority = body.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 1 <= priority <= 3):
        raise ApiError(422, "invalid_field", "priority must be an integer 1..3", "priority")
    reporter = body.get("reporter")
    if reporter is not None and not isinstance(reporter, dict):
        raise ApiError(422, "invalid_field", "reporter must be an object", "reporter")
    return {
        "location": loc,
        "category": category,
        "description": string(body, "description", "description", MAX_DESCRIPTION) or "",
        "source": string(body, "source", "source", 64) or "api",
        "priority": priority,
        "external_id": string(body, "external_id", "external_id", 128),
        "reporter": reporter,
        "reported_at": timestamp(body, "reported_at", "reported_at"),
    }


def action_body(data: Any) -> dict[str, Any]:
    """The optional fields of an action: ``at``, ``unit``, ``team``, ``note``."""
    body = require_object(data if data is not None else {})
    return {
        "at": timestamp(body, "at", "at"),
        "unit": string(body, "unit", "unit", 64),
        "team": string(body, "team", "team", 64),
        "note": string(body, "note", "note", MAX_DESCRIPTION),
    }


def position(data: Any) -> dict[str, Any]:
    """``PUT /units/{id}/position`` body: WGS84 (or converted) point, accuracy, time."""
    body = require_object(data)
    loc = location(body, field="")
    acc = number(body, "accuracy_m", "accuracy_m", required=False)
    if acc is not None and acc < 0:
        raise ApiError(422, "invalid_field", "accuracy_m must be >= 0", "accuracy_m")
    return {"lon": loc["lon"], "lat": loc["lat"], "accuracy_m": acc,
            "at": timestamp(body, "at", "at")}
