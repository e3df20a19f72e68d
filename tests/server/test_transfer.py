"""Transfer to another department (contract §8, 移送) end to end on a real server.

REST and WebSocket with real clients over loopback; a department token sees and answers only
its own transfers; with the server's own deadline loop on a fake clock, a transferred event
never warns, breaches or escalates, not even after a restart on the same journal; a return
gets fresh clocks from the return; supervisors see the transfers per department.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from dispatch import cli
from dispatch.clock import FakeClock
from dispatch.config import ConfigError, load_config
from dispatch.server.app import build_app
from tests.server.conftest import (
    TOKENS,
    Server,
    free_port,
    intake_body,
    point_in,
    start_server,
    write_config,
)
from tests.server.test_ws import connect, recv, recv_until

DEPARTMENTS = [{"id": "d-market", "name": "市场监管局"}, {"id": "d-env", "name": "生态环境局"}]
DEPT_TOKENS = {
    "market": {"token": "t-dept-market", "role": "department", "department": "d-market"},
    "env": {"token": "t-dept-env", "role": "department", "department": "d-env"},
}
SECTIONS: dict[str, Any] = {
    "departments": DEPARTMENTS,
    "auth": {"tokens": [*TOKENS.values(), *DEPT_TOKENS.values()]},
}


def with_departments(srv: Server) -> Server:
    srv.extra_tokens.update({k: v["token"] for k, v in DEPT_TOKENS.items()})
    return srv


@pytest.fixture
async def dserver(tmp_path: Path):
    srv = with_departments(await start_server(tmp_path, **SECTIONS))
    yield srv
    await srv.session.close()
    await srv.runner.cleanup()


async def new_event(srv: Server, county: str = "331003", skip: int = 0) -> dict[str, Any]:
    lon, lat = point_in(srv, county, skip)
    status, ev = await srv.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    assert status == 201 and ev["status"] == "dispatched" and ev["unit"], ev
    return ev


async def transfer(srv: Server, eid: str, who: str = "huangyan", department: str = "d-market",
                   note: str = "属市场监管职责") -> tuple[int, Any]:
    return await srv.call("POST", f"/api/v1/events/{eid}/transfer", who,
                          json={"department": department, "note": note})


async def test_transfer_accept_over_rest_with_every_refusal(dserver: Server) -> None:
    srv = dserver
    ev = await new_event(srv)
    eid, unit = ev["id"], ev["unit"]
    # refusals change nothing: bad body, unknown department, out of scope, wrong role
    assert (await srv.call("POST", f"/api/v1/events/{eid}/transfer", "huangyan",
                           json={"department": "d-market"}))[1]["error"]["field"] == "note"
    status, body = await transfer(srv, eid, department="d-nowhere")
    assert status == 404 and body["error"]["field"] == "department"
    assert (await transfer(srv, eid, who="jiaojiang"))[0] == 404  # another county's operator
    assert (await transfer(srv, eid, who="supervisor"))[0] == 403
    assert (await transfer(srv, eid, who="market"))[0] == 404  # not transferred to it yet
    assert (await srv.call("GET", f"/api/v1/events/{eid}", "market"))[0] == 404
    _, same = await srv.call("GET", f"/api/v1/events/{eid}", "admin")
    assert same["status"] == "dispatched" and same["version"] == ev["version"]

    status, out = await transfer(srv, eid)
    assert status == 200, out
    assert out["status"] == "transferred" and out["unit"] is None
    assert out["timer_state"] == "transferred" and out["next_deadline"] is None
    tr = out["transfer"]
    assert (tr["department"], tr["actor"], tr["note"], tr["answer"], tr["answered_at"]) == (
        "d-market", "operator:331003", "属市场监管职责", None, None)
    assert tr["at"] is not None
    assert out["timeline"][-1]["action"] == "transferred"
    _, units = await srv.call("GET", "/api/v1/units", "admin")
    assert next(u for u in units["units"] if u["id"] == unit)["available"] is True
    # the same transfer again is a retry; to another department while transferred: 409
    status, again = await transfer(srv, eid)
    assert status == 200 and again["version"] == out["version"]
    status, err = await transfer(srv, eid, department="d-env")
    assert status == 409 and err["error"]["code"] == "illegal_transition"
    assert err["error"]["status"] == "transferred"
    # while transferred only cancel applies for an operator; a department only answers
    status, err = await srv.call("POST", f"/api/v1/events/{eid}/escalate", "huangyan")
    assert status == 409 and err["error"]["status"] == "transferred"
    assert (await srv.call("POST", f"/api/v1/events/{eid}/cancel", "market"))[0] == 403
    assert (await srv.call("POST", f"/api/v1/events/{eid}/accept", "huangyan"))[0] == 403
    assert (await srv.call("POST", f"/api/v1/events/{eid}/accept", "env"))[0] == 404
    status, err = await srv.call("POST", f"/api/v1/events/{eid}/return", "market", json={})
    assert status == 422 and err["error"]["field"] == "note"

    status, done = await srv.call("POST", f"/api/v1/events/{eid}/accept", "market",
                                  json={"note": "已立案"})
    assert status == 200 and done["status"] == "handed_over"
    assert done["transfer"]["answer"] == "accepted" and done["transfer"]["answered_at"]
    assert done["timer_state"] == "closed"
    # replayed late: 200, no change; anything else now: 409
    status, again = await srv.call("POST", f"/api/v1/events/{eid}/accept", "market")
    assert status == 200 and again["version"] == done["version"]
    status, err = await srv.call("POST", f"/api/v1/events/{eid}/return", "market",
                                 json={"note": "晚了"})
    assert status == 409 and err["error"]["status"] == "handed_over"
    assert (await srv.call("POST", f"/api/v1/events/{eid}/cancel", "huangyan"))[0] == 409
    # the department keeps reading what it answered
    status, read = await srv.call("GET", f"/api/v1/events/{eid}", "market")
    assert status == 200 and read["status"] == "handed_over"


async def test_a_department_sees_only_its_own_transfers(dserver: Server) -> None:
    srv = dserver
    mine = await new_event(srv, "331003")
    theirs = await new_event(srv, "331002")
    untouched = await new_event(srv, "331003", skip=1)
    assert (await transfer(srv, mine["id"]))[0] == 200
    assert (await transfer(srv, theirs["id"], who="jiaojiang", department="d-env"))[0] == 200
    _, listed = await srv.call("GET", "/api/v1/events", "market")
    assert [e["id"] for e in listed["events"]] == [mine["id"]]
    _, listed = await srv.call("GET", "/api/v1/events?status=transferred", "env")
    assert [e["id"] for e in listed["events"]] == [theirs["id"]]
    for eid in (theirs["id"], untouched["id"]):
        assert (await srv.call("GET", f"/api/v1/events/{eid}", "market"))[0] == 404
    # nothing else: no units, teams, regions, zones, statistics or exports
    assert (await srv.call("GET", "/api/v1/units", "market"))[1] == {"units": []}
    assert (await srv.call("GET", "/api/v1/teams", "market"))[1] == {"teams": []}
    assert (await srv.call("GET", "/api/v1/regions", "market"))[1]["features"] == []
    assert (await srv.call("GET", "/api/v1/zones", "market"))[1]["features"] == []
    assert (await srv.call("GET", "/api/v1/stats/response-times", "market"))[0] == 403
    assert (await srv.call("GET", "/api/v1/stats/export", "market"))[0] == 403
    assert (await srv.call("PUT", f"/api/v1/units/{mine['unit']}/position", "market",
                           json={"lon": 121.2, "lat": 28.6}))[0] == 403
    _, me = await srv.call("GET", "/api/v1/me", "market")
    assert (me["role"], me["department"]) == ("department", "d-market")
    _, deps = await srv.call("GET", "/api/v1/departments", "huangyan")
    assert deps == {"departments": [{"id": "d-market", "name": "市场监管局"},
                                    {"id": "d-env", "name": "生态环境局"}]}
    assert (await srv.call("GET", "/api/v1/departments", "intake"))[0] == 403


async def test_a_return_dispatches_anew_and_the_department_keeps_reading(
        dserver: Server) -> None:
    srv = dserver
    ev = await new_event(srv)
    eid = ev["id"]
    assert (await srv.call("POST", f"/api/v1/events/{eid}/escalate", "huangyan"))[0] == 200
    await transfer(srv, eid)
    status, back = await srv.call("POST", f"/api/v1/events/{eid}/return", "market",
                                  json={"note": "不属本部门职责"})
    assert status == 200, back
    assert back["status"] == "dispatched" and back["unit"] and back["tier"] == ev["tier"]
    assert back["team"] == ev["team"] and back["timer_state"] == "escalated"
    assert back["dispatched_at"] == back["transfer"]["answered_at"]
    assert back["next_deadline"]["stage"] == "respond"
    assert back["transfer"]["answer"] == "returned"
    assert back["transfer"]["answer_note"] == "不属本部门职责"
    entry = back["timeline"][-1]
    assert (entry["action"], entry["note"], entry["department"]) == (
        "returned", "不属本部门职责", "d-market")
    # a late retry of the return: 200, unchanged; the department still reads it
    status, again = await srv.call("POST", f"/api/v1/events/{eid}/return", "market",
                                   json={"note": "不属本部门职责"})
    assert status == 200 and again["version"] == back["version"]
    # transferred on to another department: the first reads it, only the second answers
    assert (await transfer(srv, eid, department="d-env"))[0] == 200
    status, read = await srv.call("GET", f"/api/v1/events/{eid}", "market")
    assert status == 200 and read["transfer"]["department"] == "d-env"
    status, err = await srv.call("POST", f"/api/v1/events/{eid}/accept", "market")
    assert status == 403 and err["error"]["field"] == "department"
    assert (await srv.call("POST", f"/api/v1/events/{eid}/accept", "env"))[0] == 200
    # supervisors: per department, with answer times
    _, st = await srv.call("GET", "/api/v1/stats/response-times", "supervisor")
    rows = {r["department"]: r for r in st["transfers"]}
    assert {k: rows["d-market"][k] for k in ("count", "accepted", "returned", "pending")} == {
        "count": 1, "accepted": 0, "returned": 1, "pending": 0}
    assert {k: rows["d-env"][k] for k in ("count", "accepted", "returned", "pending")} == {
        "count": 1, "accepted": 1, "returned": 0, "pending": 0}
    assert rows["d-market"]["answer"]["max_s"] is not None
    assert rows["d-market"]["name"] == "市场监管局"


async def test_the_socket_shows_transfers_to_every_client_in_scope(dserver: Server) -> None:
    srv = dserver
    ev = await new_event(srv, "331003")
    other = await new_event(srv, "331002")
    market, env, county = [await connect(srv, w) for w in ("market", "env", "huangyan")]
    for ws in (market, env, county):
        assert (await recv(ws))["type"] == "snapshot"
    await transfer(srv, ev["id"])
    for ws in (market, county):
        msg = await recv_until(ws, lambda m: m["type"] == "event.updated")
        assert (msg["action"], msg["event"]["id"], msg["event"]["status"]) == (
            "transferred", ev["id"], "transferred")
        assert msg["department"] == "d-market"
    # env hears nothing of it: the next thing it gets is its own transfer
    await transfer(srv, other["id"], who="jiaojiang", department="d-env")
    msg = await recv_until(env, lambda m: m["type"] != "unit.updated")
    assert (msg["action"], msg["event"]["id"]) == ("transferred", other["id"])
    # a department answers over the socket too
    await market.send(json.dumps({"type": "accept", "event": ev["id"], "id": 7}))
    ack = await recv_until(market, lambda m: m["type"] in ("ack", "error"))
    assert ack["type"] == "ack" and ack["event"]["status"] == "handed_over", ack
    msg = await recv_until(county, lambda m: m["type"] == "event.updated")
    assert msg["event"]["status"] == "handed_over"
    # a reconnecting department gets the open transfers it may see in its snapshot
    env2 = await connect(srv, "env")
    snap = await recv(env2)
    assert [e["id"] for e in snap["events"]] == [other["id"]] and snap["units"] == []
    for ws in (market, env, county, env2):
        await ws.close()


# -- timers, restart and statistics on a fake clock -------------------------------------------
class ClockedServer:
    """A real server whose clock only moves when told (its own deadline loop runs)."""

    def __init__(self, tmp: Path, clock: FakeClock) -> None:
        self.tmp, self.clock = tmp, clock
        self.config = write_config(tmp, **SECTIONS)

    async def __aenter__(self) -> Server:
        app = build_app(load_config(self.config), clock=self.clock)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.srv = with_departments(Server(url=f"http://127.0.0.1:{port}", app=app,
                                           runner=self.runner, config_path=self.config,
                                           session=aiohttp.ClientSession()))
        return self.srv

    async def __aexit__(self, *exc: Any) -> None:
        await self.srv.session.close()
        await self.runner.cleanup()


async def settle(srv: Server) -> None:
    """Let the deadline loop fire whatever is due at the fake clock's now and commit it."""
    rt = srv.state.runtime
    for _ in range(3):
        rt.wake()
        await asyncio.sleep(0.05)
        due = rt.engine.next_due()
        if due is None or due > rt.clock.now():
            return
    raise AssertionError("deadlines still due")


