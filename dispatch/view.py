"""The committed read model: the state the journal holds, for every read at the edge.

How it works: the engine runs ahead of the journal (it makes a change before the store has
it, and undoes it when the store refuses). Reads must not: a REST GET, a snapshot, stats and
exports read this model instead, which changes only when records are durable (the runtime
hands it every published record, its own and other instances'). ``records.fold`` gives the
event's full state after each record (the engine's records carry it; others are folded onto
the state held), so the model keeps that per event, and derives the open set and the busy
units from it. It starts from the engine right after start-up replay (when the
engine holds only what the journal holds). ``last_seq`` is the last record it shows, so a
snapshot labelled with it shows exactly that state.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatch.core.engine import Engine, EventTable
from dispatch.core.records import Record, fold, state_at


class CommittedView(EventTable):
    """Events as the journal has them: ``get``, ``events``, ``open_events``, ``busy_units``
    (the engine's read API, from ``EventTable``)."""

    def __init__(self) -> None:
        super().__init__({})
        self.last_seq = 0

    def reset(self, engine: Engine) -> None:
        """Start from ``engine``, which must hold only durable records (after replay)."""
        self.last_seq = engine.last_seq
        self._events.clear()
        self._open.clear()
        self._busy.clear()
        for ev in engine.events():
            self._place(ev)

    def apply(self, records: Iterable[Record]) -> None:
        """Durable records (in seq order): their events' states replace the ones shown."""
        for r in records:
            held = self._events.get(r.event_id)
            if held is not None and held.get("seq", 0) >= r.seq:
                continue  # already showing this change or a later one
            self._place(fold(held, r))
            self.last_seq = max(self.last_seq, r.seq)

    def recall(self, record: Record) -> None:
        """Give a record read back from the journal (at or before ``last_seq``) its event's
        full state at that record (``records.state_at`` on the state shown here, which is at
        or after it), so it renders as the event was then. ``ValueError`` when it cannot."""
        if record.state is not None or record.added is None:
            return
        state_at(record, self._events.get(record.event_id))
