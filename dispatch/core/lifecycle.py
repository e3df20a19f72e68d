"""The event lifecycle as data (contract §3), after h11's ``_state.py``.

How it works: ``TRANSITIONS`` maps ``(status, action) -> status``. Anything not in it is
illegal and raises ``IllegalTransitionError`` before anything changes. ``is_replay`` says
when an action already happened (a phone retrying late): the engine then answers with the
current state and writes nothing. ``GUARDS`` documents the extra conditions the engine checks
beside the table (they are data too, so the diagram can print them).

Transfer to another department (contract §8, 移送): an operator transfers an event that has
a team (dispatched … arrived) to a department; while ``transferred`` its clocks are stopped
and the department either accepts it (``handed_over``, terminal) or returns it (a fresh
dispatch to the event's team). Meanwhile only an operator's ``cancel`` applies. A ``new``
event cannot be transferred: a return must dispatch it to a team, and it has none (an
operator gives it one by reassigning first). ``transferred`` is open (shown live, in
snapshots, until the department answers) but not clocked (``CLOCKED_STATUSES``: the statuses
whose 1/3/15 timers run, so whose deadlines are live and whose countdown is shown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from dispatch.core.errors import IllegalTransitionError

# Status and stage names are defined here and nowhere else (issue 12): import them.
# Every status, in lifecycle order.
STATUSES = ("new", "dispatched", "responded", "departed", "arrived", "transferred", "resolved",
            "cancelled", "handed_over")
# Not yet closed: shown on the live map and in snapshots, kept in the open set.
OPEN_STATUSES = frozenset(("new", "dispatched", "responded", "departed", "arrived",
                           "transferred"))
# Open and on the clock: the 1/3/15 timers run (live deadlines, countdowns, busy unit).
CLOCKED_STATUSES = OPEN_STATUSES - {"transferred"}
TERMINAL_STATUSES = frozenset(("resolved", "cancelled", "handed_over"))
# The timer stages in order (contract §5: 1/3/15), and the event field that marks each done.
STAGES = ("respond", "depart", "arrive")
# ``StepField``: the event keys that hold when a step happened (``event.Event`` has each).
StepField = Literal["responded_at", "departed_at", "arrived_at", "resolved_at", "cancelled_at"]
STAGE_DONE: dict[str, StepField] = {"respond": "responded_at", "depart": "departed_at",
                                    "arrive": "arrived_at"}
ACTIONS = ("respond", "depart", "arrive", "resolve", "cancel", "escalate", "reassign",
           "transfer", "accept", "return")
# Transfer to another department (contract §8): the operator's transfer and the department's
# two answers; each has its own body and endpoint (the other actions share one).
TRANSFER_ACTIONS = ("transfer", "accept", "return")
ANSWERS = ("accept", "return")  # what the department answers (its token only)
TIERS = ("township", "county", "city")

# Record actions are past tense (house style: actions are verbs, records past tense).
PAST = {
    "create": "created", "respond": "responded", "depart": "departed", "arrive": "arrived",
    "resolve": "resolved", "cancel": "cancelled", "escalate": "escalated",
    "reassign": "reassigned", "attach": "attached", "transfer": "transferred",
    "accept": "accepted", "return": "returned",
}
# transfer.answer after each answer
ANSWER_OF = {"accept": "accepted", "return": "returned"}

# The field that holds when each progress action happened ("1/3/15" stages + resolve).
STEP_FIELD: dict[str, StepField] = {
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
    # contract §8 移送: any stage with a team may go to another department; the clocks stop.
    ("dispatched", "transfer"): "transferred",
    ("responded", "transfer"): "transferred",
    ("departed", "transfer"): "transferred",
    ("arrived", "transfer"): "transferred",
    # the department accepts (terminal) or returns it: a fresh dispatch to its team; an
    # operator may still cancel; nothing else applies while transferred.
    ("transferred", "accept"): "handed_over",
    ("transferred", "return"): "dispatched",
    ("transferred", "cancel"): "cancelled",
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
    "transfer": "a configured department; an operator in scope (or admin)",
    "accept": "by the token of the department it is transferred to",
    "return": "a note saying why; by that department's token; unit picked anew, fresh clocks",
}


def next_status(status: str, action: str) -> str:
    """The status ``action`` leads to from ``status``; raises ``IllegalTransitionError``."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        raise IllegalTransitionError(
            f"cannot {action} an event that is {status}", current_status=status) from None


def is_replay(event: Mapping[str, Any], action: str, department: str | None = None) -> bool:
    """True when ``action`` already happened to ``event`` (idempotent retry → no-op).

    respond/depart/arrive/resolve: their time field is set (a reassign clears the stage
    times, so after a reassign they are real actions again for the new dispatch); cancel:
    the event is cancelled. escalate and reassign are commands, never replays (the engine
    treats a reassign to the unit already assigned as a no-op on its own). transfer: the
    event is transferred to ``department`` already; accept/return: the current transfer
    was answered so (a department retrying late).
    """
    if action == "cancel":
        return event.get("status") == "cancelled"
    if action in TRANSFER_ACTIONS:
        transfer = event.get("transfer")
        if not isinstance(transfer, Mapping):
            return False
        if action == "transfer":
            return (event.get("status") == "transferred"
                    and transfer.get("department") == department)
        return (event.get("status") != "transferred"
                and transfer.get("answer") == ANSWER_OF[action])
    field = STEP_FIELD.get(action)
    return field is not None and event.get(field) is not None


def may_attach(status: str) -> bool:
    """Whether evidence may be attached to an event in ``status`` (``ATTACH_STATUSES``)."""
    return status in ATTACH_STATUSES


def next_tier(tier: str | None) -> str | None:
    """The tier above ``tier`` (township → county → city), None at city (and for an event
    with no tier: none is set only while nothing serves it)."""
    if tier is None:
        return None
    i = TIERS.index(tier)
    return TIERS[i + 1] if i + 1 < len(TIERS) else None
