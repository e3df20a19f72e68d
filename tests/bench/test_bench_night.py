"""bench.bench_night: the pure helpers behind the zero-loss check and the figures."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``bench`` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import bench_night as bn  # noqa: E402


@pytest.mark.parametrize(("live", "replay", "expect"), [
    ([3, 5, 8], [3, 5, 8], {"live": 3, "replayed": 3}),
    ([3, 8], [3, 5, 8], {"dropped": 1}),
    ([3, 5, 5, 8], [3, 5, 8], {"duplicated": 1}),
    ([3, 5, 8], [3, 5, 5, 8], {"duplicated": 1}),
    ([3, 8, 5], [3, 5, 8], {"out_of_order": 1}),
    ([3, 4, 5, 8], [3, 5, 8], {"unexpected": 1}),
    ([], [3, 5, 8], {"dropped": 3, "live": 0}),
])
def test_check_seqs(live: list[int], replay: list[int], expect: dict[str, int]) -> None:
    c = bn.check_seqs(live, replay, after=2, upto=8)
    clean = {"dropped": 0, "duplicated": 0, "out_of_order": 0, "unexpected": 0,
             "differing": 0}
    for key, want in (clean | expect).items():
        assert getattr(c, key) == want, key


def test_check_seqs_only_looks_inside_the_window() -> None:
    # before the snapshot (<= after) and after the last seq seen live (> upto) do not count
    c = bn.check_seqs([1, 3, 5, 9], [2, 3, 5, 7], after=2, upto=6)
    assert (c.live, c.replayed, c.dropped, c.unexpected) == (2, 2, 0, 0)


def test_check_seqs_compares_what_each_seq_said() -> None:
    live = {3: ("event.created", "E1", 1), 5: ("timer.warning", "E1", 2)}
    replay = {3: ("event.created", "E1", 1), 5: ("timer.warning", "E1", 3)}
    c = bn.check_seqs([3, 5], [3, 5], 2, 5, live, replay)
    assert c.differing == 1 and c.dropped == 0


def test_field_plan_is_stable_and_near_its_shares() -> None:
    plans = Counter(bn.field_plan(f"E{i}") for i in range(20_000))
    assert bn.field_plan("E42") == bn.field_plan("E42")
    assert abs(plans["on_time"] / 20_000 - 0.5) < 0.03
    assert abs(plans["stalls"] / 20_000 - 0.2) < 0.03
    assert abs(plans["silent"] / 20_000 - 0.3) < 0.03


def test_timer_due_reads_the_timeline_entry_of_its_stage() -> None:
    msg = {"type": "timer.breached", "stage": "depart", "event": {"timeline": [
        {"action": "breached", "note": "respond", "at": "2026-01-01T08:00:15.000+08:00"},
        {"action": "breached", "note": "depart", "at": "2026-01-01T08:00:40.250+08:00"},
        {"action": "escalated", "note": "depart", "at": "2026-01-01T08:00:40.250+08:00"},
    ]}}
    assert bn.timer_due(msg) == bn.epoch("2026-01-01T00:00:40.250+00:00")
    msg["type"] = "timer.warning"
    assert bn.timer_due(msg) is None


def test_windowed_groups_by_window_start() -> None:
    out = bn.windowed([(0.1, 1.0), (4.9, 2.0), (5.0, 3.0), (12.0, 4.0)], 5.0)
    assert out == {0.0: [1.0, 2.0], 5.0: [3.0], 10.0: [4.0]}
