"""Configuration: one typed description, built-in defaults, a YAML file, environment overrides.

How it works: the configuration is described once, as ``msgspec.Struct`` models below (one
per section, ``Settings`` for the whole file). Their field defaults are the built-in defaults
(``DEFAULTS`` is derived from them), their ``Meta`` constraints are the checks, and
``config_schema()`` publishes them as a JSON Schema (``dispatch check-config --schema``).

``load_config(path)`` starts from ``DEFAULTS`` (never from the shipped ``config.yaml``:
contract §7 says keys a file leaves out take the built-in defaults), merges the file over
them, then applies ``DISPATCH_<SECTION>__<KEY>=value`` environment variables (values parsed
as YAML scalars), converts the result into ``Settings`` (types, ranges, lengths, enums and
unknown keys are checked in C) and runs the few rules a schema cannot say (``RULES``). The
first problem found stops start-up with a ``ConfigError`` naming the key, e.g.
``timers.respond_s: must be a positive number, got 0``. Relative paths are resolved against
the config file's folder.

Each checked field is written ``checked(type, "problem text", **constraints)``; a msgspec
error becomes a ``ConfigError`` naming the dotted key with that text (config_errors.py).
docs/design.md ("Configuration") says how to add a section.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
import zoneinfo
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec
import yaml
from msgspec import UNSET, Struct, UnsetType, field

from dispatch.config_errors import ConfigError, checked, convert, problem_at
from dispatch.store.redis_keys import REDIS_SCHEMES
from geo import DEMO_DIR

ROLES = ("operator", "field", "supervisor", "intake", "department", "admin")

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


# ---------------------------------------------------------------------------------------------
# The shapes: one Struct per section. Field defaults are the built-in defaults.

PositiveNumber = checked(float, "must be a positive number", got=True, gt=0)
PositiveInt = checked(int, "must be a positive integer", got=True, gt=0)
FilePath = checked(str, "must be a file path")
Text = checked(str, "must be a string")
Flag = checked(bool, "must be true or false")
Role = Literal[ROLES]  # type: ignore[valid-type]


class Server(Struct, kw_only=True, forbid_unknown_fields=True):
    host: checked(str, "must be a host name or address", min_length=1) = "127.0.0.1"
    port: checked(int, "must be an integer 0..65535", got=True, ge=0, le=65535) = 8080


class StoreOptions(Struct, kw_only=True):
    """The embedded (SQLite) store; Redis takes its options from the URL (docs/redis.md)."""

    synchronous: checked(Literal["FULL", "NORMAL"], "must be FULL or NORMAL") = "FULL"
    append_timeout_s: checked(float, "must be a number of seconds in (0, 600]",
                             gt=0, le=600) = 10


class Geo(Struct, kw_only=True):
    regions: FilePath = str(DEMO_DIR / "regions.geojson")
    zones: checked(str | None, "must be a file path or null") = str(DEMO_DIR / "zones.geojson")
    teams: FilePath = str(DEMO_DIR / "teams.yaml")


class Routing(Struct, kw_only=True):
    snap_m: PositiveNumber = 2000
    position_max_age_s: PositiveNumber = 300


WarnFraction = checked(float, "must be in [0, 1)", got=True, ge=0, lt=1)


class TimerOverride(Struct, kw_only=True, forbid_unknown_fields=True):
    """Per-zone or per-category timers: the windows it gives replace the defaults."""

    unknown_key: ClassVar[str] = "unknown timer key"
    respond_s: PositiveNumber | UnsetType = UNSET
    depart_s: PositiveNumber | UnsetType = UNSET
    arrive_s: PositiveNumber | UnsetType = UNSET
    warn_fraction: WarnFraction | UnsetType = UNSET


class Timers(Struct, kw_only=True, forbid_unknown_fields=True):
    unknown_key: ClassVar[str] = "unknown timer key"
    respond_s: PositiveNumber = 60
    depart_s: PositiveNumber = 180
    arrive_s: PositiveNumber = 900
    warn_fraction: WarnFraction = 0.2
    zones: checked(dict[str, checked(TimerOverride, "must be a mapping")],
                  "must be a mapping of zone id to timers") = {}


class Offline(Struct, kw_only=True):
    max_skew_s: checked(float, "must be a number >= 0", ge=0) = 30


class Category(Struct, kw_only=True):
    id: checked(str, "must be a string", min_length=1)
    name: Text | UnsetType = UNSET  # default: the id
    priority: checked(int, "must be an integer 1..3", got=True, ge=1, le=3) = 2
    timers: checked(TimerOverride | None, "must be a mapping") | UnsetType = UNSET


class TokenScope(Struct, kw_only=True):
    """Role, scope and name of a token entry (``auth.tokens`` or the token file)."""

    role: checked(Role, f"must be one of {', '.join(ROLES)}", got=True)
    region: checked(str, "must be a string", got=True) | None = None
    unit: checked(str, "must be a string", got=True) | None = None
    department: checked(str, "must be a string", got=True) | None = None  # contract §8
    name: checked(str | int, "must be a string") | None = None
    demo: Flag = False


class TokenEntry(TokenScope, kw_only=True):
    """One entry of ``auth.tokens``: the token itself, or ``sha256:<hex>`` of it."""

    token: checked(str, "must be a string of at least 8 characters (or sha256:<hex>)",
                  min_length=8)


class TokenFileEntry(TokenScope, kw_only=True):
    """One entry of the token file (written by ``dispatch token create``)."""

    digest: checked(str, "must be 64 hex digits", pattern="^[0-9a-fA-F]{64}$")


ConfigToken = checked(TokenEntry, "must be a mapping with token and role")
FileToken = checked(TokenFileEntry, "must be a mapping with digest and role")


class Department(Struct, kw_only=True, forbid_unknown_fields=True):
    """A department events may be transferred to (移送, contract §8); ``webhook`` names an
    entry of ``webhooks`` that then also receives every change of its transferred events."""

    id: checked(str, "must be a non-empty string of at most 64 characters", min_length=1,
                max_length=64, pattern=r"\S")
    name: checked(str, "must be a non-empty string", min_length=1) | UnsetType = UNSET
    webhook: checked(str, "must be the id of an entry of webhooks") | None = None


class Auth(Struct, kw_only=True):
    tokens: checked(list[ConfigToken], "must be a list") = []
    token_file: FilePath = "var/tokens.yaml"


class Limits(Struct, kw_only=True):
    max_body_bytes: PositiveInt = 65536
    max_json_depth: PositiveInt = 32
    rate_per_s: PositiveNumber = 100
    rate_burst: PositiveInt = 400
    ws_max_message_bytes: PositiveInt = 65536
    # Requests with a missing or bad token, per client address; past the burst every token
    # from that address answers 429 until the bucket refills.
    auth_failures_per_min: PositiveNumber = 30
    auth_failures_burst: PositiveInt = 30


class Metrics(Struct, kw_only=True):
    """``GET /metrics``: a token of one of these roles, or anyone when public is true."""

    public: Flag = False
    roles: checked(list[Role], f"must be a list of roles ({', '.join(ROLES)})", got=True) = \
        field(default_factory=lambda: ["admin", "supervisor"])


class Ws(Struct, kw_only=True):
    queue_size: PositiveInt = 2000
    heartbeat_s: PositiveNumber = 20
    replay_max: PositiveInt = 20000
    position_flush_s: PositiveNumber = 1.0
    # Left out or null: queue_size * 2048 (hub.queue_bytes).
    queue_bytes: PositiveInt | None | UnsetType = UNSET


class Tiles(Struct, kw_only=True):
    """A tile server; keys besides url (attribution, crs, ...) go to the pages as given."""

    url: checked(str, "must be a string (the tile URL template)")


class Ui(Struct, kw_only=True):
    tiles: checked(Tiles | None, "must be null or a mapping with a url") = None
    center: checked(list[float], "must be [lon, lat]", min_length=2, max_length=2) = \
        field(default_factory=lambda: [121.2, 28.75])
    zoom: checked(float, "must be a map zoom 0..22", got=True, ge=0, le=22) = 9


class Evidence(Struct, kw_only=True):
    """Evidence files (contract §8), content-addressed; on Redis every instance must see the
    same folder (shared storage), and start-up refuses one it cannot write."""

    store: checked(str, "must be a folder path", min_length=1) = "var/evidence"
    max_bytes: PositiveInt = 20 * 1024 * 1024


WebhookId = checked(str, "must be 1-64 letters, digits, '.', '_' or '-'",
                    pattern="^[A-Za-z0-9._-]{1,64}$")
AnyOrText = checked(str, "must be a non-empty string, or left out for any", min_length=1)


class Webhook(Struct, kw_only=True, forbid_unknown_fields=True):
    """One receiver of change messages (contract v2 §8, server/webhooks.py); whether its
    region exists is checked against the geo data at start-up."""

    id: WebhookId
    url: checked(str, "must be an http:// or https:// URL", got=True)
    secret: checked(str, "must be a non-empty string (the HMAC-SHA256 key)", min_length=1)
    source: AnyOrText | None = None
    region: AnyOrText | None = None


class WebhooksOptions(Struct, kw_only=True, forbid_unknown_fields=True):
    """Retries back off from retry_initial_s (at most 1 s, contract §8), doubling, to
    retry_max_s (at most 60 s); one attempt waits timeout_s; on Redis one instance per
    webhook holds a lease_s lease."""

    retry_initial_s: checked(float, "must be a number of seconds in (0, 1]", got=True,
                             gt=0, le=1) = 1.0
    retry_max_s: checked(float, "must be a number of seconds from retry_initial_s to 60",
                         got=True, gt=0, le=60) = 60.0
    timeout_s: checked(float, "must be a number of seconds in (0, 600]", got=True,
                       gt=0, le=600) = 10.0
    lease_s: checked(float, "must be a number of seconds in (0, 600]", got=True,
                     gt=0, le=600) = 10.0


class Settings(Struct, kw_only=True, forbid_unknown_fields=True):
    """The dispatch server's configuration file (dispatch/config.py)."""

    server: Server = field(default_factory=Server)
    store: checked(str, "must be a file path or a redis://, rediss:// or redis+sentinel:// URL",
                  min_length=1) = "var/dispatch.db"
    store_options: StoreOptions = field(default_factory=StoreOptions)
    geo: Geo = field(default_factory=Geo)
    routing: Routing = field(default_factory=Routing)
    timers: Timers = field(default_factory=Timers)
    offline: Offline = field(default_factory=Offline)
    categories: checked(list[checked(Category, "must be a mapping")], "must be a non-empty list",
                       min_length=1) = \
        field(default_factory=lambda: msgspec.convert(DEFAULT_CATEGORIES, list[Category]))
    departments: checked(list[checked(Department, "must be a mapping with id and name")],
                         "must be a list of {id, name, webhook?}") = []
    auth: Auth = field(default_factory=Auth)
    limits: Limits = field(default_factory=Limits)
    metrics: Metrics = field(default_factory=Metrics)
    ws: Ws = field(default_factory=Ws)
    timezone: checked(str, "must be a time zone name such as Asia/Shanghai") = "Asia/Shanghai"
    evidence: Evidence = field(default_factory=Evidence)
    ui: Ui = field(default_factory=Ui)
    webhooks: checked(list[checked(Webhook, "must be a mapping with id, url and secret")],
                      "must be a list of {id, url, secret, source?, region?}") = []
    webhooks_options: WebhooksOptions = field(default_factory=WebhooksOptions)


