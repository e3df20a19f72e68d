"""The bare baseline: aiohttp parsing the same JSON and broadcasting it, nothing else.

No routing, no journal, no timers, no auth: a POST body is parsed, a message is built and
serialised once and written to every socket whose region is in the body's ``_scope`` (the
same recipients the real server's scope rules pick), then 201 is answered. The benchmark runs
it beside the real server so the report can say how close the product is to the framework.
"""

from __future__ import annotations

import argparse
import json

import orjson
from aiohttp import WSMsgType, web

SOCKETS: web.AppKey[dict[str, set[web.WebSocketResponse]]] = web.AppKey("sockets", dict)


async def post_event(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    seq = request.app["seq"] = request.app["seq"] + 1
    event = {"id": f"E{seq:07d}", **{k: v for k, v in body.items() if k != "_scope"}}
    data = orjson.dumps({"type": "event.created", "seq": seq, "event": event})
    by_region = request.app[SOCKETS]
    seen: set[web.WebSocketResponse] = set()
    for rid in body.get("_scope", ()):
        for ws in by_region.get(rid, ()):
            if ws not in seen:
                seen.add(ws)
                if not ws.closed:
                    await ws.send_frame(data, WSMsgType.TEXT)
    return web.json_response(event, status=201)


async def put_position(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    return web.json_response({"id": request.match_info["id"], **body})


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    region = request.query.get("region", "*")
    request.app[SOCKETS].setdefault(region, set()).add(ws)
    await ws.send_frame(orjson.dumps({"type": "snapshot", "seq": request.app["seq"]}),
                        WSMsgType.TEXT)
    try:
        async for _ in ws:
            pass
    finally:
        request.app[SOCKETS][region].discard(ws)
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build() -> web.Application:
    app = web.Application()
    app[SOCKETS] = {}
    app["seq"] = 0
    app.router.add_post("/api/v1/events", post_event)
    app.router.add_put("/api/v1/units/{id}/position", put_position)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    web.run_app(build(), host="127.0.0.1", port=ap.parse_args().port, access_log=None,
                print=None)
