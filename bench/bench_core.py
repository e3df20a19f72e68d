"""Benchmarks of the dispatch core, the deadline book, the SQLite store and recovery.

``python -m bench.bench_core [--quick]`` prints a table and rewrites the ``## Dispatch core``
section of docs/performance.md (and nothing else in that file).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import heapq
import os
import platform
import random
import sqlite3
import tempfile
import time
import tracemalloc
from collections.abc import Container
from pathlib import Path
from typing import Any

from bench import report
from bench.report import cpu_model
from dispatch.cli import GC_THRESHOLDS as GC_TUNED  # what `dispatch serve` sets
from dispatch.core.deadlines import Deadline, DeadlineBook
from dispatch.core.engine import Engine
from dispatch.core.policy import Category, Policy, TimerWindows
from dispatch.core.routing import Routing, UnitPick
from dispatch.store import replay
from dispatch.store.sqlite import SqliteStore

DOC = Path(__file__).parents[1] / "docs" / "performance.md"
HEADING = "## Dispatch core"


class BenchRouting:
    """A routing port that costs next to nothing: one team, a fresh unit per event."""

    def __init__(self) -> None:
        self.n = 0

    def route(self, lon: float, lat: float) -> Routing:
        return Routing("team-t1", "township", "g1", "T1", "C1", "T", None, None,
                       {"rule": "grid"})

    def recommend(self, team: str, lon: float, lat: float, now: float,
                  busy: Container[str]) -> UnitPick | None:
        self.n += 1
        return UnitPick(f"u{self.n}", team, False, 120.0, {"rule": "own team"})

    def unit_team(self, unit: str) -> str | None:
        return "team-t1"

    def team_level(self, team: str) -> str | None:
        return "township"


def policy() -> Policy:
    return Policy(TimerWindows(), {"street_vending": Category("street_vending", "占道经营")})


def fields(i: int) -> dict[str, Any]:
    return {"location": {"lon": 121.2, "lat": 28.6, "crs": "wgs84",
                         "original": {"lon": 121.2, "lat": 28.6}},
            "category": "street_vending", "description": f"event {i}", "source": "bench",
            "priority": None, "external_id": f"B{i}", "reporter": None, "reported_at": None}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


# -- 1. core throughput ---------------------------------------------------------------------
def bench_core(n_open: int, n_actions: int, gc_tuned: bool = False) -> dict[str, float]:
    old = gc.get_threshold()
    gc.collect()
    if gc_tuned:
        gc.set_threshold(*GC_TUNED)
    try:
        return _bench_core(n_open, n_actions)
    finally:
        gc.set_threshold(*old)


def _bench_core(n_open: int, n_actions: int) -> dict[str, float]:
    eng = Engine(policy(), BenchRouting())
    now = time.time()
    t = time.perf_counter()
    for i in range(n_open):
        eng.create(fields(i), "op", now)
    create_s = time.perf_counter() - t
    ids = [f"E{i + 1:07d}" for i in range(n_open)]
    seq = ["respond", "depart", "arrive", "resolve"]
    done = 0
    t = time.perf_counter()
    for k in range(n_actions):
        eid = ids[(k // 4) % n_open] if n_actions > n_open else ids[k % n_open]
        action = seq[k % 4] if n_actions > n_open else "respond"
        eng.act(eid, action, "field", now + 1)
        done += 1
    act_s = time.perf_counter() - t
    return {"open": n_open, "creates_per_s": n_open / create_s, "actions": done,
            "actions_per_s": done / act_s}


# -- 2. deadline book -----------------------------------------------------------------------
def bench_book_memory(n: int) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    book = DeadlineBook()
    now = time.time()
    for i in range(n):
        eid = f"E{i:07d}"
        book.set(eid, [Deadline("respond", "warn", now + 48),
                       Deadline("respond", "breach", now + 60),
                       Deadline("depart", "warn", now + 144),
                       Deadline("depart", "breach", now + 180),
                       Deadline("arrive", "warn", now + 720),
                       Deadline("arrive", "breach", now + 900)])
    book_bytes = tracemalloc.get_traced_memory()[0] - base
    del book
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    eng = Engine(policy(), BenchRouting())
    for i in range(n):
        eng.create(fields(i), "op", now)
    eng_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"book_bytes_per_event": book_bytes / n, "engine_bytes_per_event": eng_bytes / n}


def bench_book_ops(n: int) -> dict[str, float]:
    now = time.time()
    dues = [now + random.random() * 900 for _ in range(6 * n)]
    t = time.perf_counter()
    h: list[tuple[float, int]] = []
    for i, d in enumerate(dues):
        heapq.heappush(h, (d, i))
    while h:
        heapq.heappop(h)
    raw = time.perf_counter() - t
    book = DeadlineBook()
    t = time.perf_counter()
    for i in range(n):
        book.set(f"E{i:07d}", [Deadline("respond", "breach", dues[6 * i + j])
                               for j in range(6)])
    fired = sum(1 for _ in book.pop_due(now + 1000))
    ours = time.perf_counter() - t
    assert fired == 6 * n
    return {"heapq_ns_per_entry": raw / (6 * n) * 1e9, "book_ns_per_entry": ours / (6 * n) * 1e9}


class LinedUpClock:
    """The runtime's clock for the lateness run: frozen at ``t0`` while the runtime starts
    (replaying the journal takes a while), then the wall clock shifted so that ``t0`` is the
    moment ``line_up`` was called."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.offset: float | None = None

    def now(self) -> float:
        return self.t0 if self.offset is None else time.time() - self.offset

    def line_up(self) -> None:
        self.offset = time.time() - self.t0


