"""The lifecycle from several actors at once, as a hypothesis state machine over the pure core.

Actors: intake systems and operators of different scope (each its own ``caller`` for duplicate
detection, an operator's scope as ``may_read``), a core tool (caller None) and field units.
They create events (with repeated idempotency keys and external ids), respond, depart,
arrive, resolve, cancel, escalate, reassign, transfer, accept, return and attach evidence,
replay actions they already sent, send late
offline ``at`` times (and ones too far ahead), while the clock moves and ``fire_due`` runs;
the edge sometimes refuses the newest records (``rollback``, as when the store fails).

After every step:
- replaying the journal (every record so far) into a fresh ``Engine`` gives exactly the same
  state: events, busy units, next deadline, last seq; so does ``restore(snapshot())``;
- a duplicate is the caller's own first event under that key, or a legacy event it may read;
- an illegal action raises and changes nothing;
- every state (held, made by a record, read back from the journal) is a
  ``dispatch.core.event.Event`` (``event_check.check_event``);
- deadlines are never lost or doubled: right after ``fire_due(now)`` every stage of an open
  event that is due and not done has breached, and no stage of one dispatch breaches (or
  warns) twice.

Budget: ~30 s by default; ``FUZZ_LONG=1`` runs 20x the examples (tests/run.sh).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

sys.path.insert(0, str(Path(__file__).parent))

from dispatch_scenario import make_policy  # noqa: E402
from event_check import check_event  # noqa: E402
from table_routing import OUTSIDE, T1, T2, T3, TEAMS, Z1, TableRouting  # noqa: E402

from dispatch.clock import FakeClock  # noqa: E402
from dispatch.core.engine import STAGE_DONE, STAGES, Engine, Outcome  # noqa: E402
from dispatch.core.errors import (  # noqa: E402
    IllegalTransitionError,
    InvalidActionError,
    NotFoundError,
    OutsideJurisdictionError,
)
from dispatch.core.lifecycle import (  # noqa: E402
    ACTIONS,
    CLOCKED_STATUSES,
    OPEN_STATUSES,
    STEP_FIELD,
)
from dispatch.core.records import Record  # noqa: E402
from tests.conftest import fuzz_examples  # noqa: E402

MayRead = Callable[[dict[str, Any]], bool] | None
# caller id → what the caller may read (None: no scope check; the core's own tools)
ACTORS: dict[str | None, MayRead] = {
    "intake-hotline": lambda ev: False,  # an intake token reads no event
    "intake-app": lambda ev: False,
    "op-t1": lambda ev: ev.get("township") == "T1",  # an operator of township T1
    "op-county": lambda ev: ev.get("county") == "C1",  # an operator of the whole county
    None: None,  # a command from the core's own tools: events "from before callers"
}
FIELD = ["field-u1", "field-u3", "field-u5"]
WHERE = [T1, T2, T3, Z1, OUTSIDE]
UNITS = [u for spec in TEAMS.values() for u in spec["units"]] + ["u-unknown"]
TEAM_IDS = [*TEAMS, "team-unknown"]
ILLEGAL = (IllegalTransitionError, InvalidActionError, NotFoundError, OutsideJurisdictionError)
SKEW = make_policy().max_skew_s

# ``at`` of an action: None (now), late (an offline phone syncing), a little ahead (within
# the skew), or too far ahead (refused)
AT = st.one_of(st.none(),
               st.tuples(st.just("late"), st.floats(0, 600)),
               st.tuples(st.just("ahead"), st.floats(0, SKEW - 1)),
               st.tuples(st.just("too_far"), st.floats(SKEW + 1, 3600)))


def fingerprint(eng: Engine) -> tuple[Any, ...]:
    """Everything observable about an engine's state, as values (not live references; keys
    sorted: a state read back from the journal has its keys in the journal's order)."""
    return (eng.last_seq, orjson.dumps(list(eng.events()), option=orjson.OPT_SORT_KEYS),
            sorted(eng.busy_units().items()),
            eng.next_due())


