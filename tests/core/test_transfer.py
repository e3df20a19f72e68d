"""Transfer to another department (contract §8, 移送) in the core, on a fake clock.

A transferred event's clocks stop: nothing warns, breaches or escalates after the transfer,
not live, not after a replay of the journal into a fresh engine, not after a snapshot and
restore. A return is a fresh dispatch to the event's team: a unit picked anew, clocks from
the return, the tier back to the team's level, the earlier stages kept in the timeline.
"""

from __future__ import annotations

import pytest
from dispatch_scenario import Scenario
from table_routing import T1, TableRouting

from dispatch.core.engine import Engine, live_deadlines
from dispatch.core.errors import IllegalTransitionError, InvalidActionError
from dispatch.core.records import Record
from dispatch.view import CommittedView


def transferred(sc: Scenario, after_s: float = 10.0) -> str:
    """A T1 event (unit u1) responded at +5 s, escalated by hand, transferred at +after_s."""
    eid = sc.create(T1)["id"]
    sc.at(5)
    sc.act(eid, "respond")
    sc.act(eid, "escalate", note="升级")
    sc.at(after_s)
    sc.act(eid, "transfer", department="d-market", note="属市场监管职责")
    return eid


def test_a_transferred_event_never_warns_breaches_or_escalates(scenario: Scenario) -> None:
    eid = transferred(scenario)
    ev = scenario.engine.get(eid)
    assert ev["status"] == "transferred" and ev["unit"] is None and not ev["mutual_aid"]
    assert ev["transfer"] == {"department": "d-market", "at": scenario.t0 + 10,
                              "actor": "field-1", "note": "属市场监管职责", "answer": None,
                              "answered_at": None, "answer_note": None}
    assert ev["transferred_to"] == ["d-market"]
    assert dict(scenario.engine.busy_units()) == {}  # u1 is free again
    assert live_deadlines(ev) == () and scenario.engine.deadlines_of(eid) == ()
    assert scenario.engine.next_due() is None
    for t in (47, 48, 60, 144, 180, 720, 900, 5000, 86_400):
        assert scenario.at(t) == []
    assert scenario.engine.get(eid) is ev and ev["tier"] == "county" and ev["breaches"] == []
    # still open (on the live map until the department answers), the entry names it
    assert ev in list(scenario.engine.open_events())
    entry = ev["timeline"][-1]
    assert (entry["action"], entry["from"], entry["to"], entry["department"], entry["note"]) \
        == ("transferred", "responded", "transferred", "d-market", "属市场监管职责")


def test_the_record_carries_the_change_only(scenario: Scenario) -> None:
    eid = transferred(scenario)
    rec = scenario.records[-1]
    assert rec.action == "transferred" and rec.event_id == eid
    assert "timeline" not in rec.after and rec.added is not None
    assert [e["action"] for e in rec.added["timeline"]["items"]] == ["transferred"]
    assert rec.before["status"] == "responded" and rec.before["unit"] == "u1"
    assert rec.before["transfer"] is None and rec.extra == {"department": "d-market"}


def fresh_from(records: list[Record]) -> Engine:
    """An engine rebuilt from the records as a journal stores them (bytes, no state)."""
    eng = Engine(Scenario().policy, TableRouting())
    for r in records:
        eng.apply(Record.from_json(r.to_json()))
    return eng


def test_replay_and_restore_keep_the_clocks_stopped(scenario: Scenario) -> None:
    eid = transferred(scenario)
    scenario.at(30)
    for eng in (fresh_from(scenario.records),
                Engine.restore(scenario.engine.snapshot(), scenario.policy, TableRouting())):
        ev = eng.get(eid)
        assert ev == scenario.engine.get(eid)
        assert eng.deadlines_of(eid) == () and eng.next_due() is None
        assert dict(eng.busy_units()) == {}
        assert eng.fire_due(scenario.t0 + 100_000).records == []  # a restart fires nothing
    # the committed view (REST reads, snapshots) folds the same records to the same state
    view = CommittedView()
    view.apply(Record.from_json(r.to_json()) for r in scenario.records)
    assert view.get(eid) == scenario.engine.get(eid) and eid in {
        e["id"] for e in view.open_events()}


def test_accept_hands_it_over_for_good(scenario: Scenario) -> None:
    eid = transferred(scenario)
    scenario.at(100)
    out = scenario.act(eid, "accept", note="已立案")
    ev = scenario.engine.get(eid)
    assert ev["status"] == "handed_over" and ev["transfer"]["answer"] == "accepted"
    assert ev["transfer"]["answered_at"] == scenario.t0 + 100
    assert ev["transfer"]["answer_note"] == "已立案"
    assert out.records[0].extra == {"department": "d-market", "answer_s": 90.0}
    assert eid not in {e["id"] for e in scenario.engine.open_events()}
    # a late retry is a no-op; every other action is illegal (terminal)
    assert scenario.engine.act(eid, "accept", "dept:d-market", scenario.clock.now()).noop
    for action, kw in (("return", {"note": "x"}), ("cancel", {}), ("escalate", {})):
        with pytest.raises(IllegalTransitionError):
            scenario.engine.act(eid, action, "x", scenario.clock.now(), **kw)
    assert scenario.at(100_000) == []


