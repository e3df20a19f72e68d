"""Bad input never gets in: body parsing and field validation (contract §3 Errors, Bounds).

Every failure is an ``ApiError`` with the HTTP status, a code and the field it names;
``errors.py`` renders it. Nothing here touches state.

How the door works: ``parse_json`` decodes the body, then one walk over the parsed value
rejects, wherever they sit (unknown keys and keys themselves included), strings with lone
UTF-16 surrogates or control characters other than tab, CR and LF, integers of more than 15
digits and non-finite numbers, naming the path ("reporter.name", "tags[2]"). Decoding is
msgspec's (in C) when the body has no run of 16 digits; any body msgspec refuses, and any
with such a run, takes the ``json`` path, where integers of more than 15 digits become a
marker before ``int()`` ever sees them and NaN/Infinity literals another, so every refusal
keeps its exact code and field. The body's shape (types, required fields, lengths, ranges)
is the one in ``schemas.py``: ``msgspec.convert`` checks it and its errors are mapped to the
field path they name. Then what a schema cannot say: a known category, the coordinate
conversion, client times within [2000-01-01T00:00:00Z, now + max_skew_s].
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from dispatch.config_errors import MISSING, error_parts
from dispatch.core.event import Point, Report
from dispatch.core.lifecycle import ACTIONS  # noqa: F401 - the edge's import; defined there
from dispatch.server.schemas import (
    Accept,
    Action,
    Intake,
    Location,
    Position,
    Redeliver,
    Return,
    Transfer,
)
from geo.coords import CoordinateError, to_wgs84, validate

MAX_INT_DIGITS = 15

# Contract §3 Bounds: client times from 2000-01-01T00:00:00Z ...
MIN_CLIENT_TIME = 946_684_800.0
# ... to now + max_skew_s; with no ``now`` at least a time every zone can still print
# (9999-12-30T00:00:00Z), so nothing stored can overflow ``datetime`` when rendered.
MAX_CLIENT_TIME = 253_402_128_000.0

# lone surrogates and the C0/DEL/C1 controls except \t \n \r
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_PATH_KEY_MAX = 64
_INT_LIMIT = 10**MAX_INT_DIGITS
# A body with a run of 16 digits might hold a long integer: it takes the ``json`` path
# (parse_json). Found in C: digits become NUL, then a substring search (a NUL in the body
# itself can only send a body to the slow path, never let a long integer through).
_DIGITS_TO_NUL = bytes.maketrans(b"0123456789", b"\0" * 10)
_LONG_RUN = b"\0" * (MAX_INT_DIGITS + 1)

_DECODE = msgspec.json.Decoder()
# "Expected `int`, got `str` - at `$.priority`", "Object missing required field `lon` - at …"
_Model = TypeVar("_Model", bound=msgspec.Struct)


def _needs_walk(body: bytes) -> bool:
    """Whether a body msgspec decoded needs the walk of ``check_values`` for its characters.

    msgspec refuses raw C0 controls, invalid UTF-8 (raw surrogates) and NaN/Infinity/1e400.
    What is left to find comes only from an escape (``\\``), a raw DEL or a raw C1 control
    (UTF-8 lead byte 0xC2); integers of more than 15 digits are looked for by the caller.
    """
    return b"\\" in body or b"\x7f" in body or b"\xc2" in body


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


class _LongInt:
    """Stands in for an integer literal of more than 15 digits: never converted by ``int()``."""

    __slots__ = ()


def _parse_constant(name: str) -> float:
    return _NonFinite("nan")


def _parse_int(text: str) -> int | _LongInt:
    if len(text) - (text[:1] == "-") > MAX_INT_DIGITS:
        return _LongInt()
    return int(text)


def parse_json(body: bytes, max_depth: int) -> Any:
    """Decode UTF-8 JSON and check every value in it (contract §3 Bounds).

    400 for invalid UTF-8, malformed JSON or nesting deeper than allowed; 422 naming the path
    for a string with a lone surrogate or a control character other than tab/CR/LF (in a key
    too), an integer of more than 15 digits, or NaN/Infinity, wherever it sits.
    """
    try:
        data = _DECODE.decode(body)
    except (msgspec.DecodeError, RecursionError):
        pass  # the json path below names what is wrong (msgspec refuses huge integers too)
    else:
        if (body.count(b"[") + body.count(b"{") > max_depth
                and _depth_exceeds(body.decode("utf-8"), max_depth)):
            raise ApiError(400, "too_deep", f"JSON nested deeper than {max_depth} levels")
        # a run of 16+ digits is mostly an id inside a string (a work-order number); the
        # walk finds the one that is an integer
        if _needs_walk(body) or _LONG_RUN in body.translate(_DIGITS_TO_NUL):
            check_values(data)
        return data
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_utf8", f"body is not valid UTF-8 at byte {exc.start}") \
            from None
    if _depth_exceeds(text, max_depth):
        raise ApiError(400, "too_deep", f"JSON nested deeper than {max_depth} levels")
    try:
        data = json.loads(text, parse_constant=_parse_constant, parse_int=_parse_int)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ApiError(400, "malformed_json", f"malformed JSON: {msg}") from None
    check_values(data)
    return data


def _path_key(key: str) -> str:
    """A key as it appears in an error's field: bad characters escaped, long keys cut."""
    safe = _BAD_CHAR.sub(lambda m: f"\\u{ord(m.group()):04x}", key)
    return safe if len(safe) <= _PATH_KEY_MAX else safe[:_PATH_KEY_MAX] + "…"


