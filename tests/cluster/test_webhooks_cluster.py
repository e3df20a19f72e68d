"""Webhooks on two real instances sharing one real redis-server (contract v2 §8, issue 13).

One instance per webhook delivers (it holds the store's lease): each change arrives once,
though both instances follow the whole journal. When that instance is killed with SIGKILL,
the other takes the lease over after it runs out and goes on from the durable cursor: every
change still arrives, in seq order, signed; one that came twice came with the same id.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.cluster.conftest import journal, post_events
from tests.server.test_webhooks import SECRET
from tests.server.webhook_receiver import Receiver, check_stream

pytestmark = [pytest.mark.redis, pytest.mark.slow]
OPTS = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "timeout_s": 2, "lease_s": 1.0}


async def delivering(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether the instance says it holds the webhook's lease (``/metrics``)."""
    async with session.get(url + "/metrics",
                           headers={"Authorization": "Bearer t-admin-0000"}) as r:
        text = await r.text()
    return 'dispatch_webhook_delivering{webhook="wh"} 1.0' in text


async def test_one_instance_delivers_each_change_and_another_takes_over(cluster_factory,
                                                                       session):
    rx = await Receiver(fail_first=2).start()
    c = cluster_factory(webhooks=[{"id": "wh", "url": rx.url, "secret": SECRET}],
                        webhooks_options=OPTS)
    a, b = c.start(2)
    try:
        await c.wait_healthy([a, b])
        ids = await post_events(a.url, 15, "wa") + await post_events(b.url, 15, "wb")
        assert len(ids) == 30
        seqs = [r.seq for r in await journal(c.redis.url)]
        await rx.wait_for(set(seqs))
        await asyncio.sleep(0.5)  # nothing comes twice
        check_stream(rx.got, seqs, SECRET)
        assert rx.seqs() == seqs, "a change was delivered twice without a takeover"
        holders = [i for i in (a, b) if await delivering(session, i.url)]
        assert len(holders) == 1, holders

        # the delivering instance dies; the other takes over within the lease
        rx.fail_first = len(rx.refused) + 2  # and the receiver refuses twice more
        dead = holders[0]
        alive = b if dead is a else a
        more = asyncio.create_task(post_events(alive.url, 20, "wc", pause_s=0.02))
        await asyncio.sleep(0.1)
        dead.kill9()
        assert len(await more) == 20
        seqs = [r.seq for r in await journal(c.redis.url)]
        await rx.wait_for(set(seqs), timeout=20)
        check_stream(rx.got, seqs, SECRET)
        assert await delivering(session, alive.url)
    finally:
        await rx.stop()
