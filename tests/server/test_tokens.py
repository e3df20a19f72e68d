"""Issue 11 #7, contract §6: tokens from every source are validated, removable, revocable.

Token-file entries get the config's validation (a bad one is skipped and named, the others
work); the file is 0600; a token removed from the config or the token file, or revoked with
``dispatch token revoke``, stops working within 5 s; bad tokens are slowed per address;
``demo: true`` tokens are refused beyond loopback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from dispatch.cli import main as cli
from dispatch.config import ConfigError, hash_token, load_config
from dispatch.server.app import build_app
from dispatch.server.auth import TokenBook, issue_token
from tests.server.conftest import TOKENS, Server, start_server, write_config

ROOT = Path(__file__).resolve().parents[2]


async def status_of(srv: Server, token: str, path: str = "/api/v1/events") -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with srv.session.get(srv.url + path, headers=headers) as r:
        return r.status


async def until_status(srv: Server, token: str, status: int, timeout: float = 5.0) -> float:
    """Seconds until ``token`` answers ``status`` (fails past ``timeout``)."""
    t0 = time.monotonic()
    while (code := await status_of(srv, token)) != status:
        assert time.monotonic() - t0 < timeout, f"still {code} after {timeout} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


def write_token_file(path: Path, entries: list[Any]) -> None:
    path.write_text(yaml.safe_dump(entries, allow_unicode=True), encoding="utf-8")


async def test_token_file_entries_get_the_config_validation(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    path = server.state.config.token_file
    write_token_file(path, [
        # no region: old code made this operator city-wide
        {"digest": hash_token("tok-no-region"), "role": "operator", "name": "no region"},
        # no role: old code answered 500 to every look-up of the file
        {"digest": hash_token("tok-no-role"), "region": "331003"},
        {"digest": "not-hex", "role": "admin"},
        {"digest": hash_token("tok-field-ok"), "role": "field", "unit": "u-0001"},
        {"digest": hash_token("tok-no-unit"), "role": "field"},
    ])
    with caplog.at_level(logging.WARNING, logger="dispatch.auth"):
        assert await status_of(server, "tok-field-ok") == 200  # the valid entry works
        assert await status_of(server, "tok-no-region") == 401
        assert await status_of(server, "tok-no-role") == 401
        assert await status_of(server, "tok-no-unit") == 401
        assert await status_of(server, server.token("city")) == 200
    warned = caplog.text
    assert "tokens[0].region: an operator token must name its region" in warned
    assert "tokens[1].role: must be one of" in warned
    assert "tokens[2].digest" in warned
    assert "tokens[4].unit" in warned
    assert "tok-" not in warned  # never the token


async def test_a_city_wide_operator_needs_the_citys_region(server: Server) -> None:
    """An operator whose region is the city's own id sees everything; no key is no access."""
    write_token_file(server.state.config.token_file, [
        {"digest": hash_token("tok-city-op"), "role": "operator", "region": "331000"},
        {"digest": hash_token("tok-null-region"), "role": "operator", "region": None}])
    assert await status_of(server, "tok-city-op") == 200
    assert await status_of(server, "tok-null-region") == 401


def test_token_file_is_created_0600_and_an_existing_one_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "var" / "tokens.yaml"
    old_umask = os.umask(0o022)
    try:
        issue_token(path, "admin", None, None)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)
        tok = issue_token(path, "field", None, "u-0001")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(yaml.safe_load(path.read_text())) == 2 and hash_token(tok) in path.read_text()


