"""A record carries the change, not the event's history (issue 12, "records carry the change").

One event grows to 200 changes (reassigns with notes between two teams' units, manual
escalations in between): its timeline and escalations grow with every change, but the
journal's bytes per record do not; and the journal still replays to exactly the live state,
from the records as stored (no in-memory state), into a fresh engine and through a real
SQLite journal.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from dispatch_scenario import Scenario

from dispatch.core.engine import Engine
from dispatch.core.records import Record, encode
from dispatch.store import replay
from dispatch.store.sqlite import SqliteStore
from dispatch.view import CommittedView

CHANGES = 200


def grow(n: int) -> tuple[Scenario, str]:
    """One event changed until the journal holds ``n`` records of it."""
    sc = Scenario()
    eid = sc.create()["id"]
    units = ("u1", "u3")  # team-t1 (township) and team-c1 (county)
    j = 0
    while len(sc.records) < n:
        sc.clock.advance(1)
        if len(sc.records) % 2 == 1:
            sc.act(eid, "reassign", unit=units[j % 2], note=f"第{j}次改派：现场情况复杂，请支援")
            j += 1
        else:
            sc.act(eid, "escalate", note="升级处置")
    return sc, eid


def size(r: Record) -> int:
    """The bytes the journal keeps for ``r`` (its canonical JSON with a real prev_hash)."""
    return len(encode(r).with_prev("0" * 64))


def stored(r: Record) -> Record:
    """``r`` as read back from a journal: its bytes, without the engine's in-memory state."""
    return Record.from_json(r.to_json())


def state(eng: Engine | CommittedView) -> bytes:
    return orjson.dumps(list(eng.events()), option=orjson.OPT_SORT_KEYS)


def test_bytes_per_record_do_not_grow_with_the_history() -> None:
    sc, eid = grow(CHANGES)
    ev = sc.engine.get(eid)
    assert len(sc.records) == CHANGES and ev["version"] == CHANGES
    assert len(ev["timeline"]) == CHANGES + 1  # created + dispatched, then one per change
    assert len(ev["escalations"]) >= 90  # the other growing list
    tenth, last = sc.records[9], sc.records[-1]
    assert (tenth.action, last.action) == ("reassigned", "reassigned")
    assert size(last) < 1.5 * size(tenth), (size(tenth), size(last))
    assert size(last) < 4000  # a change, not the event's history (v1: 41 kB here)
    # the full state after the change is still there, in memory, for the push
    assert last.state is ev and last.state["timeline"][-1]["note"] == last.note


def test_the_grown_journal_replays_to_the_live_state() -> None:
    sc, _ = grow(CHANGES)
    fresh = Engine(sc.policy, sc.routing)
    for r in sc.records:
        assert fresh.apply(stored(r))
    assert state(fresh) == state(sc.engine)
    assert fresh.last_seq == sc.engine.last_seq
    assert fresh.busy_units() == sc.engine.busy_units()
    assert fresh.next_due() == sc.engine.next_due()
    view = CommittedView()  # the read model folds the same records the same way
    view.apply(stored(r) for r in sc.records)
    assert state(view) == state(sc.engine) and view.last_seq == sc.engine.last_seq


async def test_the_grown_journal_replays_through_sqlite(tmp_path: Path) -> None:
    sc, _ = grow(CHANGES)
    path = str(tmp_path / "journal.db")
    store = SqliteStore(path, synchronous="NORMAL")
    await store.open()
    try:
        for i in range(0, len(sc.records), 37):  # in batches, as the runtime appends
            await store.append(sc.records[i:i + 37])
    finally:
        await store.close()
    store = SqliteStore(path, synchronous="NORMAL")
    await store.open()
    try:
        back = await store.read()
        assert all(r.state is None and r.added is not None for r in back)
        fresh = Engine(sc.policy, sc.routing)
        assert await replay(store, fresh) == CHANGES
    finally:
        await store.close()
    assert state(fresh) == state(sc.engine)
    assert fresh.next_due() == sc.engine.next_due()
