"""bench.bench_scale: the child protocol at tiny sizes, and the report from known rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``bench`` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import bench_scale as bs  # noqa: E402


@pytest.fixture(scope="module")
def children() -> dict[str, dict]:
    """The events and province children at tiny sizes, started together (they take ~2 s)."""
    runs = {"events": ["events", "200"],
            "province": ["province", "1", "--towns", "12", "--grids", "150", "--units", "40",
                         "--points", "50", "--loads", "1"]}
    procs = {k: subprocess.Popen([sys.executable, "-m", "bench.bench_scale", "--child", *a],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for k, a in runs.items()}
    out = {}
    for k, p in procs.items():
        stdout, _ = p.communicate(timeout=60)
        assert p.returncode == 0, k
        out[k] = json.loads(stdout.strip().splitlines()[-1])
    return out


def test_events_child_fires_the_breaches_it_set_up(children: dict[str, dict]) -> None:
    r = children["events"]
    assert r["n"] == 200
    assert r["breaches"] == 20  # a tenth of the events is due in the timed fire_due
    assert r["records"] == 40  # each breach escalates township → county
    assert r["warnings"] == 20
    assert r["rss_mib"] > 0 and r["json_bytes"] > 100 and r["intake_per_s"] > 0


def test_province_child_builds_routes_and_counts(children: dict[str, dict]) -> None:
    r = children["province"]
    assert r["townships"] == 12 and r["units"] == 40 and not r["demo"]
    assert r["grids"] >= 150  # cut by township borders: at least as many as asked
    assert 0 < r["full_p50"] <= r["full_p99"]
    assert r["bare_p50"] > 0 and r["index_s"] > 0


def geo_row(factor: int, regions: int, index_s: float, p99: float, demo: bool = False) -> dict:
    return {"demo": demo, "factor": factor, "regions": regions, "townships": regions // 40,
            "grids": regions - regions // 40, "units": regions // 2, "index_s": index_s,
            "bare_tree_s": index_s / 20, "data_mib": regions / 1000, "index_mib": 1.0,
            "mem_mib": regions / 1000 + 1, "peak_mib": 50.0, "data_s": 0.1, "files_s": 0.3,
            "loads": 1, "points": 100, "full_p50": p99 / 2, "full_p99": p99,
            "locate_p50": 1.0, "locate_p99": 2.0, "unit_p50": 1.0, "unit_p99": 2.0,
            "bare_p50": 1.0, "bare_p99": 4.0}


def ev_row(n: int, mib: float) -> dict:
    return {"n": n, "rss_mib": mib, "bytes_per_event": mib * bs.MIB / n, "json_bytes": 1000.0,
            "peak_mib": mib + 30, "intake_per_s": 1e4, "last_tenth_per_s": 1e4,
            "gc_pause_s": n * 3e-6, "breach_us": 50.0, "bare_pop_us": 4.0}


@pytest.mark.parametrize(("ys", "slope", "flagged"), [
    ((1.0, 10.0), "1.00", False),
    ((1.0, 100.0), "2.00", True),
    ((2.0, 2.0), "0.00", False),
])
def test_slopes_are_log_log_and_flag_faster_than_linear(ys: tuple[float, float], slope: str,
                                                        flagged: bool) -> None:
    rows = [{"n": 1000, "y": ys[0]}, {"n": 10_000, "y": ys[1]}]
    text = bs._slopes(rows, "n", {"y": "y"})
    assert f"n^{slope}" in text
    assert ("faster than linear" in text) is flagged


def test_render_and_headlines_from_rows() -> None:
    geo = [geo_row(1, 5000, 0.06, 20.0, demo=True), geo_row(1, 6000, 0.08, 20.0),
           geo_row(10, 60000, 1.0, 30.0)]
    ev = [ev_row(10_000, 45.0), ev_row(100_000, 2000.0)]
    jr = [{"events": 1000, "journal_mb": 2.0, "replay_s": 0.05, "snapshot_s": 0.04}]
    body = bs.render(False, geo, ev, jr, ["events 1,000,000: intake (projected 99 s)"], 180)
    assert "### Geography" in body and "### Open events with live timers" in body
    assert "regions ×10.0" in body and "memory ×44.4" in body
    assert "events 1,000,000" in body  # skipped sizes are said, not hidden
    heads = {h.what.split(":")[0]: h for h in bs.headlines(geo, ev, jr)}
    mem = heads["100,000 open events with live timers"]
    assert mem.met is False and mem.target == "< 1 GiB"  # 2,000 MiB
    assert heads["routing at 10× (60,000 regions, 30,000 units)"].ratio == pytest.approx(7.5)
    assert not any("journal" in w for w in heads)  # only a 100,000-event journal is a headline

