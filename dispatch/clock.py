"""The one clock protocol: ``now()`` in UTC epoch seconds.

The core never reads a clock; edges pass ``now`` in. The server uses ``SystemClock``: the
wall clock, except that a jump of the wall clock is absorbed slowly instead of all at once
(no mass false escalation; see its docstring). Tests use ``FakeClock``, which only moves
when told to and refuses to go backwards (after trio's MockClock).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Clock(Protocol):
    """Anything that tells the time as UTC epoch seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The server's clock: UTC epoch seconds that follow the wall clock but never jump.

    Deadlines are absolute wall times in the journal, so a wall clock stepped forward by an
    hour would make every deadline of the next hour fall due at once (mass false escalation)
    and one stepped back would hold them all. Policy:

    - Time is measured with a monotonic source (``CLOCK_BOOTTIME`` where there is one, so a
      suspended machine's sleep counts as time passed) anchored to the wall clock at start.
    - While the wall clock agrees (within what ``slew_rate`` allows since the last reading)
      ``now()`` is exactly the wall clock: NTP's own small slewing passes through.
    - When the wall clock jumps (forwards or backwards), ``now()`` does not: it moves
      towards the wall clock by at most ``slew_rate`` seconds per second (5 %: a jump of one
      hour is absorbed in 20 hours, a minute in 20 minutes), then follows it exactly again.
      Meanwhile every interval (a 60 s respond window…) is measured at most 5 % short (jump
      forwards) or long (backwards), and the time never goes backwards. Each jump of more
      than ``jump_s`` is logged once and counted in ``jumps``.
    - A restart anchors to the wall clock again (only the wall clock survives a restart);
      ``not_before(t)`` keeps the time from starting before the journal's last record.
      To adopt a large correction at once, restart the server.
    """

    def __init__(self, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] | None = None, slew_rate: float = 0.05,
                 jump_s: float = 1.0) -> None:
        if not 0.0 < slew_rate < 1.0:
            raise ValueError(f"slew_rate must be between 0 and 1, not {slew_rate!r}")
        self._wall = wall
        self._mono = mono or _default_mono()
        self.slew_rate = float(slew_rate)
        self.jump_s = float(jump_s)
        self.jumps = 0
        self._lock = threading.Lock()
        self._last_mono = self._mono()
        self._last = float(self._wall())
        self._jumping = False

    def now(self) -> float:
        with self._lock:
            m, w = self._mono(), self._wall()
            dt = max(0.0, m - self._last_mono)
            est = self._last + dt  # where the time is by the monotonic source
            err = w - est
            step = self.slew_rate * dt
            if err > step:
                t = est + step
            elif err < -step:
                t = est - step  # still >= self._last: slew_rate < 1
            else:
                t = w
            jumping = abs(err) > self.jump_s
            if jumping and not self._jumping:
                self.jumps += 1
                log.warning("the wall clock jumped by %+.1f s; the server's time follows it "
                            "at %g s per second instead of jumping", err, self.slew_rate)
            self._jumping = jumping
            self._last, self._last_mono = t, m
            return t

    def behind(self) -> float:
        """How far the wall clock is ahead of ``now()`` (negative: behind), in seconds."""
        t = self.now()
        return self._wall() - t

    def not_before(self, t: float) -> None:
        """Never report a time earlier than ``t`` (e.g. the journal's last record after a
        restart with the wall clock set back); the time then slews back to the wall clock."""
        with self._lock:
            if t > self._last:
                self._last = float(t)


def _default_mono() -> Callable[[], float]:
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        try:
            time.clock_gettime(boottime)
            return functools.partial(time.clock_gettime, boottime)
        except OSError:
            pass
    return time.monotonic


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
