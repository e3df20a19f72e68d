"""Evidence over HTTP (contract §8): upload, download, and the dossier for legal review.

- ``POST /api/v1/events/{id}/evidence?name=&taken_at=``: the raw bytes, with their
  Content-Type; ``commands.attach`` checks who may (``scope.evidence_attachable``), streams the
  file into the ``EvidenceStore`` (durable first) and journals it → 201 with the entry (200
  with the same entry when that file is already on the event: a retry).
- ``GET /api/v1/evidence/{sha256}``: the bytes, to whoever reads an event that carries them
  (``scope.evidence_readable``); others 404 as for an unknown hash. ETag = the hash.
- ``GET /api/v1/events/{id}/dossier``: the event's ZIP (``dispatch.dossier``).

``setup`` is called by ``app.build_app`` before the generic ``/events/{id}/{action}`` route is
added, so that ``evidence`` reaches this module; it refuses to build an app whose
``evidence.store`` cannot be written (on Redis: a folder every instance shares).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from dispatch.config import ConfigError
from dispatch.core.event import Event
from dispatch.core.records import Record
from dispatch.dossier import write_dossier
from dispatch.evidence import CHUNK, SHA256, EvidenceStore
from dispatch.runtime import Runtime
from dispatch.server import scope
from dispatch.server.commands import check_reader, forbid
from dispatch.server.render import evidence_json
from dispatch.server.state import STATE, State, json_response, principal_of
from dispatch.server.validation import ApiError

V1 = "/api/v1"
JOURNAL_PAGE = 5000


class Evidence:
    """The evidence store and which events carry each file (SHA-256 → event ids), kept from
    the committed view and the records published after it."""

    def __init__(self, store: EvidenceStore, runtime: Runtime) -> None:
        self.store = store
        self.runtime = runtime
        self.carriers: dict[str, set[str]] | None = None  # built on first use
        runtime.subscribe(self.on_records)

    def on_records(self, records: list[Record]) -> None:
        if self.carriers is None:
            return  # the view has them when the index is built
        for r in records:
            for item in ((r.added or {}).get("evidence") or {}).get("items") or ():
                self.carriers.setdefault(str(item.get("sha256")), set()).add(r.event_id)

    def events_with(self, sha256: str) -> list[Event]:
        """The committed events whose evidence list holds the file."""
        view = self.runtime.view
        if self.carriers is None:
            self.carriers = {}
            for ev in view.events():
                for e in ev.get("evidence") or ():
                    self.carriers.setdefault(str(e.get("sha256")), set()).add(ev["id"])
        return [view.get(eid) for eid in sorted(self.carriers.get(sha256, ()))]


EVIDENCE: web.AppKey[Evidence] = web.AppKey("evidence", Evidence)


def setup(app: web.Application, state: State) -> None:
    """Open the evidence store (``ConfigError`` naming ``evidence.store`` when it cannot be
    written) and add the routes; call before ``api.add_routes``."""
    cfg = state.config["evidence"]
    store = EvidenceStore(cfg["store"], int(cfg["max_bytes"]))
    try:
        store.check_writable()
    except OSError as exc:
        raise ConfigError("evidence.store", f"cannot write evidence files to {cfg['store']} "
                          f"({exc.strerror or exc}); it must be a writable folder, on Redis "
                          "one that every instance shares") from None
    app[EVIDENCE] = Evidence(store, state.runtime)
    app.router.add_post(f"{V1}/events/{{id}}/evidence", upload)
    app.router.add_get(f"{V1}/events/{{id}}/dossier", dossier)
    app.router.add_get(f"{V1}/evidence/{{sha256}}", download)


# -- handlers -------------------------------------------------------------------------------
async def upload(request: web.Request) -> web.Response:
    state, p = request.app[STATE], principal_of(request)
    ev = request.app[EVIDENCE]
    content_type = request.content_type if "Content-Type" in request.headers else ""
    entry, created = await state.commands.attach(
        p, request.match_info["id"], ev.store, content_type, request.query,
        request.content_length, request.content.iter_chunked(CHUNK))
    return json_response(evidence_json(entry, state.tz), status=201 if created else 200)


def _disposition(name: str, kind: str = "attachment") -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


async def download(request: web.Request) -> web.StreamResponse:
    p = principal_of(request)
    check_reader(p)
    sha = request.match_info["sha256"]
    carriers = request.app[EVIDENCE].events_with(sha) if SHA256.fullmatch(sha) else []
    readable = [ev for ev in carriers if scope.evidence_readable(p, [ev])]
    if not readable:
        raise ApiError(404, "not_found", f"no evidence {sha[:80]!r}")
    entry = next(e for e in readable[0]["evidence"] if e.get("sha256") == sha)
    store = request.app[EVIDENCE].store
    etag = f'"{sha}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable",
               "Content-Disposition": _disposition(str(entry.get("name") or sha)),
               "X-Content-Type-Options": "nosniff"}
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    try:
        f = await asyncio.to_thread(open, store.path(sha), "rb")
    except OSError:
        raise ApiError(404, "not_found", "the file is missing from the evidence store "
                       "(run dispatch audit verify)") from None
    try:
        size = os.fstat(f.fileno()).st_size
        resp = web.StreamResponse(headers=headers)
        resp.content_type = str(entry.get("type") or "application/octet-stream")
        resp.content_length = size
        await resp.prepare(request)
        while chunk := await asyncio.to_thread(f.read, CHUNK * 4):
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        f.close()


async def _journal_upto(runtime: Runtime, upto: int) -> list[Record]:
    out: list[Record] = []
    after = 0
    while after < upto:
        page = await runtime.store.read(after, JOURNAL_PAGE)
        if not page:
            break
        out.extend(page)
        after = page[-1].seq
    return out


async def dossier(request: web.Request) -> web.StreamResponse:
    state, p = request.app[STATE], principal_of(request)
    if not scope.may_build_dossier(p):
        raise forbid(f"a {p.role} token may not download dossiers")
    ev = state.commands.readable_event(p, request.match_info["id"])
    journal = await _journal_upto(state.runtime, int(ev.get("seq") or 0))
    store = request.app[EVIDENCE].store
    tmpdir = store.root / "tmp"
    fd, name = tempfile.mkstemp(dir=tmpdir, prefix="dossier-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        await asyncio.to_thread(write_dossier, path, state.render(ev), ev, journal, store,
                                state.render.now_iso())
        return await _send_file(request, path, "application/zip",
                                _disposition(f"dossier-{ev['id']}.zip"))
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


async def _send_file(request: web.Request, path: Path, content_type: str,
                     disposition: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Disposition": disposition,
                                       "Cache-Control": "no-store"})
    resp.content_type = content_type
    resp.content_length = path.stat().st_size
    await resp.prepare(request)
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK * 4):
            await resp.write(chunk)
    await resp.write_eof()
    return resp


__all__ = ["EVIDENCE", "Evidence", "setup"]
