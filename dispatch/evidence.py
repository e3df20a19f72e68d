"""Evidence files (电子证据, contract §8): content-addressed storage under ``evidence.store``.

How it works: a file is named by the SHA-256 of its bytes (``<root>/<sha[:2]>/<sha>``). An
upload is streamed from the request into a temporary file under ``<root>/tmp`` in chunks,
hashed as it goes and refused once it passes ``max_bytes`` (413) or when its first bytes are
not the type it declares (415); then it is fsynced, renamed into place and its folder fsynced,
so the file is durable BEFORE the journal record that names it is written (a crash between the
two leaves an unreferenced file, never a record without its file). The same bytes uploaded
again land on the same name (a retry, or the same photo on two events) and the rename
replaces the copy there, which also repairs a copy that was damaged.

On Redis (several instances) ``evidence.store`` must be a folder every instance shares (NFS,
a mounted volume…): any instance may be asked for any file. ``check_writable`` is called at
start-up, which refuses to go on when the folder cannot be written (docs/redis.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from dispatch.core.errors import DispatchError

# The accepted types, each with the file extension it gets in a dossier.
TYPES: dict[str, str] = {"image/jpeg": "jpg", "image/png": "png", "video/mp4": "mp4",
                         "application/pdf": "pdf"}
MAGIC_BYTES = 12  # enough to tell the four types apart
CHUNK = 1 << 16
SHA256 = re.compile(r"[0-9a-f]{64}")


class TooLargeError(DispatchError):
    """The body passed ``evidence.max_bytes`` (HTTP 413); nothing was kept."""

    code = "body_too_large"
    status = 413


class UnsupportedTypeError(DispatchError):
    """Not one of ``TYPES``, or bytes that are not what the type says (HTTP 415)."""

    code = "unsupported_media_type"
    status = 415


class EmptyFileError(DispatchError):
    code = "invalid_field"
    status = 422


def matches_type(head: bytes, content_type: str) -> bool:
    """Whether the first bytes of a file are those of ``content_type`` (its magic number)."""
    if content_type == "image/jpeg":
        return head[:3] == b"\xff\xd8\xff"
    if content_type == "image/png":
        return head[:8] == b"\x89PNG\r\n\x1a\n"
    if content_type == "video/mp4":  # ISO base media: a box of type ftyp comes first
        return head[4:8] == b"ftyp"
    if content_type == "application/pdf":
        return head[:5] == b"%PDF-"
    return False


def check_type(content_type: str) -> None:
    """415 naming ``Content-Type`` unless it is one of ``TYPES``."""
    if content_type not in TYPES:
        raise UnsupportedTypeError(
            f"Content-Type must be one of {', '.join(TYPES)}, not {content_type or 'none'!r}",
            "Content-Type")


@dataclass(frozen=True)
class Stored:
    """A file made durable: its SHA-256 (hex), size in bytes and type."""

    sha256: str
    size: int
    type: str


class EvidenceStore:
    """The folder of evidence files; see the module's "how it works"."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)

    def path(self, sha256: str) -> Path:
        """Where the file with this SHA-256 lives (``ValueError`` for anything not a hash)."""
        if not SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def check_writable(self) -> None:
        """Create the folder if needed and write, fsync and remove a probe file in it;
        ``OSError`` when that fails (start-up turns it into a configuration error)."""
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp, prefix="probe-")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)

    async def save(self, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        """Stream ``chunks`` into the store and make the file durable; see the module doc.

        415 (``UnsupportedTypeError``) for a type not accepted or bytes not of that type,
        413 (``TooLargeError``) past ``max_bytes``, 422 for an empty body; nothing is kept
        then. Only one chunk is held at a time.
        """
        check_type(content_type)
        tmpdir = self.root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix="up-")
        h = hashlib.sha256()
        size, head, checked = 0, b"", False
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLargeError(f"the file is larger than {self.max_bytes} bytes",
                                            "body")
                    if not checked:
                        head += chunk[:MAGIC_BYTES - len(head)]
                        if len(head) >= MAGIC_BYTES:
                            self._check_head(head, content_type)
                            checked = True
                    h.update(chunk)
                    f.write(chunk)
                if size == 0:
                    raise EmptyFileError("the body is empty: send the file's bytes", "body")
                if not checked:
                    self._check_head(head, content_type)
                f.flush()
                await asyncio.to_thread(os.fsync, f.fileno())
            sha = h.hexdigest()
            await asyncio.to_thread(self._place, Path(tmp), self.path(sha))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return Stored(sha, size, content_type)

    @staticmethod
    def _check_head(head: bytes, content_type: str) -> None:
        if not matches_type(head, content_type):
            raise UnsupportedTypeError(f"the bytes are not a {content_type} file", "body")

    @staticmethod
    def _place(tmp: Path, final: Path) -> None:
        """Rename into place and fsync the folders whose entries changed."""
        fresh = not final.parent.exists()
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        for folder in (final.parent, final.parent.parent) if fresh else (final.parent,):
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def problem(self, sha256: str) -> str | None:
        """None when the file is there and its bytes hash to its name; else what is wrong
        ("is missing", "does not match its SHA-256")."""
        try:
            path = self.path(sha256)
        except ValueError:
            return "is not named by a SHA-256"
        try:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except FileNotFoundError:
            return "is missing"
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        return None if h.hexdigest() == sha256 else "does not match its SHA-256"