def _join(path: str, key: str) -> str:
    k = _path_key(key)
    return f"{path}.{k}" if path else k


def check_values(data: Any) -> None:
    """Reject, naming the path, any value a JSON body must not carry (see ``parse_json``)."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            m = _BAD_CHAR.search(v)
            if m is not None:
                raise _bad_char(path, m.group())
        elif isinstance(v, dict):
            for k, item in v.items():
                sub = _join(path, k)
                m = _BAD_CHAR.search(k)
                if m is not None:
                    raise _bad_char(sub, m.group(), in_key=True)
                stack.append((sub, item))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(v))
        elif isinstance(v, _LongInt) or (isinstance(v, int) and not -_INT_LIMIT < v < _INT_LIMIT):
            raise ApiError(422, "invalid_field", f"{path or 'the body'} is an integer of more "
                           f"than {MAX_INT_DIGITS} digits", path or None)
        elif isinstance(v, float) and (isinstance(v, _NonFinite) or not math.isfinite(v)):
            raise ApiError(422, "invalid_field",
                           f"{path or 'the body'} must be a finite number", path or None)


def _bad_char(path: str, ch: str, in_key: bool = False) -> ApiError:
    o = ord(ch)
    what = "a lone UTF-16 surrogate" if 0xD800 <= o <= 0xDFFF else "a control character"
    where = f"the key {path}" if in_key else (path or "the body")
    return ApiError(422, "invalid_field", f"{where} contains {what} (U+{o:04X})", path or None)


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


def timestamp(data: dict[str, Any], key: str, field: str) -> float | None:
    """An ISO 8601 time with offset (or epoch seconds) as UTC epoch seconds.

    Never raises anything but ``ApiError``: times ``datetime`` cannot represent are a 422.
    """
    return _time(data.get(key), field)


def _time(v: Any, field: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        if isinstance(v, _NonFinite) or not math.isfinite(v):
            raise ApiError(422, "invalid_field", f"{field} must be a finite time", field)
        try:
            return float(v)
        except OverflowError:  # an int too large for a float (not from parse_json)
            raise ApiError(422, "invalid_field", f"{field} is out of range", field) from None
    if not isinstance(v, str):
        raise ApiError(422, "invalid_field", f"{field} must be an ISO 8601 time", field)
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "invalid_field", f"{field} is not an ISO 8601 time", field) from None
    if dt.tzinfo is None:
        raise ApiError(422, "invalid_field", f"{field} must carry a UTC offset", field)
    try:
        return dt.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ApiError(422, "invalid_field", f"{field} is out of range", field) from None


def client_time(data: dict[str, Any], key: str, field: str, now: float | None = None,
                max_skew_s: float = 30.0) -> float | None:
    """A time the client says something happened (contract §3 Bounds).

    It must lie in [2000-01-01T00:00:00Z, now + max_skew_s]; without ``now`` the upper bound
    is only the last instant every time zone can print.
    """
    return _client_time(data.get(key), field, now, max_skew_s)


def _client_time(v: Any, field: str, now: float | None, max_skew_s: float) -> float | None:
    t = _time(v, field)
    if t is None:
        return None
    upper = MAX_CLIENT_TIME if now is None else min(MAX_CLIENT_TIME, now + max_skew_s)
    if t < MIN_CLIENT_TIME:
        raise ApiError(422, "invalid_field",
                       f"{field} is before 2000-01-01T00:00:00Z", field)
    if t > upper:
        raise ApiError(422, "invalid_field",
                       f"{field} is in the future (more than {max_skew_s:g} s ahead)"
                       if now is not None else f"{field} is too far in the future", field)
    return t


def idempotency_key(value: str | None, field: str = "Idempotency-Key") -> str | None:
    """The ``Idempotency-Key`` header: 1..128 characters, none of them a control character.

    aiohttp decodes header bytes that are not UTF-8 as lone surrogates (surrogateescape);
    such a key could never be journaled, so it is a 422 here rather than a 503 later.
    """
    if value is None:
        return None
    if not 0 < len(value) <= 128:
        raise ApiError(422, "invalid_field", f"{field} must be 1..128 characters", field)
    if _BAD_CHAR.search(value) is not None:
        raise ApiError(422, "invalid_field",
                       f"{field} must be UTF-8 text without control characters", field)
    return value


def _shape(data: dict[str, Any], model: type[_Model], prefix: str = "") -> _Model:
    """``data`` as ``model`` (schemas.py); a mismatch is a 422 naming the field's path."""
    try:
        return msgspec.convert(data, model)
    except msgspec.ValidationError as exc:
        raise _field_error(str(exc), prefix) from None


