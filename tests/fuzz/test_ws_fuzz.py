"""WebSocket fuzzer (issue 11, the net): random, truncated, oversized, binary and out-of-order
messages, floods and clients that never read, all at once against one real server.

While it runs, a well-behaved operator keeps receiving: every marker event created over HTTP
in its scope arrives within ``MARKER_DEADLINE_S``, ``/healthz`` keeps answering 200, no error
reply carries the fuzz text, and the server logs nothing at ERROR with a traceback.

Bounded to ~15 s of fuzzing by default; ``FUZZ_LONG=1`` fuzzes for ``FUZZ_LONG_S`` (default
300 s). ``FUZZ_SEED`` replays one run (the seed is printed on failure).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import websockets

from dispatch.config import hash_token
from dispatch.server.auth import issue_token
from tests.server.conftest import Server, intake_body, point_in, start_server

FUZZ_LONG = os.environ.get("FUZZ_LONG", "") not in ("", "0")
FUZZ_S = float(os.environ.get("FUZZ_LONG_S", "300")) if FUZZ_LONG else 15.0
SEED = int(os.environ.get("FUZZ_SEED", "0")) or random.randrange(1, 2**31)
MARK = "Fz~"  # every piece of fuzz text carries it; no error reply may
MARKER_DEADLINE_S = 1.0
MAX_MESSAGE = 16 * 1024  # limits.ws_max_message_bytes of this server
FUZZ_TOKENS = ("city", "jiaojiang", "supervisor", "admin")
KEYS = ("type", "id", "event", "unit", "team", "region", "lon", "lat", "at", "note",
        "accuracy_m", "crs", "since", MARK + "k")
TYPES = ("ping", "subscribe", "position", "respond", "depart", "arrive", "resolve", "cancel",
         "escalate", "reassign", "note", "snapshot", "event.created", "", MARK + "type")


class ErrorLog(logging.Handler):
    """Every record at ERROR or above that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.stack_info:
            self.records.append(record)


@dataclass
class Findings:
    echoes: list[str] = field(default_factory=list)
    health: list[str] = field(default_factory=list)
    markers: list[float] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    sent: int = 0
    replies: int = 0
    closes: dict[int | None, int] = field(default_factory=dict)


