"""The aiohttp application: REST, WebSocket and pages on one port (contract §3, §4, §7).

How it works: ``build_app(config)`` wires a ``Runtime`` (engine + store + geo + deadline
loop), the ``Hub`` and the handlers of ``api.py`` / ``ws.py``. Middlewares, outermost first:
metrics (latency by route), errors (every failure becomes ``{"error": {code, message,
field}}``), and auth + rate limit for ``/api/v1`` and ``/ws``. Start-up rebuilds state from
the journal before the port answers; shutdown closes WebSockets with 1001 and flushes the
journal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from dispatch.clock import Clock, SystemClock
from dispatch.config import Config
from dispatch.core.errors import DispatchError
from dispatch.runtime import Runtime, StoreUnavailableError
from dispatch.server.auth import Principal, TokenBook
from dispatch.server.hub import Hub
from dispatch.server.metrics import Metrics
from dispatch.server.render import Renderer, iso
from dispatch.server.validation import ApiError

log = logging.getLogger("dispatch.server")

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def error_response(http_status: int, code: str, message: str, field: str | None = None,
                   **extra: Any) -> web.Response:
    return json_response({"error": {"code": code, "message": message, "field": field, **extra}},
                         status=http_status)


@dataclass
class RateBucket:
    tokens: float
    updated: float


@dataclass
class State:
    """Everything the handlers share, stored on the app under ``STATE``."""

    config: Config
    runtime: Runtime
    hub: Hub
    tokens: TokenBook
    clock: Clock
    metrics: Metrics | None = None
    buckets: dict[str, RateBucket] = field(default_factory=dict)
    team_paths: dict[str, frozenset[str]] = field(default_factory=dict)
    unit_scopes: dict[tuple[Any, ...], tuple[str, ...]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    renderer: Renderer = field(init=False)

    def __post_init__(self) -> None:
        self.renderer = Renderer(self.config.tz, float(self.config["timers"]["warn_fraction"]))

    @property
    def tz(self) -> Any:
        return self.config.tz

    def render(self, ev: dict[str, Any]) -> dict[str, Any]:
        return self.renderer(ev, self.clock.now())

    def iso(self, t: float | None) -> str | None:
        return iso(t, self.tz)


STATE: web.AppKey[State] = web.AppKey("state", State)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def bearer(request: web.Request) -> str | None:
    h = request.headers.get("Authorization", "")
    if h.startswith("Bearer "):
        return h[7:].strip()
    return request.query.get("token") if request.path == "/ws" else None


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message, e.field, **e.extra)
    except DispatchError as e:
        extra = {}
        if getattr(e, "current_status", None) is not None:
            extra["status"] = e.current_status
        return error_response(e.status, e.code, str(e), e.field, **extra)
    except StoreUnavailableError:
        return error_response(503, "store_unavailable",
                              "the journal could not be written; nothing was changed, retry")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            e.status, "http_error")
        return error_response(e.status, code, e.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; it has been logged")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    start = time.perf_counter()
    resp = await handler(request)
    state = request.app[STATE]
    if state.metrics is not None and request.path != "/ws":
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        state.metrics.latency.labels(request.method, name, str(resp.status)).observe(
            time.perf_counter() - start)
    return resp


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if not (request.path.startswith("/api/v1") or request.path == "/ws"):
        return await handler(request)
    state = request.app[STATE]
    p = state.tokens.lookup(bearer(request))
    if p is None:
        raise ApiError(401, "unauthorized", "missing or invalid bearer token")
    request[PRINCIPAL] = p
    _rate_limit(state, p)
    return await handler(request)


def _rate_limit(state: State, p: Principal) -> None:
    lim = state.config["limits"]
    rate, burst = float(lim["rate_per_s"]), float(lim["rate_burst"])
    now = time.monotonic()
    b = state.buckets.get(p.digest)
    if b is None:
        b = state.buckets[p.digest] = RateBucket(tokens=burst, updated=now)
    b.tokens = min(burst, b.tokens + (now - b.updated) * rate)
    b.updated = now
    if b.tokens < 1:
        raise ApiError(429, "rate_limited", "too many requests for this token; slow down",
                       retry_after_s=round((1 - b.tokens) / rate, 3))
    b.tokens -= 1


def build_app(config: Config, clock: Clock | None = None) -> web.Application:
    """The whole server as one aiohttp application (not yet started)."""
    from dispatch.server import api, openapi, ws

    clock = clock or SystemClock()
    runtime = Runtime(config, clock=clock)
    state_ref: dict[str, State] = {}

    def render(ev: dict[str, Any]) -> dict[str, Any]:
        return state_ref["s"].render(ev)

    hub = Hub(render_event=render, now_iso=lambda: iso(clock.now(), config.tz) or "",
              iso=lambda t: iso(t, config.tz))
    state = State(config=config, runtime=runtime, hub=hub, tokens=TokenBook(config), clock=clock)
    state_ref["s"] = state
    state.metrics = Metrics(state)
    state.team_paths = {tid: frozenset(runtime.dataset.region_path(t.region))
                        for tid, t in runtime.dataset.teams.items()}
    runtime.subscribe(hub.publish)

    def push_unit(unit_id: str) -> None:  # a position reported on another instance
        from dispatch.server.render import unit_json

        ds = runtime.dataset
        out = unit_json(ds, runtime.units, runtime.engine.busy_units(), unit_id, clock.now(),
                        config.tz)
        hub.publish_unit(out, state.team_paths.get(ds.units[unit_id].team, frozenset()))

    runtime.subscribe_positions(push_unit)

    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
        client_max_size=int(config["limits"]["max_body_bytes"]),
    )
    app[STATE] = state
    api.add_routes(app)
    ws.add_routes(app)
    openapi.add_routes(app)
    _add_pages(app)

    tasks: list[asyncio.Task[None]] = []

    async def on_startup(app: web.Application) -> None:
        await runtime.start()
        tasks.append(asyncio.create_task(
            hub.run_position_flush(float(config["ws"]["position_flush_s"])), name="positions"))

    async def on_shutdown(app: web.Application) -> None:
        for t in tasks:
            t.cancel()
        await hub.close_all()

    async def on_cleanup(app: web.Application) -> None:
        await runtime.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def _add_pages(app: web.Application) -> None:
    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.route.resource.canonical.strip("/")  # type: ignore[union-attr]
        path = STATIC_DIR / f"{name}.html"
        if not path.exists():
            raise web.HTTPNotFound(reason=f"page {name} is not built")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ops")

    app.router.add_get("/", root)
    for name in ("ops", "field", "supervisor"):
        app.router.add_get(f"/{name}", page)
    if STATIC_DIR.exists():
        app.router.add_static("/static/", STATIC_DIR, append_version=False)
