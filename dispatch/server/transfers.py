"""Transfer to another department (contract §8, 移送): its REST doors.

``POST /api/v1/events/{id}/transfer {"department", "note"}`` (an operator in scope),
``POST /api/v1/events/{id}/accept {"note"?}`` and ``POST /api/v1/events/{id}/return
{"note"}`` (the department's token), and ``GET /api/v1/departments`` (the configured
departments, for the operators' choice). Handlers parse, call ``commands.act`` (the same
command the WebSocket's ``transfer``/``accept``/``return`` messages call) and render; who may
do what is ``scope.py``'s. These routes are added before ``api``'s generic
``/events/{id}/{action}``, which would otherwise take them with the other actions' body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dispatch.core.lifecycle import TRANSFER_ACTIONS
from dispatch.server.api import V1, read_json
from dispatch.server.commands import check_reader
from dispatch.server.state import STATE, json_response, principal_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _action_handler(action: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        state, p = request.app[STATE], principal_of(request)
        event_id = request.match_info["id"]
        state.commands.actable_event(p, event_id)  # 403/404 before the body is read
        data = await read_json(request, state, optional=True)
        ev = await state.commands.act(p, event_id, action, data)
        return json_response(state.render(ev))

    handler.__name__ = f"{action}_handler"
    return handler


async def departments(request: web.Request) -> web.Response:
    """The configured departments (id and name; never their webhooks)."""
    state, p = request.app[STATE], principal_of(request)
    check_reader(p)
    return json_response({"departments": [{"id": d["id"], "name": d["name"]}
                                          for d in state.config.departments]})


ROUTES: list[tuple[str, str, Any]] = [
    *(("POST", f"{V1}/events/{{id}}/{action}", _action_handler(action))
      for action in TRANSFER_ACTIONS),
    ("GET", f"{V1}/departments", departments),
]


def add_routes(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
