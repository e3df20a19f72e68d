"""Every benchmark, one table, one report: ``python -m bench [--quick] [--only NAME …]``.

Runs the modules below in order with a progress bar, prints the summary table (each headline
figure next to the bare baseline measured in the same run, the ratio and the target), and
— on a full run — rewrites docs/performance.md: the machine, the date, the summary, every
module's section and the plots (PNG, under docs/perf/). ``--quick`` (smaller sizes, under
two minutes) only prints, unless ``--write`` is given; ``--only`` runs some modules and
replaces just their sections.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import os
import platform
import re
import sys
import time
from collections.abc import Callable

from tqdm import tqdm

from bench import report
from bench.report import PERF_DOC, Headline, Section, cpu_model, md_table, update_section

# name, module, rough share of a full run's time (for the progress bar)
MODULES: list[tuple[str, str, float]] = [
    ("core", "bench.bench_core", 1.5),
    ("geo", "bench.bench_geo", 1.5),
    ("scale", "bench.bench_scale", 2.5),
    ("server", "bench.bench_server", 5.0),
    ("redis", "bench.bench_redis", 2.5),
    ("night", "bench.bench_night", 3.0),
    ("webhooks", "bench.bench_webhooks", 1.0),
    ("evidence", "bench.bench_evidence", 1.0),
]


def machine_line() -> str:
    """Cores, CPU, memory, Python and OS: the first thing every figure depends on."""
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem_s = f", {mem:.0f} GiB RAM"
    except (ValueError, OSError):
        mem_s = ""
    return (f"{os.cpu_count()} cores ({cpu_model()}){mem_s}, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


def python_speed() -> float:
    """Seconds for 10 million additions in a pure-Python loop.

    A yardstick for comparing runs on different machines (or on one shared machine at
    different times): every other figure in the report scales roughly with it.
    """
    t = time.perf_counter()
    s = 0
    for i in range(10_000_000):
        s += i
    return time.perf_counter() - t


def run_module(module: str, quick: bool, step: Callable[[str], None]) -> list[Section]:
    """One module's ``run``, always as a list of sections."""
    mod = importlib.import_module(module)
    out = mod.run(quick, step)
    gc.collect()
    return out if isinstance(out, list) else [out]


def summary_rows(headlines: list[Headline]) -> list[list[str]]:
    """The summary table: figure, bare baseline of the same run, ratio, target, verdict."""
    rows = [["what", "figure", "bare baseline, same run", "ratio to bare", "target", "met"]]
    for h in headlines:
        verdict = "—" if h.met is None else ("yes" if h.met else "**no**")
        rows.append([h.what, h.figure, h.baseline or "—",
                     f"×{h.ratio:.2f}" if h.ratio is not None else "—", h.target or "—",
                     verdict])
    return rows


def render_doc(sections: list[Section], quick: bool, took_s: float, speed_s: float) -> str:
    """The whole of docs/performance.md."""
    heads = [h for s in sections for h in s.headlines]
    now = dt.datetime.now(dt.UTC)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    parts = [
        "# Performance", "",
        "Written by `python -m bench` (the full run, about "
        f"{took_s / 60:.1f} minutes here); rerun it to measure your machine. `python -m bench "
        "--quick` runs everything at smaller sizes in under two minutes and only prints; "
        "`python -m bench --only server` reruns one module and replaces its section. Each "
        "module also runs on its own (`python -m bench.bench_server`, …).", "",
        f"**Machine:** {machine_line()}. **Date:** {now:%Y-%m-%d %H:%M} UTC"
        f"{' (quick run)' if quick else ''}. Load average at the end: {load}. **Python "
        f"yardstick:** {speed_s:.2f} s for 10 million additions in a pure-Python loop (lower is "
        "faster) — compare it before comparing two reports. "
        f"The load generator, Redis and the server run together on these {os.cpu_count()} "
        "cores; every headline is read against a bare baseline measured in the same run.", "",
        "## Summary", "",
        "Ratio to bare = our cost divided by the bare baseline's (latency ÷ latency, or "
        "bare throughput ÷ our throughput): ×1.00 is as fast as a bare aiohttp handler, "
        "STRtree query or SQLite insert doing the same work without the product around it.", "",
        md_table(summary_rows(heads)), "",
    ]
    for s in sections:
        parts += [f"## {s.title}", "", with_plots(s), ""]
    old = PERF_DOC.read_text(encoding="utf-8") if PERF_DOC.exists() else ""
    for title in KEPT:
        body = section_of(old, title)
        if body:
            parts += [f"## {title}", "", body, ""]
    parts += [f"## {HISTORY}", "", history(old, heads, speed_s, took_s, quick), ""]
    return "\n".join(parts)


