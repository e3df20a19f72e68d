"""Feedback webhooks (contract v2 §8): every change message a webhook covers, POSTed, signed,
at least once, in ``seq`` order, from an outbox that is part of the store.

How it works: the journal already is a durable, ordered, hash-chained log of every change,
so it is the outbox. Each webhook keeps one small durable value in the store
(``Store.set_value``, compare-and-set) under ``webhook:<id>``: its ``cursor`` (every covered
message up to that seq was answered 2xx), the message being retried with its attempts and
last error, and an ``epoch`` that a redelivery bumps. One ``Worker`` per webhook reads the
journal after the cursor (never past the committed view, so each record can be given its
event's state at that change: ``CommittedView.recall``), skips what the webhook does not
cover (``scope.webhook_covers``), renders each covered record as the WebSocket does
(``hub.message_for``), and POSTs it until a 2xx: backing off from ``retry_initial_s`` (at most
1 s), doubling, to ``retry_max_s`` (at most 60 s), never giving up and never passing a message
that is not delivered. The cursor moves only after a 2xx (at the end of each batch read, and
with every failed attempt), so a ``kill -9`` or a restart sends again at most the messages
of one batch, with the same delivery id: ``X-Dispatch-Delivery`` is derived from the webhook
and the record's own SHA-256 (unique in every journal, stable across retries, restarts and
instances).

Several instances on Redis: one instance per webhook delivers, the one holding the store's
lease ``webhook:<id>`` (``SharedStore.hold_lease``, renewed every third of ``lease_s``). It
sends only while its last renewal is younger than 0.8 ``lease_s``; if it dies another takes
the lease over and starts from the durable cursor (the messages since the last save may
arrive twice, with the same delivery id). Every write of the cursor is compare-and-set, so a
redelivery asked on any instance, or a takeover, is never overwritten unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dispatch.config import Config, ConfigError
from dispatch.core.records import Record
from dispatch.server import scope
from dispatch.server.hub import MESSAGE_TYPES, EventRendering, message_for

if TYPE_CHECKING:
    from dispatch.clock import Clock
    from dispatch.runtime import Runtime

log = logging.getLogger("dispatch.webhooks")

BATCH = 100          # records read from the journal at once; the cursor is saved after each
POLL_S = 1.0         # an idle worker looks at its durable state (a redelivery elsewhere)
ERROR_CHARS = 300
USER_AGENT = "dispatch-webhooks/2"


@dataclass(frozen=True)
class Webhook:
    """One configured webhook; ``departments``: those whose ``webhook`` names it (§8)."""

    id: str
    url: str
    secret: bytes
    source: str | None = None
    region: str | None = None
    departments: frozenset[str] = frozenset()

    def covers(self, rec: Record) -> bool:
        return scope.webhook_covers(self.source, self.region, self.departments, rec.after,
                                    rec.before)


def webhooks_of(config: Config) -> list[Webhook]:
    """The configured webhooks. ``departments`` (the transfer's section) is read defensively:
    an entry that is not a mapping with an ``id`` and a ``webhook`` is passed over here."""
    named: dict[str, set[str]] = {}
    for d in config.raw.get("departments") or ():
        if isinstance(d, Mapping) and isinstance(d.get("id"), str) \
                and isinstance(d.get("webhook"), str):
            named.setdefault(d["webhook"], set()).add(d["id"])
    return [Webhook(h["id"], h["url"], h["secret"].encode(), h.get("source"), h.get("region"),
                    frozenset(named.get(h["id"], ())))
            for h in config["webhooks"]]


def check_regions(config: Config, regions: Mapping[str, Any]) -> None:
    """``ConfigError`` naming the first webhook whose ``region`` the geo data does not know."""
    for i, h in enumerate(config["webhooks"]):
        if h.get("region") is not None and h["region"] not in regions:
            raise ConfigError(f"webhooks[{i}].region", f"unknown region {h['region']!r}")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``X-Dispatch-Signature``: ``sha256=`` + hex HMAC-SHA256(secret, timestamp "." body)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def delivery_id(webhook_id: str, record_hash: str) -> str:
    """``X-Dispatch-Delivery``: a UUID-shaped digest of the webhook and the record's hash,
    the same for every retry and redelivery of that message, on every instance."""
    h = hashlib.sha256(f"{webhook_id}\n{record_hash}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def backoff_s(attempts: int, initial_s: float, max_s: float) -> float:
    """The wait after the ``attempts``-th failure: initial, doubling, capped (§8)."""
    return float(min(max_s, initial_s * 2.0 ** min(max(attempts - 1, 0), 64)))


@dataclass
class Progress:
    """A webhook's durable state (``webhook:<id>`` in the store)."""

    cursor: int = 0                  # every covered message up to this seq was delivered
    epoch: int = 0                   # bumped by a redelivery
    delivered_seq: int | None = None  # the last message answered 2xx
    seq: int | None = None           # the message being retried
    attempts: int = 0
    last_error: str | None = None
    last_attempt_at: float | None = None
    next_attempt_at: float | None = None

    def dump(self) -> bytes:
        return orjson.dumps(self.__dict__, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def load(cls, raw: bytes) -> Progress:
        d = orjson.loads(raw)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def key_of(hook_id: str) -> str:
    return f"webhook:{hook_id}"


@dataclass
class Options:
    retry_initial_s: float = 1.0
    retry_max_s: float = 60.0
    timeout_s: float = 10.0
    lease_s: float = 10.0


@dataclass(eq=False)
class Worker:
    """Delivers one webhook's messages, in seq order, while this instance may."""

    hook: Webhook
    runtime: Runtime
    rendering: EventRendering
    clock: Clock
    opts: Options
    session: aiohttp.ClientSession
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    kick: asyncio.Event = field(default_factory=asyncio.Event)  # a redelivery here: look now
    raw: bytes | None = None          # the durable state as last read or written
    progress: Progress = field(default_factory=Progress)
    cursor: int = 0                   # delivered here, not yet saved
    lease_until: float = 0.0          # monotonic; a shared store only
    head_at: float | None = None      # received_at of the message being delivered
    delivered: int = 0
    retries: int = 0
    skipped: int = 0

    @property
    def shared(self) -> bool:
        return bool(getattr(self.runtime.store, "shared", False))

    def may_send(self) -> bool:
        return not self.shared or time.monotonic() < self.lease_until

    def oldest_pending_age_s(self) -> float:
        at = self.head_at
        return 0.0 if at is None or not self.may_send() else max(0.0, self.clock.now() - at)

    async def run(self) -> None:
        """Deliver until cancelled; a store or receiver failure never ends it."""
        while True:
            try:
                if not self.may_send():
                    self.head_at = None
                    await self._wait(self.wake, self.opts.lease_s / 3)
                    continue
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store unreachable: try again shortly
                log.warning("webhook %s: %s: %s", self.hook.id, type(exc).__name__, exc)
                await asyncio.sleep(1.0)

    async def keep_lease(self) -> None:
        """On a shared store: take or renew the webhook's lease every third of ``lease_s``."""
        name, ttl = key_of(self.hook.id), self.opts.lease_s
        while True:
            t0 = time.monotonic()
            try:
                held = await self.runtime.store.hold_lease(name, ttl)  # type: ignore[attr-defined]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook %s: lease: %s", self.hook.id, exc)
                held = False
            was = self.may_send()
            self.lease_until = t0 + 0.8 * ttl if held else 0.0
            if held and not was:
                log.info("webhook %s: this instance delivers", self.hook.id)
                self.wake.set()
            await asyncio.sleep(ttl / 3)

    async def _load(self) -> bool:
        """Read the durable state (made at the journal's head the first time); False when
        it had to be written first."""
        store = self.runtime.store
        raw = await store.get_value(key_of(self.hook.id))
        if raw is not None:
            try:
                self.raw, self.progress = raw, Progress.load(raw)
                self.cursor = self.progress.cursor
                return True
            except (ValueError, TypeError):
                log.error("webhook %s: unreadable state %r; starting at the journal's head",
                          self.hook.id, raw[:100])
        # a new webhook receives the changes from now on (an admin may redeliver older ones)
        fresh = Progress(cursor=self.runtime.view.last_seq)
        await store.set_value(key_of(self.hook.id), fresh.dump(), expect=raw)
        return False

    async def _save(self, progress: Progress) -> bool:
        """Compare-and-set the durable state; False when someone else wrote it meanwhile."""
        data = progress.dump()
        if data == self.raw:
            return True
        if not await self.runtime.store.set_value(key_of(self.hook.id), data, expect=self.raw):
            return False
        self.raw, self.progress = data, progress
        return True

    async def save_cursor(self) -> bool:
        """Save what was delivered here (after a batch; on stop)."""
        p = self.progress
        if self.raw is None or self.cursor <= p.cursor:
            return True
        return await self._save(Progress(self.cursor, p.epoch, p.delivered_seq))

    async def _round(self) -> None:
        """One batch: read after the cursor, deliver what is covered, save the cursor."""
        self.wake.clear()
        if not await self._load():
            return
        view = self.runtime.view
        upto = view.last_seq
        if self.cursor >= upto:
            self.head_at = None
            await self._wait(self.wake, POLL_S)
            return
        batch = await self.runtime.store.read(after_seq=self.cursor,
                                              limit=min(BATCH, upto - self.cursor))
        for rec in batch:
            if rec.seq > upto:
                break
            if self.hook.covers(rec) and not await self._deliver(rec):
                return  # the lease is gone, or the state changed (a redelivery): look again
            self.cursor = rec.seq
        if self.cursor >= upto:
            self.head_at = None
        await self.save_cursor()

    async def _deliver(self, rec: Record) -> bool:
        """POST ``rec``'s message until a 2xx; False when this worker must stop and look."""
        self.head_at = rec.received_at
        try:
            self.runtime.view.recall(rec)
            body = orjson.dumps(message_for(self.rendering, rec))
        except Exception:  # one odd record never stops the others (contract §3 Bounds)
            self.skipped += 1
            log.exception("webhook %s: record %d (%s) could not be rendered; not sent",
                          self.hook.id, rec.seq, rec.action)
            return True
        p = self.progress
        attempts = p.attempts if p.seq == rec.seq else 0
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Dispatch-Delivery": delivery_id(self.hook.id, rec.hash),
                   "X-Dispatch-Seq": str(rec.seq), "X-Dispatch-Webhook": self.hook.id}
        while True:
            if not self.may_send():
                return False
            error = await self._post(body, headers)
            if error is None:
                self.delivered += 1
                p = self.progress
                if p.seq is not None:  # clear the error shown for this message
                    return await self._save(Progress(rec.seq, p.epoch, rec.seq))
                self.progress.delivered_seq = rec.seq
                return True
            attempts += 1
            self.retries += 1
            now = self.clock.now()
            wait = backoff_s(attempts, self.opts.retry_initial_s, self.opts.retry_max_s)
            p = self.progress
            if not await self._save(Progress(self.cursor, p.epoch, p.delivered_seq, rec.seq,
                                             attempts, error, now, now + wait)):
                return False
            log.info("webhook %s: seq %d attempt %d failed (%s); again in %.3g s",
                     self.hook.id, rec.seq, attempts, error, wait)
            if await self._wait(self.kick, wait):
                self.kick.clear()
                return False

    async def _post(self, body: bytes, headers: dict[str, str]) -> str | None:
        """One attempt; None on a 2xx, else why it failed."""
        ts = int(self.clock.now())
        headers = {**headers, "X-Dispatch-Timestamp": str(ts),
                   "X-Dispatch-Signature": sign(self.hook.secret, ts, body)}
        try:
            async with self.session.post(
                    self.hook.url, data=body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.opts.timeout_s)) as r:
                if 200 <= r.status < 300:
                    return None
                return f"HTTP {r.status}"
        except TimeoutError:
            return f"no answer within {self.opts.timeout_s:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> bool:
        """Wait for ``event`` at most ``timeout`` s; True when it was set."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
            return True
        return False


class Webhooks:
    """Every configured webhook's worker, started and stopped with the application."""

    def __init__(self, config: Config, runtime: Runtime, rendering: EventRendering,
                 clock: Clock) -> None:
        check_regions(config, runtime.dataset.regions)
        self.hooks = {h.id: h for h in webhooks_of(config)}
        self.runtime = runtime
        self.rendering = rendering
        self.clock = clock
        o = config["webhooks_options"]
        self.opts = Options(float(o["retry_initial_s"]), float(o["retry_max_s"]),
                            float(o["timeout_s"]), float(o["lease_s"]))
        self.workers: dict[str, Worker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._unsubscribe: Any = None

    async def start(self) -> None:
        """Start a worker per webhook (after the runtime has started)."""
        if not self.hooks:
            return
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=4))
        for hook in self.hooks.values():
            w = Worker(hook, self.runtime, self.rendering, self.clock, self.opts,
                       self._session)
            self.workers[hook.id] = w
            self._tasks.append(asyncio.create_task(w.run(), name=f"webhook-{hook.id}"))
            if w.shared:
                self._tasks.append(asyncio.create_task(w.keep_lease(),
                                                       name=f"webhook-lease-{hook.id}"))
        self._unsubscribe = self.runtime.subscribe(self._changed)

    def _changed(self, records: list[Record]) -> None:
        for w in self.workers.values():
            w.wake.set()

    async def stop(self) -> None:
        """Stop the workers, save what they delivered, give the leases up (before the
        runtime closes the store)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        for w in self.workers.values():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    if w.may_send():
                        await w.save_cursor()
                    if w.shared:
                        await self.runtime.store.drop_lease(  # type: ignore[attr-defined]
                            key_of(w.hook.id))
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- what the admin endpoints ask (server/webhooks_api.py) -----------------------------
    async def progress(self, hook_id: str) -> Progress:
        """The webhook's durable state (as a worker would start it when there is none)."""
        return self._parse(await self.runtime.store.get_value(key_of(hook_id)))

    def _parse(self, raw: bytes | None) -> Progress:
        if raw is not None:
            with contextlib.suppress(ValueError, TypeError):
                return Progress.load(raw)
        return Progress(cursor=self.runtime.view.last_seq)

    async def redeliver(self, hook_id: str, from_seq: int) -> Progress:
        """Send again every covered message from ``from_seq`` on: the cursor moves back to
        ``from_seq - 1`` (never forward: nothing pending is skipped)."""
        store, key = self.runtime.store, key_of(hook_id)
        while True:
            raw = await store.get_value(key)
            p = self._parse(raw)
            new = Progress(min(p.cursor, from_seq - 1), p.epoch + 1, p.delivered_seq)
            if await store.set_value(key, new.dump(), expect=raw):
                break
        w = self.workers.get(hook_id)
        if w is not None:
            w.kick.set()
            w.wake.set()
        return new

    async def pending(self, hook: Webhook, p: Progress, limit: int,
                      scan_max: int = 20_000) -> tuple[list[dict[str, Any]], bool]:
        """The first ``limit`` messages not yet delivered (after the cursor, covered, in the
        committed view), and whether there are more (or the scan stopped at ``scan_max``)."""
        out: list[dict[str, Any]] = []
        store, upto = self.runtime.store, self.runtime.view.last_seq
        after, scanned = p.cursor, 0
        now = self.clock.now()
        while after < upto:
            if scanned >= scan_max:
                return out, True
            batch = await store.read(after_seq=after, limit=min(500, upto - after))
            if not batch:
                break
            for rec in batch:
                if rec.seq > upto:
                    return out, False
                scanned += 1
                if not hook.covers(rec):
                    continue
                if len(out) >= limit:
                    return out, True
                out.append(self._pending_item(hook, rec, p, now))
            after = batch[-1].seq
        return out, False

    def _pending_item(self, hook: Webhook, rec: Record, p: Progress,
                      now: float) -> dict[str, Any]:
        mine = p.seq == rec.seq
        iso = self.rendering.iso
        return {"seq": rec.seq, "delivery": delivery_id(hook.id, rec.hash),
                "type": MESSAGE_TYPES.get(rec.action, "event.updated"), "action": rec.action,
                "event": rec.event_id, "at": iso(rec.received_at),
                "age_s": round(max(0.0, now - rec.received_at), 3),
                "attempts": p.attempts if mine else 0,
                "last_error": p.last_error if mine else None,
                "last_attempt_at": iso(p.last_attempt_at) if mine else None,
                "next_attempt_at": iso(p.next_attempt_at) if mine else None}


