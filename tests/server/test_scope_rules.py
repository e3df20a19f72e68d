"""scope.py, table-driven: every role × events, units, teams and regions (contract §6).

A small real data set (a city C with counties A and B; townships A1, A2, B1; a grid under A1;
one team with one unit per region level used) and one principal per kind of token. Each table
row says exactly what that principal sees; the hub's audience index is checked against the
same rules, so the live fan-out cannot drift from REST and replay.
"""

from __future__ import annotations

from typing import Any

import pytest
from shapely.geometry import box

from dispatch.server import scope
from dispatch.server.scope import Areas, Principal
from geo.model import GeoDataset, Region, Team, Unit

REGIONS = {  # id: (level, parent, box)
    "C": ("city", None, (0, 0, 4, 2)),
    "A": ("county", "C", (0, 0, 2, 2)),
    "B": ("county", "C", (2, 0, 4, 2)),
    "A1": ("township", "A", (0, 0, 1, 2)),
    "A2": ("township", "A", (1, 0, 2, 2)),
    "B1": ("township", "B", (2, 0, 4, 2)),
    "A1g": ("grid", "A1", (0, 0, 1, 1)),
}
TEAMS = {"tC": ("city", "C"), "tA": ("county", "A"), "tA1": ("township", "A1"),
         "tA2": ("township", "A2"), "tB1": ("township", "B1")}
ALL_REGIONS = set(REGIONS)
ALL_UNITS = {"uC", "uA", "uA1", "uA2", "uB1"}
ALL_TEAMS = set(TEAMS)


def dataset() -> GeoDataset:
    regions = {rid: Region(rid, rid, lv, parent, box(*b)) for rid, (lv, parent, b)
               in REGIONS.items()}
    teams = {tid: Team(tid, tid, lv, rid, (0.5, 0.5),
                       (Unit("u" + tid[1:], "u" + tid[1:], "officer", tid),))
             for tid, (lv, rid) in TEAMS.items()}
    return GeoDataset(regions, {}, teams)


@pytest.fixture(scope="module")
def areas() -> Areas:
    return Areas(dataset())


def who(role: str, region: str | None = None, unit: str | None = None,
        department: str | None = None) -> Principal:
    return Principal(role=role, region=region, unit=unit,
                     name=f"{role}:{region or unit or department}",
                     digest=f"d-{role}-{region}-{unit}-{department}", department=department)


def event(path: tuple[str, ...], unit: str | None) -> dict[str, Any]:
    keys = ("grid", "township", "county", "city")[4 - len(path):]
    return {"id": "E-" + path[0], "unit": unit, **dict(zip(keys, path, strict=True))}


EVENTS = {
    "eA1": event(("A1g", "A1", "A", "C"), "uA1"),
    # contract §8: eA2 went to dX, was returned and is now with dY; eB1 is with dX
    "eA2": {**event(("A2", "A", "C"), "uA2"), "transferred_to": ["dX", "dY"],
            "transfer": {"department": "dY"}},
    "eB1": {**event(("B1", "B", "C"), None), "transferred_to": ["dX"],
            "transfer": {"department": "dX"}},
}

# principal: (events read, events acted on, units, teams, regions on /regions,
#             regions a WebSocket may narrow to)
TABLE: list[tuple[Principal, set[str], set[str], set[str], set[str], set[str], set[str]]] = [
    (who("admin"), set(EVENTS), set(EVENTS), ALL_UNITS, ALL_TEAMS, ALL_REGIONS, ALL_REGIONS),
    (who("operator"), set(EVENTS), set(EVENTS), ALL_UNITS, ALL_TEAMS, ALL_REGIONS,
     ALL_REGIONS),
    (who("supervisor"), set(EVENTS), set(), ALL_UNITS, ALL_TEAMS, ALL_REGIONS, ALL_REGIONS),
    (who("operator", "C"), set(EVENTS), set(EVENTS), ALL_UNITS, ALL_TEAMS, ALL_REGIONS,
     ALL_REGIONS),
    (who("operator", "A"), {"eA1", "eA2"}, {"eA1", "eA2"}, {"uA", "uA1", "uA2"},
     {"tA", "tA1", "tA2"}, {"C", "A", "A1", "A2", "A1g"}, {"A", "A1", "A2", "A1g"}),
    (who("operator", "A1"), {"eA1"}, {"eA1"}, {"uA1"}, {"tA1"}, {"C", "A", "A1", "A1g"},
     {"A1", "A1g"}),
    (who("supervisor", "A"), {"eA1", "eA2"}, set(), {"uA", "uA1", "uA2"},
     {"tA", "tA1", "tA2"}, {"C", "A", "A1", "A2", "A1g"}, {"A", "A1", "A2", "A1g"}),
    (who("operator", "B"), {"eB1"}, {"eB1"}, {"uB1"}, {"tB1"}, {"C", "B", "B1"},
     {"B", "B1"}),
    (who("field", unit="uA1"), {"eA1"}, {"eA1"}, {"uA1"}, {"tA1"},
     {"C", "A", "A1", "A2", "A1g"}, set()),
    (who("field", unit="uB1"), set(), set(), {"uB1"}, {"tB1"}, {"C", "B", "B1"}, set()),
    (who("field", unit="uC"), set(), set(), {"uC"}, {"tC"}, ALL_REGIONS, set()),
    (who("field"), set(), set(), set(), set(), set(), set()),  # a field token without unit
    (who("intake"), set(), set(), set(), set(), set(), set()),
    # a department reads every event ever transferred to it and nothing else
    (who("department", department="dX"), {"eA2", "eB1"}, {"eA2", "eB1"}, set(), set(), set(),
     set()),
    (who("department", department="dY"), {"eA2"}, {"eA2"}, set(), set(), set(), set()),
    (who("department"), set(), set(), set(), set(), set(), set()),  # without a department
]
IDS = [p.name for p, *_ in TABLE]


