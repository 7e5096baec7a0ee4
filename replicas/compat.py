"""The seed-compatible API: engine code written against upstream's comms layer keeps working.

`NodeOperation`, `OperationType`, `ActionType`, `AsyncCommsThread`, `NodesHub` and
`NodeCommunications` keep upstream's names, arguments and JSON. Underneath, every call goes
through the log: a `NodeCommunications` is a full replica (``state``, ``applied_seq``,
``digest``) whose sends are queued in a bounded outbox, retried until acknowledged, and
return a future of their seq instead of being fire-and-forget.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

# imported before any comms thread exists, so pynng's atexit hook (nng_fini) is registered
# before ours and runs after it: sockets are closed before NNG tears itself down
import pynng  # noqa: F401

from eventlog import ActionType, Operation, OperationType, State, validate_operation
from eventlog.logctx import ComponentLog
from eventlog.operation import wire_form
from replicas.showkey import KEY_ENV, ShowKey

if TYPE_CHECKING:
    from replicas.controller import Controller
    from replicas.node import NodeReplica

log = ComponentLog("cuelog.compat")

#: upstream's default timeout (seconds) for `AsyncCommsThread.run_coroutine`
TIMEOUT: Final = 15.0
#: nodes send cue progress at most this often per cue (upstream's Tier-1 throttle)
CUE_STATUS_UPDATE_HZ: Final = 2
#: how long the exit hook waits, in all, for the comms threads to close their sockets
EXIT_TIMEOUT: Final = 10.0

__all__ = [
    "CUE_STATUS_UPDATE_HZ",
    "TIMEOUT",
    "ActionType",
    "AsyncCommsThread",
    "NodeCommunications",
    "NodeOperation",
    "NodesHub",
    "OperationType",
]


@dataclass
class NodeOperation:
    """An operation from/to a node, with upstream's fields and JSON (``op.__dict__()``)."""

    type: OperationType
    action: ActionType
    sender: str
    target: str
    data: dict[str, Any] | None = None

    def duplicate(self) -> NodeOperation:
        return NodeOperation(
            self.type, self.action, self.sender, self.target, self.data if self.data else {}
        )

    @staticmethod
    def from_message(message: Any) -> NodeOperation:
        """From anything with a ``data`` dict in upstream's wire form (or that dict itself)."""
        data = message if isinstance(message, dict) else message.data
        return NodeOperation.from_operation(
            validate_operation(
                {key: data.get(key) for key in ("type", "action", "sender", "target", "data")}
            )
        )

    @staticmethod
    def from_operation(op: Operation) -> NodeOperation:
        return NodeOperation(op.type, op.action, op.sender, op.target, op.data)

    def to_operation(self) -> Operation:
        """The validated core operation (raises `ValidationError`)."""
        return validate_operation(self.to_wire())

    def to_wire(self) -> dict[str, Any]:
        return wire_form(self.type, self.action, self.sender, self.target, self.data)

    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
        return self.to_wire()

    def __str__(self) -> str:
        what = "out" if not self.data else ""
        return (
            f"{type(self).__name__} by {self.sender}: {self.action.value} on "
            f"{self.type.value} {self.target} (with{what} data)"
        )


def _as_operation(operation: NodeOperation | Operation) -> Operation:
    if isinstance(operation, Operation):
        return operation
    return operation.to_operation()


# every started comms thread until its loop has closed (the exit hook stops and joins them)
_running: list[AsyncCommsThread] = []
_running_lock = threading.Lock()
_hook_registered = False


def _track(thread: AsyncCommsThread) -> None:
    global _hook_registered
    with _running_lock:
        if not _hook_registered:
            atexit.register(_stop_all_at_exit)
            _hook_registered = True
        if thread not in _running:
            _running.append(thread)


def _untrack(thread: AsyncCommsThread) -> None:
    with _running_lock:
        if thread in _running:
            _running.remove(thread)