# The merged tree starts from these: the Structs' defaults, as plain values.
DEFAULTS: dict[str, Any] = msgspec.to_builtins(Settings())

# Keys that once existed: naming one says why it is gone instead of "unknown key".
REMOVED: dict[tuple[str, str], str] = {
    ("server", "event_loop"): "removed: the server runs on asyncio's event loop",
}


def config_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the configuration file, generated from ``Settings``."""
    schema: dict[str, Any] = msgspec.json.schema(Settings)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    props = schema["$defs"]["Settings"]["properties"]
    for key, value in DEFAULTS.items():  # defaults built by a factory are not in the output
        props[key].setdefault("default", value)
    return schema


# ---------------------------------------------------------------------------------------------
# The loaded configuration.

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
    """The validated configuration; ``raw`` keeps the merged tree, ``model`` the typed one."""

    raw: dict[str, Any]
    base_dir: Path
    path: Path | None = None  # the file it was read from (TokenBook re-reads its tokens)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    @functools.cached_property
    def model(self) -> Settings:
        """The same tree as ``Settings`` (paths resolved)."""
        return msgspec.convert(self.raw, Settings)

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
        _merge(raw, data)
    _apply_env(raw, os.environ if env is None else env)
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted, value)
    validate(raw)
    _resolve_paths(raw, base)
    return Config(raw=raw, base_dir=base, path=source)


def validate(raw: dict[str, Any]) -> Settings:
    """The merged tree as ``Settings``, or the first ``ConfigError``: removed keys, then the
    Structs, then each rule of ``RULES``."""
    for (section, key), why in REMOVED.items():
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raise ConfigError(f"{section}.{key}", why)
    model = convert(raw, Settings)
    for rule in RULES:
        rule(raw, model)
    return model


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    """The file over the defaults: a section (a mapping) is merged key by key, anything else
    replaced (a value of the wrong kind is named by the Structs)."""
    for key, value in data.items():
        if isinstance(into.get(key), dict) and isinstance(value, dict):
            into[key] = {**into[key], **value}
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


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    for key in ("regions", "zones", "teams"):
        if raw["geo"].get(key):
            raw["geo"][key] = str((base / raw["geo"][key]).resolve())
    if not raw["store"].startswith((*REDIS_SCHEMES, "memory:")):
        raw["store"] = str((base / raw["store"]).resolve())
    raw["auth"]["token_file"] = str((base / raw["auth"]["token_file"]).resolve())
    raw["evidence"]["store"] = str((base / raw["evidence"]["store"]).resolve())


# ---------------------------------------------------------------------------------------------
# The rules a schema cannot say: each takes (raw, model) and raises ConfigError.

def _finite_numbers(raw: dict[str, Any], model: Settings) -> None:
    """No NaN or infinity anywhere (YAML has ``.nan`` and ``.inf``)."""
    def walk(node: Any, path: list[str | int]) -> None:
        if isinstance(node, float) and not math.isfinite(node):
            raise problem_at(raw, Settings, path, "must be a finite number")
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for k, v in items:
            walk(v, [*path, k])
    walk(raw, [])


def _unique_ids(items: Iterable[Any], section: str, what: str) -> None:
    """Each entry of ``section`` has an ``id`` no earlier entry has (the error names it)."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.id in seen:
            raise ConfigError(f"{section}[{i}].id", f"duplicate {what} {item.id!r}")
        seen.add(item.id)


