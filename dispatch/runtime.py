"""The edge that carries out what the core decides: store first, then publish.

How it works: every command goes to the pure ``Engine`` (with ``now`` from the clock), which
returns the records of the change. The runtime appends them to the store and only when the
store says they are durable does it answer the caller and hand the records to the listeners
(the WebSocket hub, metrics). One task sleeps until the engine's next deadline (or until a
command may have moved it) and calls ``engine.fire_due(now)``: one deadline book, never a
timer per event. On start the engine is rebuilt from the journal, and deadlines that passed
while the server was down fire once, before the server takes requests.

What depends on other instances sharing the journal sits behind a ``Coordination``
(``dispatch.coordination``): embedded, nothing to follow and every deadline is ours; on Redis
(``dispatch.cluster.RedisCoordination``) an append may lose a compare-and-set to another
instance (the command runs again on the caught-up engine), other instances' records are
followed and published, deadlines are claimed with a lease so that each fires once, and unit
positions are shared (docs/redis.md). The pipeline and the loop here are the same for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from dispatch.clock import Clock, SystemClock
from dispatch.config import Config
from dispatch.coordination import Coordination, LocalCoordination, StoreUnavailableError
from dispatch.core.engine import Engine, Outcome
from dispatch.core.errors import ConflictError, NotFoundError
from dispatch.core.event import Event, Report
from dispatch.core.policy import Category, Policy, TimerWindows
from dispatch.core.records import Record
from dispatch.routing import GeoRoutingPort
from dispatch.store import open_store, replay
from dispatch.store.base import Store
from dispatch.store.redis_keys import REDIS_SCHEMES
from dispatch.view import CommittedView
from geo.loader import GeoDataset, load_dataset
from geo.router import Router
from geo.units import UnitIndex

log = logging.getLogger("dispatch.runtime")

Listener = Callable[[list[Record]], None]
PositionListener = Callable[[str], None]


TIMER_COMMITS_MAX = 64  # firings in flight to the store at once (bounded if it hangs)
TIMER_RETRY_S = 1.0     # the deadline loop's pause after the store refused a firing
RETRY_S = 5.0           # a command still refused after this long (conflicts) answers 503

__all__ = ["Runtime", "StoreUnavailableError", "build_policy"]


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
    """Engine + store + geo + the commit pipeline and the deadline loop, for one process."""

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
        self.store: Store = store or open_store(
            config.store, **_store_options(config))
        self.coordination: Coordination = _coordination_for(self.store)
        self.listeners: list[Listener] = []
        self.position_listeners: list[PositionListener] = []
        self._engine = Engine(self.policy, self.port)
        self._unfollow_busy = self.units.follow_busy(self._engine.busy_map())
        self._view = CommittedView()  # what the journal holds: every read at the edge
        self._seq_waiters: list[asyncio.Future[None]] = []  # for a seq to be durable
        self._wake = asyncio.Event()
        # when the deadline loop will next look; a change only wakes it to look earlier
        # (an intake's deadlines are usually later than the earliest one already waited for)
        self._wait_until = -math.inf
        self._timer_commits: set[asyncio.Task[None]] = set()
        self._timer_failed = False
        self._timer_task: asyncio.Task[None] | None = None
        self.healthy = True
        self.fired_total: dict[str, int] = {}

    # -- reading -----------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine: the state commands are made on. It runs ahead of the journal (a
        change is in it before it is durable, and is undone if the store refuses it): read
        ``view`` instead."""
        return self._engine

    @property
    def view(self) -> CommittedView:
        """The committed read model (interface 2): ``get``, ``events``, ``open_events``,
        ``busy_units``, ``last_seq``, fed only by durable records."""
        return self._view

    @property
    def published_seq(self) -> int:
        """The seq of the last record handed to the listeners (= ``view.last_seq``)."""
        return self._view.last_seq

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
        self.coordination.share_position(unit, lon, lat, at, accuracy_m)

    def wake(self) -> None:
        """The deadline book may have changed: let the deadline loop look again."""
        self._wake.set()

    # -- what a coordination asks of the runtime (``coordination.Host``) -------------------
    def position_reported(self, unit: str, lon: float, lat: float, at: float,
                          accuracy_m: float | None, notify: bool = True) -> None:
        """Another instance reported a unit's position: keep it, tell the listeners."""
        try:
            stored = self.units.update_position(unit, lon, lat, at, accuracy_m=accuracy_m)
        except Exception:
            return
        if not (stored and notify):
            return
        for listener in list(self.position_listeners):
            try:
                listener(unit)
            except Exception:
                log.exception("position listener failed")

    def rollback_to(self, seq: int) -> bool:
        """Undo the engine's records after ``seq`` (the store refused them)."""
        try:
            self._engine.rollback(seq)
        except ValueError:
            return False
        finally:
            self._wake_seq_waiters()
        return True

    def refuse_changes(self, reason: str) -> None:
        """The engine cannot be brought back to the journal: refuse changes until restarted."""
        log.error("refusing changes until restarted: %s", reason)
        self.healthy = False

    def replace_engine(self, engine: Engine) -> None:
        """Take ``engine`` (rebuilt from the journal) as the state."""
        self._unfollow_busy()
        self._engine = engine
        self._unfollow_busy = self.units.follow_busy(engine.busy_map())
        self._view.reset(engine)
        self._wake_seq_waiters()
        self._wake.set()

    def absorb(self, records: Iterable[Record]) -> None:
        """Apply durable records made by another instance and publish the new ones."""
        new = [r for r in records if self._engine.apply(r)]
        if new:
            self._publish(new)
            self._wake.set()

    # -- life --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, rebuild state from the journal, fire overdue deadlines once."""
        await self.store.open()
        snap = await self.store.load_snapshot()
        if snap is not None:
            self.replace_engine(Engine.restore(snap[1], self.policy, self.port))
        await replay(self.store, self._engine)
        self._view.reset(self._engine)
        await self.coordination.start(self)
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
        await self.coordination.stop()
        if self.healthy and self._engine.last_seq == self._view.last_seq:
            try:
                await self.store.save_snapshot(self._engine.last_seq, self._engine.snapshot())
            except Exception:
                log.exception("snapshot failed; the next start replays the whole journal")
        await self.store.close()

    # -- commands ---------------------------------------------------------------------------
    async def create(self, fields: Report, actor: str,
                     idempotency_key: str | None = None,
                     may_read: Callable[[Event], bool] | None = None) -> Outcome:
        """Intake: route, dispatch, and answer once the record is durable.

        ``fields["caller"]`` and ``may_read`` scope duplicate detection (``Engine.create``).
        """
        return await self._commit(lambda now: self._engine.create(
            fields, actor, now, idempotency_key=idempotency_key, may_read=may_read))

    async def act(self, event_id: str, action: str, actor: str, **kw: Any) -> Outcome:
        """A lifecycle action (respond, depart, …) carried out and made durable."""
        return await self._commit(lambda now: self._engine.act(event_id, action, actor, now,
                                                               **kw))

    async def attach(self, event_id: str, file: dict[str, Any], actor: str,
                     at: float | None = None) -> Outcome:
        """Evidence (contract §8): a stored file added to the event, made durable."""
        return await self._commit(lambda now: self._engine.attach(event_id, file, actor, now,
                                                                  at=at))

    async def fire_due(self, fired: asyncio.Future[float] | None = None) -> Outcome:
        """Fire every warning, breach and escalation due now that this instance claims.

        ``fired`` (the deadline loop's) is set once the firing is handed to the store, or
        with how long to wait when another instance claimed what is due.
        """
        try:
            now = self.clock.now()
            due = self._engine.next_due()
            claim = await self.coordination.claim(now, 0.0 if due is None else now - due)
            if claim is None:  # another instance fires it; its records reach us by following
                if fired is not None and not fired.done():
                    fired.set_result(await self.coordination.idle_wait(self.clock.now()))
                return Outcome(None, [])
            out = await self._commit(lambda t: self._engine.fire_due(t), fired)
            for rec in out.records:
                self.fired_total[rec.action] = self.fired_total.get(rec.action, 0) + 1
            await self.coordination.release(claim)
            return out
        finally:
            if fired is not None and not fired.done():
                fired.set_result(0.0)

    async def _commit(self, make: Callable[[float], Outcome],
                      made: asyncio.Future[float] | None = None) -> Outcome:
        """The one commit pipeline: make the records on the engine with ``now``, append them
        (again after a lost compare-and-set, on the caught-up engine), then publish."""
        give_up = time.monotonic() + RETRY_S
        caught_up = False
        conflicts = 0
        while time.monotonic() < give_up:
            await self.coordination.ready()
            try:
                out = make(self.clock.now())
            except NotFoundError:
                if caught_up or not await self.coordination.catch_up():
                    raise
                caught_up = True  # created on another instance a moment ago?
                continue
            if made is not None and not made.done():
                made.set_result(0.0)  # the loop resumes once the records are queued below
            if not out.records:
                seq = -1 if out.event is None else int(out.event.get("seq") or 0)
                if seq <= self._view.last_seq:
                    return out
                # a repeat of a change still in flight to the store: answer once it is durable
                await self._durable(seq)
                if seq <= self._view.last_seq:
                    return out
                continue  # it was refused and undone: run the command again
            due = self._engine.next_due()
            if due is not None and due < self._wait_until:
                self._wake.set()  # the deadline loop sleeps past the new earliest deadline
            try:
                stored = await self.coordination.append(out)
            except ConflictError:
                conflicts += 1
                if conflicts > 2:  # others keep winning: step aside a moment (jitter)
                    await asyncio.sleep(random.uniform(0, 0.002 * min(conflicts, 10)))
                continue
            self._engine.confirm(stored[-1].seq if stored else out.records[-1].seq)
            self._publish(stored or out.records)
            return out
        raise StoreUnavailableError("the journal is too contended right now; retry")

    async def _durable(self, seq: int) -> None:
        """Wait until record ``seq`` is in the view, or the engine no longer has it."""
        while self._view.last_seq < seq <= self._engine.last_seq:
            fut = asyncio.get_running_loop().create_future()
            self._seq_waiters.append(fut)
            await fut

    def _wake_seq_waiters(self) -> None:
        waiters, self._seq_waiters = self._seq_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _publish(self, records: list[Record]) -> None:
        """Records are durable: show them in the view, then hand them to the listeners."""
        self._view.apply(records)
        self._wake_seq_waiters()
        for listener in list(self.listeners):
            try:
                listener(records)
            except Exception:  # a failing listener never breaks the bus
                log.exception("listener failed")

    # -- the deadline loop ------------------------------------------------------------------
    async def _deadline_loop(self) -> None:
        """Fire deadlines as they fall due.

        Each firing runs in a task of its own that claims, fires and hands the records to the
        store in one step (so they reach the journal in seq order with every other change),
        then waits for the commit while this loop goes back to the book: deadlines that fall
        due while the journal syncs fire on time instead of waiting for that sync; they are
        pushed, in seq order, once durable. When the store refuses a firing the engine is
        rolled back and the loop pauses ``TIMER_RETRY_S`` before firing again. When another
        instance claimed what is due, the loop waits for its records (or the claim's lease).
        """
        loop = asyncio.get_running_loop()
        while True:
            due = self._engine.next_due()
            now = self.clock.now()
            self._wait_until = math.inf if due is None else due
            self._wake.clear()
            if due is None or due > now:
                await self._sleep(None if due is None else due - now)
                continue
            if self._timer_failed:
                self._timer_failed = False
                await asyncio.sleep(TIMER_RETRY_S)
                continue
            if not self.coordination.may_fire():
                await asyncio.sleep(0.1)
                continue
            if len(self._timer_commits) >= TIMER_COMMITS_MAX:
                await asyncio.wait(self._timer_commits, return_when=asyncio.FIRST_COMPLETED)
                continue
            fired: asyncio.Future[float] = loop.create_future()
            task = asyncio.create_task(self._fire_and_commit(fired))
            self._timer_commits.add(task)
            task.add_done_callback(self._timer_commits.discard)
            wait = await fired  # fired and handed to the store; the commit goes on in the task
            if wait > 0:
                await self._sleep(wait)

    async def _sleep(self, delay: float | None) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _fire_and_commit(self, fired: asyncio.Future[float]) -> None:
        try:
            await self.fire_due(fired)
        except StoreUnavailableError:
            self._timer_failed = True
            self._wake.set()
        except Exception as exc:  # Redis unreachable while claiming: try again shortly
            log.warning("firing deadlines failed: %s", exc)
            self._timer_failed = True
            self._wake.set()


def _coordination_for(store: Store) -> Coordination:
    """Local for an embedded store; Redis's when the store is shared by instances."""
    if getattr(store, "shared", False):
        from dispatch.cluster import RedisCoordination

        return RedisCoordination(store)  # type: ignore[arg-type]
    return LocalCoordination(store)


def _store_options(config: Config) -> dict[str, Any]:
    """Constructor options of the embedded store: an append never waits longer than
    ``store_options.append_timeout_s`` (the caller gets 503). Redis takes its own options
    from the URL's query string (docs/redis.md)."""
    opts = config["store_options"]
    if config.store.startswith((*REDIS_SCHEMES, "memory:")):
        return {}
    return {"synchronous": opts["synchronous"], "append_timeout_s": float(opts["append_timeout_s"])}
