"""Old journals still work: v1 records (each holding the whole event) then v2 records (each
holding the change) in one journal replay, verify and catch up (issue 12).

``data/journal_v1.jsonl`` was written by the engine of commit 66471a2 (before the change;
``data/make_journal_v1.py`` says how): one record per line as ``Record.to_json`` wrote it,
hashes included.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from dispatch_scenario import Scenario
from table_routing import T1

from dispatch.audit import verify_journal, verify_main
from dispatch.core.engine import Engine
from dispatch.core.records import Record, fold, state_at, state_of, verify_chain
from dispatch.store import replay
from dispatch.store.sqlite import SqliteStore
from dispatch.view import CommittedView

V1 = Path(__file__).parent / "data" / "journal_v1.jsonl"


def v1_records() -> list[Record]:
    return [Record.from_json(line) for line in V1.read_bytes().splitlines()]


def dump(events: object) -> bytes:
    return orjson.dumps(events, option=orjson.OPT_SORT_KEYS)


def stored(r: Record) -> Record:
    return Record.from_json(r.to_json())


def test_the_v1_fixture_is_v1_and_its_chain_holds() -> None:
    old = v1_records()
    assert len(old) == 9
    assert all(r.added is None and "timeline" in r.after for r in old)
    assert any(r.after["escalations"] for r in old)
    assert verify_chain(old) is None  # re-encoded byte for byte as the old code did
    assert [state_of(r) for r in old] == [r.after for r in old]


async def test_v1_then_v2_replays_verifies_and_catches_up(tmp_path: Path) -> None:
    old = v1_records()
    path = tmp_path / "journal.db"
    store = SqliteStore(str(path), synchronous="NORMAL")
    await store.open()
    try:
        assert [r.hash for r in await store.append(old)] == [r.hash for r in old]
        sc = Scenario()  # the new engine starts from the old journal, as a restart does
        assert await replay(store, sc.engine) == len(old)
        last_v1 = {r.event_id: r.after for r in old}
        assert dump(list(sc.engine.events())) == dump(list(last_v1.values()))
        view = CommittedView()
        view.reset(sc.engine)

        a, b, c = (r.event_id for r in old if r.action == "created")
        new_records: list[Record] = []
        for out in (sc.engine.act(a, "depart", "field-1", sc.clock.now()),
                    sc.engine.act(c, "reassign", "op-1", sc.clock.now(), unit="u1",
                                  note="改派回乡镇"),
                    sc.engine.create(sc.fields(T1), "op-1", sc.clock.now())):
            new_records += await store.append(out.records)
        sc.clock.set(sc.t0 + 5000)  # c's and d's clocks run out: breaches and escalations
        new_records += await store.append(sc.engine.fire_due(sc.clock.now()).records)
        assert any(r.action == "escalated" for r in new_records)
        assert all(r.added is not None and "timeline" not in r.after for r in new_records)
        live = {e["id"]: e for e in sc.engine.events()}
        assert len(live[c]["timeline"]) > len(last_v1[c]["timeline"])
        assert len(live[c]["escalations"]) > len(last_v1[c]["escalations"])

        back = await store.read()
        assert [r.hash for r in back[:len(old)]] == [r.hash for r in old]
        assert verify_chain(back) is None  # v2 records re-encode to the bytes stored too
        fresh = Engine(sc.policy, sc.routing)
        assert await replay(store, fresh) == len(old) + len(new_records)
        assert dump(list(fresh.events())) == dump(list(live.values()))
        assert fresh.next_due() == sc.engine.next_due()
        assert fresh.busy_units() == sc.engine.busy_units()

        view.apply(stored(r) for r in new_records)  # the read model folds v2 onto v1 states
        assert dump(list(view.events())) == dump(list(live.values()))
        assert view.last_seq == sc.engine.last_seq

        # /ws?since=: each record read back, given the event's state now, shows the event
        # as it was at that record (v1: its own after; v2: the lists cut where it ended)
        made = {r.seq: r for r in new_records}
        for r in await store.read():
            at = state_at(r, live[r.event_id])
            assert dump(at) == dump(made[r.seq].state if r.seq in made else r.after)
            assert "timeline" in at and "escalations" in at
    finally:
        await store.close()
    assert verify_journal(path) == (True, f"OK: {len(back)} records, chain intact", None)
    assert verify_main(str(path)) == 0


def test_fold_refuses_a_record_that_does_not_follow_the_state() -> None:
    sc = Scenario()
    eid = sc.create(T1)["id"]
    sc.act(eid, "respond")
    sc.act(eid, "depart", note="出发")
    first, _, third = (stored(r) for r in sc.records)
    held = fold(None, first)
    with pytest.raises(ValueError, match="a record is missing"):
        fold(held, third)  # the respond record was skipped
    assert state_of(first) == sc.records[0].state  # the first of its event: self-contained
    with pytest.raises(ValueError, match="full state"):
        state_of(stored(sc.records[2]))  # read back, not folded: not known on its own
    with pytest.raises(ValueError):
        state_at(stored(sc.records[2]), held)  # a state older than the record
