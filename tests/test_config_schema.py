"""The configuration's one typed description (dispatch/config.py ``Settings``): the defaults,
the checks, the error messages and the published JSON Schema all come from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema_rs
import msgspec
import pytest
import yaml

from dispatch.config import (
    DEFAULT_CATEGORIES,
    DEFAULTS,
    ConfigError,
    Settings,
    config_schema,
    config_token_spec,
    hash_token,
    load_config,
    token_file_entry,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def validator() -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(config_schema())


def test_defaults_are_the_structs_defaults():
    assert DEFAULTS == msgspec.to_builtins(Settings())
    assert DEFAULTS["categories"] == DEFAULT_CATEGORIES
    assert set(DEFAULTS) == set(Settings.__struct_fields__)


def test_check_config_prints_the_schema_generated_from_the_structs():
    out = subprocess.run([sys.executable, "-m", "dispatch", "check-config", "--schema"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert schema == config_schema()
    assert schema["$defs"]["Settings"]["properties"].keys() == DEFAULTS.keys()
    # each section's keys and defaults are its Struct's
    for name, section in DEFAULTS.items():
        prop = schema["$defs"]["Settings"]["properties"][name]
        assert prop["default"] == section
        if isinstance(section, dict):
            ref = prop["$ref"].rsplit("/", 1)[1]
            assert schema["$defs"][ref]["properties"].keys() >= section.keys()
    assert schema["$defs"]["Server"]["properties"]["port"]["maximum"] == 65535
    assert schema["$defs"]["Timers"]["additionalProperties"] is False


def test_shipped_config_validates_against_the_schema():
    data = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    errors = [e.message for e in validator().iter_errors(data)]
    assert errors == []
    assert validator().is_valid(DEFAULTS)


@pytest.mark.parametrize("text", [
    "server: {port: 70000}\n",
    "server: {workers: 4}\n",
    "timers: {respond_s: 0}\n",
    "timers: {zones: {z1: {arrive_s: -1}}}\n",
    "timers: {zones: {z1: {respond: 60}}}\n",
    "categories: []\n",
    "categories: [{id: a, priority: 9}]\n",
    "auth: {tokens: [{token: short, role: admin}]}\n",
    "auth: {tokens: [{token: longenough1, role: pilot}]}\n",
    # (not "limits: {rate_burst: 1000000.0}": to JSON Schema 1000000.0 is an integer)
    "metrics: {roles: [admin, janitor]}\n",
    "ui: {tiles: {attribution: no url}}\n",
    "colour: blue\n",
])
def test_schema_and_loader_refuse_the_same_shapes(tmp_path, text):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))
    assert not validator().is_valid(yaml.safe_load(text))


@pytest.mark.parametrize("text,message", [
    ("timers: {respond_s: 0}\n", "timers.respond_s: must be a positive number, got 0"),
    ("timers: {respond_s: .inf}\n", "timers.respond_s: must be a positive number, got inf"),
    ("limits: {rate_burst: 1000000.0}\n",
     "limits.rate_burst: must be a positive integer, got 1000000.0"),
    ("server: {port: true}\n", "server.port: must be an integer 0..65535, got True"),
    ("server: {event_loop: uvloop}\n",
     "server.event_loop: removed: the server runs on asyncio's event loop"),
    ("server: {workers: 4}\n", "server.workers: unknown key"),
    ("timers: {respond: 60}\n", "timers.respond: unknown timer key"),
    ("timers: {zones: {z1: {arrive_s: 60}, z2: {arrive_s: -1}}}\n",
     "timers.zones.z2.arrive_s: must be a positive number, got -1"),
    ("timers: {zones: {z1: {arrive_s: 60}, z2: 5}}\n", "timers.zones.z2: must be a mapping"),
    ("categories: [{id: a}, {id: b, timers: {depart: 1}}]\n",
     "categories[1].timers.depart: unknown timer key"),
    ("categories: [{id: a}, {name: b}]\n", "categories[1].id: must be a string"),
    ("categories: [{id: a}, 7]\n", "categories[1]: must be a mapping"),
    ("categories: [{id: a, priority: 9}]\n",
     "categories[0].priority: must be an integer 1..3, got 9"),
    ("auth: {tokens: [{token: longenough1, role: operator, region: 331003}]}\n",
     "auth.tokens[0].region: must be a string, got 331003"),
    ("auth: {tokens: [{token: longenough1, role: supervisor}]}\n",
     "auth.tokens[0].region: a supervisor token must name its region"),
    ("auth: {tokens: [7]}\n", "auth.tokens[0]: must be a mapping with token and role"),
    ("auth: {token_file: 7}\n", "auth.token_file: must be a file path"),
    ("metrics: {roles: [admin, janitor]}\n",
     "metrics.roles: must be a list of roles (operator, field, supervisor, intake, department, "
     "admin), "
     "got ['admin', 'janitor']"),
    ("ui: {tiles: {attribution: no url}}\n",
     "ui.tiles.url: must be a string (the tile URL template)"),
    ("ui: {center: [121.2]}\n", "ui.center: must be [lon, lat]"),
    ("timezone: Mars/Olympus\n", "timezone: unknown time zone 'Mars/Olympus'"),
    ("store: 7\n",
     "store: must be a file path or a redis://, rediss:// or redis+sentinel:// URL"),
    ("routing: 5\n", "routing: must be a mapping"),
])
def test_messages_name_the_dotted_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert str(exc.value) == message


def test_environment_values_are_checked_like_the_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "{}\n"), env={"DISPATCH_LIMITS__RATE_BURST": "1000000.0"})
    assert str(exc.value) == "limits.rate_burst: must be a positive integer, got 1000000.0"
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "{}\n"), env={"DISPATCH_SERVER__WORKERS": "4"})
    assert exc.value.key == "server.workers"


def test_token_entries_name_their_own_key():
    with pytest.raises(ConfigError) as exc:
        token_file_entry({"digest": "00" * 31, "role": "admin"}, "tokens[4]")
    assert str(exc.value) == "tokens[4].digest: must be 64 hex digits"
    with pytest.raises(ConfigError) as exc:
        token_file_entry("x", "tokens[1]")
    assert str(exc.value) == "tokens[1]: must be a mapping with digest and role"
    with pytest.raises(ConfigError) as exc:
        config_token_spec({"token": "longenough1", "role": "field", "unit": ""}, "auth.tokens[2]")
    assert str(exc.value) == "auth.tokens[2].unit: a field token must name its unit"
    spec = token_file_entry({"digest": "AB" * 32, "role": "field", "unit": "u-1"}, "tokens[0]")
    assert (spec.digest, spec.name) == ("ab" * 32, "field:u-1")
    spec = config_token_spec({"token": "a-secret-token", "role": "admin"}, "auth.tokens[0]")
    assert spec.digest == hash_token("a-secret-token")


def test_model_is_the_typed_configuration(tmp_path):
    c = load_config(write(tmp_path, "timers: {zones: {z1: {arrive_s: 1200}}}\n"
                                    "categories: [{id: a, timers: {respond_s: 30}}]\n"))
    m = c.model
    assert isinstance(m, Settings)
    assert m.timers.respond_s == 60 and m.timers.zones["z1"].arrive_s == 1200
    assert m.categories[0].timers.respond_s == 30 and m.categories[0].priority == 2
    assert m.auth.token_file == str(tmp_path / "var" / "tokens.yaml")  # resolved, as raw
    assert c["categories"] == [{"id": "a", "timers": {"respond_s": 30}}]  # raw: as written
