"""/supervisor shows the API's figures, opens timelines and exports CSV and Excel."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BEIYANG = (121.08, 28.585)


def fmt_num(v: Any) -> str:
    """The page's number format: one decimal, trailing .0 dropped, – for none."""
    if v is None:
        return "–"
    s = f"{float(v):.1f}"
    return s[:-2] if s.endswith(".0") else s


def fmt_pct(v: Any) -> str:
    return "–" if v is None else f"{fmt_num(v)}%"


@pytest.fixture(scope="module")
def history(server) -> dict[str, Any]:
    """A few events with done and breached stages."""
    a = server.post_event(*BEIYANG, category="street_vending", description="准时处置")
    server.act(a["id"], "respond")
    server.act(a["id"], "depart")
    b = server.post_event(*BEIYANG, category="noise", description="<img src=x onerror=alert(1)>")
    c = server.post_event(*BEIYANG, category="illegal_fishing", description="非法捕捞")
    server.act(c["id"], "respond")
    # Let the short clocks of "noise" run out.
    wait_until(lambda: "respond" in server.get(f"/api/v1/events/{b['id']}")["breaches"],
               timeout=10, what="a breach")
    return {"ontime": a, "breached": b, "other": c}


def test_figures_are_those_of_the_api(server, open_page, history):
    o = open_page("/supervisor", None)
    page = o.page
    with page.expect_response(lambda r: "/api/v1/stats/response-times" in r.url
                              and "group_by=township" in r.url) as resp:
        page.goto(server.url + f"/supervisor?token={server.token('supervisor')}")
    api = resp.value.json()
    groups = api["groups"]
    assert groups, api
    page.wait_for_selector("#stats-table tbody tr", timeout=5000)
    for g in groups:
        tr = page.locator(f'#stats-table tbody tr[data-key="{g["key"]}"]')
        assert tr.locator('[data-col="count"]').inner_text() == str(g["count"])
        for stage in ("respond", "depart", "arrive"):
            s = g[stage]
            assert tr.locator(f'[data-col="{stage}.within_pct"]').inner_text() == \
                fmt_pct(s["within_pct"])
            assert tr.locator(f'[data-col="{stage}.p50_s"]').inner_text() == fmt_num(s["p50_s"])
            assert tr.locator(f'[data-col="{stage}.p90_s"]').inner_text() == fmt_num(s["p90_s"])
    total = sum(g["count"] for g in groups)
    assert page.locator("#kpi-total .kpi-v").inner_text() == str(total)
    # The same request made directly gives the same groups (keys and counts).
    direct = server.get(resp.value.url.replace(server.url, ""), "supervisor")["groups"]
    assert [(g["key"], g["count"]) for g in direct] == [(g["key"], g["count"]) for g in groups]
    # Charts were drawn (ECharts renders to canvas).
    for cid in ("within", "respond", "depart", "arrive", "dist", "trend"):
        assert page.locator(f"#chart-{cid} canvas").count() >= 1


def test_group_by_category_and_breach_timeline(server, open_page, history):
    page = open_page("/supervisor", "supervisor").page
    page.wait_for_selector("#stats-table tbody tr", timeout=10000)
    with page.expect_response(lambda r: "group_by=category" in r.url) as resp:
        page.select_option("#group-by", "category")
    groups = resp.value.json()["groups"]
    page.wait_for_selector('#stats-table tbody tr[data-key="noise"]', timeout=5000)
    assert page.locator("#stats-table tbody tr").count() == len(groups)
    assert "噪声扰民" in page.locator('#stats-table tbody tr[data-key="noise"]').inner_text()
    # The breach list holds the breached event; its row opens the timeline.
    b = history["breached"]
    row = page.locator(f'#breach-table tbody tr[data-id="{b["id"]}"]')
    row.wait_for(timeout=5000)
    row.click()
    page.wait_for_selector("#event-modal .timeline li", timeout=5000)
    modal = page.locator("#event-modal")
    assert modal.locator(".desc-full").inner_text() == "<img src=x onerror=alert(1)>"
    assert modal.locator("img").count() == 0
    assert modal.locator('.timeline li[data-action="breached"]').count() >= 1
    page.click("#modal-close")


def test_exports_open_with_openpyxl_and_have_chinese_headers(server, open_page, history,
                                                             tmp_path):
    from openpyxl import load_workbook

    page = open_page("/supervisor", "supervisor").page
    page.wait_for_selector("#stats-table tbody tr", timeout=10000)
    n_rows = page.locator("#stats-table tbody tr").count()
    with page.expect_download() as dl:
        page.click("#export-xlsx")
    path = tmp_path / "out.xlsx"
    dl.value.save_as(path)
    wb = load_workbook(path)
    ws = wb.active
    rows = list(ws.iter_rows(values_only=True))
    header = [str(c) for c in rows[0] if c is not None]
    assert any("事件数" in h for h in header), header
    assert any("响应" in h for h in header) and any("到场" in h for h in header), header
    assert len(rows) - 1 == n_rows
    with page.expect_download() as dl2:
        page.click("#export-csv")
    csv_path = tmp_path / "out.csv"
    dl2.value.save_as(csv_path)
    text = csv_path.read_bytes().decode("utf-8-sig")
    assert "事件数" in text.splitlines()[0]
    assert len([ln for ln in text.splitlines() if ln.strip()]) - 1 == n_rows


def test_choosing_a_county_narrows_the_figures(server, open_page, history):
    page = open_page("/supervisor", "supervisor").page
    page.wait_for_selector("#stats-table tbody tr", timeout=10000)
    with page.expect_response(lambda r: "/stats/response-times" in r.url
                              and "region=331003" in r.url
                              and "group_by=township" in r.url) as resp:
        page.select_option("#region", "331003")
    groups = resp.value.json()["groups"]
    page.wait_for_function(
        f"() => document.querySelectorAll('#stats-table tbody tr').length === {len(groups)}",
        timeout=5000)
    keys = page.eval_on_selector_all("#stats-table tbody tr", "ns => ns.map(n => n.dataset.key)")
    assert keys == [g["key"] for g in groups]
    assert all(k.startswith("331003") for k in keys), keys
