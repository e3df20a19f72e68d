"""One schema per shape (issue 12): the request bodies are described once, in schemas.py.

The same models validate the body (validation.py) and write the request-body components of
the OpenAPI document (openapi.py), so the two cannot drift: every bound the document
publishes is the one the door enforces, at the bound and one past it. msgspec's errors come
back in the contract's shape, naming the field's path. The msgspec decoding fast path in
``parse_json`` refuses what the ``json`` path refuses.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from dispatch.server import schemas, validation
from dispatch.server.openapi import DOCUMENT

CATS = {"noise": {}, "长" * 64: {}}  # a category at the published maxLength
LOC = {"lon": 121.4, "lat": 28.6}
# a valid body per model, and how to call its validator
BODIES: dict[str, tuple[dict[str, Any], Any]] = {
    "Intake": ({"location": dict(LOC), "category": "noise"},
               lambda b: validation.intake(b, CATS)),
    "Action": ({}, validation.action_body),
    "Position": (dict(LOC), validation.position),
    "Redeliver": ({"from_seq": 5}, validation.redeliver_body),
    # contract §8: transfer to another department and the department's answers
    "Transfer": ({"department": "d-market", "note": "移送"},
                 lambda b: validation.transfer_body("transfer", b)),
    "Accept": ({}, lambda b: validation.transfer_body("accept", b)),
    "Return": ({"note": "退回"}, lambda b: validation.transfer_body("return", b)),
}


def _components() -> dict[str, Any]:
    return DOCUMENT["components"]["schemas"]


def test_the_documented_request_bodies_are_generated_from_the_models():
    _, defs = msgspec.json.schema_components(schemas.REQUEST_BODIES,
                                             ref_template="#/components/schemas/{name}")
    assert set(defs) == {"Intake", "Action", "Position", "Location", "Redeliver", "Transfer",
                         "Accept", "Return"}
    for name, schema in defs.items():
        assert _components()[name] == schema, name
    paths = DOCUMENT["paths"]
    refs = {paths["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
            paths["/api/v1/events/{id}/{action}"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["$ref"],
            paths["/api/v1/units/{id}/position"]["put"]["requestBody"]["content"]
            ["application/json"]["schema"]["$ref"],
            paths["/api/v1/webhooks/{id}/redeliver"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["$ref"]}
    assert refs == {f"#/components/schemas/{n}"
                    for n in ("Intake", "Action", "Position", "Redeliver")}
    for action, model in (("transfer", "Transfer"), ("accept", "Accept"), ("return", "Return")):
        body = paths[f"/api/v1/events/{{id}}/{action}"]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"]["$ref"] == \
            f"#/components/schemas/{model}"
    assert _components()["Transfer"]["required"] == ["department", "note"]
    assert _components()["Return"]["required"] == ["note"]
    assert _components()["Intake"]["required"] == ["location", "category"]
    assert _components()["Position"]["required"] == ["lon", "lat"]


def _bounds(model: str) -> list[tuple[str, str, Any, Any]]:
    """(path, keyword, value at the bound, value past it) for every bound the document
    publishes on ``model``, following refs one level (Intake.location)."""
    out: list[tuple[str, str, Any, Any]] = []

    def walk(schema: dict[str, Any], prefix: str) -> None:
        for key, prop in schema["properties"].items():
            path = f"{prefix}{key}"
            if "$ref" in prop:
                walk(_components()[prop["$ref"].rsplit("/", 1)[1]], path + ".")
                continue
            for alt in prop.get("anyOf", [prop]):
                if "maxLength" in alt:
                    n = alt["maxLength"]
                    out.append((path, "maxLength", "长" * n, "长" * (n + 1)))
                if "maximum" in alt:
                    out.append((path, "maximum", alt["maximum"], alt["maximum"] + 0.5))
                if "minimum" in alt:
                    out.append((path, "minimum", alt["minimum"], alt["minimum"] - 0.5))

    walk(_components()[model], "")
    return out


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


@pytest.mark.parametrize("model", sorted(BODIES))
def test_every_published_bound_is_the_enforced_one(model):
    body, check = BODIES[model]
    bounds = _bounds(model)
    assert bounds, model
    for path, keyword, at, past in bounds:
        if path.endswith("lon") or path.endswith("lat"):
            continue  # the world's edge is outside the jurisdiction: below
        if isinstance(at, float | int) and path == "priority":
            at, past = int(at), (4 if keyword == "maximum" else 0)
        check(_with(body, path, at))
        with pytest.raises(validation.ApiError) as e:
            check(_with(body, path, past))
        assert (e.value.status, e.value.code, e.value.field) == (422, "invalid_field", path), \
            (model, path, keyword, e.value.message)


@pytest.mark.parametrize(("model", "prefix"), [("Intake", "location."), ("Position", "")])
def test_the_coordinate_bounds_are_enforced_naming_the_field(model, prefix):
    body, check = BODIES[model]
    paths = {p for p, *_ in _bounds(model)}
    assert {f"{prefix}lon", f"{prefix}lat"} <= paths
    for key, past in (("lon", 180.5), ("lon", -180.5), ("lat", 90.5), ("lat", -90.5)):
        with pytest.raises(validation.ApiError) as e:
            check(_with(body, prefix + key, past))
        assert (e.value.status, e.value.field) == (422, prefix + key), e.value.message


@pytest.mark.parametrize(("model", "body", "field"), [
    ("Intake", {"location": {"lat": 28.6}, "category": "noise"}, "location.lon"),
    ("Intake", {"location": {"lon": 121.4}, "category": "noise"}, "location.lat"),
    ("Intake", {"location": LOC}, "category"),
    ("Intake", {"location": LOC, "category": None}, "category"),
    ("Intake", {"location": LOC, "category": "noise", "priority": "2"}, "priority"),
    ("Intake", {"location": LOC, "category": "noise", "priority": True}, "priority"),
    ("Intake", {"location": LOC, "category": "noise", "reporter": []}, "reporter"),
    ("Intake", {"location": LOC, "category": "noise", "reported_at": False}, "reported_at"),
    ("Intake", {"location": {**LOC, "crs": None}, "category": "noise"}, "location.crs"),
    ("Intake", {"location": "here", "category": "noise"}, "location"),
    ("Action", {"unit": 7}, "unit"),
    ("Action", {"at": [1]}, "at"),
    ("Position", {"lat": 28.6}, "lon"),
    ("Position", {"lon": 121.4, "lat": "28.6"}, "lat"),
    ("Position", {**LOC, "accuracy_m": "5"}, "accuracy_m"),
    ("Redeliver", {}, "from_seq"),
    ("Redeliver", {"from_seq": "5"}, "from_seq"),
    ("Redeliver", {"from_seq": 0}, "from_seq"),
    ("Transfer", {"note": "移送"}, "department"),
    ("Transfer", {"department": "d-market"}, "note"),
    ("Transfer", {"department": "", "note": "移送"}, "department"),
    ("Return", {}, "note"),
    ("Return", {"note": " \t"}, "note"),
    ("Accept", {"note": 5}, "note"),
])
def test_a_shape_error_is_422_naming_the_path(model, body, field):
    with pytest.raises(validation.ApiError) as e:
        BODIES[model][1](body)
    assert (e.value.status, e.value.code, e.value.field) == (422, "invalid_field", field)
    assert e.value.message.startswith(field), e.value.message
    assert "$." not in e.value.message


def test_unknown_keys_are_ignored_and_the_result_keeps_its_shape():
    out = validation.intake({"location": {**LOC, "alt": 3}, "category": "noise", "x": {"y": 1},
                             "description": None, "source": ""}, CATS)
    assert out == {"location": {"lon": 121.4, "lat": 28.6, "crs": "wgs84",
                                "original": {"lon": 121.4, "lat": 28.6}},
                   "category": "noise", "description": "", "source": "api", "priority": None,
                   "external_id": None, "reporter": None, "reported_at": None}
    assert validation.action_body(None) == {"at": None, "unit": None, "team": None,
                                            "note": None}
    assert validation.position({**LOC, "accuracy_m": 5, "crs": "WGS84", "z": 1}) == {
        "lon": 121.4, "lat": 28.6, "accuracy_m": 5.0, "at": None}


@pytest.mark.parametrize(("raw", "status", "code", "field"), [
    (b'{"a": 1234567890123456}', 422, "invalid_field", "a"),
    (b'{"a": [1, -99999999999999999999999]}', 422, "invalid_field", "a[1]"),
    (b'{"a": 1' + b"0" * 5000 + b"}", 422, "invalid_field", "a"),
    (b'{"a": NaN}', 422, "invalid_field", "a"),
    (b'{"a": 1e400}', 422, "invalid_field", "a"),
    (b'{"a": [-1.8e308]}', 422, "invalid_field", "a[0]"),
    (b'{"a": {"b": "x\x7f"}}', 422, "invalid_field", "a.b"),
    (b'{"a": {"b": "x\xc2\x85"}}', 422, "invalid_field", "a.b"),
    (b'{"\xc2\x9f": 1}', 422, "invalid_field", "\\u009f"),
    (b'{"a": "\\u007f"}', 422, "invalid_field", "a"),
    (b'{"a": "\\ud800"}', 422, "invalid_field", "a"),
    (b'{"a\\u0001": 1}', 422, "invalid_field", "a\\u0001"),
    (b'{"a": "x\x01"}', 400, "malformed_json", None),
    (b'{"a": "\xff"}', 400, "invalid_utf8", None),
    (b'\xef\xbb\xbf{}', 400, "malformed_json", None),
    (b'{"a": 1} x', 400, "malformed_json", None),
    (b"[" * 9 + b"]" * 9, 400, "too_deep", None),
])
def test_parse_json_refuses_what_the_json_path_refuses(raw, status, code, field):
    with pytest.raises(validation.ApiError) as e:
        validation.parse_json(raw, 8)
    assert (e.value.status, e.value.code, e.value.field) == (status, code, field)


def test_parse_json_takes_long_digit_runs_in_strings_and_fifteen_digit_integers():
    raw = b'{"external_id": "12345678901234567890", "n": 999999999999999, "f": 0.5}'
    assert validation.parse_json(raw, 8) == {"external_id": "12345678901234567890",
                                             "n": 999999999999999, "f": 0.5}
    assert validation.parse_json(b"[" * 8 + b"]" * 8, 8) == [[[[[[[[]]]]]]]]
    named = '{"reporter": {"name": "阿卜杜·热合曼", "note": "tab\\there\\n"}}'.encode()
    assert validation.parse_json(named, 8) == {"reporter": {"name": "阿卜杜·热合曼",
                                                            "note": "tab\there\n"}}
