"""Rendering never raises for anything already stored (issue 11 defect 1, contract §3 Bounds).

An older version let ``reported_at: 1e12`` and a position ``at: -1e12`` in; from then on every
list, snapshot and replay that touched them answered 500. Whatever is stored is rendered now:
an unprintable time is null, a malformed part is left out, and the rest of the event (and
every other event) is delivered.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import websockets

from dispatch.server import validation
from dispatch.server.render import Renderer, event_json, iso, unit_json
from geo.loader import load_dataset
from geo.units import UnitIndex
from tests.geo import toy
from tests.server.conftest import intake_body, point_in, start_server

TZ = ZoneInfo("Asia/Shanghai")
T0 = 1_800_000_000.0
NAN, INF = float("nan"), float("inf")

# times that datetime cannot print, or that are no time at all
BAD_TIMES: list[Any] = [1e12, -1e12, 1e20, NAN, INF, -INF, 10**30, "2026-01-01T00:00:00Z",
                        "", True, [T0], {"t": T0}]


def event(**kw: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "id": "E0000001", "status": "dispatched", "tier": "township", "category": "noise",
        "description": "噪音", "source": "test", "priority": 2, "external_id": None,
        "reporter": None, "location": {"lon": 121.4, "lat": 28.6, "crs": "wgs84"},
        "grid": "g1", "township": "t1", "county": "c1", "city": "city", "zone": None,
        "team": "T1", "unit": "U1", "mutual_aid": False, "routing": {"route": {"rule": "grid"}},
        "created_at": T0, "dispatched_at": T0, "responded_at": None, "departed_at": None,
        "arrived_at": None, "resolved_at": None, "cancelled_at": None, "updated_at": T0,
        "reported_at": None,
        "deadlines": {"respond": T0 + 60, "depart": T0 + 180, "arrive": T0 + 900},
        "warn_at": {"respond": T0 + 48, "depart": T0 + 144, "arrive": T0 + 720},
        "breaches": [], "escalations": [], "fired": [],
        "timeline": [{"at": T0, "received_at": T0, "action": "created"}],
        "version": 2, "seq": 2,
    }
    ev.update(kw)
    return ev


def poisoned() -> list[tuple[str, dict[str, Any]]]:
    """(name, event) pairs: each stores something an older version could have stored."""
    cases: list[tuple[str, dict[str, Any]]] = []
    for i, t in enumerate(BAD_TIMES):
        cases += [
            (f"reported_at[{i}]", event(reported_at=t)),
            (f"created_at[{i}]", event(created_at=t)),
            (f"dispatched_at[{i}]", event(dispatched_at=t, warn_at=None)),
            (f"deadline[{i}]", event(deadlines={"respond": t, "depart": t, "arrive": t},
                                     warn_at=None)),
            (f"warn_at[{i}]", event(warn_at={"respond": t})),
            (f"timeline.at[{i}]", event(timeline=[{"at": t, "received_at": t,
                                                   "action": "respond"}])),
            (f"escalation.at[{i}]", event(escalations=[{"at": t, "to": "county"}])),
        ]
    cases += [
        ("deadlines a list", event(deadlines=[T0, T0])),
        ("deadlines a string", event(deadlines="soon")),
        ("warn_at a list", event(warn_at=[1, 2])),
        ("routing a string", event(routing="grid")),
        ("route a list", event(routing={"route": ["grid"], "snapped_m": "x"})),
        ("breaches a number", event(breaches=3)),
        ("timeline entries odd", event(timeline=[None, "created", 7, {"action": "x"}])),
        ("timeline a dict", event(timeline={"at": T0})),
        ("escalations odd", event(escalations=["county", None])),
        ("location a string", event(location="121.4,28.6")),
        ("location NaN", event(location={"lon": NAN, "lat": INF, "crs": "wgs84"})),
        ("location huge int", event(location={"lon": 10**30, "lat": "28.6"})),
        ("description lone surrogate", event(description="坏\ud800字")),
        ("reporter lone surrogate key", event(reporter={"\udc00name": "张三"})),
        ("reporter 30-digit int", event(reporter={"phone": 10**30})),
        ("reporter nested odd", event(reporter={"a": [{"b": {1, 2}}, b"x", (1, 2)]})),
        ("source int key", event(source={1: "x"})),
        ("status odd", event(status=["dispatched"])),
        ("only an id", {"id": "E0000009"}),
        ("empty", {}),
    ]
    return cases


CASES = poisoned()


@pytest.mark.parametrize("name,ev", CASES, ids=[c[0] for c in CASES])
def test_a_poisoned_event_renders_and_encodes(name: str, ev: dict[str, Any]) -> None:
    for out in (event_json(ev, TZ, T0 + 30), Renderer(TZ, 0.2)(ev, T0 + 30)):
        data = orjson.loads(orjson.dumps(out))  # encodes, as json_response and the hub do
        assert data["id"] == ev.get("id")
        assert data["timer_state"] in ("on_time", "warning", "breached", "escalated", "closed")
        for k in ("created_at", "dispatched_at", "reported_at", "updated_at"):
            assert data[k] is None or data[k].startswith(("2027-", "2026-")), (k, data[k])
        for stage in ("respond", "depart", "arrive"):
            d = data["deadlines"][stage]
            assert d is None or d.startswith("2027-"), d
        for t in data["timeline"]:
            assert t["at"] is None or t["at"].startswith("2027-")


def test_a_bad_time_is_null_and_the_rest_is_rendered() -> None:
    for t in BAD_TIMES:
        assert iso(t, TZ) is None, t
        out = event_json(event(reported_at=t, created_at=t), TZ, T0 + 30)
        assert out["reported_at"] is None and out["created_at"] is None
        assert out["dispatched_at"] == "2027-01-15T16:00:00.000+08:00"
        assert out["deadlines"]["respond"] == "2027-01-15T16:01:00.000+08:00"
        assert out["team"] == "T1" and out["status"] == "dispatched"
    # the edges of what datetime prints in +08:00
    assert iso(253402300799.0, TZ) is None
    assert iso(253402128000.0, TZ) == "9999-12-30T08:00:00.000+08:00"


def test_lone_surrogates_and_long_integers_are_made_plain() -> None:
    out = event_json(event(description="坏\ud800字", reporter={"phone": 10**30}), TZ, T0)
    data = orjson.loads(orjson.dumps(out))
    assert data["description"] == "坏\ufffd字"
    assert data["reporter"] == {"phone": str(10**30)}
    assert data["dispatched_at"] == "2027-01-15T16:00:00.000+08:00"


def test_location_is_rounded_for_display_only() -> None:
    ev = event(location={"lon": 121.403224995118, "lat": 28.580747019395, "crs": "wgs84",
                         "original": {"lon": 121.403224995118, "lat": 28.580747019395}})
    out = event_json(ev, TZ, T0)
    assert out["location"]["lon"] == 121.403225 and out["location"]["lat"] == 28.580747
    assert out["location"]["original"] == ev["location"]["original"]
    assert ev["location"]["lon"] == 121.403224995118  # the state keeps the exact point


@pytest.fixture(scope="module")
def toy_ds(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_dataset(*toy.write(tmp_path_factory.mktemp("toy")))


@pytest.mark.parametrize("at", [-1e12, 1e12, 253402300799.0])
def test_a_unit_position_at_an_unprintable_time_renders(toy_ds: Any, at: float) -> None:
    units = UnitIndex(toy_ds, 300.0)
    assert units.update_position("u-0005", 120.0051234567891, 28.0051234567891, at)
    for now in (T0, at + 10):
        out = unit_json(toy_ds, units, {}, "u-0005", now, TZ)
        orjson.dumps(out)
        assert out["at"] is None and out["id"] == "u-0005" and out["team"] == "t-ta1"
        assert out["source"] in ("reported", "stale")
        assert out["lon"] is not None and math.isfinite(out["lon"])


def test_a_reported_unit_position_is_rounded_for_display(toy_ds: Any) -> None:
    units = UnitIndex(toy_ds, 300.0)
    units.update_position("u-0005", 120.0051234567891, 28.0051234567891, T0)
    out = unit_json(toy_ds, units, {}, "u-0005", T0 + 1, TZ)
    assert (out["lon"], out["lat"]) == (120.0051235, 28.0051235)
    assert out["at"] == "2027-01-15T16:00:00.000+08:00" and out["source"] == "reported"


# -- end to end: what an older version stored is listed, snapshotted and replayed ----------
async def _store_as_an_older_version_did(srv: Any, **bad: Any) -> dict[str, Any]:
    """Create an event through the runtime with fields the old door let through."""
    lon, lat = point_in(srv, "331003")
    fields = validation.intake(intake_body(lon, lat), srv.state.runtime.policy.categories)
    fields.update(bad)
    out = await srv.state.runtime.create(fields, "intake:hotline")
    return out.event


async def _snapshot(srv: Any, who: str) -> dict[str, Any]:
    async with websockets.connect(srv.ws_url, additional_headers=srv.auth(who),
                                  max_size=None) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_stored_bad_times_never_break_lists_snapshots_or_a_restart(tmp_path: Path) -> None:
    srv = await start_server(tmp_path)
    try:
        good = await _store_as_an_older_version_did(srv)
        bad = await _store_as_an_older_version_did(srv, reported_at=1e12)
        worse = await _store_as_an_older_version_did(srv, reported_at=-1e12)
        unit = next(iter(srv.state.runtime.dataset.units))
        srv.state.runtime.units.update_position(unit, 121.3, 28.6, -1e12)
        for who in ("city", "supervisor", "admin", "huangyan"):
            status, body = await srv.call("GET", "/api/v1/events", who)
            assert status == 200, body
            ids = {e["id"]: e for e in body["events"]}
            assert {good["id"], bad["id"], worse["id"]} <= set(ids)
            assert ids[bad["id"]]["reported_at"] is None
            assert ids[bad["id"]]["created_at"] is not None
            snap = await _snapshot(srv, who)
            assert snap["type"] == "snapshot"
            assert {good["id"], bad["id"], worse["id"]} <= {e["id"] for e in snap["events"]}
        status, one = await srv.call("GET", f"/api/v1/events/{bad['id']}", "city")
        assert status == 200 and one["reported_at"] is None and one["timeline"]
        status, units = await srv.call("GET", "/api/v1/units", "admin")
        assert status == 200
        assert next(u for u in units["units"] if u["id"] == unit)["at"] is None
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
    srv = await start_server(tmp_path)  # the journal replays with the odd records in it
    try:
        status, body = await srv.call("GET", "/api/v1/events", "city")
        assert status == 200 and len(body["events"]) == 3
        snap = await _snapshot(srv, "city")
        assert len(snap["events"]) == 3
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
