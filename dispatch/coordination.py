"""What a runtime needs from the other instances, as a small protocol with two answers.

How it works: ``dispatch.runtime.Runtime`` has one commit pipeline (make the records with the
engine, append them, publish) and one deadline loop (claim, fire, commit). Everything that
depends on whether other instances share the journal sits behind ``Coordination``:

- ``append(outcome)``: make the outcome durable. ``ConflictError``: another instance appended
  first; the engine is back at the journal's state and catching up, run the command again.
  ``StoreUnavailableError``: nothing was made durable and the engine was rolled back.
- ``ready()`` before a command; ``catch_up()`` when a command names an event this instance
  has not seen yet; ``claim(now, overdue_s)`` / ``release(claim)`` around a firing;
  ``share_position(...)`` for a unit's reported position.

``LocalCoordination`` (embedded store): nothing to follow, every claim is granted. The Redis
one is ``dispatch.cluster.RedisCoordination``. A coordination talks back to its runtime only
through ``Host`` (public methods), never through the runtime's fields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from dispatch.core.engine import Engine, Outcome
from dispatch.core.records import Record
from dispatch.store.base import Store

log = logging.getLogger("dispatch.coordination")


class StoreUnavailableError(Exception):
    """The store could not make a change durable; nothing was answered."""


@dataclass
class Claim:
    """The deadlines this instance may fire now (``members``: ``<event>:<stage>:<kind>``;
    empty when every due deadline is ours, as when embedded) and the lease they are held by."""

    members: list[str] = field(default_factory=list)
    lease: float = 0.0


class Host(Protocol):
    """What a coordination may ask of its runtime (``Runtime`` implements it)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def published_seq(self) -> int: ...

    def rollback_to(self, seq: int) -> bool:
        """Undo the engine's records after ``seq``; False when it cannot (rebuild it)."""
        ...

    def replace_engine(self, engine: Engine) -> None:
        """Take ``engine`` (rebuilt from the journal) as the state."""
        ...

    def absorb(self, records: Iterable[Record]) -> None:
        """Apply durable records made elsewhere and publish the new ones."""
        ...

    def refuse_changes(self, reason: str) -> None:
        """The state can no longer be trusted: refuse changes until restarted."""
        ...

    def wake(self) -> None:
        """The deadline book may have changed."""
        ...

    def position_reported(self, unit: str, lon: float, lat: float, at: float,
                          accuracy_m: float | None, notify: bool = True) -> None:
        """Another instance reported a unit's position (``notify``: tell the listeners)."""
        ...


class Coordination(Protocol):
    """The part of a runtime that depends on who else writes the journal."""

    conflicts: int  # commands re-run because another instance appended first
    claimed: int    # deadlines claimed and fired by this instance

    async def start(self, host: Host) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> None:
        """Return when a command may run; ``StoreUnavailableError`` while it may not."""
        ...

    async def catch_up(self) -> bool:
        """Bring the engine up to the journal; False when there is nothing to follow."""
        ...

    async def append(self, out: Outcome) -> list[Record]:
        """Make ``out.records`` durable (see the module docstring for the two errors)."""
        ...

    def may_fire(self) -> bool:
        """False while the engine is being brought back to the journal."""
        ...

    async def claim(self, now: float, overdue_s: float) -> Claim | None:
        """The deadlines due by ``now`` this instance fires, or None: another one does."""
        ...

    async def release(self, claim: Claim) -> None:
        """Give back what was claimed and had nothing left to fire."""
        ...

    async def idle_wait(self, now: float) -> float:
        """Seconds to wait when a due deadline was claimed elsewhere (its records follow)."""
        ...

    def share_position(self, unit: str, lon: float, lat: float, at: float,
                       accuracy_m: float | None) -> None: ...


class LocalCoordination:
    """One instance on an embedded store: nothing to follow, every claim is ours."""

    conflicts = 0
    claimed = 0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._host: Host | None = None

    async def start(self, host: Host) -> None:
        self._host = host

    async def stop(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def catch_up(self) -> bool:
        return False

    async def append(self, out: Outcome) -> list[Record]:
        assert self._host is not None, "not started"
        try:
            return await self.store.append(out.records)
        except Exception as exc:
            # Nothing is answered: undo what the engine did so its state is the journal's.
            log.exception("store append failed; the change is undone and refused")
            if not self._host.rollback_to(out.records[0].seq - 1):
                self._host.refuse_changes("cannot undo a change the journal refused")
            raise StoreUnavailableError(str(exc)) from exc

    def may_fire(self) -> bool:
        return True

    async def claim(self, now: float, overdue_s: float) -> Claim | None:
        return Claim()

    async def release(self, claim: Claim) -> None:
        return None

    async def idle_wait(self, now: float) -> float:
        return 1.0

    def share_position(self, unit: str, lon: float, lat: float, at: float,
                       accuracy_m: float | None) -> None:
        return None  # no other instance to tell
