"""The shared journal: Redis, for several server instances behind one load balancer.

How it works: the journal is a Stream (``{tag}:journal``) with one entry per record, id
``<seq>-0``, holding the record's canonical JSON and its SHA-256. ``{tag}:head`` holds the
last seq and hash. ``append`` puts the records on a queue (synchronously, so callers' order
is kept) and awaits a future; one flusher task takes everything queued, chains the hashes
client-side from the head it believes in, and sends it all in **one** Lua script call that
checks the head seq *and* hash are still what it expected before writing the entries, the
deadline index and the new head (compare-and-set on the global seq). If another instance
appended first the script writes nothing and answers the real head: ``ConflictError``.
Two instances acting on the same event at once therefore cannot both win.

The same script keeps ``{tag}:deadlines`` (a sorted set ``<event>:<stage>:<kind>`` scored
by due time) equal to the pending timers of the journal's latest state of each event, so the
sorted set can never disagree with the journal. Which timers are pending is the engine's
effect (``Outcome.deadlines``, handed to ``append``); the script only replaces each touched
event's members with the ones it is given, and knows no stage names. ``claim`` hands out
due members atomically with a lease (re-scored to ``now + lease_s``): an instance that dies
after claiming loses them to another instance when the lease runs out (arq's pattern).

Strict mode (``set_failure_hook``): when a runtime drives the store, a failed or refused
flush also fails everything queued behind it (those records were made on top of the refused
ones) and calls the hook synchronously, before any other task runs, so the runtime can roll
its engine back at once. Durability is Redis's: see docs/redis.md (AOF ``everysec`` vs
``always``).

Sentinel (``redis+sentinel://host:port[,host:port…]/master/db``): every connection asks the
sentinels for the current master, so after a failover new connections go to the new master
by themselves. Each append script is followed, on the same connection, by ``WAIT 1 <ms>``:
the records are answered only once a replica has them, so a failover (which promotes a
replica) cannot lose an answered write. A WAIT that times out fails the append like an
unreachable Redis (503; the records may still be in the journal: an ambiguous outcome the
client resolves by retrying with its idempotency key).

``append`` never waits longer than ``append_timeout_s`` (``StoreTimeoutError``), and
``health()`` answers within about a second whether Redis takes a write now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dispatch.core.deadlines import KINDS, Deadline
from dispatch.core.engine import live_deadlines
from dispatch.core.errors import ConflictError, StoreTimeoutError
from dispatch.core.event import Event
from dispatch.core.lifecycle import STAGES
from dispatch.core.records import GENESIS, Encoded, Record, chain_pre_encoded, encode_all
from dispatch.store.base import check_batch
from dispatch.store.redis_keys import DEFAULT_TAG, SENTINEL_SCHEME, Keys

log = logging.getLogger("dispatch.store.redis")

# every member suffix an event can have in the deadline set (``<stage>:<kind>``)
MEMBER_SUFFIXES = tuple(f"{s}:{k}" for s in STAGES for k in KINDS)

# KEYS: head, journal, deadlines. ARGV: expected seq, expected hash, n, n x (seq, hash, data),
# s, s x member suffix (all an event can have), m, m x (event id, k, k x (member suffix,
# score)). Returns {1|0, head seq, head hash}.
APPEND_LUA = """
local h = redis.call('HMGET', KEYS[1], 'seq', 'hash')
local seq = tonumber(h[1] or '0')
local hash = h[2] or ''
if seq ~= tonumber(ARGV[1]) or hash ~= ARGV[2] then
  return {0, seq, hash}
end
local n = tonumber(ARGV[3])
local i = 4
for j = 1, n do
  redis.call('XADD', KEYS[2], ARGV[i] .. '-0', 'h', ARGV[i + 1], 'd', ARGV[i + 2])
  seq = tonumber(ARGV[i]); hash = ARGV[i + 1]
  i = i + 3
