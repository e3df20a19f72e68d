"""Configuration: built-in defaults, a YAML file, environment overrides, one validator.

How it works: ``load_config(path)`` starts from ``DEFAULTS`` (never from the shipped
``config.yaml``: contract §7 says keys a file leaves out take the built-in defaults), merges
the file over them, then applies ``DISPATCH_<SECTION>__<KEY>=value`` environment variables
(values parsed as YAML scalars), and validates the result. The first problem found stops
start-up with a ``ConfigError`` naming the key, e.g. ``timers.respond_s: must be a positive
number``. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import copy
import hashlib
import os
import zoneinfo
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dispatch.store.redis_keys import REDIS_SCHEMES
from geo import DEMO_DIR

ROLES = ("operator", "field", "supervisor", "intake", "department", "admin")
CRS_NAMES = ("wgs84", "gcj02", "bd09")

# The bureau's common categories (contract §7); the shipped config.yaml lists the same.
DEFAULT_CATEGORIES: list[dict[str, Any]] = [
    {"id": "street_vending", "name": "占道经营 Street vending", "priority": 3},
    {"id": "illegal_construction", "name": "违法建设 Illegal construction", "priority": 2},
    {"id": "muck_truck", "name": "渣土车撒漏 Muck spilled by trucks", "priority": 2},
    {"id": "cooking_fumes", "name": "油烟扰民 Cooking fumes", "priority": 3},
    {"id": "noise", "name": "噪声扰民 Noise", "priority": 3},
    {"id": "illegal_fishing", "name": "非法捕捞 Illegal fishing", "priority": 1},
    {"id": "illegal_sand_mining", "name": "非法采砂 Illegal sand mining", "priority": 1},
    {"id": "outdoor_advertising", "name": "违规户外广告 Illegal outdoor advertising",
     "priority": 3},
    {"id": "garbage_dumping", "name": "乱倒垃圾 Illegal dumping", "priority": 2},
    {"id": "illegal_parking", "name": "违规停车 Illegal parking", "priority": 3},
]

DEFAULTS: dict[str, Any] = {
    "server": {"host": "127.0.0.1", "port": 8080},
    "store": "var/dispatch.db",
    "store_options": {"synchronous": "FULL", "append_timeout_s": 10},
    "geo": {
        "regions": str(DEMO_DIR / "regions.geojson"),
        "zones": str(DEMO_DIR / "zones.geojson"),
        "teams": str(DEMO_DIR / "teams.yaml"),
    },
    "routing": {"snap_m": 2000, "position_max_age_s": 300},
    "timers": {"respond_s": 60, "depart_s": 180, "arrive_s": 900, "warn_fraction": 0.2,
               "zones": {}},
    "offline": {"max_skew_s": 30},
    "categories": DEFAULT_CATEGORIES,
    # contract §8: the departments events may be transferred to (移送), [{id, name, webhook?}]
    "departments": [],
    "auth": {"tokens": [], "token_file": "var/tokens.yaml"},
    # auth_failures_*: requests with a missing or bad token, per client address; past the
    # burst every token from that address answers 429 until the bucket refills.
    "limits": {"max_body_bytes": 65536, "max_json_depth": 32, "rate_per_s": 100,
               "rate_burst": 400, "ws_max_message_bytes": 65536,
               "auth_failures_per_min": 30, "auth_failures_burst": 30},
    # GET /metrics: a token of one of these roles, or anyone when public is true.
    "metrics": {"public": False, "roles": ["admin", "supervisor"]},
    "ws": {"queue_size": 2000, "heartbeat_s": 20, "replay_max": 20000,
           "position_flush_s": 1.0},
    "timezone": "Asia/Shanghai",
    "ui": {"tiles": None, "center": [121.2, 28.75], "zoom": 9},
}


class ConfigError(Exception):
    """A configuration problem; ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class TokenSpec:
    """One configured token, kept only as its SHA-256 digest."""

    digest: str
    role: str
    region: str | None
    unit: str | None
    name: str
    demo: bool = False
    department: str | None = None  # a department token's department (contract §8)


