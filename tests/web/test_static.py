"""The pages' files themselves: no CDN, vendored libraries with licences, no HTML from data."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"
PAGES = ("ops", "field", "supervisor", "department")


def test_pages_load_nothing_from_the_internet():
    for name in PAGES:
        html = (STATIC / f"{name}.html").read_text(encoding="utf-8")
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith(("/static/", "data:")), (name, url)
        assert '<link rel="icon"' in html, f"{name}.html needs a favicon (no 404 in the console)"
    for js in STATIC.glob("js/*.js"):
        text = js.read_text(encoding="utf-8")
        for m in re.finditer(r"""(?:import\s*\(|from\s+)['"]([^'"]+)['"]""", text):
            assert m.group(1).startswith(("./", "../", "/static/")), (js.name, m.group(1))


def test_vendored_libraries_are_minified_and_licensed():
    vendor = STATIC / "vendor"
    expected = {
        "leaflet": ["leaflet.js", "leaflet.css", "LICENSE", "images/marker-icon.png"],
        "leaflet.markercluster": ["leaflet.markercluster.js", "MarkerCluster.css",
                                  "MIT-LICENCE.txt"],
        "echarts": ["echarts.min.js", "LICENSE", "NOTICE"],
        "qrcode-generator": ["qrcode.mjs", "LICENSE"],
    }
    for pkg, files in expected.items():
        for f in files:
            assert (vendor / pkg / f).is_file(), f"{pkg}/{f}"
    assert "1.9.4" in (vendor / "leaflet" / "leaflet.js").read_text(encoding="utf-8")[-3000:]
    total = sum(p.stat().st_size for p in vendor.rglob("*") if p.is_file())
    assert total < 2_000_000, total


def test_no_data_is_ever_written_as_html():
    """Outside text goes through text nodes: no innerHTML / insertAdjacentHTML writes."""
    for js in [*STATIC.glob("js/*.js"), STATIC / "i18n.js"]:
        code = "\n".join(line for line in js.read_text(encoding="utf-8").splitlines()
                         if not line.lstrip().startswith("//"))
        assert not re.search(r"\.(innerHTML|outerHTML)\s*\+?=(?!=)", code), js.name
        assert "insertAdjacentHTML" not in code and "document.write" not in code, js.name
        # Leaflet treats string popup/tooltip content as HTML: pass DOM nodes or functions.
        assert not re.search(r"bind(Tooltip|Popup)\(\s*['\"`]", code), js.name


def test_pages_need_nothing_the_content_security_policy_refuses():
    """script-src/style-src 'self' (issue 11 #8): no inline code or style in the pages' files."""
    for name in PAGES:
        html = (STATIC / f"{name}.html").read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{name}: inline script"
        assert "<style" not in html, f"{name}: inline <style>"
        assert not re.search(r"\sstyle\s*=", html), f"{name}: style attribute"
        assert not re.search(r"\son[a-z]+\s*=", html), f"{name}: inline event handler"
        assert "javascript:" not in html, name
    for js in [*STATIC.glob("js/*.js"), STATIC / "i18n.js"]:
        code = js.read_text(encoding="utf-8")
        assert not re.search(r"\beval\s*\(|new\s+Function\s*\(|setTimeout\s*\(\s*['\"`]",
                             code), js.name
        # el(tag, {style: '…'}) would set a style attribute, which the policy blocks.
        assert not re.search(r"""\bstyle\s*:\s*['"`]""", code), js.name
        assert not re.search(r"""setAttribute\(\s*['"]style['"]""", code), js.name
        assert "cssText" not in code, js.name


def test_the_page_policy_admits_the_configured_tile_server_only(tmp_path):
    from dispatch.config import load_config
    from dispatch.server.app import security_headers

    cfg = tmp_path / "c.yaml"
    cfg.write_text("ui: {tiles: {url: 'https://webrd0{s}.is.autonavi.com/appmaptile?x={x}&y={y}"
                   "&z={z}', subdomains: '1234', crs: gcj02}}\n", encoding="utf-8")
    common, page = security_headers(load_config(cfg))
    img = next(d for d in page["Content-Security-Policy"].split("; ") if d.startswith("img-src"))
    assert img == "img-src 'self' data: blob: https://*.is.autonavi.com"
    assert common["Content-Security-Policy"].startswith("default-src 'none'")
    # Tiles from this server (a relative URL) need nothing more than 'self'.
    cfg.write_text("ui: {tiles: {url: '/tiles/{z}/{x}/{y}.png'}}\n", encoding="utf-8")
    _, page = security_headers(load_config(cfg))
    assert "img-src 'self' data: blob:;" in page["Content-Security-Policy"]
