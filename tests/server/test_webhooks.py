"""Feedback webhooks (contract v2 §8) on a real server with a real receiver on loopback.

Retries until a 2xx with the same delivery id, in seq order, signed; the same JSON the
WebSocket pushes; source and region filters; redelivery; the admin endpoints and their
refusals; the metrics. Backoffs are short through ``webhooks_options`` (the contract's bounds
are upper bounds: from at most 1 s, to at most 60 s).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from dispatch.config import Config, ConfigError, load_config
from dispatch.server import scope
from dispatch.server.app import build_app
from dispatch.server.webhooks import backoff_s, delivery_id, sign, webhooks_of
from tests.server.conftest import Server, intake_body, point_in, start_server, write_config
from tests.server.webhook_receiver import Receiver, check_stream

SECRET = "s3cret-for-tests"
FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "timeout_s": 2, "lease_s": 2}
HUANGYAN, JIAOJIANG = "331003", "331002"


def hook(receiver: Receiver, hid: str = "wh", **kw: Any) -> dict[str, Any]:
    return {"id": hid, "url": receiver.url, "secret": SECRET, **kw}


async def journal_seqs(srv: Server, covers: Any = None) -> list[int]:
    """Every seq of the journal (those ``covers(record)`` keeps)."""
    recs = await srv.state.runtime.store.read()
    return [r.seq for r in recs if covers is None or covers(r)]


async def serve(tmp: Path, *hooks: dict[str, Any]) -> Server:
    return await start_server(tmp, webhooks=list(hooks), webhooks_options=FAST)


async def close(srv: Server) -> None:
    await srv.session.close()
    await srv.runner.cleanup()


# -- the parts ---------------------------------------------------------------------------------
def test_signature_backoff_and_delivery_id():
    assert sign(b"key", 1700000000, b'{"a":1}') == (
        "sha256=" + __import__("hmac").new(b"key", b'1700000000.{"a":1}', "sha256").hexdigest())
    assert [backoff_s(n, 1.0, 60.0) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff_s(10_000, 1.0, 60.0) == 60.0  # never overflows, never gives up
    a = delivery_id("wh", "ab" * 32)
    assert a == delivery_id("wh", "ab" * 32) != delivery_id("wh2", "ab" * 32)
    assert len(a) == 36 and a.count("-") == 4


@pytest.mark.parametrize(("hooks", "opts", "key"), [
    ({"id": "a"}, {}, "webhooks"),
    (["a"], {}, "webhooks[0]"),
    ([{"url": "http://x/", "secret": "s"}], {}, "webhooks[0].id"),
    ([{"id": "a b", "url": "http://x/", "secret": "s"}], {}, "webhooks[0].id"),
    ([{"id": "a", "url": "http://x/", "secret": "s"},
      {"id": "a", "url": "http://y/", "secret": "s"}], {}, "webhooks[1].id"),
    ([{"id": "a", "url": "ftp://x/", "secret": "s"}], {}, "webhooks[0].url"),
    ([{"id": "a", "url": "http:///nohost", "secret": "s"}], {}, "webhooks[0].url"),
    ([{"id": "a", "url": "http://x/", "secret": ""}], {}, "webhooks[0].secret"),
    ([{"id": "a", "url": "http://x/"}], {}, "webhooks[0].secret"),
    ([{"id": "a", "url": "http://x/", "secret": "s", "source": 3}], {}, "webhooks[0].source"),
    ([{"id": "a", "url": "http://x/", "secret": "s", "colour": "red"}], {},
     "webhooks[0].colour"),
    ([], {"retry_initial_s": 2}, "webhooks_options.retry_initial_s"),
    ([], {"retry_max_s": 61}, "webhooks_options.retry_max_s"),
    ([], {"retry_initial_s": 0.5, "retry_max_s": 0.1}, "webhooks_options.retry_max_s"),
    ([], {"timeout_s": 0}, "webhooks_options.timeout_s"),
    ([], {"bogus": 1}, "webhooks_options.bogus"),
])
def test_bad_webhooks_config_names_the_key(tmp_path, hooks, opts, key):
    path = write_config(tmp_path, webhooks=hooks, webhooks_options=opts)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == key, str(e.value)


def test_an_unknown_region_stops_start_up_naming_the_key(tmp_path):
    cfg = load_config(write_config(tmp_path, webhooks=[
        {"id": "a", "url": "http://127.0.0.1:9/", "secret": "s", "region": HUANGYAN},
        {"id": "b", "url": "http://127.0.0.1:9/", "secret": "s", "region": "999999"}]))
    with pytest.raises(ConfigError) as e:
        build_app(cfg)
    assert e.value.key == "webhooks[1].region" and "999999" in str(e.value)


def test_departments_naming_a_webhook_add_their_transferred_events(tmp_path):
    cfg = load_config(write_config(tmp_path, webhooks=[
        {"id": "a", "url": "http://127.0.0.1:9/", "secret": "s", "source": "hotline"}]))
    raw = {**cfg.raw, "departments": [{"id": "d-water", "name": "水利局", "webhook": "a"},
                                      {"id": "d-other", "name": "x"}, "junk", {"webhook": 3}]}
    (h,) = webhooks_of(Config(raw=raw, base_dir=cfg.base_dir))
    assert h.departments == frozenset({"d-water"})
    app_ev = {"source": "app", "county": HUANGYAN}
    assert not scope.webhook_covers("hotline", None, h.departments, app_ev, {})
    moved = {**app_ev, "transfer": {"department": "d-water", "at": 1.0}}
    assert scope.webhook_covers("hotline", None, h.departments, moved, {})
    # the change that ends a transfer still reaches it (before names the department)
    assert scope.webhook_covers("hotline", None, h.departments, app_ev, moved)
    other = {**app_ev, "transfer": {"department": "d-other"}}
    assert not scope.webhook_covers("hotline", None, h.departments, other, {})
    assert not scope.webhook_covers("hotline", None, h.departments,
                                    {**app_ev, "transfer": "d-water"}, {})  # malformed


# -- end to end --------------------------------------------------------------------------------
async def make_changes(srv: Server, n: int, source: str = "hotline",
                       county: str = HUANGYAN) -> list[str]:
    """``n`` events created, each responded to: 2n change messages or more."""
    ids = []
    for i in range(n):
        lon, lat = point_in(srv, county, skip=i % 3)
        st, ev = await srv.call("POST", "/api/v1/events", "intake",
                                json=intake_body(lon, lat, source=source,
                                                 external_id=f"{source}-{county}-{i}"))
        assert st == 201, ev
        st, ev = await srv.call("POST", f"/api/v1/events/{ev['id']}/respond", "city", json={})
        assert st == 200, ev
        ids.append(ev["id"])
    return ids


async def test_failures_then_every_message_in_order_signed_same_as_the_socket(tmp_path):
    rx = await Receiver(fail_first=4).start()
    srv = await serve(tmp_path, hook(rx))
    try:
        ws = await websockets.connect(srv.ws_url, additional_headers=srv.auth("admin"))
        snap = orjson.loads(await ws.recv())
        await make_changes(srv, 4)
        seqs = await journal_seqs(srv)
        await rx.wait_for(set(seqs))
        check_stream(rx.got, seqs, SECRET)
        assert rx.seqs() == seqs  # no duplicates without a restart
        # the first message was refused 4 times (backing off), then taken: the same id
        assert [d.seq for d in rx.refused] == [seqs[0]] * 4
        assert {d.id for d in rx.refused} == {rx.got[0].id}
        tries = rx.refused + rx.got[:1]
        gaps = [b.at - a.at for a, b in zip(tries, tries[1:], strict=False)]
        assert gaps[0] >= 0.04 and gaps[-1] >= 0.15, gaps  # 0.05, 0.1, 0.2, 0.2
        # the body is the JSON the socket pushes for the same change
        pushed = {}
        while len(pushed) < len(seqs):
            m = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if "seq" in m and m["seq"] > snap["seq"]:
                pushed[m["seq"]] = m
        await ws.close()
        for d in rx.got:
            a, b = d.message, pushed[d.seq]
            for m in (a, b):
                m.pop("server_time")
                m["event"].pop("timer_state")
            assert a == b
        # metrics: deliveries and retries of this webhook
        st, text = await srv.call("GET", "/metrics", "admin")
        body = text.decode()
        assert f'dispatch_webhook_deliveries_total{{webhook="wh"}} {float(len(seqs))}' in body
        assert 'dispatch_webhook_retries_total{webhook="wh"} 4.0' in body
        assert 'dispatch_webhook_oldest_pending_age_seconds{webhook="wh"} 0.0' in body
    finally:
        await close(srv)
        await rx.stop()


async def test_source_and_region_filters(tmp_path):
    rx_all, rx_app, rx_hy = Receiver(), Receiver(), Receiver()
    for r in (rx_all, rx_app, rx_hy):
        await r.start()
    srv = await serve(tmp_path, hook(rx_all, "all"), hook(rx_app, "app", source="app"),
                      hook(rx_hy, "hy", region=HUANGYAN, source="hotline"))
    try:
        await make_changes(srv, 2, source="hotline", county=HUANGYAN)
        await make_changes(srv, 2, source="app", county=HUANGYAN)
        await make_changes(srv, 2, source="hotline", county=JIAOJIANG)
        every = await journal_seqs(srv)
        app = await journal_seqs(srv, lambda r: r.after["source"] == "app")
        hy = await journal_seqs(srv, lambda r: r.after["source"] == "hotline"
                                and r.after["county"] == HUANGYAN)
        assert every and app and hy and len(app) < len(every) and len(hy) < len(every)
        await rx_all.wait_for(set(every))
        await rx_app.wait_for(set(app))
        await rx_hy.wait_for(set(hy))
        await asyncio.sleep(0.3)  # nothing else comes
        check_stream(rx_all.got, every, SECRET)
        check_stream(rx_app.got, app, SECRET)
        check_stream(rx_hy.got, hy, SECRET)
        assert {d.message["event"]["source"] for d in rx_app.got} == {"app"}
    finally:
        await close(srv)
        for r in (rx_all, rx_app, rx_hy):
            await r.stop()


async def test_deliveries_show_the_pending_and_redeliver_sends_again(tmp_path):
    rx = await Receiver(failing=True).start()
    srv = await serve(tmp_path, hook(rx))
    try:
        await make_changes(srv, 2)
        seqs = await journal_seqs(srv)
        while len(rx.refused) < 3:
            await asyncio.sleep(0.02)
        st, d = await srv.call("GET", "/api/v1/webhooks/wh/deliveries", "admin")
        assert st == 200, d
        assert d["cursor"] == 0 and d["last_delivered_seq"] is None
        assert d["journal_seq"] == seqs[-1] and not d["more"]
        assert [p["seq"] for p in d["pending"]] == seqs
        head = d["pending"][0]
        assert head["attempts"] >= 3 and head["last_error"] == "HTTP 500"
        assert head["delivery"] == rx.refused[0].id and d["retrying"]["seq"] == seqs[0]
        assert all(p["attempts"] == 0 for p in d["pending"][1:])
        assert d["oldest_pending_age_s"] >= 0
        st, d = await srv.call("GET", "/api/v1/webhooks/wh/deliveries?limit=1", "admin")
        assert [p["seq"] for p in d["pending"]] == seqs[:1] and d["more"]

        rx.failing = False
        await rx.wait_for(set(seqs))
        for _ in range(50):
            st, d = await srv.call("GET", "/api/v1/webhooks/wh/deliveries", "admin")
            if d["cursor"] == seqs[-1]:
                break
            await asyncio.sleep(0.05)
        assert d["pending"] == [] and d["last_delivered_seq"] == seqs[-1] and not d["retrying"]

        first = {x.seq: x.id for x in rx.got}
        n = len(rx.got)
        st, d = await srv.call("POST", "/api/v1/webhooks/wh/redeliver", "admin",
                               json={"from_seq": seqs[2]})
        assert st == 200, d
        assert d["cursor"] == seqs[2] - 1
        await asyncio.sleep(0.1)
        again = set(seqs[2:])
        end = asyncio.get_running_loop().time() + 10
        while {x.seq for x in rx.got[n:]} != again:
            assert asyncio.get_running_loop().time() < end, rx.seqs()
            await asyncio.sleep(0.02)
        assert [x.seq for x in rx.got[n:]] == seqs[2:]  # in order, once each
        assert all(x.id == first[x.seq] for x in rx.got[n:])  # the same message, same id
        check_stream(rx.got, seqs, SECRET)
    finally:
        await close(srv)
        await rx.stop()


async def test_admin_only_and_bad_input(tmp_path):
    rx = await Receiver().start()
    srv = await serve(tmp_path, hook(rx))
    try:
        await make_changes(srv, 1)
        for who in ("city", "huangyan", "supervisor", "intake"):
            for wid in ("wh", "nope"):  # the same 403 whatever the id
                st, body = await srv.call("GET", f"/api/v1/webhooks/{wid}/deliveries", who)
                assert st == 403 and body["error"]["code"] == "forbidden", (who, body)
                st, body = await srv.call("POST", f"/api/v1/webhooks/{wid}/redeliver", who,
                                          json={"from_seq": 1})
                assert st == 403, (who, body)
        st, body = await srv.call("GET", "/api/v1/webhooks/wh/deliveries", "admin",
                                  headers={"Authorization": "Bearer wrong-token"})
        assert st == 401
        st, body = await srv.call("GET", "/api/v1/webhooks/nope/deliveries", "admin")
        assert st == 404 and body["error"]["code"] == "not_found"
        st, body = await srv.call("POST", "/api/v1/webhooks/nope/redeliver", "admin",
                                  json={"from_seq": 1})
        assert st == 404
        for q in ("limit=0", "limit=1001", "limit=x"):
            st, body = await srv.call("GET", f"/api/v1/webhooks/wh/deliveries?{q}", "admin")
            assert st == 422 and body["error"]["field"] == "limit", body
        last = srv.state.runtime.view.last_seq
        for bad in ({}, {"from_seq": 0}, {"from_seq": "1"}, {"from_seq": 1.5},
                    {"from_seq": last + 1}, [1]):
            st, body = await srv.call("POST", "/api/v1/webhooks/wh/redeliver", "admin",
                                      json=bad)
            assert st == 422, (bad, body)
            assert body["error"]["field"] in ("from_seq", None), body
        st, body = await srv.call("POST", "/api/v1/webhooks/wh/redeliver", "admin",
                                  data=b"{", headers={"Content-Type": "application/json"})
        assert st == 400
        st, body = await srv.call("POST", "/api/v1/webhooks/wh/redeliver", "admin",
                                  data=b"from_seq=1")
        assert st == 415
        st, body = await srv.call("POST", "/api/v1/webhooks/wh/redeliver", "admin",
                                  json={"from_seq": 10 ** 16})
        assert st in (400, 422), body
    finally:
        await close(srv)
        await rx.stop()
