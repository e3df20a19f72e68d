"""Shared by the benchmarks: the machine line, percentiles, and docs/performance.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """Cores, CPU model, Python version and the date, for every figure we record."""
    return (f"on {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
            f"{dt.date.today().isoformat()}")


def load_note() -> str:
    """The load average against the core count, read now: what the figures were measured
    under (computed on every run, never a fixed claim about the machine)."""
    one, five, fifteen = os.getloadavg()
    return (f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on "
            f"{os.cpu_count()} cores at the end")


def percentile(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def write_section(doc: Path, text: str) -> None:
    """``text`` starts with its ``## Title`` line: replace that section of ``doc``."""
    title, _, body = text.strip("\n").partition("\n")
    update_section(doc, title.removeprefix("## "), body)


def update_section(doc: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of ``doc``, leaving the rest alone."""
    heading = f"## {title}"
    old = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n\n"
    new_section = f"{heading}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: new_section, old) if pattern.search(old) else (
        old.rstrip() + "\n\n" + new_section)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")


def module_main(run: Callable[..., Any]) -> None:
    """``python -m bench.bench_X [--quick] [--no-write]`` for a module whose ``run(quick,
    step)`` gives its section(s): print them, and replace them in docs/performance.md."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/performance.md")
    a = ap.parse_args()
    out = run(a.quick, lambda s: print(s, flush=True))
    for sec in out if isinstance(out, list) else [out]:
        print(f"## {sec.title}\n\n{sec.body}\n")
        if not a.no_write:
            update_section(PERF_DOC, sec.title, sec.body)


# --- the one benchmark command (python -m bench) -----------------------------------------

PERF_DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
PLOT_DIR = PERF_DOC.parent / "perf"
WRITE_PLOTS = True  # python -m bench turns it off when it does not write the report


@dataclass
class Headline:
    """One row of the summary table: a figure, its bare baseline and its target."""

    what: str
    figure: str
    baseline: str = ""  # the bare baseline measured in the same run, with its value
    ratio: float | None = None  # ours / bare (how many times the bare cost or latency)
    target: str = ""
    met: bool | None = None  # None: no target


@dataclass
class Section:
    """What one benchmark module contributes to docs/performance.md."""

    title: str  # the ``## title`` of its section
    body: str  # markdown, without the heading
    headlines: list[Headline] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)  # PNGs already written under PLOT_DIR


Step = Callable[[str], None]


def no_step(_: str) -> None:
    """The progress callback when a module runs on its own."""


def plot_lines(name: str, title: str, xlabel: str, ylabel: str,
               series: dict[str, list[tuple[float, float]]], *, logx: bool = False,
               logy: bool = False, hline: tuple[float, str] | None = None) -> Path:
    """Write ``docs/perf/<name>.png``: one line per series (label → [(x, y), …]).

    Returns the path; writes nothing when ``WRITE_PLOTS`` is off (a run that only prints).
    """
    path = PLOT_DIR / f"{name}.png"
    if not WRITE_PLOTS:
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOT_DIR.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for label, pts in series.items():
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        if pts:
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot(xs, ys, marker="o", label=label)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def md_table(rows: list[list[str]]) -> str:
    """A markdown table; the first row is the header."""
    out = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)
