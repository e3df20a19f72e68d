"""Webhooks across ``kill -9`` and a receiver that goes away (contract v2 §8, issue 13).

A real ``python -m dispatch serve`` on its SQLite journal, a real receiver on loopback that
refuses the first deliveries; the server is killed with SIGKILL while events come in, started
again, the receiver stops and comes back: every change in the journal arrives, in seq order,
signed, none missing; one that came twice came with the same delivery id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.server.conftest import TOKENS, free_port, intake_body, write_config
from tests.server.test_webhooks import FAST, SECRET
from tests.server.webhook_receiver import Receiver, check_stream

pytestmark = pytest.mark.slow
HY = (121.2611, 28.6408)  # a plain township point in 黄岩区 (tests/server/test_process.py)
INTAKE = {"Authorization": f"Bearer {TOKENS['intake']['token']}"}


def serve(cfg: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dispatch", "serve", "--config", str(cfg), "--port", str(port)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


async def healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become healthy")


async def post(port: int, n: int, tag: str, pause_s: float = 0.02) -> int:
    """POST ``n`` events one after another; how many were answered 201 (a killed server
    answers nothing)."""
    ok = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        for i in range(n):
            try:
                async with s.post(f"http://127.0.0.1:{port}/api/v1/events", headers=INTAKE,
                                  json=intake_body(*HY, external_id=f"{tag}-{i}")) as r:
                    ok += r.status == 201
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(pause_s)
    return ok


async def last_error(port: int) -> str:
    """The error the deliveries endpoint shows for the message being retried."""
    admin = {"Authorization": f"Bearer {TOKENS['admin']['token']}"}
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            async with s.get(f"http://127.0.0.1:{port}/api/v1/webhooks/wh/deliveries",
                             headers=admin) as r:
                assert r.status == 200, await r.text()
                d = await r.json()
            if d["retrying"] and d["retrying"]["last_error"]:
                assert d["pending"][0]["attempts"] >= 1
                return str(d["retrying"]["last_error"])
            await asyncio.sleep(0.05)
    raise AssertionError("no failed attempt shown")


def journal_seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as c:
        return [row[0] for row in c.execute("SELECT seq FROM journal ORDER BY seq")]


async def test_kill_9_and_a_receiver_down_then_up_lose_nothing(tmp_path):
    rx = await Receiver(fail_first=3).start()
    port = free_port()
    cfg = write_config(tmp_path, webhooks=[{"id": "wh", "url": rx.url, "secret": SECRET}],
                       webhooks_options=FAST, store_options={"synchronous": "FULL"})
    db, log = tmp_path / "journal.db", tmp_path / "server.log"
    proc = serve(cfg, port, log)
    try:
        await healthy(port, proc, log)
        # events come in; the server is killed with SIGKILL in the middle of them
        posting = asyncio.create_task(post(port, 40, "a"))
        while len(rx.got) < 3:  # the first message taken after 3 refusals: a backlog
            await asyncio.sleep(0.001)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        got_before = {d.seq for d in rx.got}
        answered = await posting
        before = journal_seqs(db)
        assert 3 <= answered < 40 and len(got_before) < len(before)  # killed mid-way

        # back up; then the receiver goes away while events keep coming, and comes back
        proc = serve(cfg, port, log)
        await healthy(port, proc, log)
        await rx.stop()
        assert await post(port, 10, "b") == 10
        error = await last_error(port)  # the server meets connection refused, backing off
        assert "connect" in error.lower(), error
        await rx.start()
        assert await post(port, 5, "c") == 5
        seqs = journal_seqs(db)
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= answered + 15
        await rx.wait_for(set(seqs), timeout=20)
        check_stream(rx.got, seqs, SECRET)
        print(f"answered {answered}, journal {len(seqs)}, at the kill {len(before)}, "
              f"delivered {len(got_before)}, arrivals {len(rx.got)}")
        assert {d.seq for d in rx.refused} <= set(seqs)
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await rx.stop()