@pytest.mark.parametrize(("p", "read", "act", "units", "teams", "shown", "narrow"), TABLE,
                         ids=IDS)
def test_each_role_sees_exactly_its_table_row(areas, p, read, act, units, teams, shown, narrow):
    assert {k for k, ev in EVENTS.items() if scope.event_visible(p, ev)} == read
    assert {k for k, ev in EVENTS.items() if scope.event_actable(p, ev)} == act
    assert {u for u in ALL_UNITS if scope.unit_visible(areas, p, u)} == units
    assert set(scope.units_in_scope(areas, p)) == units
    assert {t for t in ALL_TEAMS if scope.team_in_scope(areas, p, t)} == teams
    assert {r for r in ALL_REGIONS if scope.region_shown(areas, p, r)} == shown
    assert {r for r in ALL_REGIONS if scope.region_in_scope(areas, p, r)} == narrow


@pytest.mark.parametrize(("p", "read", "act", "units", "teams", "shown", "narrow"), TABLE,
                         ids=IDS)
def test_unknown_ids_are_in_nobodys_scope(areas, p, read, act, units, teams, shown, narrow):
    assert not scope.unit_visible(areas, p, "u-none")
    assert not scope.team_in_scope(areas, p, "t-none")
    assert not scope.region_shown(areas, p, "R-none")
    assert not scope.region_in_scope(areas, p, "R-none")


@pytest.mark.parametrize("p", [row[0] for row in TABLE], ids=IDS)
def test_units_narrowed_to_a_region_are_those_under_it(areas, p):
    for region in ALL_REGIONS:
        want = {u for u in scope.units_in_scope(areas, p)
                if region in areas.unit_path(u)}
        assert set(scope.units_in_scope(areas, p, region)) == want


RECORDS = [  # (after, before): a change, and a reassign that took the event from uA1
    (EVENTS["eA1"], EVENTS["eA1"]),
    (EVENTS["eA2"], None),
    (EVENTS["eB1"], {}),
    ({**EVENTS["eA2"], "unit": "uA2"}, {**EVENTS["eA2"], "unit": "uA1"}),
    ({**EVENTS["eB1"], "unit": None}, {**EVENTS["eB1"], "unit": "uB1"}),
    ({**EVENTS["eA1"], "transferred_to": ["dY"]}, EVENTS["eA1"]),  # the transfer itself
]


def test_only_the_department_holding_a_transfer_answers_it():
    dx, dy = who("department", department="dX"), who("department", department="dY")
    assert scope.holds_transfer(dx, EVENTS["eB1"]) and not scope.holds_transfer(
        dx, EVENTS["eA2"])
    assert scope.holds_transfer(dy, EVENTS["eA2"])
    assert not scope.holds_transfer(who("operator"), EVENTS["eA2"])
    for action in ("accept", "return"):
        assert scope.may_take_action(dx, action) and not scope.may_take_action(
            who("operator", "A"), action) and not scope.may_take_action(who("admin"), action)
    for action in ("transfer", "cancel", "respond", "reassign"):
        assert not scope.may_take_action(dx, action)
    assert scope.may_take_action(who("operator", "A"), "transfer")
    assert not scope.may_take_action(who("field", unit="uA1"), "transfer")
    assert not scope.may_report_positions(dx)


@pytest.mark.parametrize("p", [row[0] for row in TABLE], ids=IDS)
def test_the_hubs_audiences_agree_with_the_rules(areas, p):
    key = scope.audience(p)
    for after, before in RECORDS:
        reached = key is not None and key in scope.record_audiences(after, before)
        assert reached == scope.record_visible(p, after, before), (after, before)
    for u in ALL_UNITS:
        reached = key is not None and key in scope.unit_audiences(areas, u)
        assert reached == scope.unit_visible(areas, p, u), u


def test_a_field_unit_gets_the_record_that_took_its_event_away():
    after, before = {**EVENTS["eA2"], "unit": "uA2"}, {**EVENTS["eA2"], "unit": "uA1"}
    assert scope.record_visible(who("field", unit="uA1"), after, before)
    assert not scope.event_visible(who("field", unit="uA1"), after)


def test_field_units_take_only_the_field_actions():
    field, op = who("field", unit="uA1"), who("operator", "A")
    assert [a for a in ("respond", "depart", "arrive", "resolve", "cancel", "reassign")
            if scope.may_take_action(field, a)] == ["respond", "depart", "arrive", "resolve"]
    assert scope.may_take_action(op, "cancel") and scope.may_take_action(op, "reassign")


ROLES = ("admin", "operator", "supervisor", "field", "intake")


@pytest.mark.parametrize(("check", "roles"), [
    (scope.may_read_events, {"admin", "operator", "supervisor", "field"}),
    (scope.may_create, {"admin", "operator", "intake"}),
    (scope.may_read_stats, {"admin", "operator", "supervisor"}),
    (scope.may_act_at_all, {"admin", "operator", "field"}),
], ids=["read events", "create", "read stats", "act"])
def test_what_each_role_may_do_at_all(check, roles):
    assert {r for r in ROLES if check(who(r))} == roles


def test_an_operator_creates_only_inside_its_region():
    assert scope.operator_may_create_at(who("operator", "A"), ("A1g", "A1", "A", "C"))
    assert not scope.operator_may_create_at(who("operator", "A"), (None, "B1", "B", "C"))
    assert scope.operator_may_create_at(who("operator"), (None, "B1", "B", "C"))
    assert scope.operator_may_create_at(who("admin"), (None, "B1", "B", "C"))
