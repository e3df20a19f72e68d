"""Screenshots of the three pages, desktop (1440×900) and phone (360×740), for the README.

    .venv/bin/python tests/web/screenshots.py [--out docs/screenshots]

Starts a real `dispatch serve` on the demo data (a temporary journal), feeds it a morning's
worth of events through the API (some on time, some late, some escalated, units reporting
positions), then photographs /ops, /field and /supervisor with Debian's Chromium.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.web.conftest import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    start_server,
    stop_server,
)

BEIYANG = (121.08, 28.585)
CATS = ["street_vending", "illegal_construction", "cooking_fumes", "illegal_fishing"]
TEXTS = {
    "street_vending": ["路口流动摊贩占道经营，影响通行", "夜市摊位越线经营"],
    "illegal_construction": ["居民楼顶搭建彩钢棚", "院内违规加盖一层"],
    "cooking_fumes": ["餐馆油烟直排，居民投诉", "烧烤摊油烟扰民"],
    "illegal_fishing": ["水库库区有人电鱼", "禁渔期库区撒网捕捞"],
    "noise": ["工地夜间施工噪声扰民", "广场舞音响过大"],
}


def seed(srv, n: int = 60, span_s: float = 100.0) -> dict:
    """Feed the server for about `span_s` seconds, the way a busy morning looks.

    Events arrive over the whole span; most are taken (respond) within the minute, some
    late, some not at all (they breach and escalate); taken ones depart, arrive and are
    resolved a little later. Units report positions near their events.
    """
    from shapely.geometry import Point, shape

    rng = random.Random(7)
    towns = srv.get("/api/v1/regions?level=township")["features"]
    shapes = [shape(f["geometry"]) for f in towns]

    def point_in(poly):
        minx, miny, maxx, maxy = poly.bounds
        for _ in range(200):
            p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
            if poly.contains(p):
                return round(p.x, 6), round(p.y, 6)
        rp = poly.representative_point()
        return round(rp.x, 6), round(rp.y, 6)

    plan: list[tuple[float, str, int]] = []  # (time, what, index)
    specs = []
    for i in range(n):
        cat = rng.choice(CATS)
        t0 = rng.uniform(0, span_s - 5)
        specs.append((cat, point_in(rng.choice(shapes))))
        plan.append((t0, "post", i))
        if rng.random() < 0.8:
            tr = t0 + (rng.uniform(5, 55) if rng.random() < 0.8 else rng.uniform(61, 80))
            td = tr + rng.uniform(10, 60)
            ta = td + rng.uniform(10, 40)
            plan += [(tr, "respond", i), (td, "depart", i), (ta, "arrive", i)]
            if rng.random() < 0.5:
                plan.append((ta + rng.uniform(2, 10), "resolve", i))
    plan.sort()
    ids: dict[int, dict] = {}
    start = time.monotonic()
    field_ev = None
    for at, what, i in plan:
        if at > span_s:
            continue
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if what == "post":
            cat, (lon, lat) = specs[i]
            status, ev = srv.call("POST", "/api/v1/events", "intake", {
                "location": {"lon": lon, "lat": lat}, "category": cat,
                "description": rng.choice(TEXTS[cat]),
                "source": rng.choice(["hotline", "grid", "video_ai", "patrol"]),
                "external_id": f"shot-{i}"})
            if status in (200, 201):
                ids[i] = ev
                if ev.get("unit"):
                    srv.call("PUT", f"/api/v1/units/{ev['unit']}/position", "admin", {
                        "lon": lon + rng.uniform(-0.02, 0.02),
                        "lat": lat + rng.uniform(-0.015, 0.015)})
        elif i in ids:
            body = {"note": "已处置"} if what == "resolve" else {}
            srv.call("POST", f"/api/v1/events/{ids[i]['id']}/{what}", "admin", body)
        if field_ev is None and at > span_s - 30:
            # The field page's assignment: fresh, at the Changtan reservoir.
            field_ev = srv.post_event(*BEIYANG, category="illegal_fishing",
                                      description="长潭水库东侧有人电鱼，请尽快到场",
                                      external_id="shot-field")
            for k in range(3):
                srv.call("POST", "/api/v1/events", "intake", {
                    "location": {"lon": BEIYANG[0] + rng.uniform(-0.03, 0.03),
                                 "lat": BEIYANG[1] + rng.uniform(-0.02, 0.02)},
                    "category": "noise", "description": rng.choice(TEXTS["noise"]),
                    "source": "hotline", "external_id": f"shot-late-{k}"})
    return {"field": field_ev}


def shoot(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="shots-"))
    srv = start_server(tmp)
    try:
        info = seed(srv)
        fe = info["field"]
        field_tok = srv.field_token(fe["unit"])
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

            def ctx(viewport, **kw):
                return b.new_context(viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai",
                                     device_scale_factor=1, **kw)

            def save(page, name):
                path = out / f"{name}.png"
                page.screenshot(path=str(path))
                print(f"{path} {path.stat().st_size // 1024} KB")

            for vp, tag in ((DESKTOP, "desktop"), (PHONE, "phone")):
                c = ctx(vp)
                page = c.new_page()
                page.goto(f"{srv.url}/ops?token={srv.token('city')}")
                page.wait_for_selector("#conn.conn-online", timeout=20000)
                page.wait_for_function("() => window.__ops && window.__ops.regionIds().length > 0",
                                       timeout=20000)
                page.wait_for_timeout(1500)
                save(page, f"ops-{tag}")
                if tag == "desktop":
                    page.locator(".ev-row").first.click()
                    page.wait_for_selector("#detail-view .timeline li", timeout=5000)
                    page.wait_for_timeout(800)
                    # Close in on the event (fewer grid cells: a smaller picture), no notices.
                    page.evaluate("(() => { const m = window.__ops.map();"
                                  " m.setZoom(Math.max(m.getZoom(), 15)); })()")
                    page.wait_for_timeout(1200)
                    page.evaluate("document.getElementById('toasts') &&"
                                  " document.getElementById('toasts').remove()")
                    save(page, "ops-detail-desktop")
                c.close()

                c = ctx(vp, geolocation={"longitude": fe["location"]["lon"] - 0.012,
                                         "latitude": fe["location"]["lat"] - 0.008},
                        permissions=["geolocation"], has_touch=tag == "phone",
                        is_mobile=tag == "phone")
                page = c.new_page()
                page.goto(f"{srv.url}/field?token={field_tok}")
                page.wait_for_selector("#next-step", timeout=20000)
                page.wait_for_timeout(1500)
                save(page, f"field-{tag}")
                c.close()

                c = ctx(vp)
                page = c.new_page()
                page.goto(f"{srv.url}/supervisor?token={srv.token('supervisor')}")
                page.wait_for_selector("#stats-table tbody tr", timeout=20000)
                page.wait_for_timeout(1500)
                save(page, f"supervisor-{tag}")
                c.close()
            b.close()
    finally:
        stop_server(srv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    shoot(Path(ap.parse_args().out))


if __name__ == "__main__":
    main()