@dataclass
class Config:
    """The validated configuration; ``raw`` keeps the merged tree."""

    raw: dict[str, Any]
    base_dir: Path
    path: Path | None = None  # the file it was read from (TokenBook re-reads its tokens)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    @property
    def host(self) -> str:
        return str(self.raw["server"]["host"])

    @property
    def port(self) -> int:
        return int(self.raw["server"]["port"])

    @property
    def store(self) -> str:
        return str(self.raw["store"])

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.raw["timezone"])

    def tokens(self) -> list[TokenSpec]:
        return [config_token_spec(t, f"auth.tokens[{i}]", departments=self.department_ids)
                for i, t in enumerate(self.raw["auth"]["tokens"])]

    @property
    def departments(self) -> list[dict[str, Any]]:
        """The departments events may be transferred to: ``{id, name, webhook}`` each."""
        return [{"id": d["id"], "name": d.get("name") or d["id"], "webhook": d.get("webhook")}
                for d in self.raw["departments"]]

    @property
    def department_ids(self) -> tuple[str, ...]:
        return tuple(d["id"] for d in self.raw["departments"])

    @property
    def token_file(self) -> Path:
        return Path(self.raw["auth"]["token_file"])


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_config(path: str | os.PathLike[str] | None = None,
                env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Load, merge and validate; raise ``ConfigError`` naming the first bad key."""
    raw = copy.deepcopy(DEFAULTS)
    base = Path.cwd()
    source: Path | None = None
    if path is not None:
        p = Path(path)
        source = p.resolve()
        base = source.parent
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("config", f"cannot read {p}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("config", f"{p} is not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("config", "the top level must be a mapping")
        _merge(raw, data, "")
    _apply_env(raw, os.environ if env is None else env)
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted, value)
    _validate(raw)
    _resolve_paths(raw, base)
    return Config(raw=raw, base_dir=base, path=source)


def _merge(into: dict[str, Any], data: dict[str, Any], prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in DEFAULTS and not prefix:
            raise ConfigError(dotted, "unknown key")
        if isinstance(into.get(key), dict) and key not in ("zones",):
            if not isinstance(value, dict):
                raise ConfigError(dotted, "must be a mapping")
            _merge(into[key], value, dotted + ".")
        else:
            into[key] = value


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, text in env.items():
        if not name.startswith("DISPATCH_") or name in ("DISPATCH_CONFIG",):
            continue
        dotted = name[len("DISPATCH_"):].lower().replace("__", ".")
        if dotted.split(".")[0] not in DEFAULTS:
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if isinstance(value, dict | list) or value is None:
            value = text  # one value per variable: "memory:" is a string, not a mapping
        _set_path(raw, dotted, value)


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _need(cond: bool, key: str, problem: str) -> None:
    if not cond:
        raise ConfigError(key, problem)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float(
        "inf")


def _positive(raw: dict[str, Any], section: str, key: str, integer: bool = False) -> None:
    v = raw[section][key]
    kind = "integer" if integer else "number"
    ok = _is_num(v) and v > 0 and (not integer or isinstance(v, int))
    _need(ok, f"{section}.{key}", f"must be a positive {kind}, got {v!r}")


def _validate(raw: dict[str, Any]) -> None:
    srv = raw["server"]
    for key in srv:
        _need(key in DEFAULTS["server"], f"server.{key}",
              "removed: the server runs on asyncio's event loop" if key == "event_loop"
              else "unknown key")
    _need(isinstance(srv.get("host"), str) and srv["host"] != "", "server.host",
          "must be a host name or address")
    port = srv.get("port")
    _need(isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535,
          "server.port", f"must be an integer 0..65535, got {port!r}")
    _need(isinstance(raw["store"], str) and raw["store"] != "", "store",
          "must be a file path or a redis://, rediss:// or redis+sentinel:// URL")
    sync = raw["store_options"].get("synchronous")
    _need(sync in ("FULL", "NORMAL"), "store_options.synchronous", "must be FULL or NORMAL")
    ato = raw["store_options"].get("append_timeout_s")
    _need(_is_num(ato) and 0 < ato <= 600, "store_options.append_timeout_s",
          "must be a number of seconds in (0, 600]")
    for key in ("regions", "teams"):
        _need(isinstance(raw["geo"].get(key), str), f"geo.{key}", "must be a file path")
    _need(raw["geo"].get("zones") is None or isinstance(raw["geo"]["zones"], str), "geo.zones",
          "must be a file path or null")
    _positive(raw, "routing", "snap_m")
    _positive(raw, "routing", "position_max_age_s")
    _validate_timers(raw["timers"], "timers")
    for zone_id, t in raw["timers"]["zones"].items():
        _need(isinstance(t, dict), f"timers.zones.{zone_id}", "must be a mapping")
        _validate_timers(t, f"timers.zones.{zone_id}", partial=True)
    _need(_is_num(raw["offline"]["max_skew_s"]) and raw["offline"]["max_skew_s"] >= 0,
          "offline.max_skew_s", "must be a number >= 0")
    _validate_categories(raw["categories"])
    departments = _validate_departments(raw["departments"], raw.get("webhooks"))
    _need(isinstance(raw["auth"].get("tokens"), list), "auth.tokens", "must be a list")
    for i, t in enumerate(raw["auth"]["tokens"]):
        config_token_spec(t, f"auth.tokens[{i}]", departments=departments)
    for key in ("max_body_bytes", "max_json_depth", "rate_burst", "ws_max_message_bytes",
                "auth_failures_burst"):
        _positive(raw, "limits", key, integer=True)
    _positive(raw, "limits", "rate_per_s")
    _positive(raw, "limits", "auth_failures_per_min")
    m = raw["metrics"]
    _need(isinstance(m.get("public"), bool), "metrics.public", "must be true or false")
    roles = m.get("roles")
    _need(isinstance(roles, list) and all(r in ROLES for r in roles), "metrics.roles",
          f"must be a list of roles ({', '.join(ROLES)}), got {roles!r}")
    for key in ("queue_size", "replay_max"):
        _positive(raw, "ws", key, integer=True)
    _positive(raw, "ws", "heartbeat_s")
    _positive(raw, "ws", "position_flush_s")
    if raw["ws"].get("queue_bytes") is not None:  # else queue_size * 2048 (hub.queue_bytes)
        _positive(raw, "ws", "queue_bytes", integer=True)
    try:
        zoneinfo.ZoneInfo(str(raw["timezone"]))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError("timezone", f"unknown time zone {raw['timezone']!r}") from None
    tiles = raw["ui"].get("tiles")
    _need(tiles is None or (isinstance(tiles, dict) and isinstance(tiles.get("url"), str)),
          "ui.tiles", "must be null or a mapping with a url")


def _validate_timers(t: dict[str, Any], key: str, partial: bool = False) -> None:
    known = {"respond_s", "depart_s", "arrive_s", "warn_fraction", "zones"}
    for name, v in t.items():
        _need(name in known, f"{key}.{name}", "unknown timer key")
        if name == "zones":
            _need(not partial and isinstance(v, dict), f"{key}.zones",
                  "must be a mapping of zone id to timers")
            continue
        if name == "warn_fraction":
            _need(_is_num(v) and 0 <= v < 1, f"{key}.{name}", f"must be in [0, 1), got {v!r}")
        else:
            _need(_is_num(v) and v > 0, f"{key}.{name}", f"must be a positive number, got {v!r}")


def _validate_categories(cats: Any) -> None:
    _need(isinstance(cats, list) and len(cats) > 0, "categories", "must be a non-empty list")
    seen: set[str] = set()
    for i, c in enumerate(cats):
        key = f"categories[{i}]"
        _need(isinstance(c, dict), key, "must be a mapping")
        _need(isinstance(c.get("id"), str) and c["id"] != "", f"{key}.id", "must be a string")
        _need(c["id"] not in seen, f"{key}.id", f"duplicate category {c['id']!r}")
        seen.add(c["id"])
        _need(isinstance(c.get("name", c["id"]), str), f"{key}.name", "must be a string")
        pr = c.get("priority", 2)
        _need(isinstance(pr, int) and not isinstance(pr, bool) and 1 <= pr <= 3,
              f"{key}.priority", f"must be an integer 1..3, got {pr!r}")
        timers = c.get("timers") or {}
        _need(isinstance(timers, dict), f"{key}.timers", "must be a mapping")
        _validate_timers(timers, f"{key}.timers", partial=True)


def _validate_departments(deps: Any, webhooks: Any) -> tuple[str, ...]:
    """``departments`` (contract §8): unique ids, a name, and a ``webhook`` that names an
    entry of ``webhooks`` when that section exists; the ids, in order."""
    _need(isinstance(deps, list), "departments", "must be a list of {id, name, webhook?}")
    hooks = None
    if isinstance(webhooks, list):
        hooks = {str(w.get("id")) for w in webhooks if isinstance(w, dict)}
    seen: list[str] = []
    for i, d in enumerate(deps):
        key = f"departments[{i}]"
        _need(isinstance(d, dict), key, "must be a mapping with id and name")
        for name in d:
            _need(name in ("id", "name", "webhook"), f"{key}.{name}", "unknown key")
        _need(isinstance(d.get("id"), str) and d["id"].strip() != "" and len(d["id"]) <= 64,
              f"{key}.id", "must be a non-empty string of at most 64 characters")
        _need(d["id"] not in seen, f"{key}.id", f"duplicate department {d['id']!r}")
        seen.append(d["id"])
        _need(isinstance(d.get("name", d["id"]), str) and d.get("name", d["id"]) != "",
              f"{key}.name", "must be a non-empty string")
        hook = d.get("webhook")
        _need(hook is None or isinstance(hook, str), f"{key}.webhook",
              "must be the id of an entry of webhooks")
        if hook is not None and hooks is not None:
            _need(hook in hooks, f"{key}.webhook", f"names no entry of webhooks: {hook!r}")
    return tuple(seen)


def config_token_spec(t: Any, key: str, *,
                      departments: Collection[str] | None = None) -> TokenSpec:
    """One entry of ``auth.tokens`` (plain token or ``sha256:<hex>``), validated.
    ``departments``: the configured ids a department token must name (None: not checked)."""
    _need(isinstance(t, dict), key, "must be a mapping with token and role")
    tok = t.get("token")
    _need(isinstance(tok, str) and len(tok) >= 8, f"{key}.token",
          "must be a string of at least 8 characters (or sha256:<hex>)")
    if tok.startswith("sha256:"):
        digest = _hex_digest(tok[7:], f"{key}.token", "sha256: must be followed by 64 hex digits")
    else:
        digest = hash_token(tok)
    return token_spec(t, key, digest, departments=departments)


def token_spec(t: dict[str, Any], key: str, digest: str, *,
               departments: Collection[str] | None = None) -> TokenSpec:
    """Role, scope and name of one token entry (config or token file), validated.

    An operator or supervisor names its region (a string: the city's own id for city-wide),
    a field token its unit, a department token its department (one of ``departments`` when
    given); a key that is missing is an error, never "everything".
    """
    role = t.get("role")
    _need(role in ROLES, f"{key}.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
    region, unit = t.get("region"), t.get("unit")
    department = t.get("department")
    if role == "department":
        _need(isinstance(department, str) and department != "", f"{key}.department",
              "a department token must name its department")
        _need(departments is None or department in departments, f"{key}.department",
              f"unknown department {department!r} (not in departments)")
        _need(region is None and unit is None, f"{key}.region" if region is not None
              else f"{key}.unit", "a department token has no region or unit")
    else:
        _need(department is None, f"{key}.department", "only a department token names one")
    if role == "field":
        _need(isinstance(unit, str) and unit != "", f"{key}.unit",
              "a field token must name its unit")
    elif role in ("operator", "supervisor"):
        _need(isinstance(region, str) and region != "", f"{key}.region",
              f"an {role} token must name its region" if role == "operator"
              else f"a {role} token must name its region")
    else:
        _need(region is None or isinstance(region, str), f"{key}.region", "must be a string")
        _need(unit is None or isinstance(unit, str), f"{key}.unit", "must be a string")
    demo = t.get("demo", False)
    _need(isinstance(demo, bool), f"{key}.demo", "must be true or false")
    name = t.get("name")
    _need(name is None or isinstance(name, str | int), f"{key}.name", "must be a string")
    return TokenSpec(digest=digest, role=role, region=region, unit=unit,
                     name=str(name or f"{role}:{region or unit or department or '*'}"),
                     demo=demo, department=department)


def _hex_digest(text: Any, key: str, problem: str) -> str:
    digest = str(text).lower()
    _need(isinstance(text, str) and len(digest) == 64
          and all(ch in "0123456789abcdef" for ch in digest), key, problem)
    return digest


def token_file_entry(t: Any, key: str, *,
                     departments: Collection[str] | None = None) -> TokenSpec:
    """One entry of the token file (``{digest, role, region|unit|department, name}``),
    validated."""
    _need(isinstance(t, dict), key, "must be a mapping with digest and role")
    digest = _hex_digest(t.get("digest"), f"{key}.digest", "must be 64 hex digits")
    return token_spec(t, key, digest, departments=departments)


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    for key in ("regions", "zones", "teams"):
        if raw["geo"].get(key):
            raw["geo"][key] = str((base / raw["geo"][key]).resolve())
    if not raw["store"].startswith((*REDIS_SCHEMES, "memory:")):
        raw["store"] = str((base / raw["store"]).resolve())
    raw["auth"]["token_file"] = str((base / raw["auth"]["token_file"]).resolve())
