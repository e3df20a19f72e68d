"""The one clock protocol: the fake clock only moves forward, when told to."""

from __future__ import annotations

import time

import pytest

from dispatch.clock import Clock, FakeClock, SystemClock


def test_fake_clock() -> None:
    c: Clock = FakeClock()
    assert c.now() == 1_767_225_600.0  # 2026-01-01T00:00:00Z
    fc = FakeClock(100.0)
    assert fc.advance(2.5) == 102.5 and fc.now() == 102.5
    assert fc.set(200.0) == 200.0
    with pytest.raises(ValueError):
        fc.advance(-1)
    with pytest.raises(ValueError):
        fc.set(199.0)
    assert fc.now() == 200.0


def test_system_clock_is_epoch_seconds() -> None:
    assert abs(SystemClock().now() - time.time()) < 1.0
