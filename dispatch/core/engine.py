"""The dispatch engine: commands in, journal records out. Pure: every call takes ``now``.

How it works: the engine keeps the current state of every event as a plain JSON-able dict
and never mutates one in place: each change builds a new dict, which becomes both the new
state and the ``state`` of the change's ``Record``; the record itself carries the change:
``after`` is that state without its append-only lists (timeline, escalations) and ``added``
what the change appended to them, so a record's size does not grow with the event's history.
``create``/``act``/``fire_due`` return an ``Outcome`` whose records the edge appends to the
store before answering or publishing. ``apply`` replays stored records (its own after a
restart, or another instance's; old v1 records hold the whole state) with ``records.fold``,
ignoring any it has already seen, so state is always a fold over the journal. All open
events' timers live in one ``DeadlineBook``.

Effects: besides the records, an ``Outcome`` carries, per event the command touched, its
live deadlines after the change (``Deadline(stage, kind, due)``). ``live_deadlines`` is the
one place that says which deadlines an event has; the engine's book, the Redis sorted set
and its append script all take that list instead of working it out again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from dispatch.core import lifecycle as lc
from dispatch.core.deadlines import Deadline, DeadlineBook
from dispatch.core.errors import IllegalTransitionError, InvalidActionError, NotFoundError
from dispatch.core.event import Event, Evidence, Report, TimelineEntry
from dispatch.core.lifecycle import CLOCKED_STATUSES, OPEN_STATUSES, STAGE_DONE, STAGES
from dispatch.core.policy import Policy, TimerWindows
from dispatch.core.records import APPEND_ONLY, Record, fold
from dispatch.core.routing import RoutingPort

SYSTEM = "system"
_ALWAYS_BEFORE = ("status", "tier", "team", "unit")
_NOT_DIFFED = frozenset(("version", "seq", "updated_at", *APPEND_ONLY))
# How many of its newest records the engine can undo (records in flight to the store);
# older ones count as stored. ``confirm(seq)`` drops entries early.
UNDO_MAX = 4096


Deadlines = tuple[Deadline, ...]
NO_DEADLINES: Deadlines = ()


@dataclass
class Outcome:
    """What a command did: the event now, the new (not yet stored) records, and the effect
    on the deadline book: each touched event's live deadlines after the change."""

    event: Event | None
    records: list[Record] = field(default_factory=list)
    created: bool = False
    noop: bool = False
    deadlines: dict[str, Deadlines] = field(default_factory=dict)


def _deadline(fields: tuple[str, str, float]) -> Deadline:
    # the tuple constructor itself: a NamedTuple's generated __new__ is a Python call, and
    # six of them per intake were a tenth of ``Engine.create``
    return tuple.__new__(Deadline, fields)


def live_deadlines(ev: Event) -> Deadlines:
    """The warnings and breaches still to come for ``ev``, earliest stage first.

    1/3/15: a dispatched event on the clock has a warning and a breach per stage not yet
    done; a fired one is gone, and a stage's warning goes with its breach (it would say
    nothing new). A transferred event is off the clock (contract §8): none.
    """
    if ev["status"] not in CLOCKED_STATUSES or ev.get("dispatched_at") is None:
        return NO_DEADLINES
    fired = ev["fired"]
    out: list[Deadline] = []
    for s in STAGES:
        due = ev["deadlines"].get(s)
        if ev[STAGE_DONE[s]] is not None or due is None:
            continue
        if f"{s}:breach" in fired:
            continue
        warn = ev["warn_at"].get(s)
        if f"{s}:warn" not in fired and warn is not None:
            out.append(_deadline((s, "warn", float(warn))))
        out.append(_deadline((s, "breach", float(due))))
    return tuple(out)


