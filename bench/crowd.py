"""A cheap WebSocket client for the crowd of sockets a benchmark holds open.

The measured sockets use the ``websockets`` library. The other ~1,000 only need to be real
RFC 6455 clients that read everything the server sends; doing that with a full client library
costs the load generator more CPU than the server under test spends on them, and on a
2-core machine the generator would then set the latency it is measuring. This one does the
opening handshake, then walks frame headers (server frames are unmasked, RFC 6455 §5.2),
counts messages and ``event.created`` ones, and answers pings with masked pongs (§5.5.3).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from urllib.parse import urlsplit

CREATED = b'{"type":"event.created"'


class CrowdSocket(asyncio.Protocol):
    """Counts the messages of one connection; never parses their JSON."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.count = 0
        self.created = 0
        self.closed = asyncio.get_running_loop().create_future()
        self._open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self._open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[:end]).split(b"\r\n", 1)[0]
            del self.buf[:end + 4]
            if b" 101 " not in status:
                self.handshaken.set_exception(ConnectionError(status.decode()))
                return
            self._open = True
            self.handshaken.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = struct.unpack_from(">H", buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = struct.unpack_from(">Q", buf, pos + 2)[0]
                head = 10
            if len(buf) - pos < head + n:
                break
            opcode = b0 & 0x0F
            start = pos + head
            if opcode == 0x1:
                self.count += 1
                if buf[start:start + len(CREATED)] == CREATED:
                    self.created += 1
            elif opcode == 0x9:
                self._send(0xA, bytes(buf[start:start + n]))
            elif opcode == 0x8:
                self._send(0x8, bytes(buf[start:start + min(n, 2)]))
            pos = start + n
        del buf[:pos]

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshaken.done():
            self.handshaken.set_exception(exc or ConnectionError("closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self._send(0x8, struct.pack(">H", 1000))
            self.transport.close()


async def connect(url: str) -> CrowdSocket:
    """Open ``ws://host:port/path?query`` and complete the opening handshake."""
    u = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(CrowdSocket, u.hostname, u.port)
    key = base64.b64encode(os.urandom(16)).decode()
    path = u.path + (f"?{u.query}" if u.query else "")
    assert proto.transport is not None
    proto.transport.write(
        f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    await proto.handshaken
    return proto