def _stop_all_at_exit() -> None:
    """The atexit hook: stop every comms thread still running and wait for its loop to close
    (its sockets with it), at most `EXIT_TIMEOUT` seconds in all."""
    with _running_lock:
        threads = list(_running)
    for thread in threads:
        try:
            thread.stop()
        except Exception as exc:  # a subclass's stop failing must not skip the others
            log.debug("%s: stop at exit failed: %s", thread.name, exc)
    deadline = time.monotonic() + EXIT_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            # one plain line: the process is about to end
            print(
                f"cuelog: {thread.name} did not stop within {EXIT_TIMEOUT:g} s at exit "
                "(a task ignores cancellation?); NNG may abort the process",
                file=sys.stderr,
            )


class AsyncCommsThread(threading.Thread):
    """A daemon thread running an asyncio loop; subclasses return their tasks from
    `create_all_tasks`. Other threads call into the loop with `run_coroutine`.

    Lifetime, as in the seed: the loop runs from `start` until `stop`, even after every task
    ended (code that keeps ``event_loop`` and schedules on it keeps working); `stop` cancels
    the tasks, lets them close their sockets, stops the loop and then closes it (a call on
    ``event_loop`` after that raises ``RuntimeError`` at once instead of waiting forever).

    Exit safety: NNG aborts the process (SIGABRT, "pthread_mutex_lock: Invalid argument") when
    its sockets are still open as the interpreter tears it down. Every started comms thread is
    therefore stopped and joined by an `atexit` hook, whatever the caller did (no `stop`,
    `stop` without `join`, an exception escaping ``main``). The hook runs after threading's
    shutdown (so non-daemon threads, and commands still running on a node, may keep using the
    comms until they end) and before pynng's own ``nng_fini`` hook (registered when pynng was
    imported, above: atexit runs hooks last-registered first).
    """

    def __init__(self, **kwargs: Any) -> None:
        self.thread_name: str = kwargs.get("thread_name", type(self).__name__)
        super().__init__(name=self.thread_name, daemon=True)
        self.name = f"AsyncComms-{self.thread_name}"
        self.timeout: float = kwargs.get("timeout", TIMEOUT)
        self.stop_requested = False
        self.send_contexts: list[Any] = []
        self.event_loop: asyncio.AbstractEventLoop | None = None
        self.loop_ready = threading.Event()

    def start(self) -> None:
        _track(self)
        try:
            super().start()
        except BaseException:
            if not self.is_alive():  # (a second start() of a running thread keeps it tracked)
                _untrack(self)
            raise

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.event_loop = loop
        try:
            tasks = [loop.create_task(self._comms_main())]
            if self.stop_requested:  # stop() came before the loop existed
                tasks.append(loop.create_task(self.stop_async()))
            self.loop_ready.set()
            loop.run_forever()
            self._finish(loop)
        finally:
            loop.close()
            _untrack(self)
            log.debug("%s stopped", self.name)

    @staticmethod
    def _finish(loop: asyncio.AbstractEventLoop) -> None:
        """After the loop stopped: let any task still there end (closing its sockets)."""
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())

    async def _comms_main(self) -> None:
        try:
            await self.run_asyncio_comms()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed", self.name)
        else:
            if not self.stop_requested:
                log.debug("%s: every task ended; the loop runs until stop()", self.name)

    def stop(self) -> None:
        """Ask the loop to cancel its tasks and end (from any thread; does not wait)."""
        self.stop_requested = True
        loop = self.event_loop
        if loop is not None and self.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.stop_async(), loop)
            except RuntimeError as exc:
                log.debug("%s already stopping: %s", self.name, exc)

    async def stop_async(self) -> None:
        """Cancel every other task of the loop, wait for them, then stop the loop."""
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        asyncio.get_running_loop().stop()

    async def run_asyncio_comms(self) -> None:
        tasks = self.create_all_tasks()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if isinstance(result, Exception):
                log.error("%s task %d failed: %s: %s", self.name, i, type(result).__name__, result)

    def create_all_tasks(self) -> list[asyncio.Task[Any]]:
        raise NotImplementedError("create_all_tasks is not implemented")

    def run_coroutine(
        self,
        coroutine: Callable[[Any], Coroutine[Any, Any, Any]],
        message: Any,
        timeout: float | None = None,
    ) -> Any:
        """Run ``coroutine(message)`` on this thread's loop and wait for its result."""
        if not self.event_loop:
            raise AttributeError(f"{self.name} event loop is not initialized")
        if not asyncio.iscoroutinefunction(coroutine):
            raise TypeError(f"{self.name} parameter coroutine is not a coroutine function")
        wait = self.timeout if timeout is None else timeout
        future = asyncio.run_coroutine_threadsafe(coroutine(message), self.event_loop)
        try:
            return future.result(timeout=None if wait == -1 else wait)
        except BaseException:
            future.cancel()
            raise


