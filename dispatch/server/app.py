"""The aiohttp application: REST, WebSocket and pages on one port (contract §3, §4, §7).

How it works: ``build_app(config)`` wires a ``Runtime`` (core + store + geo + deadline
loop), the scope areas, the ``Commands``, the ``Hub`` (given the shared ``Rendering``) and
the route modules (``api``, ``ws``, ``health``, ``openapi``, ``open311``); this is the only
module that imports them, and none of them imports it. The middlewares are ``middleware.py``'s, the
shared ``State`` is ``state.py``'s. Start-up rebuilds state from the journal before the port
answers; shutdown closes WebSockets with 1001 and flushes the journal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from dispatch.clock import Clock, SystemClock
from dispatch.config import Config, ConfigError
from dispatch.runtime import Runtime
from dispatch.server import api, evidence_api, health, open311, openapi, webhooks_api, ws
from dispatch.server.auth import TokenBook
from dispatch.server.commands import Commands
from dispatch.server.hub import Hub
from dispatch.server.metrics import Metrics
from dispatch.server.middleware import auth_middleware, error_middleware, metrics_middleware
from dispatch.server.render import Renderer
from dispatch.server.scope import Areas
from dispatch.server.state import STATE, Rendering, State
from dispatch.server.webhooks import WebhookCollector, Webhooks
from dispatch.store.base import Store

__all__ = ["STATE", "State", "build_app", "security_headers", "is_loopback"]

log = logging.getLogger("dispatch.server")

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
REVOCATION_CHECK_S = 1.0  # open sockets of a removed token close within 5 s (contract §6)


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
    ECharts' icons), as ``blob:`` (evidence thumbnails, fetched with the bearer header) and
    from the configured tile server; no framing, plugins or <base>.
    Every other response gets ``default-src 'none'``: JSON and files never run anything.
    """
    tiles = config["ui"].get("tiles")
    img = ["'self'", "data:", "blob:"]  # blob:: evidence thumbnails fetched with the token
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


def build_app(config: Config, clock: Clock | None = None, store: Store | None = None
              ) -> web.Application:
    """The whole server as one aiohttp application (not yet started); ``store``: another
    journal than the one the config names (tests give one that fails on demand)."""
    refuse_demo = not is_loopback(config.host)
    if refuse_demo:
        refuse_demo_tokens(config)  # before anything is opened
    common_headers, page_headers = security_headers(config)
    clock = clock or SystemClock()
    runtime = Runtime(config, clock=clock, store=store)
    rendering = Rendering(Renderer(config.tz, float(config["timers"]["warn_fraction"])),
                          clock, config.tz)
    areas = Areas(runtime.dataset)
    hub = Hub(rendering, areas)
    commands = Commands(runtime, areas, clock, config.tz,
                        float(config["offline"]["max_skew_s"]), hub.publish_unit)
    state = State(config=config, runtime=runtime, hub=hub,
                  tokens=TokenBook(config, refuse_demo=refuse_demo), clock=clock,
                  render=rendering, areas=areas, commands=commands)
    state.metrics = Metrics(runtime, hub, state.auth_refused)
    runtime.subscribe(hub.publish)
    webhooks = Webhooks(config, runtime, rendering, clock)  # contract v2 §8
    state.metrics.registry.register(WebhookCollector(webhooks))

    def push_unit(unit_id: str) -> None:  # a position reported on another instance
        hub.publish_unit(commands.render_unit(unit_id))

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
    evidence_api.setup(app, state)  # before api's /events/{id}/{action} (contract §8)
    api.add_routes(app)
    health.add_routes(app)
    ws.add_routes(app)
    openapi.add_routes(app)
    open311.add_routes(app, state)  # /open311: GeoReport v2, its own error shape
    webhooks_api.add_routes(app, webhooks)
    _add_pages(app)

    tasks: list[asyncio.Task[None]] = []

    async def on_startup(app: web.Application) -> None:
        await runtime.start()
        await webhooks.start()
        tasks.append(asyncio.create_task(
            hub.run_position_flush(float(config["ws"]["position_flush_s"])), name="positions"))
        tasks.append(asyncio.create_task(
            hub.run_revocation(state.tokens.active, REVOCATION_CHECK_S), name="revocation"))

    async def on_shutdown(app: web.Application) -> None:
        for t in tasks:
            t.cancel()
        await hub.close_all()

    async def on_cleanup(app: web.Application) -> None:
        await webhooks.stop()
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
    for name in ("ops", "field", "supervisor", "department"):
        app.router.add_get(f"/{name}", page)
    if STATIC_DIR.exists():
        app.router.add_static("/static/", STATIC_DIR, append_version=False)
