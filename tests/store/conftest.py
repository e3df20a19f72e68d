"""Store fixtures: one contract suite over every backend (add a backend with one line)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))

sys.path.insert(0, str(Path(__file__).parent))

from store_backends import BACKENDS  # noqa: E402

from dispatch.store.base import Store  # noqa: E402


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = BACKENDS[backend](tmp_path)
    await s.open()
    yield s
    await s.close()