def _unique_category_ids(raw: dict[str, Any], model: Settings) -> None:
    _unique_ids(model.categories, "categories", "category")


def _departments(raw: dict[str, Any], model: Settings) -> None:
    """Unique ids; a ``webhook`` names an entry of ``webhooks``."""
    _unique_ids(model.departments, "departments", "department")
    hooks = {h.id for h in model.webhooks}
    for i, d in enumerate(model.departments):
        if d.webhook is not None and d.webhook not in hooks:
            raise ConfigError(f"departments[{i}].webhook",
                              f"names no entry of webhooks: {d.webhook!r}")


def _config_tokens(raw: dict[str, Any], model: Settings) -> None:
    departments = [d.id for d in model.departments]
    for i, t in enumerate(model.auth.tokens):
        _token_spec_of(t, f"auth.tokens[{i}]", _token_digest(t.token, f"auth.tokens[{i}].token"),
                       departments)


def _known_timezone(raw: dict[str, Any], model: Settings) -> None:
    try:
        zoneinfo.ZoneInfo(model.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError("timezone", f"unknown time zone {model.timezone!r}") from None


def _webhooks(raw: dict[str, Any], model: Settings) -> None:
    """Unique ids, http(s) URLs with a host, and retry_max_s not under retry_initial_s."""
    _unique_ids(model.webhooks, "webhooks", "webhook")
    for i, h in enumerate(model.webhooks):
        parts = urlsplit(h.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"webhooks[{i}].url",
                              f"must be an http:// or https:// URL, got {h.url!r}")
    o = model.webhooks_options
    if o.retry_max_s < o.retry_initial_s:
        raise ConfigError("webhooks_options.retry_max_s", "must be a number of seconds from "
                          f"retry_initial_s to 60, got {o.retry_max_s!r}")


RULES: tuple[Callable[[dict[str, Any], Settings], None], ...] = (
    _finite_numbers, _unique_category_ids, _webhooks, _departments, _config_tokens,
    _known_timezone)


# ---------------------------------------------------------------------------------------------
# Tokens: configured entries and token-file entries share TokenScope and its rule.

def config_token_spec(t: Any, key: str, *,
                      departments: Collection[str] | None = None) -> TokenSpec:
    """One entry of ``auth.tokens`` (plain token or ``sha256:<hex>``), validated.
    ``departments``: the configured ids a department token must name (None: not checked)."""
    entry = convert(t, ConfigToken, key)
    return _token_spec_of(entry, key, _token_digest(entry.token, f"{key}.token"), departments)


def token_file_entry(t: Any, key: str, *,
                     departments: Collection[str] | None = None) -> TokenSpec:
    """One entry of the token file (``{digest, role, region|unit|department, name}``),
    validated."""
    entry = convert(t, FileToken, key)
    return _token_spec_of(entry, key, entry.digest.lower(), departments)


def _token_digest(token: str, key: str) -> str:
    if not token.startswith("sha256:"):
        return hash_token(token)
    digest = token[7:].lower()
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise ConfigError(key, "sha256: must be followed by 64 hex digits")
    return digest


def _token_spec_of(t: TokenScope, key: str, digest: str,
                   departments: Collection[str] | None = None) -> TokenSpec:
    """An operator or supervisor names its region (a string: the city's own id for
    city-wide), a field token its unit, a department token its department (one of
    ``departments`` when given); a key that is missing is an error, never "everything"."""
    if t.role == "department":
        if not t.department:
            raise ConfigError(f"{key}.department", "a department token must name its department")
        if departments is not None and t.department not in departments:
            raise ConfigError(f"{key}.department",
                              f"unknown department {t.department!r} (not in departments)")
        if t.region is not None or t.unit is not None:
            raise ConfigError(f"{key}.region" if t.region is not None else f"{key}.unit",
                              "a department token has no region or unit")
    elif t.department is not None:
        raise ConfigError(f"{key}.department", "only a department token names one")
    if t.role == "field" and not t.unit:
        raise ConfigError(f"{key}.unit", "a field token must name its unit")
    if t.role in ("operator", "supervisor") and not t.region:
        article = "an" if t.role == "operator" else "a"
        raise ConfigError(f"{key}.region", f"{article} {t.role} token must name its region")
    return TokenSpec(digest=digest, role=t.role, region=t.region, unit=t.unit,
                     name=str(t.name or f"{t.role}:{t.region or t.unit or t.department or '*'}"),
                     demo=t.demo, department=t.department)
