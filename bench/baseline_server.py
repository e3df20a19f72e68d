"""The bare baseline: aiohttp parsing the same JSON and broadcasting it, nothing else.

No routing, no journal, no timers, no auth: a POST body is parsed, a message is built and
serialised once and written to every socket whose region is in the body's ``_scope`` (the
same recipients the real server's scope rules pick), then 201 is answered. The benchmark runs
it beside the real server so the report can say how close the product is to the framework.

``--journal FILE`` adds the least a durable intake needs and nothing else: the message is
appended to a SQLite table (WAL, ``synchronous=FULL``) by one writer thread committing
whatever is queued in one transaction, and 201 is answered once it is committed, as the real
server does. No hash chain, no records, no routing: the floor that durability alone sets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import sqlite3
import threading

import orjson
from aiohttp import WSMsgType, web

SOCKETS: web.AppKey[dict[str, set[web.WebSocketResponse]]] = web.AppKey("sockets", dict)


class Journal:
    """One writer thread, group commit: append(bytes) answers once the row is committed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.q: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]]] = queue.SimpleQueue()
        self.loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, daemon=True, name="journal").start()

    def append(self, data: bytes) -> asyncio.Future[None]:
        fut = self.loop.create_future()
        self.q.put((data, fut))
        return fut

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, data BLOB)")
        while True:
            batch = [self.q.get()]
            while len(batch) < 512:
                try:
                    batch.append(self.q.get_nowait())
                except queue.Empty:
                    break
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO journal (data) VALUES (?)", [(d,) for d, _ in batch])
            conn.execute("COMMIT")
            self.loop.call_soon_threadsafe(_settle, [f for _, f in batch])


def _settle(futures: list[asyncio.Future[None]]) -> None:
    for f in futures:
        if not f.done():
            f.set_result(None)


async def post_event(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    seq = request.app["seq"] = request.app["seq"] + 1
    event = {"id": f"E{seq:07d}", **{k: v for k, v in body.items() if k != "_scope"}}
    data = orjson.dumps({"type": "event.created", "seq": seq, "event": event})
    journal = request.app.get("journal")
    if journal is not None:
        await journal.append(data)
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


def build(journal: str | None = None) -> web.Application:
    app = web.Application()
    app[SOCKETS] = {}
    app["seq"] = 0
    if journal is not None:
        async def open_journal(app: web.Application) -> None:
            app["journal"] = Journal(journal)
        app.on_startup.append(open_journal)
    app.router.add_post("/api/v1/events", post_event)
    app.router.add_put("/api/v1/units/{id}/position", put_position)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--journal", help="append each intake to this SQLite file, durably")
    args = ap.parse_args()
    web.run_app(build(args.journal), host="127.0.0.1", port=args.port, access_log=None,
                print=None)
