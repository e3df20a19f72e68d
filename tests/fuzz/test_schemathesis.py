"""schemathesis against ``/api/openapi.json`` on a real server (issue 11, "the net").

Every operation of the document, generated from its schemas (valid and invalid data), sent
with the token of every kind of caller (each role, an operator and a supervisor of another
county, an unknown token, none). For every answer: no 5xx, the status code is documented, the
body matches the documented schema; and a rejected request (any 4xx) changed nothing: the
journal head (``/healthz`` ``seq``), the number of events and every unit's position an admin
sees are the same before and after it. A stateful run follows the document's links from an
intake to the operations on the event it made.

Bounded: 4 examples per operation and caller by default (about a minute on a quiet
machine); ``FUZZ_LONG=1`` runs ``FUZZ_LONG_FACTOR`` (default 20) times as many.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from dispatch.server.openapi import DOCUMENT
from tests.fuzz.net import (
    POINT_A,
    POINT_B,
    UNIT_B,
    UNITS_A,
    auth,
    free_port,
    intake_body,
    serve,
    stop,
    token,
    write_config,
)

# tests/run.sh: FUZZ_LONG=1 runs FUZZ_LONG_FACTOR (default 20) times the examples.
LONG = os.environ.get("FUZZ_LONG", "") not in ("", "0")
FACTOR = int(os.environ.get("FUZZ_LONG_FACTOR", "20")) if LONG else 1
EXAMPLES = 4 * FACTOR
STATEFUL_STEPS = (10 * FACTOR, 50 if LONG else 10)  # (max_examples, stateful_step_count)
# Callers: every role, another county's operator and supervisor, a bad token, no token.
WHO = ["admin", "op-a", "op-b", "sup-b", "field-u-0005", "intake", "dept-a", "bogus", None]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Timers far away: nothing fires on its own during a run, so the journal head only moves
# when a request moves it.
WEBHOOK = "wh-fuzz"  # configured in ``api`` (its receiver is never up)
LONG_TIMERS = {"respond_s": 86_400, "depart_s": 172_800, "arrive_s": 259_200}


@dataclass
class Api:
    url: str
    session: requests.Session
    events: list[str] = field(default_factory=list)
    open311: list[str] = field(default_factory=list)  # requests made through /open311
    last: tuple[int, int, list[Any]] | None = None  # the state after the previous request

    def state(self) -> tuple[int, int, list[Any]]:
        """(journal head seq, number of events an admin sees, every unit as admin sees it).

        Positions are not journalled: the units list is what shows a position report.
        """
        r = self.session.get(self.url + "/healthz", timeout=10)
        assert r.status_code == 200, r.text
        seq = r.json()["seq"]
        count, cursor = 0, None
        while True:
            q = "?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            r = self.session.get(self.url + "/api/v1/events" + q, headers=auth("admin"),
                                 timeout=10)
            assert r.status_code == 200, r.text
            page = r.json()
            count += len(page["events"])
            cursor = page["next"]
            if cursor is None:
                break
        r = self.session.get(self.url + "/api/v1/units", headers=auth("admin"), timeout=10)
        assert r.status_code == 200, r.text
        units = [{k: u[k] for k in ("id", "lon", "lat", "at", "accuracy_m", "available")}
                 for u in r.json()["units"]]
        return seq, count, units


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    log = tmp / "server.log"
    proc, url = serve(write_config(tmp, timers=LONG_TIMERS, webhooks=[
        {"id": WEBHOOK, "url": f"http://127.0.0.1:{free_port()}/", "secret": "fuzz"}]), log)
    session = requests.Session()
    out = Api(url=url, session=session)
    try:
        for point in (POINT_A, POINT_A, POINT_B):
            r = session.post(url + "/api/v1/events", json=intake_body(point),
                             headers=auth("intake"), timeout=10)
            assert r.status_code == 201, r.text
            out.events.append(r.json()["id"])
        r = session.post(url + OPEN311, data=_open311_form(POINT_A), timeout=10)
        assert r.status_code == 201, r.text
        out.open311.append(r.json()[0]["service_request_id"])
        yield out
    finally:
        session.close()
        stop(proc)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-4000:]


def _well_formed_intake(case: Any) -> st.SearchStrategy[Any]:
    """An intake that makes an event (in county A or B), so links reach real state."""
    def well_formed(point: tuple[float, float]) -> Any:
        case.body = {"location": {"lon": point[0], "lat": point[1]},
                     "category": "street_vending", "description": "网测试"}
        return case

    return st.sampled_from([POINT_A, POINT_B]).map(well_formed)


OPEN311 = "/open311/v2/requests.json"


def _open311_form(point: tuple[float, float]) -> dict[str, Any]:
    """An Open311 POST that makes an event (the intake token as its api_key)."""
    return {"api_key": token("intake"), "service_code": "street_vending", "lat": point[1],
            "long": point[0], "description": "网测试"}


def _pointed(case: Any, api: Api) -> st.SearchStrategy[Any]:
    """Known ids and points now and then, so generated requests reach real state."""
    op = case.operation.path
    params = dict(case.path_parameters or {})
    strategies: list[st.SearchStrategy[Any]] = [st.just(case)]
    if "id" in params:
        known = (list(api.events) if op.startswith("/api/v1/events") else
                 [*api.open311, *api.events] if op.startswith("/open311/") else
                 [WEBHOOK] if op.startswith("/api/v1/webhooks") else
                 [*UNITS_A, UNIT_B])

        def with_id(i: str) -> Any:
            case.path_parameters = {**params, "id": i}
            return case

        strategies.append(st.sampled_from(known).map(with_id))
    body = case.body
    if op == "/api/v1/events" and case.method.upper() == "POST" and isinstance(body, dict):
        def located(point: tuple[float, float]) -> Any:
            case.body = {**body, "location": {"lon": point[0], "lat": point[1]}}
            return case

        strategies.append(st.sampled_from([POINT_A, POINT_B]).map(located))
        strategies.append(_well_formed_intake(case))
    if op == OPEN311 and case.method.upper() == "POST" and isinstance(body, dict):
        def keyed(point: tuple[float, float]) -> Any:  # a real key: some of them get in
            case.body = {**body, **_open311_form(point)}
            return case

        strategies.append(st.sampled_from([POINT_A, POINT_B]).map(keyed))
    if op.endswith("/{action}") and isinstance(body, dict):
        def target(kv: tuple[str, str]) -> Any:
            case.body = {**body, kv[0]: kv[1]}
            return case

        strategies.append(st.sampled_from([("unit", UNITS_A[1]), ("unit", UNIT_B),
                                           ("team", "t-ta1"), ("team", "t-tb1")]).map(target))
    if op.endswith("/transfer") and isinstance(body, dict):  # a configured department
        def to(dep: str) -> Any:
            case.body = {**body, "department": dep}
            return case

        strategies.append(st.sampled_from(["d-a", "d-b"]).map(to))
    return st.one_of(strategies)


@pytest.fixture(scope="module")
def api_schema(api: Api) -> Any:
    return schemathesis.openapi.from_url(api.url + "/api/openapi.json")


# (method, path) of every documented operation, known at collection time; the walk in
# tests/server/test_api.py keeps the document equal to the routes.
OPERATIONS = [pytest.param(m, p, id=f"{m} {p}") for m, p in sorted(
    (m.upper(), p) for p, ops in DOCUMENT["paths"].items() for m in ops)]


def _call(case: Any, api: Api, who: str | None) -> Any:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = {**headers, **auth(who)}
    return case.call(session=api.session, allow_redirects=False, timeout=30)


@pytest.mark.parametrize("who", WHO, ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_operation_every_caller(api: Api, api_schema: Any, method: str, path: str,
                                      who: str | None) -> None:
    op = api_schema[path][method]
    api.last = None  # only this test's requests move the server between its examples
    cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE),
                      op.as_strategy(GenerationMode.NEGATIVE)).flatmap(
        lambda case: _pointed(case, api))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=not LONG, database=None)
    def run(case: Any) -> None:
        before = api.last or api.state()
        api.last = None
        response = _call(case, api, who)
        after = api.last = api.state()
        case.validate_response(response, checks=CHECKS)
        if 400 <= response.status_code < 500:
            assert after == before, (
                f"{case.method} {case.formatted_path} answered {response.status_code} "
                f"{response.text[:300]} but changed the journal head, the events or a unit")

    run()


def test_stateful_links(api: Api) -> None:
    """Follow the links as admin: intake → read the event, its units, act on it."""
    schema = schemathesis.openapi.from_url(api.url + "/api/openapi.json")

    @schema.hook
    def flatmap_case(context: Any, case: Any) -> st.SearchStrategy[Any]:
        if case.operation.path == "/api/v1/events" and case.method.upper() == "POST":
            return _well_formed_intake(case)  # every intake makes an event the links follow
        return _pointed(case, api)

    seen: list[tuple[str, int]] = []
    max_examples, steps = STATEFUL_STEPS

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:  # a generated Authorization never wins
            headers = {k: v for k, v in (case.headers or {}).items()
                       if k.lower() != "authorization"}
            case.headers = {**headers, **auth("admin")}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": auth("admin"), "session": api.session, "timeout": 30,
                    "allow_redirects": False}

        def validate_response(self, response: Any, case: Any, **kw: Any) -> None:
            seen.append((case.operation.label, response.status_code))
            case.validate_response(response, checks=CHECKS)

    Workflow.run(settings=settings(max_examples=max_examples, stateful_step_count=steps,
                                   deadline=None, derandomize=not LONG, database=None,
                                   suppress_health_check=list(HealthCheck)))
    # the run reached real state: an event it made was read back by following a link
    assert ("GET /api/v1/events/{id}", 200) in seen, sorted(set(seen))


def test_405_names_the_allowed_methods(api: Api) -> None:
    """A method the document does not list → 405 with ``Allow`` (RFC 9110 §15.5.6; the
    first thing this net found: the error middleware dropped it). HEAD goes with GET,
    listed or not."""
    for path, ops in DOCUMENT["paths"].items():
        if "{" in path or path == "/ws":
            continue
        allowed = {m.upper() for m in ops}
        method = "DELETE" if "DELETE" not in allowed else "PATCH"
        r = api.session.request(method, api.url + path, headers=auth("admin"), timeout=10)
        assert r.status_code == 405, (path, r.status_code, r.text)
        said = set(r.headers.get("Allow", "").replace(" ", "").split(",")) - {"HEAD"}
        assert said == allowed, (path, r.headers.get("Allow"))
