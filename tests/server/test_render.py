"""The Renderer reuses a rendering per event state and still tells the time-dependent part."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from dispatch.server.render import Renderer, event_json

TZ = ZoneInfo("Asia/Shanghai")
T0 = 1_800_000_000.0


def event(status: str = "dispatched", version: int = 2, **kw: object) -> dict[str, object]:
    ev: dict[str, object] = {
        "id": "E0000001", "status": status, "tier": "township", "category": "noise",
        "description": "噪音", "source": "test", "priority": 2, "external_id": None,
        "reporter": None, "location": {"lon": 121.4, "lat": 28.6}, "grid": "g1",
        "township": "t1", "county": "c1", "city": "city", "zone": None, "team": "T1",
        "unit": "U1", "mutual_aid": False, "routing": {"route": {"rule": "grid"}},
        "created_at": T0, "dispatched_at": T0, "responded_at": None, "departed_at": None,
        "arrived_at": None, "resolved_at": None, "cancelled_at": None, "updated_at": T0,
        "reported_at": None,
        "deadlines": {"respond": T0 + 60, "depart": T0 + 180, "arrive": T0 + 900},
        "warn_at": {"respond": T0 + 48, "depart": T0 + 144, "arrive": T0 + 720},
        "breaches": [], "escalations": [], "fired": [],
        "timeline": [{"at": T0, "received_at": T0, "action": "created"}],
        "version": version, "seq": version,
    }
    ev.update(kw)
    return ev


def test_same_state_rendered_once_timer_state_follows_the_clock() -> None:
    r = Renderer(TZ, 0.2)
    ev = event()
    first = r(ev, T0 + 1)
    assert first == event_json(ev, TZ, T0 + 1) and first["timer_state"] == "on_time"
    later = r(ev, T0 + 50)
    assert later == event_json(ev, TZ, T0 + 50) and later["timer_state"] == "warning"
    assert later["timeline"] is first["timeline"]  # the rendering was reused
    first.pop("timeline")  # a caller dropping keys does not change the next answer
    assert "timeline" in r(ev, T0 + 1)


def test_a_new_state_of_the_same_event_is_rendered_again() -> None:
    r = Renderer(TZ, 0.2)
    r(event(), T0)
    # same id and version but a different object (e.g. the journal's after a rollback)
    other = event(responded_at=T0 + 5, status="responded")
    assert r(other, T0 + 6) == event_json(other, TZ, T0 + 6)
    done = event(status="resolved", version=3, resolved_at=T0 + 9)
    assert r(done, T0 + 10) == event_json(done, TZ, T0 + 10)
    assert r(done, T0 + 10)["timer_state"] == "closed"


def test_only_the_most_recent_events_are_kept() -> None:
    r = Renderer(TZ, 0.2, size=2)
    evs = [event(id=f"E{i:07d}") for i in range(3)]
    for ev in evs:
        r(ev, T0)
    assert len(r._cache) == 2 and "E0000000" not in r._cache
    assert r(evs[0], T0) == event_json(evs[0], TZ, T0)
