"""A configured tile layer: GCJ-02 tiles (AMap) shift what the map draws; attribution is text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.web.conftest import LiveServer, require_chromium, start_server, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BEIYANG = (121.08, 28.585)
# A stand-in for a tile service that needs no internet: any image the server has.
TILES = {"url": "/static/vendor/leaflet/images/layers.png?{z}/{x}/{y}",
         "attribution": "<b>高德</b> © AMap", "crs": "gcj02"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    require_chromium()  # skips, or fails under DISPATCH_REQUIRE
    srv = start_server(tmp_path_factory.mktemp("tiles"),
                       ui={"tiles": TILES, "center": [121.2, 28.75], "zoom": 9})
    yield srv
    stop_server(srv)


def test_gcj02_tiles_shift_markers_and_escape_the_attribution(server, open_page):
    from geo.coords import wgs84_to_gcj02

    ev = server.post_event(*BEIYANG, description="高德底图")
    page = open_page("/ops", "city").page
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    page.locator(f'.ev-row[data-id="{ev["id"]}"]').click()
    marker = page.locator(f'.ev-icon span[data-event="{ev["id"]}"]')
    marker.wait_for(timeout=5000)
    # The JavaScript transform agrees with the server's (geo.coords) to ~1 cm.
    for lon, lat in (BEIYANG, (121.42, 28.66), (120.75, 28.85), (121.9, 28.45)):
        js = page.evaluate(
            "([lon, lat]) => import('/static/js/geo.js').then(m => m.wgs84ToGcj02(lon, lat))",
            [lon, lat])
        py = wgs84_to_gcj02(lon, lat)
        assert abs(js[0] - py[0]) < 1e-7 and abs(js[1] - py[1]) < 1e-7, (js, py)
    # The marker is drawn at the shifted point (hundreds of metres from the WGS84 one).
    ll = page.evaluate(f"""(() => {{
        const m = window.__ops.map();
        let found = null;
        m.eachLayer(l => {{
          if (l.options && l.options.evId === '{ev["id"]}') found = l.getLatLng();
        }});
        return found;
    }})()""")
    gx, gy = wgs84_to_gcj02(*BEIYANG)
    assert ll is not None
    assert abs(ll["lng"] - gx) < 1e-9 and abs(ll["lat"] - gy) < 1e-9
    assert abs(ll["lng"] - BEIYANG[0]) > 1e-3
    # Attribution is configuration text: shown as written, never as HTML.
    attr = page.locator(".leaflet-control-attribution")
    assert "<b>高德</b> © AMap" in attr.inner_text()
    assert attr.locator("b").count() == 0
    # Tiles were requested from the configured URL.
    assert page.locator("img.leaflet-tile").count() > 0
