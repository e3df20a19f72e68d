"""The server as a client starts it: `dispatch serve --config FILE --port N` (contract §7)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import websockets

from tests.server.conftest import TOKENS, free_port, intake_body, write_config

pytestmark = pytest.mark.slow
DISPATCH = [sys.executable, "-m", "dispatch"]
# A plain township point in 黄岩区 of the demo data (checked by test_points_are_routable).
HY = (121.2611, 28.6408)


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DISPATCH, *args], capture_output=True, text=True, timeout=timeout)


def start(cfg: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([*DISPATCH, "serve", "--config", str(cfg), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


async def wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < end:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become healthy")


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]['token']}"}


async def post_many(port: int, n: int, stop_after: float | None = None) -> list[str]:
    """POST events concurrently; return the ids of those answered 201."""
    ids: list[str] = []
    url = f"http://127.0.0.1:{port}/api/v1/events"
    async with aiohttp.ClientSession() as s:
        async def one(i: int) -> None:
            try:
                async with s.post(url, json=intake_body(*HY, external_id=f"load-{i}"),
                                  headers=auth("intake")) as r:
                    if r.status == 201:
                        ids.append((await r.json())["id"])
            except (TimeoutError, aiohttp.ClientError):
                pass

        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    return ids


async def all_ids(port: int) -> set[str]:
    out: set[str] = set()
    cursor = None
    async with aiohttp.ClientSession() as s:
        while True:
            q = f"?limit=1000{'&cursor=' + cursor if cursor else ''}"
            async with s.get(f"http://127.0.0.1:{port}/api/v1/events{q}",
                             headers=auth("city")) as r:
                body = await r.json()
            out |= {e["id"] for e in body["events"]}
            cursor = body["next"]
            if cursor is None:
                return out


def test_points_are_routable():
    from geo import DEMO_DIR
    from geo.loader import load_dataset
    from geo.router import Router

    ds = load_dataset(DEMO_DIR / "regions.geojson", DEMO_DIR / "zones.geojson",
                      DEMO_DIR / "teams.yaml")
    r = Router(ds).locate(*HY)
    assert r.county == "331003" and r.zone is None


async def test_sigterm_during_load_loses_nothing_and_closes_sockets(tmp_path):
    cfg = write_config(tmp_path)
    port = free_port()
    proc = start(cfg, port)
    try:
        await wait_healthy(port, proc)
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", additional_headers=auth("city"))
        await ws.recv()
        load = asyncio.create_task(post_many(port, 300))
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        answered = await load
        with pytest.raises(websockets.ConnectionClosed) as exc:
            while True:
                await asyncio.wait_for(ws.recv(), 15)
        assert exc.value.rcvd is not None and exc.value.rcvd.code == 1001
        assert proc.wait(timeout=20) == 0
        assert answered, "some events must have been answered before the signal"
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = start(cfg, port)
    try:
        await wait_healthy(port, proc)
        assert set(answered) <= await all_ids(port)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_kill_9_loses_no_answered_event_and_deadlines_fire_once(tmp_path):
    cfg = write_config(tmp_path, timers={"respond_s": 1, "depart_s": 2, "arrive_s": 600})
    port = free_port()
    proc = start(cfg, port)
    try:
        await wait_healthy(port, proc)
        load = asyncio.create_task(post_many(port, 200))
        await asyncio.sleep(0.4)
        os.killpg(proc.pid, signal.SIGKILL)
        answered = await load
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answered
    await asyncio.sleep(2.5)  # respond and depart deadlines pass while the server is down
    proc = start(cfg, port)
    try:
        await wait_healthy(port, proc)
        assert set(answered) <= await all_ids(port)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/api/v1/events/{answered[0]}",
                             headers=auth("city")) as r:
                ev = await r.json()
        actions = [t["action"] for t in ev["timeline"]]
        assert ev["breaches"] == ["respond", "depart"]
        assert actions.count("breached") == 2 and actions.count("escalated") == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    proc = start(cfg, port)  # a second restart fires nothing again
    try:
        await wait_healthy(port, proc)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/api/v1/events/{answered[0]}",
                             headers=auth("city")) as r:
                again = await r.json()
        assert again["version"] == ev["version"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    out = run("audit", "verify", "--config", str(cfg))
    assert out.returncode == 0, out.stdout + out.stderr


def test_invalid_config_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("timers: {respond_s: -5}\n")
    out = run("serve", "--config", str(bad), "--port", "0")
    assert out.returncode == 2
    assert "timers.respond_s" in out.stderr and "positive" in out.stderr
    bad.write_text("auth: {tokens: [{token: abcdefgh1234, role: pilot}]}\n")
    out = run("check-config", str(bad))
    assert out.returncode == 2 and "auth.tokens[0].role" in out.stderr
    good = write_config(tmp_path)
    out = run("check-config", str(good))
    assert out.returncode == 0 and "config OK" in out.stdout


async def test_token_create_issues_a_working_hashed_token(tmp_path):
    cfg = write_config(tmp_path)
    out = run("token", "create", "--role", "operator", "--region", "331003", "--config",
              str(cfg))
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    stored = (tmp_path / "tokens.yaml").read_text()
    assert token not in stored and "digest" in stored
    port = free_port()
    proc = start(cfg, port)
    try:
        await wait_healthy(port, proc)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/api/v1/me",
                             headers={"Authorization": f"Bearer {token}"}) as r:
                me = await r.json()
        assert me["role"] == "operator" and me["region"] == "331003"
    finally:
        proc.terminate()
        log = proc.communicate(timeout=20)[0]
    assert token not in log


def test_shipped_config_checks(tmp_path):
    root = Path(__file__).resolve().parents[2]
    out = run("check-config", str(root / "config.yaml"))
    assert out.returncode == 0, out.stderr
    assert "config OK" in out.stdout
