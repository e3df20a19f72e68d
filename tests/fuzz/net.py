"""The fuzzing net's server: the toy data set (tests/geo/toy.py), a token of every role.

County A is ``ca`` (townships ``ta1``..``ta3``), county B is ``cb``. ``POINT_A`` lies in the
plain township ``ta1`` (team ``t-ta1``, units u-0005..u-0007), ``POINT_B`` in ``tb1`` (team
``t-tb1``, units u-0009, u-0010). Rate limits are lifted so that the fuzzers measure the
handlers, not the token bucket (which has tests of its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.geo import toy
from tests.server.conftest import dump_config, free_port

POINT_A = (120.002, 28.002)
POINT_B = (120.035, 28.005)
COUNTY_A, COUNTY_B = "ca", "cb"
UNITS_A = ("u-0005", "u-0006", "u-0007")  # team t-ta1
UNIT_B = "u-0009"  # team t-tb1

# who → token spec. "field-*" tokens are bound to county A's units (whichever the event gets).
TOKENS: dict[str, dict[str, Any]] = {
    "admin": {"role": "admin"},
    "op-city": {"role": "operator", "region": "c"},
    "op-a": {"role": "operator", "region": COUNTY_A},
    "op-b": {"role": "operator", "region": COUNTY_B},
    "op-town": {"role": "operator", "region": "ta1"},
    "sup-city": {"role": "supervisor", "region": "c"},
    "sup-a": {"role": "supervisor", "region": COUNTY_A},
    "sup-b": {"role": "supervisor", "region": COUNTY_B},
    **{f"field-{u}": {"role": "field", "unit": u} for u in (*UNITS_A, UNIT_B)},
    "intake": {"role": "intake"},
    "intake-2": {"role": "intake"},
    # contract §8: two departments' tokens (their config below)
    "dept-a": {"role": "department", "department": "d-a"},
    "dept-b": {"role": "department", "department": "d-b"},
}
DEPARTMENTS = [{"id": "d-a", "name": "部门A"}, {"id": "d-b", "name": "部门B"}]


def token(who: str) -> str:
    return f"t-net-{who}"


def auth(who: str | None) -> dict[str, str]:
    """The Authorization header of ``who`` (None: no header; "bogus": an unknown token)."""
    if who is None:
        return {}
    if who == "bogus":
        return {"Authorization": "Bearer t-net-nobody"}
    return {"Authorization": f"Bearer {token(who)}"}


def write_config(tmp: Path, **sections: Any) -> Path:
    """A config file: toy data, a temp SQLite journal, every role's token, no rate limits."""
    regions, zones, teams = toy.write(tmp / "geo")
    cfg: dict[str, Any] = {
        "store": str(tmp / "journal.db"),
        "store_options": {"synchronous": "NORMAL"},
        "geo": {"regions": str(regions), "zones": str(zones), "teams": str(teams)},
        "auth": {"tokens": [{"token": token(w), "name": w, **spec}
                            for w, spec in TOKENS.items()],
                 "token_file": str(tmp / "tokens.yaml")},
        "limits": {"rate_per_s": 1_000_000, "rate_burst": 1_000_000,
                   "auth_failures_per_min": 1_000_000, "auth_failures_burst": 1_000_000},
        "ui": {"center": [120.03, 28.02], "zoom": 12},
        "departments": DEPARTMENTS,
    }
    return dump_config(tmp, cfg, sections)


def serve(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``dispatch serve --config FILE --port N`` as a subprocess; returns once it answers."""
    import requests

    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dispatch", "serve", "--config", str(config),
             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(url + "/api/openapi.json", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not answer within 60 s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def intake_body(point: tuple[float, float], **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"location": {"lon": point[0], "lat": point[1]},
                            "category": "street_vending", "description": "网测试",
                            "source": "hotline"}
    body.update(kw)
    return body
