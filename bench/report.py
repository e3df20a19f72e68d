"""Shared by the benchmarks: the machine line, percentiles, and docs/performance.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from pathlib import Path


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