class BusyUnits(dict[str, str]):
    """Unit id → the open event it is on, telling subscribers about each unit that becomes
    busy or free (the unit index keeps a mask of busy slots from them instead of testing
    every unit of a team against this dict on each recommendation)."""

    def __init__(self) -> None:
        super().__init__()
        self._subscribers: list[Callable[[str, bool], None]] = []

    def subscribe(self, fn: Callable[[str, bool], None]) -> Callable[[], None]:
        """Call ``fn(unit, busy)`` after each change from now on; returns an unsubscribe."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def __setitem__(self, unit: str, event_id: str) -> None:
        fresh = unit not in self
        super().__setitem__(unit, event_id)
        if fresh:
            for fn in self._subscribers:
                fn(unit, True)

    def __delitem__(self, unit: str) -> None:
        super().__delitem__(unit)
        for fn in self._subscribers:
            fn(unit, False)

    def _unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("BusyUnits changes only through [] and del (subscribers see them)")

    pop = popitem = clear = update = setdefault = __ior__ = _unsupported


class EventTable:
    """Event states by id, with the open set and the busy units (unit → its open event)
    derived from them: the read API the engine and the committed view (``dispatch.view``)
    share."""

    def __init__(self, busy: dict[str, str]) -> None:
        self._events: dict[str, Event] = {}
        self._open: dict[str, None] = {}
        self._busy = busy
        self._busy_view = MappingProxyType(busy)

    def get(self, event_id: str) -> Event:
        """The event's state (read-only); ``NotFoundError`` if unknown."""
        try:
            return self._events[event_id]
        except KeyError:
            raise NotFoundError(f"no event {event_id!r}") from None

    def events(self) -> Iterator[Event]:
        """Every event, in creation order."""
        return iter(list(self._events.values()))

    def open_events(self) -> Iterator[Event]:
        """Events not yet resolved or cancelled."""
        return (self._events[e] for e in list(self._open))

    def busy_units(self) -> Mapping[str, str]:
        """Units assigned to open events: unit id → event id (a live read-only view)."""
        return self._busy_view

    def _place(self, ev: Event) -> None:
        """Make ``ev`` the event's state and move the open set and busy units with it."""
        eid = ev["id"]
        old = self._events.get(eid)
        self._events[eid] = ev
        if old is not None and (was := old["unit"]) and self._busy.get(was) == eid:
            del self._busy[was]
        if ev["status"] in OPEN_STATUSES:
            self._open[eid] = None
            if (unit := ev["unit"]) and ev["status"] in CLOCKED_STATUSES:
                self._busy[unit] = eid
        else:
            self._open.pop(eid, None)


