"""Bearer tokens, roles and scope (contract §6).

Tokens are kept only as SHA-256 digests (from config.yaml, plain or ``sha256:<hex>``, and from
the token file that ``dispatch token create`` appends to) and never logged. A principal's
scope is a region: it sees an event when that region is on the event's region path
(grid → township → county → city), and a unit when it is on the path of the unit's team's
region. A field principal sees only the events assigned to its own unit.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dispatch.config import Config, TokenSpec, hash_token

EVENT_PATH_KEYS = ("grid", "township", "county", "city")


@dataclass(frozen=True)
class Principal:
    """Who is calling: role plus region or unit."""

    role: str
    region: str | None
    unit: str | None
    name: str
    digest: str

    @property
    def actor(self) -> str:
        """How the journal names this caller (never the token)."""
        return self.name

    def sees_all(self) -> bool:
        return self.role == "admin" or (self.role in ("operator", "supervisor")
                                        and self.region is None)

    def can_read_event(self, event: dict[str, Any]) -> bool:
        if self.sees_all():
            return True
        if self.role == "field":
            return event.get("unit") == self.unit
        if self.role in ("operator", "supervisor"):
            return any(event.get(k) == self.region for k in EVENT_PATH_KEYS)
        return False

    def can_act(self, event: dict[str, Any]) -> bool:
        if self.role == "admin":
            return True
        if self.role in ("operator", "field"):
            return self.can_read_event(event)
        return False


class TokenBook:
    """Looks up principals by token digest; rereads the token file when it changes."""

    def __init__(self, config: Config) -> None:
        self._static = {t.digest: t for t in config.tokens()}
        self._file = config.token_file
        self._file_mtime: float | None = None
        self._from_file: dict[str, TokenSpec] = {}

    def add(self, spec: TokenSpec) -> None:
        """Accept one more token for this process only (the demo simulator's)."""
        self._static[spec.digest] = spec

    def lookup(self, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = hash_token(token)
        spec = self._static.get(digest) or self._file_tokens().get(digest)
        if spec is None or not hmac.compare_digest(spec.digest, digest):
            return None
        return Principal(role=spec.role, region=spec.region, unit=spec.unit, name=spec.name,
                         digest=digest)

    def _file_tokens(self) -> dict[str, TokenSpec]:
        try:
            mtime = self._file.stat().st_mtime
        except OSError:
            return {}
        if mtime != self._file_mtime:
            self._from_file = {t.digest: t for t in read_token_file(self._file)}
            self._file_mtime = mtime
        return self._from_file


def read_token_file(path: Path) -> list[TokenSpec]:
    """Tokens issued by ``dispatch token create`` (digests only)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError):
        return []
    out = []
    for t in data:
        if isinstance(t, dict) and isinstance(t.get("digest"), str):
            out.append(TokenSpec(digest=t["digest"], role=t["role"], region=t.get("region"),
                                 unit=t.get("unit"), name=t.get("name") or t["role"]))
    return out


def issue_token(path: Path, role: str, region: str | None, unit: str | None,
                name: str | None = None) -> str:
    """Create a random token, append its digest to the token file, return the token once."""
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"digest": hash_token(token), "role": role, "region": region, "unit": unit,
             "name": name or f"{role}:{region or unit or '*'}"}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(yaml.safe_dump([entry], allow_unicode=True))
        fh.flush()
        os.fsync(fh.fileno())
    return token
