"""Suite-wide rules: required dependencies fail instead of skipping; the fuzzing budget.

``DISPATCH_REQUIRE`` (comma-separated: ``redis``, ``redis-sentinel``, ``chromium``, or ``all``)
names the external programs a run must have. ``.ci/run`` sets it to ``all``, so in CI a missing
redis-server, redis-sentinel or Chromium is a failure of the whole run, never ~40 quiet skips:

- the session refuses to start when one of them is missing (one clear message, exit code 4);
- ``missing(dep, reason)`` — what every fixture calls when its program is not there — fails the
  test when ``dep`` is required and skips it otherwise (a developer's machine without Chromium
  can still run the rest);
- a test skipped for any reason that names a required program is reported as failed, so a
  fixture elsewhere that still calls ``pytest.skip`` cannot hide it.

The Chromium binary is ``$CHROMIUM`` (default ``/usr/bin/chromium``), the same variable that
``tests/run.sh`` checks and installs for.

``FUZZ_LONG=1`` makes the property-based and stateful tests run longer: ``fuzz_examples(n)``
returns ``n`` normally and ``n * FUZZ_LONG_FACTOR`` (default 20) under ``FUZZ_LONG=1``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from pathlib import Path
from typing import Any, NoReturn

import pytest

DEPENDENCIES = ("redis", "redis-sentinel", "chromium")
CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
FUZZ_LONG = os.environ.get("FUZZ_LONG", "") not in ("", "0")
FUZZ_LONG_FACTOR = int(os.environ.get("FUZZ_LONG_FACTOR", "20"))


def required() -> set[str]:
    """The dependencies this run must have (from ``DISPATCH_REQUIRE``)."""
    raw = {p.strip().lower() for p in os.environ.get("DISPATCH_REQUIRE", "").split(",")}
    raw.discard("")
    if raw & {"all", "1", "yes", "true"}:
        return set(DEPENDENCIES)
    unknown = raw - set(DEPENDENCIES)
    if unknown:
        raise pytest.UsageError(
            f"DISPATCH_REQUIRE names unknown dependencies {sorted(unknown)}; "
            f"known: {', '.join(DEPENDENCIES)} or all")
    return raw


def locate(dep: str) -> str | None:
    """The path of ``dep``'s program, or None when it is not installed."""
    if dep == "chromium":
        return CHROMIUM if Path(CHROMIUM).exists() else None
    name = "redis-server" if dep == "redis" else dep
    found = shutil.which(name)
    if found is None and Path(f"/usr/bin/{name}").exists():
        found = f"/usr/bin/{name}"
    return found


def missing(dep: str, reason: str) -> NoReturn:
    """``dep`` is not installed: fail when the run requires it, else skip with ``reason``."""
    if dep not in DEPENDENCIES:
        raise ValueError(f"unknown dependency {dep!r}")
    if dep in required():
        pytest.fail(f"{reason} (required: DISPATCH_REQUIRE={os.environ['DISPATCH_REQUIRE']})",
                    pytrace=False)
    pytest.skip(reason)


def fuzz_examples(n: int) -> int:
    """A hypothesis ``max_examples`` of ``n`` for the default run, larger under FUZZ_LONG=1."""
    return n * FUZZ_LONG_FACTOR if FUZZ_LONG else n


def pytest_configure(config: pytest.Config) -> None:
    absent = sorted(d for d in required() if locate(d) is None)
    if absent:
        where = {"chromium": f"{CHROMIUM} ($CHROMIUM)"}
        names = ", ".join(where.get(d, d) for d in absent)
        raise pytest.UsageError(
            f"DISPATCH_REQUIRE={os.environ['DISPATCH_REQUIRE']} but not installed: {names} "
            "(tests/run.sh installs redis-server, redis-sentinel and chromium with apt-get)")


_NAMES = {"redis": "redis-server", "redis-sentinel": "redis-sentinel", "chromium": "chromium"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    need = required()
    if not need or not report.skipped or hasattr(report, "wasxfail"):
        return report
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple)
                 else report.longrepr).lower()
    hit = [d for d in sorted(need) if _NAMES[d] in reason]
    if hit:
        report.outcome = "failed"
        report.longrepr = (f"skipped although DISPATCH_REQUIRE requires {', '.join(hit)}: "
                           f"{reason}")
    return report
