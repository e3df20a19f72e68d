"""Socket faults (issue 11): 10,000 idle sockets plus 500 that never read, and one token
flooding, while a well-behaved client measures its push latency.

    .venv/bin/python -m bench.bench_sockets [--idle 10000] [--never 500] [--seconds 30]

The server runs in its own process (``dispatch serve --config … --port …``) on loopback; this
process is the load. Idle sockets and never-reading sockets are bare asyncio protocols (a
hand-made handshake, pongs answered, nothing else), so that 10,500 of them cost this process
little. Never-reading sockets use a 4 KiB receive buffer and stop reading after the handshake,
like a phone that went into a tunnel: what the server queues for them is what counts against
their bound (``ws.queue_size`` × 2 KiB; 150 here, so the 300 KiB bound is reached within the
run, before the heartbeat (20 s + 10 s) would close them).

Phase 1: all sockets connected, events created over HTTP (20/s, all in one township whose
operator holds the never-reading sockets and the probe): the probe's POST → ``event.created``
latency, server RSS, sockets dropped as slow. Phase 2: another token floods (HTTP GETs from 32
loops and socket pings from 4 sockets, reconnecting) while the probe's push latency and its own
HTTP GET latency are measured, against a quiet baseline just before. Everything stops itself
within about three minutes. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import websockets
import yaml

from bench.bench_server import free_port, proc_stats, start_server, stop_server, wait_up
from bench.report import machine, md_table, percentile
from geo import DEMO_DIR
from geo.loader import load_dataset
from geo.router import Router

IDLE_TOKENS = 50  # idle sockets spread over this many township operators (≤ 400 per token)
NEVER_TOKENS = 5
EVENT_RATE = 20.0
QUEUE_SIZE = 150  # × 2 KiB: a 300 KB bound, reached by a never-reading socket within the run
DEADLINE_S = 175.0


# -- bare WebSocket clients -----------------------------------------------------------------

class BareSocket(asyncio.Protocol):
    """A client that completes the handshake, answers pings, and reads (or never reads)."""

    def __init__(self, host: str, port: int, token: str, read: bool) -> None:
        self.request = (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: "
                        f"{base64.b64encode(os.urandom(16)).decode()}\r\n"
                        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
                        ).encode()
        self.read = read
        self.opened: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.open = False
        self.frames = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            status = int(head.split(b" ", 2)[1])
            if status != 101:
                self.opened.set_result(status)
                assert self.transport is not None
                self.transport.close()
                return
            self.open, self.buf = True, rest
            self.opened.set_result(101)
            if not self.read:
                assert self.transport is not None
                self.transport.pause_reading()
                return
        self._frames()

    def _frames(self) -> None:
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, off = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, off = int.from_bytes(self.buf[2:10], "big"), 10
            if len(self.buf) < off + n:
                return
            payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
            self.frames += 1
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                if not self.closed.done():
                    self.closed.set_result(code)
                self._send(0x8, payload[:2])
                assert self.transport is not None
                self.transport.close()
                return

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(0)
        if not self.closed.done():
            self.closed.set_result(None)


async def open_bare(host: str, port: int, token: str, read: bool) -> BareSocket | None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if not read:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 10)
        _, proto = await loop.create_connection(
            lambda: BareSocket(host, port, token, read), sock=sock)
        status = await asyncio.wait_for(proto.opened, 20)
    except (OSError, TimeoutError):
        sock.close()
        return None
    return proto if status == 101 else None


async def open_many(host: str, port: int, tokens: list[str], n: int, read: bool,
                    parallel: int = 64) -> tuple[list[BareSocket], float]:
    sem = asyncio.Semaphore(parallel)
    t0 = time.perf_counter()

    async def one(i: int) -> BareSocket | None:
        async with sem:
            return await open_bare(host, port, tokens[i % len(tokens)], read)

    out = await asyncio.gather(*(one(i) for i in range(n)))
    return [s for s in out if s is not None], time.perf_counter() - t0


# -- the probe and the load ----------------------------------------------------------------

@dataclass
class Probe:
    """The well-behaved client: POST → event.created on its own socket."""

    url: str
    token: str
    sent: dict[str, float] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    pending: dict[str, float] = field(default_factory=dict)

    async def listen(self, stop: asyncio.Event) -> None:
        ws_url = self.url.replace("http://", "ws://") + "/ws"
        async with websockets.connect(ws_url, max_size=None, ping_interval=None,
                                      additional_headers={"Authorization":
                                                          f"Bearer {self.token}"}) as ws:
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.perf_counter()
                msg = orjson.loads(raw)
                if msg.get("type") == "event.created":
                    desc = msg["event"].get("description", "")
                    t0 = self.pending.pop(desc, None)
                    if t0 is not None:
                        self.latency_ms.append((now - t0) * 1000)


async def create_events(session: aiohttp.ClientSession, url: str, probe: Probe,
                        body: dict[str, Any], seconds: float, tag: str) -> int:
    """POST events at EVENT_RATE for ``seconds``; the probe matches them by description."""
    headers = {"Authorization": "Bearer bench-intake-token"}
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        desc = f"{tag}-{n}"
        probe.pending[desc] = time.perf_counter()
        async with session.post(url + "/api/v1/events", json={**body, "description": desc},
                                headers=headers) as r:
            await r.read()
        n += 1
        delay = t0 + n / EVENT_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return n


async def get_latency(session: aiohttp.ClientSession, url: str, token: str, seconds: float,
                      rate: float = 10.0) -> tuple[list[float], Counter[int]]:
    lat: list[float] = []
    codes: Counter[int] = Counter()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        s = time.perf_counter()
        async with session.get(url + "/api/v1/events?status=open&limit=20",
                               headers={"Authorization": f"Bearer {token}"}) as r:
            await r.read()
            codes[r.status] += 1
        lat.append((time.perf_counter() - s) * 1000)
        n += 1
        delay = t0 + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return lat, codes


async def flood(url: str, token: str, stop: asyncio.Event) -> dict[str, Any]:
    """One token as hard as it can: 32 HTTP loops and 4 socket loops of back-to-back pings."""
    http: Counter[int] = Counter()
    sock: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}"}

    async def http_loop(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with session.get(url + "/api/v1/events?limit=5", headers=headers) as r:
                    await r.read()
                    http[r.status] += 1
            except aiohttp.ClientError:
                http[0] += 1

    async def socket_loop() -> None:
        ws_url = url.replace("http://", "ws://") + "/ws"
        while not stop.is_set():
            try:
                async with websockets.connect(ws_url, additional_headers=headers,
                                              max_size=None) as ws:
                    async def read() -> None:
                        async for raw in ws:
                            m = orjson.loads(raw)
                            kind = m.get("type")
                            sock[kind if kind != "error" else m["error"]["code"]] += 1
                    reader = asyncio.create_task(read())
                    try:
                        while not stop.is_set():
                            await ws.send('{"type":"ping"}')
                            sock["sent"] += 1
                            if sock["sent"] % 50 == 0:
                                await asyncio.sleep(0)  # the reader gets its turn
                    finally:
                        reader.cancel()
            except websockets.ConnectionClosed as exc:
                sock[f"closed {exc.rcvd.code if exc.rcvd else 'abruptly'}"] += 1
            except websockets.InvalidStatus as exc:
                sock[f"upgrade {exc.response.status_code}"] += 1
                await asyncio.sleep(0.1)
            except OSError:
                sock["oserror"] += 1
                await asyncio.sleep(0.1)

    conn = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*[http_loop(session) for _ in range(32)],
                             *[socket_loop() for _ in range(4)])
    return {"http": dict(http), "socket": dict(sock)}


# -- the run ---------------------------------------------------------------------------------

def layout(tmp: Path) -> tuple[Path, dict[str, Any]]:
    """Config with the tokens this run uses; the township the probe and events live in."""
    ds = load_dataset(DEMO_DIR / "regions.geojson", DEMO_DIR / "zones.geojson",
                      DEMO_DIR / "teams.yaml")
    router = Router(ds)
    towns = sorted(r for r, x in ds.regions.items() if x.level == "township")
    home = point = None
    for rid in towns:
        p = ds.regions[rid].geometry.representative_point()
        route = router.locate(p.x, p.y)
        if route.zone is None and route.team and ds.teams[route.team].units:
            home, point = rid, (p.x, p.y)
            break
    assert home is not None and point is not None
    county = ds.county_of(home)
    other = next(r for r, x in sorted(ds.regions.items())
                 if x.level == "county" and r != county)
    tokens = [{"token": "bench-intake-token", "role": "intake"},
              {"token": "bench-admin-token", "role": "admin"},
              {"token": "bench-probe-token", "role": "operator", "region": home},
              {"token": "bench-flood-token", "role": "operator", "region": other}]
    idle = [f"bench-idle-{i:03d}" for i in range(IDLE_TOKENS)]
    never = [f"bench-never-{i:03d}" for i in range(NEVER_TOKENS)]
    tokens += [{"token": t, "role": "operator", "region": towns[i % len(towns)]}
               for i, t in enumerate(idle)]
    tokens += [{"token": t, "role": "operator", "region": home} for t in never]
    cfg = {"store": str(tmp / "journal.db"), "store_options": {"synchronous": "NORMAL"},
           "geo": {"regions": str(DEMO_DIR / "regions.geojson"),
                   "zones": str(DEMO_DIR / "zones.geojson"),
                   "teams": str(DEMO_DIR / "teams.yaml")},
           "auth": {"tokens": tokens, "token_file": str(tmp / "tokens.yaml")},
           "ws": {"queue_size": QUEUE_SIZE}}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    body = {"location": {"lon": point[0], "lat": point[1]}, "category": "street_vending",
            "source": "bench"}
    return path, {"idle": idle, "never": never, "body": body, "home": home, "other": other}


def raise_fd_limit(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        soft = min(hard, max(need, soft)) if hard != resource.RLIM_INFINITY else need
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


async def server_numbers(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/healthz") as r:
        health = await r.json()
    async with session.get(url + "/metrics",
                           headers={"Authorization": "Bearer bench-admin-token"}) as r:
        text = await r.text()
    out = {"ws_clients": float(health.get("ws_clients", -1)), "healthz": float(r.status)}
    for line in text.splitlines():
        if line.startswith("dispatch_ws_slow_disconnects"):
            out["slow_disconnects"] = float(line.split()[-1])
    return out


def pct(xs: list[float]) -> tuple[str, str, str]:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"
    return f(percentile(xs, 50)), f(percentile(xs, 99)), f(max(xs) if xs else None)


async def run(args: argparse.Namespace) -> str:
    started = time.monotonic()
    fd = raise_fd_limit(args.idle + args.never + 1000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sockets-"))
    cfg, lay = layout(tmp)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server("dispatch", port, cfg, drain=False)
    log_lines: Counter[str] = Counter()

    def drain_log() -> None:
        assert proc.stderr is not None
        for line in iter(proc.stderr.readline, b""):
            text = line.decode("utf-8", "replace")
            for key in ("ERROR", "Traceback", "WARNING"):
                if key in text:
                    log_lines[key] += 1

    threading.Thread(target=drain_log, daemon=True).start()
    rows: list[list[str]] = []
    try:
        await wait_up(url)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
            # phase 1: 10,000 idle + 500 never-reading sockets, probe latency
            idle, t_idle = await open_many("127.0.0.1", port, lay["idle"], args.idle, True)
            never, t_never = await open_many("127.0.0.1", port, lay["never"], args.never, False)
            rss0 = proc_stats(proc.pid)["rss_mb"]
            before = await server_numbers(session, url)
            probe = Probe(url, "bench-probe-token")
            stop = asyncio.Event()
            listener = asyncio.create_task(probe.listen(stop))
            await asyncio.sleep(1.0)
            n1 = await create_events(session, url, probe, lay["body"], args.seconds, "p1")
            await asyncio.sleep(1.0)
            after = await server_numbers(session, url)
            rss1 = proc_stats(proc.pid)["rss_mb"]
            never_closed = Counter(str(s.closed.result()) if s.closed.done() else "open"
                                   for s in never)
            p50, p99, mx = pct(probe.latency_ms)
            rows.append(["10k idle + 500 never reading", f"{len(idle)} idle ({t_idle:.1f} s "
                         f"to open), {len(never)} never reading ({t_never:.1f} s)",
                         f"{len(probe.latency_ms)}/{n1}", p50, p99, mx])
            phase1 = {"rss_mb": (rss0, rss1), "before": before, "after": after,
                      "never_closed": dict(never_closed)}
            # phase 2: quiet baseline, then one token flooding
            probe.latency_ms.clear()
            base_push = asyncio.create_task(
                create_events(session, url, probe, lay["body"], args.flood_seconds / 2, "p2"))
            base_get, _ = await get_latency(session, url, "bench-probe-token",
                                            args.flood_seconds / 2)
            n2 = await base_push
            b50, b99, bmx = pct(probe.latency_ms)
            g50, g99, gmx = pct(base_get)
            rows.append(["baseline (no flood)", "probe push / probe GET",
                         f"{len(probe.latency_ms)}/{n2}", f"{b50} / {g50}", f"{b99} / {g99}",
                         f"{bmx} / {gmx}"])
            probe.latency_ms.clear()
            stop_flood = asyncio.Event()
            flooder = asyncio.create_task(flood(url, "bench-flood-token", stop_flood))
            await asyncio.sleep(0.5)
            push = asyncio.create_task(
                create_events(session, url, probe, lay["body"], args.flood_seconds, "p3"))
            get_lat, get_codes = await get_latency(session, url, "bench-probe-token",
                                                   args.flood_seconds)
            n3 = await push
            stop_flood.set()
            flood_counts = await asyncio.wait_for(flooder, 30)
            f50, f99, fmx = pct(probe.latency_ms)
            h50, h99, hmx = pct(get_lat)
            rows.append(["one token flooding", "probe push / probe GET",
                         f"{len(probe.latency_ms)}/{n3}", f"{f50} / {h50}", f"{f99} / {h99}",
                         f"{fmx} / {hmx}"])
            stop.set()
            await asyncio.wait_for(listener, 5)
            final = await server_numbers(session, url)
            for s in idle + never:
                if s.transport is not None:
                    s.transport.abort()
    finally:
        stop_server(proc)
    slow = phase1["after"].get("slow_disconnects", 0) - phase1["before"].get(
        "slow_disconnects", 0)
    table = md_table([["scenario", "clients", "markers arrived", "p50 ms", "p99 ms", "max ms"],
                      *rows])
    extra = md_table([
        ["figure", "value"],
        ["server RSS before / after phase 1 (MB)",
         f"{phase1['rss_mb'][0]:.0f} / {phase1['rss_mb'][1]:.0f}"],
        ["ws_clients after connecting / after phase 1 / at the end",
         f"{phase1['before']['ws_clients']:.0f} / {phase1['after']['ws_clients']:.0f} / "
         f"{final['ws_clients']:.0f}"],
        ["sockets closed as slow (1008) in phase 1", f"{slow:.0f}"],
        ["never-reading sockets by close code seen", str(phase1["never_closed"])],
        ["probe GET status codes during the flood", str(dict(get_codes))],
        ["flooder HTTP status codes", str(flood_counts["http"])],
        ["flooder socket outcomes", str(flood_counts["socket"])],
        ["/healthz during the run", f"{final['healthz']:.0f}"],
        ["server log lines: ERROR / Traceback / WARNING",
         f"{log_lines['ERROR']} / {log_lines['Traceback']} / {log_lines['WARNING']}"],
        ["fd limit (this process; the server inherits it)", str(fd)],
        ["wall time (s)", f"{time.monotonic() - started:.0f}"],
    ])
    return (f"Socket faults {machine()}; events at {EVENT_RATE:g}/s in one township, bound "
            f"ws.queue_size={QUEUE_SIZE} ({QUEUE_SIZE * 2048 // 1024} KiB)\n\n{table}\n\n{extra}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--never", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=30.0, help="phase 1 length")
    ap.add_argument("--flood-seconds", type=float, default=20.0, help="flood length")
    args = ap.parse_args()
    out = asyncio.run(asyncio.wait_for(run(args), DEADLINE_S))
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
