"""The Store contract's durable values (``get_value`` / ``set_value``), on every backend.

The webhooks keep their delivery cursors there (``dispatch/server/webhooks.py``): a value
must be compare-and-set, survive a reopen on the durable backends, and stay out of the
journal (not a record, not in the chain).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from store_backends import BACKENDS, DURABLE
from test_contract import rec

from dispatch.core.records import verify_chain
from dispatch.store.base import Store


async def test_a_value_is_compare_and_set(store: Store) -> None:
    assert await store.get_value("webhook:a") is None
    assert not await store.set_value("webhook:a", b"1", expect=b"0")  # it is unset
    assert await store.set_value("webhook:a", b"1", expect=None)
    assert not await store.set_value("webhook:a", b"2", expect=None)  # it is set now
    assert not await store.set_value("webhook:a", b"2", expect=b"0")
    assert await store.get_value("webhook:a") == b"1"
    assert await store.set_value("webhook:a", "二".encode(), expect=b"1")
    assert await store.get_value("webhook:a") == "二".encode()
    assert await store.get_value("webhook:b") is None  # keys are separate


async def test_concurrent_writers_one_wins_each_round(store: Store) -> None:
    await store.set_value("cursor", b"0", expect=None)

    async def bump(who: int) -> int:
        won = 0
        for _ in range(20):
            cur = await store.get_value("cursor")
            assert cur is not None
            if await store.set_value("cursor", str(int(cur) + 1).encode(), expect=cur):
                won += 1
        return won

    wins = await asyncio.gather(*(bump(i) for i in range(4)))
    assert int(await store.get_value("cursor") or b"-1") == sum(wins)  # no bump lost


async def test_values_stay_out_of_the_journal(store: Store) -> None:
    await store.append([rec(1)])
    assert await store.set_value("k", b"v", expect=None)
    await store.append([rec(2)])
    got = await store.read()
    assert [r.seq for r in got] == [1, 2] and verify_chain(got) is None
    assert await store.last_seq() == 2


@pytest.mark.parametrize("name", sorted(DURABLE))
async def test_a_value_survives_a_reopen(name: str, tmp_path: Path) -> None:
    s = BACKENDS[name](tmp_path)
    await s.open()
    try:
        assert await s.set_value("webhook:w", b'{"cursor": 7}', expect=None)
    finally:
        await s.close()
    s = BACKENDS[name](tmp_path)
    await s.open()
    try:
        assert await s.get_value("webhook:w") == b'{"cursor": 7}'
    finally:
        await s.close()
