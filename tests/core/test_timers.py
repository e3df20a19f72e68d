"""Timers and escalation on a fake clock (contract §5). Nothing here sleeps."""

from __future__ import annotations

from dispatch_scenario import Scenario
from table_routing import T1, T2, Z1

from dispatch.core.engine import Engine


def kinds(records: list) -> list[tuple[str, str | None]]:
    return [(r.action, (r.extra or {}).get("stage")) for r in records]


def test_township_event_with_no_action_escalates_at_60_and_180(scenario: Scenario) -> None:
    ev = scenario.create(T1)
    eid = ev["id"]
    assert ev["tier"] == "township"
    assert scenario.engine.next_due() == scenario.t0 + 48  # warning at 20 % lead
    assert kinds(scenario.at(47.9)) == []
    assert kinds(scenario.at(48)) == [("warned", "respond")]
    assert kinds(scenario.at(59.999)) == []
    recs = scenario.at(60)
    assert kinds(recs) == [("breached", "respond"), ("escalated", "respond")]
    assert recs[1].extra == {"stage": "respond", "from": "township", "to": "county",
                             "manual": False}
    assert recs[0].at == scenario.t0 + 60
    assert scenario.engine.get(eid)["tier"] == "county"
    assert kinds(scenario.at(144)) == [("warned", "depart")]
    assert kinds(scenario.at(180)) == [("breached", "depart"), ("escalated", "depart")]
    assert scenario.engine.get(eid)["tier"] == "city"
    assert kinds(scenario.at(720)) == [("warned", "arrive")]
    assert kinds(scenario.at(900)) == [("breached", "arrive")]  # city: no higher
    ev = scenario.engine.get(eid)
    assert ev["breaches"] == ["respond", "depart", "arrive"]
    assert [(e["from"], e["to"]) for e in ev["escalations"]] == [
        ("township", "county"), ("county", "city")]
    assert scenario.at(5000) == [] and scenario.engine.next_due() is None


def test_acted_on_in_time_never_escalates(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.at(30)
    scenario.act(eid, "respond")
    scenario.at(100)
    scenario.act(eid, "depart")
    scenario.at(800)
    scenario.act(eid, "arrive")
    scenario.at(3000)
    scenario.act(eid, "resolve")
    scenario.at(10_000)
    acts = scenario.actions(eid)
    assert "breached" not in acts and "escalated" not in acts
    assert scenario.engine.get(eid)["breaches"] == []
    assert scenario.engine.get(eid)["tier"] == "township"


def test_jumping_past_a_deadline_fires_breach_not_stale_warning(scenario: Scenario) -> None:
    scenario.create(T1)
    assert kinds(scenario.at(200)) == [
        ("breached", "respond"), ("escalated", "respond"),
        ("breached", "depart"), ("escalated", "depart")]


def test_late_but_done_stage_is_a_breach(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.clock.set(scenario.t0 + 75)  # the deadline loop has not run yet
    out = scenario.act(eid, "respond")
    assert out.event is not None and out.event["breaches"] == ["respond"]
    assert out.event["tier"] == "township"  # done now: nothing left to escalate for
    assert kinds(scenario.at(80)) == []  # the respond breach never fires afterwards


def test_offline_on_time_at_after_breach_fired(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.at(60)  # breach fired: the phone was offline
    scenario.clock.set(scenario.t0 + 65)
    out = scenario.act(eid, "respond", at=scenario.t0 + 50)
    ev = out.event
    assert ev is not None and ev["responded_at"] == scenario.t0 + 50
    assert ev["breaches"] == ["respond"]  # the fired breach stands; stats judge on `at`
    assert out.records[0].at == scenario.t0 + 50
    assert out.records[0].received_at == scenario.t0 + 65


def test_reassignment_restarts_the_clocks(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.at(50)
    out = scenario.act(eid, "reassign", team="team-t4")
    assert out.event is not None
    assert out.event["deadlines"] == {"respond": scenario.t0 + 110, "depart": scenario.t0 + 230,
                                      "arrive": scenario.t0 + 950}
    assert out.event["unit"] == "u5" and out.event["tier"] == "township"
    assert "u1" not in scenario.engine.busy_units()
    assert kinds(scenario.at(60)) == []  # the old respond deadline is dead
    assert kinds(scenario.at(98)) == [("warned", "respond")]
    assert kinds(scenario.at(110)) == [("breached", "respond"), ("escalated", "respond")]


def test_reassign_after_breach_fires_again_for_the_new_dispatch(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.at(60)
    scenario.act(eid, "reassign", team="team-t1")
    assert scenario.engine.get(eid)["tier"] == "township"
    assert kinds(scenario.at(120)) == [("breached", "respond"), ("escalated", "respond")]


def test_per_category_override(scenario: Scenario) -> None:
    ev = scenario.create(T1, category="illegal_fishing")
    assert ev["deadlines"]["respond"] == scenario.t0 + 120
    assert ev["deadlines"]["depart"] == scenario.t0 + 180
    assert ev["priority"] == 1
    assert kinds(scenario.at(60)) == []
    assert kinds(scenario.at(120)) == [("breached", "respond"), ("escalated", "respond")]


def test_zone_beats_category_beats_default(scenario: Scenario) -> None:
    ev = scenario.create(Z1, category="noise")
    # noise: respond 90, arrive 1200; zone Z1: respond 30, arrive 1800
    assert ev["deadlines"] == {"respond": scenario.t0 + 30, "depart": scenario.t0 + 180,
                               "arrive": scenario.t0 + 1800}
    assert ev["tier"] == "county"  # the zone's team is a county-level team


def test_county_event_escalates_to_city_once_then_stops(scenario: Scenario) -> None:
    eid = scenario.create(T2)["id"]
    assert scenario.engine.get(eid)["tier"] == "county"
    assert kinds(scenario.at(60)) == [("breached", "respond"), ("escalated", "respond")]
    assert kinds(scenario.at(180)) == [("breached", "depart")]


def test_recovery_is_told_to_notified_tiers(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.at(60)
    out = scenario.act(eid, "respond")
    assert out.records[0].extra == {"recovered": True, "notify_tiers": ["county"],
                                    "stage": "respond"}
    scenario.at(180)
    scenario.act(eid, "depart")
    out = scenario.act(eid, "arrive")
    assert out.records[0].extra is not None
    assert out.records[0].extra["notify_tiers"] == ["county", "city"]


def test_thousands_due_in_one_second_fire_in_due_order(scenario: Scenario) -> None:
    ids = []
    for i in range(2000):
        scenario.clock.set(scenario.t0 + i / 2000)
        ids.append(scenario.create(T1, external_id=f"x{i}")["id"])
    recs = [r for r in scenario.at(61) if r.action == "breached"]
    assert len(recs) == 2000
    assert [r.at for r in recs] == sorted(r.at for r in recs)


def test_deadline_passed_during_downtime_fires_once(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.at(10)
    saved = list(scenario.records)
    # down from t0+10 to t0+400; restart = replay + fire_due(now)
    eng = Engine(scenario.policy, scenario.routing)
    for r in saved:
        eng.apply(r)
    fired = eng.fire_due(scenario.t0 + 400).records
    assert kinds(fired) == [("breached", "respond"), ("escalated", "respond"),
                            ("breached", "depart"), ("escalated", "depart")]
    assert eng.get(eid)["tier"] == "city"
    eng2 = Engine(scenario.policy, scenario.routing)
    for r in saved + fired:
        eng2.apply(r)
    assert eng2.fire_due(scenario.t0 + 401).records == []
    assert eng2.next_due() == scenario.t0 + 720  # the arrive warning