async def bench_lateness(n_open: int, n_due: int, store_path: str) -> dict[str, float]:
    """n_open events with live deadlines; n_due respond breaches fall due within one second.

    Measured through the server's own deadline loop: the events are written to a SQLite
    journal first, then a ``dispatch.runtime.Runtime`` (default configuration, that journal)
    starts on it, replays it and runs its deadline loop on the real asyncio loop and a real
    clock lined up with the deadlines. Lateness = when the runtime fired a breach (the
    record's ``received_at``) - its due time (``at``); and until the runtime published it,
    durable, to its subscribers.
    """
    from dispatch.config import load_config
    from dispatch.runtime import Runtime

    eng = Engine(policy(), BenchRouting())
    start = 1_800_000_000.0  # the journal is written in a time of its own
    backlog = []
    for i in range(n_open - n_due):
        backlog += eng.create(fields(i), "op", start).records
    for j in range(n_due):  # respond deadline at start + 1 + j/n_due
        backlog += eng.create(fields(n_open + j), "op", start - 59 + j / n_due).records
    backlog += eng.fire_due(start).records  # their warnings are already past
    store = SqliteStore(store_path, synchronous="FULL")
    await store.open()
    for k in range(0, len(backlog), 5000):
        await store.append(backlog[k:k + 5000])
    await store.close()
    del backlog, eng
    gc.collect()

    clock = LinedUpClock(start)
    rt = Runtime(load_config(env={}, overrides={"store": store_path}), clock=clock)
    committed: list[float] = []
    fired: list[float] = []

    def published(records: list[Any]) -> None:
        t = clock.now()
        for r in records:
            if r.action == "breached":
                fired.append(r.received_at - r.at)
                committed.append(t - r.at)

    rt.subscribe(published)
    await rt.start()
    clock.line_up()  # before the deadline loop first runs: it sees the lined-up clock
    try:
        while clock.now() < start + 2.5 and len(fired) < n_due:
            await asyncio.sleep(0.05)
    finally:
        await rt.stop()
    return {"breaches": len(fired), "fire_p50_ms": pct(fired, 50) * 1e3,
            "fire_p99_ms": pct(fired, 99) * 1e3,
            "commit_p50_ms": pct(committed, 50) * 1e3,
            "commit_p99_ms": pct(committed, 99) * 1e3}


# -- 3. embedded store ----------------------------------------------------------------------
async def bench_store(path: str, n: int, concurrency: int, sync: str,
                      gc_tuned: bool = False) -> dict[str, float]:
    old = gc.get_threshold()
    if gc_tuned:
        gc.set_threshold(*GC_TUNED)
    store = SqliteStore(path, synchronous=sync)
    await store.open()
    eng = Engine(policy(), BenchRouting())
    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            out = eng.create(fields(i), "intake", time.time())
            t = time.perf_counter()
            await store.append(out.records)
            lat.append(time.perf_counter() - t)

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t
    commits = store.commits
    await store.close()
    gc.set_threshold(*old)
    return {"sync": sync, "gc": "tuned" if gc_tuned else "default", "concurrency": concurrency,
            "intakes_per_s": n / elapsed, "p50_ms": pct(lat, 50) * 1e3,
            "p99_ms": pct(lat, 99) * 1e3, "records_per_commit": n / max(commits, 1)}


