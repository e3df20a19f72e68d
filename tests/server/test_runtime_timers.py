"""The runtime's deadline loop: firings are not held up by a slow journal, are pushed in seq
order once durable, and a store that refuses them rolls the engine back and retries; deadlines
that passed while the server was down fire once, in ``Runtime.start`` itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dispatch.clock import FakeClock
from dispatch.config import load_config
from dispatch.core.records import Record
from dispatch.runtime import Runtime
from dispatch.store.memory import MemoryStore
from dispatch.store.sqlite import SqliteStore

from .conftest import BEIYANG_RESERVOIR, write_config


class GatedStore(MemoryStore):
    """A journal whose writes wait for ``gate`` (a slow fsync) or fail (a full disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False
        self.waiting = 0
        self.refused = 0

    async def append(self, records: list[Record]) -> list[Record]:
        self.waiting += 1
        await self.gate.wait()
        self.waiting -= 1
        if self.fail:
            self.refused += 1
            raise OSError("disk full")
        return await super().append(records)


async def until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
async def rt(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = load_config(write_config(tmp_path))
    clock = FakeClock()
    runtime = Runtime(cfg, clock=clock, store=GatedStore())
    await runtime.start()
    yield runtime
    runtime.store.gate.set()  # type: ignore[attr-defined]
    await runtime.stop()


def intake(n: int) -> dict[str, object]:
    lon, lat = BEIYANG_RESERVOIR
    return {"category": "noise", "location": {"lon": lon, "lat": lat + n * 1e-4},
            "description": f"timer test {n}"}


async def test_firings_do_not_wait_for_the_journal_and_publish_in_order(rt: Runtime) -> None:
    published: list[int] = []
    rt.subscribe(lambda recs: published.extend(r.seq for r in recs))
    a = (await rt.create(intake(1), "op")).event
    rt.clock.advance(20)  # type: ignore[attr-defined]
    b = (await rt.create(intake(2), "op")).event
    store = rt.store
    store.gate.clear()  # type: ignore[attr-defined]
    rt.clock.set(a["deadlines"]["respond"] + 0.01)  # type: ignore[attr-defined]
    rt.wake()
    await until(lambda: store.waiting == 1)  # type: ignore[attr-defined]
    assert "respond:breach" in rt.engine.get(a["id"])["fired"]
    # the first firing is still syncing; the next deadline fires on time all the same
    rt.clock.set(b["deadlines"]["respond"] + 0.01)  # type: ignore[attr-defined]
    rt.wake()
    await until(lambda: store.waiting == 2)  # type: ignore[attr-defined]
    assert "respond:breach" in rt.engine.get(b["id"])["fired"]
    assert published == [a["seq"], b["seq"]]  # nothing is pushed before it is durable
    store.gate.set()  # type: ignore[attr-defined]
    await until(lambda: len(published) > 2 and rt.published_seq == rt.engine.last_seq)
    assert published == sorted(published) and len(set(published)) == len(published)
    assert [r.seq for r in store.records] == published  # type: ignore[attr-defined]


async def test_a_refused_firing_is_rolled_back_and_fired_again(rt: Runtime) -> None:
    ev = (await rt.create(intake(3), "op")).event
    store = rt.store
    store.fail = True  # type: ignore[attr-defined]
    rt.clock.set(ev["deadlines"]["respond"] + 0.01)  # type: ignore[attr-defined]
    rt.wake()
    await until(lambda: store.refused == 1)  # type: ignore[attr-defined]
    await asyncio.sleep(0)  # let the refused commit finish its rollback
    assert rt.engine.last_seq == ev["seq"]  # the firing was undone: the journal's state
    assert "respond:breach" not in rt.engine.get(ev["id"])["fired"]
    store.fail = False  # type: ignore[attr-defined]
    await until(lambda: rt.published_seq > ev["seq"], timeout=5.0)  # after the 1 s pause
    assert store.refused == 1  # type: ignore[attr-defined]  # it waited, it did not spin
    assert "respond:breach" in rt.engine.get(ev["id"])["fired"]
    assert [r.action for r in store.records][1:3] == ["breached", "escalated"]  # type: ignore[attr-defined]


async def test_a_firing_reaches_the_journal_before_a_change_made_right_after_it(
        rt: Runtime) -> None:
    """The firing's records are handed to the store in the same step as they are made: an
    intake that runs just after the firing gets the next seq and is appended after it."""
    ev = (await rt.create(intake(4), "op")).event
    real = rt.engine.fire_due
    racing: list[asyncio.Task[object]] = []

    def fire_due(now: float):  # type: ignore[no-untyped-def]
        out = real(now)
        if out.records and not racing:  # an HTTP intake already waiting to run
            racing.append(asyncio.ensure_future(rt.create(intake(5), "op")))
        return out

    rt.engine.fire_due = fire_due  # type: ignore[method-assign]
    rt.clock.set(ev["deadlines"]["respond"] + 0.01)  # type: ignore[attr-defined]
    rt.wake()
    await until(lambda: bool(racing) and racing[0].done())
    assert racing[0].result().created  # not refused as out of order
    seqs = [r.seq for r in rt.store.records]  # type: ignore[attr-defined]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [r.action for r in rt.store.records][-1] == "created"  # type: ignore[attr-defined]


class NoSnapshotStore(SqliteStore):
    """The embedded journal of a server that died before it could snapshot its state."""

    async def save_snapshot(self, seq: int, blob: bytes) -> None:
        raise OSError("killed before the snapshot")


@pytest.mark.parametrize("shutdown", ["clean", "no_snapshot"])
async def test_a_deadline_passed_while_down_fires_once_at_start_up(
        tmp_path: Path, shutdown: str) -> None:
    """``Runtime.start`` itself fires what fell due while the server was down: once, before
    it returns (so before the server takes a request), and never again on the next start."""
    cfg = load_config(write_config(tmp_path))
    db = str(tmp_path / "journal.db")

    def runtime(clock: FakeClock) -> Runtime:
        store = (SqliteStore(db, synchronous="NORMAL") if shutdown == "clean"
                 else NoSnapshotStore(db, synchronous="NORMAL"))
        return Runtime(cfg, clock=clock, store=store)

    clock = FakeClock()
    first = runtime(clock)
    await first.start()
    ev = (await first.create(intake(6), "op")).event
    assert ev is not None
    assert not (await first.fire_due()).records  # nothing is due yet
    await first.stop()
    # down until respond and depart have passed; arrive has not
    assert ev["deadlines"]["depart"] < ev["deadlines"]["arrive"]
    clock.set(ev["deadlines"]["depart"] + 1.0)
    second = runtime(clock)
    published: list[Record] = []
    second.subscribe(published.extend)
    await second.start()
    # no await since start() returned: the deadline loop task has not run a single step
    fired = [(r.action, (r.extra or {}).get("stage")) for r in published]
    assert fired == [("breached", "respond"), ("escalated", "respond"),
                     ("breached", "depart"), ("escalated", "depart")]
    assert {r.event_id for r in published} == {ev["id"]}
    journal = await second.store.read(after_seq=ev["seq"])
    assert [r.seq for r in journal] == [r.seq for r in published]  # durable, in seq order
    assert second.engine.get(ev["id"])["breaches"] == ["respond", "depart"]
    await second.stop()
    clock.advance(1.0)
    third = runtime(clock)
    again: list[Record] = []
    third.subscribe(again.extend)
    await third.start()
    try:
        assert again == []  # fired once: a second start fires nothing
        assert third.engine.last_seq == published[-1].seq
        assert [r.seq for r in await third.store.read(after_seq=ev["seq"])] == \
            [r.seq for r in published]
    finally:
        await third.stop()


async def test_the_view_shows_only_durable_changes_never_a_refused_one(rt: Runtime) -> None:
    """Reads go to ``runtime.view``: a change in flight to the store is not in it yet, a
    change the store refuses never is, and once a command returns its result is."""
    from dispatch.coordination import StoreUnavailableError

    out = await rt.create(intake(7), "op")
    ev = out.event
    assert rt.view.get(ev["id"]) == ev and rt.view.last_seq == rt.published_seq == ev["seq"]
    assert rt.view.busy_units()[ev["unit"]] == ev["id"]
    store = rt.store
    store.gate.clear()  # type: ignore[attr-defined]
    store.fail = True  # type: ignore[attr-defined]
    pending = asyncio.ensure_future(rt.act(ev["id"], "cancel", "op"))
    await until(lambda: store.waiting == 1)  # type: ignore[attr-defined]
    assert rt.engine.get(ev["id"])["status"] == "cancelled"  # the engine runs ahead
    assert rt.view.get(ev["id"])["status"] == "dispatched"  # the view does not
    assert [e["id"] for e in rt.view.open_events()] == [ev["id"]]
    assert rt.view.busy_units()[ev["unit"]] == ev["id"]
    store.gate.set()  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailableError):
        await pending
    assert rt.view.get(ev["id"]) == ev and rt.view.last_seq == ev["seq"]
    store.fail = False  # type: ignore[attr-defined]
    done = await rt.act(ev["id"], "cancel", "op")
    assert rt.view.get(ev["id"]) == done.event and done.event["status"] == "cancelled"
    assert rt.view.last_seq == done.event["seq"] and not list(rt.view.open_events())
    assert ev["unit"] not in rt.view.busy_units()


async def test_a_repeated_command_answers_once_the_first_is_durable(rt: Runtime) -> None:
    """An idempotent repeat of an intake still in flight answers the event only once the
    view holds it (a GET right after the answer finds it)."""
    store = rt.store
    store.gate.clear()  # type: ignore[attr-defined]
    first = asyncio.ensure_future(rt.create(intake(8), "op", idempotency_key="k-8"))
    await until(lambda: store.waiting == 1)  # type: ignore[attr-defined]
    again = asyncio.ensure_future(rt.create(intake(8), "op", idempotency_key="k-8"))
    await asyncio.sleep(0.05)
    assert not again.done()  # not answered before the journal has it
    store.gate.set()  # type: ignore[attr-defined]
    a, b = await first, await again
    assert b.noop and b.event["id"] == a.event["id"]
    assert rt.view.get(b.event["id"]) == a.event
