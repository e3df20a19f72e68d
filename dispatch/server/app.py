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
import ipaddress
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from dispatch.clock import Clock, SystemClock
from dispatch.config import Config, ConfigError
from dispatch.core.errors import DispatchError
from dispatch.runtime import Runtime, StoreUnavailableError
from dispatch.server.auth import Principal, TokenBook
from dispatch.server.hub import Hub
from dispatch.server.metrics import Metrics
from dispatch.server.render import Renderer, iso
from dispatch.server.validation import ApiError

log = logging.getLogger("dispatch.server")

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
REVOCATION_CHECK_S = 1.0  # open sockets of a removed token close within 5 s (contract §6)
AUTH_FAILURE_ADDRESSES = 10_000  # addresses whose failed token look-ups are remembered


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
    auth_failures: dict[str, RateBucket] = field(default_factory=dict)
    auth_refused: dict[str, int] = field(default_factory=lambda: {"unauthorized": 0,
                                                                  "rate_limited": 0})
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
        resp = error_response(e.status, e.code, e.message, e.field, **e.extra)
        if e.status == 429 and "retry_after_s" in e.extra:
            resp.headers["Retry-After"] = str(max(1, math.ceil(e.extra["retry_after_s"])))
        return resp
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
        resp = error_response(e.status, code, e.reason)
        if "Allow" in e.headers:  # RFC 9110 §15.5.6: a 405 names the methods it allows
            resp.headers["Allow"] = e.headers["Allow"]
        return resp
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
    p = authenticate(request)
    request[PRINCIPAL] = p
    rate_limit(request.app[STATE], p)
    return await handler(request)


def authenticate(request: web.Request) -> Principal:
    """The caller's principal, else 401; 429 while this address has failed too often.

    Failed look-ups are counted per client address (a token bucket of
    ``limits.auth_failures_burst`` refilled at ``limits.auth_failures_per_min``). While the
    bucket is empty every token from that address is refused, valid or not, so a guesser
    learns nothing from the answer.
    """
    state = request.app[STATE]
    lim = state.config["limits"]
    rate = float(lim["auth_failures_per_min"]) / 60.0
    burst = float(lim["auth_failures_burst"])
    addr = request.remote or "unknown"
    now = time.monotonic()
    b = state.auth_failures.get(addr)
    if b is not None:
        b.tokens = min(burst, b.tokens + (now - b.updated) * rate)
        b.updated = now
        if b.tokens < 1:
            state.auth_refused["rate_limited"] += 1
            raise ApiError(429, "rate_limited",
                           "too many requests with a missing or invalid token from this address",
                           retry_after_s=round((1 - b.tokens) / rate, 3))
    p = state.tokens.lookup(bearer(request))
    if p is not None:
        return p
    if b is None:
        if len(state.auth_failures) >= AUTH_FAILURE_ADDRESSES:
            _forget_refilled(state.auth_failures, now, rate, burst)
        b = state.auth_failures[addr] = RateBucket(tokens=burst, updated=now)
    b.tokens -= 1
    state.auth_refused["unauthorized"] += 1
    raise ApiError(401, "unauthorized", "missing or invalid bearer token")


