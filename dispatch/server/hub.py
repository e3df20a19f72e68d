"""The WebSocket hub: scope-filtered fan-out that never blocks a publisher (contract §4).

How it works: each connected client has a queue bounded in bytes, drained by its own writer
task. A change (journal records, after they are durable) is turned into one message per
record, serialised once, and put on the queue of every client whose scope holds the event;
a record that cannot be rendered is logged once and skipped, the others are delivered.
Clients are indexed by their audience (``scope.audience``: all, a region, a unit) and a
record reaches the audiences ``scope.record_audiences`` names, so a publish looks at the
clients that can see the event, not at all of them, and agrees with the scope rules. What a
client has not read yet (its queue, its own replies included, plus the socket's write
buffer) counts against its bound:
past it a pending position update is dropped first; if that is not enough the client is
closed (1008 "slow consumer") and resyncs with ``?since=``.

A client is registered (indexed, counted) only once its snapshot or replay is out and it
has caught up from the journal with everything published meanwhile; until then it is only
``connecting`` (reachable by shutdown and revocation, never by a publish). Messages carry
``seq``, the journal position of their record; a client that connects with ``since`` first
gets the journal after that seq (in its scope) and then the live messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

import orjson
from aiohttp import WSMsgType, web

from dispatch.core.records import Record, state_of
from dispatch.server import scope
from dispatch.server.scope import Areas, Audience, Principal

log = logging.getLogger("dispatch.hub")

MESSAGE_TYPES = {
    "created": "event.created",
    "warned": "timer.warning",
    "breached": "timer.breached",
    "escalated": "event.escalated",
}

CLOSE_GOING_AWAY = 1001
CLOSE_SLOW = 1008  # policy violation: a slow consumer, or a client flooding past its limit
CLOSE_REVOKED = 4401  # contract §6: the token was removed or revoked
DIRECT_WRITE_LIMIT = 64 * 1024
CLOSE_GRACE_S = 5.0  # a client being closed that still does not read is then cut off
QUEUE_BYTES_PER_SLOT = 2048  # ws.queue_size (a count, kept for old configs) → a byte bound
BAD_RECORDS_REMEMBERED = 10_000
# The newest published records, with their message once encoded: a socket catching up (its
# snapshot went out while changes were published, or it reconnects with ?since=) reads them
# here instead of the journal, and every one of them shares one rendering per record.
RECENT_MAX = 4096


def queue_bytes(ws_config: Any) -> int:
    """A client's bound in bytes: ``ws.queue_bytes`` when set, else ``queue_size * 2048``."""
    explicit = ws_config.get("queue_bytes") if hasattr(ws_config, "get") else None
    if explicit:
        return int(explicit)
    return int(ws_config["queue_size"]) * QUEUE_BYTES_PER_SLOT


class EventRendering(Protocol):
    """What the hub needs to render a message (``state.Rendering``)."""

    def event(self, ev: Mapping[str, Any]) -> dict[str, Any]: ...

    def iso(self, t: float | None) -> str | None: ...

    def now_iso(self) -> str: ...


def message_for(rendering: EventRendering, rec: Record) -> dict[str, Any]:
    """The change message a record becomes (contract §4): the event as it was at that
    change. The WebSocket pushes and replays it; the webhooks POST the same JSON (§8).

    The state is ``records.state_of(rec)``: known for the records the engine makes or folds
    and for v1 records; one read back from the store gets it from ``CommittedView.recall``
    first, else ``ValueError`` (``Hub.encode_record`` logs and skips it).
    """
    msg: dict[str, Any] = {
        "type": MESSAGE_TYPES.get(rec.action, "event.updated"),
        "seq": rec.seq,
        "at": rendering.iso(rec.received_at),
        "server_time": rendering.now_iso(),
        "action": rec.action,
        "event": rendering.event(state_of(rec)),
    }
    extra = rec.extra or {}
    for key in ("stage", "from", "to", "recovered", "notify_tiers", "department"):
        if key in extra:
            msg[key] = extra[key]
    return msg


