"""The UIs the gateway bench plays: a lean frame-counting client and a GO-sending client.

- `LeanClient` does websockets' handshake, then counts the server's frames from their headers
  (websockets' own parser would cost more than the server it measures);
- `CommandClient` sends GOs over a websockets connection and notes when each durable reply
  arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from pythonosc.osc_message import OscMessage
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from tools.bench.common import START_TIMEOUT
from tools.bench.gateway_show import DUMP_END_PREFIX, FAN_PREFIXES, GO_REPLY_PREFIX


class LeanClient(asyncio.Protocol):
    """A WebSocket client that reads frames without websockets' per-frame parser.

    websockets' own parser costs about 20 µs a frame in Python, so a 21,000-frame dump takes
    a websockets client some 0.4 s whatever the server does. This client does the handshake
    with websockets (its sans-I/O `ClientProtocol` writes the request and checks the server's
    101), then counts the server's frames (never masked, never fragmented here) from their
    headers, so what it measures is the server. It only reads.
    """

    def __init__(self, url: str, target: int | None = None) -> None:
        self.handshake = ClientProtocol(parse_uri(url), max_size=None)
        self.target = target
        self.opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.synced = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._rest = b""
        self.frames = 0
        #: fan-out frames received after the first dump_end
        self.matched = 0
        self.dump_ends: list[float] = []
        self.done_at: float | None = None

    @classmethod
    async def open(cls, url: str, target: int | None = None) -> LeanClient:
        where = parse_uri(url)
        loop = asyncio.get_running_loop()
        client = cls(url, target)
        await loop.create_connection(lambda: client, where.host, where.port)
        async with asyncio.timeout(START_TIMEOUT):
            await client.opened
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.handshake.send_request(self.handshake.connect())
        for data in self.handshake.data_to_send():
            transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.handshake.receive_data(bytes(self._head[: end + 4]))
            self.handshake.events_received()
            if self.handshake.state is not OPEN:
                why = self.handshake.handshake_exc
                self.opened.set_exception(ConnectionError(f"handshake refused: {why}"))
                self.close()
                return
            self.opened.set_result(time.monotonic())
            data = bytes(self._head[end + 4 :])
        buf = self._rest + data if self._rest else data
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if start + length > size:
                break
            if buf[pos] == 0x82:  # FIN, binary
                self._frame(buf, start)
            pos = start + length
        self._rest = buf[pos:]

    def _frame(self, buf: bytes, start: int) -> None:
        self.frames += 1
        if buf.startswith(DUMP_END_PREFIX, start):
            self.dump_ends.append(time.monotonic())
            self.synced.set()
        elif self.dump_ends and buf.startswith(FAN_PREFIXES, start):
            self.matched += 1
            if self.target is not None and self.matched >= self.target and self.done_at is None:
                self.done_at = time.monotonic()


class CommandClient:
    """A UI that sends GOs and notes when each reply arrives (by the reply's seq)."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.synced = asyncio.Event()
        self.replies: dict[int, tuple[float, str]] = {}
        self.unmatched: list[str] = []
        self.received = 0

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.conn:
                if not isinstance(frame, bytes):
                    continue
                self.received += 1
                if frame.startswith(GO_REPLY_PREFIX):
                    now = time.monotonic()
                    reply = json.loads(OscMessage(frame).params[0])
                    if isinstance(reply.get("seq"), int):
                        self.replies[reply["seq"]] = (now, str(reply.get("status")))
                    else:
                        self.unmatched.append(str(reply))
                elif frame.startswith(DUMP_END_PREFIX):
                    self.synced.set()

    async def send(self, frame: bytes) -> float:
        sent = time.monotonic()
        await self.conn.send(frame)
        return sent