end
local ns = tonumber(ARGV[i]); i = i + 1
local suffixes = {}
for j = 1, ns do suffixes[j] = ARGV[i]; i = i + 1 end
local m = tonumber(ARGV[i]); i = i + 1
for j = 1, m do
  local eid = ARGV[i]; local k = tonumber(ARGV[i + 1]); i = i + 2
  local gone = {}
  for q = 1, ns do gone[q] = eid .. ':' .. suffixes[q] end
  redis.call('ZREM', KEYS[3], unpack(gone))
  for q = 1, k do
    redis.call('ZADD', KEYS[3], ARGV[i + 1], eid .. ':' .. ARGV[i]); i = i + 2
  end
end
redis.call('HSET', KEYS[1], 'seq', seq, 'hash', hash)
return {1, seq, hash}
"""

# KEYS: deadlines. ARGV: now, lease until, limit. The due members, re-scored to the lease.
CLAIM_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], m) end
return due
"""

# KEYS: deadlines. ARGV: score, members…: drop members still holding our lease score.
RELEASE_LUA = """
local n = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i]); n = n + 1
  end
end
return n
"""

# KEYS: snapshot. ARGV: seq, blob. Several instances save on stop: keep the newest.
SNAPSHOT_LUA = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
if tonumber(ARGV[1]) >= cur then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'blob', ARGV[2])
  return 1
end
return 0
"""

# KEYS: values. ARGV: key, expect given (1|0), expect, value. Compare-and-set; 1 when written.
SET_VALUE_LUA = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
"""

# KEYS: lease. ARGV: owner, ttl ms. Take it (SET NX PX) or renew it if it is ours.
HOLD_LEASE_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease. ARGV: owner. Delete it only if it is ours.
DROP_LEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

FailureHook = Callable[[int, BaseException], None]

HEALTH_TIMEOUT_S = 1.0  # health() answers within this (interfaces §3)
_OURS = ("tag", "lease_s", "batch_max", "open_wait_s", "append_timeout_s", "wait_replicas",
         "wait_timeout_ms", "sentinel_password")
_REDIS_ERRORS = (aioredis.RedisError, OSError)


class ReplicaWaitError(aioredis.ConnectionError):
    """``WAIT`` saw fewer replicas than asked: the write is not safe from a failover yet."""


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL: where the sentinels are and which master to ask for."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> tuple[SentinelTarget, dict[str, str]]:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db][?opts]``.

    The sentinels' port defaults to 26379, the db to 0; user and password are the master's.
    Returns the target and the query options (ours, for ``RedisStore``). Raises ValueError.
    """
    if not url.startswith(SENTINEL_SCHEME):
        raise ValueError(f"not a {SENTINEL_SCHEME} URL: {url!r}")
    parts = urlsplit(url)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_s = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_s = item.partition(":")
        if not host:
            raise ValueError(f"{url!r}: a sentinel address is empty")
        try:
            port = int(port_s) if port_s else 26379
        except ValueError:
            raise ValueError(f"{url!r}: bad sentinel port {port_s!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"{url!r}: bad sentinel port {port}")
        hosts.append((host, port))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"{url!r}: the path must be /MASTER_NAME or /MASTER_NAME/DB")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"{url!r}: the db must be a number, got {path[1]!r}") from None
    opts: dict[str, str] = {}
    for k, v in parse_qsl(parts.query):
        if k not in _OURS:
            raise ValueError(f"{url!r}: unknown option {k!r} (known: {', '.join(_OURS)})")
        opts[k] = v
    return SentinelTarget(tuple(hosts), path[0], db, username, password), opts


DeadlineEffects = Mapping[str, Sequence[Deadline]]


@dataclass
class _Item:
    records: list[Record]
    fut: asyncio.Future[Any]
    encoded: list[Encoded]
    deadlines: DeadlineEffects | None = None
    out: list[Record] = field(default_factory=list)


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The redis-py URL and our own options (``tag``, ``lease_s``) from its query string."""
    parts = urlsplit(url)
    ours, theirs = {}, []
    for k, v in parse_qsl(parts.query):
        if k in _OURS:
            ours[k] = v
        else:
            theirs.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


