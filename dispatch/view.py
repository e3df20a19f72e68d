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

from collections.abc import Iterable, Iterator

from dispatch.core.engine import Engine, EventTable
from dispatch.core.event import Event
from dispatch.core.records import Record, fold, state_at

# The region path an event carries (the regions it lies within, most specific first).
REGION_KEYS = ("grid", "township", "county", "city")


class CommittedView(EventTable):
    """Events as the journal has them: ``get``, ``events``, ``open_events``, ``busy_units``
    (the engine's read API, from ``EventTable``)."""

    def __init__(self) -> None:
        super().__init__({})
        self.last_seq = 0
        # region id → its open events (ids, in creation order): a township operator's
        # snapshot reads its own, not every open event of the city
        self._open_in: dict[str, dict[str, None]] = {}

    def open_events_in(self, region: str) -> Iterator[Event]:
        """The open events lying within ``region`` (on their region path)."""
        return (self._events[e] for e in list(self._open_in.get(region, ())))

    def _place(self, ev: Event) -> None:
        old = self._events.get(ev["id"])
        super()._place(ev)
        eid, is_open = ev["id"], ev["id"] in self._open
        if old is not None:  # a region it left (never, today: the location is fixed)
            for k in REGION_KEYS:
                r = old.get(k)
                if isinstance(r, str) and (not is_open or ev.get(k) != r):
                    held = self._open_in.get(r)
                    if held is not None:
                        held.pop(eid, None)
        if is_open:
            for k in REGION_KEYS:
                r = ev.get(k)
                if isinstance(r, str):
                    self._open_in.setdefault(r, {}).setdefault(eid, None)

    def reset(self, engine: Engine) -> None:
        """Start from ``engine``, which must hold only durable records (after replay)."""
        self.last_seq = engine.last_seq
        self._events.clear()
        self._open.clear()
        self._busy.clear()
        self._open_in.clear()
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
