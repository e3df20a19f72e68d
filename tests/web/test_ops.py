"""/ops in a real Chromium against a real server."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.web.conftest import region_parents, region_point, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HUANGYAN, JIAOJIANG = "331003", "331002"
# 长潭水库 (Changtan reservoir), in 北洋镇, 黄岩区: a point every demo data set has.
BEIYANG = (121.08, 28.585)

GREEN, AMBER, RED, PURPLE = "rgb(34, 165, 89)", "rgb(242, 164, 12)", "rgb(229, 56, 59)", \
    "rgb(142, 68, 239)"


def ops_ready(page: Any) -> None:
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    page.wait_for_function("() => window.__ops && window.__ops.regionIds().length > 0",
                           timeout=15000)


def row(page: Any, event_id: str) -> Any:
    return page.locator(f'.ev-row[data-id="{event_id}"]')


def test_posted_event_appears_within_a_second_coloured_and_counting(server, open_page):
    o = open_page("/ops", "city")
    page = o.page
    ops_ready(page)
    ev = server.post_event(*BEIYANG, category="street_vending", description="占道经营 测试")
    t0 = time.monotonic()
    row(page, ev["id"]).wait_for(timeout=1000)
    assert time.monotonic() - t0 < 1.0
    r = row(page, ev["id"])
    assert r.get_attribute("data-state") == "on_time"
    badge = r.locator(".badge")
    assert badge.evaluate("n => getComputedStyle(n).backgroundColor") == GREEN
    assert "占道经营" in r.inner_text()
    # The countdown runs from the server's deadline (about 60 s for respond).
    cd = r.locator(".cd")
    first = cd.inner_text()
    assert re.fullmatch(r"\d+:\d\d", first), first
    secs = int(first.split(":")[0]) * 60 + int(first.split(":")[1])
    assert 50 <= secs <= 60, first
    wait_until(lambda: cd.inner_text() != first, timeout=3, what="the countdown to tick")
    # The marker on the map has the same colour (zoom in to it: markers may be clustered).
    r.click()
    marker = page.locator(f'.ev-icon span[data-event="{ev["id"]}"]')
    marker.wait_for(timeout=5000)
    assert marker.evaluate("n => getComputedStyle(n).backgroundColor") == GREEN
    # The detail panel shows routing steps and the timeline.
    page.wait_for_selector("#detail-view .timeline li", timeout=5000)
    assert page.locator("#detail-view .routing li").count() >= 1


def test_breach_turns_red_flashes_and_beeps(server, open_page):
    o = open_page("/ops", "city")
    page = o.page
    ops_ready(page)
    ev = server.post_event(*BEIYANG, category="noise", description="噪声 超时测试")
    row(page, ev["id"]).wait_for(timeout=2000)
    wait_until(lambda: row(page, ev["id"]).get_attribute("data-state") in ("breached", "escalated"),
               timeout=6, what="breach")
    r = row(page, ev["id"])
    colour = r.locator(".badge").evaluate("n => getComputedStyle(n).backgroundColor")
    assert colour in (RED, PURPLE)
    assert "flash" in (r.get_attribute("class") or "")
    assert page.evaluate("window.__ops.beeps") >= 1
    # An overdue countdown is shown as negative or moves on to the next stage's deadline.
    assert r.locator(".cd").inner_text()


def test_county_operator_sees_nothing_outside_the_county(server, open_page):
    jj = region_point(server, JIAOJIANG, "county")
    hy_event = server.post_event(*BEIYANG, description="黄岩 事件")
    jj_event = server.post_event(*jj, description="椒江 事件")
    assert hy_event["county"] == HUANGYAN and jj_event["county"] == JIAOJIANG
    o = open_page("/ops", "huangyan")
    page = o.page
    ops_ready(page)
    row(page, hy_event["id"]).wait_for(timeout=5000)
    # A new event in the other county never reaches this page.
    jj_event2 = server.post_event(*jj, description="椒江 事件 2")
    hy_event2 = server.post_event(*BEIYANG, description="黄岩 事件 2")
    row(page, hy_event2["id"]).wait_for(timeout=3000)
    ids = set(page.evaluate("window.__ops.eventIds()"))
    listed = set(page.eval_on_selector_all(".ev-row", "ns => ns.map(n => n.dataset.id)"))
    assert hy_event["id"] in ids and hy_event2["id"] in ids
    for other in (jj_event["id"], jj_event2["id"]):
        assert other not in ids and other not in listed
    # Every event it shows is in the county.
    for eid in ids:
        assert server.get(f"/api/v1/events/{eid}")["county"] == HUANGYAN
    # Every region drawn lies in the county.
    parents = region_parents(server)
    drawn = page.evaluate("window.__ops.regionIds()")
    assert drawn

    def in_county(rid: str) -> bool:
        cur: str | None = rid
        while cur is not None:
            if cur == HUANGYAN:
                return True
            cur = parents.get(cur)
        return False

    outside = [r for r in drawn if not in_county(r)]
    assert not outside, outside
    # Units: only the county's (the server's scoped list), none of the other county's.
    units = set(page.evaluate("window.__ops.unitIds()"))
    hy_units = {u["id"] for u in server.get("/api/v1/units", "huangyan")["units"]}
    jj_units = {u["id"] for u in server.get("/api/v1/units", "jiaojiang")["units"]}
    assert units and units <= hy_units
    assert not units & jj_units
    # The map is centred on the county.
    c = page.evaluate("window.__ops.center()")
    hy_pt = region_point(server, HUANGYAN, "county")
    assert abs(c["lng"] - hy_pt[0]) < 0.5 and abs(c["lat"] - hy_pt[1]) < 0.5


def test_actions_from_the_detail_panel(server, open_page):
    o = open_page("/ops", "city")
    page = o.page
    ops_ready(page)
    ev = server.post_event(*BEIYANG, description="需要升级")
    row(page, ev["id"]).click()
    page.wait_for_selector("#detail-view .timeline li", timeout=5000)
    # Resolving waits for a unit on scene.
    assert page.locator("#do-resolve").is_disabled()
    page.fill("#action-note", "现场需要区级支援")
    page.click("#do-escalate")
    wait_until(lambda: server.get(f"/api/v1/events/{ev['id']}")["tier"] != ev["tier"],
               what="escalation")
    full = server.get(f"/api/v1/events/{ev['id']}")
    assert any(x.get("note") == "现场需要区级支援" for x in full["timeline"])
    for action in ("respond", "depart", "arrive"):
        server.act(ev["id"], action)
    page.wait_for_selector("#do-resolve:not([disabled])", timeout=5000)
    page.fill("#action-note", "已处理完毕")
    page.click("#do-resolve")
    wait_until(lambda: server.get(f"/api/v1/events/{ev['id']}")["status"] == "resolved",
               what="resolve")
    # A resolved event leaves the list, and the page goes back to the list.
    page.wait_for_selector("#list-view:not(.hidden)", timeout=3000)
    row(page, ev["id"]).wait_for(state="detached", timeout=3000)
    # Cancel asks twice, on the button.
    ev2 = server.post_event(*BEIYANG, description="重复上报")
    row(page, ev2["id"]).click()
    page.wait_for_selector("#detail-view .timeline li", timeout=5000)
    page.fill("#action-note", "重复事件")
    page.click("#do-cancel")
    assert server.get(f"/api/v1/events/{ev2['id']}")["status"] != "cancelled"
    page.click("#do-cancel")
    wait_until(lambda: server.get(f"/api/v1/events/{ev2['id']}")["status"] == "cancelled",
               what="cancel")
    # Reassign to another team of the county, from the list of teams.
    ev3 = server.post_event(*BEIYANG, description="改派测试")
    row(page, ev3["id"]).click()
    page.wait_for_selector("#detail-view .timeline li", timeout=5000)
    options = page.eval_on_selector_all("#reassign-team option", "ns => ns.map(n => n.value)")
    target = next(t for t in options if t != ev3["team"])
    page.select_option("#reassign-team", target)
    page.click("#do-reassign-team")
    wait_until(lambda: server.get(f"/api/v1/events/{ev3['id']}")["team"] == target,
               what="reassign")


def test_reconnect_resumes_from_the_last_sequence_number(server, open_page, browser):
    urls: list[str] = []
    sockets: list[Any] = []

    def handler(ws: Any) -> None:
        urls.append(ws.url)
        ws.connect_to_server()
        sockets.append(ws)

    o = open_page("/ops?", None)  # open blank first, route the socket, then sign in
    page = o.page
    page.route_web_socket(re.compile(r".*/ws\?.*"), handler)
    page.goto(server.url + f"/ops?token={server.token('city')}")
    ops_ready(page)
    before = server.post_event(*BEIYANG, description="断线前")
    row(page, before["id"]).wait_for(timeout=3000)
    last_seq = page.evaluate("window.__ops.live().lastSeq")
    assert isinstance(last_seq, int) and last_seq >= before["seq"]
    # Drop the connection; post while the page is away.
    sockets[-1].close()
    missed = server.post_event(*BEIYANG, description="断线期间")
    row(page, missed["id"]).wait_for(timeout=10000)
    assert len(urls) >= 2
    assert "since=" not in urls[0]
    assert f"since={last_seq}" in urls[1]
    assert "positions=batch" in urls[1]


def test_english_switch_is_remembered(server, open_page):
    o = open_page("/ops", "city")
    page = o.page
    ops_ready(page)
    assert page.locator(".title").inner_text().startswith("指挥中心")
    page.click("#lang-toggle")
    assert page.locator(".title").inner_text().startswith("Command centre")
    assert page.evaluate("document.documentElement.lang") == "en"
    page.reload()
    ops_ready(page)
    assert page.locator(".title").inner_text().startswith("Command centre")
    page.click("#lang-toggle")
    assert page.locator(".title").inner_text().startswith("指挥中心")
    # The token was taken out of the address bar and remembered.
    assert "token=" not in page.url


def test_description_is_shown_as_text_never_html(server, open_page):
    evil = "<img src=x onerror=alert(1)>"
    o = open_page("/ops", "city")
    page = o.page
    ops_ready(page)
    ev = server.post_event(*BEIYANG, description=evil)
    r = row(page, ev["id"])
    r.wait_for(timeout=2000)
    assert r.locator(".desc").inner_text() == evil
    r.click()
    page.wait_for_selector("#detail-view .timeline li", timeout=5000)
    assert page.locator("#detail-description").inner_text() == evil
    # The marker's tooltip shows the text too (markers at one spot overlap: no real hover).
    page.locator(f'.ev-icon span[data-event="{ev["id"]}"]').wait_for(timeout=5000)
    page.locator(f'.ev-icon:has(span[data-event="{ev["id"]}"])').dispatch_event("mouseover")
    page.wait_for_selector(".leaflet-tooltip", timeout=3000)
    assert evil in page.locator(".leaflet-tooltip").first.inner_text()
    assert page.locator("img:not(.leaflet-tile):not(.leaflet-marker-icon)").count() == 0
    page.wait_for_timeout(300)
    assert not o.dialogs


def test_field_sign_in_link_and_qr_code(server, open_page):
    page = open_page("/ops", "city").page
    ops_ready(page)
    page.click("#handover")
    page.fill("#handover-token", "abc-field-token")
    page.click(".modal .btn.primary")
    link = page.locator("#handover-link")
    link.wait_for(timeout=3000)
    assert link.inner_text() == f"{server.url}/field?token=abc-field-token"
    # The QR code is drawn: the canvas has dark modules on white.
    page.wait_for_function("""() => {
      const c = document.querySelector('#handover-qr');
      if (!c) return false;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let dark = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 50) dark++;
      return dark > 1000;
    }""", timeout=3000)


def test_units_move_live_with_the_age_of_their_position(server, open_page):
    o = open_page("/ops", "city")
    page = o.page
    ops_ready(page)
    # A unit that never reported (no other test of this module's server moves it): drawn at
    # its base, greyed.
    units = server.get("/api/v1/units", "huangyan")["units"]
    unit = next((u for u in units if u["source"] != "reported"), None)
    assert unit is not None, "every 黄岩 unit has reported: none is left to show at its base"
    uid = unit["id"]
    page.evaluate(f"""(() => {{ const m = window.__ops.map();
        m.setView([{unit['lat']}, {unit['lon']}], 17, {{animate: false}}); }})()""")
    pin = page.locator(f'.unit-icon:has(span[data-unit="{uid}"])')
    pin.wait_for(timeout=5000)
    assert "stale" in (pin.get_attribute("class") or "")
    lon, lat = unit["lon"] + 0.0005, unit["lat"] + 0.0003
    status, _ = server.call("PUT", f"/api/v1/units/{uid}/position", "admin",
                            {"lon": lon, "lat": lat})
    assert status == 200
    wait_until(lambda: page.evaluate(
        f"window.__ops.state.units.get('{uid}').source") == "reported", what="unit.updated")
    pin = page.locator(f'.unit-icon:has(span[data-unit="{uid}"])')
    pin.wait_for(timeout=3000)
    assert "stale" not in (pin.get_attribute("class") or "")
    assert pin.locator(".unit-age").inner_text().endswith("s")


def test_countdowns_follow_the_server_clock_and_sort_by_deadline(server, open_page, browser):
    # The browser's clock is five minutes fast: countdowns must still be the server's.
    import datetime as dt

    o = open_page("/ops?", None)
    page = o.page
    page.clock.install(time=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    page.goto(server.url + f"/ops?token={server.token('city')}")
    ops_ready(page)
    slow = server.post_event(*BEIYANG, category="street_vending", description="60 秒")
    fast = server.post_event(*BEIYANG, category="noise", description="2 秒")
    row(page, slow["id"]).wait_for(timeout=3000)
    row(page, fast["id"]).wait_for(timeout=3000)
    text = row(page, slow["id"]).locator(".cd").inner_text()
    assert re.fullmatch(r"0:[45]\d|1:00", text), text
    order = page.eval_on_selector_all(".ev-row", "ns => ns.map(n => n.dataset.id)")
    assert order.index(fast["id"]) < order.index(slow["id"])
