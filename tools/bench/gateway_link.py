"""A gateway bench child's end of its pipe to the bench, and a start with a deadline.

The gateway bench's roles run in ``multiprocessing`` (spawn) children; each gets one pipe.
`Link.serve` runs the handler of each command the bench sends, on the role's own loop, and
sends back its reply (or an ``error``); ``cpu`` is answered for every role.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from tools.bench.common import START_TIMEOUT, Message, PhaseError, log

Handler = Callable[[Message], Awaitable[Message]]


class Link:
    """A child's end of its pipe to the bench: messages out, commands in."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, **fields: Any) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(fields)

    async def serve(self, handlers: dict[str, Handler]) -> None:
        """Run each command's handler on this loop, one at a time, until ``stop``."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Message] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    msg = {"cmd": "stop"}
                try:
                    loop.call_soon_threadsafe(inbox.put_nowait, msg)
                except RuntimeError:
                    return  # the loop is closed
                if msg.get("cmd") == "stop":
                    return

        threading.Thread(target=read, name="bench-link", daemon=True).start()
        while True:
            msg = await inbox.get()
            cmd = str(msg.get("cmd"))
            if cmd == "stop":
                return
            try:
                if cmd == "cpu":
                    result: Message = {"cpu_s": time.process_time()}
                else:
                    result = await handlers[cmd](msg)
            except Exception as exc:
                log.exception("command %s failed", cmd)
                self.send(kind="error", id=msg.get("id"), error=f"{type(exc).__name__}: {exc}")
            else:
                self.send(kind="reply", id=msg.get("id"), **result)


async def started(ready: asyncio.Event, tasks: list[asyncio.Task[None]], what: str) -> None:
    """Wait for `ready`; raise what a task died of if one ends first."""
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait(
        {waiter, *tasks}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    if waiter in done:
        return
    waiter.cancel()
    for task in done:
        task.result()
    raise PhaseError(f"{what} not ready within {START_TIMEOUT:g} s")
