"""Intake, routing, units, idempotency, offline `at`, records and replay."""

from __future__ import annotations

import dataclasses

import pytest
from dispatch_scenario import Scenario
from hypothesis import given, settings
from hypothesis import strategies as st
from table_routing import OUTSIDE, T1, T2, T3, Z1

from dispatch.core.engine import Engine
from dispatch.core.errors import InvalidActionError, NotFoundError, OutsideJurisdictionError
from dispatch.core.records import chain, verify_chain


def test_create_dispatches_at_intake(scenario: Scenario) -> None:
    ev = scenario.create(T1)
    t0 = scenario.t0
    assert ev["id"] == "E0000001" and ev["status"] == "dispatched"
    assert (ev["team"], ev["unit"], ev["tier"], ev["mutual_aid"]) == (
        "team-t1", "u1", "township", False)
    assert ev["created_at"] == ev["dispatched_at"] == t0
    assert ev["deadlines"] == {"respond": t0 + 60, "depart": t0 + 180, "arrive": t0 + 900}
    assert [t["action"] for t in ev["timeline"]] == ["created", "dispatched"]
    assert (ev["grid"], ev["township"], ev["county"], ev["city"]) == ("T1-g1", "T1", "C1", "T")
    assert ev["priority"] == 2 and ev["version"] == 1 and ev["seq"] == 1
    [rec] = scenario.records
    assert (rec.action, rec.seq, rec.version, rec.event_id) == ("created", 1, 1, "E0000001")
    assert rec.before == {"status": None, "tier": None, "team": None, "unit": None}
    assert rec.state == scenario.engine.get("E0000001")
    # the record carries the state without its growing lists, and what it appended to them
    assert rec.after == {k: v for k, v in ev.items()
                         if k not in ("timeline", "escalations", "evidence")}
    assert rec.added == {"timeline": {"start": 0, "items": ev["timeline"]},
                         "escalations": {"start": 0, "items": []},
                         "evidence": {"start": 0, "items": []}}


def test_routing_levels(scenario: Scenario) -> None:
    assert scenario.create(T2)["tier"] == "county"  # township not empowered: county brigade
    z = scenario.create(Z1)
    assert (z["zone"], z["team"], z["tier"]) == ("Z1", "team-z1", "county")
    n = scenario.create(T3)
    assert (n["status"], n["team"], n["tier"], n["dispatched_at"]) == (
        "new", None, "township", None)
    assert scenario.engine.next_due() == scenario.t0 + 24  # Z1: respond 30 s, warn at 24


def test_outside_jurisdiction_changes_nothing(scenario: Scenario) -> None:
    with pytest.raises(OutsideJurisdictionError) as err:
        scenario.create(OUTSIDE)
    assert (err.value.status, err.value.code, err.value.field) == (
        422, "outside_jurisdiction", "location")
    assert scenario.engine.last_seq == 0
    assert scenario.create(T1)["id"] == "E0000001"


def test_unknown_category(scenario: Scenario) -> None:
    with pytest.raises(InvalidActionError) as err:
        scenario.create(T1, category="nope")
    assert err.value.field == "category" and err.value.status == 422
    assert scenario.routing.route_calls == 0 and scenario.engine.last_seq == 0


def test_idempotent_intake(scenario: Scenario) -> None:
    a = scenario.create(T1, external_id="12345-1")
    out = scenario.engine.create(scenario.fields(T1, external_id="12345-1"), "op", 0.0 + 1e9)
    assert out.noop and not out.created and out.records == [] and out.event is a
    b = scenario.create(T1, external_id="12345-1", source="grid")
    assert b["id"] != a["id"]
    c = scenario.create(T1, key="K1")
    assert scenario.create(T2, key="K1") is c
    # idempotency survives replay
    eng = Engine(scenario.policy, scenario.routing)
    for r in scenario.records:
        eng.apply(r)
    assert eng.create(scenario.fields(T1, external_id="12345-1"), "op", 1e9).event == a
    assert eng.create(scenario.fields(T1), "op", 1e9, idempotency_key="K1").noop
    assert eng.create(scenario.fields(T1), "op", 1e9).event["id"] == "E0000004"  # type: ignore


