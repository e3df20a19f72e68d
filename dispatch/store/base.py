"""The storage protocol every journal backend implements (memory, SQLite, Redis).

Appends are compare-and-set: the first record's ``seq`` must be the store's ``last_seq + 1``,
or ``ConflictError`` (another writer got there first). The store fills ``prev_hash``/``hash``
in commit order, so the chain is the store's, not the caller's. ``read(after_seq)`` lets a
consumer resume from the last record it applied (``Engine.apply`` ignores repeats).

``append`` never waits forever: a store gives up after its timeout with
``dispatch.core.errors.StoreTimeoutError``; ``health()`` says why it cannot be written now.

Beside the journal every store keeps a few small durable values (``get_value`` /
``set_value``, compare-and-set): the webhooks' delivery cursors (``server/webhooks.py``).
They are not records: not chained, not replayed, not hashed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from dispatch.core.deadlines import Deadline
from dispatch.core.records import Record


class Store(Protocol):
    """An append-only, hash-chained journal of records, with one optional snapshot."""

    async def open(self) -> None:
        """Connect / create; must be called before anything else."""
        ...

    async def close(self) -> None:
        """Flush pending appends and release resources."""
        ...

    async def append(self, records: list[Record]) -> list[Record]:
        """Make ``records`` durable, in order; return them with ``prev_hash``/``hash`` set.

        Raises ``ConflictError`` if ``records[0].seq != last_seq + 1`` or the seqs are not
        consecutive; nothing is written then.
        """
        ...

    async def read(self, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        """Records with ``seq > after_seq`` in seq order, at most ``limit``."""
        ...

    async def last_seq(self) -> int:
        """The seq of the last durable record (0 when empty)."""
        ...

    async def health(self) -> str | None:
        """None when the store can be written now, else a short human reason ("journal
        writer thread is dead", "disk full: …", "redis unreachable: …").

        Answers within about a second and never hangs; ``/healthz`` answers 503 with the
        reason while it is not None.
        """
        ...

    async def save_snapshot(self, seq: int, blob: bytes) -> None:
        """Keep ``blob`` as the state after record ``seq`` (replaces the previous one)."""
        ...

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        """The latest snapshot as (seq, blob), or None."""
        ...

    async def get_value(self, key: str) -> bytes | None:
        """The durable value kept under ``key`` (None: never set)."""
        ...

    async def set_value(self, key: str, value: bytes, expect: bytes | None) -> bool:
        """Keep ``value`` under ``key`` only if it holds ``expect`` now (None: unset);
        True when written (durable as the journal is when it returns), False otherwise.

        Compare-and-set, so two writers (a delivery worker advancing a cursor, an admin
        moving it back) never overwrite each other unseen.
        """
        ...


class SharedStore(Store, Protocol):
    """A journal several instances write (Redis): what ``dispatch.cluster`` uses beyond
    ``Store``. ``append`` also takes the engine's deadline effects (``Outcome.deadlines``),
    which the store keeps as a shared, claimable deadline set."""

    shared: bool
    instance: str  # this process's id, to skip its own published positions
    lease_s: float
    commits: int

    async def append(self, records: list[Record],
                     deadlines: Mapping[str, Sequence[Deadline]] | None = None
                     ) -> list[Record]: ...

    def set_failure_hook(self, hook: Any) -> None:
        """Strict mode: call ``hook(first_seq, exc)`` synchronously when appends fail."""
        ...

    async def wait_records(self, after_seq: int, timeout_s: float = 1.0,
                           conn: Any = None) -> list[Record]: ...

    def follower_connection(self, timeout_s: float | None = 10.0) -> Any: ...

    async def claim(self, now: float, limit: int = 1000) -> tuple[list[str], float]: ...

    async def release(self, members: list[str], score: float) -> int: ...

    async def next_deadline(self) -> float | None: ...

    async def put_position(self, unit: str, lon: float, lat: float, data: bytes) -> None: ...

    async def load_positions(self) -> list[bytes]: ...

    def positions(self) -> AsyncIterator[bytes]: ...

    async def hold_lease(self, name: str, ttl_s: float) -> bool:
        """Take the lease ``name`` for this instance, or renew it if it is ours, for
        ``ttl_s``; False while another instance holds it (``SET NX PX`` plus renewal)."""
        ...

    async def drop_lease(self, name: str) -> bool:
        """Give the lease ``name`` up if this instance holds it."""
        ...


def check_batch(records: list[Record], last_seq: int) -> None:
    """Compare-and-set guard shared by the backends."""
    from dispatch.core.errors import ConflictError

    for i, r in enumerate(records):
        if r.seq != last_seq + 1 + i:
            raise ConflictError(
                f"append expected seq {last_seq + 1 + i}, got {r.seq}: the journal moved on")
