"""The ``/ws`` endpoint (contract §4): snapshot or catch-up, live messages, client actions.

How it works: a connection first gets its snapshot (or, with ``since``, the journal after
that seq), then whatever the journal gained meanwhile, and only then is it registered with
the hub, in the same turn of the loop as the last check, so no change falls between the
two. Client messages go through the token's bucket (the one HTTP uses); replies queue with
the pushes and count against the client's byte bound. Error replies carry a fixed message
per code and never the client's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiohttp import WSMsgType, web

from dispatch.core.errors import DispatchError
from dispatch.core.event import Event
from dispatch.core.records import Record
from dispatch.runtime import StoreUnavailableError
from dispatch.server import scope, validation
from dispatch.server.commands import check_reader
from dispatch.server.hub import CLOSE_SLOW, Client, drain, encode, queue_bytes
from dispatch.server.middleware import rate_limit
from dispatch.server.render import unit_json
from dispatch.server.scope import Principal
from dispatch.server.state import STATE, State, principal_of
from dispatch.server.validation import ACTIONS, ApiError

log = logging.getLogger("dispatch.ws")

CLOSE_INTERNAL = 1011
REPLAY_BATCH = 500  # journal records read and rendered between two turns of the loop
MAX_ID_CHARS = 64  # a message ``id`` is echoed only when it is a short string or an integer
MAX_ID_INT = 2**53
FIELD_RE = re.compile(r"[a-z][a-z0-9_]{0,31}(\.[a-z0-9_]{1,32}){0,4}")
CODE_RE = re.compile(r"[a-z_]{1,40}")

# The only messages an error reply carries: client text is never echoed (issue 11 #6).
ERROR_MESSAGES = {
    "invalid_message": "a message is a JSON text frame holding an object with a type",
    "unknown_type": "unknown message type",
    "malformed_json": "the message is not valid JSON",
    "invalid_utf8": "the message is not valid UTF-8",
    "too_deep": "the message is nested too deeply",
    "invalid_field": "a field is missing or invalid; see field",
    "forbidden": "this token may not do that",
    "not_found": "no such object in your scope",
    "illegal_transition": "the event's status does not allow this action",
    "outside_jurisdiction": "the location is outside the configured jurisdiction",
    "conflict": "the change conflicted with another; retry",
    "rate_limited": "too many messages for this token; slow down",
    "store_unavailable": "the journal could not be written; retry",
    "body_too_large": "the message is too large",
    "internal_error": "internal error; it has been logged",
}
GENERIC_ERROR = "the message was refused"


def snapshot(state: State, p: Principal, seq: int, narrow: str | None) -> bytes:
    """Open events and units the caller may see, as the committed view holds them at ``seq``.

    An event that cannot be rendered is logged and left out; any other failure raises
    (the caller closes the socket with 1011).
    """
    rt, now = state.runtime, state.clock.now()
    events = []
    # look only where p's events can be: its region's open events, or its unit's one (a unit
    # is busy on at most one open event); everything else reads them all
    bound, unit = scope.region_bound(p, narrow), scope.unit_bound(p)
    if bound is not None:
        candidates: Iterable[Event] = rt.view.open_events_in(bound)
    elif unit is not None:
        on = rt.view.busy_units().get(unit)
        candidates = [] if on is None else [rt.view.get(on)]
    else:
        candidates = rt.view.open_events()
    for ev in candidates:
        if scope.event_visible(p, ev) and (narrow is None or scope.event_in_region(ev, narrow)):
            out = _render(state, ev)
            if out is not None:
                out.pop("timeline", None)
                events.append(out)
    busy = rt.view.busy_units()
    units = [unit_json(rt.dataset, rt.units, busy, uid, now, state.tz)
             for uid in scope.units_in_scope(state.areas, p, narrow)]
    return encode({"type": "snapshot", "seq": seq, "server_time": state.iso(now),
                   "events": events, "units": units})


def _render(state: State, ev: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return state.render.event(ev)
    except Exception:
        log.exception("event %s could not be rendered; left out of a snapshot",
                      str(ev.get("id"))[:40])
        return None


async def _one(message: bytes) -> AsyncIterator[bytes]:
    yield message


def replay_fits(state: State, since: int, upto: int) -> bool:
    """Whether ``since`` is recent enough to replay (else the client gets a snapshot)."""
    return 0 <= upto - since <= int(state.config["ws"]["replay_max"])


async def catch_up(state: State, p: Principal, since: int, upto: int,
                   narrow: str | None = None) -> AsyncIterator[bytes]:
    """Journal messages in scope with since < seq <= upto, streamed in batches.

    Nothing is held beyond one batch, and the loop gets a turn between batches, so a
    client replaying thousands of records never stalls the others. A record that cannot
    be rendered is skipped (the hub logs it once).
    """
    held = state.hub.recent(since, upto)
    if held is not None:  # the newest records, rendered once for every socket
        for rec, data in held:
            if narrow is not None and not scope.event_in_region(rec.after, narrow):
                continue
            if data is not None and scope.record_visible(p, rec.after, rec.before):
                yield data
        return
    after = since
    while after < upto:
        batch = await state.runtime.store.read(after_seq=after,
                                                limit=min(REPLAY_BATCH, upto - after))
        if not batch:
            return
        for rec in batch:
            if rec.seq > upto:
                return
            if narrow is not None and not scope.event_in_region(rec.after, narrow):
                continue
            if scope.record_visible(p, rec.after, rec.before):
                _recall_state(state, rec)
                data = state.hub.encode_record(rec)
                if data is not None:
                    yield data
        after = batch[-1].seq
        await asyncio.sleep(0)


def _recall_state(state: State, rec: Record) -> None:
    """Give a record read back from the journal the event's full state at it (the message
    shows the event as it was then): a v2 record carries only the change, and the committed
    view's state of the event (at or after the record: ``upto`` never passes the view) holds
    the timeline and escalations up to it."""
    with contextlib.suppress(ValueError):  # then encode_record logs it once and skips it
        state.runtime.view.recall(rec)


class _Gone(Exception):
    """The socket went away while we were sending."""


async def _send(ws: web.WebSocketResponse, data: bytes) -> None:
    try:
        await ws.send_frame(data, WSMsgType.TEXT)
    except (ConnectionError, RuntimeError) as exc:
        raise _Gone from exc


async def serve_client(state: State, client: Client, since: int | None) -> None:
    """The client's own task: snapshot or replay, the gap, registration, then live."""
    ws, p, rt = client.ws, client.principal, state.runtime
    try:
        upto = rt.published_seq
        if since is not None and replay_fits(state, since, upto):
            first = catch_up(state, p, since, upto)
        else:
            first = _one(snapshot(state, p, upto, None))
        async for data in first:
            await _send(ws, data)
        # Whatever was published while that went out comes from the journal; the last
        # check and the registration happen in one turn of the loop.
        while not client.closed and rt.published_seq > upto:
            gap_end = rt.published_seq
            async for data in catch_up(state, p, upto, gap_end, client.narrow):
                await _send(ws, data)
            upto = gap_end
    except (_Gone, asyncio.CancelledError):
        return
    except Exception:  # the snapshot could not be built, or the journal could not be read
        log.warning("snapshot or replay to a client failed; closing so it reconnects",
                    exc_info=True)
        client.closed = True
        with contextlib.suppress(Exception):
            await ws.close(code=CLOSE_INTERNAL, message=b"snapshot failed; reconnect")
        return
    if client.closed or ws.closed:
        return
    client.after_seq = upto
    state.hub.add(client)
    await drain(client)


