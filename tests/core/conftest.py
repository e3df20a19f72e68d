"""Core fixtures: ``scenario`` (see dispatch_scenario.Scenario)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dispatch_scenario import Scenario  # noqa: E402


@pytest.fixture
def scenario() -> Scenario:
    return Scenario()
