"""Browser tests: a real `dispatch serve` process and Debian's Chromium driven by Playwright.

The server runs as a subprocess with a temporary config (temp journal, the demo data set of
Taizhou, test tokens, one category with very short timers). Every page opened through
``open_page`` records console errors and uncaught exceptions; a test fails if any page logged
one.

Chromium is ``$CHROMIUM`` (default ``/usr/bin/chromium``; tests/run.sh checks and installs the
same). Without it the browser tests skip, or fail when the run requires Chromium
(``DISPATCH_REQUIRE``, see tests/conftest.py; ``.ci/run`` sets it).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CHROMIUM, missing

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 360, "height": 740}

try:
    from geo import DEMO_DIR  # type: ignore[attr-defined]
except ImportError:  # the data folder, if geo/ does not name it
    DEMO_DIR = ROOT / "geo" / "data" / "taizhou"

TOKENS = {
    "city": {"token": "w-city-operator", "role": "operator", "region": "331000"},
    "huangyan": {"token": "w-huangyan-operator", "role": "operator", "region": "331003"},
    "jiaojiang": {"token": "w-jiaojiang-operator", "role": "operator", "region": "331002"},
    "supervisor": {"token": "w-supervisor-city", "role": "supervisor", "region": "331000"},
    "intake": {"token": "w-intake-hotline", "role": "intake"},
    "admin": {"token": "w-admin-0000", "role": "admin"},
}

# Categories: the usual 1/3/15-minute clocks, and "noise" with 2/4/8-second clocks so that
# a breach happens while a test watches.
CATEGORIES = [
    {"id": "street_vending", "name": "占道经营 Street vending", "priority": 3},
    {"id": "illegal_fishing", "name": "非法捕捞 Illegal fishing", "priority": 1},
    {"id": "illegal_construction", "name": "违法建设 Illegal construction", "priority": 2},
    {"id": "cooking_fumes", "name": "油烟扰民 Cooking fumes", "priority": 3},
    {"id": "noise", "name": "噪声扰民 Noise", "priority": 3,
     "timers": {"respond_s": 2, "depart_s": 4, "arrive_s": 8}},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chromium_missing() -> bool:
    return not Path(CHROMIUM).exists()


def require_chromium() -> str:
    """``$CHROMIUM``; skips the test without it, or fails it when the run requires Chromium."""
    if chromium_missing():
        missing("chromium", f"{CHROMIUM} is not installed (apt-get install chromium, "
                            "or point $CHROMIUM at a Chromium)")
    return CHROMIUM


def write_config(tmp: Path, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "store": str(tmp / "d.db"),
        "geo": {"regions": str(Path(DEMO_DIR) / "regions.geojson"),
                "zones": str(Path(DEMO_DIR) / "zones.geojson"),
                "teams": str(Path(DEMO_DIR) / "teams.yaml")},
        "timers": {"respond_s": 60, "depart_s": 180, "arrive_s": 900, "warn_fraction": 0.2},
        "categories": CATEGORIES,
        "auth": {"tokens": list(TOKENS.values()), "token_file": str(tmp / "tokens.yaml")},
        # The tests make many calls from one token in a short time.
        "limits": {"rate_per_s": 1000, "rate_burst": 5000},
    }
    cfg.update(extra)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class LiveServer:
    """A `dispatch serve` subprocess and a tiny HTTP client for it."""

    url: str
    config: Path
    proc: subprocess.Popen[bytes]
    log: Path
    field_tokens: dict[str, str] = field(default_factory=dict)

    def token(self, who: str) -> str:
        return TOKENS[who]["token"] if who in TOKENS else who

    def call(self, method: str, path: str, who: str = "admin", body: Any = None,
             raw: bool = False) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token(who)}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                payload = r.read()
                status = r.status
                ctype = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            payload, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
        if raw or "json" not in ctype:
            return status, payload
        return status, json.loads(payload)

    def get(self, path: str, who: str = "admin") -> Any:
        status, data = self.call("GET", path, who)
        assert status == 200, (path, status, data)
        return data

    def post_event(self, lon: float, lat: float, category: str = "street_vending",
                   description: str = "web test", **kw: Any) -> dict[str, Any]:
        body = {"location": {"lon": lon, "lat": lat}, "category": category,
                "description": description, "source": "hotline", **kw}
        status, data = self.call("POST", "/api/v1/events", "intake", body)
        assert status in (200, 201), (status, data)
        return data

    def act(self, event_id: str, action: str, who: str = "admin", **body: Any) -> dict[str, Any]:
        status, data = self.call("POST", f"/api/v1/events/{event_id}/{action}", who, body)
        assert status == 200, (action, status, data)
        return data

    def field_token(self, unit: str) -> str:
        """A field token for `unit`, issued the way an administrator does it."""
        if unit not in self.field_tokens:
            out = subprocess.run(
                [sys.executable, "-m", "dispatch", "token", "create", "--role", "field",
                 "--unit", unit, "--config", str(self.config)],
                capture_output=True, text=True, timeout=60, cwd=self.config.parent, check=True)
            self.field_tokens[unit] = out.stdout.strip().splitlines()[0].strip()
        return self.field_tokens[unit]

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def start_server(tmp: Path, **extra: Any) -> LiveServer:
    cfg = write_config(tmp, **extra)
    port = free_port()
    log = tmp / "server.log"
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process
    cmd = [sys.executable, "-m", "dispatch", "serve", "--config", str(cfg), "--port", str(port)]
    if (ROOT / ".venv" / "bin" / "dispatch").exists() and sys.executable.startswith(str(ROOT)):
        cmd = [str(ROOT / ".venv" / "bin" / "dispatch"), *cmd[3:]]
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp)
    srv = LiveServer(url=f"http://127.0.0.1:{port}", config=cfg, proc=proc, log=log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dispatch serve exited with {proc.returncode}:\n{srv.log_tail()}")
        try:
            with urllib.request.urlopen(srv.url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return srv
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"dispatch serve did not answer /healthz:\n{srv.log_tail()}")


def stop_server(srv: LiveServer) -> None:
    srv.proc.terminate()
    try:
        srv.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        srv.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    require_chromium()
    srv = start_server(tmp_path_factory.mktemp("web"))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Opened:
    context: Any
    page: Any
    errors: list[str]
    dialogs: list[str]


@pytest.fixture
def open_page(browser: Any, server: LiveServer) -> Iterator[Any]:
    """open_page(path, who, viewport=DESKTOP, **context_options) → Opened.

    Fails the test afterwards if any page logged a console error, threw, or opened a dialog.
    """
    opened: list[Opened] = []

    def _open(path: str, who: str | None, viewport: dict[str, int] | None = None,
              **ctx_opts: Any) -> Opened:
        ctx = browser.new_context(viewport=viewport or DESKTOP, locale="zh-CN",
                                  timezone_id="Asia/Shanghai", **ctx_opts)
        page = ctx.new_page()
        o = Opened(context=ctx, page=page, errors=[], dialogs=[])
        page.on("console", lambda m: o.errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: o.errors.append(f"pageerror: {e}"))

        def on_dialog(d: Any) -> None:
            o.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        page.on("dialog", on_dialog)
        sep = "&" if "?" in path else "?"
        url = server.url + path + (f"{sep}token={server.token(who)}" if who else "")
        page.goto(url)
        opened.append(o)
        return o

    yield _open
    problems = []
    for o in opened:
        problems += o.errors
        problems += [f"dialog {d}" for d in o.dialogs]
        o.context.close()
    assert not problems, "pages logged errors:\n" + "\n".join(problems)


def region_point(server: LiveServer, region_id: str, level: str) -> tuple[float, float]:
    """A point well inside a region of the demo data (shapely's representative point)."""
    from shapely.geometry import shape

    fc = server.get(f"/api/v1/regions?level={level}")
    for f in fc["features"]:
        if str(f["properties"]["id"]) == region_id:
            p = shape(f["geometry"]).representative_point()
            return round(p.x, 6), round(p.y, 6)
    raise AssertionError(f"region {region_id} not in the demo data")


def region_parents(server: LiveServer) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for level in ("county", "township", "grid"):
        for f in server.get(f"/api/v1/regions?level={level}")["features"]:
            p = f["properties"]
            out[str(p["id"])] = None if p.get("parent") is None else str(p["parent"])
    return out


def wait_until(fn: Any, timeout: float = 5.0, interval: float = 0.1, what: str = "") -> Any:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or fn}: last={last!r}")
