"""The public JSON shapes (contract §3, docs/api.md) made from the core's state.

Rendering never raises (contract §3 Bounds): what an older version stored is rendered as it
can be. A time ``datetime`` cannot print (1e12, -1e12, NaN, a string) is null, a malformed
deadline, timeline entry or routing block is left out or null, and a value the JSON encoder
would refuse (a lone surrogate, an integer past 64 bits) is made plain. Points are kept
exact in the state (routing uses them) and rounded to 7 decimals (~1 cm) here, for display.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any

import orjson

from dispatch.core.lifecycle import CLOCKED_STATUSES, OPEN_STATUSES, STAGE_DONE, STAGES

log = logging.getLogger("dispatch.render")

TIME_KEYS = ("created_at", "dispatched_at", "responded_at", "departed_at", "arrived_at",
             "resolved_at", "cancelled_at", "updated_at", "reported_at")
PUBLIC_KEYS = ("id", "status", "tier", "category", "description", "source", "priority",
               "external_id", "reporter", "location", "grid", "township", "county", "city",
               "zone", "team", "unit", "mutual_aid", "routing", "breaches", "version", "seq")


DISPLAY_DECIMALS = 7
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson encodes
_PLAIN_DEPTH = 64


def iso(t: Any, tz: tzinfo) -> str | None:
    """Epoch seconds → ISO 8601 with offset, millisecond precision; None for anything else.

    Never raises: a value that is no number, not finite, or outside what ``datetime`` can
    print in ``tz`` (an older version's stored 1e12 or -1e12) renders as None.
    """
    if t is None:  # most time fields of an open event
        return None
    try:
        if type(t) is float:  # the common case next: every stored time is one
            return _iso(t, tz)
        if isinstance(t, bool) or not isinstance(t, int | float):
            return None
        return _iso(float(t), tz)
    except (OverflowError, OSError, ValueError):
        return None


@lru_cache(maxsize=16384)
def _iso(t: float, tz: tzinfo) -> str:
    # one event's render repeats its instants (created = dispatched = timeline entries),
    # and every push and list renders recent events again: format each instant once
    return datetime.fromtimestamp(t, tz).isoformat(timespec="milliseconds")


def _num(v: Any) -> float | None:
    """``v`` as a finite float, or None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else []


def display_point(loc: Any) -> Any:
    """A location with lon/lat rounded to 7 decimals for display; the state keeps them exact."""
    if not isinstance(loc, dict):
        return None
    out = dict(loc)
    for k in ("lon", "lat"):
        v = _num(loc.get(k))
        out[k] = None if v is None else round(v, DISPLAY_DECIMALS)
    return out


def plain(v: Any, depth: int = 0) -> Any:
    """``v`` made encodable as JSON: lone surrogates → U+FFFD, out-of-range integers → text,
    NaN/Infinity → None, keys → text, anything else unknown → None."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(v, int):
        return v if _INT_MIN <= v <= _INT_MAX else str(v)
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if depth >= _PLAIN_DEPTH:
        return None
    if isinstance(v, dict):
        return {plain(str(k)): plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x, depth + 1) for x in v]
    return None


def _is_open(ev: Mapping[str, Any], statuses: frozenset[str] = OPEN_STATUSES) -> bool:
    # a stored status may be anything (a list is unhashable): only a string can be open
    status = ev.get("status")
    return isinstance(status, str) and status in statuses


def next_deadline(ev: Mapping[str, Any]) -> tuple[str, float] | None:
    """The first stage not yet done while the event is on the clock, with its deadline
    (a transferred event's clocks are stopped: none)."""
    if not _is_open(ev, CLOCKED_STATUSES):
        return None
    deadlines = _dict(ev.get("deadlines"))
    if not deadlines:
        return None
    for stage in STAGES:
        if ev.get(STAGE_DONE[stage]) is None:
            due = _num(deadlines.get(stage))
            return (stage, due) if due is not None else None
    return None


def timer_state(ev: Mapping[str, Any], warn_at: float | None, now: float) -> str:
    """on_time | warning | breached | escalated | transferred | closed, as the map colours it
    (transferred: open, its clocks stopped until the department answers)."""
    if not isinstance(ev, dict) or not _is_open(ev):
        return "closed"
    if not _is_open(ev, CLOCKED_STATUSES):
        return "transferred"
    if ev.get("escalations"):
        return "escalated"
    if ev.get("breaches"):
        return "breached"
    if warn_at is not None and now >= warn_at:
        return "warning"
    return "on_time"


def event_json(ev: Mapping[str, Any], tz: tzinfo, now: float,
               warn_fraction: float = 0.2) -> dict[str, Any]:
    """One event as clients see it; never raises, whatever was stored."""
    out, warn_at = _event_fixed(ev, tz, warn_fraction)
    out["timer_state"] = timer_state(ev, warn_at, now)
    return out


def _event_fixed(ev: Mapping[str, Any], tz: tzinfo,
                 warn_fraction: float) -> tuple[dict[str, Any], float | None]:
    """Everything of ``event_json`` that does not depend on ``now``, and the warning time.

    Never raises: a state it cannot make sense of at all renders as its id and nulls.
    """
    try:
        out, warn_at = _event_fields(ev, tz, warn_fraction)
    except Exception:  # last resort; _event_fields is written not to get here
        log.exception("event %r could not be rendered; sent as its id only",
                      plain(ev.get("id")) if isinstance(ev, dict) else None)
        eid = ev.get("id") if isinstance(ev, dict) else None
        out = {k: None for k in PUBLIC_KEYS}
        out.update({"id": eid if isinstance(eid, str) else None, "mutual_aid": False,
                    "routing": {}, "breaches": [], "deadlines": {s: None for s in STAGES},
                    "next_deadline": None, "timer_state": None, "escalations": [],
                    "timeline": [], "evidence": [], "transfer": None})
        out.update({k: None for k in TIME_KEYS})
        return out, None
    try:  # cheap proof that it encodes; else make every value plain
        orjson.dumps(out)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, a 100-bit integer, ...
        out = plain(out)
    return out, warn_at


def _event_fields(ev: Mapping[str, Any], tz: tzinfo,
                  warn_fraction: float) -> tuple[dict[str, Any], float | None]:
    out: dict[str, Any] = {k: ev.get(k) for k in PUBLIC_KEYS}
    out["location"] = display_point(ev.get("location"))
    out["mutual_aid"] = bool(ev.get("mutual_aid"))
    r = _dict(ev.get("routing"))
    out["routing"] = {**_dict(r.get("route")), "snapped_m": r.get("snapped_m"),
                      "unit": r.get("unit")}
    out["breaches"] = _list(ev.get("breaches"))
    for k in TIME_KEYS:
        out[k] = iso(ev.get(k), tz)
    dl = _dict(ev.get("deadlines"))
    out["deadlines"] = {s: iso(dl.get(s), tz) for s in STAGES}
    nd = next_deadline(ev)
    warn_at = None
    if nd is not None:
        stage, due = nd
        out["next_deadline"] = {"stage": stage, "at": iso(due, tz)}
        warn_at = _num(_dict(ev.get("warn_at")).get(stage))
        if warn_at is None:
            window = due - (_num(ev.get("dispatched_at")) or due)
            warn_at = _num(due - warn_fraction * window)
    else:
        out["next_deadline"] = None
    out["timer_state"] = None
    out["escalations"] = [
        {**e, "at": iso(e.get("at"), tz)} for e in _list(ev.get("escalations"))
        if isinstance(e, dict)]
    out["timeline"] = [
        {**t, "at": iso(t.get("at"), tz), "received_at": iso(t.get("received_at"), tz)}
        for t in _list(ev.get("timeline")) if isinstance(t, dict)]
    out["evidence"] = [evidence_json(e, tz) for e in _list(ev.get("evidence"))
                       if isinstance(e, dict)]
    out["transfer"] = transfer_json(ev.get("transfer"), tz)
    return out, warn_at


def transfer_json(tr: Any, tz: tzinfo) -> dict[str, Any] | None:
    """The event's transfer to another department (contract §8), or None; never raises."""
    if not isinstance(tr, dict):
        return None
    return {"department": tr.get("department"), "at": iso(tr.get("at"), tz),
            "actor": tr.get("actor"), "note": tr.get("note"), "answer": tr.get("answer"),
            "answered_at": iso(tr.get("answered_at"), tz), "answer_note": tr.get("answer_note")}


def evidence_json(e: Mapping[str, Any], tz: tzinfo) -> dict[str, Any]:
    """One evidence entry (contract §8): id, sha256, size, type, name, at (taken), actor,
    received_at, and the URL that serves its bytes."""
    sha = e.get("sha256")
    return {"id": e.get("id"), "sha256": sha, "size": e.get("size"), "type": e.get("type"),
            "name": e.get("name"), "at": iso(e.get("at"), tz), "actor": e.get("actor"),
            "received_at": iso(e.get("received_at"), tz),
            "url": f"/api/v1/evidence/{sha}" if isinstance(sha, str) else None}


class Renderer:
    """``event_json`` that renders each state of an event once.

    An intake renders its event for the 201 and again for the push; a snapshot renders
    every open event for each of a thousand reconnecting clients. The engine never changes
    an event's state in place (each change is a new dict), so a rendering is reused while
    the same state object is asked for again; only ``timer_state`` (it depends on the
    time) is worked out on every call. The most recent ``size`` events are kept.
    """

    def __init__(self, tz: tzinfo, warn_fraction: float, size: int = 8192) -> None:
        self.tz, self.warn_fraction, self.size = tz, warn_fraction, size
        self._cache: OrderedDict[str, tuple[Mapping[str, Any], dict[str, Any], float | None]] = (
            OrderedDict())

    def __call__(self, ev: Mapping[str, Any], now: float) -> dict[str, Any]:
        """A fresh top-level dict (callers may drop keys); nested values are shared."""
        eid = ev.get("id") if isinstance(ev, dict) else None
        hit = self._cache.get(eid) if isinstance(eid, str) else None
        if hit is not None and hit[0] is ev:
            self._cache.move_to_end(eid)  # type: ignore[arg-type]
        else:
            fixed, warn_at = _event_fixed(ev, self.tz, self.warn_fraction)
            hit = (ev, fixed, warn_at)
            if isinstance(eid, str):
                self._cache[eid] = hit
                self._cache.move_to_end(eid)
                if len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        out = dict(hit[1])
        out["timer_state"] = timer_state(ev, hit[2], now)
        return out


def unit_json(dataset: Any, units: Any, busy: Mapping[str, str], unit_id: str, now: float,
              tz: tzinfo) -> dict[str, Any]:
    """A unit with its position (reported, stale or base) and availability.

    Never raises for a stored position: an unprintable time is null, lon/lat are rounded
    to 7 decimals for display, a non-finite number is null.
    """
    u = dataset.units[unit_id]
    pos = units.position(unit_id, now)
    lon, lat = _num(pos.get("lon")), _num(pos.get("lat"))
    age, acc = _num(pos.get("age_s")), _num(pos.get("accuracy_m"))
    return {
        "id": unit_id, "name": u.name, "kind": u.kind, "team": u.team,
        "lon": None if lon is None else round(lon, DISPLAY_DECIMALS),
        "lat": None if lat is None else round(lat, DISPLAY_DECIMALS),
        "at": iso(pos.get("at"), tz),
        "age_s": None if age is None else round(age, 1),
        "accuracy_m": acc, "source": pos.get("source"),
        "available": unit_id not in busy, "event": busy.get(unit_id),
    }
