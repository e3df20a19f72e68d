"""The one clock protocol: ``now()`` in UTC epoch seconds.

The core never reads a clock; edges pass ``now`` in. Tests use ``FakeClock``, which only
moves when told to and refuses to go backwards (after trio's MockClock).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the time as UTC epoch seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock (``time.time()``)."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock for tests: starts at ``start`` (2026-01-01T00:00:00Z) and moves only when told."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, s: float) -> float:
        """Move forward by ``s`` seconds (ValueError if negative); returns the new time."""
        if s < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {s})")
        self._now += s
        return self._now

    def set(self, t: float) -> float:
        """Jump to ``t`` (ValueError if earlier than now); returns the new time."""
        if t < self._now:
            raise ValueError(f"a clock cannot go backwards ({t} < {self._now})")
        self._now = float(t)
        return self._now
