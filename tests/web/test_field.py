"""/field on a phone-sized page: next-step button, offline queue, one-handed layout."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest

from tests.web.conftest import PHONE, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BEIYANG = (121.08, 28.585)


def assigned_event(server, **kw: Any) -> dict[str, Any]:
    ev = server.post_event(*BEIYANG, **kw)
    assert ev.get("unit"), f"no unit was dispatched: {ev}"
    return ev


def field_ready(page: Any, event_id: str | None = None) -> None:
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    page.wait_for_selector("#next-step", timeout=10000)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_tapping_respond_changes_the_event_on_ops(server, open_page):
    ev = assigned_event(server, description="接单测试")
    tok = server.field_token(ev["unit"])
    ops = open_page("/ops", "city").page
    ops.wait_for_selector("#conn.conn-online", timeout=15000)
    ops.locator(f'.ev-row[data-id="{ev["id"]}"]').wait_for(timeout=5000)
    field = open_page("/field", tok, viewport=PHONE, has_touch=True, is_mobile=True).page
    field_ready(field)
    assert field.locator("#event-description").inner_text() == "接单测试"
    btn = field.locator("#next-step")
    assert btn.inner_text().strip() == "接单"
    btn.tap()
    row = ops.locator(f'.ev-row[data-id="{ev["id"]}"]')
    wait_until(lambda: row.get_attribute("data-status") == "responded", timeout=3,
               what="the ops row to show responded")
    assert "已接单" in row.inner_text()
    # The button moved on to the next step; the countdown is for departing now.
    wait_until(lambda: field.locator("#next-step").inner_text().strip() == "出发", timeout=3)
    assert field.locator("#countdown").inner_text()


def test_offline_taps_queue_and_replay_with_their_times(server, open_page):
    ev = assigned_event(server, description="离线测试")
    tok = server.field_token(ev["unit"])
    o = open_page("/field", tok, viewport=PHONE, has_touch=True, is_mobile=True)
    page = o.page
    # Every POST of an action this page makes (sent, or refused by the offline network).
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url.rsplit("/", 1)[1])
            if r.method == "POST" and f"/events/{ev['id']}/" in r.url else None)
    field_ready(page)
    o.context.set_offline(True)
    page.wait_for_selector("#conn.conn-offline", timeout=5000)
    page.locator("#next-step").tap()                      # 接单 respond
    page.wait_for_function("() => document.querySelector('#next-step') && "
                           "document.querySelector('#next-step').dataset.action === 'depart' && "
                           "!document.querySelector('#next-step').disabled", timeout=3000)
    # Pacing, not a wait for something: the two taps get times a second apart, so the
    # replay below can show that each kept its own time (not the time it was sent).
    time.sleep(1.0)
    page.locator("#next-step").tap()                      # 出发 depart
    page.wait_for_selector('#pending-bar[data-count="2"]', timeout=3000)
    assert "2" in page.locator("#pending-count").inner_text()
    queued = json.loads(page.evaluate(f"localStorage.getItem('tzd.field.queue.{ev['unit']}')"))
    assert [q["action"] for q in queued] == ["respond", "depart"]
    # Nothing has reached the server yet. That nothing was even tried while offline is shown
    # below by the page's requests: the replay (the marker) is all of them, one POST a tap.
    assert server.get(f"/api/v1/events/{ev['id']}")["status"] == "dispatched"
    o.context.set_offline(False)
    wait_until(lambda: server.get(f"/api/v1/events/{ev['id']}")["status"] == "departed",
               timeout=15, what="the queued taps to reach the server")
    page.wait_for_selector("#pending-bar.hidden", state="attached", timeout=5000)
    assert sent == ["respond", "depart"], sent
    full = server.get(f"/api/v1/events/{ev['id']}")
    got = {x["action"]: x["at"] for x in full["timeline"]
           if x["action"] in ("responded", "departed")}
    assert set(got) == {"responded", "departed"}, full["timeline"]
    assert abs(ts(got["responded"]) - ts(queued[0]["at"])) < 0.002
    assert abs(ts(got["departed"]) - ts(queued[1]["at"])) < 0.002
    assert ts(full["responded_at"]) == pytest.approx(ts(queued[0]["at"]), abs=0.002)
    # The phone shows the next step.
    wait_until(lambda: page.locator("#next-step").inner_text().strip() == "到场", timeout=3)


def test_one_handed_at_360px_and_description_is_text(server, open_page):
    evil = "<img src=x onerror=alert(1)>"
    ev = assigned_event(server, description=evil)
    tok = server.field_token(ev["unit"])
    o = open_page("/field", tok, viewport=PHONE, has_touch=True, is_mobile=True)
    page = o.page
    field_ready(page)
    # The current assignment may be another event of this unit: pick ours.
    if page.locator("#event-description").inner_text() != evil:
        page.locator(".btn.other", has_text="占道经营").first.tap()
    wait_until(lambda: page.locator("#event-description").inner_text() == evil, timeout=3)
    assert page.locator("#main img").count() == 0
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    box = page.locator("#next-step").bounding_box()
    assert box["width"] >= 300 and box["height"] >= 60
    cd = page.locator("#countdown").bounding_box()
    assert cd["height"] >= 60
    # Navigation links: AMap URI with WGS84 coordinates, and a geo: URI.
    amap = page.locator("#nav-amap").get_attribute("href")
    assert amap.startswith("https://uri.amap.com/navigation?to=") and "coordinate=wgs84" in amap
    assert page.locator("#nav-geo").get_attribute("href").startswith("geo:")


def test_position_is_shared_and_throttled(server, open_page):
    ev = assigned_event(server, description="位置共享")
    unit = ev["unit"]
    tok = server.field_token(unit)
    here = {"longitude": 121.07, "latitude": 28.58}
    o = open_page("/field", tok, viewport=PHONE, has_touch=True, is_mobile=True,
                  geolocation=here, permissions=["geolocation"])
    page = o.page
    # (when the browser sent it, in s; longitude sent): Playwright hands events over late.
    puts: list[tuple[float, float]] = []
    page.on("requestfinished", lambda r: puts.append((r.timing["startTime"] / 1000,
                                                      r.post_data_json["lon"]))
            if r.method == "PUT" and r.url.endswith(f"/units/{unit}/position") else None)
    field_ready(page)

    def reported() -> dict[str, Any] | None:
        units = server.get("/api/v1/units", "admin")["units"]
        u = next(x for x in units if x["id"] == unit)
        return u if u["source"] == "reported" else None

    u = wait_until(reported, timeout=10, what="the first position")
    assert abs(u["lon"] - here["longitude"]) < 1e-6 and abs(u["lat"] - here["latitude"]) < 1e-6
    # Moving around: many fixes, at most one PUT per 10 s, and the latest fix wins. The
    # sleeps only pace the fixes (a stream over two seconds, like a moving phone). That
    # nothing went in between is shown by the marker: the next PUT, which carries the last fix.
    # (Playwright hands events over only inside its own calls: expect_*, not a poll.)
    last = 121.07 + 0.001 * 5
    position = f"/units/{unit}/position"
    with page.expect_request_finished(lambda r: r.method == "PUT" and r.url.endswith(position)
                                      and r.post_data_json["lon"] == pytest.approx(last),
                                      timeout=15000):
        for k in range(5):
            o.context.set_geolocation({"longitude": 121.07 + 0.001 * (k + 1),
                                       "latitude": 28.58})
            time.sleep(0.4)
    assert len(puts) >= 2 and puts[-1][1] == pytest.approx(last), puts
    gaps = [b[0] - a[0] for a, b in zip(puts, puts[1:], strict=False)]
    assert all(g >= 9.5 for g in gaps), (gaps, puts)
    assert "位置共享中" in page.locator("#position-status").inner_text()


def test_a_new_assignment_arrives_live(server, open_page):
    ev = assigned_event(server, description="改派到我")
    picks = server.get(f"/api/v1/events/{ev['id']}/units")
    units = {u["id"]: u for u in server.get("/api/v1/units", "admin")["units"]}
    other = next(p["unit"] for p in picks["nearby"]
                 if p["unit"] != ev["unit"] and units[p["unit"]]["available"])
    tok = server.field_token(other)
    page = open_page("/field", tok, viewport=PHONE, has_touch=True, is_mobile=True).page
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    page.wait_for_selector("#no-assignment", timeout=5000)
    server.act(ev["id"], "reassign", unit=other, note="就近改派")
    page.wait_for_selector("#next-step", timeout=3000)
    assert page.locator("#event-description").inner_text() == "改派到我"


def test_a_phone_with_a_wrong_clock_records_the_real_time(server, open_page):
    import datetime as dt

    ev = assigned_event(server, description="手机时间不准")
    tok = server.field_token(ev["unit"])
    o = open_page("/field?", None, viewport=PHONE, has_touch=True, is_mobile=True)
    page = o.page
    page.clock.install(time=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))
    page.goto(server.url + f"/field?token={tok}")
    field_ready(page)
    o.context.set_offline(True)
    page.wait_for_selector("#conn.conn-offline", timeout=5000)
    before = time.time()
    page.locator("#next-step").tap()
    after = time.time()
    o.context.set_offline(False)
    wait_until(lambda: server.get(f"/api/v1/events/{ev['id']}")["status"] == "responded",
               timeout=15, what="the queued tap to reach the server")
    at = ts(server.get(f"/api/v1/events/{ev['id']}")["responded_at"])
    assert before - 1.0 <= at <= after + 1.0, (before, at, after)
