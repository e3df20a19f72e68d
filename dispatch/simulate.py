"""A simulated city for demos: events at believable places, units that drive and act.

How it works: the simulator is an ordinary API client (aiohttp for HTTP, ``websockets`` for
the live feed), so the same code drives the server it runs in (``dispatch serve --demo``, on
loopback with an internal admin token) and any other server (``dispatch simulate --url URL
--token T``). It reads the zones and townships from the API, creates events by category at
the places they happen (illegal fishing on the reservoir, vending at markets, muck trucks on
the roads between county seats, the rest in towns), and for each dispatched event plays its
unit: respond after a human delay, depart, drive toward the event at road-like speed
reporting its position every few seconds, arrive, work, resolve. Delays are drawn so that
most stages are on time and some are late, so breaches and escalations happen on screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import secrets
from typing import Any

import aiohttp
import websockets
from shapely.geometry import Point, shape

log = logging.getLogger("dispatch.simulate")

# (category, weight, where): where ∈ reservoir | market | road | town | anywhere
MIX = [
    ("street_vending", 22, "market"), ("illegal_parking", 14, "town"),
    ("cooking_fumes", 10, "town"), ("noise", 10, "town"), ("muck_truck", 12, "road"),
    ("illegal_construction", 10, "anywhere"), ("garbage_dumping", 8, "anywhere"),
    ("outdoor_advertising", 6, "town"), ("illegal_fishing", 6, "reservoir"),
    ("illegal_sand_mining", 2, "anywhere"),
]
DESCRIPTIONS = {
    "street_vending": "流动摊贩占道经营，影响通行", "illegal_parking": "车辆违规停放堵塞消防通道",
    "cooking_fumes": "餐饮店油烟直排扰民", "noise": "夜间施工噪声扰民",
    "muck_truck": "渣土车沿路撒漏", "illegal_construction": "疑似违法搭建",
    "garbage_dumping": "建筑垃圾乱倒", "outdoor_advertising": "违规设置户外广告牌",
    "illegal_fishing": "库区有人非法捕捞", "illegal_sand_mining": "河道非法采砂",
}
SPEED_MPS = {"officer": 8.0, "vehicle": 11.0, "boat": 7.0}  # ~30-40 km/h on local roads
SOURCES = ("hotline", "grid", "video_ai", "patrol", "app")


def _haversine(a: tuple[float, float], b: tuple[float, float]) -> float:
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371008.8 * math.asin(math.sqrt(h))


def _sample_in(geom: Any, rng: random.Random) -> tuple[float, float]:
    minx, miny, maxx, maxy = geom.bounds
    for _ in range(200):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if geom.contains(Point(x, y)):
            return round(x, 6), round(y, 6)
    p = geom.representative_point()
    return round(p.x, 6), round(p.y, 6)


class Places:
    """Where each kind of event happens, from the server's own zones and townships."""

    def __init__(self, zones: dict[str, Any], townships: dict[str, Any],
                 counties: dict[str, Any]) -> None:
        self.reservoirs = [shape(f["geometry"]) for f in zones["features"]
                           if f["properties"].get("kind") == "reservoir"]
        self.markets = [shape(f["geometry"]) for f in zones["features"]
                        if f["properties"].get("kind") == "market"]
        self.towns = [shape(f["geometry"]) for f in townships["features"]]
        self.urban = [shape(f["geometry"]) for f in townships["features"]
                      if str(f["properties"].get("name", "")).endswith("街道")] or self.towns
        self.seats = [shape(f["geometry"]).representative_point() for f in counties["features"]]

    def sample(self, where: str, rng: random.Random) -> tuple[float, float]:
        if where == "reservoir" and self.reservoirs:
            return _sample_in(rng.choice(self.reservoirs), rng)
        if where == "market" and self.markets and rng.random() < 0.6:
            return _sample_in(rng.choice(self.markets), rng)
        if where == "road" and len(self.seats) >= 2:
            a, b = rng.sample(self.seats, 2)
            t = rng.random()
            lon = a.x + (b.x - a.x) * t + rng.gauss(0, 0.002)
            lat = a.y + (b.y - a.y) * t + rng.gauss(0, 0.002)
            if any(town.covers(Point(lon, lat)) for town in self.towns):
                return round(lon, 6), round(lat, 6)
        if where in ("market", "town"):
            return _sample_in(rng.choice(self.urban), rng)
        return _sample_in(rng.choice(self.towns), rng)


