"""``dispatch audit verify``: check that the journal is an unbroken SHA-256 chain.

Every record carries the hash of the one before it, so an edited, removed or reordered
record breaks the chain at that record; the ``head`` row (last seq and hash, written in the
same transaction as the records) catches a removed tail. The first bad record is named.

Evidence (contract §8): each ``attached`` record puts a file's SHA-256 in the chain; with the
evidence folder given, every such file is then read and hashed, and the first that is missing
or whose bytes differ from its hash is named (with its event and record).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import sys
from typing import Any

import orjson

from dispatch.core.records import GENESIS, Record, chain_break, verify_chain
from dispatch.store.redis_keys import REDIS_SCHEMES

Result = tuple[bool, str, int | None]
# (sha256, event id, entry id, name, seq) of each evidence file the journal names
Named = tuple[str, str, str, str, int]


def _named_in(seq: int, event_id: str, added: Any) -> list[Named]:
    """The evidence files a record added (none for records without an evidence list)."""
    part = added.get("evidence") if isinstance(added, dict) else None
    items = part.get("items") if isinstance(part, dict) else None
    return [(str(i.get("sha256")), event_id, str(i.get("id")), str(i.get("name")), seq)
            for i in items or () if isinstance(i, dict)]


def check_evidence(named: list[Named], folder: str | os.PathLike[str]) -> Result:
    """(ok, message, seq of the record naming the first bad file) for the files ``named``."""
    from dispatch.evidence import EvidenceStore

    store = EvidenceStore(folder, 1)
    for sha, event_id, entry, name, seq in named:
        problem = store.problem(sha)
        if problem is not None:
            return (False, f"evidence file {sha} ({entry} {name!r} of {event_id}, record "
                           f"{seq}) {problem}", seq)
    return True, f"{len(named)} evidence files intact", None


def verify_journal(store_or_path: Any, evidence: str | None = None) -> Result:
    """(ok, message, first bad seq or None) for a SQLite journal file, a ``MemoryStore``
    or a list of records; with ``evidence`` (the folder) the files it names too. For any
    open store from async code use ``verify_store``."""
    if isinstance(store_or_path, str | os.PathLike):
        return _verify_sqlite(os.fspath(store_or_path), evidence)
    if hasattr(store_or_path, "path") and not hasattr(store_or_path, "records"):
        return _verify_sqlite(os.fspath(store_or_path.path), evidence)
    return _verify_records(list(getattr(store_or_path, "records", store_or_path)), evidence)


async def _verify_url(url: str, evidence: str | None = None) -> Result:
    from dispatch.store import open_store

    store = open_store(url)
    await store.open()
    try:
        return await verify_store(store, evidence)
    finally:
        await store.close()


async def verify_store(store: Any, evidence: str | None = None) -> Result:
    """The same check over any open ``Store`` (reads through the protocol)."""
    return _verify_records(await store.read(), evidence)


def _verify_records(records: list[Record], evidence: str | None = None) -> Result:
    bad = verify_chain(records)
    if bad is not None:
        return False, bad[1], bad[0]
    ok = (True, f"OK: {len(records)} records, chain intact", None)
    if evidence is None:
        return ok
    named = [n for r in records for n in _named_in(r.seq, r.event_id, r.added)]
    return _with_files(ok, named, evidence)


def _with_files(chain: Result, named: list[Named], evidence: str) -> Result:
    files = check_evidence(named, evidence)
    if not files[0]:
        return files
    return True, f"{chain[1]}; {files[1]}", None


def _verify_sqlite(path: str, evidence: str | None = None) -> Result:
    if not os.path.exists(path):
        return False, f"no journal at {path}", None
    named: list[Named] = []
    try:
        chain = _scan(path, named)
    except sqlite3.DatabaseError as exc:
        return False, f"the journal file cannot be read: {exc}", None
    if not chain[0] or evidence is None:
        return chain
    return _with_files(chain, named, evidence)


def _scan(path: str, named: list[Named]) -> Result:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        prev, expect = GENESIS, 1
        cur = conn.execute("SELECT seq, hash, data FROM journal ORDER BY seq")
        for col_seq, stored, data in cur:
            try:
                d = orjson.loads(data)
                seq, prev_hash = int(d["seq"]), str(d["prev_hash"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return False, f"record {expect} is unreadable", expect
            if col_seq != seq:
                return False, f"record {expect} is out of place (row {col_seq} holds " \
                              f"record {seq})", expect
            raw = data.encode() if isinstance(data, str) else bytes(data)
            actual = hashlib.sha256(raw).hexdigest()
            bad = chain_break(seq, expect, prev_hash, prev, actual, stored)
            if bad:
                return False, bad, expect
            named.extend(_named_in(seq, str(d.get("event_id")), d.get("added")))
            prev, expect = stored, expect + 1
        head = conn.execute("SELECT seq, hash FROM head").fetchone()
        count = expect - 1
        if head is not None and (head[0] != count or head[1] != prev):
            if head[0] > count:
                return False, f"record {count + 1} is missing (the journal ends early; " \
                              f"its head says {head[0]})", count + 1
            return False, f"the journal head does not match record {count}", count
        return True, f"OK: {count} records, chain intact", None
    finally:
        conn.close()


def verify_main(db_path: str, evidence: str | None = None) -> int:
    """Print OK or the first bad record (or evidence file); exit status 0 when intact, 1
    otherwise.

    ``db_path`` is a SQLite journal file, or a ``redis://`` URL (the shared journal);
    ``evidence`` the evidence folder (None: the files are not checked, and it says so).
    """
    if db_path.startswith(REDIS_SCHEMES):
        ok, message, _ = asyncio.run(_verify_url(db_path, evidence))
    else:
        ok, message, _ = verify_journal(db_path, evidence)
    if ok and evidence is None:
        message += " (evidence files not checked: give --evidence or --config)"
    print(message if ok else f"TAMPERED: {message}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(verify_main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
