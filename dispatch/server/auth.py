"""Bearer tokens (contract §6): who is calling. What a caller may see is ``scope.py``'s.

Tokens are kept only as SHA-256 digests (from config.yaml, plain or ``sha256:<hex>``, and from
the token file that ``dispatch token create`` appends to) and never logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dispatch.config import (
    Config,
    ConfigError,
    TokenSpec,
    config_token_spec,
    hash_token,
    token_file_entry,
)
from dispatch.server.scope import Principal

log = logging.getLogger("dispatch.auth")
TOKEN_FILE_MODE = 0o600

class TokenBook:
    """Looks up principals by token digest, from the config file and the token file.

    How it works: both files are re-read when their signature (mtime, size, inode) changes,
    checked at most once per ``recheck_s``, so a token removed from either file, or revoked
    (``dispatch token revoke``), stops working within about a second (contract §6: 5 s). Each
    entry gets the config's own validation; a bad entry is skipped with a warning naming it,
    the others keep working (a token not found is looked for again at once: one just issued
    works immediately). A file that cannot be read or parsed contributes no tokens
    (fail closed) until it is fixed. ``demo: true`` tokens are refused when ``refuse_demo``
    (the server listens on more than loopback).
    """

    def __init__(self, config: Config, *, refuse_demo: bool = False,
                 recheck_s: float = 1.0, monotonic: Callable[[], float] = time.monotonic
                 ) -> None:
        self.refuse_demo = refuse_demo
        self._recheck_s = recheck_s
        self._monotonic = monotonic
        self._checked: float | None = None
        self._extra: dict[str, TokenSpec] = {}
        deps = config.department_ids  # a department token must name one (contract §8)
        self._config_file = _Watched(config.path,
                                     lambda path: _config_file_tokens(path, deps))
        self._token_file = _Watched(config.token_file,
                                    lambda path: read_token_file_entries(path, deps))
        if config.path is None:  # built-in defaults only: nothing to re-read
            self._config_file.specs = {t.digest: t for t in config.tokens()}
        self._tokens: dict[str, TokenSpec] = {}
        self._refresh(force=True)

    def add(self, spec: TokenSpec) -> None:
        """Accept one more token for this process only (the demo simulator's)."""
        self._extra[spec.digest] = spec
        self._rebuild()

    def lookup(self, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = hash_token(token)
        self._refresh()
        spec = self._tokens.get(digest)
        if spec is None:  # perhaps issued a moment ago: a stat is cheap, misses are limited
            self._refresh(stat_now=True)
            spec = self._tokens.get(digest)
        if spec is None or not hmac.compare_digest(spec.digest, digest):
            return None
        return Principal(role=spec.role, region=spec.region, unit=spec.unit, name=spec.name,
                         digest=digest, department=spec.department)

    def active(self, digest: str) -> bool:
        """Whether the token with this digest still works (interfaces §5)."""
        self._refresh()
        return digest in self._tokens

    def _refresh(self, force: bool = False, stat_now: bool = False) -> None:
        now = self._monotonic()
        if (not (force or stat_now) and self._checked is not None
                and now - self._checked < self._recheck_s):
            return
        self._checked = now
        changed = [w.reload() for w in (self._config_file, self._token_file)]
        if force or any(changed):
            self._rebuild()

    def _rebuild(self) -> None:
        tokens: dict[str, TokenSpec] = {}
        for source in (self._config_file, self._token_file):
            for digest, spec in source.specs.items():
                if spec.demo and self.refuse_demo:
                    log.error("%s: demo token %r refused: the server listens on more than "
                              "loopback", source.label, spec.name)
                    continue
                tokens[digest] = spec
        tokens.update(self._extra)
        revoked = self._config_file.revoked | self._token_file.revoked
        self._tokens = {d: s for d, s in tokens.items() if d not in revoked}


_UNSEEN = (-2, -2, -2)  # a file signature before the first look


class _Watched:
    """One file of tokens, re-read when its (mtime, size, inode) changes."""

    def __init__(self, path: Path | None,
                 read: Callable[[Path], tuple[dict[str, TokenSpec], set[str]]]) -> None:
        self.path = path
        self.label = str(path)
        self._read = read
        self._sig: tuple[int, int, int] | None = _UNSEEN
        self.specs: dict[str, TokenSpec] = {}
        self.revoked: set[str] = set()

    def reload(self) -> bool:
        """Re-read the file if it changed since the last look; whether anything changed."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
            sig: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        except OSError:
            sig = (-1, -1, -1)  # there but unreadable: _read says so and refuses its tokens
        if sig == self._sig:
            return False
        seen_before = self._sig != _UNSEEN
        self._sig = sig
        if sig is None:
            if seen_before:
                log.warning("%s: gone; its tokens no longer work", self.label)
            self.specs, self.revoked = {}, set()
        else:
            self.specs, self.revoked = self._read(self.path)
        return True


def _config_file_tokens(path: Path, departments: tuple[str, ...] | None = None
                        ) -> tuple[dict[str, TokenSpec], set[str]]:
    """``auth.tokens`` of the config file, each entry validated on its own (a department
    token against the ``departments`` the server runs with)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        log.error("%s: cannot re-read the tokens (%s); its tokens are refused until it is "
                  "fixed", path, type(exc).__name__)
        return {}, set()
    auth = data.get("auth") if isinstance(data, dict) else None
    entries = auth.get("tokens", []) if isinstance(auth, dict) else []
    if not isinstance(entries, list):
        log.error("%s: auth.tokens: must be a list; its tokens are refused", path)
        return {}, set()
    return _specs(path, entries, "auth.tokens",
                  lambda t, key: config_token_spec(t, key, departments=departments)), set()


def _specs(path: Path, entries: list[Any], prefix: str,
           parse: Callable[[Any, str], TokenSpec]) -> dict[str, TokenSpec]:
    out: dict[str, TokenSpec] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("revoked"):
            continue
        try:
            spec = parse(entry, f"{prefix}[{i}]")
        except ConfigError as exc:
            log.warning("%s: entry skipped: %s", path, exc)
            continue
        out[spec.digest] = spec
    return out


def read_token_file_entries(path: Path, departments: tuple[str, ...] | None = None
                            ) -> tuple[dict[str, TokenSpec], set[str]]:
    """(valid tokens by digest, revoked digests) of a token file (a department token must
    name one of ``departments`` when given).

    An entry carrying ``revoked`` revokes its digest everywhere, configured tokens included.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        log.error("%s: cannot read the token file (%s); its tokens are refused until it is "
                  "fixed", path, type(exc).__name__)
        return {}, set()
    if not isinstance(data, list):
        log.error("%s: the token file must be a list; its tokens are refused", path)
        return {}, set()
    revoked = {str(e["digest"]).lower() for e in data
               if isinstance(e, dict) and e.get("revoked") and isinstance(e.get("digest"), str)}
    return _specs(path, data, "tokens",
                  lambda t, key: token_file_entry(t, key, departments=departments)), revoked


def issue_token(path: Path, role: str, region: str | None, unit: str | None,
                name: str | None = None, department: str | None = None,
                departments: tuple[str, ...] | None = None) -> str:
    """Create a random token, append its digest to the token file, return the token once.

    The file is created with mode 0600, and an existing file is brought to 0600: it holds
    no tokens, but its digests and names are nobody else's business. ``ConfigError`` (naming
    the key) for an entry the server would skip, e.g. a department not in ``departments``.
    """
    token = secrets.token_urlsafe(24)
    entry: dict[str, Any] = {"digest": hash_token(token), "role": role, "region": region,
                             "unit": unit,
                             "name": name or f"{role}:{region or unit or department or '*'}"}
    if department is not None:
        entry["department"] = department
    token_file_entry(entry, "new token", departments=departments)
    with _locked(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, TOKEN_FILE_MODE)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            os.fchmod(fd, TOKEN_FILE_MODE)
            fh.write(yaml.safe_dump([entry], allow_unicode=True))
            fh.flush()
            os.fsync(fh.fileno())
    return token


def revoke_tokens(path: Path, config: Config, *, name: str | None = None,
                  token: str | None = None, digest: str | None = None) -> list[str]:
    """Revoke tokens by name, by the token itself or by a digest prefix; return their names.

    A token-file entry is marked ``revoked: <UTC time>`` in place (kept for the record); a
    configured token gets a ``{digest, name, revoked}`` entry in the token file, which the
    server honours as well. Raises ``ValueError`` when nothing (or, for a digest prefix,
    more than one token) matches.
    """
    with _locked(path):
        entries = _read_entries(path)
        known = [(e.get("digest"), str(e.get("name") or "")) for e in entries
                 if isinstance(e, dict) and not e.get("revoked")]
        known += [(t.digest, t.name) for t in config.tokens()]
        if token is not None:
            want = {hash_token(token)}
        elif digest is not None:
            prefix = digest.lower().removeprefix("sha256:")
            if len(prefix) < 8:
                raise ValueError("give at least 8 hex digits of the digest")
            want = {d for d, _ in known if isinstance(d, str) and d.startswith(prefix)}
            if len(want) > 1:
                raise ValueError(f"{len(want)} tokens start with {prefix}; give more digits")
        else:
            want = {d for d, n in known if n == name and isinstance(d, str)}
        hits = [(d, n) for d, n in known if d in want]
        if not hits:
            raise ValueError("no such token (it may be revoked already)")
        now = datetime.now(UTC).replace(microsecond=0).isoformat()
        marked = set()
        for e in entries:
            if isinstance(e, dict) and e.get("digest") in want and not e.get("revoked"):
                e["revoked"] = now
                marked.add(e["digest"])
        for d, n in hits:
            if d not in marked:
                entries.append({"digest": d, "name": n, "revoked": now})
                marked.add(d)
        _write_entries(path, entries)
    return sorted({n for _, n in hits})


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer of the token file at a time (``dispatch token`` run twice at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT, TOKEN_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_entries(path: Path) -> list[Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except FileNotFoundError:
        return []
    if not isinstance(data, list):
        raise ValueError(f"{path} is not a list of tokens; fix it by hand first")
    return data


def _write_entries(path: Path, entries: list[Any]) -> None:
    """Replace the token file atomically (a reader sees the old or the new file, whole)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKEN_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, TOKEN_FILE_MODE)
        fh.write(yaml.safe_dump(entries, allow_unicode=True, sort_keys=False))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