def bench_sqlite_baseline(path: str, n: int) -> float:
    """Bare baseline: one INSERT + COMMIT per record, synchronous=FULL, WAL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, data BLOB)")
    blob = os.urandom(1500)
    t = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?)", (i, blob))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    conn.close()
    return n / elapsed


# -- 4. recovery ----------------------------------------------------------------------------
async def bench_recovery(path: str, n: int) -> dict[str, float]:
    eng = Engine(policy(), BenchRouting())
    now = time.time()
    store = SqliteStore(path, synchronous="NORMAL")
    await store.open()
    batch = []
    for i in range(n):
        batch += eng.create(fields(i), "op", now).records
        if len(batch) >= 5000:
            await store.append(batch)
            batch = []
    await store.append(batch)
    await store.close()
    size_mb = os.path.getsize(path) / 1e6

    async def restart(use_snapshot: bool) -> float:
        t = time.perf_counter()
        s = SqliteStore(path)
        await s.open()
        e2 = Engine(policy(), BenchRouting())
        snap = await s.load_snapshot() if use_snapshot else None
        if snap:
            _, blob = snap
            gc.disable()
            e2 = Engine.restore(blob, policy(), BenchRouting())
            gc.enable()
        await replay(s, e2)
        gc.unfreeze()
        e2.fire_due(time.time())
        elapsed = time.perf_counter() - t
        assert e2.last_seq == n
        if not use_snapshot:
            await s.save_snapshot(e2.last_seq, e2.snapshot())
        await s.close()
        return elapsed

    full = await restart(False)
    snapshot = await restart(True)
    return {"events": n, "journal_mb": size_mb, "replay_s": full, "snapshot_s": snapshot}


# -- report ---------------------------------------------------------------------------------
def machine() -> str:
    return (f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}")


def render(r: dict[str, Any], quick: bool) -> str:
    c, m, o, lt = r["core"], r["memory"], r["book_ops"], r["lateness"]
    lines = [
        HEADING, "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}"
        f"{' (quick run: smaller sizes)' if quick else ''}.",
        "Re-run with `.venv/bin/python -m bench` (everything) or `-m bench.bench_core` (this "
        f"section alone). One run, {report.load_note()}: read each figure against the "
        "baseline measured beside it.", "",
        "| what | figure | target / baseline |", "| --- | --- | --- |",
        f"| core: intakes applied in process ({c['open']:,} events) | "
        f"{c['creates_per_s']:,.0f}/s | — |",
        f"| core: actions applied in process, {c['open']:,} open events | "
        f"{c['actions_per_s']:,.0f}/s | — |",
        *([f"| the same with the server's GC thresholds `{GC_TUNED}` (intakes; actions) | "
           f"{ct['creates_per_s']:,.0f}/s; {ct['actions_per_s']:,.0f}/s | — |"]
          if (ct := r.get("core_tuned")) else []),
        f"| deadline book: memory per open event (6 entries) | "
        f"{m['book_bytes_per_event']:,.0f} B | — |",
        f"| engine: memory per open event (state + indexes + book) | "
        f"{m['engine_bytes_per_event']:,.0f} B | — |",
        f"| deadline book: set + fire, per entry | {o['book_ns_per_entry']:,.0f} ns | "
        f"bare heapq push+pop {o['heapq_ns_per_entry']:,.0f} ns |",
        f"| firing lateness, {lt['breaches']:,} breaches due in one second among "
        f"{r['lateness_open']:,} open events: p50 / p99 | {lt['fire_p50_ms']:.1f} / "
        f"{lt['fire_p99_ms']:.1f} ms | p99 < 50 ms |",
        f"| same, until the records are committed to SQLite (FULL): p50 / p99 | "
        f"{lt['commit_p50_ms']:.1f} / {lt['commit_p99_ms']:.1f} ms | — |",
    ]
    for s in r["store"]:
        how = (f"synchronous={s['sync']}, {s['concurrency']} in flight, "
               f"{s['gc']} GC thresholds")
        lines.append(
            f"| SQLite store ({how}): committed intakes/s; latency `append` adds p50 / p99 | "
            f"{s['intakes_per_s']:,.0f}/s ({s['records_per_commit']:.0f} per commit); "
            f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms | ≥ 2,000/s |")
    lines.append(f"| bare baseline: raw SQLite, one INSERT + COMMIT each (WAL, FULL), "
                 f"1.5 KB rows, no engine | {r['baseline_per_s']:,.0f}/s | — |")
    rc = r["recovery"]
    lines += [
        f"| restart from a journal of {rc['events']:,} events ({rc['journal_mb']:.0f} MB): "
        f"full replay | {rc['replay_s']:.2f} s | < 5 s |",
        f"| same, from the snapshot (written by the previous restart) | "
        f"{rc['snapshot_s']:.2f} s | < 5 s |",
        "",
        "How it was measured: `core` creates events through a routing port that costs nothing "
        "(so the figure is the engine alone) and then applies respond/depart/arrive/resolve "
        "actions. `lateness` writes the open events to a SQLite journal, starts a "
        "`dispatch.runtime.Runtime` on it (default configuration) and lets the runtime's own "
        "deadline loop fire the breaches on the real asyncio loop, its clock lined up with "
        "the deadlines once the journal is replayed; lateness is the firing time the runtime "
        "wrote in each breach record minus its due time, and the next row the time until "
        "the runtime published it, durable, to its subscribers. `store` drives "
        "`Engine.create` + "
        "`SqliteStore.append` with 256 concurrent intakes; latency is the time `append` "
        "takes. With the default GC thresholds the p99 is set by full garbage collections "
        f"over the growing live state; `gc.set_threshold{GC_TUNED}` (and `gc.freeze()` after "
        "loading, which `dispatch.store.replay` does) removes most of that tail. "
        "An fsync on this virtual disk is cheap (the bare one-commit-per-insert baseline "
        "reaches thousands per second), so group commit matters more on real disks; with "
        "one intake in flight there is nothing to group and the figure is the whole path "
        "(engine, JSON, hash, writer thread, commit). "
        "Recovery opens the store, replays every record (`Engine.apply`) and fires "
        "what is due; the snapshot path loads `Engine.snapshot()` instead.",
        "",
    ]
    return "\n".join(lines)


def collect(quick: bool, step: report.Step = report.no_step) -> dict[str, Any]:
    """Every measurement of this module (smaller sizes when ``quick``)."""
    big = 10_000 if quick else 100_000
    r: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        step(f"core: {big:,} intakes and actions")
        r["core"] = bench_core(big, 2 * big if not quick else big)
        r["core_tuned"] = bench_core(big, 2 * big if not quick else big, gc_tuned=True)
        step("core: memory per open event")
        r["memory"] = bench_book_memory(big)
        r["book_ops"] = bench_book_ops(big)
        step("core: firing lateness")
        r["lateness_open"] = big
        r["lateness"] = asyncio.run(bench_lateness(big, 1000 if quick else 5000,
                                                   f"{tmp}/late.db"))
        step("core: SQLite group commit")
        r["baseline_per_s"] = bench_sqlite_baseline(f"{tmp}/base.db", 300 if quick else 2000)
        n = 2000 if quick else 10_000
        runs = [(256, "FULL", False), (256, "FULL", True), (256, "NORMAL", True),
                (1, "FULL", True)]
        if quick:
            runs = runs[1:2] + runs[3:]
        r["store"] = [asyncio.run(bench_store(f"{tmp}/s{i}.db", n if c > 1 else n // 10, c,
                                              sync, gc_tuned=tuned))
                      for i, (c, sync, tuned) in enumerate(runs)]
        step("core: restart from the journal")
        r["recovery"] = asyncio.run(bench_recovery(f"{tmp}/rec.db", big))
    return r


def headlines(r: dict[str, Any]) -> list[report.Headline]:
    """The summary rows of this module."""
    m, o, lt, rc = r["memory"], r["book_ops"], r["lateness"], r["recovery"]
    grouped = max((s for s in r["store"] if s["concurrency"] > 1 and s["sync"] == "FULL"),
                  key=lambda s: s["intakes_per_s"])
    per_100k = m["engine_bytes_per_event"] * 100_000 / 2**20
    return [
        report.Headline("core: intakes applied in process", f"{r['core']['creates_per_s']:,.0f}/s"),
        report.Headline("deadline book: set + fire, per entry",
                        f"{o['book_ns_per_entry']:,.0f} ns",
                        f"bare heapq push+pop {o['heapq_ns_per_entry']:,.0f} ns",
                        o["book_ns_per_entry"] / o["heapq_ns_per_entry"]),
        report.Headline("100,000 open events with live timers: engine memory",
                        f"{per_100k:,.0f} MiB", target="< 1 GiB", met=per_100k < 1024),
        report.Headline(f"firing lateness p99 ({lt['breaches']:,} breaches due in one second "
                        f"among {r['lateness_open']:,} open events)",
                        f"{lt['fire_p99_ms']:.1f} ms", target="< 50 ms",
                        met=lt["fire_p99_ms"] < 50),
        report.Headline("SQLite store: committed intakes/s (group commit, FULL)",
                        f"{grouped['intakes_per_s']:,.0f}/s",
                        f"raw SQLite one INSERT+COMMIT each {r['baseline_per_s']:,.0f}/s",
                        grouped["intakes_per_s"] / r["baseline_per_s"], "≥ 2,000/s",
                        grouped["intakes_per_s"] >= 2000),
        report.Headline(f"restart from a journal of {rc['events']:,} events",
                        f"{rc['replay_s']:.2f} s", target="< 5 s", met=rc["replay_s"] < 5),
    ]


def run(quick: bool, step: report.Step = report.no_step) -> report.Section:
    """For ``python -m bench``: measure, and the section of docs/performance.md."""
    r = collect(quick, step)
    body = render(r, quick).removeprefix(HEADING).strip("\n")
    return report.Section(HEADING.removeprefix("## "), body, headlines(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, a few seconds")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/performance.md")
    a = ap.parse_args()
    sec = run(a.quick, lambda s: print(s, flush=True))
    print()
    print(sec.body)
    if not a.no_write:
        report.update_section(DOC, sec.title, sec.body)


if __name__ == "__main__":
    main()
