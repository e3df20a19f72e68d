"""A real webhook receiver on loopback (aiohttp): it keeps every request it gets, checks
nothing itself, and answers 500 to the first ``fail_first`` (or while ``failing``). ``stop()``
takes it off the network (the sender then gets connection refused) and ``start()`` brings it
back on the same port."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.redis_fixture import free_port


@dataclass
class Delivery:
    """One request as it arrived."""

    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def seq(self) -> int:
        return int(self.headers["X-Dispatch-Seq"])

    @property
    def id(self) -> str:
        return self.headers["X-Dispatch-Delivery"]

    @property
    def message(self) -> dict[str, Any]:
        return orjson.loads(self.body)  # type: ignore[no-any-return]

    def signed_by(self, secret: str) -> bool:
        """The contract's check: HMAC-SHA256(secret, timestamp "." body), hex, sha256=."""
        ts = self.headers["X-Dispatch-Timestamp"]
        want = hmac.new(secret.encode(), ts.encode() + b"." + self.body,
                        hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers["X-Dispatch-Signature"], "sha256=" + want)


@dataclass
class Receiver:
    fail_first: int = 0
    failing: bool = False
    port: int = field(default_factory=free_port)
    got: list[Delivery] = field(default_factory=list)        # answered 2xx
    refused: list[Delivery] = field(default_factory=list)    # answered 500
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        d = Delivery(time.time(), dict(request.headers), await request.read())
        if self.failing or len(self.refused) < self.fail_first:
            self.refused.append(d)
            return web.Response(status=500, text="not now")
        self.got.append(d)
        return web.Response(status=204)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def seqs(self) -> list[int]:
        return [d.seq for d in self.got]

    async def wait_for(self, seqs: set[int], timeout: float = 15.0) -> None:
        """Until every seq in ``seqs`` was answered 2xx."""
        end = time.monotonic() + timeout
        while not seqs <= set(self.seqs()):
            assert time.monotonic() < end, sorted(seqs - set(self.seqs()))[:20]
            await asyncio.sleep(0.02)


def check_stream(got: list[Delivery], expected: list[int], secret: str) -> None:
    """What contract v2 §8 promises a receiver: every expected seq arrived; each new message
    arrived after every lower one (in seq order); a message that came again carries the
    delivery id it had; every signature is valid; nothing outside ``expected`` came."""
    ids: dict[int, str] = {}
    top = 0
    for d in got:
        assert d.signed_by(secret), d.headers
        assert d.message["seq"] == d.seq
        if d.seq in ids:
            assert ids[d.seq] == d.id, (d.seq, ids[d.seq], d.id)
            continue
        assert d.seq > top, f"seq {d.seq} arrived for the first time after {top}"
        ids[d.seq] = d.id
        top = d.seq
    assert sorted(ids) == sorted(expected), (sorted(set(expected) - set(ids))[:20],
                                             sorted(set(ids) - set(expected))[:20])
    assert len(set(ids.values())) == len(ids)  # one id per message
