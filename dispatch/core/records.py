"""Journal records and their SHA-256 chain.

How it works: every change to an event is one ``Record`` with a global ``seq`` (1, 2, 3…,
assigned by the engine). The store fills ``prev_hash`` (the previous record's ``hash``; ""
before the first) and ``hash`` = SHA-256 of the record's canonical JSON (sorted keys, orjson,
``hash`` left out). Editing, removing or reordering any record breaks the chain at that
record, which ``verify_chain`` names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from dispatch.core.event import Event

GENESIS = ""
_OPTS = orjson.OPT_SORT_KEYS


# The event's lists that only ever grow: a record carries what it appended to them, not them.
APPEND_ONLY = ("escalations", "timeline", "evidence")
# Lists added to the event after records of the v2 format were first written (evidence, issue
# 13): a record made before carries no entry for them; the state it leaves has none either
# (fold keeps the list of the state before, if that has one).
LATER_LISTS = frozenset(("evidence",))


@dataclass(frozen=True, slots=True)
class Record:
    """One journal entry: who did what to which event, when, and the state before/after.

    ``before`` holds the old values of the fields that changed (always status, tier, team,
    unit; never the append-only lists). Two formats, told apart by ``added``:

    - v1 (older journals, ``added`` None): ``after`` is the full event state after the change.
    - v2: ``after`` is the event state after the change without the append-only lists
      (``APPEND_ONLY``); ``added`` holds, per such list, ``{"start": n, "items": [...]}``:
      the entries the change appended at index ``n`` (every list, ``items`` possibly empty;
      a record written before a ``LATER_LISTS`` list existed has no entry for it).
      ``fold`` rebuilds the full state from the one before.

    ``state`` is the full event state after the change, in memory only (never encoded, never
    hashed, not compared): set by the engine on the records it makes and by ``fold`` /
    ``state_at`` on records read back. Treat all of them as read-only.
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
    added: dict[str, Any] | None = None
    state: Event | None = field(default=None, compare=False, repr=False)

    def to_dict(self, with_hash: bool = True) -> dict[str, Any]:
        """The record as a plain dict (``hash`` left out when ``with_hash`` is False).

        ``added`` only when set, so a v1 record encodes (and hashes) as it always did."""
        d = {
            "seq": self.seq, "event_id": self.event_id, "version": self.version,
            "action": self.action, "actor": self.actor, "at": self.at,
            "received_at": self.received_at, "before": self.before, "after": self.after,
            "note": self.note, "extra": self.extra, "prev_hash": self.prev_hash,
        }
        if self.added is not None:
            d["added"] = self.added
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
                   d.get("prev_hash", ""), d.get("hash", ""), d.get("added"))


def canonical(record: Record, prev_hash: str) -> bytes:
    """The bytes that are hashed: sorted-key JSON of the record without ``hash``."""
    d = record.to_dict(with_hash=False)
    d["prev_hash"] = prev_hash
    return orjson.dumps(d, option=_OPTS)


def compute_hash(record: Record, prev_hash: str) -> str:
    """SHA-256 (hex) of the record's canonical JSON with ``prev_hash`` set, ``hash`` excluded."""
    return hashlib.sha256(canonical(record, prev_hash)).hexdigest()


@dataclass(frozen=True, slots=True)
class Encoded:
    """A record's canonical JSON with a hole where ``prev_hash`` goes.

    ``canonical(record, p) == head + p.encode() + tail`` for every hex ``p``: the keys are
    sorted, so ``prev_hash`` sits between ``note`` and ``received_at`` and the bytes around
    it do not depend on its value. Encoding (the part that can fail: a lone surrogate, an
    integer past 64 bits) is done once, by whoever calls ``encode``, before the record is
    chained; chaining then only concatenates and hashes, which cannot fail.
    """

    record: Record
    head: bytes
    tail: bytes

    def with_prev(self, prev_hash: str) -> bytes:
        """The canonical bytes with ``prev_hash`` filled in."""
        return b"".join((self.head, prev_hash.encode("ascii"), self.tail))


