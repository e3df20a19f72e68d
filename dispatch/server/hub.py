"""The WebSocket hub: scope-filtered fan-out that never blocks a publisher (contract §4).

How it works: each connected client has a bounded queue drained by its own writer task. A
change (journal records, after they are durable) is turned into one message per record,
serialised once, and put on the queue of every client whose scope holds the event. Clients
are indexed by the region of their scope and by unit, so a publish looks at the clients that
can see the event, not at all of them. A full queue drops a pending position update first; if
it is still full the client is closed (1008 "slow consumer") and resyncs with ``?since=``.
Messages carry ``seq``, the journal position of their record; a client that connects with
``since`` first gets the journal after that seq (in its scope) and then the live messages
queued meanwhile, skipping any it already got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from dispatch.core.records import Record
from dispatch.server.auth import EVENT_PATH_KEYS, Principal

log = logging.getLogger("dispatch.hub")

MESSAGE_TYPES = {
    "created": "event.created",
    "warned": "timer.warning",
    "breached": "timer.breached",
    "escalated": "event.escalated",
}

CLOSE_SLOW = 1008
DIRECT_WRITE_LIMIT = 64 * 1024
CLOSE_GOING_AWAY = 1001


@dataclass(eq=False)
class Client:
    """One WebSocket connection, its scope and its bounded outgoing queue."""

    ws: web.WebSocketResponse
    principal: Principal
    queue_size: int
    narrow: str | None = None
    after_seq: int = 0
    queue: deque[tuple[int, bytes, bool]] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    dropped_positions: int = 0
    batch_positions: bool = False
    pending_units: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsubscribe: Callable[[], None] | None = None
    transport: asyncio.Transport | None = None
    direct: bool = False  # set by the writer once the snapshot / catch-up is out

    def offer(self, seq: int, data: bytes, is_position: bool = False,
              frame: bytes | None = None) -> bool:
        """Send or queue one message; False when the client is too slow and must go.

        When nothing is queued and the socket's buffer is nearly empty, the frame (built
        once per message for every recipient) goes straight to the transport: no task
        switch per recipient. Otherwise it waits in the bounded queue for the writer task.
        """
        if self.closed:
            return True
        t = self.transport
        if (self.direct and not self.queue and t is not None and not t.is_closing()
                and t.get_write_buffer_size() < DIRECT_WRITE_LIMIT):
            if not seq or seq > self.after_seq:
                t.write(frame if frame is not None else text_frame(data))
            return True
        if len(self.queue) >= self.queue_size:
            for i, item in enumerate(self.queue):
                if item[2]:
                    del self.queue[i]
                    self.dropped_positions += 1
                    break
            else:
                if is_position:
                    self.dropped_positions += 1
                    return True
                return False
        self.queue.append((seq, data, is_position))
        self.ready.set()
        return True


class Hub:
    """Fan-out of journal records and unit positions to WebSocket clients."""

    def __init__(self, render_event: Callable[[dict[str, Any]], dict[str, Any]],
                 now_iso: Callable[[], str], iso: Callable[[float], str | None]) -> None:
        self.render_event = render_event
        self.now_iso = now_iso
        self.iso = iso
        self.all_seeing: set[Client] = set()
        self.by_region: dict[str, set[Client]] = {}
        self.by_unit: dict[str, set[Client]] = {}
        self.clients: set[Client] = set()
        self.disconnected_slow = 0

    # -- registration ---------------------------------------------------------------------
    def add(self, client: Client) -> Callable[[], None]:
        """Index the client by its scope; returns the unsubscribe callable."""
        self.clients.add(client)
        p = client.principal
        if p.sees_all():
            self.all_seeing.add(client)
        elif p.role == "field" and p.unit:
            self.by_unit.setdefault(p.unit, set()).add(client)
        elif p.region:
            self.by_region.setdefault(p.region, set()).add(client)

        def remove() -> None:
            self.clients.discard(client)
            self.all_seeing.discard(client)
            for index in (self.by_unit, self.by_region):
                for key in [k for k, v in index.items() if client in v]:
                    index[key].discard(client)
                    if not index[key]:
                        del index[key]
        client.unsubscribe = remove
        return remove

    # -- publishing -----------------------------------------------------------------------
    def message_for(self, rec: Record) -> dict[str, Any]:
        """The message a record becomes: the event as it was at that change."""
        msg: dict[str, Any] = {
            "type": MESSAGE_TYPES.get(rec.action, "event.updated"),
            "seq": rec.seq,
            "at": self.iso(rec.received_at),
            "server_time": self.now_iso(),
            "action": rec.action,
            "event": self.render_event(rec.after),
        }
        extra = rec.extra or {}
        for key in ("stage", "from", "to", "recovered", "notify_tiers"):
            if key in extra:
                msg[key] = extra[key]
        return msg

    def recipients(self, ev: dict[str, Any], before: dict[str, Any]) -> set[Client]:
        out = set(self.all_seeing)
        for key in EVENT_PATH_KEYS:
            rid = ev.get(key)
            if rid and rid in self.by_region:
                out |= self.by_region[rid]
        for unit in {ev.get("unit"), before.get("unit")}:
            if unit and unit in self.by_unit:
                out |= self.by_unit[unit]
        return out

    def publish(self, records: Iterable[Record]) -> None:
        """Deliver records (already durable) to every client in scope, in seq order."""
        for rec in records:
            ev = rec.after
            targets = self.recipients(ev, rec.before or {})
            if not targets:
                continue
            data = orjson.dumps(self.message_for(rec))
            frame = text_frame(data)
            for c in targets:
                if c.narrow and not _in_path(ev, c.narrow):
                    continue
                if not c.offer(rec.seq, data, frame=frame):
                    self._drop_slow(c)

    def publish_unit(self, unit: dict[str, Any], team_path: frozenset[str]) -> None:
        """A unit's new position to the clients whose scope holds its team.

        Clients that asked for batched positions (``/ws?positions=batch``, as the pages do)
        get the latest position of each unit once per flush as one ``units.updated`` frame;
        the others get one ``unit.updated`` message per report (contract §4).
        """
        targets = set(self.all_seeing)
        for rid in team_path:
            targets |= self.by_region.get(rid, set())
        targets |= self.by_unit.get(unit["id"], set())
        if not targets:
            return
        data: bytes | None = None
        frame = b""
        for c in targets:
            if c.narrow and c.narrow not in team_path:
                continue
            if c.batch_positions:
                c.pending_units[unit["id"]] = unit
                continue
            if data is None:
                data = orjson.dumps({"type": "unit.updated", "at": unit.get("at"),
                                     "server_time": self.now_iso(), "unit": unit})
                frame = text_frame(data)
            c.offer(0, data, is_position=True, frame=frame)

    def flush_positions(self) -> int:
        """Send each batching client its pending positions as one frame; returns frames."""
        frames = 0
        now = self.now_iso()
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

    def _drop_slow(self, c: Client) -> None:
        c.closed = True
        if c.unsubscribe is not None:
            c.unsubscribe()  # publishers stop seeing it at once, before the close handshake
        c.queue.clear()
        c.ready.set()
        self.disconnected_slow += 1
        log.info("closing slow WebSocket client %s", c.principal.name)
        asyncio.get_running_loop().create_task(
            c.ws.close(code=CLOSE_SLOW, message=b"slow consumer: reconnect with since"))

    def queue_depth(self) -> int:
        return sum(len(c.queue) for c in self.clients)

    async def close_all(self) -> None:
        """Server shutdown: close every socket with 1001 (going away)."""
        for c in list(self.clients):
            c.closed = True
            c.ready.set()
            with contextlib.suppress(Exception):
                await c.ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")


def _in_path(ev: dict[str, Any], region: str) -> bool:
    return any(ev.get(k) == region for k in EVENT_PATH_KEYS)


async def writer(client: Client, hub: Hub, first: AsyncIterator[bytes]) -> None:
    """The client's own task: send the first messages (a snapshot or a replay), then
    drain the live queue."""
    ws = client.ws
    try:
        try:
            async for data in first:
                await ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            raise
        except Exception:  # the journal could not be read (e.g. Redis is down)
            log.warning("replay to a client failed; closing so it reconnects", exc_info=True)
            client.closed = True
            await ws.close(code=1011, message=b"replay failed; reconnect")
            return
        client.direct = True
        while not client.closed and not ws.closed:
            if not client.queue:
                client.ready.clear()
                await client.ready.wait()
                continue
            seq, data, _ = client.queue.popleft()
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