def _field_error(text: str, prefix: str) -> ApiError:
    msg, at = error_parts(text)
    at = at.lstrip(".")
    path = f"{prefix}.{at}" if prefix and at else (prefix or at)
    missing = MISSING.fullmatch(msg)
    if missing is not None:
        path = _join(path, missing.group(1))
        return ApiError(422, "invalid_field", f"{path} is required", path)
    return ApiError(422, "invalid_field", f"{path or 'the body'}: {msg[:1].lower()}{msg[1:]}",
                    path or None)


def point(lon: float, lat: float, crs: str, field: str) -> Point:
    """A checked point in ``crs`` → WGS84 plus the original; errors name ``field``.lon etc."""
    def name(key: str) -> str:
        return f"{field}.{key}" if field else key

    try:
        validate(lon, lat)
        wlon, wlat = to_wgs84(lon, lat, crs)
    except CoordinateError as exc:
        raise ApiError(422, "invalid_field", exc.message, name(exc.field)) from None
    return {"lon": wlon, "lat": wlat, "crs": crs, "original": {"lon": lon, "lat": lat}}


def location(data: Any, field: str = "location") -> Point:
    """A location object → WGS84 point plus the original (contract §2: both are kept).

    The converted point is exact: routing happens on it, and ``dispatch geo locate`` gives
    the same answer for the same point. Rounding is for display only (render.py).
    """
    loc = _shape(require_object(data, field or None), Location, field)
    return point(loc.lon, loc.lat, loc.crs, field)


