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

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from dispatch.core.engine import Engine
from dispatch.core.errors import NotFoundError
from dispatch.core.lifecycle import OPEN_STATUSES
from dispatch.core.records import Record, fold


class CommittedView:
    """Events as the journal has them: ``get``, ``events``, ``open_events``, ``busy_units``."""

    def __init__(self) -> None:
        self.last_seq = 0
        self._events: dict[str, dict[str, Any]] = {}
        self._open: dict[str, None] = {}
        self._busy: dict[str, str] = {}
        self._busy_view = MappingProxyType(self._busy)

    def reset(self, engine: Engine) -> None:
        """Start from ``engine``, which must hold only durable records (after replay)."""
        self.last_seq = engine.last_seq
        self._events.clear()
        self._open.clear()
        self._busy.clear()
        for ev in engine.events():
            self._put(ev)

    def apply(self, records: Iterable[Record]) -> None:
        """Durable records (in seq order): their events' states replace the ones shown."""
        for r in records:
            held = self._events.get(r.event_id)
            if held is not None and held.get("seq", 0) >= r.seq:
                continue  # already showing this change or a later one
            self._put(fold(held, r))
            self.last_seq = max(self.last_seq, r.seq)

    def _put(self, ev: dict[str, Any]) -> None:
        eid = ev["id"]
        old = self._events.get(eid)
        self._events[eid] = ev
        if old is not None and old.get("unit") and self._busy.get(old["unit"]) == eid:
            del self._busy[old["unit"]]
        if ev["status"] in OPEN_STATUSES:
            self._open[eid] = None
            if ev.get("unit"):
                self._busy[ev["unit"]] = eid
        else:
            self._open.pop(eid, None)

    # -- the read API (the engine's names) -------------------------------------------------
    def get(self, event_id: str) -> dict[str, Any]:
        """The event as last committed (read-only); ``NotFoundError`` if unknown."""
        try:
            return self._events[event_id]
        except KeyError:
            raise NotFoundError(f"no event {event_id!r}") from None

    def events(self) -> Iterator[dict[str, Any]]:
        """Every committed event, in creation order."""
        return iter(list(self._events.values()))

    def open_events(self) -> Iterator[dict[str, Any]]:
        """Committed events not yet resolved or cancelled."""
        return (self._events[e] for e in list(self._open))

    def busy_units(self) -> Mapping[str, str]:
        """Units on open committed events: unit id → event id (a live read-only view)."""
        return self._busy_view

    def __len__(self) -> int:
        return len(self._events)
