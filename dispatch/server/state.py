"""What the handlers share: ``State`` under ``app[STATE]``, the caller under ``request[PRINCIPAL]``,
JSON answers and the bound event renderer. Imports no handler module (no import cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from dispatch.clock import Clock
from dispatch.config import Config
from dispatch.server import validation
from dispatch.server.render import Renderer, iso
from dispatch.server.scope import Areas, Principal
from dispatch.server.validation import ApiError

if TYPE_CHECKING:  # types only: the modules below import nothing from here
    from dispatch.runtime import Runtime
    from dispatch.server.auth import TokenBook
    from dispatch.server.commands import Commands
    from dispatch.server.hub import Hub
    from dispatch.server.metrics import Metrics


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def error_response(http_status: int, code: str, message: str, field: str | None = None,
                   **extra: Any) -> web.Response:
    return json_response({"error": {"code": code, "message": message, "field": field, **extra}},
                         status=http_status)


class Rendering:
    """Events and times as clients see them, at the clock's ``now``: the one renderer that
    REST answers, snapshots, replays and the hub's pushes share (given to the hub)."""

    def __init__(self, renderer: Renderer, clock: Clock, tz: tzinfo) -> None:
        self._renderer = renderer
        self._clock = clock
        self.tz = tz

    def event(self, ev: Mapping[str, Any]) -> dict[str, Any]:
        return self._renderer(ev, self._clock.now())

    def __call__(self, ev: Mapping[str, Any]) -> dict[str, Any]:
        return self.event(ev)

    def iso(self, t: float | None) -> str | None:
        return iso(t, self.tz)

    def now_iso(self) -> str:
        return iso(self._clock.now(), self.tz) or ""


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
    render: Rendering
    areas: Areas
    commands: Commands
    metrics: Metrics | None = None
    buckets: dict[str, RateBucket] = field(default_factory=dict)
    auth_failures: dict[str, RateBucket] = field(default_factory=dict)
    auth_refused: dict[str, int] = field(default_factory=lambda: {"unauthorized": 0,
                                                                  "rate_limited": 0})

    @property
    def tz(self) -> Any:
        return self.config.tz

    def iso(self, t: float | None) -> str | None:
        return iso(t, self.tz)


STATE: web.AppKey[State] = web.AppKey("state", State)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


V1 = "/api/v1"  # the REST API's prefix


async def read_json(request: web.Request, state: State, optional: bool = False) -> Any:
    """The request body as JSON, or a 4xx naming what is wrong with it."""
    if optional and not request.body_exists:
        return None
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json",
                       "Content-Type")
    limit = int(state.config["limits"]["max_body_bytes"])
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"body is larger than {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"body is larger than {limit} bytes") from None
    if optional and not body.strip():
        return None
    return validation.parse_json(body, int(state.config["limits"]["max_json_depth"]))
