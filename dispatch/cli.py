"""``dispatch`` command line: serve, token, check-config, geo, audit (contract §7)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from dispatch.config import ROLES, Config, ConfigError, config_schema, load_config

log = logging.getLogger("dispatch")
ROOT_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


# The live state is many small dicts: collect young objects less often, or full collections
# over it pause the loop for 100+ ms under load (bench/bench_core.py measures both).
GC_THRESHOLDS = (50_000, 50, 1000)

def _config(path: str | None, **overrides: Any) -> Config:
    """--config FILE, else $DISPATCH_CONFIG, else ./config.yaml, else the repo's config.yaml."""
    if path is None:
        path = os.environ.get("DISPATCH_CONFIG")
    if path is None:
        for cand in (Path("config.yaml"), ROOT_CONFIG):
            if cand.exists():
                path = str(cand)
                break
    return load_config(path, overrides={k: v for k, v in overrides.items() if v is not None})


def _fail(exc: Exception) -> int:
    print(f"dispatch: configuration error: {exc}", file=sys.stderr)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web
    from aiohttp.abc import AbstractAccessLogger

    try:
        config = _config(args.config, **{"server.host": args.host, "server.port": args.port})
    except ConfigError as exc:
        return _fail(exc)
    from dispatch.server.app import build_app

    class AccessLogger(AbstractAccessLogger):
        """Method, path (never the query: it may carry a token), status, time."""

        def log(self, request: Any, response: Any, time: float) -> None:
            self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status,
                             time * 1000)

    try:
        app = build_app(config)
    except ConfigError as exc:
        return _fail(exc)
    except Exception as exc:  # geo data that does not load is a configuration problem
        print(f"dispatch: cannot start: {exc}", file=sys.stderr)
        return 2
    if args.demo:
        from dispatch.simulate import attach_demo

        attach_demo(app, rate_per_min=args.demo_rate)
    _print_banner(config)
    gc.set_threshold(*GC_THRESHOLDS)
    web.run_app(app, host=config.host, port=config.port, access_log_class=AccessLogger,
                access_log=logging.getLogger("dispatch.access") if args.access_log else None,
                shutdown_timeout=10.0, print=None, handle_signals=True)
    print("dispatch: stopped cleanly", flush=True)
    return 0


def _print_banner(config: Config) -> None:
    base = f"http://{config.host}:{config.port}"
    lines = [f"dispatch: serving on {base}  (store: {config.store})"]
    demo = [t for t in config["auth"]["tokens"] if t.get("demo") and
            not str(t.get("token", "")).startswith("sha256:")]
    page = {"operator": "ops", "field": "field", "supervisor": "supervisor", "admin": "ops",
            "department": "department"}
    for t in demo:
        target = page.get(t["role"])
        scope = t.get("region") or t.get("unit") or t.get("department") or "*"
        if target:
            lines.append(f"  {t.get('name', t['role'])} ({t['role']} {scope}): "
                         f"{base}/{target}?token={t['token']}")
    lines.append(f"  API: {base}/api/openapi.json   health: {base}/healthz")
    print("\n".join(lines), flush=True)


