"""Journal records and their SHA-256 chain.

How it works: every change to an event is one ``Record`` with a global ``seq`` (1, 2, 3…,
assigned by the engine). The store fills ``prev_hash`` (the previous record's ``hash``; ""
before the first) and ``hash`` = SHA-256 of the record's canonical JSON (sorted keys, orjson,
``hash`` left out). Editing, removing or reordering any record breaks the chain at that
record, which ``verify_chain`` names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = ""
_OPTS = orjson.OPT_SORT_KEYS


@dataclass(frozen=True, slots=True)
class Record:
    """One journal entry: who did what to which event, when, and the state before/after.

    ``before`` holds the old values of the fields that changed (always status, tier, team,
    unit); ``after`` is the full event state after the change. Treat both as read-only.
    """

    seq: int
    event_id: str
    version: int
    action: str
    actor: str
    at: float
    received_at: float
    before: dict[str, Any]
    after: dict[str, Any]
    note: str | None = None
    extra: dict[str, Any] | None = None
    prev_hash: str = ""
    hash: str = ""

    def to_dict(self, with_hash: bool = True) -> dict[str, Any]:
        """The record as a plain dict (``hash`` left out when ``with_hash`` is False)."""
        d = {
            "seq": self.seq, "event_id": self.event_id, "version": self.version,
            "action": self.action, "actor": self.actor, "at": self.at,
            "received_at": self.received_at, "before": self.before, "after": self.after,
            "note": self.note, "extra": self.extra, "prev_hash": self.prev_hash,
        }
        if with_hash:
            d["hash"] = self.hash
        return d

    def to_json(self) -> bytes:
        """Deterministic JSON bytes (sorted keys)."""
        return orjson.dumps(self.to_dict(), option=_OPTS)

    @classmethod
    def from_json(cls, data: bytes | str) -> Record:
        """The record ``to_json`` wrote."""
        return cls.from_dict(orjson.loads(data))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """A record from its plain-dict form."""
        return cls(d["seq"], d["event_id"], d["version"], d["action"], d["actor"], d["at"],
                   d["received_at"], d["before"], d["after"], d.get("note"), d.get("extra"),
                   d.get("prev_hash", ""), d.get("hash", ""))


def canonical(record: Record, prev_hash: str) -> bytes:
    """The bytes that are hashed: sorted-key JSON of the record without ``hash``."""
    d = record.to_dict(with_hash=False)
    d["prev_hash"] = prev_hash
    return orjson.dumps(d, option=_OPTS)


def compute_hash(record: Record, prev_hash: str) -> str:
    """SHA-256 (hex) of the record's canonical JSON with ``prev_hash`` set, ``hash`` excluded."""
    return hashlib.sha256(canonical(record, prev_hash)).hexdigest()


def chain_encoded(records: Iterable[Record],
                  prev_hash: str = GENESIS) -> list[tuple[Record, bytes]]:
    """Like ``chain``, also returning each record's canonical bytes (what a store keeps)."""
    out = []
    for r in records:
        data = canonical(r, prev_hash)
        h = hashlib.sha256(data).hexdigest()
        # the constructor, not dataclasses.replace: this runs per record on the writer thread
        out.append((Record(r.seq, r.event_id, r.version, r.action, r.actor, r.at,
                           r.received_at, r.before, r.after, r.note, r.extra, prev_hash, h),
                    data))
        prev_hash = h
    return out


def chain(records: Iterable[Record], prev_hash: str = GENESIS) -> list[Record]:
    """The records with ``prev_hash``/``hash`` filled, continuing from ``prev_hash``."""
    return [r for r, _ in chain_encoded(records, prev_hash)]


def verify_chain(records: Iterable[Record], prev_hash: str = GENESIS,
                 start_seq: int = 1) -> tuple[int, str] | None:
    """None if the records form an unbroken chain from ``start_seq``; else (bad seq, reason).

    The bad seq is the position where the chain first breaks: the seq expected there.
    """
    expect = start_seq
    for r in records:
        if r.seq != expect:
            if r.seq > expect:
                return expect, f"record {expect} is missing (found {r.seq} in its place)"
            return expect, f"record {expect} is out of order (found {r.seq} in its place)"
        if r.prev_hash != prev_hash:
            return expect, f"record {expect} does not link to the record before it"
        if compute_hash(r, prev_hash) != r.hash:
            return expect, f"record {expect} was altered (its hash does not match its content)"
        prev_hash = r.hash
        expect += 1
    return None