async def ws_handler(request: web.Request) -> web.StreamResponse:
    state, p = request.app[STATE], principal_of(request)
    check_reader(p)
    since_text = request.query.get("since")
    since: int | None = None
    if since_text is not None:
        if not since_text.isdigit() or len(since_text) > 18:
            raise ApiError(422, "invalid_field", "since must be a sequence number", "since")
        since = int(since_text)
    cfg = state.config
    ws = web.WebSocketResponse(heartbeat=float(cfg["ws"]["heartbeat_s"]), compress=False,
                               max_msg_size=int(cfg["limits"]["ws_max_message_bytes"]))
    await ws.prepare(request)
    client = Client(ws=ws, principal=p, max_bytes=queue_bytes(cfg["ws"]),
                    batch_positions=request.query.get("positions") == "batch",
                    transport=request.transport)
    hub = state.hub
    hub.connecting.add(client)
    task = asyncio.create_task(serve_client(state, client, since))
    try:
        async for msg in ws:
            if client.closed:
                break
            if msg.type == WSMsgType.TEXT:
                reply = await _answer(state, client, msg.data)
            elif msg.type == WSMsgType.BINARY:
                reply = await _answer(state, client, None)
            else:
                continue
            if reply is not None and not client.closed and not client.offer(0, encode(reply)):
                hub.drop_slow(client)  # its replies alone went past its bound
    finally:
        hub.forget(client)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return ws


