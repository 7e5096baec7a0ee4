"""The gateway bench's baseline servers, each run in its own (spawned) process.

- ``raw_ws``: a bare websockets server sending the gateway's frames with no log and no core,
  one way per path (see `role_raw_ws`), and to a fan-out set;
- ``echo``: a websockets echo server and an NNG REP echo socket, the floor's two round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pynng
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import OPEN

from gateway import osc
from gateway.server import CHUNK
from gateway.view import DUMP_END
from tools.bench.common import Message
from tools.bench.gateway_link import Link
from tools.demo import free_port_pair


def write_chunk(conn: ServerConnection, frames: list[bytes]) -> None:
    """Frame every message, then hand the lot to the transport in one write (one syscall)."""
    for frame in frames:
        conn.protocol.send_binary(frame)
    conn.transport.write(b"".join(conn.protocol.data_to_send()))


async def role_raw_ws(cfg: Message, link: Link) -> None:
    """A bare websockets server: the same frames, no log, no core.

    The dump paths: ``/send`` sends the frames with one ``await send`` each (as the gateway's
    writer does); ``/write`` with one ``broadcast`` each (no await, still one transport write
    and so one syscall a frame); ``/batch`` frames `CHUNK` of them at a time and writes each
    chunk at once. ``/fan`` joins the fan-out set for the ``fanout`` command (``broadcast``
    per frame, or ``batch``). Every path ends what it sends with a ``dump_end`` frame.
    """
    dump: list[bytes] = cfg["dump"]
    fan: list[bytes] = cfg["fan"]
    end = osc.encode(DUMP_END, 0, "raw", "full")
    fans: set[ServerConnection] = set()

    async def handler(conn: ServerConnection) -> None:
        path = conn.request.path if conn.request is not None else "/"
        try:
            if path == "/send":
                for frame in dump:
                    await conn.send(frame)
                await conn.send(end)
            elif path == "/write":
                for frame in dump:
                    broadcast([conn], frame)
                broadcast([conn], end)
            elif path == "/batch":
                for start in range(0, len(dump), CHUNK):
                    write_chunk(conn, dump[start : start + CHUNK])
                    await conn.drain()
                write_chunk(conn, [end])
            else:
                fans.add(conn)
                await conn.send(end)
            await conn.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            fans.discard(conn)

    async def fanout(msg: Message) -> Message:
        targets = [conn for conn in fans if conn.protocol.state is OPEN]
        t_first = time.monotonic()
        for start in range(0, len(fan), CHUNK):
            chunk = fan[start : start + CHUNK]
            if msg.get("mode") == "batch":
                for conn in targets:
                    write_chunk(conn, chunk)
            else:
                for frame in chunk:
                    broadcast(targets, frame)
            await asyncio.sleep(0)
        return {"t_first": t_first, "t_committed": time.monotonic(), "clients": len(targets)}

    async with serve(
        handler, "127.0.0.1", 0, compression=None, max_size=osc.MAX_FRAME_BYTES
    ) as server:
        port = int(next(iter(server.sockets)).getsockname()[1])
        link.send(kind="ready", port=port)
        await link.serve({"fanout": fanout})


async def role_echo(cfg: Message, link: Link) -> None:
    """Loopback echo: a websockets server and an NNG REP socket (the floor's two hops)."""
    rep = pynng.Rep0()
    port = free_port_pair()
    rep.listen(f"tcp://127.0.0.1:{port}")

    def echo() -> None:
        while True:
            try:
                rep.send(rep.recv())
            except pynng.NNGException:
                return

    threading.Thread(target=echo, name="bench-nng-echo", daemon=True).start()

    async def handler(conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                await conn.send(message)

    try:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            ws_port = int(next(iter(server.sockets)).getsockname()[1])
            link.send(kind="ready", ws_port=ws_port, nng=f"tcp://127.0.0.1:{port}")
            await link.serve({})
    finally:
        rep.close()
