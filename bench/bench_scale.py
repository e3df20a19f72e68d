"""Scale curves: how routing, memory and start-up grow with 10× and 100× the demo.

    .venv/bin/python -m bench.bench_scale [--quick] [--no-write] [--budget SECONDS]

How it works: every size runs in a fresh subprocess (``--child``) that prints one JSON line,
so the memory of one size never pollutes the next and RSS growth is an honest figure for
that size alone. Geography: 1× is the Taizhou demo loaded from its files; 10× and 100× are
``bench_geo.province`` with ten and a hundred times the demo's townships, grid cells and
units. Open events: the engine with N open events and live timers (``bench_core``'s
zero-cost routing port); start-up from a journal reuses ``bench_core.bench_recovery``.
Sizes run smallest first. The optional ones (full: the 100× province and 1,000,000 events;
quick: the journal) run only when the size below × 10 fits in what is left of the time
budget, and the report names what it skipped.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import (
    PERF_DOC,
    Headline,
    Section,
    Step,
    machine,
    md_table,
    no_step,
    percentile,
    plot_lines,
    update_section,
)

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Scale"
NOW = 1_800_000_000.0
PROVINCE_FACTORS = (1, 10)  # always measured
PROVINCE_IF_TIME = {True: (), False: (100,)}  # measured when the budget allows
EVENT_SIZES = (10_000, 100_000)  # always measured
EVENTS_IF_TIME = {True: (), False: (1_000_000,)}
JOURNAL_SIZES = {True: (), False: (1_000, 10_000, 100_000)}
JOURNAL_IF_TIME = {True: (1_000, 10_000), False: ()}
POINTS = {True: 2_000, False: 20_000}
BUDGET_S = {True: 20.0, False: 90.0}
DUE_IN_ONE_SECOND = 1_000  # events whose respond breach falls due in the timed fire_due
GIB = 2**30
MIB = 2**20
TARGET_100K_BYTES = GIB  # issue: 100,000 open events with live timers in under 1 GiB
TARGET_PROVINCE_P99_US = 100.0  # the Geography section's province target
TARGET_RESTART_S = 5.0  # the Dispatch core section's restart target


# -- measuring memory (in the child) ----------------------------------------------------------
def _rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    """Peak resident set size of this process so far, in bytes (Linux: ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _settled_rss() -> int:
    """RSS after a full collection and handing freed heap pages back (glibc malloc_trim)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _rss()


# -- child: geography ---------------------------------------------------------------------
def _geo_dataset(demo: bool, factor: int, towns: int, grids: int,
                 units: int) -> tuple[Any, float]:
    """(data set, seconds): the demo from its files, or a synthetic province."""
    t = time.perf_counter()
    if demo:
        from geo import DEMO_DIR
        from geo.loader import load_dataset

        ds = load_dataset(DEMO_DIR / "regions.geojson", DEMO_DIR / "zones.geojson",
                          DEMO_DIR / "teams.yaml")
    else:
        import numpy as np

        from bench.bench_geo import province

        ds = province(np.random.default_rng(7), towns=factor * towns, grids=factor * grids,
                      units=factor * units)
    return ds, time.perf_counter() - t


def child_geo(demo: bool, factor: int, towns: int, grids: int, units: int, points: int,
              loads: int) -> dict[str, Any]:
    """One geography size in this (fresh) process: build, memory, per-point timings."""
    import numpy  # noqa: F401 - libraries are imported before the baseline RSS
    import shapely

    from bench import bench_geo  # noqa: F401
    from geo.router import Router
    from geo.units import UnitIndex

    if demo:
        import geopandas  # noqa: F401 - the demo's import edge
    rss0 = _settled_rss()
    ds, data_s = _geo_dataset(demo, factor, towns, grids, units)
    rss_data = _settled_rss()
    t = time.perf_counter()
    router = Router(ds)
    unit_index = UnitIndex(ds)
    index_s = time.perf_counter() - t
    rss_index = _settled_rss()
    peak = _peak()
    t = time.perf_counter()
    shapely.STRtree([r.geometry for r in ds.regions.values()])
    bare_tree_s = time.perf_counter() - t
    files_s = [data_s + index_s]
    for _ in range(loads - 1 if demo else 0):  # the demo's start-up from files, again
        again, s = _geo_dataset(demo, factor, towns, grids, units)
        t = time.perf_counter()
        Router(again), UnitIndex(again)
        files_s.append(s + time.perf_counter() - t)
        del again
    import numpy as np

    from bench.bench_geo import time_points

    us = {k: [v / 1000 for v in vs] for k, vs in
          time_points(ds, router, unit_index, points, np.random.default_rng(11)).items()}
    s = ds.summary()
    return {"demo": demo, "factor": factor, "regions": len(ds.regions),
            "townships": s["regions"]["township"], "grids": s["regions"]["grid"],
            "counties": s["regions"]["county"], "zones": s["zones"], "teams": s["teams"],
            "units": s["units"], "data_s": data_s, "index_s": index_s,
            "bare_tree_s": bare_tree_s, "files_s": sorted(files_s)[len(files_s) // 2],
            "loads": len(files_s), "data_mib": (rss_data - rss0) / MIB,
            "index_mib": (rss_index - rss_data) / MIB, "mem_mib": (rss_index - rss0) / MIB,
            "peak_mib": peak / MIB,
            "points": points,
            **{f"{k}_p{p}": percentile(v, p) for k, v in us.items() for p in (50, 99)}}


# -- child: open events -------------------------------------------------------------------
def child_events(n: int) -> dict[str, Any]:
    """N open events with live timers in a fresh engine: intake, memory, GC, fire_due."""
    import orjson

    from bench.bench_core import GC_TUNED, BenchRouting, fields, policy
    from dispatch.core.engine import Engine

    gc.set_threshold(*GC_TUNED)  # what ``dispatch serve`` does at start
    eng = Engine(policy(), BenchRouting())
    k = min(DUE_IN_ONE_SECOND, n // 10)
    rss0 = _settled_rss()
    tenth = max(n // 10, 1)
    t = t_last = time.perf_counter()
    for i in range(n):
        if i == n - tenth:
            t_last = time.perf_counter()
        # the first k: created 60 s earlier, so their respond breach is due in [NOW, NOW + 1)
        eng.create(fields(i), "op", NOW - 60 + i / k if i < k else NOW)
    end = time.perf_counter()
    intake_per_s, last_tenth_per_s = n / (end - t), tenth / (end - t_last)
    t_gc = time.perf_counter()
    gc.collect()
    gc_pause_s = time.perf_counter() - t_gc
    rss = _settled_rss() - rss0
    peak = _peak()
    sample = [eng.get(f"E{i + 1:07d}") for i in range(0, n, max(n // 1000, 1))]
    json_bytes = sum(len(orjson.dumps(ev)) for ev in sample) / len(sample)
    return {"n": n, "intake_per_s": intake_per_s, "last_tenth_per_s": last_tenth_per_s,
            "rss_mib": rss / MIB, "bytes_per_event": rss / n, "json_bytes": json_bytes,
            "peak_mib": peak / MIB, "gc_pause_s": gc_pause_s, **_fire_cost(eng)}


def _fire_cost(eng: Any) -> dict[str, Any]:
    """Time ``fire_due`` on the breaches due in [NOW, NOW + 1), and bare heap pops as many."""
    import heapq

    t = time.perf_counter()
    warned = eng.fire_due(NOW - 1)  # the respond warnings (due 12 s before the breaches)
    warn_s = time.perf_counter() - t
    # the bare baseline: a plain heap of the same live deadlines (the engine's public view)
    heap = [(d.due, k) for k, ev in enumerate(eng.open_events())
            for d in eng.deadlines_of(ev["id"])]
    heapq.heapify(heap)
    heap_entries = len(heap)
    t = time.perf_counter()
    out = eng.fire_due(NOW + 1)
    breach_s = time.perf_counter() - t
    breaches = sum(r.action == "breached" for r in out.records)
    t = time.perf_counter()
    for _ in range(breaches):
        heapq.heappop(heap)
    bare_s = time.perf_counter() - t
    return {"heap_entries": heap_entries, "warnings": len(warned.records),
            "warn_us": warn_s / max(len(warned.records), 1) * 1e6, "breaches": breaches,
            "records": len(out.records), "breach_us": breach_s / max(breaches, 1) * 1e6,
            "bare_pop_us": bare_s / max(breaches, 1) * 1e6}


def child_journal(n: int) -> dict[str, Any]:
    """``bench_core.bench_recovery``: write a journal of N events, restart twice from it."""
    import asyncio
    import tempfile

    from bench.bench_core import bench_recovery

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        return asyncio.run(bench_recovery(f"{tmp}/journal.db", n))


# -- parent: run the children within the budget ---------------------------------------------
class _Plan:
    """Runs children in order, skipping a size when it would overrun the time budget."""

    def __init__(self, budget_s: float, step: Step) -> None:
        self.deadline = time.monotonic() + budget_s
        self.budget_s = budget_s
        self.step = step
        self.skipped: list[str] = []

    def child(self, label: str, args: list[str], projected_s: float | None) -> dict | None:
        """Run ``--child args``; skipped (None) when ``projected_s`` would overrun."""
        left = self.deadline - time.monotonic()
        if projected_s is not None and projected_s >= left:
            why = f"projected {projected_s:,.0f} s, " if projected_s else ""
            self.skipped.append(f"{label} ({why}{max(left, 0):,.0f} s of the "
                                f"{self.budget_s:,.0f} s budget left)")
            return None
        self.step(label)
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "bench.bench_scale", "--child", *args],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{label} failed:\n{proc.stderr[-2000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["wall_s"] = time.monotonic() - t
        return out

    def grow(self, rows: list[dict], sizes: tuple[int, ...], label: Callable[[int], str],
             args: Callable[[int], list[str]], gated: bool) -> None:
        """Append a row per size, smallest first; when ``gated``, a size runs only if the
        previous size's wall time × 10 fits in what is left of the budget."""
        for size in sizes:
            projected = (rows[-1]["wall_s"] * 10 if rows else 0.0) if gated else None
            r = self.child(label(size), args(size), projected)
            if r is None:
                return
            rows.append(r)


def collect(quick: bool, step: Step, budget_s: float) -> tuple[list[dict], ...]:
    """Run every child: (geography rows, open-event rows, journal rows, skipped sizes)."""
    plan = _Plan(budget_s, step)
    demo = plan.child("geo 1× (demo): loading", _geo_args("demo", 1, None, quick), None)
    assert demo is not None
    geo: list[dict] = [demo]

    def label(f: int) -> str:
        return f"geo {f}× (province): building"

    def geo_args(f: int) -> list[str]:
        return _geo_args("province", f, demo, quick)

    def ev_label(n: int) -> str:
        return f"events {n:,}: intake"

    def ev_args(n: int) -> list[str]:
        return ["events", str(n)]

    ev: list[dict] = []
    jr: list[dict] = []
    plan.grow(geo, PROVINCE_FACTORS, label, geo_args, gated=False)
    plan.grow(ev, EVENT_SIZES, ev_label, ev_args, gated=False)
    plan.grow(jr, JOURNAL_SIZES[quick], lambda n: f"journal {n:,}: restart",
              lambda n: ["journal", str(n)], gated=False)
    plan.grow(jr, JOURNAL_IF_TIME[quick], lambda n: f"journal {n:,}: restart",
              lambda n: ["journal", str(n)], gated=True)
    plan.grow(geo, PROVINCE_IF_TIME[quick], label, geo_args, gated=True)
    plan.grow(ev, EVENTS_IF_TIME[quick], ev_label, ev_args, gated=True)
    return geo, ev, jr, plan.skipped


def _geo_args(kind: str, factor: int, demo: dict | None, quick: bool) -> list[str]:
    d = demo or {"townships": 0, "grids": 0, "units": 0}
    return [kind, str(factor), "--towns", str(d["townships"]), "--grids", str(d["grids"]),
            "--units", str(d["units"]), "--points", str(POINTS[quick]),
            "--loads", "1" if quick else "3"]


# -- report ---------------------------------------------------------------------------------
def _x(rows: list[dict], i: int, key: str, what: str) -> str:
    """``what ×growth`` of ``key`` against the previous row ('' for the first)."""
    if i == 0 or not rows[i - 1][key]:
        return ""
    return f"{what} ×{rows[i][key] / rows[i - 1][key]:,.1f}"


def _growth(rows: list[dict], i: int, keys: dict[str, str]) -> str:
    return ", ".join(g for k, w in keys.items() if (g := _x(rows, i, k, w))) or "—"


def _slopes(rows: list[dict], size: str, keys: dict[str, str]) -> str:
    """How each figure grows with ``size`` (log-log, first to last row), flagging superlinear."""
    a, b = rows[0], rows[-1]
    parts = []
    for key, what in keys.items():
        if len(rows) < 2 or min(a[key], b[key], a[size], b[size]) <= 0:
            continue
        s = math.log(b[key] / a[key]) / math.log(b[size] / a[size])
        parts.append(f"{what} ∝ n^{s:.2f}{' — faster than linear' if s > 1.15 else ''}")
    return "; ".join(parts)


def _s(x: float) -> str:
    return f"{x * 1e3:,.0f} ms" if x < 1 else f"{x:,.2f} s"


GEO_GROWTH = {"regions": "regions", "units": "units", "index_s": "start-up",
              "mem_mib": "memory", "full_p99": "p99"}


def _geo_table(geo: list[dict]) -> str:
    rows = [["size", "regions (townships / grid cells)", "units", "start-up: Router + "
             "UnitIndex (bare STRtree build)", "memory: data set + indexes (peak RSS)",
             "locate + route + nearest unit p50 / p99", "of which locate / unit p99",
             "bare STRtree.query p50 / p99", "growth vs the size above"]]
    prov = [r for r in geo if not r["demo"]]
    for r in geo:
        i = prov.index(r) if r in prov else 0
        rows.append([
            "1× demo (real data, from files)" if r["demo"] else f"{r['factor']}× province",
            f"{r['regions']:,} ({r['townships']:,} / {r['grids']:,})", f"{r['units']:,}",
            f"{_s(r['index_s'])} ({_s(r['bare_tree_s'])})",
            f"{r['data_mib']:,.0f} + {r['index_mib']:,.0f} MiB ({r['peak_mib']:,.0f} MiB)",
            f"{r['full_p50']:.1f} / {r['full_p99']:.1f} µs",
            f"{r['locate_p99']:.1f} / {r['unit_p99']:.1f} µs",
            f"{r['bare_p50']:.1f} / {r['bare_p99']:.1f} µs (ours ×"
            f"{r['full_p99'] / r['bare_p99']:.1f})",
            "—" if r["demo"] else _growth(prov, i, GEO_GROWTH)])
    return md_table(rows)


def _events_table(ev: list[dict]) -> str:
    rows = [["open events", "memory (RSS growth)", "per event (as JSON)", "peak RSS",
             "intake/s (last tenth)", "full GC pause", "fire_due per breach (bare heappop)",
             "growth vs the size above"]]
    for i, r in enumerate(ev):
        rows.append([
            f"{r['n']:,}", f"{r['rss_mib']:,.0f} MiB",
            f"{r['bytes_per_event']:,.0f} B ({r['json_bytes']:,.0f} B)",
            f"{r['peak_mib']:,.0f} MiB",
            f"{r['intake_per_s']:,.0f} ({r['last_tenth_per_s']:,.0f})",
            _s(r["gc_pause_s"]), f"{r['breach_us']:.1f} µs ({r['bare_pop_us']:.2f} µs)",
            _growth(ev, i, {"n": "events", "rss_mib": "memory", "gc_pause_s": "GC pause",
                            "breach_us": "fire_due"})])
    return md_table(rows)


def _journal_table(jr: list[dict]) -> str:
    rows = [["journal of", "size", "restart: full replay", "restart: from the snapshot",
             "growth vs the size above"]]
    for i, r in enumerate(jr):
        rows.append([f"{r['events']:,} events", f"{r['journal_mb']:,.0f} MB",
                     _s(r["replay_s"]), _s(r["snapshot_s"]),
                     _growth(jr, i, {"events": "events", "replay_s": "replay",
                                     "snapshot_s": "snapshot"})])
    return md_table(rows)


def _how(quick: bool, geo: list[dict], budget_s: float) -> str:
    gen = ", ".join(f"{r['factor']}×: {_s(r['data_s'])}" for r in geo if not r["demo"])
    d = geo[0]
    return (
        f"Measured {machine()}, load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores at the "
        f"end{' — a --quick run' if quick else ''}; time "
        f"budget {budget_s:,.0f} s. Re-run with `.venv/bin/python -m bench.bench_scale` "
        "(it rewrites this section).\n\n"
        "How it was built: every size runs in a fresh Python process, so one size's memory "
        "does not pollute the next. Memory is RSS growth from the process after its imports "
        "to the structure built, each read after `gc.collect()` and glibc `malloc_trim(0)` "
        "(freed build garbage is not counted); peak RSS is `ru_maxrss`, garbage included. "
        "The demo row is the Taizhou data set loaded from its files (real, detailed "
        f"outlines); its start-up from files (`load_dataset` + `Router` + `UnitIndex`, "
        f"median of {d['loads']}) took {_s(d['files_s'])}. The curve is "
        "`bench_geo.province` at 1×, 10× and 100× the demo's townships, grid cells and "
        "units: one generator, so the sizes compare like with like (grid cells are cut by "
        "township borders, so there are more than asked for; the province keeps its "
        "3° × 3° frame and 90 counties at every size, so larger means denser, not wider). "
        f"Generating it is not start-up and is not in the tables ({gen}). Start-up is "
        "data set → `Router` + `UnitIndex` ready; its bare baseline is one `STRtree` over "
        "all region geometries. Per point: the `bench_geo` set-up (a third of the units "
        f"with positions, some stale; 10 % busy; `gc.freeze()`), {d['points']:,} points "
        "drawn uniformly inside the outline; bare = `STRtree.query(Point, "
        "predicate='intersects')` on the grid-cell tree, same points.\n\n"
        "Open events: `Engine.create` through `bench_core`'s zero-cost routing port, with "
        "`dispatch serve`'s GC thresholds; every event keeps six live timers (warn and "
        "breach of respond, depart, arrive). The full GC pause is one `gc.collect()` over "
        "the live state: what a generation-2 collection costs a server that has not frozen "
        f"it. `fire_due` is timed with {DUE_IN_ONE_SECOND:,} respond breaches due (and "
        "their escalations) among all the open events; its bare baseline pops as many "
        "entries from a copy of the same heap with `heapq.heappop`. Journal restarts are "
        "`bench_core.bench_recovery` (SQLite; full replay, then from the snapshot the "
        "first restart wrote). Growth (×) is against the size above; the slopes are "
        "log-log from the smallest to the largest size (n^1.00 = linear).\n")


def render(quick: bool, geo: list[dict], ev: list[dict], jr: list[dict],
           skipped: list[str], budget_s: float) -> str:
    """The markdown body of the ``## Scale`` section (without its heading)."""
    prov = [r for r in geo if not r["demo"]]
    parts = [_how(quick, geo, budget_s)]
    for title, table, rows, size, keys in (  # one table and one slope line per curve
            ("Geography", _geo_table(geo), prov, "regions", {
                "index_s": "start-up", "mem_mib": "memory", "full_p50": "p50",
                "full_p99": "p99", "bare_p99": "bare p99"}),
            ("Open events with live timers", _events_table(ev), ev, "n", {
                "rss_mib": "memory", "gc_pause_s": "full GC pause",
                "breach_us": "fire_due per breach", "bare_pop_us": "bare heappop"}),
            ("Start-up from the journal", _journal_table(jr) if jr else "", jr, "events", {
                "replay_s": "full replay", "snapshot_s": "from the snapshot"})):
        if not table:
            continue
        parts += [f"### {title}\n", table, ""]
        if len(rows) > 1:
            noun = {"n": "open events", "events": "journal events"}.get(size, size)
            parts.append(f"Growth with {noun} (log-log slope, {rows[0][size]:,} → "
                         f"{rows[-1][size]:,}): {_slopes(rows, size, keys)}.\n")
    if skipped:
        parts.append("Not measured in this run (time budget; the projection is the size "
                     "below × 10): " + "; ".join(skipped) + ".\n")
    return "\n".join(parts)


def headlines(geo: list[dict], ev: list[dict], jr: list[dict]) -> list[Headline]:
    """The summary rows: memory at 100,000 events, routing and start-up at scale."""
    out: list[Headline] = []
    for e in ev:
        if e["n"] == 100_000:
            out.append(Headline(
                "100,000 open events with live timers: memory (RSS growth, fresh process)",
                f"{e['rss_mib']:,.0f} MiB ({e['bytes_per_event']:,.0f} B/event)",
                f"the same events as JSON {e['json_bytes'] * e['n'] / MIB:,.0f} MiB",
                e["bytes_per_event"] / e["json_bytes"], "< 1 GiB",
                e["rss_mib"] * MIB < TARGET_100K_BYTES))
    for r in geo:
        if not r["demo"] and r["factor"] >= 10:
            out.append(Headline(
                f"routing at {r['factor']}× ({r['regions']:,} regions, {r['units']:,} units): "
                "locate + route + nearest unit p50 / p99",
                f"{r['full_p50']:.1f} / {r['full_p99']:.1f} µs",
                f"bare STRtree.query p99 {r['bare_p99']:.1f} µs",
                r["full_p99"] / r["bare_p99"], f"p99 < {TARGET_PROVINCE_P99_US:.0f} µs",
                r["full_p99"] < TARGET_PROVINCE_P99_US))
    r = geo[-1]
    out.append(Headline(
        f"geography start-up at {r['factor']}× (Router + UnitIndex), memory",
        f"{_s(r['index_s'])}, {r['mem_mib']:,.0f} MiB",
        f"bare STRtree build {_s(r['bare_tree_s'])}", r["index_s"] / r["bare_tree_s"]))
    for j in jr:
        if j["events"] != 100_000:
            continue
        out.append(Headline(
            f"restart from a journal of {j['events']:,} events: full replay / snapshot",
            f"{_s(j['replay_s'])} / {_s(j['snapshot_s'])}",
            target=f"< {TARGET_RESTART_S:.0f} s",
            met=max(j["replay_s"], j["snapshot_s"]) < TARGET_RESTART_S))
    return out


def plots(geo: list[dict], ev: list[dict], jr: list[dict]) -> list[Path]:
    """Log-log curves: per-point routing, memory of open events, start-up."""
    prov = [r for r in geo if not r["demo"]]

    def pts(rows: list[dict], x: str, y: str) -> list[tuple[float, float]]:
        return [(r[x], r[y]) for r in rows]

    return [
        plot_lines("scale_routing", "Routing one point vs regions (synthetic province)",
                   "regions", "µs", {
                       "locate + route + unit p50": pts(prov, "regions", "full_p50"),
                       "locate + route + unit p99": pts(prov, "regions", "full_p99"),
                       "bare STRtree.query p50": pts(prov, "regions", "bare_p50"),
                       "bare STRtree.query p99": pts(prov, "regions", "bare_p99")},
                   logx=True, logy=True),
        plot_lines("scale_events", "Memory vs open events (live timers)", "open events",
                   "MiB", {
                       "engine (RSS growth)": pts(ev, "n", "rss_mib"),
                       "same events as JSON": [(r["n"], r["json_bytes"] * r["n"] / MIB)
                                               for r in ev]},
                   logx=True, logy=True, hline=(GIB / MIB, "1 GiB")),
        plot_lines("scale_startup", "Start-up vs size", "regions (geography) / events "
                   "(journal)", "seconds", {
                       "province: Router + UnitIndex": pts(prov, "regions", "index_s"),
                       "journal: full replay": pts(jr, "events", "replay_s"),
                       "journal: from the snapshot": pts(jr, "events", "snapshot_s")},
                   logx=True, logy=True),
    ]


def measure(quick: bool, step: Step = no_step, budget_s: float | None = None,
            write_plots: bool = True) -> Section:
    """``run`` with a time budget of your choice (seconds), and the plots optional."""
    budget = BUDGET_S[quick] if budget_s is None else budget_s
    geo, ev, jr, skipped = collect(quick, step, budget)
    body = render(quick, geo, ev, jr, skipped, budget)
    return Section(TITLE, body, headlines(geo, ev, jr),
                   plots(geo, ev, jr) if write_plots else [])


def run(quick: bool, step: Step = no_step) -> Section:
    """The ``## Scale`` section: geography at 1×/10×(/100×), open events, journal restarts."""
    return measure(quick, step)


def _child_main(args: argparse.Namespace) -> None:
    kind, size = args.child[0], int(args.child[1])
    if kind in ("demo", "province"):
        out = child_geo(kind == "demo", size, args.towns, args.grids, args.units, args.points,
                        args.loads)
    elif kind == "events":
        out = child_events(size)
    else:
        out = child_journal(size)
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    """Print the section; rewrite ``## Scale`` in docs/performance.md unless ``--no-write``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, about 20 s")
    ap.add_argument("--no-write", action="store_true", help="touch nothing under docs/")
    ap.add_argument("--budget", type=float, help="time budget in seconds (default 180, quick "
                    "20); the optional sizes that would overrun it are skipped")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    for name in ("towns", "grids", "units", "points", "loads"):
        ap.add_argument(f"--{name}", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child_main(args)
        return 0
    t = time.monotonic()
    sec = measure(args.quick, lambda s: print(f"… {s}", file=sys.stderr, flush=True),
                  args.budget, write_plots=not args.no_write)
    print(sec.body)
    for h in sec.headlines:
        ratio = f" (×{h.ratio:.1f})" if h.ratio is not None else ""
        print(f"- {h.what}: {h.figure}; {h.baseline or 'no baseline'}{ratio}; target "
              f"{h.target or '—'}, met: {h.met}")
    print(f"(wall {time.monotonic() - t:.0f} s)")
    if not args.no_write:
        update_section(PERF_DOC, TITLE, sec.body)
        print(f"updated {PERF_DOC.relative_to(ROOT)} (## {TITLE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