def test_cli_token_create_writes_0600(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    cfg = write_config(tmp_path)
    assert cli(["token", "create", "--role", "operator", "--region", "331003",
                "--config", str(cfg)]) == 0
    token = capsys.readouterr().out.strip()
    path = load_config(cfg).token_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert hash_token(token) in path.read_text() and token not in path.read_text()


async def test_revoked_token_stops_working_within_5_s(server: Server) -> None:
    tok = issue_token(server.state.config.token_file, "operator", "331003", None, name="黄岩值班")
    other = issue_token(server.state.config.token_file, "operator", "331003", None, name="留用")
    assert await status_of(server, tok) == 200
    assert cli(["token", "revoke", "--name", "黄岩值班", "--config",
                str(server.config_path)]) == 0
    assert await until_status(server, tok, 401) < 5
    assert await status_of(server, other) == 200
    entries = yaml.safe_load(server.state.config.token_file.read_text())
    assert [bool(e.get("revoked")) for e in entries] == [True, False]  # kept, marked
    assert cli(["token", "revoke", "--name", "黄岩值班", "--config",
                str(server.config_path)]) == 1  # nothing left to revoke


async def test_revoke_a_configured_token_by_digest_and_by_token(server: Server) -> None:
    city, huangyan = server.token("city"), server.token("huangyan")
    assert cli(["token", "revoke", "--digest", hash_token(city)[:12], "--config",
                str(server.config_path)]) == 0
    assert cli(["token", "revoke", "--token", huangyan, "--config",
                str(server.config_path)]) == 0
    await until_status(server, city, 401)
    await until_status(server, huangyan, 401)
    assert await status_of(server, server.token("admin")) == 200


async def test_token_removed_from_the_config_stops_working_within_5_s(server: Server) -> None:
    cfg = yaml.safe_load(server.config_path.read_text(encoding="utf-8"))
    cfg["auth"]["tokens"] = [t for t in cfg["auth"]["tokens"]
                             if t["token"] != TOKENS["huangyan"]["token"]]
    cfg["auth"]["tokens"].append({"token": "t-added-later-0001", "role": "admin"})
    server.config_path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    assert await until_status(server, server.token("huangyan"), 401) < 5
    assert await status_of(server, "t-added-later-0001") == 200
    assert await status_of(server, server.token("city")) == 200


def test_token_book_active_rereads_at_most_once_a_second(tmp_path: Path) -> None:
    now = [0.0]
    cfg_path = write_config(tmp_path)
    book = TokenBook(load_config(cfg_path), monotonic=lambda: now[0])
    digest = hash_token(TOKENS["huangyan"]["token"])
    assert book.active(digest)
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    cfg["auth"]["tokens"] = [t for t in cfg["auth"]["tokens"] if t["role"] != "operator"]
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    now[0] = 0.5
    assert book.active(digest)  # not looked at again yet
    now[0] = 1.0
    assert not book.active(digest)
    assert book.active(hash_token(TOKENS["admin"]["token"]))
    assert book.lookup(TOKENS["huangyan"]["token"]) is None


async def test_bad_tokens_are_slowed_per_address(tmp_path: Path) -> None:
    srv = await start_server(tmp_path, limits={"auth_failures_burst": 5,
                                               "auth_failures_per_min": 6})
    try:
        for i in range(5):
            assert await status_of(srv, f"wrong-{i}") == 401
        async with srv.session.get(srv.url + "/api/v1/events",
                                   headers={"Authorization": "Bearer wrong-6"}) as r:
            assert r.status == 429
            assert 1 <= int(r.headers["Retry-After"]) <= 10
            assert (await r.json())["error"]["code"] == "rate_limited"
        # While the address is held back, a guess that happens to be right learns nothing.
        assert await status_of(srv, srv.token("admin")) == 429
        assert await status_of(srv, "", "/metrics") == 429
        # Tokens of other addresses are counted apart.
        srv.state.auth_failures.clear()
        assert await status_of(srv, srv.token("admin")) == 200
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


def test_demo_tokens_refused_beyond_loopback(tmp_path: Path) -> None:
    tokens = [{"token": "demo-admin-token", "role": "admin", "demo": True},
              {"token": "demo-city-token", "role": "operator", "region": "331000",
               "demo": True}]
    cfg = write_config(tmp_path, auth={"tokens": tokens})
    with pytest.raises(ConfigError) as e:
        build_app(load_config(cfg, overrides={"server.host": "0.0.0.0"}))
    assert e.value.key == "auth.tokens[0].demo" and "0.0.0.0" in e.value.problem
    # The same config on loopback serves them.
    app = build_app(load_config(cfg))
    from dispatch.server.app import STATE

    assert app[STATE].tokens.lookup("demo-admin-token") is not None


def test_serve_beyond_loopback_with_demo_tokens_stops_with_one_message(tmp_path: Path) -> None:
    """``dispatch serve --host`` an address that is not loopback: one line, exit 2, no bind."""
    cfg = write_config(tmp_path, auth={"tokens": [
        {"token": "demo-admin-token", "role": "admin", "demo": True}]})
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: nothing can be bound to it.
    out = subprocess.run([sys.executable, "-m", "dispatch", "serve", "--config", str(cfg),
                          "--host", "192.0.2.1", "--port", "8080"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "auth.tokens[0].demo" in lines[0] and "192.0.2.1" in lines[0]


def test_demo_entries_of_the_token_file_are_refused_beyond_loopback(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    config = load_config(cfg)
    write_token_file(config.token_file, [
        {"digest": hash_token("demo-from-file"), "role": "admin", "demo": True}])
    assert TokenBook(config, refuse_demo=True).lookup("demo-from-file") is None
    assert TokenBook(config).lookup("demo-from-file") is not None


async def test_revoked_tokens_open_socket_is_closed_4401_within_5_s(server: Server) -> None:
    tok = issue_token(server.state.config.token_file, "operator", "331003", None, name="夜班")
    async with server.session.ws_connect(
            server.ws_url, headers={"Authorization": f"Bearer {tok}"}) as ws:
        assert (await ws.receive_json())["type"] == "snapshot"
        assert cli(["token", "revoke", "--name", "夜班", "--config",
                    str(server.config_path)]) == 0
        t0 = time.monotonic()
        while True:  # skip pushes until the close
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert time.monotonic() - t0 < 5
        assert ws.close_code == 4401
