"""Faults (issue 11): the wall clock jumping, a full disk, a read-only store.

The clock tests drive ``SystemClock`` with an injected wall and monotonic source (no
sleeping). The disk tests put a real server's SQLite journal on a tiny tmpfs (root only:
mounting needs it; CI runs as root) and check what clients and ``/healthz`` see, that
intake recovers when the disk does, and that nothing answered is lost. Results are written
down in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dispatch_scenario import make_policy
from loadgen_proc import fields
from store_backends import created_event_ids
from table_routing import TableRouting

from dispatch.audit import verify_journal
from dispatch.clock import SystemClock
from dispatch.core.engine import Engine
from dispatch.store import replay
from dispatch.store.sqlite import SqliteStore

T0 = 1_767_225_600.0
RESPOND_S = 60.0  # street_vending's respond window in make_policy()


class Source:
    """A wall clock and a monotonic clock that move when told to."""

    def __init__(self) -> None:
        self.w, self.m = T0, 5_000.0

    def wall(self) -> float:
        return self.w

    def mono(self) -> float:
        return self.m

    def tick(self, s: float) -> None:
        self.w += s
        self.m += s


def test_clock_is_the_wall_clock_while_it_does_not_jump() -> None:
    src = Source()
    c = SystemClock(src.wall, src.mono)
    assert c.now() == T0
    for _ in range(100):
        src.tick(0.37)
        assert c.now() == src.w
    for _ in range(100):  # NTP slewing the wall clock by 500 ppm passes straight through
        src.tick(1.0)
        src.w += 0.0005
        assert c.now() == src.w
    assert c.jumps == 0


def test_a_forward_jump_causes_no_mass_escalation() -> None:
    src = Source()
    clock = SystemClock(src.wall, src.mono)
    engine = Engine(make_policy(), TableRouting())
    created: dict[str, float] = {}  # event → true (monotonic) time of creation
    for i in range(50):
        out = engine.create(fields(i), "op", clock.now())
        assert out.event is not None
        created[out.event["id"]] = src.m
        src.tick(1.0)
    src.w += 3600.0  # someone sets the wall clock an hour ahead
    src.tick(1.0)
    now = clock.now()
    assert now < src.w - 3500  # the server's time did not jump with it
    assert clock.jumps == 1
    # what the old SystemClock (time.time()) would have done: every event breached at once
    assert sum(ev["deadlines"]["respond"] <= src.w for ev in engine.events()) == 50
    # only what is truly due: the first events' warnings (at 80 % of the window), no breach
    first = engine.fire_due(now).records
    assert {r.action for r in first} == {"warned"} and len(first) <= 4
    breached_after: dict[str, float] = {}
    for _ in range(120):
        src.tick(1.0)
        for r in engine.fire_due(clock.now()).records:
            if r.action == "breached":
                assert r.event_id not in breached_after
                breached_after[r.event_id] = src.m - created[r.event_id]
    assert sorted(breached_after) == sorted(created)  # none lost, none doubled
    # each window was measured at most slew_rate short of the true time (plus one tick)
    assert min(breached_after.values()) >= RESPOND_S * (1 - clock.slew_rate) - 1.0


def test_a_backward_jump_never_turns_time_back_and_converges() -> None:
    src = Source()
    clock = SystemClock(src.wall, src.mono)
    src.tick(10.0)
    before = clock.now()
    src.w -= 600.0
    t = clock.now()
    assert t >= before and clock.jumps == 1
    steps = 0
    while clock.now() != src.w:
        prev = clock.now()
        src.tick(100.0)
        assert clock.now() - prev >= 100.0 * (1 - clock.slew_rate) - 1e-6  # slower, not back
        steps += 1
        assert steps < 200
    assert steps * 100.0 == pytest.approx(600.0 / clock.slew_rate, abs=100.0)
    src.tick(5.0)
    assert clock.now() == src.w  # following the wall clock exactly again


def test_a_forward_jump_is_absorbed_at_the_slew_rate() -> None:
    src = Source()
    clock = SystemClock(src.wall, src.mono, slew_rate=0.1)
    src.w += 60.0
    lag = [src.w - clock.now()]
    while lag[-1] > 0:
        src.tick(10.0)
        lag.append(src.w - clock.now())
    assert lag[0] == 60.0 and lag == sorted(lag, reverse=True)
    assert len(lag) - 1 == pytest.approx(60.0 / 0.1 / 10.0, abs=1)  # 600 s at 10 %


def test_not_before_keeps_time_after_the_journal() -> None:
    src = Source()
    clock = SystemClock(src.wall, src.mono)
    clock.not_before(T0 + 30.0)  # the journal's last record is newer than the wall clock
    assert clock.now() == T0 + 30.0
    src.tick(1.0)
    assert T0 + 30.0 < clock.now() <= T0 + 31.0


async def test_deadlines_survive_a_restart_as_wall_times(tmp_path: Path) -> None:
    src = Source()
    clock = SystemClock(src.wall, src.mono)
    store = SqliteStore(str(tmp_path / "j.db"), synchronous="NORMAL")
    await store.open()
    engine = Engine(make_policy(), TableRouting())
    for i in range(5):
        await store.append(engine.create(fields(i), "op", clock.now()).records)
        src.tick(7.0)
    await store.close()
    # restart: a new monotonic origin; the new clock anchors to the wall clock again
    src.m = 12.0
    clock2 = SystemClock(src.wall, src.mono)
    store2 = SqliteStore(str(tmp_path / "j.db"), synchronous="NORMAL")
    await store2.open()
    try:
        again = Engine(make_policy(), TableRouting())
        await replay(store2, again)
        assert [e["deadlines"] for e in again.events()] == \
            [e["deadlines"] for e in engine.events()]
        assert again.next_due() == engine.next_due() == T0 + 0.8 * RESPOND_S  # a warning
        src.tick(T0 + RESPOND_S - clock2.now() + 0.5)
        fired = again.fire_due(clock2.now()).records
        assert [(r.action, r.event_id) for r in fired if r.action != "warned"] == \
            [("breached", "E0000001"), ("escalated", "E0000001")]
    finally:
        await store2.close()


# -- disk full, read-only ------------------------------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="mounting a tmpfs needs root (CI runs as root)")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the journal, unmounted afterwards."""
    d = tmp_path / "disk"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(d)],
                   check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)
        if os.path.ismount(d):
            subprocess.run(["umount", "-l", str(d)], check=True)