def cmd_token_create(args: argparse.Namespace) -> int:
    from dispatch.server.auth import issue_token

    try:
        config = _config(args.config)
    except ConfigError as exc:
        return _fail(exc)
    if args.role == "field" and not args.unit:
        print("dispatch: a field token needs --unit", file=sys.stderr)
        return 2
    if args.role in ("operator", "supervisor") and not args.region:
        print(f"dispatch: a {args.role} token needs --region", file=sys.stderr)
        return 2
    if (args.role == "department") != bool(args.department):
        print("dispatch: a department token needs --department (and only it takes one)",
              file=sys.stderr)
        return 2
    try:
        token = issue_token(config.token_file, args.role, args.region, args.unit, args.name,
                            department=args.department, departments=config.department_ids)
    except ConfigError as exc:
        return _fail(exc)
    print(token)
    print(f"# stored as its SHA-256 in {config.token_file}; this is the only time it is shown",
          file=sys.stderr)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from dispatch.server.auth import revoke_tokens

    try:
        config = _config(args.config)
    except ConfigError as exc:
        return _fail(exc)
    try:
        names = revoke_tokens(config.token_file, config, name=args.name, token=args.token,
                              digest=args.digest)
    except ValueError as exc:
        print(f"dispatch: nothing revoked: {exc}", file=sys.stderr)
        return 1
    for n in names:
        print(f"revoked: {n}")
    print(f"# marked in {config.token_file}; a running server refuses it within 5 s, "
          "open sockets included", file=sys.stderr)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(config_schema(), ensure_ascii=False, indent=2))
        return 0
    try:
        config = _config(args.file)
    except ConfigError as exc:
        return _fail(exc)
    from geo.loader import GeoImportError, load_dataset

    g = config["geo"]
    try:
        ds = load_dataset(g["regions"], g.get("zones"), g["teams"])
    except GeoImportError as exc:
        print(f"dispatch: geo data does not load: {exc}", file=sys.stderr)
        return 1
    zone_ids = set(ds.zones)
    for zid in config["timers"]["zones"]:
        if zid not in zone_ids:
            return _fail(ConfigError(f"timers.zones.{zid}", "names an unknown zone"))
    for i, t in enumerate(config["auth"]["tokens"]):
        if t.get("unit") and t["unit"] not in ds.units:
            return _fail(ConfigError(f"auth.tokens[{i}].unit", f"unknown unit {t['unit']!r}"))
        if t.get("region") and t["region"] not in ds.regions:
            return _fail(ConfigError(f"auth.tokens[{i}].region",
                                     f"unknown region {t['region']!r}"))
    from dispatch.server.webhooks import check_regions

    try:
        check_regions(config, ds.regions)
    except ConfigError as exc:
        return _fail(exc)
    print(f"config OK: store {config.store}; {ds.summary()}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from dispatch.audit import verify_main

    path, evidence = args.db, args.evidence
    if path is None or (evidence is None and args.config is not None):
        try:
            config = _config(args.config)
        except ConfigError as exc:
            return _fail(exc)
        path = path or config.store
        evidence = evidence or config["evidence"]["store"]
    return int(verify_main(path, evidence))


def cmd_simulate(args: argparse.Namespace) -> int:
    from dispatch.simulate import run_external

    return asyncio.run(run_external(args.url, args.token, rate_per_min=args.rate,
                                    duration_s=args.duration))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dispatch", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the server")
    s.add_argument("--config", help="config file (keys it leaves out take built-in defaults)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--demo", action="store_true", help="run the city simulator in the server")
    s.add_argument("--demo-rate", type=float, default=6.0, help="demo events per minute")
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.set_defaults(func=cmd_serve)

    t = sub.add_parser("token", help="manage tokens").add_subparsers(dest="sub", required=True)
    tc = t.add_parser("create", help="issue a token (printed once, stored hashed)")
    tc.add_argument("--role", required=True, choices=list(ROLES))
    g = tc.add_mutually_exclusive_group()
    g.add_argument("--region")
    g.add_argument("--unit")
    g.add_argument("--department", help="a department token's department id (contract §8)")
    tc.add_argument("--name")
    tc.add_argument("--config")
    tc.set_defaults(func=cmd_token_create)
    tr = t.add_parser("revoke", help="revoke a token (issued or configured) by name, by the "
                      "token itself or by its digest")
    g = tr.add_mutually_exclusive_group(required=True)
    g.add_argument("--name", help="every token with this name")
    g.add_argument("--token", help="the token itself")
    g.add_argument("--digest", help="its SHA-256 (at least the first 8 hex digits)")
    tr.add_argument("--config")
    tr.set_defaults(func=cmd_token_revoke)

    c = sub.add_parser("check-config", help="validate a config file and its geo data")
    c.add_argument("file", nargs="?")
    c.add_argument("--schema", action="store_true",
                   help="print the configuration's JSON Schema instead (from dispatch/config.py)")
    c.set_defaults(func=cmd_check_config)

    a = sub.add_parser("audit", help="journal audit").add_subparsers(dest="sub", required=True)
    av = a.add_parser("verify", help="check the journal's SHA-256 chain")
    av.add_argument("--config")
    av.add_argument("--db", help="journal file (default: the config's store)")
    av.add_argument("--evidence", help="evidence folder whose files are checked against their "
                    "hashes (default: the config's evidence.store, unless --db alone is given)")
    av.set_defaults(func=cmd_audit_verify)

    sm = sub.add_parser("simulate", help="drive a server with a simulated city")
    sm.add_argument("--url", required=True)
    sm.add_argument("--token", required=True, help="an admin (or city operator) token")
    sm.add_argument("--rate", type=float, default=6.0, help="events per minute")
    sm.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    sm.set_defaults(func=cmd_simulate)

    from geo.cli import add_geo_commands

    add_geo_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