def as_node_operations(
    callbacks: Mapping[OperationType, Callable[[NodeOperation], Any]],
) -> dict[OperationType, Callable[[Operation], Any]]:
    """The seed's callbacks (given a `NodeOperation`) as the controller's (given an
    `Operation`)."""

    def wrap(callback: Callable[[NodeOperation], Any]) -> Callable[[Operation], Any]:
        def call(op: Operation) -> Any:
            return callback(NodeOperation.from_operation(op))

        return call

    return {kind: wrap(callback) for kind, callback in callbacks.items()}


class NodesHub:
    """Upstream's hub, backed by the log: LISTENER runs a controller, DIALER a node replica."""

    class Mode(Enum):
        LISTENER = "listener"
        DIALER = "dialer"

    def __init__(
        self,
        hub_address: str,
        mode: NodesHub.Mode = Mode.LISTENER,
        *,
        node_id: str = "controller",
        db: str | Path | None = None,
        **options: Any,
    ) -> None:
        from replicas.controller import Controller
        from replicas.node import NodeReplica

        self.address = hub_address
        self.mode = mode
        self.node_id = node_id
        self._on_operation_received: dict[OperationType, Callable[..., Any]] | None = None
        self.controller: Controller | None = None
        self.replica: NodeReplica | None = None
        if (
            "key" not in options
            and os.environ.get(KEY_ENV)
            and hub_address.startswith(("tcp://", "tls+tcp://"))
        ):
            # engine code written against the seed passes no key: the environment names it
            # (for the addresses a key protects; ipc:// stays on this machine)
            options["key"] = ShowKey.load(os.environ[KEY_ENV])
        if mode is NodesHub.Mode.LISTENER:
            self.controller = Controller(
                db if db is not None else ":memory:", hub_address, **options
            )
        else:
            self.replica = NodeReplica(node_id, hub_address, db=db, **options)

    def set_receive_callbacks(self, callback_dict: dict[OperationType, Callable[..., Any]]) -> None:
        """Callbacks per operation type, called with a `NodeOperation` for every committed
        event of that type (controller side). On a node, COMMAND goes to the command callback."""
        self._on_operation_received = callback_dict
        if self.controller is not None:
            self.controller.callbacks = as_node_operations(callback_dict)

    async def start(self) -> None:
        if self.controller is not None:
            await self.controller.run()
        elif self.replica is not None:
            await self.replica.run()

    async def start_message_receiver(self) -> None:
        """Kept for upstream code: receiving is part of `start`; this returns at once."""

    async def send_operation(self, operation: NodeOperation | Operation) -> int:
        """Append an operation through the log; returns its seq once committed."""
        op = _as_operation(operation)
        if self.controller is not None:
            return (await self.controller.append_local([op]))[0]
        assert self.replica is not None
        return await asyncio.wrap_future(self.replica.submit(op))

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        if self.replica is not None:
            self.replica.stop()