@dataclass(eq=False)
class Client:
    """One WebSocket connection, its scope and its outgoing queue, bounded in bytes."""

    ws: web.WebSocketResponse
    principal: Principal
    max_bytes: int
    narrow: str | None = None
    after_seq: int = 0
    queue: deque[tuple[int, bytes, bool]] = field(default_factory=deque)
    queued_bytes: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    dropped_positions: int = 0
    batch_positions: bool = False
    pending_units: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsubscribe: Callable[[], None] | None = None
    transport: asyncio.Transport | None = None
    direct: bool = False  # set once registered: the snapshot / catch-up is out
    strikes: float = 0.0  # rate-limited messages, leaking at the token's rate (ws.py)
    strikes_at: float = 0.0

    def pending_bytes(self) -> int:
        """What the client has not read yet: its queue plus the socket's write buffer."""
        t = self.transport
        buffered = t.get_write_buffer_size() if t is not None and not t.is_closing() else 0
        return self.queued_bytes + buffered

    def offer(self, seq: int, data: bytes, is_position: bool = False,
              frame: bytes | None = None) -> bool:
        """Send or queue one message; False when the client is too slow and must go.

        When nothing is queued and the socket's buffer is nearly empty, the frame (built
        once per message for every recipient) goes straight to the transport: no task
        switch per recipient. Otherwise it waits in the queue for the writer task, as long
        as the client's unread bytes stay within ``max_bytes``.
        """
        if self.closed:
            return True
        t = self.transport
        if (self.direct and not self.queue and t is not None and not t.is_closing()
                and t.get_write_buffer_size() < DIRECT_WRITE_LIMIT):
            if not seq or seq > self.after_seq:
                t.write(frame if frame is not None else text_frame(data))
            return True
        size = len(data)
        if self.pending_bytes() + size > self.max_bytes:
            if is_position:
                self.dropped_positions += 1
                return True
            self._drop_positions(self.pending_bytes() + size - self.max_bytes)
            if self.pending_bytes() + size > self.max_bytes:
                return False
        self.queue.append((seq, data, is_position))
        self.queued_bytes += size
        self.ready.set()
        return True

    def _drop_positions(self, need: int) -> None:
        """Free at least ``need`` bytes by dropping queued position updates, oldest first."""
        kept: deque[tuple[int, bytes, bool]] = deque()
        for item in self.queue:
            if need > 0 and item[2]:
                need -= len(item[1])
                self.queued_bytes -= len(item[1])
                self.dropped_positions += 1
            else:
                kept.append(item)
        self.queue = kept

    def take(self) -> tuple[int, bytes, bool]:
        item = self.queue.popleft()
        self.queued_bytes -= len(item[1])
        return item

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0


