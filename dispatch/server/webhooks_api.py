"""The webhooks' admin endpoints (contract v2 §8): parse, call, render.

``GET /api/v1/webhooks/{id}/deliveries`` shows what is pending (the first ``limit`` messages
not yet answered 2xx, the one being retried with its attempts and last error) and the last
delivered seq; ``POST /api/v1/webhooks/{id}/redeliver {"from_seq": N}`` sends again every
message from N. Admins only (``scope.may_manage_webhooks``): any other role gets 403 whatever
the id; an unknown webhook answers 404. The state is the store's, so any instance answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from dispatch.coordination import StoreUnavailableError
from dispatch.server import scope, validation
from dispatch.server.commands import forbid
from dispatch.server.state import STATE, V1, State, json_response, principal_of, read_json
from dispatch.server.validation import ApiError
from dispatch.server.webhooks import Progress, Webhook, Webhooks

WEBHOOKS: web.AppKey[Webhooks] = web.AppKey("webhooks", Webhooks)
MAX_LIMIT = 1000
log = logging.getLogger("dispatch.webhooks")
_T = TypeVar("_T")


async def _stored(what: Awaitable[_T]) -> _T:
    """The store's answer, or 503 while it cannot give one (Redis down, a hung disk)."""
    try:
        return await what
    except Exception as exc:
        log.warning("webhooks: the store did not answer: %s: %s", type(exc).__name__, exc)
        raise StoreUnavailableError(str(exc)) from exc


def _hook(request: web.Request) -> tuple[State, Webhooks, Webhook]:
    """403 for a caller that is no admin (before any id is looked up), then 404."""
    state = request.app[STATE]
    if not scope.may_manage_webhooks(principal_of(request)):
        raise forbid("only an admin manages webhooks")
    hooks = request.app[WEBHOOKS]
    hook_id = request.match_info["id"]
    hook = hooks.hooks.get(hook_id)
    if hook is None:
        raise ApiError(404, "not_found", f"no webhook {hook_id!r}")
    return state, hooks, hook


def _limit(q: Any) -> int:
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise ApiError(422, "invalid_field", "limit must be an integer", "limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "invalid_field", f"limit must be 1..{MAX_LIMIT}", "limit")
    return limit


async def _answer(state: State, hooks: Webhooks, hook: Webhook, p: Progress,
                  limit: int) -> web.Response:
    pending, more = await _stored(hooks.pending(hook, p, limit))
    iso = state.iso
    return json_response({
        "webhook": hook.id, "url": hook.url, "source": hook.source, "region": hook.region,
        "departments": sorted(hook.departments),
        "cursor": p.cursor, "last_delivered_seq": p.delivered_seq,
        "journal_seq": state.runtime.view.last_seq,
        "retrying": None if p.seq is None else {
            "seq": p.seq, "attempts": p.attempts, "last_error": p.last_error,
            "last_attempt_at": iso(p.last_attempt_at),
            "next_attempt_at": iso(p.next_attempt_at)},
        "pending": pending, "more": more,
        "oldest_pending_age_s": pending[0]["age_s"] if pending else None,
    })


async def deliveries(request: web.Request) -> web.Response:
    state, hooks, hook = _hook(request)
    limit = _limit(request.query)
    return await _answer(state, hooks, hook, await _stored(hooks.progress(hook.id)), limit)


async def redeliver(request: web.Request) -> web.Response:
    state, hooks, hook = _hook(request)
    from_seq = validation.redeliver_body(await read_json(request, state))
    last = state.runtime.view.last_seq
    if from_seq > last:
        raise ApiError(422, "invalid_field",
                       f"from_seq {from_seq} is past the journal's last seq {last}", "from_seq")
    p = await _stored(hooks.redeliver(hook.id, from_seq))
    return await _answer(state, hooks, hook, p, 100)


def add_routes(app: web.Application, hooks: Webhooks) -> None:
    app[WEBHOOKS] = hooks
    app.router.add_get(f"{V1}/webhooks/{{id}}/deliveries", deliveries)
    app.router.add_post(f"{V1}/webhooks/{{id}}/redeliver", redeliver)
