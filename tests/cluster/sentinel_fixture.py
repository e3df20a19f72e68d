"""A real Redis Sentinel deployment for tests: one master, replicas, three sentinels.

``SentinelSet(tmp, replicas=2).start()`` runs ``redis-server`` for the master (AOF,
``appendfsync always``) and each replica (the same settings, ``replicaof`` the master), and
three ``redis-sentinel`` processes (quorum 2, ``down-after-milliseconds`` 1000) on free
ports in a temp directory: never a fake and never the system's. ``url`` is the
``redis+sentinel://`` store URL. ``kill_master()`` is a crash (SIGKILL);
``wait_failover(old)`` waits until every sentinel names another master.

The binaries are required: the tests fail (not skip) without them (``apt-get install -y
redis-server redis-sentinel``). ``redis-sentinel`` is Debian's name for ``redis-server
--sentinel``; that is used if only redis-server is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.redis_fixture import REDIS_SERVER, free_port

REDIS_SENTINEL = shutil.which("redis-sentinel")
MASTER_NAME = "dispatch"
DOWN_AFTER_MS = 1000


def _conn(port: int, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True)


def _wait_ping(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"exited: {log.read_text() if log.exists() else ''}")
        try:
            with _conn(port, 0.3) as c:
                if c.ping():
                    return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"no PONG on port {port}")


class Node:
    """One redis-server (master or replica) or sentinel process."""

    def __init__(self, dir: Path, port: int, args: list[str]) -> None:
        self.dir, self.port, self.args = dir, port, args
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / "log"

    def start(self) -> Node:
        self.proc = subprocess.Popen(self.args, cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_ping(self.port, self.proc, self.log)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class SentinelSet:
    """Master + replicas + three sentinels (quorum 2), all on loopback."""

    def __init__(self, tmp: Path, replicas: int = 2, sentinels: int = 3,
                 quorum: int = 2) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        self.tmp = tmp
        self.master = self._server(tmp / "redis-0", None)
        self.replicas = [self._server(tmp / f"redis-{i + 1}", self.master.port)
                         for i in range(replicas)]
        self.sentinels = [self._sentinel(tmp / f"sentinel-{i}", quorum)
                          for i in range(sentinels)]

    def _server(self, dir: Path, master_port: int | None) -> Node:
        assert REDIS_SERVER is not None
        port = free_port()
        args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(dir),
                "--save", "", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", str(dir / "log"), "--appendonly", "yes",
                "--appendfsync", "always", "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0"]
        if master_port is not None:
            args += ["--replicaof", "127.0.0.1", str(master_port)]
        return Node(dir, port, args)

    def _sentinel(self, dir: Path, quorum: int) -> Node:
        dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = dir / "sentinel.conf"  # sentinel rewrites its file: one per sentinel
        conf.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", "protected-mode no", "daemonize no",
            f"dir {dir}", f"logfile {dir / 'log'}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} {quorum}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1", ""]))
        binary = [REDIS_SENTINEL, str(conf)] if REDIS_SENTINEL else [
            str(REDIS_SERVER), str(conf), "--sentinel"]
        return Node(dir, port, binary)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> SentinelSet:
        self.master.start()
        for r in self.replicas:
            r.start()
        self.wait_replicas(len(self.replicas))
        for s in self.sentinels:
            s.start()
        self.wait_sentinels_ready()
        return self

    def stop(self) -> None:
        for n in [*self.sentinels, *self.replicas, self.master]:
            n.kill()

    def master_port(self, sentinel: Node | None = None) -> int | None:
        """The master's port as a sentinel names it now (None if it cannot say)."""
        s = sentinel or self.sentinels[0]
        try:
            with _conn(s.port) as c:
                got = c.sentinel_get_master_addr_by_name(MASTER_NAME)
        except (redis.RedisError, OSError):
            return None
        return int(got[1]) if got else None

    def node(self, port: int) -> Node:
        return next(n for n in [self.master, *self.replicas] if n.port == port)

    def connected_replicas(self, port: int) -> int:
        """Replicas of the node at ``port`` that are online: connected *and* done with their
        initial sync (a replica still loading the master's RDB is connected but cannot
        acknowledge a WAIT yet)."""
        with _conn(port) as c:
            info = c.info("replication")
        return sum(1 for k, v in info.items()
                   if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online")

    def wait_replicas(self, n: int, port: int | None = None, timeout: float = 20) -> None:
        """Until the master (or the node at ``port``) has ``n`` replicas online."""
        port = port or self.master.port
        end = time.monotonic() + timeout
        while self.connected_replicas(port) < n:
            assert time.monotonic() < end, f"{n} replicas did not connect to {port}"
            time.sleep(0.05)

    def wait_sentinels_ready(self, timeout: float = 20) -> None:
        """Every sentinel sees the master, the replicas and the other sentinels."""
        end = time.monotonic() + timeout
        want_others = len(self.sentinels) - 1
        while True:
            ready = True
            for s in self.sentinels:
                with _conn(s.port) as c:
                    m = c.sentinel_master(MASTER_NAME)
                if (int(m.get("num-other-sentinels", 0)) < want_others
                        or int(m.get("num-slaves", 0)) < len(self.replicas)):
                    ready = False
            if ready:
                return
            assert time.monotonic() < end, "the sentinels did not discover each other"
            time.sleep(0.1)

    def kill_master(self) -> int:
        """SIGKILL the current master; its port."""
        port = self.master_port()
        assert port is not None
        self.node(port).kill()
        return port

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Until every sentinel names a master other than ``old_port``; the new port."""
        end = time.monotonic() + timeout
        while True:
            ports = {self.master_port(s) for s in self.sentinels}
            if len(ports) == 1 and None not in ports and old_port not in ports:
                return int(ports.pop())  # type: ignore[arg-type]
            assert time.monotonic() < end, f"no failover: sentinels say {ports}"
            time.sleep(0.05)
