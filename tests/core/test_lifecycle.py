"""Every (status, action) pair against the lifecycle table, plus a hypothesis walk."""

from __future__ import annotations

from typing import Any

import pytest
from dispatch_scenario import Scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from table_routing import T1, T3

from dispatch.core import lifecycle as lc
from dispatch.core.diagram import mermaid
from dispatch.core.errors import IllegalTransitionError

# How to bring a fresh event into each status (from a T1 event dispatched at intake).
PATHS: dict[str, list[str]] = {
    "dispatched": [],
    "responded": ["respond"],
    "departed": ["respond", "depart"],
    "arrived": ["respond", "depart", "arrive"],
    "resolved": ["respond", "depart", "arrive", "resolve"],
    "cancelled": ["cancel"],
    "transferred": ["respond", "transfer"],
    "handed_over": ["respond", "transfer", "accept"],
}
# Pairs outside the table that are replays (the action already happened): 200, no change.
REPLAYS = {
    ("responded", "respond"),
    ("departed", "respond"), ("departed", "depart"),
    ("arrived", "respond"), ("arrived", "depart"), ("arrived", "arrive"),
    ("resolved", "respond"), ("resolved", "depart"), ("resolved", "arrive"),
    ("resolved", "resolve"),
    ("cancelled", "cancel"),
    # contract §8: a transfer to the department it is already with; an answer given again
    ("transferred", "transfer"), ("transferred", "respond"),
    ("handed_over", "accept"), ("handed_over", "respond"),
}
KWARGS: dict[str, dict[str, Any]] = {"reassign": {"team": "team-t4"},
                                     "transfer": {"department": "d-market", "note": "移送"},
                                     "return": {"note": "不属本部门职责"}}


def event_in(sc: Scenario, status: str) -> dict[str, Any]:
    if status == "new":
        return sc.create(T3)
    ev = sc.create(T1)
    for i, action in enumerate(PATHS[status]):
        sc.clock.advance(1)
        sc.act(ev["id"], action, **{"note": f"step {i}", **KWARGS.get(action, {})})
    return sc.engine.get(ev["id"])


@pytest.mark.parametrize("status", lc.STATUSES)
@pytest.mark.parametrize("action", lc.ACTIONS)
def test_every_pair(scenario: Scenario, status: str, action: str) -> None:
    ev = event_in(scenario, status)
    assert ev["status"] == status
    seq = scenario.engine.last_seq
    if (status, action) in lc.TRANSITIONS:
        out = scenario.act(ev["id"], action, **KWARGS.get(action, {}))
        assert out.event is not None and out.event["status"] == lc.TRANSITIONS[status, action]
        assert [r.action for r in out.records] == [lc.PAST[action]]
        assert scenario.engine.last_seq == seq + 1
    elif (status, action) in REPLAYS:
        out = scenario.act(ev["id"], action, **KWARGS.get(action, {}))
        assert out.noop and out.records == [] and out.event is ev
        assert scenario.engine.last_seq == seq
    else:
        with pytest.raises(IllegalTransitionError) as err:
            scenario.act(ev["id"], action, **KWARGS.get(action, {}))
        assert err.value.current_status == status
        assert err.value.status == 409 and err.value.code == "illegal_transition"
        assert scenario.engine.get(ev["id"]) is ev
        assert scenario.engine.last_seq == seq


def test_table_covers_only_known_names() -> None:
    for (status, action), to in lc.TRANSITIONS.items():
        assert status in lc.STATUSES and to in lc.STATUSES and action in lc.ACTIONS
    assert not any(s in lc.TERMINAL_STATUSES for s, _ in lc.TRANSITIONS)


def test_escalate_stops_at_city(scenario: Scenario) -> None:
    ev = scenario.create(T1)
    scenario.act(ev["id"], "escalate")
    out = scenario.act(ev["id"], "escalate")
    assert out.event is not None and out.event["tier"] == "city"
    with pytest.raises(IllegalTransitionError):
        scenario.act(ev["id"], "escalate")


def test_reassign_makes_progress_actions_real_again(scenario: Scenario) -> None:
    ev = scenario.create(T1)
    scenario.act(ev["id"], "respond")
    scenario.act(ev["id"], "reassign", team="team-t4")
    out = scenario.act(ev["id"], "respond")
    assert not out.noop and out.event is not None and out.event["status"] == "responded"