class Simulator:
    """Creates events and plays the dispatched units, through the public API only."""

    def __init__(self, url: str, token: str, rate_per_min: float = 6.0,
                 seed: int | None = None, late_share: float = 0.2,
                 time_scale: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.rate_per_min = rate_per_min
        self.rng = random.Random(seed)
        self.late_share = late_share
        self.time_scale = time_scale  # < 1 plays the city faster (tests)
        self.session: aiohttp.ClientSession | None = None
        self.places: Places | None = None
        self.units: dict[str, dict[str, Any]] = {}
        self.playing: set[str] = set()
        self.mix = MIX  # narrowed to the server's own categories on start
        self.tasks: set[asyncio.Task[None]] = set()
        self.created = 0
        self.rejected = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _get(self, path: str) -> Any:
        assert self.session is not None
        async with self.session.get(self.url + path, headers=self.headers) as r:
            r.raise_for_status()
            return await r.json()

    async def _send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        assert self.session is not None
        async with self.session.request(method, self.url + path, json=body,
                                        headers=self.headers) as r:
            data = await r.json()
            if r.status >= 400 and r.status != 409:
                log.debug("%s %s → %s %s", method, path, r.status, data)
            return data

    async def run(self, duration_s: float | None = None) -> None:
        """Run until cancelled (or for ``duration_s``)."""
        async with aiohttp.ClientSession() as self.session:
            zones = await self._get("/api/v1/zones")
            towns = await self._get("/api/v1/regions?level=township")
            counties = await self._get("/api/v1/regions?level=county")
            self.places = Places(zones, towns, counties)
            self.units = {u["id"]: u for u in (await self._get("/api/v1/units"))["units"]}
            known = {c["id"] for c in (await self._get("/api/v1/categories"))["categories"]}
            self.mix = [m for m in MIX if m[0] in known] or [(sorted(known)[0], 1, "anywhere")]
            feed = asyncio.create_task(self._feed())
            try:
                await self._intake(duration_s)
            finally:
                feed.cancel()
                for t in list(self.tasks):
                    t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed

    async def _intake(self, duration_s: float | None) -> None:
        """Post events until ``duration_s`` has passed (forever if None).

        The run ends between two requests, never in the middle of one: an
        intake the server has answered is always counted.
        """
        assert self.places is not None
        loop = asyncio.get_running_loop()
        end = None if duration_s is None else loop.time() + duration_s
        cats = [m[0] for m in self.mix]
        weights = [m[1] for m in self.mix]
        where = {m[0]: m[2] for m in self.mix}
        while True:
            gap = self.rng.expovariate(self.rate_per_min / 60.0) * self.time_scale
            if end is not None and loop.time() + gap >= end:
                await asyncio.sleep(max(0.0, end - loop.time()))
                return
            await asyncio.sleep(gap)
            cat = self.rng.choices(cats, weights)[0]
            lon, lat = self.places.sample(where[cat], self.rng)
            body = {"location": {"lon": lon, "lat": lat, "crs": "wgs84"}, "category": cat,
                    "description": DESCRIPTIONS.get(cat, ""),
                    "source": self.rng.choice(SOURCES),
                    "external_id": f"sim-{secrets.token_hex(6)}"}
            data = await self._send("POST", "/api/v1/events", body)
            if isinstance(data, dict) and "id" in data:
                self.created += 1
            else:
                self.rejected += 1
                log.info("intake refused a simulated event: %s", data)

    async def _feed(self) -> None:
        ws_url = self.url.replace("http", "ws", 1) + "/ws"
        backoff = 1.0
        while True:
            try:
                async with websockets.connect(
                        ws_url, additional_headers=self.headers, max_size=None) as ws:
                    backoff = 1.0
                    async for raw in ws:
                        self._on_message(json.loads(raw))
            except (OSError, websockets.WebSocketException):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def _on_message(self, msg: dict[str, Any]) -> None:
        events = msg.get("events") if msg.get("type") == "snapshot" else [msg.get("event")]
        for ev in events or []:
            if not ev or ev.get("status") != "dispatched" or not ev.get("unit"):
                continue
            key = f"{ev['id']}:{ev.get('version')}"
            if ev["id"] in self.playing:
                continue
            self.playing.add(ev["id"])
            t = asyncio.create_task(self._play(ev), name=f"play-{key}")
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.time_scale)

    def _delay(self, window_s: float, share: float) -> float:
        """Mostly within ``share`` of the window, sometimes late."""
        if self.rng.random() < self.late_share:
            return window_s * self.rng.uniform(1.05, 1.6)
        return window_s * share * self.rng.uniform(0.2, 1.0)

    async def _play(self, ev: dict[str, Any]) -> None:
        eid, unit_id = ev["id"], ev["unit"]
        try:
            unit = self.units.get(unit_id) or {"lon": ev["location"]["lon"],
                                               "lat": ev["location"]["lat"], "kind": "vehicle"}
            await self._sleep(self._delay(60, 0.6))
            if not await self._act(eid, "respond", unit_id):
                return
            await self._sleep(self._delay(120, 0.6))
            if not await self._act(eid, "depart", unit_id):
                return
            here = (unit["lon"], unit["lat"])
            goal = (ev["location"]["lon"], ev["location"]["lat"])
            speed = SPEED_MPS.get(unit.get("kind", "vehicle"), 9.0) * self.rng.uniform(0.6, 1.2)
            while (dist := _haversine(here, goal)) > 30:
                step = min(1.0, speed * 5.0 / dist)
                here = (here[0] + (goal[0] - here[0]) * step, here[1] + (goal[1] - here[1]) * step)
                await self._send("PUT", f"/api/v1/units/{unit_id}/position",
                                 {"lon": round(here[0], 6), "lat": round(here[1], 6),
                                  "accuracy_m": 10})
                await self._sleep(5.0)
            unit["lon"], unit["lat"] = here
            if not await self._act(eid, "arrive", unit_id):
                return
            await self._sleep(self.rng.uniform(60, 600))
            await self._act(eid, "resolve", unit_id, note="已处置 handled")
        finally:
            self.playing.discard(eid)

    async def _act(self, eid: str, action: str, unit_id: str, note: str | None = None) -> bool:
        body: dict[str, Any] = {"note": note} if note else {}
        data = await self._send("POST", f"/api/v1/events/{eid}/{action}", body)
        ev = data.get("event", data) if isinstance(data, dict) else {}
        return bool(ev) and ev.get("unit") == unit_id and ev.get("status") not in (
            "cancelled", None)


