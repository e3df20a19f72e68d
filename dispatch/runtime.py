"""The edge that carries out what the core decides: store first, then publish.

How it works: every command goes to the pure ``Engine`` (with ``now`` from the clock), which
returns the records of the change. The runtime appends them to the store and only when the
store says they are durable does it answer the caller and hand the records to the listeners
(the WebSocket hub, metrics). One task sleeps until the engine's next deadline (or until a
command may have moved it) and calls ``engine.fire_due(now)``: one deadline book, never a
timer per event. On start the engine is rebuilt from the journal, and deadlines that passed
while the server was down fire once, before the server takes requests.

With a shared store (``store: redis://…``) the runtime hands commands, following and the
deadline loop to ``dispatch.cluster.Cluster``: appends become compare-and-set retries across
instances, other instances' records are followed and published, and deadlines are claimed
from Redis so that each fires once (docs/redis.md). The embedded path is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

from dispatch.clock import Clock, SystemClock
from dispatch.config import Config
from dispatch.core.engine import Engine, Outcome
from dispatch.core.policy import Category, Policy, TimerWindows
from dispatch.core.records import Record
from dispatch.routing import GeoRoutingPort
from dispatch.store import open_store, replay
from dispatch.store.base import Store
from dispatch.store.redis_keys import REDIS_SCHEMES
from geo.loader import GeoDataset, load_dataset
from geo.router import Router
from geo.units import UnitIndex

log = logging.getLogger("dispatch.runtime")

Listener = Callable[[list[Record]], None]
PositionListener = Callable[[str], None]


TIMER_COMMITS_MAX = 64  # firings in flight to the store at once (bounded if it hangs)


class StoreUnavailableError(Exception):
    """The store could not make a change durable; nothing was answered."""


def build_policy(config: Config) -> Policy:
    """Timer windows and categories from the validated configuration."""
    t = config["timers"]
    defaults = TimerWindows(respond_s=float(t["respond_s"]), depart_s=float(t["depart_s"]),
                            arrive_s=float(t["arrive_s"]), warn_fraction=float(t["warn_fraction"]))
    cats = {c["id"]: Category(id=c["id"], name=c.get("name", c["id"]),
                              priority=int(c.get("priority", 2)),
                              timers=dict(c.get("timers") or {}))
            for c in config["categories"]}
    zones = {z: dict(v) for z, v in (t.get("zones") or {}).items()}
    return Policy(defaults=defaults, categories=cats, zones=zones,
                  max_skew_s=float(config["offline"]["max_skew_s"]))


class Runtime:
    """Engine + store + geo + the deadline loop, for one server process."""

    def __init__(self, config: Config, clock: Clock | None = None,
                 dataset: GeoDataset | None = None, store: Store | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        g = config["geo"]
        self.dataset = dataset or load_dataset(g["regions"], g.get("zones"), g["teams"])
        self.router = Router(self.dataset, snap_m=float(config["routing"]["snap_m"]))
        self.units = UnitIndex(self.dataset,
                               position_max_age_s=float(config["routing"]["position_max_age_s"]))
        self.port = GeoRoutingPort(self.router, self.units)
        self.policy = build_policy(config)
        self.engine = Engine(self.policy, self.port)
        self.store: Store = store or open_store(
            config.store, **_store_options(config))
        self.listeners: list[Listener] = []
        self.position_listeners: list[PositionListener] = []
        self.cluster: Any = None  # dispatch.cluster.Cluster when the store is shared
        self.published_seq = 0
        self._wake = asyncio.Event()
        # when the deadline loop will next look; a change only wakes it to look earlier
        # (an intake's deadlines are usually later than the earliest one already waited for)
        self._wait_until = -math.inf
        self._timer_commits: set[asyncio.Task[None]] = set()
        self._timer_failed = False
        self._timer_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.healthy = True
        self.fired_total: dict[str, int] = {}

    @property
    def view(self) -> Engine:
        """The committed read model (interface 2): ``get``, ``events``, ``open_events``,
        ``busy_units``, ``last_seq``. For now the engine itself."""
        return self.engine

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(records)`` after each durable change; returns an unsubscribe."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def subscribe_positions(self, listener: PositionListener) -> Callable[[], None]:
        """Call ``listener(unit_id)`` when another instance reported a unit's position."""
        self.position_listeners.append(listener)
        return lambda: self.position_listeners.remove(listener)

    def share_position(self, unit: str, lon: float, lat: float, at: float,
                       accuracy_m: float | None = None) -> None:
        """A position reported here: tell the other instances (no-op when embedded)."""
        if self.cluster is not None:
            self.cluster.share_position(unit, lon, lat, at, accuracy_m)

    def position_changed(self, unit: str) -> None:
        for listener in list(self.position_listeners):
            try:
                listener(unit)
            except Exception:
                log.exception("position listener failed")

    def wake(self) -> None:
        """The deadline book may have changed: let the deadline loop look again."""
        self._wake.set()

    async def start(self) -> None:
        """Open the store, rebuild state from the journal, fire overdue deadlines once."""
        await self.store.open()
        snap = await self.store.load_snapshot()
        if snap is not None:
            self.engine = Engine.restore(snap[1], self.policy, self.port)
        await replay(self.store, self.engine)
        self.published_seq = self.engine.last_seq
        if getattr(self.store, "shared", False):
            from dispatch.cluster import Cluster

            self.cluster = Cluster(self, self.store)  # type: ignore[arg-type]
            await self.cluster.start()
            await self.fire_due()
            self._timer_task = asyncio.create_task(self.cluster.deadline_loop(),
                                                   name="deadlines")
            return
        await self.fire_due()
        self._timer_task = asyncio.create_task(self._deadline_loop(), name="deadlines")

    async def stop(self) -> None:
        """Stop the deadline loop, snapshot the state for a fast restart, flush the store.

        The snapshot is only a cache of what the journal says: it is taken when every record
        the engine holds is committed, and start-up replays the journal after it.
        """
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
        if self._timer_commits:  # firings still being made durable
            await asyncio.gather(*self._timer_commits, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.stop()
        if self.healthy and self.engine.last_seq == self.published_seq:
            try:
                await self.store.save_snapshot(self.engine.last_seq, self.engine.snapshot())
            except Exception:
                log.exception("snapshot failed; the next start replays the whole journal")
        await self.store.close()

    # -- commands ---------------------------------------------------------------------------
    async def create(self, fields: dict[str, Any], actor: str,
                     idempotency_key: str | None = None,
                     may_read: Callable[[dict[str, Any]], bool] | None = None) -> Outcome:
        """Intake: route, dispatch, and answer once the record is durable.

        ``fields["caller"]`` and ``may_read`` scope duplicate detection (``Engine.create``).
        """
        if self.cluster is not None:
            return await self.cluster.run(  # type: ignore[no-any-return]
                lambda now: self.engine.create(fields, actor, now,
                                               idempotency_key=idempotency_key,
                                               may_read=may_read))
        out = self.engine.create(fields, actor, self.clock.now(),
                                 idempotency_key=idempotency_key, may_read=may_read)
        await self._commit(out.records)
        return out

    async def act(self, event_id: str, action: str, actor: str, **kw: Any) -> Outcome:
        """A lifecycle action (respond, depart, …) carried out and made durable."""
        if self.cluster is not None:
            return await self.cluster.run(  # type: ignore[no-any-return]
                lambda now: self.engine.act(event_id, action, actor, now, **kw))
        out = self.engine.act(event_id, action, actor, self.clock.now(), **kw)
        await self._commit(out.records)
        return out

    async def fire_due(self) -> Outcome:
        """Fire every warning, breach and escalation due now (shared store: if claimed)."""
        if self.cluster is not None:
            return await self.cluster.fire_claimed(  # type: ignore[no-any-return]
                self.clock.now())
        out = self.engine.fire_due(self.clock.now())
        for rec in out.records:
            self.fired_total[rec.action] = self.fired_total.get(rec.action, 0) + 1
        await self._commit(out.records)
        return out

    async def _commit(self, records: list[Record]) -> None:
        if not records:
            return
        due = self.engine.next_due()
        if due is not None and due < self._wait_until:
            self._wake.set()  # the deadline loop sleeps past the new earliest deadline
        try:
            stored = await self.store.append(records)
        except Exception as exc:
            # Nothing is answered: undo what the engine did so its state is the journal's.
            log.exception("store append failed; the change is undone and refused")
            try:
                self.engine.rollback(records[0].seq - 1)
            except ValueError:
                self.healthy = False  # cannot undo: stop taking changes until restarted
            raise StoreUnavailableError(str(exc)) from exc
        self.published(stored or records)

    def published(self, records: list[Record], confirm: bool = True) -> None:
        """Records are durable: free their undo entries and hand them to the listeners."""
        if confirm:
            self.engine.confirm(records[-1].seq)
        self.published_seq = max(self.published_seq, records[-1].seq)
        for listener in list(self.listeners):
            try:
                listener(records)
            except Exception:  # a failing listener never breaks the bus
                log.exception("listener failed")

    async def _deadline_loop(self) -> None:
        """Fire deadlines as they fall due.

        Each firing runs in a task of its own that fires and hands the records to the store
        in one step (so they reach the journal in seq order with every other change), then
        waits for the commit while this loop goes back to the book: deadlines that fall due
        while the journal syncs fire on time instead of waiting for that sync (the writer
        commits them together); they are pushed, in seq order, once durable. When the store
        refuses a firing the engine is rolled back (``_commit``) and the loop waits a second
        before firing again.
        """
        loop = asyncio.get_running_loop()
        while True:
            due = self.engine.next_due()
            delay = None if due is None else max(0.0, due - self.clock.now())
            self._wait_until = math.inf if due is None else due
            self._wake.clear()
            if delay is None or delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            if self._timer_failed:
                self._timer_failed = False
                await asyncio.sleep(1.0)
                continue
            if len(self._timer_commits) >= TIMER_COMMITS_MAX:
                await asyncio.wait(self._timer_commits, return_when=asyncio.FIRST_COMPLETED)
                continue
            fired: asyncio.Future[None] = loop.create_future()
            task = asyncio.create_task(self._fire_and_commit(fired))
            self._timer_commits.add(task)
            task.add_done_callback(self._timer_commits.discard)
            await fired  # fired and handed to the store; the commit goes on in the task

    async def _fire_and_commit(self, fired: asyncio.Future[None]) -> None:
        # the loop resumes only after this step has fired and queued the records
        fired.set_result(None)
        try:
            await self.fire_due()
        except StoreUnavailableError:
            self._timer_failed = True
            self._wake.set()


def _store_options(config: Config) -> dict[str, Any]:
    """Constructor options of the embedded store: an append never waits longer than
    ``store_options.append_timeout_s`` (the caller gets 503). Redis takes its own options
    from the URL's query string (docs/redis.md)."""
    opts = config["store_options"]
    if config.store.startswith((*REDIS_SCHEMES, "memory:")):
        return {}
    return {"synchronous": opts["synchronous"], "append_timeout_s": float(opts["append_timeout_s"])}
