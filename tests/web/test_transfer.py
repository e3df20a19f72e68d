"""Transfer to another department (移送, contract §8) in the real browser.

/ops: the event detail's 移送 button with a department and a reason; the event shows as
transferred on every operator page in scope, live. /department: the department's own page
lists what was transferred to it (a new transfer arrives live), accepts one and returns
another with a reason (a return without one is refused on the page). Every page also runs
under the strict Content-Security-Policy without a violation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.conftest import (
    TOKENS,
    LiveServer,
    require_chromium,
    start_server,
    stop_server,
    wait_until,
)
from tests.web.test_csp import open_watched, violations
from tests.web.test_ops import BEIYANG, ops_ready, row

pytestmark = [pytest.mark.browser]

DEPARTMENTS = [{"id": "d-market", "name": "市场监管局 Market regulation"},
               {"id": "d-env", "name": "生态环境局 Ecology and environment"}]
MARKET = "w-dept-market-0001"
ENV = "w-dept-env-0001"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    require_chromium()
    tmp = tmp_path_factory.mktemp("web-transfer")
    tokens = [*TOKENS.values(),
              {"token": MARKET, "role": "department", "department": "d-market"},
              {"token": ENV, "role": "department", "department": "d-env"}]
    srv = start_server(tmp, departments=DEPARTMENTS,
                       auth={"tokens": tokens, "token_file": str(tmp / "tokens.yaml")})
    yield srv
    stop_server(srv)


def test_ops_transfers_an_event_and_every_operator_in_scope_sees_it(server, open_page):
    ev = server.post_event(*BEIYANG, description="移送 测试：无证经营食品")
    watcher = open_page("/ops", "city").page  # another operator whose scope holds it
    ops_ready(watcher)
    page = open_watched(open_page, "/ops", "huangyan")
    ops_ready(page)
    row(page, ev["id"]).click()
    page.wait_for_selector("#do-transfer", timeout=5000)
    options = page.eval_on_selector_all("#transfer-department option",
                                        "ns => ns.map(n => [n.value, n.textContent])")
    assert options == [["d-market", "市场监管局"], ["d-env", "生态环境局"]]
    # without a reason the page asks for one and sends nothing
    page.click("#do-transfer")
    page.locator(".toast").filter(has_text="移送理由").wait_for(timeout=3000)
    assert server.get(f"/api/v1/events/{ev['id']}")["status"] == "dispatched"
    page.fill("#action-note", "属市场监管职责，移送市场监管局")
    page.select_option("#transfer-department", "d-market")
    page.click("#do-transfer")
    for p in (page, watcher):
        wait_until(lambda p=p: row(p, ev["id"]).get_attribute("data-status") == "transferred",
                   timeout=5, what="the row shows transferred")
        assert row(p, ev["id"]).get_attribute("data-state") == "transferred"
    page.locator("#detail-transfer [data-department='d-market']").wait_for(timeout=5000)
    assert "属市场监管职责" in page.locator("#detail-transfer").inner_text()
    # while transferred the only action left is cancel
    assert page.locator("#do-transfer").count() == 0 and page.locator("#do-escalate").count() == 0
    assert page.locator("#do-cancel").count() == 1
    got = server.get(f"/api/v1/events/{ev['id']}")
    assert got["status"] == "transferred" and got["unit"] is None
    assert got["transfer"]["department"] == "d-market"
    assert got["transfer"]["note"] == "属市场监管职责，移送市场监管局"
    assert got["transfer"]["actor"] == "operator:331003"
    assert violations(page) == []


def item(page: Any, event_id: str) -> Any:
    return page.locator(f'.dept-item[data-id="{event_id}"]')


def test_department_page_accepts_and_returns_live(server, open_page):
    keep = server.post_event(*BEIYANG, description="接收 测试")
    back = server.post_event(*BEIYANG, description="退回 测试")
    other = server.post_event(*BEIYANG, description="另一部门")
    for eid, dep in ((keep["id"], "d-market"), (back["id"], "d-market"),
                     (other["id"], "d-env")):
        server.act(eid, "transfer", "huangyan", department=dep, note=f"移送 {dep}")
    page = open_watched(open_page, "/department", MARKET)
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    pending = page.locator("#pending")
    for eid in (keep["id"], back["id"]):
        pending.locator(f'.dept-item[data-id="{eid}"]').wait_for(timeout=5000)
    # only its own transfers: never the other department's
    assert item(page, other["id"]).count() == 0
    assert "移送 d-market" in item(page, keep["id"]).locator(".transfer-note").inner_text()
    # a transfer made while the page is open arrives over the socket
    late = server.post_event(*BEIYANG, description="实时移送")
    server.act(late["id"], "transfer", "huangyan", department="d-market", note="实时")
    pending.locator(f'.dept-item[data-id="{late["id"]}"]').wait_for(timeout=5000)
    assert item(page, other["id"]).count() == 0

    it = item(page, keep["id"])
    it.locator("textarea").fill("已立案调查")
    it.locator(".do-accept").click()
    page.locator(f'#answered .dept-item[data-id="{keep["id"]}"]').wait_for(timeout=5000)
    assert item(page, keep["id"]).get_attribute("data-status") == "handed_over"
    got = server.get(f"/api/v1/events/{keep['id']}")
    assert got["status"] == "handed_over" and got["transfer"]["answer"] == "accepted"
    assert got["transfer"]["answer_note"] == "已立案调查"

    it = item(page, back["id"])
    it.locator(".do-return").click()  # no reason: refused on the page, nothing sent
    page.locator(".toast").filter(has_text="退回须填写理由").wait_for(timeout=3000)
    assert server.get(f"/api/v1/events/{back['id']}")["status"] == "transferred"
    it.locator("textarea").fill("不属本部门职责，请综合执法处置")
    it.locator(".do-return").click()
    answered = page.locator(f'#answered .dept-item[data-id="{back["id"]}"]')
    answered.wait_for(timeout=5000)
    assert "已退回" in answered.locator(".answer-text").inner_text()
    got = server.get(f"/api/v1/events/{back['id']}")
    assert got["status"] == "dispatched" and got["transfer"]["answer"] == "returned"
    assert got["unit"], "a return picks a unit anew"
    assert got["timeline"][-1]["note"] == "不属本部门职责，请综合执法处置"
    assert violations(page) == []
    # the other department's page shows its own transfer only
    env = open_page("/department", ENV).page
    env.locator(f'#pending .dept-item[data-id="{other["id"]}"]').wait_for(timeout=10000)
    assert env.locator(".dept-item").count() == 1


def test_supervisor_sees_transfers_per_department(server, open_page):
    ev = server.post_event(*BEIYANG, description="督查 移送")
    server.act(ev["id"], "transfer", "huangyan", department="d-env", note="生态")
    server.act(ev["id"], "return", ENV, note="退回")
    page = open_page("/supervisor", "supervisor").page
    r = page.locator('#transfer-table tr[data-department="d-env"]')
    r.wait_for(timeout=15000)
    cells = r.locator("td").all_inner_texts()
    assert cells[0] == "生态环境局" and int(cells[1]) >= 1 and int(cells[3]) >= 1
