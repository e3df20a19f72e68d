"""The event lifecycle as data (contract §3), after h11's ``_state.py``.

How it works: ``TRANSITIONS`` maps ``(status, action) -> status``. Anything not in it is
illegal and raises ``IllegalTransitionError`` before anything changes. ``is_replay`` says
when an action already happened (a phone retrying late): the engine then answers with the
current state and writes nothing. ``GUARDS`` documents the extra conditions the engine checks
beside the table (they are data too, so the diagram can print them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dispatch.core.errors import IllegalTransitionError

# Status and stage names are defined here and nowhere else (issue 12): import them.
# Every status, in lifecycle order.
STATUSES = ("new", "dispatched", "responded", "departed", "arrived", "resolved", "cancelled")
OPEN_STATUSES = frozenset(("new", "dispatched", "responded", "departed", "arrived"))
TERMINAL_STATUSES = frozenset(("resolved", "cancelled"))
# The timer stages in order (contract §5: 1/3/15), and the event field that marks each done.
STAGES = ("respond", "depart", "arrive")
STAGE_DONE = {"respond": "responded_at", "depart": "departed_at", "arrive": "arrived_at"}
ACTIONS = ("respond", "depart", "arrive", "resolve", "cancel", "escalate", "reassign")
TIERS = ("township", "county", "city")

# Record actions are past tense (house style: actions are verbs, records past tense).
PAST = {
    "create": "created", "respond": "responded", "depart": "departed", "arrive": "arrived",
    "resolve": "resolved", "cancel": "cancelled", "escalate": "escalated",
    "reassign": "reassigned", "attach": "attached",
}

# The field that holds when each progress action happened ("1/3/15" stages + resolve).
STEP_FIELD = {
    "respond": "responded_at", "depart": "departed_at", "arrive": "arrived_at",
    "resolve": "resolved_at", "cancel": "cancelled_at",
}
# The timer stage a progress action completes (contract §5).
STAGE_OF = {stage: stage for stage in STAGES}

TRANSITIONS: dict[tuple[str, str], str] = {
    # new: routing found no team; an operator assigns one by reassigning.
    ("new", "reassign"): "dispatched",
    ("new", "escalate"): "new",
    ("new", "cancel"): "cancelled",
    # 1/3/15: respond within 60 s, depart within 180 s, arrive within 900 s of dispatch.
    ("dispatched", "respond"): "responded",
    ("dispatched", "escalate"): "dispatched",
    ("dispatched", "reassign"): "dispatched",
    ("dispatched", "cancel"): "cancelled",
    ("responded", "depart"): "departed",
    ("responded", "escalate"): "responded",
    ("responded", "reassign"): "dispatched",
    ("responded", "cancel"): "cancelled",
    ("departed", "arrive"): "arrived",
    ("departed", "escalate"): "departed",
    ("departed", "reassign"): "dispatched",
    ("departed", "cancel"): "cancelled",
    ("arrived", "resolve"): "resolved",
    ("arrived", "escalate"): "arrived",
    ("arrived", "reassign"): "dispatched",
    ("arrived", "cancel"): "cancelled",
}

# Evidence (contract §8, 电子证据): attaching a file is not a transition, the status stays.
# It is allowed in every status, the terminal ones included: a photo taken before the event
# was resolved may reach the server later from a phone's offline queue, and a court expects
# what was collected about a closed case (resolved, or cancelled as a false report) to be
# kept with it rather than refused. The journal record makes each attachment part of the
# hash chain whenever it happens, so nothing is lost by allowing it late.
ATTACH = "attach"
ATTACH_STATUSES = frozenset(STATUSES)

GUARDS: dict[str, str] = {
    "escalate": "tier below city (at city: illegal_transition)",
    "reassign": "team or unit given; unit known and not busy on another event",
    "respond": "at within skew of now and not before the previous step",
    "depart": "at within skew of now and not before the previous step",
    "arrive": "at within skew of now and not before the previous step",
    "resolve": "at within skew of now and not before the previous step",
}


def next_status(status: str, action: str) -> str:
    """The status ``action`` leads to from ``status``; raises ``IllegalTransitionError``."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise IllegalTransitionError(
            f"cannot {action} an event that is {status}", current_status=status) from None


def is_replay(event: Mapping[str, Any], action: str) -> bool:
    """True when ``action`` already happened to ``event`` (idempotent retry → no-op).

    respond/depart/arrive/resolve: their time field is set (a reassign clears the stage
    times, so after a reassign they are real actions again for the new dispatch); cancel:
    the event is cancelled. escalate and reassign are commands, never replays (the engine
    treats a reassign to the unit already assigned as a no-op on its own).
    """
    if action == "cancel":
        return event.get("status") == "cancelled"
    field = STEP_FIELD.get(action)
    return field is not None and event.get(field) is not None


def may_attach(status: str) -> bool:
    """Whether evidence may be attached to an event in ``status`` (``ATTACH_STATUSES``)."""
    return status in ATTACH_STATUSES


def next_tier(tier: str) -> str | None:
    """The tier above ``tier`` (township → county → city), None at city."""
    i = TIERS.index(tier)
    return TIERS[i + 1] if i + 1 < len(TIERS) else None
