"""Tampering with the journal is detected and the first bad record is named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from dispatch_scenario import Scenario
from table_routing import T1

from dispatch.audit import verify_journal, verify_main
from dispatch.store.sqlite import SqliteStore


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """A journal of 8 records: 2 events and their actions."""
    sc = Scenario()
    a = sc.create(T1)["id"]
    b = sc.create(T1)["id"]
    for action in ("respond", "depart", "arrive"):
        sc.act(a, action)
    sc.act(b, "cancel")
    sc.create(T1)
    sc.at(1000)
    path = tmp_path / "journal.db"
    s = SqliteStore(str(path))
    await s.open()
    for r in sc.records:
        await s.append([r])
    await s.close()
    assert len(sc.records) >= 8
    return path


def sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for st in statements:
            conn.execute(st)
    conn.close()


def test_intact(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_journal(str(db))[0]
    assert verify_main(str(db)) == 0
    assert capsys.readouterr().out.startswith("OK")


def test_edited_record(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql(db, "UPDATE journal SET data = replace(data, '\"actor\":\"field-1\"', "
            "'\"actor\":\"someone\"') WHERE seq = 4")
    assert verify_journal(str(db)) == (
        False, "record 4 was altered (its content does not match its hash)", 4)
    assert verify_main(str(db)) == 1
    assert "record 4" in capsys.readouterr().out


def test_edited_record_with_its_hash_recomputed(db: Path) -> None:
    import hashlib
    conn = sqlite3.connect(db)
    data = conn.execute("SELECT data FROM journal WHERE seq = 4").fetchone()[0]
    forged = bytes(data).replace(b'"actor":"field-1"', b'"actor":"someone"')
    with conn:
        conn.execute("UPDATE journal SET data = ?, hash = ? WHERE seq = 4",
                     (forged, hashlib.sha256(forged).hexdigest()))
    conn.close()
    ok, message, bad = verify_journal(str(db))
    assert not ok and bad == 5 and "link" in message  # the next record no longer links


def test_removed_record(db: Path) -> None:
    sql(db, "DELETE FROM journal WHERE seq = 3")
    ok, message, bad = verify_journal(str(db))
    assert (ok, bad) == (False, 3) and "missing" in message


def test_swapped_records(db: Path) -> None:
    conn = sqlite3.connect(db)
    r3 = conn.execute("SELECT hash, data FROM journal WHERE seq = 3").fetchone()
    r4 = conn.execute("SELECT hash, data FROM journal WHERE seq = 4").fetchone()
    with conn:
        conn.execute("UPDATE journal SET hash = ?, data = ? WHERE seq = 3", r4)
        conn.execute("UPDATE journal SET hash = ?, data = ? WHERE seq = 4", r3)
    conn.close()
    assert verify_journal(str(db))[2] == 3


def test_renumbered_swap(db: Path) -> None:
    sql(db, "UPDATE journal SET seq = -4 WHERE seq = 4",
        "UPDATE journal SET seq = 4 WHERE seq = 3", "UPDATE journal SET seq = 3 WHERE seq = -4")
    assert verify_journal(str(db))[2] == 3


def test_removed_tail(db: Path) -> None:
    last = sqlite3.connect(db).execute("SELECT max(seq) FROM journal").fetchone()[0]
    sql(db, f"DELETE FROM journal WHERE seq = {last}")
    ok, message, bad = verify_journal(str(db))
    assert (ok, bad) == (False, last) and "missing" in message


def test_bytes_edited_in_the_file(db: Path) -> None:
    raw = db.read_bytes()
    i = raw.index(b'"actor":"field-1"')
    db.write_bytes(raw[:i] + b'"actor":"field-7"' + raw[i + 17:])
    ok, message, bad = verify_journal(str(db))
    assert not ok and bad is not None and "altered" in message


def test_missing_file(tmp_path: Path) -> None:
    assert verify_main(str(tmp_path / "nope.db")) == 1
