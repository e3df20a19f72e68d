"""The public JSON shapes (contract §3, docs/api.md) made from the core's state."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any

STAGES = ("respond", "depart", "arrive")
STAGE_DONE = {"respond": "responded_at", "depart": "departed_at", "arrive": "arrived_at"}
OPEN = ("new", "dispatched", "responded", "departed", "arrived")
TIME_KEYS = ("created_at", "dispatched_at", "responded_at", "departed_at", "arrived_at",
             "resolved_at", "cancelled_at", "updated_at", "reported_at")
PUBLIC_KEYS = ("id", "status", "tier", "category", "description", "source", "priority",
               "external_id", "reporter", "location", "grid", "township", "county", "city",
               "zone", "team", "unit", "mutual_aid", "routing", "breaches", "version", "seq")


def iso(t: float | None, tz: tzinfo) -> str | None:
    """Epoch seconds → ISO 8601 with offset, millisecond precision."""
    if t is None:
        return None
    return _iso(t, tz)


@lru_cache(maxsize=16384)
def _iso(t: float, tz: tzinfo) -> str:
    # one event's render repeats its instants (created = dispatched = timeline entries),
    # and every push and list renders recent events again: format each instant once
    return datetime.fromtimestamp(t, tz).isoformat(timespec="milliseconds")


def next_deadline(ev: dict[str, Any]) -> tuple[str, float] | None:
    """The first stage not yet done while the event is open, with its deadline."""
    if ev.get("status") not in OPEN or not ev.get("deadlines"):
        return None
    for stage in STAGES:
        if ev.get(STAGE_DONE[stage]) is None:
            due = ev["deadlines"].get(stage)
            return (stage, due) if due is not None else None
    return None


def timer_state(ev: dict[str, Any], warn_at: float | None, now: float) -> str:
    """on_time | warning | breached | escalated | closed, as the map colours it."""
    if ev.get("status") not in OPEN:
        return "closed"
    if ev.get("escalations"):
        return "escalated"
    if ev.get("breaches"):
        return "breached"
    if warn_at is not None and now >= warn_at:
        return "warning"
    return "on_time"


def event_json(ev: dict[str, Any], tz: tzinfo, now: float,
               warn_fraction: float = 0.2) -> dict[str, Any]:
    """One event as clients see it."""
    out, warn_at = _event_fixed(ev, tz, warn_fraction)
    out["timer_state"] = timer_state(ev, warn_at, now)
    return out


def _event_fixed(ev: dict[str, Any], tz: tzinfo,
                 warn_fraction: float) -> tuple[dict[str, Any], float | None]:
    """Everything of ``event_json`` that does not depend on ``now``, and the warning time."""
    out: dict[str, Any] = {k: ev.get(k) for k in PUBLIC_KEYS}
    out["mutual_aid"] = bool(ev.get("mutual_aid"))
    r = ev.get("routing") or {}
    out["routing"] = {**(r.get("route") or {}), "snapped_m": r.get("snapped_m"),
                      "unit": r.get("unit")}
    out["breaches"] = list(ev.get("breaches") or [])
    for k in TIME_KEYS:
        out[k] = iso(ev.get(k), tz)
    dl = ev.get("deadlines") or {}
    out["deadlines"] = {s: iso(dl.get(s), tz) for s in STAGES}
    nd = next_deadline(ev)
    warn_at = None
    if nd is not None:
        stage, due = nd
        out["next_deadline"] = {"stage": stage, "at": iso(due, tz)}
        warn_at = (ev.get("warn_at") or {}).get(stage)
        if warn_at is None:
            window = due - (ev.get("dispatched_at") or due)
            warn_at = due - warn_fraction * window
    else:
        out["next_deadline"] = None
    out["timer_state"] = None
    out["escalations"] = [
        {**e, "at": iso(e.get("at"), tz)} for e in (ev.get("escalations") or [])]
    out["timeline"] = [
        {**t, "at": iso(t.get("at"), tz), "received_at": iso(t.get("received_at"), tz)}
        for t in (ev.get("timeline") or [])]
    return out, warn_at


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
        self._cache: OrderedDict[str, tuple[dict[str, Any], dict[str, Any], float | None]] = (
            OrderedDict())

    def __call__(self, ev: dict[str, Any], now: float) -> dict[str, Any]:
        """A fresh top-level dict (callers may drop keys); nested values are shared."""
        eid = ev.get("id")
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


def event_summary(ev: dict[str, Any], tz: tzinfo, now: float,
                  warn_fraction: float = 0.2) -> dict[str, Any]:
    """An event without its timeline, for lists."""
    out = event_json(ev, tz, now, warn_fraction)
    out.pop("timeline", None)
    return out


def unit_json(dataset: Any, units: Any, busy: Mapping[str, str], unit_id: str, now: float,
              tz: tzinfo) -> dict[str, Any]:
    """A unit with its position (reported, stale or base) and availability."""
    u = dataset.units[unit_id]
    pos = units.position(unit_id, now)
    return {
        "id": unit_id, "name": u.name, "kind": u.kind, "team": u.team,
        "lon": pos["lon"], "lat": pos["lat"], "at": iso(pos.get("at"), tz),
        "age_s": None if pos.get("age_s") is None else round(pos["age_s"], 1),
        "accuracy_m": pos.get("accuracy_m"), "source": pos["source"],
        "available": unit_id not in busy, "event": busy.get(unit_id),
    }
