"""Evidence benchmark (issue 13): upload throughput for 5 MB files, what uploads do to push
latency meanwhile, and the dossier build time for an event with 20 files.

    python -m bench.bench_evidence [--quick]

Set-up: ``dispatch serve`` in its own process (SQLite journal, FULL sync, evidence on the
same disk), this process as the load generator. City operators' WebSockets are connected and
events flow open-loop at a steady rate; one more city operator's socket is the probe: push
latency is POST sent → ``event.created`` received on it (matched by ``external_id``). Phase 1
measures that alone; phase 2 the same while uploaders each send 5 MB files back to back
(raw bytes, ``POST /events/{id}/evidence``): MB/s and files/s, and push p50/p99 beside
phase 1's. Then one event gets 20 files and ``GET /events/{id}/dossier`` is timed (the ZIP
re-hashes every file and the journal's chain up to the event).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import websockets
import yaml

from bench.bench_server import free_port, start_server, stop_server, wait_up
from bench.report import (
    Headline,
    Section,
    Step,
    load_note,
    machine,
    md_table,
    module_main,
    no_step,
    percentile,
)
from geo import DEMO_DIR

OPERATOR, INTAKE = "bench-city-operator", "bench-intake-token"
POINT = (121.42, 28.66)  # inside the demo city (椒江区)
MB = 1024 * 1024


def config(tmp: Path) -> Path:
    cfg = {
        "store": str(tmp / "journal.db"),
        "geo": {"regions": str(DEMO_DIR / "regions.geojson"),
                "zones": str(DEMO_DIR / "zones.geojson"),
                "teams": str(DEMO_DIR / "teams.yaml")},
        "timers": {"respond_s": 86400, "depart_s": 86400, "arrive_s": 86400},
        "auth": {"tokens": [{"token": OPERATOR, "role": "operator", "region": "331000"},
                            {"token": INTAKE, "role": "intake"}],
                 "token_file": str(tmp / "tokens.yaml")},
        "limits": {"rate_per_s": 100000, "rate_burst": 100000},
        "ws": {"queue_size": 100000},
        "evidence": {"store": str(tmp / "evidence")},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def photo(n: int, size: int) -> bytes:
    """``size`` bytes that start like a JPEG, different for each ``n``."""
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + n.to_bytes(8, "big")
    return head + os.urandom(size - len(head))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Probe:
    """The probe socket: when each ``event.created`` arrived, by external_id."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    async def run(self, ws_url: str, ready: asyncio.Event) -> None:
        async with websockets.connect(f"{ws_url}?token={OPERATOR}", max_size=None) as ws:
            ready.set()
            async for raw in ws:
                t = time.perf_counter()
                msg = orjson.loads(raw)
                if msg.get("type") == "event.created":
                    ext = (msg.get("event") or {}).get("external_id")
                    if ext:
                        self.seen.setdefault(ext, t)


async def listener(ws_url: str, counts: list[int]) -> None:
    async with websockets.connect(f"{ws_url}?token={OPERATOR}", max_size=None) as ws:
        async for _ in ws:
            counts[0] += 1


async def flow(s: aiohttp.ClientSession, url: str, rate: float, seconds: float, tag: str,
               sent: dict[str, float]) -> None:
    """Open-loop intakes at ``rate``/s for ``seconds``."""
    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        ext = f"{tag}-{i}"
        body = {"location": {"lon": POINT[0], "lat": POINT[1]}, "category": "street_vending",
                "description": "bench", "source": "bench", "external_id": ext}
        sent[ext] = time.perf_counter()
        tasks.append(asyncio.create_task(s.post(url + "/api/v1/events", json=body,
                                                headers=auth(INTAKE))))
    for r in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(r, aiohttp.ClientResponse):
            r.release()


async def uploader(s: aiohttp.ClientSession, url: str, event_id: str, size: int,
                   stop: asyncio.Event, out: list[tuple[int, float]], seed: int) -> None:
    n = 0
    while not stop.is_set():
        data = photo(seed * 100000 + n, size)
        n += 1
        t = time.perf_counter()
        async with s.post(f"{url}/api/v1/events/{event_id}/evidence?name=p{n}.jpg", data=data,
                          headers={**auth(OPERATOR), "Content-Type": "image/jpeg"}) as r:
            await r.read()
            if r.status == 201:
                out.append((len(data), time.perf_counter() - t))


def latencies(sent: dict[str, float], seen: dict[str, float]) -> list[float]:
    return [(seen[k] - t) * 1000 for k, t in sent.items() if k in seen]


