"""Types (issue 12, house style "mypy on the core"): the event is a typed structure.

``dispatch.core.event.Event`` names every key of an event's state; mypy checks the modules of
``dispatch/`` (the file list is ``[tool.mypy]`` in pyproject.toml) against it, so a misspelt
key or a value of the wrong type fails here. ``tests/core/event_check.py``
checks the states themselves at run time (the stateful tests run it on every state); the
tests below show it refuses what is not an event.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

sys.path.insert(0, str(Path(__file__).parent / "core"))

from dispatch_scenario import Scenario  # noqa: E402
from event_check import check_event  # noqa: E402
from table_routing import T1  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_passes_on_the_typed_modules() -> None:
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr


def test_mypy_catches_a_misspelt_event_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from dispatch.core.event import Event\n\n"
                   "def late(ev: Event) -> float | None:\n"
                   "    return ev['respond_at']\n")
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary",
                          "--config-file", str(ROOT / "pyproject.toml"), str(bad)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "respond_at" in run.stdout, run.stdout


def an_event() -> dict[str, Any]:
    s = Scenario()
    eid = s.create(T1)["id"]
    s.act(eid, "respond")
    return dict(s.engine.get(eid))


def test_a_made_event_passes() -> None:
    check_event(an_event())


@pytest.mark.parametrize("change", [
    lambda ev: ev.pop("status"),                            # a key missing
    lambda ev: ev.update(stauts="dispatched"),              # an unknown key
    lambda ev: ev.update(priority="high"),                  # a value of the wrong type
    lambda ev: ev.update(timeline=[{**ev["timeline"][0], "extra": 1}]),  # unknown, nested
    lambda ev: ev.update(deadlines={"respond": 1.0}),       # not keyed by every stage
])
def test_what_is_not_an_event_is_refused(change: Any) -> None:
    ev = an_event()
    change(ev)
    with pytest.raises((AssertionError, msgspec.ValidationError)):
        check_event(ev)
