"""``GET /healthz`` and ``GET /metrics``, outside ``/api/v1`` (contract §3, §6).

``/healthz`` is open (load balancers poll it) and answers 503 with a short reason while the
server cannot take changes: the runtime stopped itself after a journal it could not roll back,
or the store says it cannot be written now (``Store.health()``: a dead writer thread, a full
disk, Redis unreachable). ``/metrics`` (Prometheus text) needs a token of a role listed in
``metrics.roles`` unless the config sets ``metrics.public: true``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from dispatch.server.middleware import authenticate
from dispatch.server.state import STATE, State, json_response
from dispatch.server.validation import ApiError

# A store answers health() within about a second (interfaces §3); past this the answer is
# itself the reason.
HEALTH_TIMEOUT_S = 2.0


async def failing_reason(state: State) -> str | None:
    """Why the server cannot take changes now, or None when it can."""
    rt = state.runtime
    if not rt.healthy:
        return "the journal could not be rolled back after a failed write; restart the server"
    try:
        return await asyncio.wait_for(rt.store.health(), HEALTH_TIMEOUT_S)
    except TimeoutError:
        return f"the store did not answer its health check within {HEALTH_TIMEOUT_S:g} s"
    except Exception as exc:  # a health check that raises is a failing store
        return f"store health check failed: {type(exc).__name__}"


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    reason = await failing_reason(state)
    if reason is not None:
        return json_response({"status": "failing", "reason": reason}, status=503)
    rt = state.runtime
    view = rt.view
    body: dict[str, Any] = {"status": "ok", "seq": view.last_seq,
                            "events": sum(1 for _ in view.open_events()),
                            "ws_clients": len(state.hub.clients)}
    return json_response(body)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    conf = state.config["metrics"]
    if not conf["public"]:
        p = authenticate(request)
        if p.role not in conf["roles"]:
            raise ApiError(403, "forbidden", "this token may not read the metrics")
    assert state.metrics is not None
    return web.Response(body=state.metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
