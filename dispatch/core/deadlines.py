"""The deadline book: one heap for every open event's warnings and breaches.

How it works: each entry is ``(due, n, event_id, stage, kind, generation)``; ``n`` is a
running counter so ties pop in insertion order and tuples never compare further. Entries
are never removed in place (lazy deletion): when an event's clocks restart or stop, the
engine gives the event a new generation (a number never used before) and every older
entry becomes stale. ``pop_due(now)``
yields only entries whose generation is current; the engine decides whether a stage is
still live (not done, not fired). When stale entries outnumber live ones the heap is
rebuilt, so memory stays proportional to open events. One heap, never a timer per event.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

Entry = tuple[float, int, str, str, str, int]


class DeadlineBook:
    """Deadlines of all open events, earliest first."""

    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._gen: dict[str, int] = {}
        self._count: dict[str, int] = {}
        self._n = 0
        self._live = 0

    def __len__(self) -> int:
        return len(self._heap)

    def generation(self, event_id: str) -> int:
        """The current generation of ``event_id`` (0 if never set)."""
        return self._gen.get(event_id, 0)

    def set(self, event_id: str, entries: list[tuple[float, str, str]]) -> None:
        """Replace the deadlines of ``event_id`` with ``entries`` of (due, stage, kind)."""
        self._n += 1
        gen = self._n  # unique across events and clears, so old entries never revive
        self._gen[event_id] = gen
        for due, stage, kind in entries:
            self._n += 1
            heapq.heappush(self._heap, (due, self._n, event_id, stage, kind, gen))
        self._live += len(entries) - self._count.get(event_id, 0)
        self._count[event_id] = len(entries)
        if len(self._heap) > 4 * self._live + 1024:
            self._compact()

    def clear(self, event_id: str) -> None:
        """Drop every deadline of ``event_id`` (it closed)."""
        if event_id in self._gen:
            del self._gen[event_id]
            self._live -= self._count.pop(event_id, 0)
        if len(self._heap) > 4 * max(self._live, 1) + 1024:
            self._compact()

    def head(self) -> tuple[float, str, str, str] | None:
        """The earliest current entry as (due, event_id, stage, kind), or None."""
        h = self._heap
        while h:
            due, _, eid, stage, kind, gen = h[0]
            if self._gen.get(eid) == gen:
                return due, eid, stage, kind
            heapq.heappop(h)
        return None

    def drop_head(self) -> None:
        """Remove the earliest entry (the engine found it is no longer live)."""
        if self.head() is not None:
            _, _, eid, _, _, _ = heapq.heappop(self._heap)
            self._live -= 1
            self._count[eid] -= 1

    def pop_due(self, now: float) -> Iterator[tuple[float, str, str, str]]:
        """Remove and yield (due, event_id, stage, kind) of current entries with due <= now."""
        h = self._heap
        while h and h[0][0] <= now:
            due, _, eid, stage, kind, gen = heapq.heappop(h)
            if self._gen.get(eid) == gen:
                self._live -= 1
                self._count[eid] -= 1
                yield due, eid, stage, kind

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._gen.get(e[2]) == e[5]]
        heapq.heapify(self._heap)
