"""A real ``redis-server`` on a free port for tests (never a fake, never the system one).

``RedisServer(tmp).start()`` runs ``/usr/bin/redis-server`` (or the one on PATH) in a temp
directory with persistence off, or with AOF (``appendonly=True``) for durability tests;
``stop()`` kills it (``kill=True``: SIGKILL, like a crash) and ``start()`` brings it back on
the same port and directory. Without the binary the tests that need it are skipped with the
reason, or fail when the run requires Redis (``DISPATCH_REQUIRE``, see tests/conftest.py;
``.ci/run`` sets it): call ``require_redis()`` / ``require_redis_sentinel()`` instead of
skipping by hand. tests/run.sh installs both programs.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import locate, missing, required

REDIS_SERVER = locate("redis")
REDIS_SENTINEL = locate("redis-sentinel")
NO_REDIS = "redis-server is not installed (tests/run.sh installs it with apt-get)"
NO_SENTINEL = "redis-sentinel is not installed (tests/run.sh installs it with apt-get)"
# A mark for tests that start redis-server themselves; under DISPATCH_REQUIRE=redis it never
# skips (the session already refused to start without the binary).
needs_redis = pytest.mark.skipif(REDIS_SERVER is None and "redis" not in required(),
                                 reason=NO_REDIS)


def require_redis() -> str:
    """The redis-server binary; skips the test without it, or fails it when Redis is required."""
    if REDIS_SERVER is None:
        missing("redis", NO_REDIS)
    return REDIS_SERVER


def require_redis_sentinel() -> str:
    """The redis-sentinel binary (Debian's package); skips or fails like ``require_redis``."""
    if REDIS_SENTINEL is None:
        missing("redis-sentinel", NO_SENTINEL)
    return REDIS_SENTINEL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process owned by a test."""

    def __init__(self, tmp: Path, appendonly: bool = False, port: int | None = None,
                 appendfsync: str = "everysec") -> None:
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [require_redis(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--save", "", "--daemonize", "no",
                "--protected-mode", "no", "--logfile", str(self.dir / "redis.log")]
        args += (["--appendonly", "yes", "--appendfsync", self.appendfsync] if self.appendonly
                 else ["--appendonly", "no"])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def flushall(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(64)


_shared: RedisServer | None = None


def session_redis(tmp_root: Path) -> RedisServer:
    """One redis-server per test session (started on first use), flushed by each user."""
    global _shared
    if _shared is None or _shared.proc is None or _shared.proc.poll() is not None:
        _shared = RedisServer(tmp_root / "redis-session").start()
    return _shared


def stop_session_redis() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server of the test's own (AOF off), killed at teardown."""
    require_redis()
    srv = RedisServer(tmp_path / "redis").start()
    try:
        yield srv
    finally:
        srv.stop()