def test_diagram_is_drawn_from_the_table() -> None:
    text = mermaid()
    assert text.startswith("stateDiagram-v2")
    for (status, action), to in lc.TRANSITIONS.items():
        assert f"{status} --> {to}: {action}" in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(lc.ACTIONS), max_size=12))
def test_random_walks_follow_the_table(actions: list[str]) -> None:
    sc = Scenario()
    ev = sc.create(T1)
    model, done = "dispatched", set()
    tier_i = 0
    for action in actions:
        sc.clock.advance(1)
        answer = sc.engine.get(ev["id"]).get("transfer", {}).get("answer")
        replay = action in done or (action == "cancel" and model == "cancelled") or (
            action == "transfer" and model == "transferred") or (
            action in ("accept", "return") and model != "transferred"
            and answer == lc.ANSWER_OF[action])
        legal = (model, action) in lc.TRANSITIONS
        if action == "escalate" and legal and tier_i == 2:
            legal = False
        kw = KWARGS.get(action, {}) if action != "reassign" else {
            "team": "team-t4" if sc.engine.get(ev["id"])["team"] != "team-t4" else "team-t1"}
        if replay:
            assert sc.act(ev["id"], action, **kw).noop
        elif legal:
            out = sc.act(ev["id"], action, **kw)
            model = lc.TRANSITIONS[model, action]
            if action in ("reassign", "return"):  # a fresh dispatch (team-t1, team-t4:
                done -= {"respond", "depart", "arrive"}  # both township teams)
                tier_i = 0
            elif action in ("transfer", "accept"):
                pass
            elif action == "escalate":
                tier_i += 1
            else:
                done.add(action)
            assert out.event is not None and out.event["status"] == model
        else:
            with pytest.raises(IllegalTransitionError):
                sc.act(ev["id"], action, **kw)
        assert sc.engine.get(ev["id"])["status"] == model
        assert sc.engine.get(ev["id"])["tier"] == lc.TIERS[tier_i]


def test_docs_show_the_current_diagram() -> None:
    from pathlib import Path

    doc = Path(__file__).parents[2] / "docs" / "core.md"
    assert mermaid() in doc.read_text(), "regenerate with python -m dispatch.core.diagram"


def test_stage_and_status_names_are_defined_once() -> None:
    """Issue 12: the status and stage names live beside the table; nothing else spells them
    (no second ``STAGES``/``STAGE_DONE``/``OPEN_STATUSES``…, no literal list of them)."""
    import ast
    from pathlib import Path

    assert set(lc.STAGE_DONE) == set(lc.STAGES) and set(lc.STAGES) <= set(lc.ACTIONS)
    assert lc.OPEN_STATUSES | lc.TERMINAL_STATUSES == set(lc.STATUSES)
    assert not lc.OPEN_STATUSES & lc.TERMINAL_STATUSES
    assert {lc.TRANSITIONS[k] for k in lc.TRANSITIONS} | {s for s, _ in lc.TRANSITIONS} <= set(
        lc.STATUSES)
    names = {"STAGES", "STAGE_DONE", "STATUSES", "OPEN_STATUSES", "TERMINAL_STATUSES", "DONE",
             "OPEN"}
    spelled = {frozenset(lc.STAGES), frozenset(lc.OPEN_STATUSES), frozenset(lc.STATUSES),
               frozenset(lc.STAGE_DONE.values()), frozenset(lc.ACTIONS)}
    root = Path(__file__).parents[2]
    found = []
    for path in sorted([*(root / "dispatch").rglob("*.py"), *(root / "geo").rglob("*.py")]):
        if path == root / "dispatch" / "core" / "lifecycle.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found += [f"{where}: {t.id} =" for t in targets
                          if isinstance(t, ast.Name) and t.id in names]
            elif isinstance(node, ast.Tuple | ast.List | ast.Set) and node.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                if frozenset(e.value for e in node.elts) in spelled:
                    found.append(f"{where}: {ast.unparse(node)}")
    assert not found, "stage/status names spelled out again:\n  " + "\n  ".join(found)
