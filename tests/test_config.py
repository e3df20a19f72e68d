"""Configuration: built-in defaults, file, environment; one message naming the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.config import DEFAULTS, ConfigError, hash_token, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_config_loads():
    c = load_config(ROOT / "config.yaml")
    assert c.port == 8080 and c.host == "127.0.0.1"
    assert c.store == str(ROOT / "var" / "dispatch.db")
    assert c["geo"]["regions"] == str(ROOT / "geo/data/taizhou/regions.geojson")
    assert {t.role for t in c.tokens()} >= {"operator", "field", "supervisor", "intake"}


def test_left_out_keys_take_builtin_defaults_not_the_shipped_file(tmp_path):
    c = load_config(write(tmp_path, "server: {port: 9999}\n"))
    assert c.port == 9999 and c.host == DEFAULTS["server"]["host"]
    assert c["timers"]["respond_s"] == 60
    assert c.tokens() == []  # the shipped demo tokens are not inherited
    assert c.store == str(tmp_path / "var" / "dispatch.db")  # relative to the file


def test_environment_overrides_single_values(tmp_path):
    c = load_config(write(tmp_path, "{}\n"), env={"DISPATCH_SERVER__PORT": "7000",
                                                  "DISPATCH_TIMERS__RESPOND_S": "30",
                                                  "DISPATCH_STORE": "memory:"})
    assert c.port == 7000 and c["timers"]["respond_s"] == 30 and c.store == "memory:"


@pytest.mark.parametrize("text,key", [
    ("server: {port: 70000}\n", "server.port"),
    ("server: {port: eighty}\n", "server.port"),
    ("server: {event_loop: uvloop}\n", "server.event_loop"),  # bench-only option, gone
    ("timers: {respond_s: 0}\n", "timers.respond_s"),
    ("timers: {warn_fraction: 1.5}\n", "timers.warn_fraction"),
    ("timers: {zones: {z1: {arrive_s: -1}}}\n", "timers.zones.z1.arrive_s"),
    ("timers: {respond: 60}\n", "timers.respond"),
    ("routing: {snap_m: -1}\n", "routing.snap_m"),
    ("categories: []\n", "categories"),
    ("categories: [{id: a, priority: 9}]\n", "categories[0].priority"),
    ("categories: [{id: a}, {id: a}]\n", "categories[1].id"),
    ("categories: [{id: a, timers: {respond_s: x}}]\n", "categories[0].timers.respond_s"),
    ("auth: {tokens: [{token: short, role: admin}]}\n", "auth.tokens[0].token"),
    ("auth: {tokens: [{token: longenough1, role: field}]}\n", "auth.tokens[0].unit"),
    ("auth: {tokens: [{token: longenough1, role: operator}]}\n", "auth.tokens[0].region"),
    ("auth: {tokens: [{token: 'sha256:abc', role: admin}]}\n", "auth.tokens[0].token"),
    ("timezone: Mars/Olympus\n", "timezone"),
    ("store_options: {synchronous: MAYBE}\n", "store_options.synchronous"),
    ("colour: blue\n", "colour"),
    ("server: 8080\n", "server"),
    ("limits: {max_body_bytes: 0}\n", "limits.max_body_bytes"),
    ("limits: {auth_failures_burst: 0}\n", "limits.auth_failures_burst"),
    ("limits: {auth_failures_per_min: -1}\n", "limits.auth_failures_per_min"),
    ("metrics: {public: yes please}\n", "metrics.public"),
    ("metrics: {roles: [admin, janitor]}\n", "metrics.roles"),
    ("metrics: {roles: admin}\n", "metrics.roles"),
    ("auth: {tokens: [{token: longenough1, role: operator, region: null}]}\n",
     "auth.tokens[0].region"),
    ("auth: {tokens: [{token: longenough1, role: supervisor, region: ''}]}\n",
     "auth.tokens[0].region"),
    ("auth: {tokens: [{token: longenough1}]}\n", "auth.tokens[0].role"),
    ("auth: {tokens: [{token: longenough1, role: admin, demo: maybe}]}\n",
     "auth.tokens[0].demo"),
    ("- just a list\n", "config"),
    ("server: {port: [\n", "config"),
])
def test_invalid_config_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert exc.value.key == key
    assert str(exc.value).startswith(f"{key}: ")


def test_tokens_are_kept_hashed(tmp_path):
    digest = hash_token("a-secret-token")
    c = load_config(write(tmp_path, "auth: {tokens: [{token: a-secret-token, role: admin},"
                                    f" {{token: 'sha256:{digest.upper()}', role: intake}}]}}\n"))
    specs = c.tokens()
    assert [s.digest for s in specs] == [digest, digest]
    assert all("a-secret-token" not in repr(s) for s in specs)


def test_metrics_and_auth_failure_defaults(tmp_path):
    c = load_config(write(tmp_path, "{}\n"))
    assert c["metrics"] == {"public": False, "roles": ["admin", "supervisor"]}
    assert c["limits"]["auth_failures_burst"] > 0 and c["limits"]["auth_failures_per_min"] > 0


def test_shipped_demo_tokens_are_marked_demo():
    """They are refused beyond loopback (contract §6), so each must say it is one."""
    c = load_config(ROOT / "config.yaml")
    assert c.tokens() and all(t.demo for t in c.tokens())
    assert c.path == ROOT / "config.yaml"