class Lifecycle(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.clock = FakeClock()
        self.policy = make_policy()
        self.engine = Engine(self.policy, TableRouting())
        self.journal: list[Record] = []
        self.checked = 0  # records of the journal whose states were checked
        self.sent: list[tuple[str, str, float | None, str]] = []  # (event, action, at, actor)

    # -- helpers ----------------------------------------------------------------------------
    def keep(self, records: list[Record]) -> None:
        for r in records:
            expected = (self.journal[-1].seq if self.journal else 0) + 1
            assert r.seq == expected, (r.seq, expected)
            self.journal.append(r)

    def event_ids(self) -> list[str]:
        return [e["id"] for e in self.engine.events()]

    def pick_event(self, data: st.DataObject) -> str:
        ids = self.event_ids()
        return data.draw(st.sampled_from(ids + ["E9999999"]) if ids else st.just("E9999999"))

    def expected_duplicate(self, caller: str | None, key: str | None, source: str,
                           ext: str | None, may_read: MayRead) -> str | None:
        """contract §3, from the journal: the caller's own first event under the key, else
        (caller known, scope given) a legacy event (caller None) it may read."""
        by_key: dict[tuple[Any, ...], str] = {}
        by_ext: dict[tuple[Any, ...], str] = {}
        for r in self.journal:
            if r.action == "created":
                a = r.after
                if a["idempotency_key"] is not None:
                    by_key.setdefault((a["caller"], a["idempotency_key"]), a["id"])
                if a["external_id"] is not None:
                    by_ext.setdefault((a["caller"], a["source"], a["external_id"]), a["id"])
        wanted = []
        if key is not None:
            wanted.append((by_key, (caller, key), (None, key)))
        if ext is not None:
            wanted.append((by_ext, (caller, source, ext), (None, source, ext)))
        for index, own, legacy in wanted:
            if own in index:
                return index[own]
            if caller is not None and may_read is not None and legacy in index:
                if may_read(self.engine.get(index[legacy])):
                    return index[legacy]
        return None

    def resolve_at(self, at: Any) -> float | None:
        if at is None:
            return None
        kind, d = at
        return self.clock.now() + (-d if kind == "late" else d)

    def carry_out(self, eid: str, command: Callable[[float], Outcome]) -> bool:
        """Run one command on ``eid`` at now: refused or a repeat → nothing changed; else one
        record, kept. True when it made one."""
        before = fingerprint(self.engine)
        try:
            out = command(self.clock.now())
        except ILLEGAL:
            assert fingerprint(self.engine) == before, "an illegal command changed the state"
            return False
        if out.noop:
            assert out.records == [] and fingerprint(self.engine) == before
            return False
        assert len(out.records) == 1 and out.records[0].event_id == eid
        assert out.event == self.engine.get(eid)
        self.keep(out.records)
        return True

    def attempt(self, eid: str, action: str, actor: str, at: float | None,
                **kw: Any) -> None:
        if self.carry_out(eid, lambda now: self.engine.act(eid, action, actor, now, at=at,
                                                           **kw)):
            self.sent.append((eid, action, at, actor))

    # -- rules ------------------------------------------------------------------------------
    @rule(caller=st.sampled_from(list(ACTORS)), where=st.sampled_from(WHERE),
          category=st.sampled_from(["street_vending", "illegal_fishing", "noise"]),
          key=st.sampled_from([None, None, "k1", "k2"]),
          source=st.sampled_from(["hotline", "app"]),
          ext=st.sampled_from([None, None, "x1", "x2"]))
    def create(self, caller: str | None, where: tuple[float, float], category: str,
               key: str | None, source: str, ext: str | None) -> None:
        lon, lat = where
        fields = {"location": {"lon": lon, "lat": lat, "crs": "wgs84",
                               "original": {"lon": lon, "lat": lat}},
                  "category": category, "description": "stateful", "source": source,
                  "priority": None, "external_id": ext, "reporter": None,
                  "reported_at": None, "caller": caller}
        may_read = ACTORS[caller]
        want = self.expected_duplicate(caller, key, source, ext, may_read)
        before = fingerprint(self.engine)
        actor = caller or "tool"
        try:
            out = self.engine.create(fields, actor, self.clock.now(), idempotency_key=key,
                                     may_read=may_read)
        except OutsideJurisdictionError:
            assert want is None and where == OUTSIDE
            assert fingerprint(self.engine) == before
            return
        if want is not None:
            assert out.noop and not out.created and out.records == []
            assert out.event is not None and out.event["id"] == want
            assert fingerprint(self.engine) == before
            return
        assert out.created and len(out.records) == 1 and out.event is not None
        assert out.event["caller"] == caller and out.records[0].action == "created"
        assert out.event["id"] not in {r.event_id for r in self.journal}
        self.keep(out.records)

    @rule(data=st.data(), action=st.sampled_from([*ACTIONS, "fly"]),
          actor=st.sampled_from(["op-t1", "op-county", *FIELD]), at=AT)
    def act(self, data: st.DataObject, action: str, actor: str, at: Any) -> None:
        eid = self.pick_event(data)
        kw: dict[str, Any] = {}
        if action == "reassign":
            kw = {"unit": data.draw(st.sampled_from([None, *UNITS]), label="unit"),
                  "team": data.draw(st.sampled_from([None, *TEAM_IDS]), label="team")}
        elif action == "transfer":  # contract §8: to one of two departments (or none: 422)
            kw = {"department": data.draw(st.sampled_from([None, "d-market", "d-env"]),
                                          label="department"), "note": "移送"}
        elif action in ("accept", "return"):
            kw = {"note": data.draw(st.sampled_from([None, "退回：不属本部门职责"]),
                                    label="note")}
        self.attempt(eid, action, actor, self.resolve_at(at), **kw)

    @rule(data=st.data(), n=st.integers(0, 2), at=AT)
    def attach(self, data: st.DataObject, n: int, at: Any) -> None:
        """Evidence (contract §8): one of three files, again when already attached."""
        eid = self.pick_event(data)
        file = {"sha256": f"{n:064x}", "size": 100 + n, "type": "image/jpeg",
                "name": f"photo-{n}.jpg"}
        taken = self.resolve_at(at)
        self.carry_out(eid, lambda now: self.engine.attach(eid, file, "op-t1", now, at=taken))

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def replay_a_past_action(self, data: st.DataObject) -> None:
        """A phone retries something it already sent (maybe long ago)."""
        eid, action, at, actor = data.draw(st.sampled_from(self.sent), label="past")
        ev = self.engine.get(eid)
        already = (ev["status"] == "cancelled" if action == "cancel"
                   else action in STEP_FIELD and ev[STEP_FIELD[action]] is not None)
        before = fingerprint(self.engine)
        if already:  # a retry of what still stands: answered with the state, nothing written
            out = self.engine.act(eid, action, actor, self.clock.now(), at=at)
            assert out.noop and out.records == [] and fingerprint(self.engine) == before
            return
        self.attempt(eid, action, actor, at)

    @rule(seconds=st.sampled_from([0.0, 1.0, 10.0, 29.0, 45.0, 61.0, 100.0, 200.0, 1000.0]))
    def time_passes(self, seconds: float) -> None:
        now = self.clock.advance(seconds)
        out = self.engine.fire_due(now)
        assert out.event is None
        ats = [r.at for r in out.records]
        assert ats == sorted(ats) and all(a <= now for a in ats)  # due order, never early
        for r in out.records:
            assert r.action in ("warned", "breached", "escalated") and r.actor == "system"
            stage = (r.extra or {}).get("stage")
            if r.action == "breached":
                assert r.at == r.after["deadlines"][stage]
        self.keep(out.records)
        # nothing due is left behind: every open, dispatched stage that is due and not done
        # has breached (deadlines are never lost)
        for ev in self.engine.open_events():
            if ev["dispatched_at"] is None or ev["status"] not in CLOCKED_STATUSES:
                continue  # a transferred event's clocks are stopped (contract §8)
            for s in STAGES:
                if ev[STAGE_DONE[s]] is None and ev["deadlines"][s] <= now:
                    assert f"{s}:breach" in ev["fired"], (ev["id"], s, ev["fired"])
        nxt = self.engine.next_due()
        assert nxt is None or nxt > now

    @precondition(lambda self: bool(self.journal))
    @rule(k=st.integers(1, 3))
    def store_refuses_the_newest(self, k: int) -> None:
        """The store refused the last k records: the edge rolls the engine back to it."""
        to_seq = max(0, self.journal[-1].seq - k)
        self.engine.rollback(to_seq)
        del self.journal[to_seq:]
        self.checked = min(self.checked, len(self.journal))
        self.sent = [s for s in self.sent if s[0] in set(self.event_ids())]

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def the_journal_replays_to_the_same_state(self) -> None:
        fresh = Engine(self.policy, TableRouting())
        for r in self.journal:  # as stored: the bytes, without the state the engine kept
            stored = Record.from_json(r.to_json())
            assert fresh.apply(stored)
            assert stored.state is not None
            check_event(stored.state)  # folded from the journal: an Event too
        assert fingerprint(fresh) == fingerprint(self.engine)
        again = Engine.restore(self.engine.snapshot(), self.policy, TableRouting())
        assert fingerprint(again) == fingerprint(self.engine)

    @invariant()
    def every_state_is_an_event(self) -> None:
        """``dispatch.core.event.Event``, at run time: what the engine holds (made, or rolled
        back to) and what each record says the event was after it, as made and as read back."""
        for ev in self.engine.events():
            check_event(ev)
        for r in self.journal[self.checked:]:  # the journal's own: once each
            assert r.state is not None
            check_event(r.state)
        self.checked = len(self.journal)

    @invariant()
    def each_deadline_fires_at_most_once_per_dispatch(self) -> None:
        n = Counter((r.event_id, r.after["dispatched_at"], r.action, (r.extra or {})["stage"])
                    for r in self.journal if r.action in ("warned", "breached")
                    or (r.action == "escalated" and r.actor == "system"))
        assert not n or max(n.values()) == 1, [k for k, v in n.items() if v > 1]

    @invariant()
    def busy_units_are_the_open_events_units(self) -> None:
        want = {ev["unit"]: ev["id"] for ev in self.engine.events()
                if ev["status"] in OPEN_STATUSES and ev["unit"]}
        assert dict(self.engine.busy_units()) == want


Lifecycle.TestCase.settings = settings(
    max_examples=fuzz_examples(800), stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_lifecycle_from_several_actors = Lifecycle.TestCase


def test_a_reassign_at_the_instant_of_dispatch_keeps_the_respond_deadline() -> None:
    """Found by the machine above: respond, then reassign within the same instant as the
    dispatch (same ``now``: equal dispatched_at and deadlines). The reassign clears
    ``responded_at``, so the respond deadline is live again and must still fire, as it does
    for an engine replaying the same journal."""
    clock = FakeClock()
    eng = Engine(make_policy(), TableRouting())
    lon, lat = T1
    out = eng.create({"location": {"lon": lon, "lat": lat, "crs": "wgs84",
                                   "original": {"lon": lon, "lat": lat}},
                      "category": "street_vending", "description": "x", "source": "hotline",
                      "priority": None, "external_id": None, "reporter": None,
                      "reported_at": None, "caller": "intake-hotline"},
                     "intake-hotline", clock.now())
    assert out.event is not None
    eid, journal = out.event["id"], list(out.records)
    journal += eng.act(eid, "respond", "field-u1", clock.now()).records
    assert eng.next_due() == out.event["warn_at"]["depart"]  # respond is done
    journal += eng.act(eid, "reassign", "op-t1", clock.now(), team="team-t1").records
    ev = eng.get(eid)
    assert ev["responded_at"] is None and ev["status"] == "dispatched"
    fresh = Engine(make_policy(), TableRouting())
    for r in journal:
        fresh.apply(r)
    assert fresh.next_due() == ev["warn_at"]["respond"]
    assert eng.next_due() == ev["warn_at"]["respond"]
    fired = eng.fire_due(ev["deadlines"]["respond"]).records
    assert [(r.action, (r.extra or {}).get("stage")) for r in fired][:2] == [
        ("breached", "respond"), ("escalated", "respond")]


def test_a_refused_first_dispatch_leaves_no_deadline_behind() -> None:
    """Found by the machine above: an event with no team (status new) is reassigned to a
    team, and the store refuses that record (``rollback``). The event is undispatched again,
    so it has no deadline: ``next_due`` must not name one, and ``fire_due`` must neither
    raise nor fire for it."""
    clock = FakeClock()
    eng = Engine(make_policy(), TableRouting())
    lon, lat = T3  # township T3: no team anywhere
    out = eng.create({"location": {"lon": lon, "lat": lat, "crs": "wgs84",
                                   "original": {"lon": lon, "lat": lat}},
                      "category": "street_vending", "description": "x", "source": "hotline",
                      "priority": None, "external_id": None, "reporter": None,
                      "reported_at": None, "caller": "intake-hotline"},
                     "intake-hotline", clock.now())
    assert out.event is not None and out.event["status"] == "new"
    eid, seq = out.event["id"], out.records[-1].seq
    assert eng.next_due() is None
    eng.act(eid, "reassign", "op-county", clock.now(), team="team-t1")
    assert eng.next_due() is not None
    eng.rollback(seq)  # the store refused the reassign
    assert eng.get(eid)["status"] == "new" and eng.get(eid)["dispatched_at"] is None
    assert eng.next_due() is None
    assert eng.fire_due(clock.advance(3600)).records == []
