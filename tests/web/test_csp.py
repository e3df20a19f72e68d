"""Issue 11 #8: the pages run under a strict Content-Security-Policy with no violation.

Each page is opened in Chromium with a listener for ``securitypolicyviolation`` installed
before any script runs; the page loads its data and its WebSocket connects; then no
violation was reported and (the ``open_page`` fixture) nothing was logged as an error.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

pytestmark = [pytest.mark.browser]

BEIYANG = (121.08, 28.585)

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


def open_watched(open_page: Any, path: str, who: str) -> Any:
    """Open ``path``, then load it again with the violation recorder in place from the start."""
    opened = open_page(path, who)
    opened.page.add_init_script(RECORD_VIOLATIONS)
    opened.page.reload()
    return opened.page


def violations(page: Any) -> list[str]:
    return list(page.evaluate("window.__csp"))


def test_ops_page_loads_data_and_socket_under_the_policy(server, open_page):
    ev = server.post_event(*BEIYANG, description="CSP ops")
    page = open_watched(open_page, "/ops", "city")
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    page.locator(f'.ev-row[data-id="{ev["id"]}"]').click()
    page.locator(f'.ev-icon span[data-event="{ev["id"]}"]').wait_for(timeout=5000)
    # A change pushed over the socket is drawn too.
    live = server.post_event(*BEIYANG, description="CSP ops live")
    page.locator(f'.ev-row[data-id="{live["id"]}"]').wait_for(state="attached", timeout=5000)
    assert violations(page) == []


def test_field_page_loads_its_assignment_under_the_policy(server, open_page):
    ev = server.post_event(*BEIYANG, description="CSP field")
    assert ev.get("unit"), f"no unit was dispatched: {ev}"
    page = open_watched(open_page, "/field", server.field_token(ev["unit"]))
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    page.wait_for_selector("#next-step", timeout=10000)
    assert violations(page) == []


def test_supervisor_page_draws_its_charts_under_the_policy(server, open_page):
    ev = server.post_event(*BEIYANG, description="CSP supervisor")
    server.act(ev["id"], "respond")  # a stage done: the figures have a row
    page = open_watched(open_page, "/supervisor", "supervisor")
    page.wait_for_selector("#stats-table tbody tr", timeout=10000)
    page.wait_for_selector("#chart-within canvas", timeout=10000)  # ECharts drew
    # Its tooltip is HTML that ECharts writes itself: hover the bars until it shows.
    chart = page.locator("#chart-within")
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    assert box is not None
    for fx in (0.3, 0.5, 0.7):
        page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * 0.6)
        page.wait_for_timeout(150)
    page.wait_for_selector("#chart-within .chart-tip-row", timeout=5000)
    assert "北洋镇" in page.locator("#chart-within .chart-tip").inner_text()
    assert violations(page) == []


def test_the_recorder_sees_a_violation(server, open_page, browser):
    """The listener works: an inline script on a page of ours is blocked and reported."""
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        page.add_init_script(RECORD_VIOLATIONS)
        page.goto(server.url + "/ops")
        page.evaluate("""() => {
            const d = document.createElement('div');
            d.setAttribute('style', 'color: red');
            document.body.appendChild(d);
        }""")
        page.wait_for_function("() => window.__csp.length > 0", timeout=5000)
        assert any(v.startswith("style-src") for v in violations(page)), violations(page)
    finally:
        ctx.close()


@pytest.mark.parametrize("path", ["/ops", "/field", "/supervisor"])
def test_page_headers(server, path):
    with urllib.request.urlopen(server.url + path, timeout=10) as r:
        h = r.headers
    csp = dict(part.strip().split(" ", 1) for part in h["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert h["X-Frame-Options"] == "DENY"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert h["Server"] == "dispatch"


def test_static_and_api_headers(server):
    for path, who in (("/static/js/ops.js", None), ("/api/v1/categories", "city"),
                      ("/healthz", None)):
        req = urllib.request.Request(server.url + path)
        if who:
            req.add_header("Authorization", f"Bearer {server.token(who)}")
        with urllib.request.urlopen(req, timeout=10) as r:
            h = r.headers
        assert h["X-Content-Type-Options"] == "nosniff", path
        assert h["X-Frame-Options"] == "DENY", path
        assert h["Server"] == "dispatch", path
        assert "default-src 'none'" in h["Content-Security-Policy"], path
