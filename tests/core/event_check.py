"""``check_event``: an event state against ``dispatch.core.event.Event``, at run time.

mypy checks the code that builds events; this checks the states themselves (made, folded
from the journal, rolled back to): every required key there, no unknown key at any depth of
the typed parts, and every value of its type (``msgspec.convert``, strict).
"""

from __future__ import annotations

import functools
import typing
from typing import Any

import msgspec

from dispatch.core.event import Event
from dispatch.core.lifecycle import STAGES


@functools.cache
def _nested(td: Any) -> tuple[frozenset[str], frozenset[str], tuple[tuple[str, Any, bool], ...]]:
    """(required keys, all keys, (key, its TypedDict, whether a list of them) per typed key)."""
    typed = []
    for k, t in typing.get_type_hints(td).items():
        if typing.is_typeddict(t):
            typed.append((k, t, False))
        elif typing.get_origin(t) is list and typing.is_typeddict(typing.get_args(t)[0]):
            typed.append((k, typing.get_args(t)[0], True))
    return td.__required_keys__, td.__required_keys__ | td.__optional_keys__, tuple(typed)


def _keys(td: Any, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        return
    required, known, typed = _nested(td)
    missing = required - value.keys()
    unknown = value.keys() - known
    assert not missing, f"{where}: missing {sorted(missing)}"
    assert not unknown, f"{where}: unknown {sorted(unknown)}"
    for k, t, many in typed:
        if k not in value:
            continue
        if many:
            for i, item in enumerate(value[k]):
                _keys(t, item, f"{where}.{k}[{i}]")
        else:
            _keys(t, value[k], f"{where}.{k}")


def check_event(ev: Any) -> None:
    """AssertionError (or msgspec.ValidationError) naming what in ``ev`` is not an Event."""
    where = ev.get("id", "?") if isinstance(ev, dict) else "?"
    _keys(Event, ev, where)
    msgspec.convert(ev, Event, strict=True)
    for k in ("deadlines", "warn_at"):
        assert set(ev[k]) == set(STAGES), f"{where}.{k}: keyed {sorted(ev[k])}, not by STAGES"
