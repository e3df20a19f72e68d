"""A snapshot reads only where the caller's events can be (the committed view's open events
of its region, or its unit's one): it must hold exactly what reading every open event and
filtering by scope would (issue 13: a township operator's snapshot cost every open event of
the city; with 20,000 open events that was 25 ms per connecting socket)."""

from __future__ import annotations

import json
from typing import Any

from dispatch.server import scope, ws
from dispatch.server.scope import Principal
from tests.server.conftest import intake_body, point_in


def brute_force(state: Any, p: Principal, narrow: str | None) -> list[str]:
    return [ev["id"] for ev in state.runtime.view.open_events()
            if scope.event_visible(p, ev)
            and (narrow is None or scope.event_in_region(ev, narrow))]


def snapshot_ids(state: Any, p: Principal, narrow: str | None) -> list[str]:
    data = json.loads(ws.snapshot(state, p, state.runtime.view.last_seq, narrow))
    return [e["id"] for e in data["events"]]


async def test_snapshot_reads_only_where_the_callers_events_are(server):
    made = []
    for county, n in (("331003", 4), ("331002", 3)):
        for k in range(n):
            status, ev = await server.call("POST", "/api/v1/events", "intake",
                                           json=intake_body(*point_in(server, county, skip=k)))
            assert status == 201, ev
            made.append(ev)
    # one resolved by its unit, one cancelled: they leave every index
    unit = server.field_token(made[0]["unit"])
    for action in ("respond", "depart", "arrive", "resolve"):
        status, _ = await server.call("POST", f"/api/v1/events/{made[0]['id']}/{action}", unit,
                                      json={})
        assert status == 200
    status, _ = await server.call("POST", f"/api/v1/events/{made[4]['id']}/cancel", "city",
                                  json={})
    assert status == 200
    state = server.state
    ds = state.runtime.dataset
    open_ids = {ev["id"] for ev in state.runtime.view.open_events()}
    assert made[0]["id"] not in open_ids and made[4]["id"] not in open_ids
    principals = [
        Principal(role="admin", region=None, unit=None, name="a", digest="a" * 64),
        Principal(role="operator", region=ds.city_id, unit=None, name="c", digest="c" * 64),
        *(Principal(role=role, region=ev[level], unit=None, name="r", digest="r" * 64)
          for ev in made for level in ("county", "township", "grid")
          for role in ("operator", "supervisor") if ev.get(level)),
        *(Principal(role="field", region=None, unit=ev["unit"], name="f", digest="f" * 64)
          for ev in made if ev.get("unit")),
        Principal(role="field", region=None, unit="u-none", name="f", digest="0" * 64),
    ]
    narrows = [None, made[1]["township"], made[5]["county"], "331099"]
    seen_any = False
    for p in principals:
        for narrow in narrows:
            want = brute_force(state, p, narrow)
            assert snapshot_ids(state, p, narrow) == want, (p, narrow)
            seen_any = seen_any or bool(want)
    assert seen_any


async def test_catch_up_from_the_recent_records_says_what_the_journal_says(server):
    """A socket catching up reads the hub's newest published records (each rendered once for
    all) instead of the journal; what it gets is what the journal would have given it."""
    for k in range(6):
        status, ev = await server.call("POST", "/api/v1/events", "intake",
                                       json=intake_body(*point_in(server, "331003", skip=k)))
        assert status == 201, ev
    await server.call("POST", f"/api/v1/events/{ev['id']}/escalate", "city", json={})
    state = server.state
    upto = state.runtime.view.last_seq
    p = Principal(role="operator", region="331003", unit=None, name="o", digest="o" * 64)
    assert state.hub.recent(0, upto) is not None  # all still held

    async def messages(since: int) -> list[dict[str, Any]]:
        out = [json.loads(b) async for b in ws.catch_up(state, p, since, upto)]
        for m in out:
            m.pop("server_time")  # the journal's are rendered now, the held ones at publish
        return out

    held = await messages(0)
    hub_recent = state.hub.recent
    state.hub.recent = lambda after, upto: None  # type: ignore[method-assign]
    try:
        from_journal = await messages(0)
    finally:
        state.hub.recent = hub_recent  # type: ignore[method-assign]
    assert [m["seq"] for m in held] == list(range(1, upto + 1))
    assert held == from_journal
    two = state.hub.recent(upto - 2, upto)
    assert two is not None and [r.seq for r, _ in two] == [upto - 1, upto]
    assert state.hub.recent(upto, upto + 5) is None  # not published yet: the journal decides
