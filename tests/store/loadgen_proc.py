"""A load generator for the SIGKILL recovery test: engine + SqliteStore + table routing.

``python loadgen_proc.py DB N [--clock T] [--mode load|one]``: rebuilds the engine from the
journal, then (load) creates N events with up to 64 in flight, printing each event id once
its record is committed (the answer), or (one) creates one event. Every line is flushed, so a
test can SIGKILL it mid-way and compare. Lines: ``READY <last_seq>``, ``ANSWERED <id>``.
It fires no deadlines: start-up firing is ``Runtime``'s and is tested on ``Runtime`` itself
(tests/server/test_runtime_timers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))

from dispatch_scenario import make_policy  # noqa: E402
from table_routing import T1, TableRouting  # noqa: E402

from dispatch.core.engine import Engine  # noqa: E402
from dispatch.store.sqlite import SqliteStore  # noqa: E402


def fields(i: int, external: bool = True) -> dict:
    lon, lat = T1
    return {"location": {"lon": lon, "lat": lat, "crs": "wgs84",
                         "original": {"lon": lon, "lat": lat}},
            "category": "street_vending", "description": f"load {i}", "source": "loadgen",
            "priority": None, "external_id": f"L{i}" if external else None,
            "reporter": None, "reported_at": None}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("n", type=int)
    ap.add_argument("--clock", type=float, default=1_767_225_600.0)
    ap.add_argument("--mode", default="load", choices=["load", "one"])
    a = ap.parse_args()
    store = SqliteStore(a.db, synchronous="NORMAL")
    await store.open()
    engine = Engine(make_policy(), TableRouting())
    after = 0
    while batch := await store.read(after_seq=after, limit=5000):
        for r in batch:
            engine.apply(r)
        after = batch[-1].seq
    print("READY", engine.last_seq, flush=True)
    n = 1 if a.mode == "one" else a.n
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            out = engine.create(fields(i, a.mode == "load"), "loadgen", a.clock + i * 1e-3)
            await store.append(out.records)
            assert out.event is not None
            sys.stdout.write(f"ANSWERED {out.event['id']}\n")
            sys.stdout.flush()

    await asyncio.gather(*(one(i) for i in range(n)))
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
