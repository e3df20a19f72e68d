"""Writes ``journal_v1.jsonl`` (the v1 journal ``test_journal_formats`` reads) with the engine
of commit 66471a2, whose records hold the whole event in ``before``/``after``. Run it from an
export of that commit, with that export first on the path::

    mkdir /tmp/old && git archive 66471a2 | tar -x -C /tmp/old && cd /tmp/old
    PYTHONPATH=/tmp/old python <this file> <repo>/tests/store/data/journal_v1.jsonl
"""

import sys

sys.path.insert(0, "tests/core")
from dispatch_scenario import Scenario  # noqa: E402
from table_routing import T1, T2  # noqa: E402

s = Scenario()
a = s.create(T1)["id"]
s.at(70)  # respond breached, escalated township → county
s.act(a, "reassign", unit="u3", note="改派县队")
s.clock.advance(5)
s.act(a, "respond", note="出发")
b = s.create(T2)["id"]
s.act(b, "cancel", note="重复报警")
c = s.create(T1)["id"]
s.act(c, "escalate", note="现场冲突")
with open(sys.argv[1], "wb") as f:
    for r in s.records:
        f.write(r.to_json() + b"\n")
