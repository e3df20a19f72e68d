"""Several instances on one Redis: follow the journal, claim deadlines, share positions.

``RedisCoordination`` is the ``dispatch.coordination.Coordination`` of a runtime whose store is
a ``RedisStore``; the runtime's commit pipeline and deadline loop are the same as embedded.

How it works (docs/redis.md has the long form):

- **Commands** (``append``): the engine makes the records, the store appends them with a
  compare-and-set on the journal head. Refused (another instance appended first) or failed
  (Redis unreachable): the store fails everything this instance had queued behind it and
  calls ``_on_failure`` synchronously, which rolls the engine back to the journal and starts
  one resync task (catch up from Redis, retrying until Redis answers). Commands wait for the
  resync (``ready``) and run again (conflict), or answer 503 at once while Redis is down.
- **Following**: a task blocks on XREAD for new journal entries and applies the other
  instances' records (``Engine.apply`` skips our own) when this instance has nothing in
  flight, then hands them to the listeners (the WebSocket hub), in seq order.
- **Deadlines**: every instance's engine holds the whole deadline book, but only the instance
  that atomically claims a due member of the Redis sorted set fires (with a lease: members
  claimed by an instance that died are claimed again when it runs out). The journal's
  compare-and-set is the guarantee underneath: if two instances ever fire the same breach,
  one append wins and the other rolls back and finds it fired.
- **Positions**: through the store (``put_position``/``positions``: a Redis hash, GEO set
  and channel); the other instances update their in-process ``UnitIndex`` (nearest-unit
  search stays local) and push ``unit.updated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from dispatch.coordination import Claim, Host, StoreUnavailableError
from dispatch.core.engine import Engine, Outcome
from dispatch.core.errors import ConflictError, NotFoundError
from dispatch.core.records import Record
from dispatch.store import replay
from dispatch.store.base import SharedStore

log = logging.getLogger("dispatch.cluster")

RESYNC_WAIT_S = 3.0    # how long a command waits for a catch-up before answering 503
READ_BATCH = 5000


class RedisCoordination:
    """The coordination of a runtime whose store is shared by instances (``RedisStore``)."""

    def __init__(self, store: SharedStore) -> None:
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
        self._host: Host | None = None
        self._follow_conn: Any = None

    @property
    def host(self) -> Host:
        assert self._host is not None, "not started"
        return self._host

    # -- life ------------------------------------------------------------------------------
    async def start(self, host: Host) -> None:
        """Strict store mode, the follower and the position subscriber."""
        self._host = host
        self.store.set_failure_hook(self._on_failure)
        for raw in await self.store.load_positions():
            self._take_position(raw, notify=False)
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
        if self._follow_conn is not None:
            with contextlib.suppress(Exception):
                await self._follow_conn.aclose()

    # -- commands ---------------------------------------------------------------------------
    async def ready(self) -> None:
        """Wait for a catch-up in progress; 503 at once while Redis is down."""
        while (task := self.resync_task) is not None:
            if self.down:
                raise StoreUnavailableError("Redis is unreachable; reconnecting")
            down = asyncio.ensure_future(self.down_event.wait())
            waiting: set[asyncio.Future[Any]] = {asyncio.shield(task), down}
            try:
                await asyncio.wait(waiting, timeout=RESYNC_WAIT_S,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                down.cancel()
            if self.down:
                raise StoreUnavailableError("Redis is unreachable; reconnecting")
            if not task.done():
                raise StoreUnavailableError("the journal is catching up; retry")

    async def append(self, out: Outcome) -> list[Record]:
        self.inflight += 1
        self.idle.clear()
        try:
            return await self.store.append(out.records, out.deadlines)
        except ConflictError:
            self.conflicts += 1
            raise  # _on_failure rolled back and started the catch-up
        except Exception as exc:
            raise StoreUnavailableError(f"Redis: {exc}") from exc
        finally:
            self.inflight -= 1
            self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.inflight == 0 and self.resync_task is None:
            self.idle.set()

    def _on_failure(self, first_seq: int, exc: BaseException) -> None:
        """Called by the store, synchronously, when it refused or failed our records."""
        if not self.host.rollback_to(first_seq - 1):
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
                    await self._resync_once()
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
            self.host.wake()

    async def _resync_once(self) -> None:
        host = self.host
        stored = await self.store.last_seq()
        if not self.rebuild and stored < host.engine.last_seq:
            # Redis lost records we had (restored from an older file, or a failover to a
            # replica that lagged): the journal is the truth.
            log.error("the journal in Redis is behind this instance (%d < %d): rebuilding "
                      "from it", stored, host.engine.last_seq)
            self.rebuild = True
        if self.rebuild:
            eng = Engine(host.engine.policy, host.engine.routing)
            await replay(self.store, eng)
            host.replace_engine(eng)
            self.rebuild = False
        await self._pull()

    # -- following the others -----------------------------------------------------------------
    async def _pull(self) -> None:
        """Apply and publish every stored record after the engine's (nothing in flight)."""
        while True:
            recs = await self.store.read(after_seq=self.host.engine.last_seq, limit=READ_BATCH)
            if not recs:
                return
            self.host.absorb(recs)
            if len(recs) < READ_BATCH:
                return

    async def _wait_idle(self) -> None:
        while not (self.inflight == 0 and self.resync_task is None):
            self.idle.clear()
            await self.idle.wait()

    async def catch_up(self) -> bool:
        """Bring the engine up to the journal now (waits until nothing is in flight)."""
        try:
            await asyncio.wait_for(self._catch_up(), RESYNC_WAIT_S)
        except TimeoutError:
            raise StoreUnavailableError("the journal is catching up; retry") from None
        return True

    async def _catch_up(self) -> None:
        while True:
            await self._wait_idle()
            eng = self.host.engine
            recs = await self.store.read(after_seq=eng.last_seq, limit=READ_BATCH)
            if self.inflight or self.resync_task is not None or eng is not self.host.engine:
                continue
            if not recs:
                return
            if recs[0].seq != eng.last_seq + 1:
                continue
            self.host.absorb(recs)
            if len(recs) < READ_BATCH:
                return

    async def _follow(self) -> None:
        cursor = self.host.published_seq
        while True:
            try:
                recs = await self.store.wait_records(cursor, 1.0, conn=self._follow_conn)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)
                continue
            cursor = max(cursor, self.host.published_seq)
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
        eng = self.host.engine
        fresh = [r for r in recs if r.seq > eng.last_seq]
        if not fresh:
            return
        if fresh[0].seq == eng.last_seq + 1 and all(
                b.seq == a.seq + 1 for a, b in zip(fresh, fresh[1:], strict=False)):
            self.host.absorb(fresh)
        else:
            await self._catch_up()

    # -- deadlines ---------------------------------------------------------------------------
    def may_fire(self) -> bool:
        return self.resync_task is None

    async def claim(self, now: float, overdue_s: float) -> Claim | None:
        """Claim the due deadlines; if we got any, catch up so the engine fires them.

        ``overdue_s``: how long the engine's next deadline has been due. Past two leases with
        nothing to claim (the sorted set lost it, e.g. Redis restored without it) we fire
        anyway: the journal's compare-and-set still keeps it to once.
        """
        members, lease = await self.store.claim(now)
        if not members and overdue_s <= 2 * self.store.lease_s:
            return None
        self.claimed += len(members)
        if self.inflight == 0 and self.resync_task is None:
            await self._catch_up()  # else a stale engine's append conflicts and catches up
        return Claim(members, lease)

    async def release(self, claim: Claim) -> None:
        """Give back the claimed members that are no longer live (fired, done or closed)."""
        stale = []
        for m in claim.members:
            eid, stage, kind = m.rsplit(":", 2)
            try:
                self.host.engine.get(eid)
            except NotFoundError:
                continue  # not here yet: keep the lease, it is claimed again when it ends
            if not any((d.stage, d.kind) == (stage, kind)
                       for d in self.host.engine.deadlines_of(eid)):
                stale.append(m)
        with contextlib.suppress(Exception):
            await self.store.release(stale, claim.lease)

    async def idle_wait(self, now: float) -> float:
        """Until the next member of the shared set (a due time or a lease end), at most 1 s."""
        nxt = await self.store.next_deadline()
        return 1.0 if nxt is None else min(1.0, max(0.01, nxt - now))

    # -- unit positions ----------------------------------------------------------------------
    def share_position(self, unit: str, lon: float, lat: float, at: float,
                       accuracy_m: float | None) -> None:
        """Write the position through the store and tell the others (fire and forget)."""
        data = orjson.dumps({"unit": unit, "lon": lon, "lat": lat, "at": at,
                             "accuracy_m": accuracy_m, "from": self.store.instance})
        task = asyncio.get_running_loop().create_task(self._send_position(unit, lon, lat, data))
        self.tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        if task in self.tasks:
            self.tasks.remove(task)

    async def _send_position(self, unit: str, lon: float, lat: float, data: bytes) -> None:
        try:
            await self.store.put_position(unit, lon, lat, data)
        except Exception as exc:  # a lost position is superseded by the next one
            log.info("position of %s not shared: %s", unit, exc)

    def _take_position(self, raw: bytes, skip_own: bool = False, notify: bool = True) -> None:
        try:
            d = orjson.loads(raw)
            if skip_own and d.get("from") == self.store.instance:
                return
            unit, lon, lat, at = d["unit"], d["lon"], d["lat"], d["at"]
            acc = d.get("accuracy_m")
        except Exception:
            return
        self.host.position_reported(unit, lon, lat, at, acc, notify=notify)

    async def _positions(self) -> None:
        while True:
            try:
                async for data in self.store.positions():
                    self._take_position(data, skip_own=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                pass
            await asyncio.sleep(0.5)

