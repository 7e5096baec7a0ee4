"""Running the application's handlers: one thread, in order, never on the event loop.

`HandlerThread` calls queued handlers one at a time on its own thread (an async handler runs
on the comms loop, and the next call waits for it). `CommittedCommands` is a commit listener
that queues a command handler's call for each UI command the log made durable and accepted
(`handler_calls` is that rule, on values only). The handler tables live in
`gateway.compat`'s `ControllerCommunications`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from eventlog import CONTROLLER, Event, OperationType, State
from eventlog.logctx import ComponentLog
from gateway.commands import LOCAL_COMMAND, UI_SENDER

log = ComponentLog("cuelog.compat")

#: handler calls waiting for the handler thread; beyond it calls are dropped, loudly
HANDLER_QUEUE: Final = 10_000

CommandHandler = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class CommandEntry:
    """A registered command handler, and whether its messages go to the nodes."""

    handler: CommandHandler
    forward: bool


def handler_calls(
    events: list[Event], reasons: list[str | None], handlers: dict[str, CommandEntry]
) -> list[tuple[CommandHandler, Any, str]]:
    """The (handler, value, address) calls a committed batch asks for: a UI command the
    reducer accepted, or a `LOCAL_COMMAND` the controller recorded, on a registered address.
    History never calls a handler: only batches committed while running come here."""
    calls = []
    for event, reason in zip(events, reasons, strict=False):
        op = event.op
        if op.type is OperationType.COMMAND:
            if reason is not None or not op.sender.startswith(UI_SENDER):
                continue
        elif not (
            op.type is OperationType.STATUS
            and op.target == LOCAL_COMMAND
            and op.sender == CONTROLLER
        ):
            continue
        data = op.data or {}
        address = data.get("address")
        if not isinstance(address, str):
            continue
        entry = handlers.get(address)
        if entry is not None:
            calls.append((entry.handler, data.get("value"), address))
    return calls


class HandlerThread:
    """Runs application handlers on one thread, in the order they were queued."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, node: str) -> None:
        self._loop = loop
        self._timeout = timeout
        self.log = log.for_node(node)
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], str] | None] = (
            queue.Queue(maxsize=HANDLER_QUEUE)
        )
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="cuelog-handlers", daemon=True)
        self._thread.start()

    def push(self, handler: Callable[..., Any], args: tuple[Any, ...], address: str) -> None:
        try:
            self._queue.put_nowait((handler, args, address))
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                self.log.error(
                    "OSC handlers are %d calls behind; %d calls dropped (a handler is stuck?)",
                    HANDLER_QUEUE,
                    self.dropped,
                )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            handler, args, address = item
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    # an async handler runs on the comms loop; the next waits for it
                    asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result(
                        self._timeout
                    )
            except Exception:
                self.log.exception("handler for %s failed", address)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


class CommittedCommands:
    """A commit listener: calls command handlers for the UI messages the log accepted."""

    def __init__(self, handlers: dict[str, CommandEntry]) -> None:
        self.handlers = handlers
        #: set once the comms loop runs (before that nothing is committed)
        self.runner: HandlerThread | None = None

    def on_open(self, log_id: str, state: State) -> None:
        """Nothing to do: history never calls a handler."""

    def on_commit(self, events: list[Event], reasons: list[str | None]) -> None:
        runner = self.runner
        if not self.handlers or runner is None:
            return
        for handler, value, address in handler_calls(events, reasons, self.handlers):
            runner.push(handler, (value,), address)
