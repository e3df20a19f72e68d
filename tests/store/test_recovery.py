"""Crash recovery: SIGKILL mid-load loses no answered event, and a restart continues.

Deadlines that fall due while the server is down: tests/server/test_runtime_timers.py::
test_a_deadline_passed_while_down_fires_once_at_start_up (it drives ``Runtime`` itself).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_backends import created_event_ids

from dispatch.audit import verify_journal

HERE = Path(__file__).parent
T0 = 1_767_225_600.0


def run(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HERE / "loadgen_proc.py"), str(db), *args],
                          capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.slow
async def test_sigkill_mid_load_loses_no_answered_event(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    p = subprocess.Popen([sys.executable, str(HERE / "loadgen_proc.py"), str(db), "200000"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    answered: list[str] = []
    deadline = time.monotonic() + 30
    while len(answered) < 3000 and time.monotonic() < deadline:
        line = p.stdout.readline()
        if line.startswith("ANSWERED"):
            answered.append(line.split()[1])
    os.kill(p.pid, signal.SIGKILL)
    rest = p.stdout.read()  # lines already written before the kill were answered too
    answered += [ln.split()[1] for ln in rest.splitlines() if ln.startswith("ANSWERED")]
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert len(answered) >= 3000
    stored = await created_event_ids(db)
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} answered events lost"
    assert verify_journal(str(db))[0]
    # a restart continues the journal and the id counter
    out = run(db, "1", "--mode", "one", "--clock", str(T0 + 1))
    new_id = out.stdout.split("ANSWERED ")[1].split()[0]
    assert new_id not in stored and int(new_id[1:]) == len(stored) + 1