class WebhookCollector(Collector):
    """``/metrics``: deliveries, retries and the oldest pending message's age, per webhook
    (this instance's; on Redis only the lease holder delivers: sum the counters over the
    instances, take the max of the age)."""

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks

    def collect(self) -> Iterator[Any]:
        workers: Iterable[Worker] = list(self.webhooks.workers.values())
        d = CounterMetricFamily("dispatch_webhook_deliveries",
                                "Webhook messages answered 2xx", labels=["webhook"])
        r = CounterMetricFamily("dispatch_webhook_retries",
                                "Webhook attempts that failed and will be retried",
                                labels=["webhook"])
        s = CounterMetricFamily("dispatch_webhook_skipped",
                                "Records that could not be rendered (not sent)",
                                labels=["webhook"])
        age = GaugeMetricFamily("dispatch_webhook_oldest_pending_age_seconds",
                                "Age of the oldest message not yet delivered (0: none)",
                                labels=["webhook"])
        lease = GaugeMetricFamily("dispatch_webhook_delivering",
                                  "1 when this instance delivers the webhook (its lease)",
                                  labels=["webhook"])
        for w in workers:
            d.add_metric([w.hook.id], w.delivered)
            r.add_metric([w.hook.id], w.retries)
            s.add_metric([w.hook.id], w.skipped)
            age.add_metric([w.hook.id], w.oldest_pending_age_s())
            lease.add_metric([w.hook.id], 1.0 if w.may_send() else 0.0)
        yield from (d, r, s, age, lease)
