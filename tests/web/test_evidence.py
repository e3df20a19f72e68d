"""Evidence on the pages (issue 13), in a real Chromium against a real server: a photo taken
on /field while offline is kept (IndexedDB), sent when the network comes back, and reaches the
server with the time it was taken; /ops attaches files from the event detail; thumbnails and
chips show in the timelines, under the strict CSP (blob: images)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

import pytest

from tests.web.conftest import PHONE, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BEIYANG = (121.08, 28.585)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"field photo " * 300 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 300
PDF = b"%PDF-1.4\n" + b"1 0 obj <<>> endobj\n" * 30 + b"%%EOF\n"


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_photo_queued_offline_reaches_the_server_with_its_taken_time(server, open_page):
    ev = server.post_event(*BEIYANG, description="离线取证")
    assert ev.get("unit"), ev
    tok = server.field_token(ev["unit"])
    o = open_page("/field", tok, viewport=PHONE, has_touch=True, is_mobile=True)
    page = o.page
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    page.wait_for_selector("#evidence-photo-btn", timeout=10000)
    assert page.locator("#evidence-photo").get_attribute("capture") is not None
    assert page.locator("#evidence-photo").get_attribute("accept") == "image/*"
    o.context.set_offline(True)
    page.wait_for_selector("#conn.conn-offline", timeout=5000)
    page.set_input_files("#evidence-photo", files=[
        {"name": "现场.jpg", "mimeType": "image/jpeg", "buffer": JPEG}])
    page.wait_for_selector('#pending-bar[data-count="1"]', timeout=5000)
    queued = json.loads(page.evaluate(f"localStorage.getItem('tzd.field.queue.{ev['unit']}')"))
    assert [(q["action"], q["name"]) for q in queued] == [("evidence", "现场.jpg")]
    # the bytes wait in IndexedDB, not in localStorage
    size = page.evaluate("""(id) => new Promise((ok, bad) => {
        const r = indexedDB.open('tzd.evidence', 1);
        r.onsuccess = () => { const g = r.result.transaction('blobs').objectStore('blobs').get(id);
          g.onsuccess = () => ok(g.result ? g.result.size : -1); g.onerror = bad; };
        r.onerror = bad; })""", queued[0]["id"])
    assert size == len(JPEG)
    time.sleep(1.5)  # pacing: the upload happens well after the photo was taken
    assert server.get(f"/api/v1/events/{ev['id']}")["evidence"] == []
    o.context.set_offline(False)
    full = wait_until(lambda: (e := server.get(f"/api/v1/events/{ev['id']}"))["evidence"] and e,
                      timeout=15, what="the queued photo to reach the server")
    [entry] = full["evidence"]
    assert entry["sha256"] == hashlib.sha256(JPEG).hexdigest() and entry["name"] == "现场.jpg"
    assert abs(ts(entry["at"]) - ts(queued[0]["at"])) < 0.002  # the time it was taken
    assert ts(entry["received_at"]) - ts(entry["at"]) > 1.0
    status, data = server.call("GET", f"/api/v1/evidence/{entry['sha256']}", tok, raw=True)
    assert status == 200 and data == JPEG
    page.wait_for_selector("#pending-bar.hidden", state="attached", timeout=5000)
    # its thumbnail on the phone, drawn from a blob: URL
    page.wait_for_selector(f'#evidence .ev-chip[data-sha256="{entry["sha256"]}"] '
                           'img.ev-thumb[src^="blob:"]', timeout=5000)
    assert page.evaluate("(id) => new Promise((ok) => { const r = indexedDB.open('tzd.evidence',"
                         " 1); r.onsuccess = () => { const g = r.result.transaction('blobs')"
                         ".objectStore('blobs').count(); g.onsuccess = () => ok(g.result); };"
                         " })", None) == 0


def test_ops_attaches_files_and_the_timelines_show_them(server, open_page):
    ev = server.post_event(*BEIYANG, description="指挥中心取证")
    page = open_page("/ops", "city").page
    page.wait_for_selector("#conn.conn-online", timeout=15000)
    page.locator(f'.ev-row[data-id="{ev["id"]}"]').click()
    page.wait_for_selector("#evidence-attach", timeout=5000)
    page.set_input_files("#evidence-input", files=[
        {"name": "询问笔录.pdf", "mimeType": "application/pdf", "buffer": PDF},
        {"name": "现场.png", "mimeType": "image/png", "buffer": PNG}])
    full = wait_until(lambda: len((e := server.get(f"/api/v1/events/{ev['id']}"))["evidence"])
                      == 2 and e, timeout=10, what="both files on the event")
    assert [x["name"] for x in full["evidence"]] == ["询问笔录.pdf", "现场.png"]
    assert [x["type"] for x in full["evidence"]] == ["application/pdf", "image/png"]
    pdf, png = (x["sha256"] for x in full["evidence"])
    # the detail's strip and the timeline: a chip for the PDF, a thumbnail for the image
    page.wait_for_selector(f'#evidence-block .ev-chip.file[data-sha256="{pdf}"]', timeout=5000)
    page.wait_for_selector(f'.timeline .tl-evidence .ev-chip[data-sha256="{png}"] '
                           'img.ev-thumb[src^="blob:"]', timeout=5000)
    assert page.locator('.timeline li[data-action="attached"]').count() == 2


def upload(server, event_id: str, data: bytes, ctype: str, name: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{server.url}/api/v1/events/{event_id}/evidence?name={urllib.parse.quote(name)}",
        data=data, method="POST", headers={"Authorization": f"Bearer {server.token('city')}",
                                           "Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 201
        return json.loads(r.read())


def test_the_supervisors_breach_view_shows_the_thumbnails(server, open_page):
    ev = server.post_event(*BEIYANG, category="noise", description="超时取证")  # respond 2 s
    png = upload(server, ev["id"], PNG, "image/png", "噪声现场.png")["sha256"]
    pdf = upload(server, ev["id"], PDF, "application/pdf", "检测报告.pdf")["sha256"]
    wait_until(lambda: "respond" in server.get(f"/api/v1/events/{ev['id']}")["breaches"],
               timeout=10, what="a breach")
    page = open_page("/supervisor", "supervisor").page
    row = page.locator(f'#breach-table tbody tr[data-id="{ev["id"]}"]')
    row.wait_for(timeout=10000)
    row.click()
    modal = page.locator("#event-modal")
    modal.locator(f'.tl-evidence .ev-chip[data-sha256="{png}"] img.ev-thumb[src^="blob:"]'
                  ).wait_for(timeout=5000)
    assert modal.locator(f'.tl-evidence .ev-chip.file[data-sha256="{pdf}"]').count() == 1
    assert "检测报告.pdf" in modal.locator(".timeline").inner_text()


def test_a_field_page_refuses_a_type_the_server_would_refuse(server, open_page):
    ev = server.post_event(*BEIYANG, description="类型测试")
    tok = server.field_token(ev["unit"])
    page = open_page("/field", tok, viewport=PHONE).page
    page.wait_for_selector("#evidence-file-btn", timeout=15000)
    page.set_input_files("#evidence-file", files=[
        {"name": "a.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    page.wait_for_selector(".toast", timeout=3000)
    assert "不支持的文件类型" in page.locator(".toast").last.inner_text()
    assert page.locator('#pending-bar[data-count="1"]').count() == 0
    assert server.get(f"/api/v1/events/{ev['id']}")["evidence"] == []
