"""The deadline book: one heap for every open event's warnings and breaches.

How it works: the engine hands the book each event's live deadlines (``Deadline(stage,
kind, due)``, from ``engine.live_deadlines``) whenever they change; the book never decides
what is live. Heap entries are ``(due, n, event_id, deadline, generation)``; ``n`` is a
running counter so ties pop in insertion order and tuples never compare further. Entries
are never removed in place (lazy deletion): ``set`` and ``clear`` give the event a new
generation (a number never used before) and every older entry becomes stale; ``head`` and
``pop_due`` skip stale entries. When stale entries outnumber live ones the heap is rebuilt,
so memory stays proportional to open events. One heap, never a timer per event.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from typing import NamedTuple

KINDS = ("warn", "breach")


class Deadline(NamedTuple):
    """A warning or breach still to come: which stage, which kind, when (epoch seconds)."""

    stage: str
    kind: str
    due: float


Entry = tuple[float, int, str, Deadline, int]


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

    def set(self, event_id: str, deadlines: Sequence[Deadline]) -> None:
        """Replace the deadlines of ``event_id`` with ``deadlines``."""
        self._n += 1
        gen = self._n  # unique across events and clears, so old entries never revive
        self._gen[event_id] = gen
        for d in deadlines:
            self._n += 1
            heapq.heappush(self._heap, (d.due, self._n, event_id, d, gen))
        self._live += len(deadlines) - self._count.get(event_id, 0)
        self._count[event_id] = len(deadlines)
        if len(self._heap) > 4 * self._live + 1024:
            self._compact()

    def clear(self, event_id: str) -> None:
        """Drop every deadline of ``event_id`` (it closed)."""
        if event_id in self._gen:
            del self._gen[event_id]
            self._live -= self._count.pop(event_id, 0)
        if len(self._heap) > 4 * max(self._live, 1) + 1024:
            self._compact()

    def head(self) -> tuple[float, str, Deadline] | None:
        """The earliest current entry as (due, event_id, deadline), or None."""
        h = self._heap
        while h:
            due, _, eid, d, gen = h[0]
            if self._gen.get(eid) == gen:
                return due, eid, d
            heapq.heappop(h)
        return None

    def pop_due(self, now: float) -> Iterator[tuple[str, Deadline]]:
        """Remove and yield (event_id, deadline) of current entries due by ``now``."""
        h = self._heap
        while h and h[0][0] <= now:
            _, _, eid, d, gen = heapq.heappop(h)
            if self._gen.get(eid) == gen:
                self._live -= 1
                self._count[eid] -= 1
                yield eid, d

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._gen.get(e[2]) == e[4]]
        heapq.heapify(self._heap)