async def run_external(url: str, token: str, rate_per_min: float = 6.0,
                       duration_s: float | None = None) -> int:
    """``dispatch simulate``: drive any server through its public API."""
    sim = Simulator(url, token, rate_per_min)
    print(f"simulating {rate_per_min:g} events/min against {url} (Ctrl-C stops)", flush=True)
    try:
        await sim.run(duration_s)
    except aiohttp.ClientResponseError as exc:
        print(f"dispatch simulate: {exc.status} {exc.message} — is the token an admin or "
              f"city operator?", flush=True)
        return 1
    print(f"created {sim.created} events", flush=True)
    return 0


def attach_demo(app: Any, rate_per_min: float = 6.0) -> None:
    """``dispatch serve --demo``: run the simulator inside the server, over loopback."""
    from dispatch.config import TokenSpec, hash_token
    from dispatch.server.app import STATE

    state = app[STATE]
    token = secrets.token_urlsafe(24)
    spec = TokenSpec(digest=hash_token(token), role="admin", region=None, unit=None,
                     name="demo-simulator")
    state.tokens.add(spec)
    holder: dict[str, asyncio.Task[None]] = {}

    async def start(app: Any) -> None:
        url = f"http://{state.config.host}:{state.config.port}"
        if state.config.host in ("0.0.0.0", "::"):
            url = f"http://127.0.0.1:{state.config.port}"

        async def later() -> None:
            await asyncio.sleep(1.0)  # the port is bound once start-up hooks have run
            await Simulator(url, token, rate_per_min).run()

        holder["t"] = asyncio.create_task(later(), name="demo-simulator")

    async def stop(app: Any) -> None:
        t = holder.get("t")
        if t is not None:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    app.on_startup.append(start)
    app.on_shutdown.insert(0, stop)