def fired(srv: Server, eid: str) -> list[str]:
    ev = srv.state.runtime.view.get(eid)
    return [t["action"] for t in ev["timeline"] if t["actor"] == "system"]


async def test_a_transferred_event_never_breaches_even_across_a_restart(tmp_path: Path
                                                                         ) -> None:
    clock = FakeClock()
    async with ClockedServer(tmp_path, clock) as srv:
        ev = await new_event(srv)
        plain = await new_event(srv, skip=1)
        clock.advance(10)
        assert (await transfer(srv, ev["id"]))[0] == 200
        for t in (48, 60, 144, 180, 720, 900, 3600):
            clock.set(ev_t0(ev) + t)
            await settle(srv)
        assert fired(srv, ev["id"]) == []
        assert "escalated" in fired(srv, plain["id"])  # the clock did run for the others
        _, before = await srv.call("GET", f"/api/v1/events/{ev['id']}", "admin")
        assert before["status"] == "transferred" and before["breaches"] == []
        # stats: a stage not yet due at the transfer is left out, not counted as breached
        _, st = await srv.call("GET", "/api/v1/stats/response-times?group_by=team",
                               "supervisor")
        row = next(g for g in st["groups"] if g["key"] == ev["team"])
        counted = row["respond"]["counted"]
        # ev was transferred 10 s after dispatch: none of its stages was due yet; the plain
        # event's are all breached by now
        same_team = int(plain["team"] == ev["team"])
        assert [row[s]["counted"] for s in ("respond", "depart", "arrive")] == [same_team] * 3
        assert row["count"] == 1 + same_team
        pending = next(r for r in st["transfers"] if r["department"] == "d-market")
        assert pending["pending"] == 1 and pending["count"] == 1
    clock.advance(86_400)  # down for a day
    async with ClockedServer(tmp_path, clock) as srv:
        await settle(srv)
        _, after = await srv.call("GET", f"/api/v1/events/{ev['id']}", "admin")
        assert fired(srv, ev["id"]) == []
        assert {k: after[k] for k in ("status", "transfer", "timeline", "tier", "breaches")} \
            == {k: before[k] for k in ("status", "transfer", "timeline", "tier", "breaches")}
        assert srv.state.runtime.engine.deadlines_of(ev["id"]) == ()
        _, st = await srv.call("GET", "/api/v1/stats/response-times?group_by=team",
                               "supervisor")
        assert next(g for g in st["groups"] if g["key"] == ev["team"])["respond"][
            "counted"] == counted
        # returned: fresh clocks from the return, which do run
        ret = clock.now()
        status, back = await srv.call("POST", f"/api/v1/events/{ev['id']}/return", "market",
                                      json={"note": "退回"})
        assert status == 200 and back["status"] == "dispatched"
        assert srv.state.runtime.view.get(ev["id"])["deadlines"]["respond"] == ret + 60
        clock.set(ret + 59)
        await settle(srv)
        assert fired(srv, ev["id"]) == ["warned"]
        clock.set(ret + 60)
        await settle(srv)
        assert fired(srv, ev["id"]) == ["warned", "breached", "escalated"]