def _forget_refilled(buckets: dict[str, RateBucket], now: float, rate: float,
                     burst: float) -> None:
    full = [a for a, b in buckets.items() if b.tokens + (now - b.updated) * rate >= burst]
    for a in full:
        del buckets[a]
    if len(buckets) >= AUTH_FAILURE_ADDRESSES:  # a flood of addresses: keep the most recent
        for a, _ in sorted(buckets.items(), key=lambda kv: kv[1].updated)[
                : len(buckets) - AUTH_FAILURE_ADDRESSES // 2]:
            del buckets[a]


def rate_limit(state: State, p: Principal) -> None:
    """Take one request from ``p``'s token bucket, else ApiError 429 (contract §3)."""
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


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only answers this machine (contract §6: demo tokens)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def refuse_demo_tokens(config: Config) -> None:
    """ConfigError naming the first ``demo: true`` token (the server binds beyond loopback)."""
    demo = [i for i, t in enumerate(config["auth"]["tokens"])
            if isinstance(t, dict) and t.get("demo")]
    if demo:
        more = f" (and {len(demo) - 1} more)" if len(demo) > 1 else ""
        raise ConfigError(
            f"auth.tokens[{demo[0]}].demo",
            f"demo tokens{more} are refused when the server listens on {config.host}, beyond "
            "loopback: remove them from auth.tokens, or serve on 127.0.0.1")


def tile_source(url: str) -> str | None:
    """The CSP source that admits a tile URL template, or None when 'self' covers it.

    ``https://webrd0{s}.is.autonavi.com/...`` → ``https://*.is.autonavi.com``: a placeholder
    anywhere in the host widens it to a wildcard left of the last label holding one.
    """
    parts = urlsplit(url)
    if not parts.scheme and not parts.netloc:
        return None  # same origin
    labels = parts.netloc.rsplit("@", 1)[-1].split(".")
    templated = [i for i, label in enumerate(labels) if "{" in label]
    if templated:
        labels = ["*", *labels[templated[-1] + 1:]]
    host = ".".join(labels)
    if "{" in host or "}" in host or " " in host or ";" in host or "," in host:
        raise ConfigError("ui.tiles.url", f"cannot admit the tile host {parts.netloc!r}")
    return f"{parts.scheme or 'https'}://{host}"


def security_headers(config: Config) -> tuple[dict[str, str], dict[str, str]]:
    """(headers of every response, headers added to HTML pages): contract §3, issue 11 #8.

    Pages: scripts, styles, fonts and connections only from this origin (a same-origin
    ``ws:``/``wss:`` is 'self' in CSP Level 3); images also as ``data:`` (Leaflet's and
    ECharts' icons) and from the configured tile server; no framing, plugins or <base>.
    Every other response gets ``default-src 'none'``: JSON and files never run anything.
    """
    tiles = config["ui"].get("tiles")
    img = ["'self'", "data:"]
    src = tile_source(str(tiles["url"])) if tiles else None
    if src:
        img.append(src)
    page = "; ".join([
        "default-src 'self'", "script-src 'self'", "style-src 'self'",
        f"img-src {' '.join(img)}", "font-src 'self'", "connect-src 'self'",
        "worker-src 'none'", "object-src 'none'", "frame-src 'none'",
        "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'",
    ])
    common = {
        "Server": "dispatch",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        # The pages carry ?token= in their URL: no path or query ever leaves this origin.
        # The origin alone is still sent to the tile server (keys bound to a site need it).
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; "
                                   "base-uri 'none'",
    }
    return common, {"Content-Security-Policy": page}


def build_app(config: Config, clock: Clock | None = None) -> web.Application:
    """The whole server as one aiohttp application (not yet started)."""
    from dispatch.server import api, health, openapi, ws

    refuse_demo = not is_loopback(config.host)
    if refuse_demo:
        refuse_demo_tokens(config)  # before anything is opened
    common_headers, page_headers = security_headers(config)
    clock = clock or SystemClock()
    runtime = Runtime(config, clock=clock)
    state_ref: dict[str, State] = {}

    def render(ev: dict[str, Any]) -> dict[str, Any]:
        return state_ref["s"].render(ev)

    hub = Hub(render_event=render, now_iso=lambda: iso(clock.now(), config.tz) or "",
              iso=lambda t: iso(t, config.tz))
    state = State(config=config, runtime=runtime, hub=hub,
                  tokens=TokenBook(config, refuse_demo=refuse_demo), clock=clock)
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

    async def on_response_prepare(request: web.Request, resp: web.StreamResponse) -> None:
        resp.headers.update(common_headers)
        if resp.content_type == "text/html":
            resp.headers.update(page_headers)

    app.on_response_prepare.append(on_response_prepare)
    api.add_routes(app)
    health.add_routes(app)
    ws.add_routes(app)
    openapi.add_routes(app)
    _add_pages(app)

    tasks: list[asyncio.Task[None]] = []

    async def on_startup(app: web.Application) -> None:
        await runtime.start()
        tasks.append(asyncio.create_task(
            hub.run_position_flush(float(config["ws"]["position_flush_s"])), name="positions"))
        tasks.append(asyncio.create_task(
            hub.run_revocation(state.tokens.active, REVOCATION_CHECK_S), name="revocation"))

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
