"""What the intake door costs per request: the old hand-rolled checks, msgspec, pydantic v2.

``python -m bench.bench_validation [--quick]`` (well under 30 s) prints markdown tables:
µs per call (best of several interleaved rounds, one process, same bodies) from the
request's bytes to validated fields, for a valid ``POST /api/v1/events`` body and a few
invalid ones, and what each variant answered:

- **old door**: ``parse_json`` + ``intake`` as they were before issue 12
  (``bench/validation_baseline.py``: ``json.loads`` with hooks, a walk, hand field checks);
- **door now**: ``validation.parse_json`` + ``validation.intake`` (msgspec decode when it can,
  the same walk, ``msgspec.convert`` into ``schemas.Intake``, then category/coordinates/time);
- **door, pydantic v2**: the same door with ``pydantic`` in place of ``msgspec.convert``;
- **msgspec alone** / **pydantic alone**: ``msgspec.json.decode(type=Intake)`` and
  ``Intake.model_validate_json`` with no door rule around them (what the libraries cost by
  themselves; neither refuses lone surrogates, long integers or out-of-bound times).

It writes nothing; the numbers go into docs/design.md by hand with the date of the run.
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from bench import report
from bench import validation_baseline as old
from dispatch.server import schemas, validation

CATS: dict[str, Any] = {"street_vending": {}, "noise": {}}
DEPTH = 32
VALID = {"location": {"lon": 121.42, "lat": 28.66}, "category": "street_vending",
         "description": "测试事件：占道经营，东门菜场北侧", "source": "hotline", "priority": 2,
         "external_id": "HL-20261202-000123", "reporter": {"name": "张三", "phone": "13800000000"},
         "reported_at": "2026-12-02T07:30:00+08:00"}
BODIES: list[tuple[str, bytes]] = [
    ("valid", json.dumps(VALID, ensure_ascii=False).encode()),
    ("priority \"2\"", json.dumps({**VALID, "priority": "2"}, ensure_ascii=False).encode()),
    ("lon 181", json.dumps({**VALID, "location": {"lon": 181, "lat": 28.66}},
                           ensure_ascii=False).encode()),
    ("no location", json.dumps({k: v for k, v in VALID.items() if k != "location"},
                               ensure_ascii=False).encode()),
    ("description 2001", json.dumps({**VALID, "description": "长" * 2001},
                                    ensure_ascii=False).encode()),
]


def _text(n: int) -> Any:
    return Annotated[str, Field(max_length=n)]


class PLocation(BaseModel):
    model_config = ConfigDict(strict=True)
    lon: Annotated[float, Field(ge=-180, le=180)]
    lat: Annotated[float, Field(ge=-90, le=90)]
    crs: str = "wgs84"


class PIntake(BaseModel):
    """schemas.Intake, spelled for pydantic v2 (strict: no "2" → 2)."""

    model_config = ConfigDict(strict=True)
    location: PLocation
    category: _text(64)
    description: _text(schemas.MAX_DESCRIPTION) | None = None
    source: _text(64) | None = None
    priority: Annotated[int, Field(ge=1, le=3)] | None = None
    external_id: _text(128) | None = None
    reporter: dict[str, Any] | None = None
    reported_at: str | float | None = None


def _pydantic_door(body: bytes) -> dict[str, Any]:
    """validation.intake with pydantic where msgspec.convert is (same rules around it)."""
    data = validation.require_object(validation.parse_json(body, DEPTH))
    if "location" not in data:
        raise validation.ApiError(422, "invalid_field", "location is required", "location")
    try:
        req = PIntake.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise validation.ApiError(422, "invalid_field", f"{field}: {err['msg']}", field) \
            from None
    if req.category not in CATS:
        raise validation.ApiError(422, "invalid_field", "unknown category", "category")
    loc = req.location
    return {"location": validation.point(loc.lon, loc.lat, loc.crs, "location"),
            "category": req.category, "description": req.description or "",
            "source": req.source or "api", "priority": req.priority,
            "external_id": req.external_id, "reporter": req.reporter,
            "reported_at": validation.client_time({"reported_at": req.reported_at}, "reported_at",
                                                  "reported_at")}


_MSGSPEC_ALONE = msgspec.json.Decoder(schemas.Intake)
VARIANTS: list[tuple[str, Callable[[bytes], Any]]] = [
    ("old door (hand-rolled, HEAD before issue 12)",
     lambda b: old.intake(old.parse_json(b, DEPTH), CATS)),
    ("door now (msgspec)", lambda b: validation.intake(validation.parse_json(b, DEPTH), CATS)),
    ("door with pydantic v2 instead", _pydantic_door),
    ("msgspec alone (decode into Intake)", _MSGSPEC_ALONE.decode),
    ("pydantic v2 alone (model_validate_json)", PIntake.model_validate_json),
]
ERRORS = (validation.ApiError, old.ApiError, msgspec.ValidationError, pydantic.ValidationError)


def _call(fn: Callable[[bytes], Any], body: bytes) -> None:
    try:
        fn(body)
    except ERRORS:
        pass


def _outcome(fn: Callable[[bytes], Any], body: bytes) -> str:
    try:
        fn(body)
    except (validation.ApiError, old.ApiError) as exc:
        return f"{exc.status} {exc.field}"
    except (msgspec.ValidationError, pydantic.ValidationError):
        return "refused"
    return "ok"


def measure(quick: bool) -> tuple[list[list[str]], list[list[str]]]:
    """Best of ``repeat`` rounds; each round times every variant on every body in turn, so a
    busy spell on the shared machine hits all of them rather than one."""
    n, repeat = (300, 3) if quick else (2000, 7)
    best: dict[tuple[int, int], float] = {}
    for _ in range(repeat):
        for i, (_, fn) in enumerate(VARIANTS):
            for j, (_, body) in enumerate(BODIES):
                t = timeit.timeit(lambda fn=fn, body=body: _call(fn, body), number=n)
                best[i, j] = min(best.get((i, j), t), t)
    head = [name for name, _ in BODIES]
    rows, outcomes = [["µs per call", *head]], [["outcome", *head]]
    for i, (label, fn) in enumerate(VARIANTS):
        rows.append([label, *(f"{best[i, j] / n * 1e6:,.1f}" for j in range(len(BODIES)))])
        outcomes.append([label, *(_outcome(fn, body) for _, body in BODIES)])
    return rows, outcomes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer calls (a noisier table)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows, outcomes = measure(args.quick)
    print(f"## Intake validation ({report.machine()}; msgspec {msgspec.__version__}, "
          f"pydantic {pydantic.VERSION})\n")
    print(report.md_table(rows))
    print()
    print(report.md_table(outcomes))
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