def test_a_return_is_a_fresh_dispatch_with_fresh_clocks_and_a_new_unit(
        scenario: Scenario) -> None:
    eid = transferred(scenario)
    scenario.at(50)
    other = scenario.create(T1)  # u1, freed by the transfer, goes to another event
    assert other["unit"] == "u1"
    scenario.at(400)
    ret = scenario.t0 + 400
    scenario.act(eid, "return", note="不属本部门职责，退回")
    ev = scenario.engine.get(eid)
    assert ev["status"] == "dispatched" and ev["team"] == "team-t1"
    assert ev["unit"] == "u2" and scenario.engine.busy_units()["u2"] == eid
    assert ev["tier"] == "township"  # back to the team's level (it was escalated by hand)
    assert ev["dispatched_at"] == ret
    assert ev["deadlines"] == {"respond": ret + 60, "depart": ret + 180, "arrive": ret + 900}
    assert ev["responded_at"] is None and ev["fired"] == []
    assert ev["transfer"]["answer"] == "returned" and ev["transfer"]["answered_at"] == ret
    actions = [e["action"] for e in ev["timeline"]]
    assert actions == ["created", "dispatched", "responded", "escalated", "transferred",
                       "returned"]
    last = ev["timeline"][-1]
    assert (last["from"], last["to"], last["note"], last["department"]) == (
        "transferred", "dispatched", "不属本部门职责，退回", "d-market")
    # the clocks run from the return: warning at +48 s, breach and escalation at +60 s
    assert scenario.engine.next_due() is not None
    assert [r.action for r in scenario.at(400 + 47) if r.event_id == eid] == []
    assert [r.action for r in scenario.at(400 + 48) if r.event_id == eid] == ["warned"]
    assert [r.action for r in scenario.at(400 + 60) if r.event_id == eid] == [
        "breached", "escalated"]
    # a late retry of the return is a no-op; the journal replays to the same state
    assert scenario.engine.act(eid, "return", "dept:d-market", scenario.clock.now(),
                               note="again").noop
    assert fresh_from(scenario.records).get(eid) == scenario.engine.get(eid)


def test_while_transferred_only_cancel_applies(scenario: Scenario) -> None:
    eid = transferred(scenario)
    now = scenario.clock.now()
    for action, kw in (("depart", {}), ("escalate", {}), ("reassign", {"team": "team-t4"}),
                       ("resolve", {}), ("transfer", {"department": "d-env"})):
        with pytest.raises(IllegalTransitionError) as err:
            scenario.engine.act(eid, action, "op", now, **kw)
        assert err.value.current_status == "transferred"
    # the same transfer again is a retry
    assert scenario.engine.act(eid, "transfer", "op", now, department="d-market").noop
    out = scenario.engine.act(eid, "cancel", "op", now, note="撤销")
    assert out.event is not None and out.event["status"] == "cancelled"
    assert out.event["transfer"]["answer"] is None


def test_transfer_and_return_need_their_fields(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    now = scenario.clock.now()
    with pytest.raises(InvalidActionError) as err:
        scenario.engine.act(eid, "transfer", "op", now)
    assert err.value.field == "department"
    scenario.act(eid, "transfer", department="d-env")
    with pytest.raises(InvalidActionError) as err:
        scenario.engine.act(eid, "return", "dept", now)
    assert err.value.field == "note"
    assert scenario.engine.get(eid)["status"] == "transferred"


def test_a_new_event_cannot_be_transferred(scenario: Scenario) -> None:
    from table_routing import T3

    eid = scenario.create(T3)["id"]
    with pytest.raises(IllegalTransitionError):
        scenario.engine.act(eid, "transfer", "op", scenario.clock.now(), department="d-env")


def test_transferred_again_after_a_return_lists_both_departments(scenario: Scenario) -> None:
    eid = transferred(scenario)
    scenario.act(eid, "return", note="退回")
    scenario.act(eid, "transfer", department="d-env")
    ev = scenario.engine.get(eid)
    assert ev["transferred_to"] == ["d-market", "d-env"]
    assert ev["transfer"]["department"] == "d-env" and ev["transfer"]["answer"] is None
    # transferring back to the first one does not list it twice
    scenario.act(eid, "return", note="退回")
    scenario.act(eid, "transfer", department="d-market")
    assert scenario.engine.get(eid)["transferred_to"] == ["d-market", "d-env"]
