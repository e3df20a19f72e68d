"""The ``/ws`` endpoint (contract §4): snapshot or catch-up, live messages, client actions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from dispatch.core.errors import DispatchError
from dispatch.runtime import StoreUnavailableError
from dispatch.server import api, validation
from dispatch.server.app import STATE, State, principal_of
from dispatch.server.auth import Principal
from dispatch.server.hub import Client, encode, writer
from dispatch.server.render import unit_json
from dispatch.server.validation import ACTIONS, ApiError


def snapshot(state: State, p: Principal, seq: int, narrow: str | None) -> bytes:
    """Open events and units the caller may see, current to ``seq``."""
    rt, now = state.runtime, state.clock.now()
    events = [state.render(ev) for ev in rt.engine.open_events()
              if p.can_read_event(ev) and (narrow is None or _in_region(ev, narrow))]
    for e in events:
        e.pop("timeline", None)
    busy = rt.engine.busy_units()
    units = [unit_json(rt.dataset, rt.units, busy, uid, now, state.tz)
             for uid in api.units_in_scope(state, p, narrow)]
    return encode({"type": "snapshot", "seq": seq, "server_time": state.iso(now),
                   "events": events, "units": units})


def _in_region(ev: dict[str, Any], region: str) -> bool:
    return region in (ev.get("grid"), ev.get("township"), ev.get("county"), ev.get("city"))


async def _one(message: bytes) -> AsyncIterator[bytes]:
    yield message


REPLAY_BATCH = 500  # journal records read and rendered between two turns of the loop


def replay_fits(state: State, since: int, upto: int) -> bool:
    """Whether ``since`` is recent enough to replay (else the client gets a snapshot)."""
    return 0 <= upto - since <= int(state.config["ws"]["replay_max"])


async def catch_up(state: State, p: Principal, since: int, upto: int
                   ) -> AsyncIterator[bytes]:
    """Journal messages in scope with since < seq <= upto, streamed in batches.

    Nothing is held beyond one batch, and the loop gets a turn between batches, so a
    client replaying thousands of records never stalls the others.
    """
    after = since
    while after < upto:
        batch = await state.runtime.store.read(after_seq=after,
                                                limit=min(REPLAY_BATCH, upto - after))
        if not batch:
            return
        for rec in batch:
            if rec.seq > upto:
                return
            if p.can_read_event(rec.after) or (p.role == "field" and
                                               (rec.before or {}).get("unit") == p.unit):
                yield encode(state.hub.message_for(rec))
        after = batch[-1].seq
        await asyncio.sleep(0)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    state, p = request.app[STATE], principal_of(request)
    if p.role == "intake":
        raise ApiError(403, "forbidden", "an intake token may only create events")
    since_text = request.query.get("since")
    since: int | None = None
    if since_text is not None:
        if not since_text.isdigit():
            raise ApiError(422, "invalid_field", "since must be a sequence number", "since")
        since = int(since_text)
    cfg = state.config
    ws = web.WebSocketResponse(heartbeat=float(cfg["ws"]["heartbeat_s"]), compress=False,
                               max_msg_size=int(cfg["limits"]["ws_max_message_bytes"]))
    await ws.prepare(request)
    client = Client(ws=ws, principal=p, queue_size=int(cfg["ws"]["queue_size"]),
                    batch_positions=request.query.get("positions") == "batch",
                    transport=request.transport)
    remove = state.hub.add(client)
    upto = state.runtime.published_seq
    client.after_seq = upto
    if since is not None and replay_fits(state, since, upto):
        first = catch_up(state, p, since, upto)
    else:
        first = _one(snapshot(state, p, upto, None))
    task = asyncio.create_task(writer(client, state.hub, first))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                reply = await handle_message(state, client, msg.data)
            elif msg.type == WSMsgType.BINARY:
                reply = _error(None, ApiError(400, "invalid_message",
                                              "binary frames are not accepted; send JSON text"))
            else:
                continue
            if reply is not None and not client.closed:
                client.queue.append((0, encode(reply), False))  # in order with pushes
                client.ready.set()
    finally:
        remove()
        client.closed = True
        client.ready.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return ws


def _error(msg_id: Any, e: ApiError | DispatchError) -> dict[str, Any]:
    if isinstance(e, ApiError):
        err = {"code": e.code, "message": e.message, "field": e.field, **e.extra}
    else:
        err = {"code": e.code, "message": str(e), "field": e.field}
        if getattr(e, "current_status", None) is not None:
            err["status"] = e.current_status
    return {"type": "error", "id": msg_id, "error": err}


async def handle_message(state: State, client: Client, text: str) -> dict[str, Any] | None:
    """One client message → an ack, an error, or nothing."""
    p = client.principal
    msg_id = None
    try:
        data = validation.parse_json(text.encode("utf-8", "surrogatepass"),
                                     int(state.config["limits"]["max_json_depth"]))
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise ApiError(400, "invalid_message", "a message is a JSON object with a type",
                           "type")
        msg_id = data.get("id")
        kind = data["type"]
        if kind == "ping":
            return {"type": "pong", "id": msg_id, "server_time": state.iso(state.clock.now())}
        if kind == "subscribe":
            return _subscribe(state, client, data.get("region"), msg_id)
        if kind == "position":
            unit_id = data.get("unit") or p.unit
            if not isinstance(unit_id, str):
                raise ApiError(422, "invalid_field", "unit is required", "unit")
            unit = api.apply_position(state, p, unit_id, data)
            return {"type": "ack", "id": msg_id, "unit": unit}
        if kind in ACTIONS:
            event_id = data.get("event")
            if not isinstance(event_id, str):
                raise ApiError(422, "invalid_field", "event is required", "event")
            body = {k: data[k] for k in ("at", "unit", "team", "note") if k in data}
            ev = await api.apply_action(state, p, event_id, kind, body)
            return {"type": "ack", "id": msg_id, "event": ev}
        raise ApiError(400, "unknown_type", f"unknown message type {kind!r}", "type")
    except (ApiError, DispatchError) as e:
        return _error(msg_id, e)
    except StoreUnavailableError:
        return _error(msg_id, ApiError(503, "store_unavailable",
                                       "the journal could not be written; retry"))


def _subscribe(state: State, client: Client, region: Any, msg_id: Any) -> dict[str, Any]:
    p = client.principal
    if region is None:
        client.narrow = None
        return {"type": "subscribed", "id": msg_id, "region": None}
    ds = state.runtime.dataset
    if not isinstance(region, str) or region not in ds.regions:
        raise ApiError(422, "invalid_field", f"unknown region {region!r}", "region")
    if not p.sees_all() and (p.role == "field" or p.region not in ds.region_path(region)):
        raise ApiError(403, "forbidden", f"region {region} is outside your scope", "region")
    client.narrow = region
    return {"type": "subscribed", "id": msg_id, "region": region}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws", ws_handler)