class RedisStore:
    """The journal in Redis, shared by every instance that opens the same URL and tag."""

    shared = True  # several instances write to it: the runtime follows and claims

    def __init__(self, url: str, tag: str | None = None, lease_s: float | None = None,
                 batch_max: int | None = None, socket_timeout: float = 3.0,
                 connect_timeout: float = 1.0, open_wait_s: float | None = None,
                 append_timeout_s: float | None = None, wait_replicas: int | None = None,
                 wait_timeout_ms: int | None = None) -> None:
        self.sentinel: SentinelTarget | None = None
        if url.startswith(SENTINEL_SCHEME):
            self.sentinel, opts = parse_sentinel_url(url)
            self.url = url.split("?", 1)[0]
        else:
            self.url, opts = split_url(url)
        self.keys = Keys(tag or opts.get("tag") or DEFAULT_TAG)
        self.lease_s = float(lease_s if lease_s is not None else opts.get("lease_s", 5.0))
        self.batch_max = int(batch_max if batch_max is not None else opts.get("batch_max", 512))
        self.socket_timeout = socket_timeout
        self.open_wait_s = float(open_wait_s if open_wait_s is not None
                                 else opts.get("open_wait_s", 30.0))
        self.append_timeout_s = float(append_timeout_s if append_timeout_s is not None
                                      else opts.get("append_timeout_s", 10.0))
        # WAIT for this many replicas after each append: 1 by default behind Sentinel
        default_wait = 1 if self.sentinel is not None else 0
        self.wait_replicas = int(wait_replicas if wait_replicas is not None
                                 else opts.get("wait_replicas", default_wait))
        self.wait_timeout_ms = int(wait_timeout_ms if wait_timeout_ms is not None
                                   else opts.get("wait_timeout_ms", 1000))
        self._sentinel_password = opts.get("sentinel_password")
        self.connect_timeout = connect_timeout
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.r: aioredis.Redis | None = None
        self._probe_r: aioredis.Redis | None = None
        self._mgr: Any = None  # redis.asyncio.sentinel.Sentinel, behind Sentinel
        self._queue: deque[_Item] = deque()
        self._inflight: list[_Item] = []  # the batch being flushed
        self._kick = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._head: tuple[int, str] | None = None  # what we believe; None: ask Redis
        self._hook: FailureHook | None = None
        self._health_task: asyncio.Task[str | None] | None = None
        self.commits = 0  # script calls that wrote (for benchmarks and metrics)
        self.conflicts = 0

    def set_failure_hook(self, hook: FailureHook | None) -> None:
        """Strict mode: on a refused or failed flush fail everything queued and call
        ``hook(first refused seq, error)`` synchronously."""
        self._hook = hook

    def _client(self, socket_timeout: float | None, **kw: Any) -> aioredis.Redis:
        """A client of the master (plain URL, or the master the sentinels name now)."""
        common: dict[str, Any] = dict(
            decode_responses=False, socket_timeout=socket_timeout,
            socket_connect_timeout=self.connect_timeout, retry=Retry(NoBackoff(), 0), **kw)
        if self.sentinel is None:
            return aioredis.Redis.from_url(self.url, **common)
        t = self.sentinel
        if self._mgr is None:
            from redis.asyncio.sentinel import Sentinel

            to = min(self.connect_timeout, 0.5)  # a dead sentinel costs at most this
            self._mgr = Sentinel(list(t.sentinels), sentinel_kwargs=dict(
                socket_timeout=to, socket_connect_timeout=to, retry=Retry(NoBackoff(), 0),
                password=self._sentinel_password))
        return self._mgr.master_for(t.master, redis_class=aioredis.Redis, db=t.db,
                                    username=t.username, password=t.password, **common)

    async def open(self) -> None:
        """Connect, load the scripts, start the flusher."""
        self.r = self._client(self.socket_timeout, health_check_interval=0)
        self._probe_r = self._client(socket_timeout=HEALTH_TIMEOUT_S)
        self._append = self.r.register_script(APPEND_LUA)
        self._claim = self.r.register_script(CLAIM_LUA)
        self._release = self.r.register_script(RELEASE_LUA)
        self._snapshot = self.r.register_script(SNAPSHOT_LUA)
        self._set_value = self.r.register_script(SET_VALUE_LUA)
        self._hold_lease = self.r.register_script(HOLD_LEASE_LUA)
        self._drop_lease = self.r.register_script(DROP_LEASE_LUA)
        await self._wait_for_redis()
        self._head = await self._read_head()
        self._flusher = asyncio.create_task(self._run(), name="redis-flusher")

    async def _wait_for_redis(self) -> None:
        """Start-up before Redis is up (or while it restarts): wait, saying so, then fail."""
        assert self.r is not None
        end = asyncio.get_running_loop().time() + self.open_wait_s
        while True:
            try:
                await self.r.ping()
                return
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                if asyncio.get_running_loop().time() > end:
                    raise ConnectionError(
                        f"Redis at {self.url} is unreachable ({exc}); start it or fix the "
                        "store URL") from exc
                log.warning("waiting for Redis at %s: %s", self.url, exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        """Send everything queued, stop the flusher, disconnect."""
        if self._flusher is not None:
            self._closing = True
            self._kick.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drained(), timeout=5)
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
            self._flusher = None
        for c in (self.r, self._probe_r, self._mgr):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.aclose()
        self.r = self._probe_r = self._mgr = None

    async def _drained(self) -> None:
        while self._queue or self._busy:
            await asyncio.sleep(0.005)

    _busy = False
    _closing = False

    async def _read_head(self) -> tuple[int, str]:
        assert self.r is not None, "the store is not open"
        seq, h = await self.r.hmget(self.keys.head, "seq", "hash")
        return (int(seq) if seq else 0, h.decode() if h else GENESIS)

    # -- the protocol ------------------------------------------------------------------------
    async def append(self, records: list[Record],
                     deadlines: DeadlineEffects | None = None) -> list[Record]:
        """Durable (as Redis is) when it returns; ``ConflictError`` if the journal moved on.

        ``deadlines``: the engine's effect on the deadline book (``Outcome.deadlines``: each
        touched event's live deadlines after the change), written to the sorted set in the
        same script. Without it (a tool appending records) they are taken from each event's
        last ``after`` by the engine's own ``live_deadlines``.
        """
        if not records:
            return []
        if self._flusher is None:
            raise RuntimeError("the store is not open")
        # encoded here, so a record that cannot be encoded fails its own caller only
        encoded = encode_all(records)
        fut = asyncio.get_running_loop().create_future()
        item = _Item(list(records), fut, encoded, deadlines)
        self._queue.append(item)
        self._kick.set()
        try:
            got = await asyncio.wait_for(asyncio.shield(fut), self.append_timeout_s)
            return got  # type: ignore[no-any-return]
        except TimeoutError:
            if fut.done():  # settled at the deadline
                return fut.result()  # type: ignore[no-any-return]
        # Not answered in time: give up on it (and, strict, on everything built on it, with
        # the hook). If the script still lands, the runtime's catch-up finds the records.
        exc = StoreTimeoutError(
            f"Redis did not take the records within {self.append_timeout_s:g} s")
        with contextlib.suppress(ValueError):
            self._queue.remove(item)
        self._head = None
        strict = self._hook is not None
        self._fail([it for it in self._inflight if it is not item] + [item] if strict else [item],
                   exc)
        if fut.done() and not fut.cancelled():
            fut.exception()  # raised below instead: not "never retrieved"
        raise exc

    async def health(self) -> str | None:
        """None when Redis takes a write now, else why not; answers within about a second.

        A real write (``SET {tag}:alive``, plus ``WAIT`` behind Sentinel) on a connection of
        its own with a 1 s timeout: PING would say yes to a replica, a full disk (MISCONF) or
        a master without its replica. Concurrent callers share one probe.
        """
        if self._probe_r is None:
            return "redis store is not open"
        task = self._health_task
        if task is None or task.done():
            task = self._health_task = asyncio.ensure_future(self._probe())
        try:
            return await asyncio.wait_for(asyncio.shield(task), HEALTH_TIMEOUT_S + 0.2)
        except TimeoutError:
            return f"redis unreachable: no answer within {HEALTH_TIMEOUT_S:g} s"

    async def _probe(self) -> str | None:
        assert self._probe_r is not None
        wait_ms = min(self.wait_timeout_ms, int(HEALTH_TIMEOUT_S * 500))
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                return await self._write_probe(self._probe_r, wait_ms)
        except TimeoutError:
            return f"redis unreachable: no answer within {HEALTH_TIMEOUT_S:g} s"
        except aioredis.ResponseError as exc:
            return f"redis refuses writes: {exc}"
        except _REDIS_ERRORS as exc:
            return f"redis unreachable: {exc or type(exc).__name__}"

    async def _write_probe(self, r: aioredis.Redis, wait_ms: int) -> str | None:
        """One small write (and WAIT, behind Sentinel) on one connection; a reason or None."""
        async with r.pipeline(transaction=False) as p:
            p.set(self.keys.alive, self.instance, px=60_000)
            if self.wait_replicas > 0:
                p.execute_command("WAIT", self.wait_replicas, wait_ms)
            got = await p.execute()
        if self.wait_replicas > 0 and int(got[1]) < self.wait_replicas:
            return (f"redis: {got[1]} of {self.wait_replicas} replicas acknowledged a write "
                    f"within {wait_ms} ms (a failover could lose it)")
        return None

    async def read(self, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        assert self.r is not None, "the store is not open"
        if limit is not None and limit <= 0:
            return []
        rows = await self.r.xrange(self.keys.journal, min=f"{after_seq + 1}-0", max="+",
                                   count=limit)
        return [_record(f) for _, f in rows]

    async def last_seq(self) -> int:
        return (await self._read_head())[0]

    async def save_snapshot(self, seq: int, blob: bytes) -> None:
        """Keep the snapshot unless a newer one (higher seq) is already there."""
        assert self.r is not None, "the store is not open"
        await self._snapshot(keys=[self.keys.snapshot], args=[seq, bytes(blob)])

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        assert self.r is not None, "the store is not open"
        seq, blob = await self.r.hmget(self.keys.snapshot, "seq", "blob")
        return (int(seq), bytes(blob)) if seq is not None and blob is not None else None

    async def get_value(self, key: str) -> bytes | None:
        assert self.r is not None, "the store is not open"
        got = await self.r.hget(self.keys.values, key)
        return None if got is None else bytes(got)

    async def set_value(self, key: str, value: bytes, expect: bytes | None) -> bool:
        """Compare-and-set in one script (a hash field of ``{tag}:values``)."""
        assert self.r is not None, "the store is not open"
        args = [key, "0" if expect is None else "1", b"" if expect is None else expect, value]
        return bool(await self._set_value(keys=[self.keys.values], args=args))

    # -- for several instances ---------------------------------------------------------------
    async def hold_lease(self, name: str, ttl_s: float) -> bool:
        """Take the lease ``name`` (``SET NX PX``) or renew it if this instance holds it."""
        assert self.r is not None, "the store is not open"
        ms = max(1, int(ttl_s * 1000))
        return bool(await self._hold_lease(keys=[self.keys.lease(name)],
                                           args=[self.instance, ms]))

    async def drop_lease(self, name: str) -> bool:
        """Give the lease ``name`` up if this instance holds it."""
        assert self.r is not None, "the store is not open"
        return bool(await self._drop_lease(keys=[self.keys.lease(name)], args=[self.instance]))

    async def wait_records(self, after_seq: int, timeout_s: float = 1.0,
                           conn: aioredis.Redis | None = None) -> list[Record]:
        """Block (XREAD) until records after ``after_seq`` exist, at most ``timeout_s``."""
        r = conn or self.r
        assert r is not None, "the store is not open"
        got = await r.xread({self.keys.journal: f"{after_seq}-0"}, count=5000,
                            block=max(1, int(timeout_s * 1000)))
        if not got:
            return []
        return [_record(f) for _, f in got[0][1]]

    def follower_connection(self, timeout_s: float | None = 10.0) -> aioredis.Redis:
        """A connection of its own for blocking reads and pub/sub (its own socket timeout)."""
        return self._client(socket_timeout=timeout_s)

    async def claim(self, now: float, limit: int = 1000) -> tuple[list[str], float]:
        """Atomically take the deadline members due by ``now``, leased until now+lease_s.

        Returns the members (``<event>:<stage>:<kind>``) and the lease score.
        """
        until = now + self.lease_s
        got = await self._claim(keys=[self.keys.deadlines], args=[repr(now), repr(until), limit])
        return [m.decode() for m in got], until

    async def release(self, members: list[str], score: float) -> int:
        """Drop claimed members that still hold our lease (they had nothing left to fire)."""
        if not members:
            return 0
        return int(await self._release(keys=[self.keys.deadlines],
                                       args=[repr(score), *members]))

    async def next_deadline(self) -> float | None:
        """The lowest score in the deadline set (a due time or a lease expiry)."""
        assert self.r is not None
        got = await self.r.zrange(self.keys.deadlines, 0, 0, withscores=True)
        return float(got[0][1]) if got else None

    # -- unit positions, shared between instances -------------------------------------------
    async def put_position(self, unit: str, lon: float, lat: float, data: bytes) -> None:
        """Keep ``data`` as the unit's last position and tell every instance (``positions``)."""
        r = self.r
        if r is None:
            return
        async with r.pipeline(transaction=False) as p:
            p.hset(self.keys.positions, unit, data)
            p.geoadd(self.keys.positions_geo, (lon, lat, unit))
            p.publish(self.keys.positions_channel, data)
            await p.execute()

    async def load_positions(self) -> list[bytes]:
        """Every unit's last shared position (``put_position``'s data)."""
        assert self.r is not None, "the store is not open"
        return list((await self.r.hgetall(self.keys.positions)).values())

    async def positions(self) -> AsyncIterator[bytes]:
        """Positions as ``put_position`` publishes them, on a connection of their own, until
        the connection fails (the caller subscribes again)."""
        conn = self.follower_connection(None)
        pubsub = conn.pubsub()
        try:
            await pubsub.subscribe(self.keys.positions_channel)
            async for msg in pubsub.listen():
                if msg.get("type") == "message":
                    yield msg["data"]
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await conn.aclose()

    # -- the flusher -------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._kick.clear()
                await self._kick.wait()
                continue
            batch, n = [], 0
            while self._queue and n < self.batch_max:
                item = self._queue.popleft()
                batch.append(item)
                n += len(item.records)
            self._busy = True
            self._inflight = batch
            try:
                await self._flush(batch)
            except asyncio.CancelledError:
                self._fail(batch, ConflictError("the store was closed"), hook=False)
                raise
            except Exception as exc:  # never let the flusher die
                log.exception("redis flush failed")
                self._fail(batch, exc)
            finally:
                self._busy = False
                self._inflight = []

    async def _flush(self, batch: list[_Item]) -> None:
        if self._head is None:
            try:
                self._head = await self._read_head()
            except Exception as exc:
                self._fail(batch, exc)
                return
        exp_seq, exp_hash = self._head
        last_seq, last_hash = exp_seq, exp_hash
        sent: list[_Item] = []
        args: list[Any] = []
        events: dict[str, Sequence[Deadline]] = {}
        for i, item in enumerate(batch):
            try:
                check_batch(item.records, last_seq)
            except ConflictError as exc:
                self.conflicts += 1
                self._head = None  # another instance may have moved it: ask next time
                if self._hook is not None:  # strict: everything after was built on it
                    self._fail(sent + batch[i:], exc)
                    return
                item.fut.done() or item.fut.set_exception(exc)
                continue
            sealed = chain_pre_encoded(item.encoded, last_hash)
            item.out = [r for r, _ in sealed]
            for r, data in sealed:
                args += [r.seq, r.hash, data]
            events.update(_effects(item))
            last_seq, last_hash = item.out[-1].seq, item.out[-1].hash
            sent.append(item)
        if not sent:
            return
        nrec = len(args) // 3
        tail: list[Any] = [len(MEMBER_SUFFIXES), *MEMBER_SUFFIXES, len(events)]
        for eid, live in events.items():
            tail += [eid, len(live)]
            for d in live:
                tail += [f"{d.stage}:{d.kind}", repr(float(d.due))]
        try:
            ok, seq, h = await self._call_append(
                [self.keys.head, self.keys.journal, self.keys.deadlines],
                [exp_seq, exp_hash, nrec, *args, *tail])
            seq, h = int(seq), (h.decode() if isinstance(h, bytes) else str(h))
            if not ok and (seq, h) == (last_seq, last_hash):
                # our own write whose answer was lost and retried: it is in (behind
                # Sentinel: once a replica has it too; in-order replication, so a later
                # write acknowledged by WAIT covers it)
                if self.wait_replicas > 0 and self.r is not None:
                    reason = await self._write_probe(self.r, self.wait_timeout_ms)
                    if reason is not None:
                        raise ReplicaWaitError(reason)
                ok = 1
        except Exception as exc:
            self._head = None  # unknown: the script may have run; ask next time
            self._fail(sent, exc)
            return
        self._head = (seq, h)
        if not ok:
            self.conflicts += 1
            self._fail(sent, ConflictError(
                f"append expected head {exp_seq}, the journal is at {seq}: another instance "
                "appended first"))
            return
        self.commits += 1
        for item in sent:
            item.fut.done() or item.fut.set_result(item.out)

    async def _call_append(self, keys: list[str], args: list[Any]) -> list[Any]:
        """The append script; behind Sentinel followed by WAIT on the same connection."""
        if self.wait_replicas <= 0:
            return await self._append(keys=keys, args=args)  # type: ignore[no-any-return]
        assert self.r is not None
        async with self.r.pipeline(transaction=False) as p:
            p.eval(APPEND_LUA, len(keys), *keys, *args)
            p.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            res, acked = await p.execute()
        if res[0] and int(acked) < self.wait_replicas:
            raise ReplicaWaitError(
                f"{acked} of {self.wait_replicas} replicas acknowledged the append within "
                f"{self.wait_timeout_ms} ms; not answered (a failover could lose it)")
        return res  # type: ignore[no-any-return]

    def _fail(self, items: list[_Item], exc: BaseException, hook: bool = True) -> None:
        """Fail ``items`` (and, in strict mode, all queued) then tell the runtime."""
        if self._hook is not None:
            items = items + list(self._queue)
            self._queue.clear()
        # items already settled (given up by a timed-out append) are not rolled back twice
        items = [it for it in items if not it.fut.done()]
        first = min((it.records[0].seq for it in items if it.records), default=None)
        for item in items:
            item.fut.set_exception(exc)
        if hook and self._hook is not None and first is not None:
            self._hook(first, exc)


def _effects(item: _Item) -> dict[str, Sequence[Deadline]]:
    """Each event of ``item``'s records → its live deadlines after them."""
    if item.deadlines is not None:
        return {r.event_id: item.deadlines.get(r.event_id, ()) for r in item.records}
    out: dict[str, Sequence[Deadline]] = {}
    for r in item.records:
        try:
            # a record's ``after`` holds every key live_deadlines reads (v1 and v2 alike)
            out[r.event_id] = live_deadlines(cast(Event, r.after))
        except (KeyError, TypeError, ValueError, AttributeError):
            out[r.event_id] = ()  # not an event the engine made (a store test's record)
    return out


def _record(fields: dict[bytes, bytes]) -> Record:
    d = orjson.loads(fields[b"d"])
    d["hash"] = fields[b"h"].decode()
    return Record.from_dict(d)