def fuzz_text(rng: random.Random, n: int | None = None) -> str:
    n = rng.randrange(0, 40) if n is None else n
    pools = (string.printable, "事件执法台州\u200b\u202e\ufeff", "<>\"'&\\/{}[]",
             "\x00\x01\x1f\x7f")
    return MARK + "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def fuzz_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.25:
        return fuzz_text(rng)
    if roll < 0.35:
        return rng.choice([0, -1, 2**53, -(2**63), 10**rng.randrange(1, 400), 1e308, -0.0,
                           rng.uniform(-1e3, 1e3), True, False, None])
    if roll < 0.45:
        return rng.choice([121.1, 28.6, 0.0, 180.0001, -91.0, rng.uniform(120, 122)])
    if roll < 0.55:
        return rng.choice(["2024-01-01T00:00:00+08:00", "9999-12-31T23:59:59+00:00",
                           "1970-01-01T00:00:00Z", "not a time " + MARK, 1e12, -1e12])
    if roll < 0.75:
        return [fuzz_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(KEYS): fuzz_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def fuzz_id(rng: random.Random) -> Any:
    return rng.choice([rng.randrange(10**6), f"m{rng.randrange(10**6)}", None,
                       MARK * 30, {"x": MARK}, [MARK], 10**30, 1.5])


def fuzz_message(rng: random.Random, event_ids: list[str]) -> str | bytes:
    """One frame's payload: mostly JSON objects of the right shape with wrong insides."""
    roll = rng.random()
    if roll < 0.45:
        msg: dict[str, Any] = {"type": rng.choice(TYPES), "id": fuzz_id(rng)}
        if event_ids and rng.random() < 0.6:
            msg["event"] = rng.choice(event_ids)
        for _ in range(rng.randrange(0, 4)):
            msg[rng.choice(KEYS)] = fuzz_value(rng)
        return json.dumps(msg, ensure_ascii=rng.random() < 0.5)
    if roll < 0.6:
        return json.dumps(fuzz_value(rng))
    if roll < 0.7:  # a valid-looking message cut short
        full = json.dumps({"type": rng.choice(TYPES), "event": MARK + "x", "note": fuzz_text(rng)})
        return full[: rng.randrange(1, len(full))]
    if roll < 0.78:  # nested past max_json_depth
        d = rng.randrange(20, 200)
        return '{"type": "ping", "x": ' + "[" * d + '"' + MARK + '"' + "]" * d + "}"
    if roll < 0.84:  # lone surrogates and escapes
        event = rng.choice(event_ids) if event_ids else "e"
        return f'{{"type": "note", "event": "{event}", "note": "\\ud800{MARK}\\udfff"}}'
    if roll < 0.9:
        return '{"type": "ping", "id": ' + "9" * rng.randrange(16, 6000) + "}"
    if roll < 0.95:
        return fuzz_text(rng, rng.randrange(0, 200))
    return rng.randbytes(rng.randrange(0, 300)) + MARK.encode()


def check_reply(text: str | bytes, found: Findings) -> None:
    found.replies += 1
    if isinstance(text, bytes):
        found.echoes.append("binary reply")
        return
    try:
        msg = json.loads(text)
    except ValueError:
        found.echoes.append("non-JSON reply: " + text[:200])
        return
    # acks and pushes carry stored data (a fuzzed note is data); replies about the message
    # itself must not carry its text, except a short str or int ``id`` (echoed by design)
    if msg.get("type") in ("error", "pong", "subscribed"):
        msg_id = msg.pop("id", None)
        if not (msg_id is None or (isinstance(msg_id, int) and abs(msg_id) < 2**53)
                or (isinstance(msg_id, str) and len(msg_id) <= 64)):
            found.echoes.append(text[:300])
        elif MARK in json.dumps(msg, ensure_ascii=False):
            found.echoes.append(text[:300])


async def fuzz_client(srv: Server, rng: random.Random, until: float, found: Findings,
                      event_ids: list[str], who: str) -> None:
    """Connects, sends fuzz, reads replies; reconnects whenever the server closes it."""
    while time.monotonic() < until:
        try:
            async with websockets.connect(srv.ws_url, additional_headers=srv.auth(who),
                                          max_size=None, open_timeout=5) as ws:
                reader = asyncio.create_task(_read_all(ws, found))
                try:
                    while time.monotonic() < until and not reader.done():
                        roll = rng.random()
                        if roll < 0.02:  # oversized: this socket is closed (1009)
                            await ws.send(json.dumps({"type": "ping", "pad": MARK * MAX_MESSAGE}))
                        elif roll < 0.04:  # a flood: rate-limited, then closed (1008)
                            for i in range(rng.randrange(50, 1200)):
                                await ws.send(json.dumps({"type": "ping", "id": i}))
                        else:
                            await ws.send(fuzz_message(rng, event_ids))
                        found.sent += 1
                        await asyncio.sleep(rng.choice([0, 0, 0.001, 0.01]))
                finally:
                    reader.cancel()
                    code = ws.close_code
                    found.closes[code] = found.closes.get(code, 0) + 1
        except (websockets.ConnectionClosed, websockets.InvalidStatus, OSError,
                TimeoutError) as exc:
            if isinstance(exc, websockets.InvalidStatus):  # 429 while its bucket refills
                assert exc.response.status_code == 429, exc.response.status_code
            await asyncio.sleep(0.2)


async def _read_all(ws: Any, found: Findings) -> None:
    try:
        async for text in ws:
            check_reply(text, found)
    except websockets.ConnectionClosed:
        pass


async def never_reader(srv: Server, rng: random.Random, until: float) -> None:
    """Sends messages and never reads a byte back; reconnects when dropped."""
    while time.monotonic() < until:
        try:
            ws = await websockets.connect(srv.ws_url, additional_headers=srv.auth("city"),
                                          max_size=None, open_timeout=5)
        except (websockets.InvalidStatus, OSError, TimeoutError):
            await asyncio.sleep(0.3)
            continue
        ws.transport.pause_reading()
        try:
            while time.monotonic() < until:
                await asyncio.wait_for(
                    ws.send(json.dumps({"type": "ping", "pad": MARK * rng.randrange(1, 400)})), 2)
                await asyncio.sleep(0.005)
        except (websockets.ConnectionClosed, TimeoutError, OSError):
            pass
        finally:
            ws.transport.abort()


async def raw_frames(srv: Server, rng: random.Random, until: float) -> None:
    """Hand-made handshakes, then truncated, unmasked, reserved-bit and garbage frames."""
    host, port = "127.0.0.1", int(srv.url.rsplit(":", 1)[1])
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        key = base64.b64encode(rng.randbytes(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n"
                      f"Authorization: Bearer {srv.token('raw')}\r\n\r\n").encode())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            if not head.startswith(b"HTTP/1.1 101"):  # refused (429): garbage would be HTTP
                await asyncio.sleep(0.2)
                continue
            payload = (MARK + fuzz_text(rng)).encode()
            mask = rng.randbytes(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            frame = bytes((0x81, 0x80 | len(payload))) + mask + masked if len(payload) < 126 \
                else b"\x81\xff" + b"\x7f" * 8
            choice = rng.randrange(6)
            if choice == 0:
                data = frame[: rng.randrange(1, len(frame))]  # truncated, then silence
            elif choice == 1:
                data = bytes((0x81, len(payload) & 0x7F)) + payload  # unmasked client frame
            elif choice == 2:
                data = bytes((0xF1,)) + frame[1:]  # reserved bits set
            elif choice == 3:
                data = bytes((0x83,)) + frame[1:]  # reserved opcode
            elif choice == 4:
                data = b"\x01" + frame[1:] + b"\x80" + frame[1:]  # continuation mix-up
            else:
                data = rng.randbytes(rng.randrange(1, 64))
            writer.write(data)
            await writer.drain()
            with_timeout = asyncio.wait_for(reader.read(4096), rng.choice([0.05, 0.5]))
            try:
                await with_timeout
            except TimeoutError:
                pass
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.02)


async def watch_health(srv: Server, until: float, found: Findings) -> None:
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < until:
            try:
                async with s.get(srv.url + "/healthz", timeout=aiohttp.ClientTimeout(total=3)) as r:
                    if r.status != 200:
                        found.health.append(f"/healthz {r.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                found.health.append(f"/healthz {type(exc).__name__}")
            await asyncio.sleep(0.5)


async def markers(srv: Server, until: float, found: Findings, event_ids: list[str]) -> None:
    """A well-behaved county operator: each marker event created in scope must arrive."""
    lon, lat = point_in(srv, "331003")
    async with websockets.connect(srv.ws_url, additional_headers=srv.auth("huangyan"),
                                  max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "snapshot"
        n = 0
        while time.monotonic() < until:
            n += 1
            t0 = time.monotonic()
            code, ev = await srv.call("POST", "/api/v1/events", "intake",
                                      json=intake_body(lon, lat, description=f"marker {n}"))
            if code != 201:
                found.health.append(f"marker POST {code}: {ev}")
                await asyncio.sleep(0.5)
                continue
            event_ids.append(ev["id"])
            try:
                async with asyncio.timeout(MARKER_DEADLINE_S * 5):
                    while True:
                        msg = json.loads(await ws.recv())
                        if msg.get("type") == "event.created" and msg["event"]["id"] == ev["id"]:
                            break
            except TimeoutError:
                found.late.append(f"marker {n} never arrived")
                continue
            dt = time.monotonic() - t0
            found.markers.append(dt)
            if dt > MARKER_DEADLINE_S:
                found.late.append(f"marker {n} took {dt:.3f} s")
            await asyncio.sleep(0.3)


async def test_ws_fuzz_keeps_the_server_healthy_and_others_receiving(tmp_path):
    rng = random.Random(SEED)
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    srv = await start_server(tmp_path, limits={"ws_max_message_bytes": MAX_MESSAGE})
    found = Findings()
    try:
        srv.extra_tokens["raw"] = issue_token(srv.state.config.token_file, "operator", "331002",
                                              None, name="raw-frames")
        async with asyncio.timeout(5):  # the server has seen the token file change
            while not srv.state.tokens.active(hash_token(srv.extra_tokens["raw"])):
                await asyncio.sleep(0.1)
        event_ids: list[str] = []
        until = time.monotonic() + FUZZ_S
        jobs = [markers(srv, until, found, event_ids), watch_health(srv, until, found),
                raw_frames(srv, random.Random(rng.random()), until)]
        jobs += [fuzz_client(srv, random.Random(rng.random()), until, found, event_ids, who)
                 for who in FUZZ_TOKENS]
        jobs += [never_reader(srv, random.Random(rng.random()), until) for _ in range(2)]
        await asyncio.gather(*jobs)
        code, health = await srv.call("GET", "/healthz")
        summary = (f"seed {SEED}: {found.sent} fuzz messages, {found.replies} replies, "
                   f"closes {found.closes}, {len(found.markers)} markers, max "
                   f"{max(found.markers, default=0):.3f} s")
        assert code == 200, (summary, health)
        assert found.health == [], (summary, found.health[:5])
        assert found.echoes == [], (summary, found.echoes[:5])
        assert found.late == [], (summary, found.late[:5])
        assert len(found.markers) >= FUZZ_S / 2, summary
        assert found.sent > 500 and found.replies > 100, summary
        print(summary)
        assert errors.records == [], (summary, [
            logging.Formatter().format(r)[:2000] for r in errors.records[:3]])
    finally:
        logging.getLogger().removeHandler(errors)
        await srv.session.close()
        await srv.runner.cleanup()