def fill(disk: Path) -> Path:
    """Write zeros until the file system is full; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return filler


def audit_verify(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatch", "audit", "verify", "--db",
                           str(db)], capture_output=True, text=True, timeout=60)


async def post_event(srv: Any, n: int) -> tuple[int, Any]:
    from tests.server.conftest import BEIYANG_RESERVOIR, intake_body

    lon, lat = BEIYANG_RESERVOIR
    return await srv.call("POST", "/api/v1/events", "intake",  # type: ignore[no-any-return]
                          json=intake_body(lon, lat + n * 1e-4, description=f"fault {n}"))


async def until_healthy(srv: Any, timeout: float) -> float:
    """Seconds until /healthz answers 200 (fails after ``timeout``)."""
    t0 = time.monotonic()
    while True:
        status, _ = await srv.call("GET", "/healthz")
        if status == 200:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, "/healthz did not recover"
        await asyncio.sleep(0.1)


async def post_answered(srv: Any, n: int) -> list[str]:
    """``n`` intakes, each answered 201; their ids."""
    answered = []
    for i in range(n):
        status, ev = await post_event(srv, i)
        assert status == 201
        answered.append(ev["id"])
    return answered


@needs_root
async def test_disk_full(tiny_disk: Path, tmp_path: Path) -> None:
    from tests.server.conftest import start_server

    db = tiny_disk / "journal.db"
    srv = await start_server(tmp_path, store=str(db))
    try:
        answered = await post_answered(srv, 5)
        filler = fill(tiny_disk)
        refused = None
        for i in range(5, 50):  # the WAL may still have a little room: write until it is out
            status, body = await post_event(srv, i)
            if status == 201:
                answered.append(body["id"])
                continue
            refused = (status, body)
            break
        assert refused is not None and refused[0] == 503
        assert refused[1]["error"]["code"] == "store_unavailable"
        status, health = await srv.call("GET", "/healthz")
        assert status == 503 and health["status"] == "failing"
        assert health["reason"].startswith("disk full: "), health
        status, listed = await srv.call("GET", "/api/v1/events", "admin")
        assert status == 200  # reads go on
        assert {e["id"] for e in listed["events"]} == set(answered)
        filler.unlink()
        recovered_s = await until_healthy(srv, timeout=10.0)
        status, ev = await post_event(srv, 99)
        assert status == 201
        answered.append(ev["id"])
        print(f"disk full: recovered {recovered_s:.2f} s after space was freed")
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
    out = audit_verify(db)
    assert out.returncode == 0 and out.stdout.startswith("OK"), out.stdout + out.stderr
    assert set(answered) <= await created_event_ids(db)
    assert len(await created_event_ids(db)) == len(answered)  # a refused intake left nothing


@needs_root
async def test_read_only_store(tiny_disk: Path, tmp_path: Path) -> None:
    """A journal whose file system is read-only (the kernel remounts a failing disk read-only;
    the service restarts). A live ``remount,ro`` under an open SQLite file is refused by the
    kernel (busy), so the store is found read-only at start: it names the cause, and starts
    once the file system is writable again with everything there."""
    from tests.server.conftest import start_server

    db = tiny_disk / "journal.db"
    srv = await start_server(tmp_path, store=str(db))
    try:
        answered = await post_answered(srv, 5)
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    store = SqliteStore(str(db))
    with pytest.raises(sqlite3.OperationalError,
                       match=r"cannot open the journal: read-only: .*journal\.db"):
        await store.open()
    subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)
    srv = await start_server(tmp_path, store=str(db))
    try:
        status, _ = await srv.call("GET", "/healthz")
        assert status == 200
        status, ev = await post_event(srv, 5)
        assert status == 201
        answered.append(ev["id"])
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
    assert audit_verify(db).returncode == 0
    assert await created_event_ids(db) == set(answered)
    assert verify_journal(str(db))[0]
