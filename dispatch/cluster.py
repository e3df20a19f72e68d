"""Several instances on one Redis: follow the journal, claim deadlines, share positions.

How it works (docs/redis.md has the long form):

- **Commands** (``Cluster.run``): the engine makes the records, the store appends them with a
  compare-and-set on the journal head. Refused (another instance appended first) or failed
  (Redis unreachable): the store fails everything this instance had queued behind it and
  calls ``_on_failure`` synchronously, which rolls the engine back to the journal and starts
  one resync task (catch up from Redis, retrying until Redis answers). Commands wait for the
  resync and run again (conflict), or answer 503 at once while Redis is down.
- **Following**: a task blocks on XREAD for new journal entries and applies the other
  instances' records (``Engine.apply`` skips our own) when this instance has nothing in
  flight, then hands them to the listeners (the WebSocket hub), in seq order.
- **Deadlines**: every instance's engine holds the whole deadline book, but only the instance
  that atomically claims a due member of the Redis sorted set fires (with a lease: members
  claimed by an instance that died are claimed again when it runs out). The journal's
  compare-and-set is the guarantee underneath: if two instances ever fire the same breach,
  one append wins and the other rolls back and finds it fired.
- **Positions**: written to a Redis hash + GEO set and published; the other instances update
  their in-process ``UnitIndex`` (nearest-unit search stays local) and push ``unit.updated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from dispatch.core.engine import Engine, Outcome
from dispatch.core.errors import ConflictError, NotFoundError
from dispatch.core.records import Record
from dispatch.store import replay
from dispatch.store.redis import RedisStore, live_deadlines

if TYPE_CHECKING:
    from dispatch.runtime import Runtime

log = logging.getLogger("dispatch.cluster")

RETRY_S = 5.0          # a command still refused after this long (conflicts) answers 503
RESYNC_WAIT_S = 3.0    # how long a command waits for a catch-up before answering 503


class Cluster:
    """The multi-instance half of a ``Runtime`` whose store is a ``RedisStore``."""

    def __init__(self, runtime: Runtime, store: RedisStore) -> None:
        self.rt = runtime
        self.store = store
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.down = False
        self.down_event = asyncio.Event()  # set while ``down``
        self.rebuild = False
        self.resync_task: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.conflicts = 0
        self.claimed = 0
        self._follow_conn: Any = None
        self._pubsub: Any = None

    # -- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Strict store mode, the follower and the position subscriber."""
        self.store.set_failure_hook(self._on_failure)
        await self._load_positions()
        self._follow_conn = self.store.follower_connection()
        self.tasks.append(asyncio.create_task(self._follow(), name="follow"))
        self.tasks.append(asyncio.create_task(self._positions(), name="positions"))

    async def stop(self) -> None:
        log.info("stopping: %d commands re-run after a conflict, %d deadlines claimed, "
                 "%d appends written by this instance", self.conflicts, self.claimed,
                 self.store.commits)
        for t in [*self.tasks, self.resync_task]:
            if t is not None:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
        self.tasks = []
        for c in (self._pubsub, self._follow_conn):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.aclose()

    # -- commands ---------------------------------------------------------------------------
    async def run(self, make: Callable[[float], Outcome]) -> Outcome:
        """Make the records with ``make(now)`` and append them; re-run after a conflict."""
        from dispatch.runtime import StoreUnavailableError

        caught_up = False
        give_up = time.monotonic() + RETRY_S
        conflicts = 0
        while time.monotonic() < give_up:
            if self.resync_task is not None:
                if self.down:
                    raise StoreUnavailableError("Redis is unreachable; reconnecting")
                await self._wait_resync()
                continue
            try:
                out = make(self.rt.clock.now())
            except NotFoundError:
                if caught_up:
                    raise
                caught_up = True  # created on another instance a moment ago?
                try:
                    await asyncio.wait_for(self.catch_up(), RESYNC_WAIT_S)
                except TimeoutError:
                    raise StoreUnavailableError("the journal is catching up; retry") from None
                continue
            if not out.records:
                return out
            self.inflight += 1
            self.idle.clear()
            try:
                stored = await self.store.append(out.records)
            except ConflictError:
                self.conflicts += 1
                conflicts += 1
                if conflicts > 2:  # others keep winning: step aside a moment (jitter)
                    await asyncio.sleep(random.uniform(0, 0.002 * min(conflicts, 10)))
                continue  # _on_failure rolled back and started the catch-up
            except Exception as exc:
                raise StoreUnavailableError(f"Redis: {exc}") from exc
            finally:
                self.inflight -= 1
                self._maybe_idle()
            self.rt.published(stored)
            return out
        raise StoreUnavailableError("the journal is too contended right now; retry")

    async def _wait_resync(self) -> None:
        """Wait for the catch-up; 503 at once if it finds Redis down, or after a while."""
        from dispatch.runtime import StoreUnavailableError

        task = self.resync_task
        if task is None:
            return
        down = asyncio.ensure_future(self.down_event.wait())
        try:
            await asyncio.wait({asyncio.shield(task), down}, timeout=RESYNC_WAIT_S,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            down.cancel()
        if self.down:
            raise StoreUnavailableError("Redis is unreachable; reconnecting")
        if not task.done():
            raise StoreUnavailableError("the journal is catching up; retry")

    def _maybe_idle(self) -> None:
        if self.inflight == 0 and self.resync_task is None:
            self.idle.set()

    def _on_failure(self, first_seq: int, exc: BaseException) -> None:
        """Called by the store, synchronously, when it refused or failed our records."""
        try:
            self.rt.engine.rollback(first_seq - 1)
        except ValueError:
            log.error("cannot roll back to %d: rebuilding the engine from Redis", first_seq - 1)
            self.rebuild = True
        if not isinstance(exc, ConflictError):
            if not self.down:
                log.warning("Redis unreachable (%s): answering 503 until it is back", exc)
            self._set_down(True)
        if self.resync_task is None:
            self.idle.clear()
            self.resync_task = asyncio.get_running_loop().create_task(self._resync())

    def _set_down(self, down: bool) -> None:
        self.down = down
        self.down_event.set() if down else self.down_event.clear()

    async def _resync(self) -> None:
        delay = 0.05
        try:
            while True:
                try:
                    if not self.rebuild and await self.store.last_seq() < self.rt.engine.last_seq:
                        # Redis lost records we had (restored from an older file, or a
                        # failover to a replica that lagged): the journal is the truth.
                        log.error("the journal in Redis is behind this instance (%d < %d): "
                                  "rebuilding from it", await self.store.last_seq(),
                                  self.rt.engine.last_seq)
                        self.rebuild = True
                    if self.rebuild:
                        eng = Engine(self.rt.policy, self.rt.port)
                        await replay(self.store, eng)
                        self.rt.engine = eng
                        self.rt.published_seq = eng.last_seq
                        self.rebuild = False
                    await self._pull()
                    break
                except Exception as exc:
                    if not self.down:
                        log.warning("Redis unreachable (%s): answering 503", exc)
                    self._set_down(True)
                    await asyncio.sleep(delay)
                    delay = min(1.0, delay * 2)
            if self.down:
                log.warning("Redis is back: taking changes again")
            self._set_down(False)
        finally:
            self.resync_task = None
            self._maybe_idle()
            self.rt.wake()

    # -- following the others -----------------------------------------------------------------
    async def _pull(self) -> None:
        """Apply and publish every stored record after the engine's (nothing in flight)."""
        while True:
            recs = await self.store.read(after_seq=self.rt.engine.last_seq, limit=5000)
            if not recs:
                return
            self._apply(recs)
            if len(recs) < 5000:
                return

    def _apply(self, recs: list[Record]) -> None:
        eng = self.rt.engine
        new = [r for r in recs if eng.apply(r)]
        if new:
            self.rt.published(new, confirm=False)
            self.rt.wake()

    async def _wait_idle(self) -> None:
        while not (self.inflight == 0 and self.resync_task is None):
            self.idle.clear()
            await self.idle.wait()

    async def catch_up(self) -> None:
        """Bring the engine up to the journal now (waits until nothing is in flight)."""
        while True:
            await self._wait_idle()
            eng = self.rt.engine
            recs = await self.store.read(after_seq=eng.last_seq, limit=5000)
            if self.inflight or self.resync_task is not None or eng is not self.rt.engine:
                continue
            if not recs:
                return
            if recs[0].seq != eng.last_seq + 1:
                continue
            self._apply(recs)
            if len(recs) < 5000:
                return

    async def _follow(self) -> None:
        cursor = self.rt.published_seq
        while True:
            try:
                recs = await self.store.wait_records(cursor, 1.0, conn=self._follow_conn)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)
                continue
            cursor = max(cursor, self.rt.published_seq)
            if not recs:
                continue
            cursor = max(cursor, recs[-1].seq)
            try:
                await self._absorb(recs)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the journal failed; retrying")
                await asyncio.sleep(0.2)

    async def _absorb(self, recs: list[Record]) -> None:
        await self._wait_idle()
        eng = self.rt.engine
        fresh = [r for r in recs if r.seq > eng.last_seq]
        if not fresh:
            return
        if fresh[0].seq == eng.last_seq + 1 and all(
                b.seq == a.seq + 1 for a, b in zip(fresh, fresh[1:], strict=False)):
            self._apply(fresh)
        else:
            await self.catch_up()

    # -- deadlines ---------------------------------------------------------------------------
    async def fire_claimed(self, now: float, overdue_s: float = 0.0) -> Outcome:
        """Claim the due deadlines; if we got any, catch up and fire what is due.

        ``overdue_s``: how long the engine's next deadline has been due. Past two leases with
        nothing to claim (the sorted set lost it, e.g. Redis restored without it) we fire
        anyway: the journal's compare-and-set still keeps it to once.
        """
        members, lease = await self.store.claim(now)
        if not members and overdue_s <= 2 * self.store.lease_s:
            return Outcome(None, [])
        self.claimed += len(members)
        if self.inflight == 0 and self.resync_task is None:
            await self.catch_up()  # else a stale engine's append conflicts and catches up
        out = await self.run(lambda t: self.rt.engine.fire_due(t))
        for rec in out.records:
            self.rt.fired_total[rec.action] = self.rt.fired_total.get(rec.action, 0) + 1
        stale = []
        for m in members:
            eid, stage, kind = m.rsplit(":", 2)
            try:
                live = live_deadlines(self.rt.engine.get(eid))
            except NotFoundError:
                continue  # not here yet: keep the lease, it is claimed again when it ends
            if not any(name == f"{stage}:{kind}" for name, _ in live):
                stale.append(m)
        with contextlib.suppress(Exception):
            await self.store.release(stale, lease)
        return out

    async def deadline_loop(self) -> None:
        """Sleep until the next deadline; then claim, fire, or wait for the claimer's records."""
        from dispatch.runtime import StoreUnavailableError

        rt = self.rt
        while True:
            due = rt.engine.next_due()
            now = rt.clock.now()
            rt._wake.clear()
            if due is None or due > now:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(rt._wake.wait(),
                                           None if due is None else due - now)
                continue
            if self.resync_task is not None:
                await asyncio.sleep(0.1)
                continue
            try:
                out = await self.fire_claimed(now, overdue_s=now - due)
                if out.records:
                    continue
                nxt = await self.store.next_deadline()
                wait = 1.0 if nxt is None else min(1.0, max(0.01, nxt - rt.clock.now()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(rt._wake.wait(), wait)
            except asyncio.CancelledError:
                raise
            except (StoreUnavailableError, Exception) as exc:
                if not isinstance(exc, StoreUnavailableError):
                    log.warning("deadline claim failed: %s", exc)
                await asyncio.sleep(0.5)

    # -- unit positions ----------------------------------------------------------------------
    def share_position(self, unit: str, lon: float, lat: float, at: float,
                       accuracy_m: float | None) -> None:
        """Write the position to Redis and tell the other instances (fire and forget)."""
        data = orjson.dumps({"unit": unit, "lon": lon, "lat": lat, "at": at,
                             "accuracy_m": accuracy_m, "from": self.store.instance})
        task = asyncio.get_running_loop().create_task(self._send_position(unit, lon, lat, data))
        self.tasks.append(task)
        task.add_done_callback(lambda t: t in self.tasks and self.tasks.remove(t))

    async def _send_position(self, unit: str, lon: float, lat: float, data: bytes) -> None:
        r, k = self.store.r, self.store.keys
        if r is None:
            return
        try:
            async with r.pipeline(transaction=False) as p:
                p.hset(k.positions, unit, data)
                p.geoadd(k.positions_geo, (lon, lat, unit))
                p.publish(k.positions_channel, data)
                await p.execute()
        except Exception as exc:  # a lost position is superseded by the next one
            log.info("position of %s not shared: %s", unit, exc)

    async def _load_positions(self) -> None:
        assert self.store.r is not None
        for raw in (await self.store.r.hgetall(self.store.keys.positions)).values():
            self._take_position(raw, publish=False)

    def _take_position(self, raw: bytes, publish: bool = True) -> None:
        try:
            d = orjson.loads(raw)
            stored = self.rt.units.update_position(d["unit"], d["lon"], d["lat"], d["at"],
                                                   accuracy_m=d.get("accuracy_m"))
        except Exception:
            return
        if stored and publish:
            self.rt.position_changed(d["unit"])

    async def _positions(self) -> None:
        while True:
            try:
                self._pubsub = self.store.follower_connection(None).pubsub()
                await self._pubsub.subscribe(self.store.keys.positions_channel)
                async for msg in self._pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    data = msg["data"]
                    if orjson.loads(data).get("from") == self.store.instance:
                        continue
                    self._take_position(data)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)