def intake(data: Any, categories: dict[str, Any], *, now: float | None = None,
           max_skew_s: float = 30.0) -> Report:
    """The fields of ``POST /events`` (contract §3), validated; ``now`` bounds ``reported_at``.

    Like ``action_body`` and ``position``, it takes what ``parse_json`` returned: every value
    in it (bad characters, long integers, NaN) was checked there, once per request.
    """
    body = require_object(data)
    if "location" not in body:
        raise ApiError(422, "invalid_field", "location is required", "location")
    req = _shape(body, Intake)
    if req.category not in categories:
        raise ApiError(422, "invalid_field", f"unknown category {req.category!r}", "category")
    loc = req.location
    return {
        "location": point(loc.lon, loc.lat, loc.crs, "location"),
        "category": req.category,
        "description": req.description or "",
        "source": req.source or "api",
        "priority": req.priority,
        "external_id": req.external_id,
        "reporter": req.reporter,
        "reported_at": _client_time(req.reported_at, "reported_at", now, max_skew_s),
    }


def action_body(data: Any, *, now: float | None = None,
                max_skew_s: float = 30.0) -> dict[str, Any]:
    """The optional fields of an action: ``at`` (bounded by ``now``), ``unit``, ``team``,
    ``note``."""
    body = require_object(data if data is not None else {})
    req = _shape(body, Action)
    return {"at": _client_time(req.at, "at", now, max_skew_s), "unit": req.unit,
            "team": req.team, "note": req.note}


def position(data: Any, *, now: float | None = None,
             max_skew_s: float = 30.0) -> dict[str, Any]:
    """``PUT /units/{id}/position`` body: exact WGS84 (or converted) point, accuracy, time."""
    body = require_object(data)
    req = _shape(body, Position)
    loc = point(req.lon, req.lat, req.crs, "")
    return {"lon": loc["lon"], "lat": loc["lat"], "accuracy_m": req.accuracy_m,
            "at": _client_time(req.at, "at", now, max_skew_s)}


def redeliver_body(data: Any) -> int:
    """``POST /webhooks/{id}/redeliver`` body: the ``from_seq`` to send again from."""
    return _shape(require_object(data), Redeliver).from_seq


# -- evidence (contract §8) -----------------------------------------------------------------
EVIDENCE_NAME_MAX = 200


def evidence_query(query: Mapping[str, str], extension: str, now: float,
                   max_skew_s: float) -> tuple[str, float | None]:
    """``?name=`` and ``?taken_at=`` of an evidence upload: (file name, time taken or None).

    The name is 1..200 characters of text without control characters or path separators
    (default ``evidence.<extension>``); ``taken_at`` (ISO 8601 with offset, or epoch seconds)
    is bounded like every client time (contract §3). 422 naming the parameter otherwise.
    """
    name = query.get("name")
    if name is None or name == "":
        name = f"evidence.{extension}"
    if len(name) > EVIDENCE_NAME_MAX or name.strip() in ("", ".", ".."):
        raise ApiError(422, "invalid_field",
                       f"name must be 1..{EVIDENCE_NAME_MAX} characters", "name")
    if _BAD_CHAR.search(name) is not None or "/" in name or "\\" in name:
        raise ApiError(422, "invalid_field",
                       "name must be a file name: no control characters, no / or \\", "name")
    raw: Any = query.get("taken_at")
    if isinstance(raw, str) and re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,17})?", raw):
        raw = float(raw)
    return name, _client_time(raw, "taken_at", now, max_skew_s)


TRANSFER_BODIES: dict[str, type[Transfer | Accept | Return]] = {
    "transfer": Transfer, "accept": Accept, "return": Return}


def transfer_body(action: str, data: Any) -> dict[str, Any]:
    """The body of transfer ``{department, note}``, accept ``{note?}`` or return ``{note}``
    (contract §8); a missing required field is a 422 naming it."""
    body = require_object(data if data is not None else {})
    req = _shape(body, TRANSFER_BODIES[action])
    return {"note": req.note, "department": getattr(req, "department", None)}
