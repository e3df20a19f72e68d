"""An in-memory store for tests and ``memory:``: same contract, no durability."""

from __future__ import annotations

from dispatch.core.records import GENESIS, Record, chain
from dispatch.store.base import check_batch


class MemoryStore:
    """The journal as a Python list."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._snapshot: tuple[int, bytes] | None = None
        self._values: dict[str, bytes] = {}
        self.opened = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.opened = False

    async def append(self, records: list[Record]) -> list[Record]:
        """Chain and keep ``records`` (compare-and-set on seq)."""
        if not records:
            return []
        last = self.records[-1] if self.records else None
        check_batch(records, last.seq if last else 0)
        out = chain(records, last.hash if last else GENESIS)
        self.records.extend(out)
        return out

    async def health(self) -> str | None:
        """Always writable while the process lives."""
        return None

    async def read(self, after_seq: int = 0, limit: int | None = None) -> list[Record]:
        i = max(0, min(after_seq, len(self.records)))  # seqs are 1..n without gaps
        out = self.records[i:]
        return out[:limit] if limit is not None else out

    async def last_seq(self) -> int:
        return self.records[-1].seq if self.records else 0

    async def save_snapshot(self, seq: int, blob: bytes) -> None:
        self._snapshot = (seq, bytes(blob))

    async def load_snapshot(self) -> tuple[int, bytes] | None:
        return self._snapshot

    async def get_value(self, key: str) -> bytes | None:
        return self._values.get(key)

    async def set_value(self, key: str, value: bytes, expect: bytes | None) -> bool:
        """Compare-and-set on ``key``'s value (None: unset)."""
        if self._values.get(key) != expect:
            return False
        self._values[key] = bytes(value)
        return True