class NodeCommunications(AsyncCommsThread):
    """A node engine's comms: a full replica of the show log plus a safe outbox.

    ``command_callback(command_name, value, address)`` runs once per live command, on its own
    thread, started in seq order. ``restore_callback(state, why)`` (or `set_restore_callback`)
    tells the engine what to restore: after a ``"start"``, a ``"restart"`` from its replica
    file or a ``"resync"``, once caught up, with a copy of the state, before any live command
    of the session fires (history never fires: a ``load`` the node missed is in the state,
    not in a command). Sends never block on the network: they return a
    `concurrent.futures.Future` of the op's seq (``.result(timeout)`` to wait) and raise
    `OutboxFull` when the controller has not acknowledged too many.
    """

    def __init__(
        self,
        hub_address: str,
        node_id: str,
        command_callback: Callable[[str, Any, str], Any] | None = None,
        restore_callback: Callable[[State, str], Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.node_id = node_id
        options.setdefault("cue_status_hz", CUE_STATUS_UPDATE_HZ)
        self.nng_hub = NodesHub(
            hub_address,
            NodesHub.Mode.DIALER,
            node_id=node_id,
            command_callback=command_callback,
            restore_callback=restore_callback,
            **options,
        )
        assert self.nng_hub.replica is not None
        self.replica: NodeReplica = self.nng_hub.replica

    # views -------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.replica.state

    @property
    def applied_seq(self) -> int:
        return self.replica.applied_seq

    @property
    def digest(self) -> str:
        return self.replica.digest

    # lifecycle ---------------------------------------------------------------------------

    def set_command_callback(self, callback: Callable[[str, Any, str], Any]) -> None:
        self.replica.commands.callback = callback

    def set_restore_callback(self, callback: Callable[[State, str], Any] | None) -> None:
        """See the class; set after the restore went by, it is called at once."""
        self.replica.set_restore_callback(callback)

    def create_all_tasks(self) -> list[asyncio.Task[Any]]:
        return [asyncio.ensure_future(self.nng_hub.start())]

    def stop(self) -> None:
        self.replica.stop()
        super().stop()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until this replica has caught up with the controller once."""
        return self.replica.synced.wait(timeout)

    # sending -----------------------------------------------------------------------------

    def send_operation(
        self, operation: NodeOperation | Operation, timeout: float | None = None
    ) -> concurrent.futures.Future[int]:
        """Queue an operation (never blocks on the network); the future gives its seq.

        ``timeout`` is accepted for upstream compatibility; wait with ``.result(timeout)``.
        """
        return self.replica.submit(_as_operation(operation))

    def _op(
        self, op_type: OperationType, action: ActionType, target: str, data: dict[str, Any] | None
    ) -> Operation:
        # validated once, in the caller's thread, when the outbox takes it
        return Operation(op_type, action, self.node_id, target, data)

    def add_player(
        self, player_id: str, data: dict[str, Any] | None = None, timeout: float | None = None
    ) -> concurrent.futures.Future[int]:
        return self.send_operation(
            self._op(OperationType.PLAYER, ActionType.ADD, player_id, data or None)
        )

    def remove_player(
        self, player_id: str, timeout: float | None = None
    ) -> concurrent.futures.Future[int]:
        return self.send_operation(
            self._op(OperationType.PLAYER, ActionType.REMOVE, player_id, None)
        )

    def add_cue(
        self, cue_id: str, offset: str, timeout: float | None = None
    ) -> concurrent.futures.Future[int]:
        op = self._op(OperationType.CUE, ActionType.ADD, cue_id, {"id": cue_id, "offset": offset})
        return self.replica.submit(op, key=f"cue:{cue_id}")

    def remove_cue(
        self, cue_id: str, timeout: float | None = None
    ) -> concurrent.futures.Future[int]:
        op = self._op(OperationType.CUE, ActionType.REMOVE, cue_id, {"id": cue_id})
        return self.replica.submit(op, key=f"cue:{cue_id}")

    def update_nextcue(
        self, cue_id: str, timeout: float | None = None
    ) -> concurrent.futures.Future[int]:
        return self.send_operation(
            self._op(OperationType.STATUS, ActionType.UPDATE, "nextcue", {"nextcue": cue_id})
        )

    def send_status(
        self, target: str, data: dict[str, Any] | None = None
    ) -> concurrent.futures.Future[int]:
        """A status update from this node (``armed_ready``, ``cue_enabled`` ...)."""
        return self.send_operation(self._op(OperationType.STATUS, ActionType.UPDATE, target, data))

    def update_cue(
        self, cue_id: str, percentage: int, timeout: float | None = None
    ) -> concurrent.futures.Future[int]:
        """Cue progress, coalesced per cue to `CUE_STATUS_UPDATE_HZ` (latest value wins)."""
        op = self._op(
            OperationType.CUE, ActionType.UPDATE, cue_id, {"id": cue_id, "percentage": percentage}
        )
        return self.replica.submit_coalesced(f"cue:{cue_id}", op)
