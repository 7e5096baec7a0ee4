"""Firing a node's commands: one thread hands each fired command to the engine's callback.

The replica core decides which commands fire (`replicas.replica`); `CommandDispatcher` runs
them in log order on the engine's callback, without letting a slow callback hold the show.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from eventlog import Event, State
from eventlog.logctx import ComponentLog

log = ComponentLog("cuelog.node")

#: how long a running command holds back the next one (see `CommandDispatcher`)
COMMAND_GRACE: Final = 0.25
#: fired commands waiting for the callback thread
COMMAND_QUEUE: Final = 10_000
#: most commands running at once (blocking GOs of cues that play together)
COMMAND_THREADS: Final = 256
#: a restore callback running longer than this is logged (commands wait for it)
RESTORE_WARN: Final = 5.0

#: ``command_callback(name, value, address)``: the engine plays a command
CommandCallback = Callable[[str, Any, str], Any]
#: ``restore_callback(state, why)``: see `replicas.node.NodeReplica`
RestoreCallback = Callable[[State, str], Any]


class _Restore:
    """A restore waiting in the command queue: the callback, a copy of the state, and why."""

    __slots__ = ("callback", "state", "why")

    def __init__(self, callback: RestoreCallback, state: State, why: str) -> None:
        self.callback = callback
        self.state = state
        self.why = why

    def run(self, log: ComponentLog, finished: threading.Event) -> None:
        try:
            self.callback(self.state, self.why)
        except Exception:
            log.exception("restore callback (%s) failed", self.why, seq=self.state.seq)
        finally:
            finished.set()


class CommandDispatcher:
    """Hands fired commands to the callback, in seq order, off the receive path.

    Each command runs on its own (pooled) thread, and the next one starts only when it has returned:
    commands never overlap or reorder. A callback that blocks (upstream's GO blocks for the
    whole cue) holds the next command back for at most `grace` seconds; after that the next
    one starts alongside it (logged), so a STOP can never be stuck behind a playing cue.
    The queue is bounded: a callback stuck for good makes later commands be dropped, loudly.
    A restore (`push_restore`) takes its place in that order, and the commands after it wait
    until it has returned.
    """

    def __init__(self, node_id: str, grace: float = COMMAND_GRACE) -> None:
        self.node_id = node_id
        self.log = log.for_node(node_id)
        self.grace = grace
        self.callback: CommandCallback | None = None
        #: told of each command as it is handed to the callback (the node reports it)
        self.on_fired: Callable[[Event], None] | None = None
        self._queue: queue.Queue[Event | _Restore | None] = queue.Queue(maxsize=COMMAND_QUEUE)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=COMMAND_THREADS, thread_name_prefix=f"cuelog-command-{node_id}"
        )
        self._thread = threading.Thread(
            target=self._run, name=f"cuelog-commands-{node_id}", daemon=True
        )
        self._thread.start()
        self.fired = 0

    def push(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.log.error(
                "command %s dropped: %d commands are waiting for the callback",
                event.op.target,
                COMMAND_QUEUE,
                seq=event.seq,
            )

    def push_restore(self, callback: RestoreCallback, state: State, why: str) -> None:
        """Queue ``callback(state, why)`` behind the commands already queued."""
        try:
            self._queue.put_nowait(_Restore(callback, state, why))
        except queue.Full:
            self.log.error(
                "restore (%s) dropped: %d commands are waiting for the callback",
                why,
                COMMAND_QUEUE,
                seq=state.seq,
            )

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            self.log.error("command queue full at shutdown")
        self._pool.shutdown(wait=False)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            if isinstance(event, _Restore):
                if not self._restore(event):
                    return
                continue
            callback = self.callback
            data = event.op.data or {}
            name = event.op.target
            seq = event.seq
            if callback is None:
                self.log.warning("command %s: no command callback set", name, seq=seq)
                continue
            finished = threading.Event()
            value = data.get("value")
            address = data.get("address", f"/engine/command/{name}")
            self.fired += 1
            self.log.info("firing command %s = %r", name, value, seq=seq)
            if self.on_fired is not None:
                self.on_fired(event)
            # a pooled thread: starting a new one per command costs ~0.5 ms on the GO path
            try:
                self._pool.submit(
                    self._call, self.log, callback, name, value, address, seq, finished
                )
            except RuntimeError:  # the interpreter is exiting (or the node stopped)
                self.log.warning("command %s not fired: shutting down", name, seq=seq)
                return
            if not finished.wait(self.grace):
                self.log.info(
                    "command %s still running after %.2f s; the next command may start",
                    name,
                    self.grace,
                    seq=seq,
                )

    def _restore(self, restore: _Restore) -> bool:
        """Run a restore callback and wait until it returns; False if shutting down."""
        seq = restore.state.seq
        finished = threading.Event()
        self.log.info("restore (%s) at seq %d", restore.why, restore.state.seq, seq=seq)
        try:
            self._pool.submit(restore.run, self.log, finished)
        except RuntimeError:
            self.log.warning("restore (%s) not run: shutting down", restore.why, seq=seq)
            return False
        started = time.monotonic()
        while not finished.wait(RESTORE_WARN):
            self.log.warning(
                "restore callback (%s) still running after %.0f s; commands wait for it",
                restore.why,
                time.monotonic() - started,
                seq=seq,
            )
        return True

    @staticmethod
    def _call(
        log: ComponentLog,
        callback: CommandCallback,
        name: str,
        value: Any,
        address: Any,
        seq: int,
        finished: threading.Event,
    ) -> None:
        try:
            callback(name, value, address)
        except Exception:
            log.exception("command callback for %s failed", name, seq=seq)
        finally:
            finished.set()