class Hub:
    """Fan-out of journal records and unit positions to WebSocket clients."""

    def __init__(self, rendering: EventRendering, areas: Areas) -> None:
        self.rendering = rendering
        self.areas = areas
        self.by_audience: dict[Audience, set[Client]] = {}
        self.clients: set[Client] = set()
        self.connecting: set[Client] = set()  # accepted, snapshot not out yet: not counted
        self.disconnected_slow = 0
        self.disconnected_revoked = 0
        self.skipped_records = 0
        self._bad_seqs: set[int] = set()
        self._recent: deque[list[Any]] = deque(maxlen=RECENT_MAX)  # [seq, record, bytes|None]

    # -- registration ---------------------------------------------------------------------
    def add(self, client: Client) -> Callable[[], None]:
        """Index the client by its scope; returns the unsubscribe callable."""
        self.connecting.discard(client)
        self.clients.add(client)
        key = scope.audience(client.principal)
        if key is not None:
            self.by_audience.setdefault(key, set()).add(client)

        def remove() -> None:
            self.clients.discard(client)
            members = self.by_audience.get(key) if key is not None else None
            if members is not None:
                members.discard(client)
                if not members:
                    del self.by_audience[key]  # type: ignore[arg-type]
        client.unsubscribe = remove
        return remove

    def forget(self, client: Client) -> None:
        """The connection is over: unregister it, whatever stage it reached."""
        self.connecting.discard(client)
        if client.unsubscribe is not None:
            client.unsubscribe()
        client.closed = True
        client.clear()
        client.ready.set()

    # -- publishing -----------------------------------------------------------------------
    def message_for(self, rec: Record) -> dict[str, Any]:
        """The message a record becomes (``message_for`` with this hub's rendering)."""
        return message_for(self.rendering, rec)

    def encode_record(self, rec: Record) -> bytes | None:
        """The record's message, serialised; None (logged once per seq) when it cannot be."""
        try:
            return orjson.dumps(self.message_for(rec))
        except Exception:
            self.skipped_records += 1
            if rec.seq not in self._bad_seqs:
                if len(self._bad_seqs) >= BAD_RECORDS_REMEMBERED:
                    self._bad_seqs.clear()
                self._bad_seqs.add(rec.seq)
                log.exception("record seq %d (%s) could not be rendered; not sent",
                              rec.seq, rec.action)
            return None

    def recent(self, after: int, upto: int) -> list[tuple[Record, bytes | None]] | None:
        """The published records ``after < seq <= upto`` with their messages (encoded now
        when no socket needed them at publish time), or None when they are not all still
        held (then read the journal). A message is the one live sockets got for it."""
        held = self._recent
        if not held or upto <= after:
            return None if not held else []
        first = held[0][0]
        if after + 1 < first or held[-1][0] < upto:
            return None
        span = list(islice(held, after + 1 - first, upto + 1 - first))
        if len(span) != upto - after or span[0][0] != after + 1 or span[-1][0] != upto:
            return None  # not contiguous (never expected): the journal decides
        for entry in span:
            if entry[2] is None:
                entry[2] = self.encode_record(entry[1])
        return [(entry[1], entry[2]) for entry in span]

    def _members(self, audiences: set[Audience]) -> set[Client]:
        out: set[Client] = set()
        for key in audiences:
            members = self.by_audience.get(key)
            if members:
                out |= members
        return out

    def recipients(self, ev: Mapping[str, Any], before: Mapping[str, Any]) -> set[Client]:
        """The registered clients a record about ``ev`` reaches (``scope.record_visible``)."""
        return self._members(scope.record_audiences(ev, before))

    def publish(self, records: Iterable[Record]) -> None:
        """Deliver records (already durable) to every client in scope, in seq order.

        Each record on its own: one that cannot be rendered is logged and skipped, and
        the rest of the batch is still delivered.
        """
        for rec in records:
            entry: list[Any] = [rec.seq, rec, None]
            self._recent.append(entry)
            ev = rec.after
            targets = self.recipients(ev, rec.before or {})
            if not targets:
                continue
            data = entry[2] = self.encode_record(rec)
            if data is None:
                continue
            frame = text_frame(data)
            for c in targets:
                if c.narrow and not scope.event_in_region(ev, c.narrow):
                    continue
                if not c.offer(rec.seq, data, frame=frame):
                    self.drop_slow(c)

    def publish_unit(self, unit: dict[str, Any]) -> None:
        """A unit's new position to the clients whose scope holds its team.

        Clients that asked for batched positions (``/ws?positions=batch``, as the pages do)
        get the latest position of each unit once per flush as one ``units.updated`` frame;
        the others get one ``unit.updated`` message per report (contract §4).
        """
        targets = self._members(scope.unit_audiences(self.areas, unit["id"]))
        if not targets:
            return
        data: bytes | None = None
        frame = b""
        for c in targets:
            if not scope.unit_in_region(self.areas, unit["id"], c.narrow):
                continue
            if c.batch_positions:
                c.pending_units[unit["id"]] = unit
                continue
            if data is None:
                data = orjson.dumps({"type": "unit.updated", "at": unit.get("at"),
                                     "server_time": self.rendering.now_iso(),
                                     "unit": unit})
                frame = text_frame(data)
            c.offer(0, data, is_position=True, frame=frame)

    def flush_positions(self) -> int:
        """Send each batching client its pending positions as one frame; returns frames."""
        frames = 0
        now = self.rendering.now_iso()
        cache: dict[tuple[str, ...], bytes] = {}
        for c in self.clients:
            if not c.pending_units or c.closed:
                continue
            key = tuple(sorted(c.pending_units))
            data = cache.get(key)
            if data is None:
                data = cache[key] = orjson.dumps({"type": "units.updated", "at": now,
                                                  "server_time": now,
                                                  "units": list(c.pending_units.values())})
            c.pending_units = {}
            c.offer(0, data, is_position=True)
            frames += 1
        return frames

    async def run_position_flush(self, every_s: float) -> None:
        """The one task that flushes batched positions, every ``every_s`` seconds."""
        while True:
            await asyncio.sleep(every_s)
            try:
                self.flush_positions()
            except Exception:
                log.exception("position flush failed")

    async def run_revocation(self, active: Callable[[str], bool], every_s: float = 1.0) -> None:
        """Close every socket whose token is no longer active (4401), every ``every_s`` s.

        ``active(digest)`` is the token book's answer (cheap: it re-reads the token file
        only when that changed); contract §6 wants a removed or revoked token's sockets
        closed within 5 s.
        """
        while True:
            await asyncio.sleep(every_s)
            try:
                self.revoke_inactive(active)
            except Exception:
                log.exception("token revocation sweep failed")

    def revoke_inactive(self, active: Callable[[str], bool]) -> int:
        """One sweep of ``run_revocation``; returns how many sockets it closed."""
        verdicts: dict[str, bool] = {}
        closed = 0
        for c in list(self.clients) + list(self.connecting):
            digest = c.principal.digest
            if digest not in verdicts:
                verdicts[digest] = active(digest)
            if not verdicts[digest] and not c.closed:
                self.disconnected_revoked += 1
                self.close(c, CLOSE_REVOKED, b"token revoked")
                closed += 1
        if closed:
            log.info("closed %d WebSocket(s) of removed or revoked tokens", closed)
        return closed

    def close(self, c: Client, code: int, reason: bytes) -> None:
        """Stop sending to ``c`` at once and close it with ``code`` (in the background)."""
        c.closed = True
        if c.unsubscribe is not None:
            c.unsubscribe()  # publishers stop seeing it at once, before the close handshake
        self.connecting.discard(c)
        c.clear()
        c.ready.set()
        asyncio.get_running_loop().create_task(_close(c, code, reason))

    def drop_slow(self, c: Client) -> None:
        """Too many unread bytes: close 1008, the client resyncs with ``since``."""
        if c.closed:
            return
        self.disconnected_slow += 1
        log.info("closing slow WebSocket client %s", c.principal.name)
        self.close(c, CLOSE_SLOW, b"slow consumer: reconnect with since")

    def queue_depth(self) -> int:
        return sum(len(c.queue) for c in self.clients)

    async def close_all(self) -> None:
        """Server shutdown: close every socket with 1001 (going away)."""
        for c in list(self.clients) + list(self.connecting):
            c.closed = True
            c.ready.set()
            with contextlib.suppress(Exception):
                await c.ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")


async def _close(c: Client, code: int, reason: bytes) -> None:
    """The close handshake, cut short for a peer that does not read (its buffer is full)."""
    try:
        async with asyncio.timeout(CLOSE_GRACE_S):
            await c.ws.close(code=code, message=reason)
    except Exception:
        if c.transport is not None:
            c.transport.abort()


async def drain(client: Client) -> None:
    """The client's own task once it is registered: send what its queue holds, in order."""
    ws = client.ws
    client.direct = True
    try:
        while not client.closed and not ws.closed:
            if not client.queue:
                client.ready.clear()
                await client.ready.wait()
                continue
            seq, data, _ = client.take()
            if seq and seq <= client.after_seq:
                continue
            await ws.send_frame(data, WSMsgType.TEXT)
    except (ConnectionError, RuntimeError, asyncio.CancelledError):
        pass


def encode(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed server text frame (RFC 6455 §5.2), built once per message."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload
