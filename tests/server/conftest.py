"""A real server on a random loopback port, with real HTTP and WebSocket clients."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from dispatch.config import load_config
from dispatch.server.app import STATE, State, build_app
from geo import DEMO_DIR

TOKENS = {
    "city": {"token": "t-city-operator", "role": "operator", "region": "331000"},
    "huangyan": {"token": "t-huangyan-operator", "role": "operator", "region": "331003"},
    "jiaojiang": {"token": "t-jiaojiang-operator", "role": "operator", "region": "331002"},
    "supervisor": {"token": "t-supervisor-city", "role": "supervisor", "region": "331000"},
    "intake": {"token": "t-intake-hotline", "role": "intake"},
    "admin": {"token": "t-admin-0000", "role": "admin"},
}

# Points inside the demo data set.
BEIYANG_RESERVOIR = (121.08, 28.585)   # 长潭水库 zone, 黄岩区


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, **sections: Any) -> Path:
    """A config file like a client's own: demo data, a temp journal, test tokens."""
    cfg: dict[str, Any] = {
        "store": str(tmp / "journal.db"),
        "store_options": {"synchronous": "NORMAL"},
        "geo": {"regions": str(DEMO_DIR / "regions.geojson"),
                "zones": str(DEMO_DIR / "zones.geojson"),
                "teams": str(DEMO_DIR / "teams.yaml")},
        "auth": {"tokens": list(TOKENS.values()), "token_file": str(tmp / "tokens.yaml")},
    }
    return dump_config(tmp, cfg, sections)


def dump_config(tmp: Path, cfg: dict[str, Any], sections: dict[str, Any]) -> Path:
    """``cfg`` with ``sections`` over it (a dict section merged one level deep), written to
    ``tmp/config.yaml``."""
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


@dataclass
class Server:
    url: str
    app: web.Application
    runner: web.AppRunner
    config_path: Path
    session: aiohttp.ClientSession
    extra_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> State:
        return self.app[STATE]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def token(self, who: str) -> str:
        return self.extra_tokens.get(who) or TOKENS[who]["token"]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(who)}"}

    async def call(self, method: str, path: str, who: str = "admin",
                   **kw: Any) -> tuple[int, Any]:
        headers = {**self.auth(who), **kw.pop("headers", {})}
        async with self.session.request(method, self.url + path, headers=headers, **kw) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.read()

    def field_token(self, unit: str) -> str:
        """Issue a field token for ``unit`` the way an admin would (token file)."""
        from dispatch.server.auth import issue_token

        tok = issue_token(self.state.config.token_file, "field", None, unit)
        self.extra_tokens[f"field:{unit}"] = tok
        return f"field:{unit}"


async def start_server(tmp: Path, **sections: Any) -> Server:
    path = write_config(tmp, **sections)
    config = load_config(path)
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    session = aiohttp.ClientSession()
    return Server(url=f"http://127.0.0.1:{port}", app=app, runner=runner, config_path=path,
                  session=session)


@pytest.fixture
async def server(tmp_path: Path):
    srv = await start_server(tmp_path)
    yield srv
    await srv.session.close()
    await srv.runner.cleanup()


def intake_body(lon: float, lat: float, **kw: Any) -> dict[str, Any]:
    body = {"location": {"lon": lon, "lat": lat}, "category": "street_vending",
            "description": "测试事件", "source": "hotline"}
    body.update(kw)
    return body


def point_in(srv: Server, county: str, skip: int = 0) -> tuple[float, float]:
    """A point in a township of ``county`` that no zone covers, routed to a team with units."""
    rt = srv.state.runtime
    ds = rt.dataset
    found = 0
    for rid in sorted(ds.regions):
        r = ds.regions[rid]
        if r.level != "township" or ds.county_of(rid) != county:
            continue
        p = r.geometry.representative_point()
        route = rt.router.locate(p.x, p.y)
        if route.zone is None and route.team and ds.teams[route.team].units:
            if found == skip:
                return (p.x, p.y)
            found += 1
    raise AssertionError(f"no plain township point in {county}")
