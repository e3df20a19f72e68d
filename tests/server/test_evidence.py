"""Evidence over HTTP (contract §8, issue 13), on a real server over loopback: upload,
byte-identical download, 413/415, who may attach and read, taken_at, a restart, the dossier
re-checked hash by hash from its own contents, and ``dispatch audit verify`` finding a flipped
byte or a missing file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dispatch.config import ConfigError, load_config
from dispatch.server.app import build_app
from tests.server.conftest import Server, intake_body, point_in, start_server, write_config

HY, JJ = "331003", "331002"  # 黄岩区, 椒江区
ROOT = Path(__file__).resolve().parents[2]


def jpeg(n: int = 0, size: int = 4000) -> bytes:
    """Bytes that start like a JPEG (SOI + APP0), unique per ``n``."""
    body = (f"photo-{n}-".encode() * (size // 8 + 1))[:size]
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + body + b"\xff\xd9"


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n" + b"1 0 obj <<>> endobj\n" * 20 + b"%%EOF\n"
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200


async def upload(srv: Server, eid: str, data: bytes, who: str, ctype: str = "image/jpeg",
                 **query: str) -> tuple[int, Any]:
    return await srv.call("POST", f"/api/v1/events/{eid}/evidence", who, data=data,
                          params=query, headers={"Content-Type": ctype})


async def event_in_huangyan(srv: Server) -> dict[str, Any]:
    st, ev = await srv.call("POST", "/api/v1/events", "admin",
                            json=intake_body(*point_in(srv, HY)))
    assert st == 201 and ev["unit"], ev
    return ev


async def test_upload_then_download_byte_identical(server: Server) -> None:
    ev = await event_in_huangyan(server)
    field = server.field_token(ev["unit"])
    data = jpeg(1)
    st, entry = await upload(server, ev["id"], data, field, name="现场照片.jpg")
    assert st == 201, entry
    sha = hashlib.sha256(data).hexdigest()
    assert entry["sha256"] == sha and entry["size"] == len(data)
    assert (entry["type"], entry["name"], entry["id"]) == ("image/jpeg", "现场照片.jpg",
                                                          f"{ev['id']}-1")
    assert entry["actor"] and entry["at"] and set(entry) >= {"id", "sha256", "size", "type",
                                                            "name", "at", "actor"}
    # the file is durable before the record that names it, under its hash
    stored = server.state.config["evidence"]["store"]
    assert (Path(stored) / sha[:2] / sha).read_bytes() == data
    st, got = await server.call("GET", f"/api/v1/events/{ev['id']}", "huangyan")
    assert st == 200 and [e["sha256"] for e in got["evidence"]] == [sha]
    assert got["timeline"][-1]["action"] == "attached" and got["timeline"][-1]["evidence"] == sha
    async with server.session.get(f"{server.url}/api/v1/evidence/{sha}",
                                  headers=server.auth("huangyan")) as r:
        assert r.status == 200 and await r.read() == data
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["ETag"] == f'"{sha}"'
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "attachment" in r.headers["Content-Disposition"]
        assert "filename*=UTF-8''%E7%8E%B0" in r.headers["Content-Disposition"]
    async with server.session.get(f"{server.url}/api/v1/evidence/{sha}", headers={
            **server.auth("huangyan"), "If-None-Match": f'"{sha}"'}) as r:
        assert r.status == 304
    # the same file again (a phone retrying): the same entry, nothing new
    st, again = await upload(server, ev["id"], data, field, name="again.jpg")
    assert st == 200 and again["id"] == entry["id"]
    for n, (body, ctype) in enumerate([(PNG, "image/png"), (PDF, "application/pdf"),
                                       (MP4, "video/mp4")], start=2):
        st, e = await upload(server, ev["id"], body, "huangyan", ctype=ctype)
        assert st == 201 and e["id"] == f"{ev['id']}-{n}" and e["type"] == ctype, e


async def test_413_and_415_name_the_field_and_change_nothing(tmp_path: Path) -> None:
    srv = await start_server(tmp_path, evidence={"max_bytes": 5000})
    try:
        ev = await event_in_huangyan(srv)
        version = ev["version"]
        st, err = await upload(srv, ev["id"], b"hello", "huangyan", ctype="text/plain")
        assert st == 415 and err["error"]["field"] == "Content-Type", err
        st, err = await upload(srv, ev["id"], PNG, "huangyan", ctype="image/jpeg")
        assert st == 415 and err["error"]["field"] == "body", err
        st, err = await upload(srv, ev["id"], jpeg(2, 6000), "huangyan")
        assert st == 413 and err["error"]["code"] == "body_too_large", err

        async def chunked():  # no Content-Length: refused while streaming
            for _ in range(10):
                yield jpeg(3, 1000)
        st, err = await srv.call("POST", f"/api/v1/events/{ev['id']}/evidence", "huangyan",
                                 data=chunked(), headers={"Content-Type": "image/jpeg"})
        assert st == 413, err
        st, err = await upload(srv, ev["id"], b"", "huangyan")
        assert st == 422 and err["error"]["field"] == "body"
        st, err = await upload(srv, ev["id"], jpeg(4), "huangyan", name="../etc/passwd")
        assert st == 422 and err["error"]["field"] == "name"
        st, err = await upload(srv, ev["id"], jpeg(4), "huangyan", taken_at="2099-01-01T00:00:00Z")
        assert st == 422 and err["error"]["field"] == "taken_at"
        st, err = await upload(srv, ev["id"], jpeg(4), "huangyan", taken_at="1999-12-31T00:00:00Z")
        assert st == 422 and err["error"]["field"] == "taken_at"
        st, got = await srv.call("GET", f"/api/v1/events/{ev['id']}", "huangyan")
        assert got["version"] == version and got["evidence"] == []
        store = Path(srv.state.config["evidence"]["store"])
        assert [p for p in store.rglob("*") if p.is_file()] == []  # no file kept either
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


async def test_who_may_attach_and_read(server: Server) -> None:
    ev = await event_in_huangyan(server)
    units = [u for u in server.state.runtime.dataset.units if u != ev["unit"]]
    other_field = server.field_token(units[0])
    own_field = server.field_token(ev["unit"])
    st, _ = await upload(server, ev["id"], jpeg(5), other_field)
    assert st == 404  # another unit's field token: as unknown
    st, _ = await upload(server, ev["id"], jpeg(5), "jiaojiang")
    assert st == 404  # an operator out of scope: as unknown
    for who in ("supervisor", "intake"):
        st, err = await upload(server, ev["id"], jpeg(5), who)
        assert st == 403, (who, err)
    st, entry = await upload(server, ev["id"], jpeg(5), "huangyan")
    assert st == 201
    sha = entry["sha256"]
    for who, status in (("huangyan", 200), ("supervisor", 200), ("city", 200),
                        (own_field, 200), ("jiaojiang", 404), (other_field, 404),
                        ("intake", 403)):
        st, _ = await server.call("GET", f"/api/v1/evidence/{sha}", who)
        assert st == status, who
    st, _ = await server.call("GET", f"/api/v1/evidence/{'0' * 64}", "admin")
    assert st == 404
    st, _ = await server.call("GET", "/api/v1/evidence/not-a-hash", "admin")
    assert st == 404
    st, _ = await server.call("GET", f"/api/v1/events/{ev['id']}/dossier", "jiaojiang")
    assert st == 404
    st, _ = await server.call("GET", f"/api/v1/events/{ev['id']}/dossier", own_field)
    assert st == 403


async def test_taken_at_is_kept_and_a_restart_keeps_the_list(tmp_path: Path) -> None:
    srv = await start_server(tmp_path)
    try:
        ev = await event_in_huangyan(srv)
        taken = srv.state.clock.now() - 600
        st, e1 = await upload(srv, ev["id"], jpeg(6), "huangyan", taken_at=str(taken))
        assert st == 201
        st, e2 = await upload(srv, ev["id"], PDF, "huangyan", ctype="application/pdf",
                              name="笔录.pdf", taken_at="2025-06-01T08:30:00+08:00")
        assert st == 201 and e2["at"].startswith("2025-06-01T08:30:00")
        st, before = await srv.call("GET", f"/api/v1/events/{ev['id']}", "huangyan")
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
    srv = await start_server(tmp_path)
    try:
        st, after = await srv.call("GET", f"/api/v1/events/{ev['id']}", "huangyan")
        assert after["evidence"] == before["evidence"] and len(after["evidence"]) == 2
        assert abs(_epoch(after["evidence"][0]["at"]) - taken) < 0.002
        st, data = await srv.call("GET", f"/api/v1/evidence/{e2['sha256']}", "huangyan")
        assert st == 200 and data == PDF
    finally:
        await srv.session.close()
        await srv.runner.cleanup()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def test_the_dossier_holds_everything_and_every_hash_checks(server: Server) -> None:
    ev = await event_in_huangyan(server)
    other = await event_in_huangyan(server)  # records of another event interleave
    files = {}
    for n in range(3):
        data = jpeg(10 + n)
        st, e = await upload(server, ev["id"], data, "huangyan", name=f"图{n}.jpg")
        assert st == 201
        files[e["sha256"]] = data
        await server.call("POST", f"/api/v1/events/{other['id']}/escalate", "huangyan")
    st, e = await upload(server, ev["id"], PDF, "huangyan", ctype="application/pdf")
    files[e["sha256"]] = PDF
    await server.call("POST", f"/api/v1/events/{ev['id']}/respond", "huangyan")
    async with server.session.get(f"{server.url}/api/v1/events/{ev['id']}/dossier",
                                  headers=server.auth("supervisor")) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
        blob = await r.read()
    zf = zipfile.ZipFile(io.BytesIO(blob))
    event = json.loads(zf.read("event.json"))
    records = json.loads(zf.read("records.json"))
    summary = json.loads(zf.read("verification.json"))
    assert event["id"] == ev["id"] and len(event["evidence"]) == 4
    assert summary["ok"] is True and summary["journal"]["intact"] is True
    assert "全部核验通过" in zf.read("verification.txt").decode()
    # every record: its canonical bytes hash to its hash, and they say what the entry says
    seqs = []
    for rec in records:
        body = json.loads(rec["canonical"])
        assert hashlib.sha256(rec["canonical"].encode()).hexdigest() == rec["hash"]
        assert (body["seq"], body["prev_hash"], body["event_id"]) == (
            rec["seq"], rec["prev_hash"], ev["id"])
        seqs.append(rec["seq"])
    assert seqs == sorted(seqs) and len(seqs) == event["version"]
    # each file: in the ZIP, hashing to the SHA-256 an attached record put in the chain
    chained = {item["sha256"] for rec in records
               for item in json.loads(rec["canonical"]).get("added", {})
               .get("evidence", {}).get("items", [])}
    assert chained == set(files)
    for f in summary["files"]:
        data = zf.read(f["path"])
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and f["ok"]
        assert data == files[f["sha256"]]
    # the chain itself: the records of the whole journal link up to the event's last one
    journal = await server.state.runtime.store.read()
    by_seq = {r.seq: r for r in journal}
    for rec in records:
        assert by_seq[rec["seq"]].hash == rec["hash"]
        if rec["seq"] > 1:
            assert by_seq[rec["seq"] - 1].hash == rec["prev_hash"]


async def test_a_damaged_file_shows_in_the_dossier(server: Server) -> None:
    ev = await event_in_huangyan(server)
    st, e = await upload(server, ev["id"], jpeg(20), "huangyan")
    store = Path(server.state.config["evidence"]["store"])
    path = store / e["sha256"][:2] / e["sha256"]
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    st, blob = await server.call("GET", f"/api/v1/events/{ev['id']}/dossier", "admin")
    summary = json.loads(zipfile.ZipFile(io.BytesIO(blob)).read("verification.json"))
    assert summary["ok"] is False and "do not match" in summary["files"][0]["problem"]


def _audit(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatch", "audit", "verify", "--config",
                           str(config)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


async def test_audit_verify_names_a_flipped_byte_and_a_missing_file(tmp_path: Path) -> None:
    srv = await start_server(tmp_path)
    try:
        ev = await event_in_huangyan(srv)
        shas = []
        for n in range(3):
            st, e = await upload(srv, ev["id"], jpeg(30 + n), "huangyan", name=f"f{n}.jpg")
            assert st == 201
            shas.append(e["sha256"])
    finally:
        await srv.session.close()
        await srv.runner.cleanup()
    out = _audit(srv.config_path)
    assert out.returncode == 0 and "3 evidence files intact" in out.stdout, out
    store = tmp_path / "var" / "evidence"
    second = store / shas[1][:2] / shas[1]
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0x80  # one flipped bit
    second.write_bytes(bytes(data))
    out = _audit(srv.config_path)
    assert out.returncode == 1, out
    assert "TAMPERED" in out.stdout and shas[1] in out.stdout and "f1.jpg" in out.stdout
    assert "does not match" in out.stdout and shas[0] not in out.stdout
    (store / shas[0][:2] / shas[0]).unlink()
    out = _audit(srv.config_path)
    assert out.returncode == 1 and shas[0] in out.stdout and "is missing" in out.stdout


def test_an_unwritable_evidence_store_stops_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    config = load_config(write_config(tmp_path, evidence={"store": str(blocker / "ev")}))
    with pytest.raises(ConfigError) as exc:
        build_app(config)
    assert exc.value.key == "evidence.store"
