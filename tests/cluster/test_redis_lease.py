"""RedisStore's named leases (``hold_lease`` / ``drop_lease``): one holder at a time, renewed
by its holder, taken over once it runs out. The webhooks deliver under one per webhook."""

from __future__ import annotations

import asyncio

import pytest

from dispatch.store.redis import RedisStore

pytestmark = pytest.mark.redis


@pytest.fixture
async def pair(redis_server):
    a, b = RedisStore(redis_server.url), RedisStore(redis_server.url)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_one_holder_renewal_and_takeover(pair):
    a, b = pair
    assert a.instance != b.instance
    assert await a.hold_lease("webhook:w1", 0.4)
    assert not await b.hold_lease("webhook:w1", 0.4)  # a holds it
    assert await b.hold_lease("webhook:w2", 0.4)      # another name is another lease
    for _ in range(4):  # renewed by its holder, it never runs out
        await asyncio.sleep(0.2)
        assert await a.hold_lease("webhook:w1", 0.4)
        assert not await b.hold_lease("webhook:w1", 0.4)
    await asyncio.sleep(0.6)  # a stops renewing (died): b takes it over
    assert await b.hold_lease("webhook:w1", 0.4)
    assert not await a.hold_lease("webhook:w1", 0.4)


async def test_only_the_holder_drops_it(pair):
    a, b = pair
    assert await a.hold_lease("webhook:w1", 10)
    assert not await b.drop_lease("webhook:w1")
    assert not await b.hold_lease("webhook:w1", 10)
    assert await a.drop_lease("webhook:w1")
    assert await b.hold_lease("webhook:w1", 10)  # at once, without waiting for the ttl
