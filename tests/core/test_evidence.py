"""Evidence in the core (contract §8, issue 13): ``Engine.attach`` appends one entry to the
event's ``evidence`` list; its record carries only that entry (like the timeline), puts the
SHA-256 in the hash chain, replays to the same state, and is allowed in every status."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from dispatch_scenario import Scenario

from dispatch.core import lifecycle as lc
from dispatch.core.engine import Engine
from dispatch.core.errors import InvalidActionError
from dispatch.core.records import Record, encode, fold, state_at, verify_chain


def file(n: int) -> dict[str, object]:
    data = f"photo {n}".encode()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "type": "image/jpeg", "name": f"现场{n}.jpg"}


def attach(sc: Scenario, eid: str, n: int, at: float | None = None):
    return sc._keep(sc.engine.attach(eid, file(n), "field-1", sc.clock.now(), at=at))


def stored(r: Record) -> Record:
    return Record.from_json(r.to_json())


def test_attach_appends_an_entry_and_a_chained_record() -> None:
    sc = Scenario()
    eid = sc.create()["id"]
    sc.clock.advance(5)
    out = attach(sc, eid, 1, at=sc.t0 + 2)
    ev = out.event
    [entry] = ev["evidence"]
    assert entry == {"id": f"{eid}-1", "sha256": file(1)["sha256"], "size": 7,
                     "type": "image/jpeg", "name": "现场1.jpg", "at": sc.t0 + 2,
                     "received_at": sc.t0 + 5, "actor": "field-1"}
    assert ev["status"] == "dispatched" and ev["timeline"][-1]["evidence"] == entry["sha256"]
    [rec] = out.records
    assert rec.action == lc.PAST[lc.ATTACH] == "attached"
    assert rec.added["evidence"] == {"start": 0, "items": [entry]}
    assert "evidence" not in rec.after  # carried as the addition, not the list
    # the SHA-256 is in the bytes the chain hashes
    assert entry["sha256"].encode() in encode(sc.records[-1]).with_prev("")
    assert verify_chain(sc.records) is None
    tampered = Record.from_dict({**sc.records[-1].to_dict(), "added": {
        **rec.added, "evidence": {"start": 0, "items": [{**entry, "sha256": "0" * 64}]}}})
    assert verify_chain([*sc.records[:-1], tampered]) is not None


def test_the_same_file_again_is_a_replay_and_every_status_allows_it() -> None:
    sc = Scenario()
    eid = sc.create()["id"]
    attach(sc, eid, 1)
    again = sc.engine.attach(eid, file(1), "field-1", sc.clock.now())
    assert again.noop and again.records == []
    for action in ("respond", "depart", "arrive", "resolve"):
        sc.act(eid, action)
    assert attach(sc, eid, 2).event["evidence"][-1]["id"] == f"{eid}-2"  # resolved: allowed
    other = sc.create()["id"]
    sc.act(other, "cancel")
    assert len(attach(sc, other, 3).event["evidence"]) == 1  # cancelled: allowed too
    assert lc.ATTACH_STATUSES == frozenset(lc.STATUSES)


def test_taken_at_in_the_future_is_refused_and_changes_nothing() -> None:
    sc = Scenario()
    eid = sc.create()["id"]
    before = sc.engine.get(eid)
    with pytest.raises(InvalidActionError) as exc:
        sc.engine.attach(eid, file(1), "f", sc.clock.now(), at=sc.clock.now() + 31)
    assert exc.value.field == "taken_at"
    assert sc.engine.get(eid) is before and sc.engine.last_seq == 1


def test_records_stay_small_and_replay_to_the_live_state() -> None:
    sc = Scenario()
    eid = sc.create()["id"]
    for n in range(60):
        sc.clock.advance(1)
        attach(sc, eid, n)
    sizes = [len(encode(r).with_prev("0" * 64)) for r in sc.records if r.action == "attached"]
    assert sizes[-1] < 1.3 * sizes[5], (sizes[5], sizes[-1])
    fresh = Engine(sc.policy, sc.routing)
    for r in sc.records:
        assert fresh.apply(stored(r))
    dump = lambda e: orjson.dumps(list(e.events()), option=orjson.OPT_SORT_KEYS)  # noqa: E731
    assert dump(fresh) == dump(sc.engine)
    # state_at: the list as it was at an older record, from today's state
    cur = sc.engine.get(eid)
    tenth = stored([r for r in sc.records if r.action == "attached"][9])
    assert [e["id"] for e in state_at(tenth, cur)["evidence"]] == [
        f"{eid}-{i}" for i in range(1, 11)]
    restored = Engine.restore(sc.engine.snapshot(), sc.policy, sc.routing)
    assert restored.get(eid)["evidence"] == cur["evidence"]


def test_records_written_before_the_evidence_list_fold_and_accept_it() -> None:
    """A v2 record from before issue 13 has no ``evidence`` addition: its state has no list,
    and the event's next change (an attachment included) starts one."""
    sc = Scenario()
    eid = sc.create()["id"]
    old = stored(sc.records[0]).to_dict()
    del old["added"]["evidence"]
    old_rec = Record.from_dict(old)
    state = fold(None, old_rec)
    assert "evidence" not in state and state["timeline"]
    assert "evidence" not in state_at(Record.from_dict(old), state)
    eng = Engine(sc.policy, sc.routing)
    assert eng.apply(Record.from_dict(old))
    out = eng.attach(eid, file(1), "f", sc.clock.now())
    assert out.records[0].added["evidence"] == {"start": 0, "items": out.event["evidence"]}
    assert fold(state, stored(out.records[0]))["evidence"] == out.event["evidence"]