def test_units_busy_and_mutual_aid(scenario: Scenario) -> None:
    a, b, c = scenario.create(T1), scenario.create(T1), scenario.create(T1)
    assert (a["unit"], b["unit"]) == ("u1", "u2")
    assert c["unit"] == "u3" and c["mutual_aid"] is True and c["team"] == "team-t1"
    assert scenario.engine.busy_units() == {"u1": a["id"], "u2": b["id"], "u3": c["id"]}
    scenario.act(a["id"], "cancel")
    assert "u1" not in scenario.engine.busy_units()
    assert scenario.create(T1)["unit"] == "u1"


def test_resolve_frees_the_unit(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    for action in ("respond", "depart", "arrive", "resolve"):
        scenario.act(eid, action)
    assert scenario.engine.busy_units() == {}
    assert [e["id"] for e in scenario.engine.open_events()] == []
    assert scenario.engine.next_due() is None


def test_reassign_by_unit(scenario: Scenario) -> None:
    a, b = scenario.create(T1), scenario.create(T1)
    out = scenario.act(a["id"], "reassign", unit="u5")
    ev = out.event
    assert ev is not None and (ev["team"], ev["unit"], ev["mutual_aid"]) == (
        "team-t4", "u5", False)
    assert out.records[0].before["unit"] == "u1"
    assert scenario.act(a["id"], "reassign", unit="u5").noop  # a retried reassign
    with pytest.raises(InvalidActionError) as err:
        scenario.act(a["id"], "reassign", unit=b["unit"])
    assert err.value.field == "unit"
    with pytest.raises(InvalidActionError):
        scenario.act(a["id"], "reassign", unit="ghost")
    with pytest.raises(InvalidActionError) as err:
        scenario.act(a["id"], "reassign", team="ghost")
    assert err.value.field == "team"
    with pytest.raises(InvalidActionError):
        scenario.act(a["id"], "reassign")
    mixed = scenario.act(a["id"], "reassign", team="team-t1", unit="u6").event
    assert mixed is not None and mixed["mutual_aid"] is True


def test_reassign_new_event_dispatches_it(scenario: Scenario) -> None:
    ev = scenario.create(T3)
    scenario.clock.advance(5)
    out = scenario.act(ev["id"], "reassign", team="team-c1")
    assert out.event is not None and out.event["status"] == "dispatched"
    assert out.event["tier"] == "county" and out.event["unit"] == "u3"
    assert out.event["deadlines"]["respond"] == scenario.t0 + 65


def test_offline_at_rules(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.clock.advance(20)
    now = scenario.clock.now()
    with pytest.raises(InvalidActionError) as err:
        scenario.act(eid, "respond", at=now + 31)
    assert err.value.field == "at"
    with pytest.raises(InvalidActionError):
        scenario.act(eid, "respond", at=scenario.t0 - 1)  # before dispatch
    out = scenario.act(eid, "respond", at=now + 29)  # within the skew
    assert out.event is not None and out.event["responded_at"] == now + 29
    with pytest.raises(InvalidActionError):
        scenario.act(eid, "depart", at=now + 10)  # before the previous step
    assert scenario.engine.get(eid)["status"] == "responded"


def test_not_found_and_unknown_action(scenario: Scenario) -> None:
    with pytest.raises(NotFoundError):
        scenario.act("E9999999", "respond")
    eid = scenario.create(T1)["id"]
    with pytest.raises(InvalidActionError):
        scenario.act(eid, "dance")


def test_record_before_after_and_timeline(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    scenario.clock.advance(10)
    rec = scenario.act(eid, "respond", note="on my way").records[0]
    assert rec.action == "responded" and rec.actor == "field-1" and rec.note == "on my way"
    assert rec.before["status"] == "dispatched" and rec.before["responded_at"] is None
    assert rec.after["status"] == "responded" and rec.after["version"] == 2
    entry = {
        "at": scenario.t0 + 10, "received_at": scenario.t0 + 10, "action": "responded",
        "actor": "field-1", "from": "dispatched", "to": "responded", "note": "on my way"}
    assert rec.state is not None and rec.state["timeline"][-1] == entry
    assert "timeline" not in rec.after and "timeline" not in rec.before
    assert rec.added is not None and rec.added["timeline"] == {"start": 2, "items": [entry]}
    first = scenario.records[0].after
    assert first["status"] == "dispatched"  # old records are never mutated


def test_replay_rebuilds_identical_state_and_ignores_repeats(scenario: Scenario) -> None:
    a = scenario.create(T1)["id"]
    scenario.create(T2)
    scenario.act(a, "respond")
    scenario.at(200)
    scenario.act(a, "reassign", team="team-t4")
    eng = Engine(scenario.policy, scenario.routing)
    for r in scenario.records + scenario.records[:3]:
        eng.apply(r)
    assert eng.last_seq == scenario.engine.last_seq
    assert list(eng.events()) == list(scenario.engine.events())
    assert eng.busy_units() == scenario.engine.busy_units()
    assert eng.next_due() == scenario.engine.next_due()
    restored = Engine.restore(scenario.engine.snapshot(), scenario.policy, scenario.routing)
    assert list(restored.events()) == list(scenario.engine.events())
    assert restored.next_due() == scenario.engine.next_due()
    assert restored.create(scenario.fields(T1), "op", 2e9).event["id"] == "E0000003"  # type: ignore


def test_chain_detects_edit_removal_and_reorder(scenario: Scenario) -> None:
    eid = scenario.create(T1)["id"]
    for action in ("respond", "depart", "arrive"):
        scenario.act(eid, action)
    recs = chain(scenario.records)
    assert verify_chain(recs) is None
    edited = list(recs)
    edited[2] = dataclasses.replace(recs[2], actor="someone else")
    assert verify_chain(edited)[0] == 3  # type: ignore[index]
    assert verify_chain(recs[:1] + recs[2:])[0] == 2  # type: ignore[index]
    assert verify_chain([recs[0], recs[2], recs[1], recs[3]])[0] == 2  # type: ignore[index]
    assert recs[1].to_json() == type(recs[1]).from_json(recs[1].to_json()).to_json()


def test_rollback_returns_to_the_journal_state(scenario: Scenario) -> None:
    a = scenario.create(T1)["id"]
    scenario.at(10)
    seq = scenario.engine.last_seq
    before = Engine.restore(scenario.engine.snapshot(), scenario.policy, scenario.routing)
    eng = scenario.engine
    # commands whose records the store then refuses (e.g. ConflictError)
    eng.create(scenario.fields(T1, external_id="X"), "op", scenario.t0 + 11)
    eng.act(a, "respond", "field-1", scenario.t0 + 12)
    eng.fire_due(scenario.t0 + 400)
    assert set(eng.rollback(seq)) == {"E0000002", a}
    assert eng.last_seq == seq
    assert list(eng.events()) == list(before.events())
    assert eng.busy_units() == before.busy_units()
    assert eng.next_due() == before.next_due()
    # the same commands again give the same records (fired deadlines fire again)
    out = eng.create(scenario.fields(T1, external_id="X"), "op", scenario.t0 + 11)
    assert out.created and out.event is not None and out.event["id"] == "E0000002"
    fired = eng.fire_due(scenario.t0 + 400).records
    assert [r.action for r in fired].count("breached") == 4


def test_rollback_after_apply_is_refused(scenario: Scenario) -> None:
    scenario.create(T1)
    other = Engine(scenario.policy, scenario.routing)
    for r in scenario.records:
        other.apply(r)
    assert other.rollback(other.last_seq) == []
    with pytest.raises(ValueError):
        other.rollback(0)


def test_confirm_limits_rollback(scenario: Scenario) -> None:
    scenario.create(T1)
    scenario.create(T1)
    scenario.engine.confirm(1)
    assert scenario.engine.rollback(1) == ["E0000002"]
    with pytest.raises(ValueError):
        scenario.engine.rollback(0)


def test_duplicates_belong_to_the_caller(scenario: Scenario) -> None:
    a = scenario.create(T1, key="K", external_id="X-1", caller="aaaa")
    assert a["caller"] == "aaaa"
    # another caller's identical key or (source, external_id) is a different key
    b = scenario.create(T1, key="K", caller="bbbb")
    c = scenario.create(T1, external_id="X-1", caller="bbbb")
    assert len({a["id"], b["id"], c["id"]}) == 3
    # each caller gets its own event back
    assert scenario.create(T2, key="K", caller="aaaa") is a
    assert scenario.create(T2, external_id="X-1", caller="aaaa") is a
    assert scenario.create(T2, key="K", caller="bbbb") is b
    assert scenario.create(T2, external_id="X-1", caller="bbbb") is c
    # the indexes are rebuilt by a replay of the journal and by a snapshot
    replayed = Engine(scenario.policy, scenario.routing)
    for r in scenario.records:
        replayed.apply(r)
    restored = Engine.restore(scenario.engine.snapshot(), scenario.policy, scenario.routing)
    for eng in (replayed, restored):
        for caller, kw, want in (("aaaa", {"idempotency_key": "K"}, a),
                                 ("bbbb", {"idempotency_key": "K"}, b),
                                 ("bbbb", {}, c)):
            out = eng.create(scenario.fields(T2, caller=caller, external_id="X-1"), "op", 2e9,
                             **kw)
            assert out.noop and out.event == want
        fresh = eng.create(scenario.fields(T2, caller="cccc", external_id="X-1"), "op", 2e9,
                           idempotency_key="K")
        assert fresh.created and fresh.event is not None and fresh.event["id"] == "E0000004"


def test_events_without_a_caller_match_only_callers_that_may_read_them(
        scenario: Scenario) -> None:
    """Events stored before callers were recorded (``caller`` missing)."""
    old = scenario.engine.create(scenario.fields(T1, external_id="OLD"), "op", scenario.t0,
                                 idempotency_key="OLD-K")
    assert old.event is not None
    legacy = dict(old.records[0].after)
    del legacy["caller"]
    eng = Engine(scenario.policy, scenario.routing)
    eng.apply(dataclasses.replace(old.records[0], after=legacy))
    sees = eng.create(scenario.fields(T1, caller="aaaa", external_id="OLD"), "op", 2e9,
                      may_read=lambda ev: True)
    assert sees.noop and sees.event is not None and sees.event["id"] == old.event["id"]
    sees = eng.create(scenario.fields(T1, caller="aaaa"), "op", 2e9, idempotency_key="OLD-K",
                      may_read=lambda ev: True)
    assert sees.noop and sees.event is not None and sees.event["id"] == old.event["id"]
    # a caller that may not read it (or says nothing about what it reads) gets a new event
    blind = eng.create(scenario.fields(T1, caller="bbbb", external_id="OLD"), "op", 2e9,
                       idempotency_key="OLD-K", may_read=lambda ev: False)
    assert blind.created and blind.event is not None and blind.event["id"] != old.event["id"]
    silent = eng.create(scenario.fields(T1, caller="cccc", external_id="OLD"), "op", 2e9)
    assert silent.created
    # the core's own callers (no caller id) match them as before
    none = eng.create(scenario.fields(T1, external_id="OLD"), "op", 2e9)
    assert none.noop and none.event is not None and none.event["id"] == old.event["id"]


def test_rollback_forgets_the_callers_keys(scenario: Scenario) -> None:
    eng = scenario.engine
    seq = eng.last_seq
    eng.create(scenario.fields(T1, caller="aaaa", external_id="R"), "op", scenario.t0,
               idempotency_key="RK")
    eng.rollback(seq)
    again = eng.create(scenario.fields(T1, caller="aaaa", external_id="R"), "op", scenario.t0,
                       idempotency_key="RK")
    assert again.created


def test_a_refused_first_dispatch_loses_no_other_events_deadline(scenario: Scenario) -> None:
    """The store refuses the reassign that first dispatched an event: its deadlines must go
    with it, and the next ``fire_due`` must still fire every other event's due deadlines
    (it used to raise TypeError on the stale entry after popping them all)."""
    eng = scenario.engine
    new = scenario.create(T3)["id"]  # no team anywhere: status new
    seq = eng.last_seq
    eng.act(new, "reassign", "op-1", scenario.clock.now(), team="team-t1")
    eng.rollback(seq)
    assert eng.get(new)["dispatched_at"] is None and eng.next_due() is None
    scenario.clock.advance(1)  # the other event's clocks start after the refused ones
    other = scenario.create(T1)["id"]
    fired = scenario.at(1000)
    assert {r.event_id for r in fired} == {other}
    assert [(r.extra or {}).get("stage") for r in fired if r.action == "breached"] == [
        "respond", "depart", "arrive"]
    assert eng.next_due() is None
    # dispatching it for real later starts its clocks as usual
    out = scenario.act(new, "reassign", team="team-t1")
    assert out.event is not None and eng.next_due() == out.event["warn_at"]["respond"]


def test_a_reassign_in_the_instant_of_dispatch_restarts_every_stage(
        scenario: Scenario) -> None:
    """Respond and depart, then reassign at the same instant as the dispatch (equal
    ``dispatched_at`` and deadlines): the done stages are live again, so their deadlines
    must come back, as they do for an engine replaying the journal."""
    eng = scenario.engine
    ev = scenario.create(T1)
    scenario.act(ev["id"], "respond")
    scenario.act(ev["id"], "depart")
    assert eng.next_due() == ev["warn_at"]["arrive"]  # drops the done stages' entries
    scenario.act(ev["id"], "reassign", team="team-t1")
    fresh = Engine(scenario.policy, scenario.routing)
    for r in scenario.records:
        fresh.apply(r)
    assert eng.next_due() == fresh.next_due() == ev["warn_at"]["respond"]
    fired = scenario.at(900)
    assert [(r.extra or {}).get("stage") for r in fired if r.action == "breached"] == [
        "respond", "depart", "arrive"]


# -- effects: the live deadlines an Outcome carries --------------------------------------------
def brute_force_deadlines(ev: dict) -> set[tuple[str, str, float]]:
    """Which timers are pending, worked out from the event as the old code did (engine
    ``_live``/``_entries`` and ``store.redis.live_deadlines``), member by member."""
    if ev["status"] in ("resolved", "cancelled") or ev["dispatched_at"] is None:
        return set()
    done = {"respond": "responded_at", "depart": "departed_at", "arrive": "arrived_at"}
    out = set()
    for stage in ("respond", "depart", "arrive"):
        for kind in ("warn", "breach"):
            if (ev[done[stage]] is None and ev["deadlines"][stage] is not None
                    and f"{stage}:{kind}" not in ev["fired"]
                    and (kind == "breach" or f"{stage}:breach" not in ev["fired"])):
                due = ev["deadlines"][stage] if kind == "breach" else ev["warn_at"][stage]
                out.add((stage, kind, due))
    return out


STEPS = st.lists(st.tuples(
    st.sampled_from(["create", "respond", "depart", "arrive", "resolve", "cancel", "escalate",
                     "reassign", "fire"]),
    st.integers(0, 3), st.floats(0, 400)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_outcome_deadlines_equal_the_brute_force_derivation(steps: list) -> None:
    """Over random lifecycles, each Outcome names every touched event with exactly the
    deadlines the event implies, and the book (next_due) holds exactly their union."""
    from dispatch.core.errors import DispatchError

    sc = Scenario()
    for op, k, dt in steps:
        sc.clock.advance(dt)
        now = sc.clock.now()
        ids = [e["id"] for e in sc.engine.events()]
        try:
            if op == "create":
                out = sc.engine.create(sc.fields((T1, T2, T3, Z1)[k]), "op", now)
            elif op == "fire":
                out = sc.engine.fire_due(now)
            elif not ids:
                continue
            elif op == "reassign":
                out = sc.engine.act(ids[k % len(ids)], op, "op", now,
                                    team=("team-t1", "team-c1")[k % 2])
            else:
                out = sc.engine.act(ids[k % len(ids)], op, "op", now)
        except DispatchError:
            continue
        assert set(out.deadlines) == {r.event_id for r in out.records}
        for eid, live in out.deadlines.items():
            assert {tuple(d) for d in live} == brute_force_deadlines(sc.engine.get(eid))
        everything = [d.due for e in sc.engine.events()
                      for d in sc.engine.deadlines_of(e["id"])]
        assert {(e["id"], tuple(d)) for e in sc.engine.events()
                for d in sc.engine.deadlines_of(e["id"])} == {
            (e["id"], d) for e in sc.engine.events() for d in brute_force_deadlines(e)}
        assert sc.engine.next_due() == (min(everything) if everything else None)
