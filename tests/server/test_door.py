"""The door (issue 11 defects 1, 4, 5, 10; contract §2, §3 Bounds), over real HTTP and sockets.

- Client times outside [2000-01-01T00:00:00Z, now + offline.max_skew_s] are a 422 naming the
  field, never a 500 that stores the event anyway.
- Lone UTF-16 surrogates, control characters other than tab/CR/LF, and integers of more than
  15 digits are a 422 naming the path, wherever they sit in a body (keys included).
- The server routes the point exactly as received: a point that rounding to 7 decimals would
  move across a county border goes where ``dispatch geo locate`` sends it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from dispatch.server import validation
from geo import cli as geo_cli
from tests.server.conftest import Server, intake_body, point_in

JSON = {"Content-Type": "application/json"}


async def _raw(srv: Server, method: str, path: str, who: str, raw: bytes) -> tuple[int, Any]:
    headers = {**srv.auth(who), **JSON}
    async with srv.session.request(method, srv.url + "/api/v1" + path, data=raw,
                                   headers=headers) as r:
        assert r.content_type == "application/json", await r.text()
        return r.status, await r.json()


async def _nothing_changed(srv: Server, seq: int, n_events: int) -> None:
    assert srv.state.runtime.engine.last_seq == seq
    for path in ("/api/v1/events", "/api/v1/units"):
        status, body = await srv.call("GET", path, "city")
        assert status == 200, body
    _, listing = await srv.call("GET", "/api/v1/events", "admin")
    assert len(listing["events"]) == n_events


async def _one_event(srv: Server) -> tuple[dict[str, Any], str]:
    lon, lat = point_in(srv, "331003")
    status, ev = await srv.call("POST", "/api/v1/events", "intake", json=intake_body(lon, lat))
    assert status == 201, ev
    return ev, srv.state.runtime.dataset.teams[ev["team"]].units[0].id


# -- defect 1: bounded client times -----------------------------------------------------------
def _bad_times(now: float) -> list[Any]:
    return [1e12, -1e12, 1e300, -1, 0, 946684799.999, "1999-12-31T23:59:59Z",
            "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00",
            "0001-01-01T00:00:00+14:00", now + 3600, now + 120]


async def test_client_times_outside_the_bounds_are_422_and_change_nothing(server):
    ev, unit = await _one_event(server)
    now = server.state.clock.now()
    seq, n = server.state.runtime.engine.last_seq, 1
    lon, lat = point_in(server, "331003")
    for t in _bad_times(now):
        for method, path, who, body, field in (
            ("POST", "/events", "intake", intake_body(lon, lat, reported_at=t), "reported_at"),
            ("POST", f"/events/{ev['id']}/respond", "city", {"at": t}, "at"),
            ("POST", f"/events/{ev['id']}/escalate", "city", {"at": t}, "at"),
            ("PUT", f"/units/{unit}/position", "admin", {"lon": lon, "lat": lat, "at": t}, "at"),
        ):
            status, out = await _raw(server, method, path, who, json.dumps(body).encode())
            assert status == 422, (t, path, out)
            assert out["error"]["code"] == "invalid_field" and out["error"]["field"] == field
        await _nothing_changed(server, seq, n)


async def test_client_times_inside_the_bounds_are_taken(server):
    ev, unit = await _one_event(server)
    now = server.state.clock.now()
    lon, lat = point_in(server, "331003")
    status, out = await server.call("POST", "/api/v1/events", "intake",
                                    json=intake_body(lon, lat, reported_at="2000-01-01T00:00:00Z"))
    assert status == 201 and out["reported_at"] == "2000-01-01T08:00:00.000+08:00"
    status, out = await server.call("POST", f"/api/v1/events/{ev['id']}/respond", "city",
                                    json={"at": now + 20})
    assert status == 200 and out["status"] == "responded"
    status, out = await server.call("PUT", f"/api/v1/units/{unit}/position", "admin",
                                    json={"lon": lon, "lat": lat, "at": now - 5})
    assert status == 200 and out["at"] is not None


def test_the_bounds_in_the_validators_themselves():
    """Interface 1: [2000-01-01T00:00:00Z, now + max_skew_s]; no upper bound but datetime's
    without ``now``; nothing but ApiError for any number, however large."""
    cats = {"noise": object()}
    base = {"location": {"lon": 121.4, "lat": 28.6}, "category": "noise"}
    now = 1_800_000_000.0
    ok = [(946684800, None), ("2000-01-01T00:00:00Z", None), (now + 30, now),
          ("9999-12-29T00:00:00+00:00", None)]
    for t, n in ok:
        got = validation.intake({**base, "reported_at": t}, cats, now=n)["reported_at"]
        assert got >= 946684800
        assert validation.action_body({"at": t}, now=n, max_skew_s=30)["at"] == got
        assert validation.position({"lon": 121.4, "lat": 28.6, "at": t}, now=n)["at"] == got
    bad = [(946684799.9, None), (now + 30.5, now), (now + 11, now, 10), (1e12, None),
           ("9999-12-31T23:59:59+00:00", None), (10**400, None), (-(10**400), now)]
    for t, n, *skew in bad:
        kw = {"now": n, "max_skew_s": skew[0] if skew else 30.0}
        for fn, args, field in (
            (validation.intake, ({**base, "reported_at": t}, cats), "reported_at"),
            (validation.action_body, ({"at": t},), "at"),
            (validation.position, ({"lon": 121.4, "lat": 28.6, "at": t},), "at"),
        ):
            with pytest.raises(validation.ApiError) as e:
                fn(*args, **kw)
            assert (e.value.status, e.value.field) == (422, field), (t, e.value.message)
    with pytest.raises(validation.ApiError) as e:
        validation.location({"lon": 10**400, "lat": 28.6})
    assert e.value.field == "location.lon"


@pytest.mark.parametrize("query", [
    "since=9999-12-31T23:59:59%2B00:00", "until=9999-12-31T23:59:59-14:00",
    "since=0001-01-01T00:00:00%2B14:00", "until=0001-01-01T00:00:00-23:59",
    "since=" + "9" * 5000, "since=1e999", "until=-1e12",
])
async def test_query_times_never_answer_500(server, query):
    await _one_event(server)
    for path in ("/api/v1/events", "/api/v1/stats/response-times"):
        status, out = await server.call("GET", f"{path}?{query}", "city")
        assert status in (200, 422), out
        if status == 422:
            assert out["error"]["field"] in ("since", "until")


# -- defects 4 and 5: strings and integers anywhere in a body ---------------------------------
BIG = "1" * 5000

# (name, raw JSON with the location spliced in, field)
INTAKE_CASES = [
    ("lone surrogate in description", '"description": "坏\\ud800"', "description"),
    ("low surrogate alone", '"description": "\\udfff"', "description"),
    ("reversed pair", '"description": "\\ude00\\ud83d"', "description"),
    ("lone surrogate in reporter.name", '"reporter": {"name": "\\ud800"}', "reporter.name"),
    ("NUL in reporter.name", '"reporter": {"name": "张\\u0000三"}', "reporter.name"),
    ("ESC in external_id", '"external_id": "x\\u001b[2J"', "external_id"),
    ("DEL in source", '"source": "hot\\u007fline"', "source"),
    ("C1 control in description", '"description": "a\\u0085b"', "description"),
    ("surrogate under an unknown key", '"x-extra": "\\ud800"', "x-extra"),
    ("surrogate deep in a list", '"tags": [{"a": ["ok", "\\udbff"]}]', "tags[0].a[1]"),
    ("surrogate in a key", '"reporter": {"\\ud800": 1}', "reporter.\\ud800"),
    ("control char in a key", '"reporter": {"na\\u0001me": "x"}', "reporter.na\\u0001me"),
    ("5000-digit priority", f'"priority": {BIG}', "priority"),
    ("5000-digit negative priority", f'"priority": -{BIG}', "priority"),
    ("16-digit priority", '"priority": 1000000000000000', "priority"),
    ("30-digit reporter.phone", '"reporter": {"phone": 123456789012345678901234567890}',
     "reporter.phone"),
    ("5000-digit under an unknown key", f'"extra": [{BIG}]', "extra[0]"),
    ("huge float under an unknown key", '"extra": 1e999', "extra"),
]


def _intake_raw(srv: Server, extra: str) -> bytes:
    lon, lat = point_in(srv, "331003")
    return (f'{{"location": {{"lon": {lon!r}, "lat": {lat!r}}}, "category": "street_vending", '
            f'{extra}}}').encode()


async def test_bad_strings_and_long_integers_anywhere_are_422_naming_the_path(server):
    await _one_event(server)
    seq = server.state.runtime.engine.last_seq
    for name, extra, field in INTAKE_CASES:
        status, out = await _raw(server, "POST", "/events", "intake", _intake_raw(server, extra))
        assert status == 422, (name, out)
        assert out["error"]["code"] == "invalid_field", (name, out)
        assert out["error"]["field"] == field, (name, out)
        assert out["error"]["message"]
    await _nothing_changed(server, seq, 1)


async def test_tab_cr_lf_and_paired_surrogates_are_fine(server):
    status, out = await _raw(server, "POST", "/events", "intake", _intake_raw(
        server, '"description": "一行\\t二\\r\\n三 \\ud83d\\ude00", "priority": 3, '
                '"reporter": {"phone": 138000000000000}'))
    assert status == 201, out
    assert out["description"] == "一行\t二\r\n三 😀" and out["priority"] == 3
    assert out["reporter"] == {"phone": 138000000000000}


async def test_action_and_position_bodies_are_checked_the_same_way(server):
    ev, unit = await _one_event(server)
    lon, lat = point_in(server, "331003")
    seq = server.state.runtime.engine.last_seq
    for method, path, who, raw, field in (
        ("POST", f"/events/{ev['id']}/escalate", "city", b'{"note": "\\ud800"}', "note"),
        ("POST", f"/events/{ev['id']}/respond", "city", b'{"x": {"y": "\\u0002"}}', "x.y"),
        ("POST", f"/events/{ev['id']}/respond", "city", f'{{"at": {BIG}}}'.encode(), "at"),
        ("PUT", f"/units/{unit}/position", "admin",
         f'{{"lon": {lon!r}, "lat": {lat!r}, "accuracy_m": {BIG}}}'.encode(), "accuracy_m"),
        ("PUT", f"/units/{unit}/position", "admin",
         f'{{"lon": {lon!r}, "lat": {lat!r}, "accuracy_m": 1e9}}'.encode(), "accuracy_m"),
        ("PUT", f"/units/{unit}/position", "admin",
         b'{"lon": 1210000000000000, "lat": 28.6}', "lon"),
    ):
        status, out = await _raw(server, method, path, who, raw)
        assert status == 422, (raw[:60], out)
        assert out["error"]["field"] == field, out
    await _nothing_changed(server, seq, 1)


async def test_a_socket_message_with_a_huge_integer_or_surrogate_gets_an_error_not_a_drop(server):
    async with websockets.connect(server.ws_url, additional_headers=server.auth("city"),
                                  max_size=None) as ws:
        snap = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert snap["type"] == "snapshot"
        for raw, field in ((f'{{"type": "ping", "id": {BIG}}}', "id"),
                           ('{"type": "ping", "note": "\\ud800"}', "note")):
            await ws.send(raw)
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["type"] == "error" and reply["error"]["field"] == field, reply
            assert reply["error"]["code"] == "invalid_field"
        await ws.send('{"type": "ping", "id": 7}')
        pong = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert pong == {**pong, "type": "pong", "id": 7}


async def test_an_idempotency_key_that_is_not_utf8_is_422_not_503(server):
    """Header bytes that are not UTF-8 reach the handler as lone surrogates (surrogateescape)."""
    await _one_event(server)
    seq = server.state.runtime.engine.last_seq
    lon, lat = point_in(server, "331003")
    body = json.dumps(intake_body(lon, lat)).encode()
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /api/v1/events HTTP/1.1\r\nHost: door\r\n"
                 b"Content-Type: application/json\r\n"
                 b"Authorization: Bearer " + server.token("intake").encode() + b"\r\n"
                 b"Idempotency-Key: key-\xff\xfe\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                 b"Connection: close\r\n\r\n" + body)
    await writer.drain()
    head, _, payload = (await asyncio.wait_for(reader.read(), 10)).partition(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 422 "), head
    err = json.loads(payload)["error"]
    assert (err["code"], err["field"]) == ("invalid_field", "Idempotency-Key")
    await _nothing_changed(server, seq, 1)


# -- defect 10: route the exact point ---------------------------------------------------------
# Just inside 椒江区 (331002), 2e-8° from its border with 路桥区 (331004): rounded to 7
# decimals it lies across the border, in another county's township.
BORDER = (121.40322499511802, 28.58074701939501)


def _geo_locate(srv: Server, lon: float, lat: float,
                capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``dispatch geo locate LON LAT --config … --json``, in process."""
    capsys.readouterr()
    code = geo_cli.main(["locate", repr(lon), repr(lat), "--config", str(srv.config_path),
                         "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


async def test_a_border_point_is_routed_on_the_exact_point(server, capsys):
    router = server.state.runtime.router
    lon, lat = BORDER
    exact, rounded = router.locate(lon, lat), router.locate(round(lon, 7), round(lat, 7))
    # the point is one where rounding first changes the county and the team
    assert exact.county == "331002" and rounded.county == "331004"
    assert exact.team != rounded.team and exact.zone is None
    loc = validation.location({"lon": lon, "lat": lat})
    assert (loc["lon"], loc["lat"]) == (lon, lat)
    assert router.locate(loc["lon"], loc["lat"]).team == exact.team
    cli = _geo_locate(server, lon, lat, capsys)
    assert cli["team"] == exact.team and cli["county"] == "331002"
    status, ev = await server.call("POST", "/api/v1/events", "intake",
                                   json=intake_body(lon, lat))
    assert status == 201, ev
    assert (ev["team"], ev["county"], ev["township"]) == (cli["team"], cli["county"],
                                                          cli["township"])
    # rounded for display only; the state keeps the exact point
    assert (ev["location"]["lon"], ev["location"]["lat"]) == (round(lon, 7), round(lat, 7))
    stored = server.state.runtime.engine.get(ev["id"])["location"]
    assert (stored["lon"], stored["lat"]) == (lon, lat)


async def test_a_unit_position_is_kept_exact_and_shown_rounded(server):
    lon, lat = BORDER
    unit = next(iter(server.state.runtime.dataset.units))
    status, out = await server.call("PUT", f"/api/v1/units/{unit}/position", "admin",
                                    json={"lon": lon, "lat": lat})
    assert status == 200, out
    assert (out["lon"], out["lat"]) == (round(lon, 7), round(lat, 7))
    pos = server.state.runtime.units.position(unit, server.state.clock.now())
    assert (pos["lon"], pos["lat"]) == (lon, lat)