# Written by hand, not measured by a run (e.g. before/after a change, with the commits
# compared): kept as they are when the report is rewritten.
KEPT = ("Changes, measured",)


def section_of(doc: str, title: str) -> str:
    """The body of ``## title`` in ``doc`` (up to the next ``## ``), stripped; "" if absent."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    return m.group(1).strip() if m else ""


HISTORY = "Earlier runs"
HISTORY_HEAD = ["date", "Python yardstick", "core intakes/s", "routing p99 (demo)",
                "push p99 at 500/s", "ceiling (embedded)", "full run took"]


def history(old_doc: str, heads: list[Headline], speed_s: float, took_s: float,
            quick: bool) -> str:
    """The table of earlier full runs, kept from the old report, with this run added."""
    m = re.search(rf"^## {HISTORY}\n(.*?)(?=^## |\Z)", old_doc, re.S | re.M)
    rows = [line for line in (m.group(1) if m else "").splitlines()
            if line.startswith("| ") and not line.startswith(("| date", "| ---"))]
    if not quick:
        def fig(prefix: str) -> str:
            return next((h.figure for h in heads if h.what.startswith(prefix)), "—")
        rows.append("| " + " | ".join([
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}", f"{speed_s:.2f} s",
            fig("core: intakes"), fig("routing, one point"), fig("intake → push p99 at 500"),
            fig("load ceiling (push p99 < 100 ms), one process, embedded"),
            f"{took_s / 60:.1f} min"]) + " |")
    return "\n".join([
        "One row per full run (the rows before are kept when the report is rewritten). A "
        "machine's speed can change between sessions: read the yardstick first.", "",
        md_table([HISTORY_HEAD]), *rows])


def with_plots(s: Section) -> str:
    """The section's body, with an image link for every plot it does not link itself."""
    body = s.body.strip()
    for p in s.plots:
        if p.name not in body:
            body += f"\n\n![{s.title}: {p.stem.replace('_', ' ')}](perf/{p.name})"
    return body


def main(argv: list[str] | None = None) -> int:
    names = [n for n, _, _ in MODULES]
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, under two minutes")
    ap.add_argument("--only", nargs="+", choices=names, help="run only these modules")
    ap.add_argument("--write", action="store_true", help="write docs/performance.md even "
                    "when --quick")
    ap.add_argument("--no-write", action="store_true", help="never touch docs/performance.md")
    a = ap.parse_args(argv)
    write = not a.no_write and (a.write or not a.quick)
    report.WRITE_PLOTS = write
    chosen = [m for m in MODULES if not a.only or m[0] in a.only]
    speed = python_speed()
    t0 = time.perf_counter()
    sections: list[Section] = []
    times: dict[str, float] = {}
    total = sum(w for _, _, w in chosen)
    with tqdm(total=total, unit="", bar_format="{l_bar}{bar}| {elapsed} elapsed "
              "{postfix}", file=sys.stderr, dynamic_ncols=True) as bar:
        for name, module, weight in chosen:
            bar.set_description(name)

            def step(what: str) -> None:
                bar.set_postfix_str(what)

            t_mod = time.perf_counter()
            sections += run_module(module, a.quick, step)
            times[name] = time.perf_counter() - t_mod
            bar.update(weight)
    took = time.perf_counter() - t0
    heads = [h for s in sections for h in s.headlines]
    print(f"\nMeasured on {machine_line()}, {dt.date.today()}, in {took:.0f} s"
          f"{' (--quick)' if a.quick else ''}; Python yardstick {speed:.2f} s; "
          + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ".\n")
    print_table(summary_rows(heads))
    if write and not a.only:
        PERF_DOC.write_text(render_doc(sections, a.quick, took, speed), encoding="utf-8")
        print(f"\nwrote {PERF_DOC}")
    elif write:
        for s in sections:
            update_section(PERF_DOC, s.title, with_plots(s))
        print(f"\nreplaced {', '.join(s.title for s in sections)} in {PERF_DOC}")
    return 0


def print_table(rows: list[list[str]]) -> None:
    """The summary as aligned plain text."""
    clean = [[c.replace("**", "") for c in r] for r in rows]
    widths = [max(len(r[i]) for r in clean) for i in range(len(clean[0]))]
    for k, r in enumerate(clean):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    raise SystemExit(main())