async def collect(quick: bool, step: Step = no_step) -> dict[str, Any]:
    sockets = 50 if quick else 500
    rate = 20.0 if quick else 50.0
    seconds = 6.0 if quick else 20.0
    uploaders = 2
    file_size = 5 * MB
    dossier_size = 1 * MB if quick else 5 * MB
    out: dict[str, Any] = {"sockets": sockets, "rate": rate, "seconds": seconds,
                           "uploaders": uploaders, "file_mb": file_size / MB,
                           "dossier_file_mb": dossier_size / MB}
    with tempfile.TemporaryDirectory(prefix="bench-evidence-") as d:
        tmp = Path(d)
        port = free_port()
        proc = start_server("dispatch", port, config(tmp))
        url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
        try:
            await wait_up(url)
            counts = [0]
            lis = [asyncio.create_task(listener(ws_url, counts)) for _ in range(sockets)]
            probe, ready = Probe(), asyncio.Event()
            ptask = asyncio.create_task(probe.run(ws_url, ready))
            await ready.wait()
            await asyncio.sleep(1.0)
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as s:
                await flow(s, url, rate, 2.0, "warm-up", {})  # not measured
                await asyncio.sleep(0.5)
                step("evidence: push alone")
                sent_a: dict[str, float] = {}
                await flow(s, url, rate, seconds, "a", sent_a)
                await asyncio.sleep(1.0)
                lat_a = latencies(sent_a, probe.seen)
                step("evidence: push with 5 MB uploads")
                async with s.post(url + "/api/v1/events", headers=auth(OPERATOR), json={
                        "location": {"lon": POINT[0], "lat": POINT[1]},
                        "category": "street_vending", "description": "uploads"}) as r:
                    target = (await r.json())["id"]
                stop, done = asyncio.Event(), []
                ups = [asyncio.create_task(uploader(s, url, target, file_size, stop, done, i))
                       for i in range(uploaders)]
                sent_b: dict[str, float] = {}
                t0 = time.perf_counter()
                await flow(s, url, rate, seconds, "b", sent_b)
                stop.set()
                await asyncio.gather(*ups)
                took = time.perf_counter() - t0
                await asyncio.sleep(1.0)
                lat_b = latencies(sent_b, probe.seen)
                out["push_alone"] = {"n": len(lat_a), "sent": len(sent_a),
                                     "p50": percentile(lat_a, 50), "p99": percentile(lat_a, 99)}
                out["push_uploads"] = {"n": len(lat_b), "sent": len(sent_b),
                                       "p50": percentile(lat_b, 50),
                                       "p99": percentile(lat_b, 99)}
                total = sum(b for b, _ in done)
                out["upload"] = {"files": len(done), "mb_s": total / MB / took,
                                 "files_s": len(done) / took,
                                 "p50_ms": percentile([t * 1000 for _, t in done], 50),
                                 "p99_ms": percentile([t * 1000 for _, t in done], 99)}
                step("evidence: dossier of 20 files")
                async with s.post(url + "/api/v1/events", headers=auth(OPERATOR), json={
                        "location": {"lon": POINT[0], "lat": POINT[1]},
                        "category": "street_vending", "description": "dossier"}) as r:
                    eid = (await r.json())["id"]
                for i in range(20):
                    async with s.post(f"{url}/api/v1/events/{eid}/evidence?name=d{i}.jpg",
                                      data=photo(900000 + i, dossier_size),
                                      headers={**auth(OPERATOR),
                                               "Content-Type": "image/jpeg"}) as r:
                        assert r.status == 201, await r.text()
                times, zsize = [], 0
                for _ in range(3):
                    t = time.perf_counter()
                    async with s.get(f"{url}/api/v1/events/{eid}/dossier",
                                     headers=auth(OPERATOR)) as r:
                        zsize = len(await r.read())
                        assert r.status == 200
                    times.append(time.perf_counter() - t)
                out["dossier"] = {"s": statistics.median(times), "mb": zsize / MB,
                                  "journal": int((await (await s.get(url + "/healthz"))
                                                  .json())["seq"])}
            out["pushed_total"] = counts[0]
            for task in [*lis, ptask]:
                task.cancel()
            await asyncio.gather(*lis, ptask, return_exceptions=True)
        finally:
            stop_server(proc)
    out["note"] = f"{machine()}; {load_note()}"
    return out


def fmt(v: Any, nd: int = 1) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def table(r: dict[str, Any]) -> list[list[str]]:
    a, b, u, d = r["push_alone"], r["push_uploads"], r["upload"], r["dossier"]
    return [
        ["what", "figure"],
        [f"upload throughput, {r['file_mb']:.0f} MB files, {r['uploaders']} uploaders",
         f"{fmt(u['mb_s'])} MB/s, {fmt(u['files_s'], 2)} files/s ({u['files']} files; "
         f"each {fmt(u['p50_ms'], 0)} ms p50, {fmt(u['p99_ms'], 0)} ms p99)"],
        [f"push p50 / p99, {r['rate']:.0f} events/s, {r['sockets'] + 1} sockets, no uploads",
         f"{fmt(a['p50'])} / {fmt(a['p99'])} ms ({a['n']}/{a['sent']} pushed)"],
        ["push p50 / p99, same, during the uploads",
         f"{fmt(b['p50'])} / {fmt(b['p99'])} ms ({b['n']}/{b['sent']} pushed)"],
        [f"dossier build, 20 files of {r['dossier_file_mb']:.0f} MB "
         f"(journal of {d['journal']} records)",
         f"{fmt(d['s'], 2)} s for a {fmt(d['mb'])} MB ZIP (median of 3)"],
    ]


def sections(r: dict[str, Any], quick: bool) -> list[Section]:
    a, b = r["push_alone"], r["push_uploads"]
    ratio = (b["p99"] / a["p99"]) if a["p99"] and b["p99"] else None
    heads = [
        Headline("evidence upload, 5 MB files", f"{fmt(r['upload']['mb_s'])} MB/s"),
        Headline("push p99 during 5 MB uploads", f"{fmt(b['p99'])} ms",
                 baseline=f"no uploads: {fmt(a['p99'])} ms", ratio=ratio),
        Headline("dossier of 20 evidence files", f"{fmt(r['dossier']['s'], 2)} s"),
    ]
    body = "\n".join([
        "`python -m bench.bench_evidence`" + (" (quick)" if quick else "") + f", {r['note']}.",
        "", md_table(table(r)), "",
        "Uploads stream into a temporary file in chunks (hashed as they come), are fsynced and "
        "renamed before the record is journalled; the dossier re-reads and re-hashes every "
        "file and scans the journal up to the event.",
    ])
    return [Section("Evidence (uploads, dossier)", body, heads)]


def run(quick: bool, step: Step = no_step) -> list[Section]:
    """For ``python -m bench``: measure, and the section of docs/performance.md."""
    return sections(asyncio.run(collect(quick, step)), quick)


if __name__ == "__main__":
    module_main(run)
