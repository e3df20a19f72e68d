"""The dossier of one event for legal review (contract §8): one ZIP file.

How it works: ``write_dossier`` (blocking: run it in a thread) writes, into a ZIP at a path:

- ``event.json``: the event as the API shows it;
- ``records.json``: every journal record of the event, each with its ``seq`` (its position in
  the chain), ``hash``, ``prev_hash`` and ``canonical``: the exact bytes that were hashed
  (``sha256(canonical) == hash``; the record's fields are those of the canonical JSON);
- ``evidence/<entry id>_<name>``: each evidence file, its SHA-256 recomputed while copied;
- ``verification.json`` and ``verification.txt``: the journal's chain checked from record 1
  to the event's last record, each record's hash recomputed, each file's hash re-checked
  against the hash its record put in the chain, and whether everything holds.

Files are stored (not compressed: photos, videos and PDFs already are), JSON is deflated;
one chunk of a file is held at a time.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from dispatch.core.records import Record, canonical, compute_hash, verify_chain
from dispatch.evidence import TYPES, EvidenceStore

_UNSAFE = re.compile(r"[^\w.\-\u4e00-\u9fff]+")
_JSON = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


def _arcname(entry: dict[str, Any]) -> str:
    name = _UNSAFE.sub("_", str(entry.get("name") or "file")).strip("._")[:80] or "file"
    ext = TYPES.get(str(entry.get("type")), "bin")
    if not name.lower().endswith(f".{ext}"):
        name = f"{name}.{ext}"
    return f"evidence/{entry.get('id')}_{name}"


def write_dossier(path: Path, event: dict[str, Any], state: Mapping[str, Any],
                  journal: Iterable[Record], store: EvidenceStore,
                  generated_at: str | None) -> dict[str, Any]:
    """Write the ZIP for ``event`` (rendered) whose state is ``state`` at ``path``; the
    summary written as verification.json is returned.

    ``journal`` is the journal from record 1 up to at least the event's last record.
    """
    eid = state["id"]
    upto = int(state.get("seq") or 0)
    chain: list[Record] = [r for r in journal if r.seq <= upto]
    bad = verify_chain(chain)
    own = [r for r in chain if r.event_id == eid]
    records, rec_checks, chained = [], [], {}
    for r in own:
        data = canonical(r, r.prev_hash)
        ok = hashlib.sha256(data).hexdigest() == r.hash == compute_hash(r, r.prev_hash)
        records.append({"seq": r.seq, "hash": r.hash, "prev_hash": r.prev_hash,
                        "action": r.action, "actor": r.actor, "at": r.at,
                        "canonical": data.decode("utf-8")})
        rec_checks.append({"seq": r.seq, "hash": r.hash, "hash_ok": ok})
        for item in ((r.added or {}).get("evidence") or {}).get("items") or ():
            chained[item.get("sha256")] = r.seq
    files = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("event.json", orjson.dumps(event, option=_JSON))
        zf.writestr("records.json", orjson.dumps(records, option=_JSON))
        for entry in state.get("evidence") or ():
            files.append(_add_file(zf, store, entry, chained.get(entry.get("sha256"))))
        journal_ok = bad is None and len(chain) == upto
        summary = {
            "format": 1, "event": eid, "generated_at": generated_at,
            "journal": {"checked_from": 1, "checked_to": upto, "intact": journal_ok,
                        "problem": None if journal_ok else (
                            bad[1] if bad else f"the journal holds {len(chain)} of {upto} "
                                               f"records")},
            "records": rec_checks, "files": files,
        }
        summary["ok"] = (journal_ok and all(c["hash_ok"] for c in rec_checks)
                         and all(f["ok"] for f in files))
        zf.writestr("verification.json", orjson.dumps(summary, option=_JSON))
        zf.writestr("verification.txt", _text(summary))
    return summary


def _add_file(zf: zipfile.ZipFile, store: EvidenceStore, entry: dict[str, Any],
              record_seq: int | None) -> dict[str, Any]:
    sha = str(entry.get("sha256"))
    arc = _arcname(entry)
    out = {"id": entry.get("id"), "name": entry.get("name"), "type": entry.get("type"),
           "size": entry.get("size"), "sha256": sha, "path": arc, "record": record_seq,
           "ok": False, "problem": None}
    h = hashlib.sha256()
    try:
        src = open(store.path(sha), "rb")  # noqa: SIM115 - closed below
    except (OSError, ValueError):
        out["path"] = None
        out["problem"] = "the file is missing from the evidence store"
        return out
    info = zipfile.ZipInfo(arc)
    info.compress_type = zipfile.ZIP_STORED
    with src, zf.open(info, "w", force_zip64=True) as dst:
        for chunk in iter(lambda: src.read(1 << 18), b""):
            h.update(chunk)
            dst.write(chunk)
    if h.hexdigest() != sha:
        out["problem"] = "the file's bytes do not match the SHA-256 in the journal"
    elif record_seq is None:
        out["problem"] = "no record of this event carries the file's SHA-256"
    else:
        out["ok"] = True
    return out


def _text(s: dict[str, Any]) -> str:
    j = s["journal"]
    lines = [
        f"案卷核验 Dossier verification — 事件 Event {s['event']}",
        f"生成时间 Generated at: {s['generated_at']}",
        "",
        f"日志哈希链 Journal hash chain, records 1..{j['checked_to']}: "
        + ("完整 intact" if j["intact"] else f"已损坏 BROKEN: {j['problem']}"),
        f"本事件记录 Records of this event: {len(s['records'])}, "
        + ("哈希均正确 every hash recomputed and correct"
           if all(c["hash_ok"] for c in s["records"]) else "有哈希不符 SOME HASHES DIFFER"),
        "",
        f"电子证据 Evidence files: {len(s['files'])}",
    ]
    for f in s["files"]:
        state = "OK" if f["ok"] else f"FAILED: {f['problem']}"
        lines.append(f"  {f['id']}  {f['name']}  {f['size']} bytes  sha256 {f['sha256']}  "
                     f"(record {f['record']})  {state}")
    lines += ["", "结论 Result: " + ("全部核验通过 everything verified" if s["ok"]
                                    else "核验未通过 VERIFICATION FAILED"), ""]
    return "\n".join(lines)
