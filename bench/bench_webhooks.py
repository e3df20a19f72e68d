"""Webhook benchmark (issue 13): deliveries per second and delivery delay (contract v2 §8).

    .venv/bin/python -m bench.bench_webhooks [--quick] [--no-write]

One ``dispatch serve`` process (embedded SQLite journal, ``synchronous=FULL``, the default)
with one webhook covering every change, and a receiver (aiohttp, loopback) in this process,
which is also the load generator. Figures:

- **deliveries/s**: a backlog of N change messages (the receiver answered 503 while the
  events came in), then the receiver answers 204: N divided by the time from the first 2xx to
  the last. Each message is one signed POST on a kept-alive connection, in seq order (the
  next is sent only after the previous one's 2xx), and the cursor is saved once per batch
  of 100.
- **delivery delay at 100 events/s**: intakes posted at a steady 100/s (open loop) with the
  receiver up; per message, the time from the change (its ``at``, the intake's arrival at
  the server) to the receiver's reading of it: p50, p99, max.

All processes share the machine's cores, so these are floors.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web

from bench.bench_server import wait_up
from bench.report import (
    Headline,
    Section,
    Step,
    machine,
    md_table,
    module_main,
    no_step,
    percentile,
)
from geo import DEMO_DIR

ROOT = Path(__file__).resolve().parents[1]
INTAKE = "t-bench-intake"
HY = (121.2611, 28.6408)  # a plain township point in 黄岩区 of the demo data
SECRET = "bench-secret"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """Counts what arrives and when; answers 503 while ``down``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.down = False
        self.arrivals: list[tuple[float, int, float]] = []  # (wall time, seq, message at)
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.down:
            return web.Response(status=503)
        msg = orjson.loads(body)
        at = dt.datetime.fromisoformat(msg["at"]).timestamp()
        self.arrivals.append((time.time(), int(request.headers["X-Dispatch-Seq"]), at))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def write_config(tmp: Path, hook_url: str) -> Path:
    cfg = {
        "store": str(tmp / "journal.db"),
        "geo": {"regions": str(DEMO_DIR / "regions.geojson"),
                "zones": str(DEMO_DIR / "zones.geojson"), "teams": str(DEMO_DIR / "teams.yaml")},
        "auth": {"tokens": [{"token": INTAKE, "role": "intake"}],
                 "token_file": str(tmp / "tokens.yaml")},
        "limits": {"rate_per_s": 1_000_000, "rate_burst": 1_000_000},
        "webhooks": [{"id": "bench", "url": hook_url, "secret": SECRET}],
        # within the contract (from at most 1 s, to at most 60 s); short so the backlog
        # phase does not wait out a long backoff
        "webhooks_options": {"retry_initial_s": 0.05, "retry_max_s": 0.1},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


async def post_events(url: str, n: int, tag: str, rate: float | None,
                      concurrency: int = 32) -> int:
    """``n`` intakes: open loop at ``rate`` per second, or as fast as ``concurrency`` allows."""
    ok = 0
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {INTAKE}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        async def one(i: int) -> None:
            nonlocal ok
            body = orjson.dumps({"location": {"lon": HY[0], "lat": HY[1]},
                                 "category": "noise", "source": "bench",
                                 "external_id": f"{tag}-{i}"})
            async with sem, s.post(url + "/api/v1/events", data=body, headers=headers) as r:
                ok += r.status == 201
        tasks = []
        start = time.perf_counter()
        for i in range(n):
            if rate is not None:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return ok


async def wait_count(rx: Receiver, n: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while len(rx.arrivals) < n:
        if time.monotonic() > end:
            raise RuntimeError(f"only {len(rx.arrivals)} of {n} deliveries arrived")
        await asyncio.sleep(0.01)


async def collect(quick: bool, step: Step) -> dict[str, Any]:
    backlog = 500 if quick else 3000
    steady_s = 5 if quick else 30
    out: dict[str, Any] = {"backlog": backlog, "steady_s": steady_s}
    rx = Receiver()
    await rx.start()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatch", "serve", "--config",
             str(write_config(tmp, f"http://127.0.0.1:{rx.port}/hook")), "--port", str(port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            await wait_up(url, proc=proc)
            step(f"webhooks: a backlog of {backlog} messages")
            rx.down = True
            assert await post_events(url, backlog, "backlog", None) == backlog
            rx.down = False
            await wait_count(rx, backlog, 300)
            times = [t for t, _, _ in rx.arrivals]
            out["drain_s"] = times[-1] - times[0]
            out["in_order"] = [s for _, s, _ in rx.arrivals] == sorted(
                s for _, s, _ in rx.arrivals)
            rx.arrivals.clear()
            step(f"webhooks: 100 events/s for {steady_s} s")
            n = 100 * steady_s
            assert await post_events(url, n, "steady", 100.0) == n
            await wait_count(rx, n, 60)
            out["delays_ms"] = [(t - at) * 1000 for t, _, at in rx.arrivals]
            out["steady_in_order"] = [s for _, s, _ in rx.arrivals] == sorted(
                s for _, s, _ in rx.arrivals)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            await rx.stop()
    out["load"] = os.getloadavg()
    return out


def render(r: dict[str, Any], quick: bool) -> str:
    per_s = r["backlog"] / max(r["drain_s"], 1e-9)
    d = r["delays_ms"]
    rows = [["what", "figure"],
            ["deliveries/s (a backlog of "
             f"{r['backlog']:,}, one signed POST each, in seq order)", f"{per_s:,.0f}"],
            [f"delivery delay at 100 events/s for {r['steady_s']} s: p50",
             f"{percentile(d, 50):.1f} ms"],
            ["delivery delay at 100 events/s: p99", f"{percentile(d, 99):.1f} ms"],
            ["delivery delay at 100 events/s: max", f"{max(d):.1f} ms"],
            ["every message in seq order", "yes" if r["in_order"] and r["steady_in_order"]
             else "**no**"]]
    load = ", ".join(f"{v:.1f}" for v in r["load"])
    return "\n".join([
        f"Measured {machine()}{' (--quick)' if quick else ''} with "
        "`python -m bench.bench_webhooks`: one `dispatch serve` (SQLite journal, "
        "`synchronous=FULL`), one webhook covering every change, the receiver and the load "
        f"generator in one process on the same cores (load average {load} at the end). The "
        "delay runs from the change's `at` (the intake's arrival) to the receiver reading "
        "the message, so it includes the intake's commit.", "",
        md_table(rows)])


def headlines(r: dict[str, Any]) -> list[Headline]:
    d = r["delays_ms"]
    return [Headline("webhook deliveries/s", f"{r['backlog'] / max(r['drain_s'], 1e-9):,.0f}"),
            Headline("webhook delay p99 at 100 events/s", f"{percentile(d, 99):.1f} ms")]


def run(quick: bool, step: Step = no_step) -> Section:
    """For ``python -m bench``: measure, and the section of docs/performance.md."""
    r = asyncio.run(collect(quick, step))
    return Section("Webhooks", render(r, quick), headlines(r))


if __name__ == "__main__":
    module_main(run)
