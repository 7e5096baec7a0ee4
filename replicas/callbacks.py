"""What the controller tells code in its own process about commits.

Two ways in, both fed in seq order: a `CommitListener` (the UI gateway) runs on the
controller's event loop before any submitter of a batch is answered; `OperationCallbacks`
(the seed API's per-type callbacks) run on one thread of their own (`CallbackRunner`), so a
slow callback never holds a commit back.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from eventlog import Event, Operation, OperationType, State
from eventlog.logctx import ComponentLog

log = ComponentLog("cuelog.controller")

#: committed events waiting for the operation callbacks' thread
CALLBACK_QUEUE: Final = 100_000

#: per operation type, what to call with each committed operation of that type
OperationCallbacks = dict[OperationType, Callable[[Operation], Any]]


class CommitListener(Protocol):
    """Something fed the controller's commit stream on its event loop (the UI gateway).

    `on_open` gets a private copy of the state at the head when the log is opened, before any
    commit; `on_commit` gets every committed batch, in seq order, before any submitter of that
    batch is answered (so an answered seq has already been seen). Both must be quick and
    must not raise.
    """

    def on_open(self, log_id: str, state: State) -> None: ...

    def on_commit(self, events: list[Event], reasons: list[str | None]) -> None: ...


class CallbackRunner:
    """Runs user callbacks for committed events on one thread, in seq order, off the loop."""

    def __init__(self, callbacks: Callable[[], OperationCallbacks], name: str) -> None:
        #: read at every event, so callbacks set after the controller started take effect
        self.callbacks = callbacks
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=CALLBACK_QUEUE)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.dropped = 0

    def push(self, events: list[Event]) -> None:
        """Queue callbacks; never blocks the controller. A callback that cannot keep up
        loses calls (counted and logged), never the log's events."""
        for event in events:
            if event.op.type in self.callbacks():
                try:
                    self._queue.put_nowait(event)
                except queue.Full:
                    self.dropped += 1
                    if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                        log.error(
                            "operation callbacks are %d events behind; %d calls dropped",
                            CALLBACK_QUEUE,
                            self.dropped,
                            seq=event.seq,
                        )

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            callback = self.callbacks().get(event.op.type)
            if callback is None:
                continue
            try:
                result = callback(event.op)
                if asyncio.iscoroutine(result):
                    asyncio.run(result)
            except Exception:
                log.exception("operation callback failed", seq=event.seq)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