_PREV_KEYS = ("action", "actor", "added", "after", "at", "before", "event_id", "extra", "note")
_POST_KEYS = ("received_at", "seq", "version")
_HOLE = b'"prev_hash":""'


def encode(record: Record) -> Encoded:
    """The record's canonical JSON around ``prev_hash``; raises ``TypeError`` (orjson's
    ``JSONEncodeError``) naming the record when JSON cannot hold it."""
    r = record
    try:
        if (type(r.received_at) in (float, int) and type(r.seq) is int
                and type(r.version) is int):
            # One dump with an empty prev_hash, cut at its last occurrence: only numbers
            # follow the top-level key (sorted: received_at, seq, version), and inside a
            # string every quote is escaped, so the last match is the top-level key.
            top = {"action": r.action, "actor": r.actor, "after": r.after, "at": r.at,
                   "before": r.before, "event_id": r.event_id, "extra": r.extra,
                   "note": r.note, "prev_hash": "", "received_at": r.received_at,
                   "seq": r.seq, "version": r.version}
            if r.added is not None:
                top["added"] = r.added
            b = orjson.dumps(top, option=_OPTS)
            i = b.rindex(_HOLE) + len(_HOLE) - 1
            return Encoded(record, b[:i], b[i:])
        d = r.to_dict(with_hash=False)
        a = orjson.dumps({k: d[k] for k in _PREV_KEYS if k in d}, option=_OPTS)
        z = orjson.dumps({k: d[k] for k in _POST_KEYS}, option=_OPTS)
    except orjson.JSONEncodeError as exc:
        raise orjson.JSONEncodeError(
            f"record {r.seq} ({r.action} of {r.event_id}) cannot be encoded: {exc}") from exc
    # {"action":…,"note":…} and {"received_at":…,…} around ,"prev_hash":"…",
    return Encoded(record, a[:-1] + b',"prev_hash":"', b'",' + z[1:])


def encode_all(records: Iterable[Record]) -> list[Encoded]:
    """``encode`` for each record (all or nothing: the first that fails raises)."""
    return [encode(r) for r in records]


def chain_pre_encoded(encoded: Iterable[Encoded],
                      prev_hash: str = GENESIS) -> list[tuple[Record, bytes]]:
    """Chain records encoded beforehand: (record with hashes set, canonical bytes) each."""
    out = []
    for e in encoded:
        data = e.with_prev(prev_hash)
        h = hashlib.sha256(data).hexdigest()
        r = e.record
        # the constructor, not dataclasses.replace: this runs per record on the writer thread
        out.append((Record(r.seq, r.event_id, r.version, r.action, r.actor, r.at,
                           r.received_at, r.before, r.after, r.note, r.extra, prev_hash, h,
                           r.added, r.state),
                    data))
        prev_hash = h
    return out


def chain_encoded(records: Iterable[Record],
                  prev_hash: str = GENESIS) -> list[tuple[Record, bytes]]:
    """Like ``chain``, also returning each record's canonical bytes (what a store keeps)."""
    return chain_pre_encoded(encode_all(records), prev_hash)


def chain(records: Iterable[Record], prev_hash: str = GENESIS) -> list[Record]:
    """The records with ``prev_hash``/``hash`` filled, continuing from ``prev_hash``."""
    return [r for r, _ in chain_encoded(records, prev_hash)]


def chain_break(seq: int, expect: int, prev_hash: str, prev: str, actual: str,
                stored: str) -> str | None:
    """Why one record breaks the chain, or None: the single rule every chain check uses.

    ``seq``/``prev_hash``/``stored`` are what the record says (its number, the hash it links
    to, its stored hash); ``expect``/``prev`` what the chain needs there; ``actual`` the
    SHA-256 of the record's content as stored.
    """
    if seq != expect:
        what = "is missing" if seq > expect else "is out of order"
        return f"record {expect} {what} (found record {seq} in its place)"
    if actual != stored:
        return f"record {expect} was altered (its content does not match its hash)"
    if prev_hash != prev:
        return f"record {expect} does not link to the record before it (removed or reordered)"
    return None


