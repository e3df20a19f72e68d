"""The demo simulator drives a real server through its public API only."""

from __future__ import annotations

from collections import Counter

from dispatch.simulate import Simulator
from tests.server.conftest import TOKENS, start_server


async def test_simulated_city_creates_moves_acts_and_breaches(tmp_path):
    srv = await start_server(tmp_path, timers={"respond_s": 0.6, "depart_s": 1.8,
                                               "arrive_s": 12})
    try:
        sim = Simulator(srv.url, TOKENS["admin"]["token"], rate_per_min=6, seed=7,
                        late_share=0.3, time_scale=0.01)
        await sim.run(duration_s=5.0)
        rt = srv.state.runtime
        events = list(rt.engine.events())
        assert sim.created >= 10 and len(events) == sim.created
        statuses = Counter(e["status"] for e in events)
        assert statuses["responded"] + statuses["departed"] + statuses["arrived"] \
            + statuses["resolved"] > 0
        assert any(e["breaches"] for e in events), "late units must cause breaches"
        assert any(e["escalations"] for e in events)
        ds = rt.dataset
        fishing = [e for e in events if e["category"] == "illegal_fishing"]
        assert all(e["zone"] and ds.zones[e["zone"]].kind == "reservoir" for e in fishing)
        moved = [u for u in ds.units if rt.units.position(u, srv.state.clock.now())["source"]
                 == "reported"]
        assert moved, "units drive toward their events"
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
