"""A bounded fuzz of Open311's POST (contract §8) against ``dispatch serve`` on loopback.

Generated bodies, form-encoded or JSON, mix the standard's fields (valid, out of range, of
the wrong type, too long, with control characters) with unknown ones, under a valid intake
key, another role's key, a made-up key or none. For every answer: only the documented
statuses, the standard's error shape with ``code`` equal to the status, and a rejected
request changes nothing (the journal head). The oracle: a well-formed request under the
intake key is answered 201, and what it made reads back through the public GET.

Bounded: 120 examples by default; ``FUZZ_LONG=1`` runs ``FUZZ_LONG_FACTOR`` times as many.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.net import POINT_A, POINT_B, serve, stop, token, write_config

LONG = os.environ.get("FUZZ_LONG", "") not in ("", "0")
FACTOR = int(os.environ.get("FUZZ_LONG_FACTOR", "20")) if LONG else 1
URL = "/open311/v2/requests.json"
DOCUMENTED = {200, 201, 400, 403, 413, 415}
KEYS = {"intake": token("intake"), "operator": token("op-a"), "bogus": "t-net-nobody",
        "none": None}

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                    st.integers(min_value=10**15, max_value=10**30))
anything = st.one_of(texts, numbers, st.booleans(), st.none(),
                     st.lists(st.integers(), max_size=2), st.text(max_size=3000))
good = {
    "service_code": st.sampled_from(["street_vending", "noise"]),
    "point": st.sampled_from([POINT_A, POINT_B]),
    "description": st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                           max_size=80),
    "address_string": st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=60),
}
FIELDS = ["service_code", "lat", "long", "description", "address_string", "email", "phone",
          "media_url", "first_name", "last_name", "device_id", "account_id",
          "jurisdiction_id"]


@st.composite
def posts(draw: st.DrawFn) -> tuple[str, dict[str, Any], bool, str]:
    """(key name, fields, well formed?, encoding)."""
    key = draw(st.sampled_from(list(KEYS)))
    lon, lat = draw(good["point"])
    fields: dict[str, Any] = {"service_code": draw(good["service_code"]), "lat": lat,
                              "long": lon, "description": draw(good["description"]),
                              "address_string": draw(good["address_string"])}
    well_formed = True
    for name in draw(st.lists(st.sampled_from([*FIELDS, "extra", "attribute[x]"]),
                              max_size=3, unique=True)):
        fields[name] = draw(anything)
        well_formed = False
    if draw(st.booleans()):
        fields.pop(draw(st.sampled_from(["service_code", "lat", "long"])))
        well_formed = False
    return key, fields, well_formed, draw(st.sampled_from(["form", "json"]))


def _encode(fields: dict[str, Any], key: str | None, how: str) -> tuple[bytes, str]:
    body = {**fields, **({"api_key": key} if key is not None else {})}
    if how == "json":
        return json.dumps(body, allow_nan=True).encode(), "application/json"
    flat = {k: json.dumps(v) if isinstance(v, list | bool) or v is None else v
            for k, v in body.items()}
    return urlencode(flat).encode(), "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("open311")
    log = tmp / "server.log"
    proc, base = serve(write_config(tmp), log)
    try:
        yield base
    finally:
        stop(proc)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-4000:]


def _head(session: requests.Session, base: str) -> int:
    return int(session.get(base + "/healthz", timeout=10).json()["seq"])


def test_open311_post_fuzz(url: str) -> None:
    session = requests.Session()
    made: list[str] = []

    @given(case=posts())
    @settings(max_examples=120 * FACTOR, deadline=None, database=None,
              derandomize=not LONG, suppress_health_check=list(HealthCheck))
    def run(case: tuple[str, dict[str, Any], bool, str]) -> None:
        key_name, fields, well_formed, how = case
        body, ctype = _encode(fields, KEYS[key_name], how)
        before = _head(session, url)
        r = session.post(url + URL, data=body, headers={"Content-Type": ctype}, timeout=30)
        assert r.status_code in DOCUMENTED, (r.status_code, r.text[:300])
        assert r.headers["Content-Type"].startswith("application/json")
        answer = r.json()
        if r.status_code >= 400:
            assert isinstance(answer, list) and answer and all(
                set(e) == {"code", "description"} and e["code"] == r.status_code
                and isinstance(e["description"], str) for e in answer), answer
            assert _head(session, url) == before, (r.status_code, answer)
            assert key_name == "intake" or r.status_code in (400, 403, 415), answer
        else:
            assert key_name == "intake", (key_name, answer)
            rid = answer[0]["service_request_id"]
            made.append(rid)
            got = session.get(f"{url}/open311/v2/requests/{rid}.json", timeout=10)
            assert got.status_code == 200, got.text
            req = got.json()[0]
            assert req["status"] == "open" and req["service_code"] == fields["service_code"]
            lat = float(fields["lat"])
            assert math.isclose(req["lat"], lat, abs_tol=1e-6), (req, fields)
        if well_formed and key_name == "intake":
            assert r.status_code == 201, (fields, answer)

    run()
    assert made, "no example got in: the fuzz never reached the command path"