def ev_t0(ev: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ev["dispatched_at"]).timestamp()


# -- configuration and the token command ------------------------------------------------------
def test_departments_are_validated_naming_the_key(tmp_path: Path) -> None:
    def fails(**sections: Any) -> ConfigError:
        with pytest.raises(ConfigError) as err:
            load_config(write_config(tmp_path, **sections))
        return err.value

    assert fails(departments=[{"id": "a", "name": "A"}, {"id": "a", "name": "B"}]).key == \
        "departments[1].id"
    assert fails(departments=[{"name": "A"}]).key == "departments[0].id"
    assert fails(departments=[{"id": "a", "name": "A", "mail": "x"}]).key == \
        "departments[0].mail"
    bad_token = {"token": "t-dept-nowhere", "role": "department", "department": "d-x"}
    err = fails(departments=DEPARTMENTS, auth={"tokens": [bad_token]})
    assert err.key == "auth.tokens[0].department" and "d-x" in err.problem
    err = fails(auth={"tokens": [{"token": "t-dept-none", "role": "department"}]})
    assert err.key == "auth.tokens[0].department"
    # a webhook must name an entry of webhooks when that section exists
    path = write_config(tmp_path, departments=[{"id": "a", "name": "A", "webhook": "w2"}])
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides={"webhooks": [{"id": "w1", "url": "http://x", "secret": "s"}]})
    assert e.value.key == "departments[0].webhook"
    ok = load_config(path, overrides={"webhooks": [{"id": "w2", "url": "http://x", "secret": "s"}]})
    assert ok.departments == [{"id": "a", "name": "A", "webhook": "w2"}]


def test_token_create_for_a_department(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    path = str(write_config(tmp_path, **SECTIONS))
    assert cli.main(["token", "create", "--role", "department", "--department", "d-env",
                     "--config", path]) == 0
    token = capsys.readouterr().out.strip()
    entries = yaml.safe_load((tmp_path / "tokens.yaml").read_text())
    assert entries[-1]["role"] == "department" and entries[-1]["department"] == "d-env"
    from dispatch.server.auth import TokenBook

    p = TokenBook(load_config(path)).lookup(token)
    assert p is not None and (p.role, p.department) == ("department", "d-env")
    assert cli.main(["token", "create", "--role", "department", "--department", "d-x",
                     "--config", path]) == 2
    assert "department" in capsys.readouterr().err
    assert cli.main(["token", "create", "--role", "department", "--config", path]) == 2