async def _answer(state: State, client: Client, text: str | None) -> dict[str, Any] | None:
    """Rate-limit, then handle one client message (``None``: a binary frame)."""
    try:
        rate_limit(state, client.principal)
    except ApiError as e:
        if _strike(state, client):
            state.hub.close(client, CLOSE_SLOW, b"message rate limit exceeded")
            return None
        return _error(None, e)
    if text is None:
        return _error(None, ApiError(400, "invalid_message", "binary frames are not accepted"))
    return await handle_message(state, client, text)


def _strike(state: State, client: Client) -> bool:
    """Count one refused message; True once refusals outrun the bucket by a whole burst.

    Strikes leak at the token's rate, so a client that only sometimes runs into the limit
    gets ``rate_limited`` replies, while one that keeps flooding past about twice its burst
    is closed (1008).
    """
    lim = state.config["limits"]
    rate, burst = float(lim["rate_per_s"]), float(lim["rate_burst"])
    now = time.monotonic()
    client.strikes = max(0.0, client.strikes - (now - client.strikes_at) * rate) + 1
    client.strikes_at = now
    return client.strikes > burst


def _safe_id(msg_id: Any) -> str | int | None:
    if isinstance(msg_id, str) and len(msg_id) <= MAX_ID_CHARS:
        return msg_id
    if isinstance(msg_id, int) and not isinstance(msg_id, bool) and abs(msg_id) < MAX_ID_INT:
        return msg_id
    return None


def _error(msg_id: Any, e: ApiError | DispatchError) -> dict[str, Any]:
    """An error reply: the code, a fixed message for it, a field name that is only ever a
    field path, and the numeric hints; never the client's text."""
    code = e.code if isinstance(e.code, str) and CODE_RE.fullmatch(e.code) else "invalid_message"
    fld = e.field if isinstance(e.field, str) and FIELD_RE.fullmatch(e.field) else None
    err: dict[str, Any] = {"code": code, "message": ERROR_MESSAGES.get(code, GENERIC_ERROR),
                           "field": fld}
    if isinstance(e, ApiError):
        retry = e.extra.get("retry_after_s")
        if isinstance(retry, int | float):
            err["retry_after_s"] = retry
    elif getattr(e, "current_status", None) is not None:
        status = e.current_status  # type: ignore[attr-defined]
        if isinstance(status, str) and CODE_RE.fullmatch(status):
            err["status"] = status
    return {"type": "error", "id": _safe_id(msg_id), "error": err}


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
        msg_id = _safe_id(data.get("id"))
        kind = data["type"]
        if kind == "ping":
            return {"type": "pong", "id": msg_id, "server_time": state.iso(state.clock.now())}
        if kind == "subscribe":
            return _subscribe(state, client, data.get("region"), msg_id)
        if kind == "position":
            unit_id = data.get("unit") or p.unit
            if not isinstance(unit_id, str):
                raise ApiError(422, "invalid_field", "unit is required", "unit")
            unit = state.commands.position(p, unit_id, data)
            return {"type": "ack", "id": msg_id, "unit": unit}
        if kind in ACTIONS:
            event_id = data.get("event")
            if not isinstance(event_id, str):
                raise ApiError(422, "invalid_field", "event is required", "event")
            body = {k: data[k] for k in ("at", "unit", "team", "note", "department")
                    if k in data}
            ev = await state.commands.act(p, event_id, kind, body)
            return {"type": "ack", "id": msg_id, "event": state.render(ev)}
        raise ApiError(400, "unknown_type", "unknown message type", "type")
    except (ApiError, DispatchError) as e:
        return _error(msg_id, e)
    except StoreUnavailableError:
        return _error(msg_id, ApiError(503, "store_unavailable",
                                       "the journal could not be written; retry"))
    except Exception:  # a bug: logged, answered, and the socket stays open
        log.exception("unhandled error on a WebSocket message")
        return _error(msg_id, ApiError(500, "internal_error", "internal error"))


def _subscribe(state: State, client: Client, region: Any, msg_id: Any) -> dict[str, Any]:
    p = client.principal
    if region is None:
        client.narrow = None
        return {"type": "subscribed", "id": msg_id, "region": None}
    if not isinstance(region, str) or region not in state.runtime.dataset.regions:
        raise ApiError(422, "invalid_field", "unknown region", "region")
    if not scope.region_in_scope(state.areas, p, region):
        raise ApiError(403, "forbidden", f"region {region} is outside your scope", "region")
    client.narrow = region
    return {"type": "subscribed", "id": msg_id, "region": region}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws", ws_handler)