class Engine(EventTable):
    """All events, their lifecycle, timers and escalation, as a fold over the journal."""

    def __init__(self, policy: Policy, routing: RoutingPort) -> None:
        self._busy_units = BusyUnits()
        super().__init__(self._busy_units)
        self.policy = policy
        self.routing = routing
        self.last_seq = 0
        self._counter = 0
        # duplicate detection, per caller (contract §3): (caller, source, external_id) and
        # (caller, idempotency key) → event id; caller None for events stored before callers
        self._by_external: dict[tuple[str | None, Any, str], str] = {}
        self._by_key: dict[tuple[str | None, str], str] = {}
        self._book = DeadlineBook()
        self._live: dict[str, Deadlines] = {}  # event id → its live deadlines (non-empty)
        # undo log of the records this engine made: (seq, event id, state before, counter)
        self._undo: deque[tuple[int, str, Event | None, int]] = deque(
            maxlen=UNDO_MAX)

    # -- queries (get, events, open_events, busy_units: EventTable) --------------------------
    def busy_map(self) -> BusyUnits:
        """The busy units with change subscriptions (``UnitIndex.follow_busy``); the map the
        engine hands its routing port on each recommendation. Read it, never change it."""
        return self._busy_units

    def deadlines_of(self, event_id: str) -> Deadlines:
        """The live deadlines of ``event_id`` (empty when closed, undispatched or unknown)."""
        return self._live.get(event_id, NO_DEADLINES)

    def next_due(self) -> float | None:
        """When ``fire_due`` next has something to do (None: nothing scheduled)."""
        head = self._book.head()
        return None if head is None else head[0]

    def _outcome(self, event: Event | None, records: list[Record],
                 created: bool = False) -> Outcome:
        dls = {r.event_id: self._live.get(r.event_id, NO_DEADLINES) for r in records}
        return Outcome(event, records, created=created, deadlines=dls)

    # -- commands ---------------------------------------------------------------------------
    def create(self, fields: Report, actor: str, now: float,
               idempotency_key: str | None = None,
               may_read: Callable[[Event], bool] | None = None) -> Outcome:
        """Intake: route, dispatch at once if a team is found, start the 1/3/15 clocks.

        Duplicates belong to the caller (contract §3): ``fields["caller"]`` (an opaque id of
        the token, kept on the event as ``caller`` and never shown to clients) with the same
        idempotency key, or with the same (source, external_id), again → that caller's
        existing event, no record. Another caller's identical key is a different key.

        Events stored before callers were recorded have ``caller`` None. A caller None (a
        command from the core's own tools) matches them as before; any other caller matches
        one of them only when ``may_read(event)`` says it may read that event (so a hit is
        never an event the caller could not see; an intake token, which reads no event,
        never matches them and its retry of such a report makes a new event).
        """
        existing = self._find_existing(fields, idempotency_key, may_read)
        if existing is not None:
            return Outcome(existing, [], created=False, noop=True)
        cat = self.policy.category(fields["category"])
        loc = fields["location"]
        route = self.routing.route(loc["lon"], loc["lat"])
        eid = f"E{self._counter + 1:07d}"
        ev: Event = {
            "id": eid, "status": "new", "tier": None, "category": cat.id,
            "description": fields.get("description", ""), "source": fields.get("source"),
            "priority": cat.priority if (given := fields.get("priority")) is None else given,
            "external_id": fields.get("external_id"), "idempotency_key": idempotency_key,
            "caller": fields.get("caller"),
            "location": loc, "reporter": fields.get("reporter"),
            "reported_at": fields.get("reported_at"),
            "grid": route.grid, "township": route.township, "county": route.county,
            "city": route.city, "zone": route.zone, "team": None, "unit": None,
            "mutual_aid": False,
            "routing": {"route": route.explanation, "snapped_m": route.snapped_m, "unit": None},
            "created_at": now, "dispatched_at": None, "responded_at": None,
            "departed_at": None, "arrived_at": None, "resolved_at": None, "cancelled_at": None,
            "deadlines": {s: None for s in STAGES}, "warn_at": {s: None for s in STAGES},
            "fired": [], "breaches": [], "escalations": [], "evidence": [],
            "timeline": [_entry(now, now, "created", actor, None, "new", None)],
            "version": 0, "seq": 0, "updated_at": now,
        }
        if route.team is not None:
            level = route.team_level or self.routing.team_level(route.team) or "township"
            self._dispatch(ev, route.team, level, now, actor, initial=True)
        else:  # rare: no team anywhere up the tree; an operator must reassign
            ev["tier"] = "township" if route.township else "county" if route.county else "city"
        self._counter += 1
        rec = self._record(ev, {k: None for k in _ALWAYS_BEFORE}, "created", actor, now, now,
                           None, None)
        return self._outcome(ev, [rec], created=True)

    def act(self, event_id: str, action: str, actor: str, now: float, at: float | None = None,
            unit: str | None = None, team: str | None = None,
            note: str | None = None, department: str | None = None) -> Outcome:
        """Carry out one lifecycle action (respond/depart/arrive/resolve/cancel/escalate/
        reassign, and transfer/accept/return: contract §8). Illegal →
        ``IllegalTransitionError`` and nothing changes; an action that already happened →
        ``Outcome(noop=True)`` with the current state. ``department``: transfer's target."""
        ev = self.get(event_id)
        if action not in lc.ACTIONS:
            raise InvalidActionError(f"unknown action {action!r}", "action")
        if lc.is_replay(ev, action, department):
            return Outcome(ev, [], noop=True)
        status = lc.next_status(ev["status"], action)
        if action == "transfer" and not department:
            raise InvalidActionError("transfer needs a department", "department")
        if action == "return" and not note:
            raise InvalidActionError("a return needs a note saying why", "note")
        t = self._check_at(ev, now, at)
        new = _copy(ev)
        new["status"] = status
        extra: dict[str, Any] | None = None
        if action in lc.TRANSFER_ACTIONS:
            extra = self._transfer_step(new, action, t, actor, note, department)
        elif action in STAGE_DONE or action in ("resolve", "cancel"):
            new[lc.STEP_FIELD[action]] = t
            extra = self._complete(new, action, t)
        elif action == "escalate":
            extra = self._escalate(new, t, None, manual=True)
            if extra is None:
                raise IllegalTransitionError("the event is already at the city tier",
                                             current_status=ev["status"])
        else:  # reassign
            if not self._reassign(new, now, actor, unit, team):
                return Outcome(ev, [], noop=True)
        entry = _entry(t, now, lc.PAST[action], actor, ev["status"], status, note)
        if action in lc.TRANSFER_ACTIONS:
            assert extra is not None
            entry["department"] = extra["department"]
        new["timeline"].append(entry)
        rec = self._record(new, ev, lc.PAST[action], actor, t, now, note, extra)
        return self._outcome(new, [rec])

    def attach(self, event_id: str, file: Mapping[str, Any], actor: str, now: float,
               at: float | None = None) -> Outcome:
        """Evidence (contract §8): add a stored file to the event's ``evidence`` list.

        ``file`` holds its ``sha256``, ``size``, ``type`` and ``name``; ``at`` is when it was
        taken (a phone's offline queue keeps it), default ``now``. The entry is appended to
        the ``evidence`` list (and a timeline entry names it), so the record that carries it
        (``attached``) puts the SHA-256 in the hash chain. The status does not change
        (``lifecycle.ATTACH_STATUSES``). The same file on the same event again (a retry) →
        ``Outcome(noop=True)`` with the current state.
        """
        ev = self.get(event_id)
        if not lc.may_attach(ev["status"]):
            raise IllegalTransitionError(f"cannot attach evidence to an event that is "
                                         f"{ev['status']}", current_status=ev["status"])
        held = ev.get("evidence") or []
        if any(e.get("sha256") == file["sha256"] for e in held):
            return Outcome(ev, [], noop=True)
        t = now if at is None else float(at)
        if t > now + self.policy.max_skew_s:
            raise InvalidActionError(
                f"taken_at is {t - now:.1f} s in the future (max skew "
                f"{self.policy.max_skew_s} s)", "taken_at")
        entry: Evidence = {"id": f"{event_id}-{len(held) + 1}", "sha256": file["sha256"],
                 "size": int(file["size"]), "type": file["type"], "name": file["name"],
                 "at": t, "received_at": now, "actor": actor}
        new = _copy(ev)
        new["evidence"].append(entry)
        action = lc.PAST[lc.ATTACH]
        step = _entry(t, now, action, actor, ev["status"], ev["status"], entry["name"])
        step["evidence"] = entry["sha256"]
        new["timeline"].append(step)
        rec = self._record(new, ev, action, actor, t, now, None,
                           {"evidence": entry["id"], "sha256": entry["sha256"]})
        return self._outcome(new, [rec])

    def fire_due(self, now: float) -> Outcome:
        """Every warning, breach and escalation due by ``now``, as records in due order.

        A warning is skipped when its stage's breach is also due (it would say nothing new);
        a breach below the city tier is followed by an ``escalated`` record (contract §5).
        """
        out: list[Record] = []
        for eid, dl in list(self._book.pop_due(now)):
            if dl not in self._live.get(eid, NO_DEADLINES):
                continue  # fired or gone with an earlier firing of this call
            ev = self._events[eid]
            breach = ev["deadlines"].get(dl.stage)
            if dl.kind == "warn" and breach is not None and now >= breach:
                continue  # its breach is due too and says more
            out.extend(self._fire(ev, dl.due, now, dl.stage, dl.kind))
        return self._outcome(None, out)

    # -- replay -----------------------------------------------------------------------------
    def apply(self, record: Record) -> bool:
        """Replay a stored record; records already applied (seq <= last_seq) are ignored.

        Returns True when the record changed the state (an idempotent consumer).
        """
        if record.seq <= self.last_seq:
            return False
        prev = self._events.get(record.event_id)
        state = fold(prev, record)
        self._undo.clear()  # the journal holds this record, so everything before it too
        self.last_seq = record.seq
        self._counter = max(self._counter, int(state["id"][1:]))
        self._index(prev, state)
        return True

    def confirm(self, seq: int) -> None:
        """Records up to ``seq`` are stored: forget how to undo them (frees old states)."""
        while self._undo and self._undo[0][0] <= seq:
            self._undo.popleft()

    def rollback(self, to_seq: int) -> list[str]:
        """Undo every record this engine made after ``to_seq``, newest first.

        For when the store refused them (``ConflictError``: another instance appended first;
        or the store failed): the engine goes back to the journal's state, the edge catches
        up (``store.replay``) and retries the command. Returns the ids of the events
        reverted. ``ValueError`` if a record after ``to_seq`` was not made here or is too
        old to undo (then rebuild the engine from the store instead).
        """
        if to_seq >= self.last_seq:
            return []
        if not self._undo or self._undo[0][0] > to_seq + 1 or self._undo[-1][0] != self.last_seq:
            raise ValueError(f"cannot roll back to {to_seq}: rebuild from the store")
        touched = []
        while self._undo and self._undo[-1][0] > to_seq:
            seq, eid, prev, counter = self._undo.pop()
            cur = self._events[eid]
            self._counter = counter
            self.last_seq = seq - 1
            touched.append(eid)
            if prev is None:
                self._forget(cur)
            else:
                self._index(cur, prev, force=True)  # fired entries were popped from the book
        return touched

    def _forget(self, ev: Event) -> None:
        eid = ev["id"]
        del self._events[eid]
        self._open.pop(eid, None)
        self._set_deadlines(eid, NO_DEADLINES)
        if (unit := ev["unit"]) and self._busy.get(unit) == eid:
            del self._busy[unit]
        for index, k in self._dup_keys(ev):
            if index.get(k) == eid:
                del index[k]

    def snapshot(self) -> bytes:
        """The whole state as bytes, for ``Store.save_snapshot(engine.last_seq, blob)``."""
        return orjson.dumps({"v": 1, "last_seq": self.last_seq, "counter": self._counter,
                             "events": list(self._events.values())})

    @classmethod
    def restore(cls, blob: bytes, policy: Policy, routing: RoutingPort) -> Engine:
        """An engine rebuilt from ``snapshot()``; replay the journal after its ``last_seq``."""
        data = orjson.loads(blob)
        eng = cls(policy, routing)
        eng.last_seq = data["last_seq"]
        eng._counter = data["counter"]
        for ev in data["events"]:
            eng._index(None, ev)
        return eng

    # -- internals --------------------------------------------------------------------------
    def _find_existing(self, fields: Report, key: str | None,
                       may_read: Callable[[Event], bool] | None
                       ) -> Event | None:
        caller = fields.get("caller")
        wanted: list[tuple[dict[Any, str], Any, Any]] = []
        if key is not None:
            wanted.append((self._by_key, (caller, key), (None, key)))
        if fields.get("external_id") is not None:
            src, ext = fields.get("source"), fields["external_id"]
            wanted.append((self._by_external, (caller, src, ext), (None, src, ext)))
        for index, own, legacy in wanted:
            eid = index.get(own)
            if eid is not None:
                return self._events[eid]
            eid = index.get(legacy) if caller is not None and may_read is not None else None
            if eid is not None and may_read is not None and may_read(self._events[eid]):
                return self._events[eid]
        return None

    def _dup_keys(self, ev: Event) -> list[tuple[dict[Any, str], tuple[Any, ...]]]:
        """An event's duplicate-detection keys, each with its index (see ``create``)."""
        caller = ev.get("caller")
        out: list[tuple[dict[Any, str], tuple[Any, ...]]] = []
        if ev.get("idempotency_key") is not None:
            out.append((self._by_key, (caller, ev["idempotency_key"])))
        if ev.get("external_id") is not None:
            out.append((self._by_external, (caller, ev.get("source"), ev["external_id"])))
        return out

    def _check_at(self, ev: Event, now: float, at: float | None) -> float:
        if at is None:
            return now
        t = float(at)
        if t > now + self.policy.max_skew_s:
            raise InvalidActionError(
                f"at is {t - now:.1f} s in the future (max skew {self.policy.max_skew_s} s)",
                "at")
        prev = max(s for s in (ev["created_at"], ev["dispatched_at"], ev["responded_at"],
                               ev["departed_at"], ev["arrived_at"]) if s is not None)
        if t < prev:
            raise InvalidActionError("at is before the event's previous step", "at")
        return t

    def _dispatch(self, ev: Event, team: str, level: str, now: float,
                  actor: str, unit: str | None = None, initial: bool = False) -> None:
        """Assign team (+ unit) and start fresh 1/3/15 clocks from ``now``."""
        ev["team"], ev["tier"], ev["status"], ev["dispatched_at"] = team, level, "dispatched", now
        w = self.policy.windows(ev["category"], ev["zone"])
        ev["deadlines"] = {s: now + w.window(s) for s in STAGES}
        ev["warn_at"] = {s: now + w.window(s) * (1.0 - w.warn_fraction) for s in STAGES}
        ev["fired"] = []
        for k in STAGE_DONE.values():
            ev[k] = None
        if unit is None:
            loc = ev["location"]
            pick = self.routing.recommend(team, loc["lon"], loc["lat"], now, self._busy)
            ev["unit"] = pick.unit if pick else None
            ev["mutual_aid"] = bool(pick and pick.mutual_aid)
            ev["routing"] = {**ev["routing"], "unit": pick.explanation if pick else None,
                             "distance_m": pick.distance_m if pick else None}
        else:
            ev["unit"] = unit
            ev["mutual_aid"] = self.routing.unit_team(unit) != team
            ev["routing"] = {**ev["routing"], "unit": {"rule": "chosen by operator"},
                             "distance_m": None}
        if initial:
            ev["timeline"].append(_entry(now, now, "dispatched", actor, "new", "dispatched",
                                         None))

    def _reassign(self, ev: Event, now: float, actor: str, unit: str | None,
                  team: str | None) -> bool:
        if unit is None and team is None:
            raise InvalidActionError("reassign needs a team or a unit", "team")
        if unit is not None:
            unit_team = self.routing.unit_team(unit)
            if unit_team is None:
                raise InvalidActionError(f"unknown unit {unit!r}", "unit")
            holder = self._busy.get(unit)
            if holder is not None and holder != ev["id"]:
                raise InvalidActionError(f"unit {unit!r} is busy on {holder}", "unit")
            team = team or unit_team
            if unit == ev["unit"] and team == ev["team"]:
                return False  # a retried reassign to what is already assigned
        assert team is not None
        level = self.routing.team_level(team)
        if level is None:
            raise InvalidActionError(f"unknown team {team!r}", "team")
        self._dispatch(ev, team, level, now, actor, unit)
        return True

    def _transfer_step(self, ev: Event, action: str, t: float, actor: str,
                       note: str | None, department: str | None) -> dict[str, Any]:
        """Contract §8 移送 on ``ev`` (its status already set); the record's ``extra``.

        transfer: the clocks stop (``live_deadlines`` has none off the clock; deadlines and
        stage times stay for the history and the statistics), the unit is freed, and
        ``transfer`` describes it; ``transferred_to`` lists every department it ever went to
        (each keeps reading it). accept: the answer. return: the answer, then a fresh
        dispatch to the event's team (the routed one, or the one it was reassigned to):
        unit picked anew, clocks from now, tier back to that team's level.
        """
        if action == "transfer":
            assert department is not None
            ev["unit"], ev["mutual_aid"] = None, False
            ev["transfer"] = {"department": department, "at": t, "actor": actor, "note": note,
                              "answer": None, "answered_at": None, "answer_note": None}
            seen = list(ev.get("transferred_to") or [])
            if department not in seen:
                ev["transferred_to"] = [*seen, department]
            return {"department": department}
        held = ev["transfer"]
        answered = held.copy()
        answered["answer"] = lc.ANSWER_OF[action]
        answered["answered_at"] = t
        answered["answer_note"] = note
        ev["transfer"] = answered
        if action == "return":
            team = ev.get("team")
            level = self.routing.team_level(team) if team else None
            if team is None or level is None:  # not reachable: transfer needs a team
                raise InvalidActionError(f"the event's team {team!r} is unknown", "team")
            self._dispatch(ev, team, level, t, actor)
        return {"department": held["department"], "answer_s": t - float(held["at"])}

    def _complete(self, ev: Event, action: str, t: float) -> dict[str, Any] | None:
        stage = lc.STAGE_OF.get(action)
        # contract §5: a stage met late is still recorded as breached (judged on ``at``).
        due = None if stage is None else ev["deadlines"].get(stage)
        if stage is not None and due is not None:
            if t > due and stage not in ev["breaches"]:
                ev["breaches"].append(stage)
        if ev["escalations"] and action != "cancel":
            tiers = list(dict.fromkeys(e["to"] for e in ev["escalations"]))
            return {"recovered": True, "notify_tiers": tiers, "stage": stage}
        return {"stage": stage} if stage else None

    def _escalate(self, ev: Event, t: float, stage: str | None,
                  manual: bool = False) -> dict[str, Any] | None:
        old = ev["tier"]
        to = lc.next_tier(old)
        if to is None:
            return None
        ev["tier"] = to
        ev["escalations"].append({"at": t, "from": old, "to": to, "stage": stage,
                                  "manual": manual})
        return {"stage": stage, "from": old, "to": to, "manual": manual}

    def _fire(self, ev: Event, due: float, now: float, stage: str,
              kind: str) -> list[Record]:
        new = _copy(ev)
        new["fired"].append(f"{stage}:{kind}")
        if kind == "warn":
            new["timeline"].append(_entry(due, now, "warned", SYSTEM, ev["status"],
                                          ev["status"], stage))
            return [self._record(new, ev, "warned", SYSTEM, due, now, None, {"stage": stage})]
        if stage not in new["breaches"]:
            new["breaches"].append(stage)
        new["timeline"].append(_entry(due, now, "breached", SYSTEM, ev["status"],
                                      ev["status"], stage))
        out = [self._record(new, ev, "breached", SYSTEM, due, now, None, {"stage": stage})]
        # contract §5: each breach raises the tier one level, township → county → city.
        if lc.next_tier(new["tier"]) is not None:
            prev = new
            new = _copy(prev)
            extra = self._escalate(new, due, stage)
            new["timeline"].append(_entry(due, now, "escalated", SYSTEM, ev["status"],
                                          ev["status"], stage))
            out.append(self._record(new, prev, "escalated", SYSTEM, due, now, None, extra))
        return out

    def _record(self, new: Event, old: Mapping[str, Any], action: str, actor: str,
                at: float, now: float, note: str | None,
                extra: dict[str, Any] | None) -> Record:
        """Seal ``new`` as the event's state and return the record of the change."""
        self.last_seq += 1
        new["version"] = old.get("version", 0) + 1
        new["seq"] = self.last_seq
        new["updated_at"] = now
        before = {k: old.get(k) for k in _ALWAYS_BEFORE}
        for k, v in new.items() if "id" in old else ():
            if k not in _NOT_DIFFED and k not in before and old.get(k) != v:
                before[k] = old.get(k)
        added: dict[str, Any] = {}
        lists: Mapping[str, Any] = new  # the append-only keys, by name
        for k in APPEND_ONLY:  # the lists only grow: the record carries what was appended
            if k not in new:
                continue  # a later list (records.LATER_LISTS) the state does not have
            held = old.get(k) or []
            if lists[k][:len(held)] != held:
                raise AssertionError(f"{new['id']}'s {k} was changed, not appended to")
            added[k] = {"start": len(held), "items": lists[k][len(held):]}
        after = {k: v for k, v in new.items() if k not in APPEND_ONLY}
        prev = self._events.get(new["id"])
        self._undo.append((self.last_seq, new["id"], prev, self._counter - (prev is None)))
        self._index(prev, new)
        return Record(self.last_seq, new["id"], new["version"], action, actor, at, now,
                      before, after, note, extra, added=added, state=new)

    def _index(self, old: Event | None, ev: Event,
               force: bool = False) -> None:
        eid = ev["id"]
        self._place(ev)
        if old is None:
            for index, k in self._dup_keys(ev):
                index.setdefault(k, eid)  # the first event under a key is the one it means
        self._set_deadlines(eid, live_deadlines(ev), force)

    def _set_deadlines(self, eid: str, live: Deadlines, force: bool = False) -> None:
        """The book follows ``live``: replaced when it changed (or ``force``: after a rollback
        the entries that fired are no longer in the heap)."""
        if not force and live == self._live.get(eid, NO_DEADLINES):
            return
        if live:
            self._live[eid] = live
            self._book.set(eid, live)
        else:
            self._live.pop(eid, None)
            self._book.clear(eid)


def _copy(ev: Event) -> Event:
    new = ev.copy()
    new["fired"] = list(ev["fired"])
    new["breaches"] = list(ev["breaches"])
    new["escalations"] = list(ev["escalations"])
    new["timeline"] = list(ev["timeline"])
    new["evidence"] = list(ev.get("evidence") or ())  # events from before it have none
    new["deadlines"] = dict(ev["deadlines"])
    new["warn_at"] = dict(ev["warn_at"])
    return new


def _entry(at: float, received_at: float, action: str, actor: str, frm: str | None,
           to: str | None, note: str | None) -> TimelineEntry:
    return {"at": at, "received_at": received_at, "action": action, "actor": actor,
            "from": frm, "to": to, "note": note}


__all__ = ["Deadline", "Engine", "Outcome", "TimerWindows", "STAGES", "STAGE_DONE",
           "live_deadlines"]
