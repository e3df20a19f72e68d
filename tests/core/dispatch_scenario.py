"""The ``Scenario`` helper: engine + fake clock + memory store + every record recorded."""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).parent))

from table_routing import T1, TableRouting  # noqa: E402

from dispatch.clock import FakeClock  # noqa: E402
from dispatch.core.engine import Engine, Outcome  # noqa: E402
from dispatch.core.policy import Category, Policy, TimerWindows  # noqa: E402
from dispatch.core.records import Record  # noqa: E402
from dispatch.store.memory import MemoryStore  # noqa: E402

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the memory store's) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    raise AssertionError("the coroutine suspended")


def make_policy() -> Policy:
    """Defaults 60/180/900; fishing has a longer respond window; zone Z1 overrides arrive."""
    cats = {
        "street_vending": Category("street_vending", "占道经营", 2, {}),
        "illegal_fishing": Category("illegal_fishing", "非法捕捞", 1, {"respond_s": 120}),
        "noise": Category("noise", "噪声", 3, {"respond_s": 90, "arrive_s": 1200}),
    }
    return Policy(defaults=TimerWindows(), categories=cats,
                  zones={"Z1": {"arrive_s": 1800, "respond_s": 30}}, max_skew_s=30.0)


class Scenario:
    """Drives an engine on a fake clock and stores every record in a memory store."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.t0 = self.clock.now()
        self.routing = TableRouting()
        self.policy = make_policy()
        self.engine = Engine(self.policy, self.routing)
        self.store = MemoryStore()
        self.records: list[Record] = []

    def _keep(self, out: Outcome) -> Outcome:
        stored = run_sync(self.store.append(out.records))
        self.records.extend(stored)
        return out

    def fields(self, where: tuple[float, float] = T1, **kw: Any) -> dict[str, Any]:
        lon, lat = where
        f = {"location": {"lon": lon, "lat": lat, "crs": "wgs84",
                          "original": {"lon": lon, "lat": lat}},
             "category": "street_vending", "description": "test", "source": "hotline",
             "priority": None, "external_id": None, "reporter": None, "reported_at": None}
        f.update(kw)
        return f

    def create(self, where: tuple[float, float] = T1, key: str | None = None,
               **kw: Any) -> dict[str, Any]:
        out = self._keep(self.engine.create(self.fields(where, **kw), "op-1", self.clock.now(),
                                            idempotency_key=key))
        assert out.event is not None
        return out.event

    def act(self, event_id: str, action: str, **kw: Any) -> Outcome:
        return self._keep(self.engine.act(event_id, action, "field-1", self.clock.now(), **kw))

    def at(self, offset_s: float) -> list[Record]:
        """Move the clock to t0 + offset_s and fire what is due; returns the new records."""
        self.clock.set(self.t0 + offset_s)
        return self._keep(self.engine.fire_due(self.clock.now())).records

    def actions(self, event_id: str) -> list[str]:
        return [r.action for r in self.records if r.event_id == event_id]