def verify_chain(records: Iterable[Record], prev_hash: str = GENESIS,
                 start_seq: int = 1) -> tuple[int, str] | None:
    """None if the records form an unbroken chain from ``start_seq``; else (bad seq, reason).

    The bad seq is the position where the chain first breaks: the seq expected there.
    """
    expect = start_seq
    for r in records:
        bad = chain_break(r.seq, expect, r.prev_hash, prev_hash, compute_hash(r, r.prev_hash),
                          r.hash)
        if bad is not None:
            return expect, bad
        prev_hash = r.hash
        expect += 1
    return None


# -- the event state a record leaves -----------------------------------------------------------
def _keep(record: Record, state: Mapping[str, Any]) -> Event:
    # where stored JSON becomes an ``Event`` (the stateful tests check every one against it)
    object.__setattr__(record, "state", state)  # the in-memory cache field (compare=False)
    return cast(Event, state)


def _rebuilt(record: Record,
             lists: Callable[[str, dict[str, Any] | None], Any]) -> Event:
    """The full state after ``record``: kept, a v1 record's ``after``, or a v2 ``after`` with
    each append-only list from ``lists(key, what the record appended to it)``; kept."""
    if record.state is not None:
        return record.state
    if record.added is None:
        return _keep(record, record.after)
    state = dict(record.after)
    for k in APPEND_ONLY:
        part = record.added.get(k)
        if part is not None or k not in LATER_LISTS:
            state[k] = lists(k, part)
        else:  # a record older than the list: the list as it was, if the state had one
            held = lists(k, None)
            if held is not None:
                state[k] = held
    return _keep(record, state)


def fold(prev: Event | None, record: Record) -> Event:
    """The event's full state after ``record``, from its full state before (None: a new
    event). A v1 record holds it whole; a v2 record's ``after`` gets each append-only list
    back as the previous one plus what the record appended. ``ValueError`` when ``prev`` is
    not the state the record was made on (its lists are not as long as the record says).
    The result is kept as ``record.state``.
    """
    before: Mapping[str, Any] | None = prev  # its lists, by name

    def extended(k: str, part: dict[str, Any] | None) -> Any:
        if part is None:  # a later list the record does not carry
            return before.get(k) if before is not None else None
        held: list[Any]
        if before is None:
            held = []
        else:  # an event from before a later list has none yet
            held = before.get(k) or [] if k in LATER_LISTS else before[k]
        if len(held) != part["start"]:
            raise ValueError(
                f"record {record.seq} appends to {record.event_id}'s {k} at {part['start']} "
                f"but the state before it has {len(held)} entries (a record is missing)")
        return [*held, *part["items"]]

    return _rebuilt(record, extended)


def state_at(record: Record, current: Mapping[str, Any] | None) -> Event:
    """The event's full state after ``record``, given its state now (``current``, at or
    after the record): for a record read back from the store, without the ones before it.

    The append-only lists at the record are the prefixes of today's that end where the
    record's additions end. ``ValueError`` when ``current`` is older than the record.
    """
    def cut(k: str, part: dict[str, Any] | None) -> Any:
        if part is None:  # a later list the record does not carry: it had none then
            return None
        end = part["start"] + len(part["items"])
        held = current.get(k) if current is not None else None
        if held is None or held[part["start"]:end] != part["items"]:
            raise ValueError(f"record {record.seq}: the state of {record.event_id} given "
                             f"does not hold what the record appended to its {k}")
        return held[:end]

    return _rebuilt(record, cut)


def state_of(record: Record) -> Event:
    """The event's full state after ``record`` when it is known without the ones before
    (made here, folded, a v1 record, or the first of its event); ``ValueError`` otherwise."""
    if record.state is not None:
        return record.state
    if record.added is None:
        return _keep(record, record.after)
    if all(record.added.get(k, {"start": 0})["start"] == 0 for k in APPEND_ONLY):
        return fold(None, record)  # nothing came before it
    raise ValueError(f"record {record.seq}: the full state of {record.event_id} is not known "
                     f"(fold the journal, or use state_at)")
