"""The node replica process: NNG sockets and asyncio tasks around `ReplicaCore`.

A node dials one controller address (REQ for hello/submit/fetch/beat, SUB on the derived
event address), redials forever with backoff and says so in its log. It applies the event
stream in order, pulls any hole, heartbeats ``(applied_seq, digest)``, and sends its own
operations through a bounded outbox that retries until each op is acknowledged (op ids make
retries safe). Commands the core says to fire go to the command callback on worker threads,
started one at a time in seq order, so a GO that blocks for a whole cue never stalls
receiving nor a later STOP.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pynng

from eventlog import (
    ActionType,
    CuelogError,
    Event,
    EventLog,
    Operation,
    OperationType,
    State,
    check_node_id,
    dumps,
    validate_operation,
)
from replicas import protocol
from replicas.nngio import close_all, guarded
from replicas.outbox import (
    Items,
    Outbox,
    OutboxFull,
    SubmitterCore,
)
from replicas.protocol import ProtocolError, Rule
from replicas.replica import (
    DEFAULT_MAX_COMMAND_AGE,
    MemoryStore,
    ReplicaCore,
    ReplicaStore,
)
from replicas.replica_file import ReplicaFile
from replicas.showkey import ShowKey, diagnose, secure

log = logging.getLogger("cuelog.node")

BEAT_INTERVAL: Final = 0.25
REQUEST_TIMEOUT: Final = 2.0
OUTBOX_SIZE: Final = 10_000
#: how long a running command holds back the next one (see `CommandDispatcher`)
#: the status target a node reports each fired command under: {seq, command, delay_ms}
FIRED: Final = "fired"
COMMAND_GRACE: Final = 0.25
#: fired commands waiting for the callback thread
COMMAND_QUEUE: Final = 10_000
#: most commands running at once (blocking GOs of cues that play together)
COMMAND_THREADS: Final = 256
#: submits in flight at once. The controller keeps each node's order for any depth (see
#: `_submitter`); on loopback with 2 cores, 1 measured best (more requests cost more CPU than
#: the queueing they save); a node on a slow link may want 2.
SUBMIT_DEPTH: Final = 1
#: catch-up requests in flight at once (the controller reads ahead while the node applies)
FETCH_DEPTH: Final = 3

CommandCallback = Callable[[str, Any, str], Any]
#: ``restore_callback(state, why)``: see `NodeReplica`
RestoreCallback = Callable[[State, str], Any]
#: a restore callback running longer than this is logged (commands wait for it)
RESTORE_WARN: Final = 5.0


class _Restore:
    """A restore waiting in the command queue: the callback, a copy of the state, and why."""

    __slots__ = ("callback", "state", "why")

    def __init__(self, callback: RestoreCallback, state: State, why: str) -> None:
        self.callback = callback
        self.state = state
        self.why = why

    def run(self, extra: dict[str, Any], finished: threading.Event) -> None:
        try:
            self.callback(self.state, self.why)
        except Exception:
            log.exception("restore callback (%s) failed", self.why, extra=extra)
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
            log.error(
                "command %s dropped: %d commands are waiting for the callback",
                event.op.target,
                COMMAND_QUEUE,
                extra={"node": self.node_id, "seq": event.seq},
            )

    def push_restore(self, callback: RestoreCallback, state: State, why: str) -> None:
        """Queue ``callback(state, why)`` behind the commands already queued."""
        try:
            self._queue.put_nowait(_Restore(callback, state, why))
        except queue.Full:
            log.error(
                "restore (%s) dropped: %d commands are waiting for the callback",
                why,
                COMMAND_QUEUE,
                extra={"node": self.node_id, "seq": state.seq},
            )

    def close(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            log.error("command queue full at shutdown", extra={"node": self.node_id})
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
            extra = {"node": self.node_id, "seq": event.seq}
            if callback is None:
                log.warning("command %s: no command callback set", name, extra=extra)
                continue
            finished = threading.Event()
            value = data.get("value")
            address = data.get("address", f"/engine/command/{name}")
            self.fired += 1
            log.info("firing command %s = %r", name, value, extra=extra)
            if self.on_fired is not None:
                self.on_fired(event)
            # a pooled thread: starting a new one per command costs ~0.5 ms on the GO path
            try:
                self._pool.submit(self._call, callback, name, value, address, extra, finished)
            except RuntimeError:  # the interpreter is exiting (or the node stopped)
                log.warning("command %s not fired: shutting down", name, extra=extra)
                return
            if not finished.wait(self.grace):
                log.info(
                    "command %s still running after %.2f s; the next command may start",
                    name,
                    self.grace,
                    extra=extra,
                )

    def _restore(self, restore: _Restore) -> bool:
        """Run a restore callback and wait until it returns; False if shutting down."""
        extra = {"node": self.node_id, "seq": restore.state.seq}
        finished = threading.Event()
        log.info("restore (%s) at seq %d", restore.why, restore.state.seq, extra=extra)
        try:
            self._pool.submit(restore.run, extra, finished)
        except RuntimeError:
            log.warning("restore (%s) not run: shutting down", restore.why, extra=extra)
            return False
        started = time.monotonic()
        while not finished.wait(RESTORE_WARN):
            log.warning(
                "restore callback (%s) still running after %.0f s; commands wait for it",
                restore.why,
                time.monotonic() - started,
                extra=extra,
            )
        return True

    @staticmethod
    def _call(
        callback: CommandCallback,
        name: str,
        value: Any,
        address: Any,
        extra: dict[str, Any],
        finished: threading.Event,
    ) -> None:
        try:
            callback(name, value, address)
        except Exception:
            log.exception("command callback for %s failed", name, extra=extra)
        finally:
            finished.set()


class NodeReplica:
    """A node: a full replica of the controller's log plus an outbox for its own operations.

    ``restore_callback(state, why)`` tells the engine what it must restore, once per session
    and after every resync: ``why`` is ``"start"`` (it began empty), ``"restart"`` (it resumed
    from its own replica file) or ``"resync"`` (its replica was rebuilt from the controller's
    snapshot, or it held another log). It is called once the replica has caught up, with a
    copy of the state at that seq, on a command thread, and every live command of the session
    (a command that arrives while it catches up is held) fires after it has returned.
    """

    def __init__(
        self,
        node_id: str,
        controller: str,
        *,
        db: str | Path | None = None,
        command_callback: CommandCallback | None = None,
        restore_callback: RestoreCallback | None = None,
        beat_interval: float = BEAT_INTERVAL,
        request_timeout: float = REQUEST_TIMEOUT,
        outbox_size: int = OUTBOX_SIZE,
        max_command_age: float = DEFAULT_MAX_COMMAND_AGE,
        cue_status_hz: float = 2.0,
        submit_depth: int = SUBMIT_DEPTH,
        key: ShowKey | None = None,
    ) -> None:
        protocol.check_address(controller)
        self.submit_depth = max(1, submit_depth)
        self.node_id = check_node_id(node_id)  # one rule for ids: raises ValidationError
        #: with a show key the node dials with TLS and proves it holds the key
        self.key = key
        self.controller = secure(controller, key)
        self.db = None if db is None else str(db)
        self.beat_interval = beat_interval
        self.request_timeout = request_timeout
        self.max_command_age = max_command_age
        self.cue_interval = 1.0 / cue_status_hz
        origin, self._secret = protocol.new_origin(node_id)
        self.outbox = Outbox(node_id, outbox_size, origin)
        self.submitter = SubmitterCore(self.outbox, node_id)
        self.commands = CommandDispatcher(node_id)
        self.commands.callback = command_callback
        self.commands.on_fired = self._report_fired
        self.restore_callback = restore_callback
        #: why the engine must restore once caught up (None: nothing owed)
        self._restore_owed: str | None = None
        #: commands to fire once the owed restore is delivered
        self._held: list[Event] = []
        self._resyncs_seen = 0
        #: a restore that found no callback set (`set_restore_callback` delivers it late)
        self._restore_missed: str | None = None
        self.core: ReplicaCore | None = None
        #: the replica file (with --db): it keeps following in memory if the file fails
        self._file: ReplicaFile | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._fetch_wake = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._coalesce: dict[str, tuple[Operation, list[concurrent.futures.Future[int]]]] = {}
        self._coalesce_lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._reachable = False
        #: said once: another live process holds this node id
        self._id_refused = False
        #: why the controller could not be reached, last time that was looked into ("" if not)
        self.unreachable_why = ""
        #: set while this connection's hello was welcomed (the controller takes submits
        #: only from a connection that said hello); cleared when it says otherwise
        self._welcomed: asyncio.Event | None = None
        self.started = threading.Event()
        self.synced = threading.Event()
        #: called on the node's loop with each batch of applied events (set before `run`)
        self.on_applied: Callable[[list[Event]], None] | None = None

    # ------------------------------------------------------------------ views (any thread)

    @property
    def state(self) -> State:
        return self.core.state if self.core is not None else State()

    @property
    def applied_seq(self) -> int:
        return self.core.applied if self.core is not None else 0

    @property
    def digest(self) -> str:
        return self.core.digest() if self.core is not None else ""

    def _extra(self) -> dict[str, Any]:
        return {"node": self.node_id, "seq": self.applied_seq}

    # ------------------------------------------------------------------ sending (any thread)

    def submit(self, op: Operation, key: str | None = None) -> concurrent.futures.Future[int]:
        """Queue an operation for the controller; the future gives its seq once committed.

        Never blocks on the network. Raises `OutboxFull` when too many are unacknowledged and
        `ValidationError` when the operation itself is invalid. With a `key` (``cue:<id>``),
        a progress update still held back for that key is superseded by this operation, so it
        can never arrive after it (a progress after its cue's remove, say).
        """
        if key is None:
            return self.outbox.put(op)
        with self._coalesce_lock:
            held = self._coalesce.pop(key, None)
            sent = self.outbox.put(op)
        if held is not None:
            _chain(sent, held[1])
        return sent

    def submit_coalesced(self, key: str, op: Operation) -> concurrent.futures.Future[int]:
        """Like `submit`, but at most `cue_status_hz` per key; the latest value wins.

        An update within the interval is held (replacing any held one) and sent when the
        interval ends; every caller's future gets the seq of the value that was sent.
        """
        op = validate_operation(op)
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        now = time.monotonic()
        with self._coalesce_lock:
            held = self._coalesce.get(key)
            if held is not None:
                self._coalesce[key] = (op, [*held[1], future])
                return future
            last = self._last_sent.get(key, -1e9)
            loop = self._loop
            if now - last >= self.cue_interval or loop is None or loop.is_closed():
                self._last_sent[key] = now
                return self.outbox.put(op, validated=True)
            if len(self.outbox) >= self.outbox.maxsize:
                raise OutboxFull(f"node {self.node_id}: outbox full")
            self._coalesce[key] = (op, [future])
        delay = last + self.cue_interval - now
        loop.call_soon_threadsafe(loop.call_later, delay, self._flush_key, key)
        return future

    def _flush_key(self, key: str) -> None:
        with self._coalesce_lock:
            held = self._coalesce.pop(key, None)
            if held is None:
                return
            self._last_sent[key] = time.monotonic()
            try:
                sent = self.outbox.put(held[0], validated=True)
            except CuelogError as exc:
                for fut in held[1]:
                    fut.set_exception(exc)
                return
        _chain(sent, held[1])

    # ------------------------------------------------------------------ lifecycle

    def _open_store(self) -> ReplicaStore:
        if self.db is None:
            return MemoryStore()
        self._file = ReplicaFile(self._open_file(), node_id=self.node_id, reopen=self._open_file)
        return self._file

    def _open_file(self) -> EventLog:
        """The replica file: this node's alone (writer lock), never the controller's log."""
        assert self.db is not None
        owner = {"what": f"cuelog node {self.node_id}", "listen": self.controller}
        return EventLog.open(self.db, synchronous="NORMAL", role="replica", owner=owner)

    async def run(self) -> None:
        """Run until cancelled (or `stop`); sockets and the replica file are closed on exit."""
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._fetch_wake = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._welcomed = asyncio.Event()
        loop = self._loop
        wake = self._outbox_wake

        def wake_up() -> None:
            loop.call_soon_threadsafe(wake.set)

        self.outbox.wake = wake_up
        store = await asyncio.to_thread(self._open_store)
        self.core = ReplicaCore(
            self.node_id,
            store,
            max_command_age=self.max_command_age,
            instance=self.outbox.origin,
            secret=self._secret,
        )
        self.core.on_applied = self.on_applied
        self._start_session(resumed=store.head > 0)
        events_addr = protocol.events_address(self.controller)
        tls = {} if self.key is None else {"tls_config": self.key.client()}
        req = pynng.Req0(
            recv_max_size=protocol.NNG_MAX_BYTES,
            reconnect_time_min=100,
            reconnect_time_max=2000,
            **tls,
        )
        sub = pynng.Sub0(
            recv_max_size=protocol.NNG_MAX_BYTES,
            recv_buffer_size=1024,
            reconnect_time_min=100,
            reconnect_time_max=2000,
            **tls,
        )
        sub.subscribe(b"")
        contexts: list[Any] = []
        try:
            if store.head:
                log.info(
                    "resuming from replica file %s at seq %d (log %s)",
                    self.db,
                    store.head,
                    store.log_id,
                    extra=self._extra(),
                )
            log.info(
                "dialing controller %s (events %s)",
                self.controller,
                events_addr,
                extra=self._extra(),
            )
            req.dial(self.controller, block=False)
            sub.dial(events_addr, block=False)
            self.started.set()
            if len(self.outbox):
                self._outbox_wake.set()
            contexts = [req.new_context() for _ in range(2 + FETCH_DEPTH + self.submit_depth)]
            fetching = contexts[2 : 2 + FETCH_DEPTH]
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._control(contexts[0], fetching))
                tasks.create_task(self._receive(sub))
                tasks.create_task(self._beats(contexts[1]))
                tasks.create_task(self._submitter(contexts[2 + FETCH_DEPTH :]))
                tasks.create_task(self._watch_connection(req))
        except asyncio.CancelledError:
            pass
        finally:
            close_all(contexts, req, sub)
            self.commands.close()
            with self._coalesce_lock:
                held, self._coalesce = self._coalesce, {}
            for _, futures in held.values():
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(CuelogError(f"node {self.node_id} stopped"))
            log.info("node stopped", extra=self._extra())
            if self._file is not None:
                self.core = None
                self._file.elog.close()

    def stop(self) -> None:
        """Ask the node to stop (from any thread; safe to call twice or after it ended)."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(task.cancel)

    # ------------------------------------------------------------------ tasks

    async def _request(self, ctx: Any, msg: dict[str, Any]) -> dict[str, Any] | None:
        return (await self._sized_request(ctx, msg))[0]

    async def _sized_request(
        self, ctx: Any, msg: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, int]:
        """The reply to `msg` (None if it failed) and its size in bytes."""
        try:
            async with asyncio.timeout(self.request_timeout):
                await guarded(ctx.asend(dumps(msg)))
                raw = await guarded(ctx.arecv())
        except TimeoutError:
            return None, 0
        except pynng.NNGException as exc:
            log.debug("request %s failed: %s", msg.get("k"), exc, extra=self._extra())
            return None, 0
        try:
            return protocol.decode(raw, limit=protocol.NNG_MAX_BYTES), len(raw)
        except ProtocolError as exc:
            log.warning("bad reply to %s: %s", msg.get("k"), exc, extra=self._extra())
            return None, 0

    def _fire(self, events: list[Event]) -> None:
        self._note_resync()
        for event in events:
            if event.op.target == "ping":
                pong = Operation(OperationType.STATUS, ActionType.UPDATE, self.node_id, "pong", {})
                with contextlib.suppress(CuelogError):
                    self.outbox.put(pong)
                continue
            if self._restore_owed is not None:
                self._held.append(event)  # fired once the engine has restored
            else:
                self.commands.push(event)

    def _report_fired(self, event: Event) -> None:
        """Tell the log this node fired `event`'s command, and how long after its commit
        (on the controller's clock as this node estimates it): the post-mortem's evidence."""
        core = self.core
        delay = None
        if core is not None and core.offset is not None:
            delay = round((time.monotonic() + core.offset - event.ts) * 1000, 1)
        report = {"seq": event.seq, "command": event.op.target, "delay_ms": delay}
        op = Operation(OperationType.STATUS, ActionType.UPDATE, self.node_id, FIRED, report)
        try:
            self.outbox.put(op)
        except CuelogError as exc:
            log.warning("could not report firing: %s", exc, extra=self._extra())

    def _start_session(self, resumed: bool) -> None:
        """A new session of `core`: the engine is owed a restore once it caught up."""
        assert self.core is not None
        self._restore_owed = "restart" if resumed else "start"
        self._resyncs_seen = self.core.resyncs
        self._held = []

    def _need_hello(self) -> None:
        """Say hello again before anything else (a new connection, or the id changed hands)."""
        if self.core is not None:
            self.core.need_hello = True
        if self._welcomed is not None:
            self._welcomed.clear()
        self._fetch_wake.set()

    def _note_resync(self) -> None:
        core = self.core
        if core is not None and core.resyncs != self._resyncs_seen:
            self._resyncs_seen = core.resyncs
            self._restore_owed = "resync"

    def _deliver_restore(self) -> None:
        """The replica caught up: queue the owed restore, then the commands held for it."""
        core = self.core
        why = self._restore_owed
        assert core is not None and why is not None
        self._restore_owed = None
        callback = self.restore_callback
        if callback is not None:
            self._restore_missed = None
            self.commands.push_restore(callback, core.state.copy(), why)
        else:
            self._restore_missed = why
        held, self._held = self._held, []
        for event in held:
            self.commands.push(event)

    def set_restore_callback(self, callback: RestoreCallback | None) -> None:
        """Set (or clear) the restore callback, from any thread. Set after this session's
        restore went by without one, it is called at once with the state as it is now."""
        self.restore_callback = callback
        loop = self._loop
        if callback is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._late_restore)

    def _late_restore(self) -> None:
        why, callback, core = self._restore_missed, self.restore_callback, self.core
        if why is None or callback is None or core is None or self._restore_owed is not None:
            return
        self._restore_missed = None
        self.commands.push_restore(callback, core.state.copy(), why)

    def _after_input(self) -> None:
        core = self.core
        assert core is not None
        self._note_resync()
        if core.synced and self._restore_owed is not None:
            self._deliver_restore()
        if core.synced and not self.synced.is_set():
            log.info("in sync with the controller", extra=self._extra())
            self.synced.set()
        if core.need_hello or core.applied < core.known_head or core.pending:
            self._fetch_wake.set()

    async def _control(self, ctx: Any, fetch_contexts: list[Any]) -> None:
        core = self.core
        assert core is not None
        backoff = 0.1
        while True:
            if core.need_hello:
                reply = await self._request(ctx, core.hello())
                if reply is not None and reply.get("rule") in (Rule.ID_IN_USE, Rule.ORIGIN_IN_USE):
                    if not self._id_refused:
                        self._id_refused = True
                        log.error(
                            "%s; waiting until it is gone", reply.get("error"), extra=self._extra()
                        )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if reply is None or reply.get("k") != "welcome":
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                try:
                    core.on_welcome(reply, time.monotonic())
                except ProtocolError as exc:
                    log.warning("bad welcome: %s", exc, extra=self._extra())
                    continue
                backoff = 0.1
                if self._welcomed is not None:
                    self._welcomed.set()
                self._after_input()
            fetch = core.next_fetch()
            if fetch is None:
                self._fetch_wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await self._fetch_wake.wait()
                continue
            if await self._catch_up(fetch, fetch_contexts):
                backoff = 0.1
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _catch_up(self, fetch: dict[str, Any], contexts: list[Any]) -> bool:
        """Run `fetch` and, while the replies say there is more, keep up to
        ``len(contexts) - 1`` further chunks in flight while this one is applied, so the
        controller reads ahead while this node applies. False if a request failed.

        The controller cuts a reply at ``protocol.MAX_FRAME_BYTES``, so a reply may hold fewer
        events than asked for: the chunks asked for next are then as many events as that cut
        reply held (big events: every chunk is one reply's worth, and none leaves a hole). A
        hole left all the same (event sizes vary) ends this round once the chunks in flight
        landed; the next round fetches it. Chunks grow back while replies stay small."""
        core = self.core
        assert core is not None
        free = list(contexts)
        # when events after a hole are buffered, the hole is what this round fetches
        hole_end = min(core.pending) - 1 if core.pending else None
        span = core.fetch_limit
        first = fetch
        asked: tuple[int, int] | None = None
        if isinstance(fetch.get("after"), int) and isinstance(fetch.get("limit"), int):
            asked = (fetch["after"], fetch["limit"])
        base = {k: v for k, v in fetch.items() if k not in ("after", "limit")}
        ctx = free.pop()
        reply, size = await self._sized_request(ctx, first)
        free.append(ctx)
        inflight: collections.deque[
            tuple[Any, tuple[int, int], asyncio.Task[tuple[dict[str, Any] | None, int]]]
        ]
        inflight = collections.deque()
        asked_end = -1 if asked is None else sum(asked)
        cut = False
        try:
            while reply is not None:
                last, head = reply.get("last"), reply.get("head")
                if (
                    reply.get("k") == "events"
                    and isinstance(last, int)
                    and isinstance(head, int)
                    and asked is not None
                ):
                    q_after, q_limit = asked
                    q_end = q_after + q_limit
                    if last < min(head, q_end):  # cut by bytes
                        span = max(1, last - q_after)
                        if asked_end > q_end:
                            cut = True  # the chunks in flight start past a hole
                        else:
                            asked_end = last
                    elif size * 2 * 6 <= protocol.MAX_FRAME_BYTES:
                        span = min(core.fetch_limit, 2 * span)  # far from the cut: grow back
                    goal = head if hole_end is None else min(head, hole_end)
                    while free and not cut and asked_end < goal:
                        limit = min(core.fetch_limit, span, goal - asked_end)
                        ctx = free.pop()
                        ask = {**base, "after": asked_end, "limit": limit}
                        task = asyncio.ensure_future(self._sized_request(ctx, ask))
                        inflight.append((ctx, (asked_end, limit), task))
                        asked_end += limit
                try:
                    self._fire(core.on_fetch_reply(reply, time.monotonic()))
                except (ProtocolError, CuelogError) as exc:
                    log.warning("bad fetch reply: %s", exc, extra=self._extra())
                    break
                self._after_input()
                if not inflight:
                    return True
                ctx, asked, pending = inflight.popleft()
                reply, size = await pending
                free.append(ctx)
                core.fetching = True
        finally:
            for _, _, task in inflight:
                task.cancel()
        core.on_fetch_failed()
        return False

    async def _receive(self, sub: Any) -> None:
        core = self.core
        assert core is not None
        while True:
            raw = await guarded(sub.arecv())
            try:
                msg = protocol.decode(raw, limit=protocol.NNG_MAX_BYTES)
                self._fire(core.on_frame(msg, time.monotonic()))
            except (ProtocolError, CuelogError) as exc:
                log.warning("dropped a bad frame: %s", exc, extra=self._extra())
            self._after_input()

    async def _beats(self, ctx: Any) -> None:
        core = self.core
        assert core is not None
        while True:
            if core.controller_log is not None:
                beat = core.beat()
                reply = await self._request(ctx, beat)
                wanted = core.need_hello
                core.on_beat_reply(beat, reply, time.monotonic())
                if core.need_hello and not wanted:
                    self._need_hello()
                if reply is not None and reply.get("k") == "ok":
                    self._after_input()
            if self._file is not None and not self._file.healthy:
                self._file.retry()  # a failing replica file is caught up even when idle
            await asyncio.sleep(self.beat_interval)

    async def _submitter(self, contexts: list[Any]) -> None:
        """Send the outbox in order, with up to ``len(contexts)`` submits in flight; what to
        send and what each reply means is `SubmitterCore`'s. Each submit is chained after the
        one before it, so the controller keeps this node's order even when a later one
        overtakes an earlier one. After a failure, every submit in flight is awaited and the
        unacknowledged ops are sent again from the oldest (op ids make that safe)."""
        core = self.submitter
        free = list(contexts)
        inflight: collections.deque[tuple[Any, Items, asyncio.Task[Any]]]
        inflight = collections.deque()
        wake = self._outbox_wake
        while True:
            if not inflight and self._welcomed is not None and not self._welcomed.is_set():
                with contextlib.suppress(TimeoutError):  # submits wait for the hello
                    async with asyncio.timeout(1.0):
                        await self._welcomed.wait()
            while free:
                found = core.next_submit()
                if found is None:
                    break
                msg, items = found
                ctx = free.pop()
                inflight.append((ctx, items, asyncio.ensure_future(self._request(ctx, msg))))
            if not inflight:
                wake.clear()
                if not len(self.outbox):
                    await wake.wait()
                continue
            ctx, items, task = inflight[0]
            if free and not task.done():
                wake.clear()
                self.outbox.want_wake = True
                if core.more:  # more arrived meanwhile: send them alongside
                    self.outbox.want_wake = False
                    continue
                waker = asyncio.ensure_future(wake.wait())
                await asyncio.wait({task, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                self.outbox.want_wake = False
                if not task.done():
                    continue
            reply = await task
            inflight.popleft()
            free.append(ctx)
            verdict = core.on_reply(items, reply)
            if verdict.hello:
                self._need_hello()
            if not verdict.resend:
                continue
            # a failure: let the rest land (their acks count), then resend from the oldest
            while inflight:
                ctx2, items2, task2 = inflight.popleft()
                later = await task2
                free.append(ctx2)
                core.on_late_reply(items2, later)
            core.resend_from_oldest()
            if verdict.delay:
                await asyncio.sleep(verdict.delay)

    async def _watch_connection(self, req: Any) -> None:
        """Say in the log when the controller is unreachable, at growing intervals."""
        quiet_until = 0.0
        interval = 1.0
        started = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            connected = len(req.pipes) > 0
            now = time.monotonic()
            if connected and not self._reachable:
                log.info("connected to controller %s", self.controller, extra=self._extra())
                interval = 1.0
            elif not connected and self._reachable:
                log.warning(
                    "lost the controller %s; redialing", self.controller, extra=self._extra()
                )
                quiet_until = now + interval
            elif not connected and now >= quiet_until and now - started > 0.5:
                why = await asyncio.to_thread(diagnose, self.controller, self.key)
                self.unreachable_why = why
                log.warning(
                    "controller %s not reachable%s; still trying (next note in %.0f s)",
                    self.controller,
                    f": {why}" if why else "",
                    interval,
                    extra=self._extra(),
                )
                now = time.monotonic()
                quiet_until = now + interval
                interval = min(interval * 2, 30.0)
            self._reachable = connected


def _chain(
    source: concurrent.futures.Future[int], targets: list[concurrent.futures.Future[int]]
) -> None:
    """Resolve every future in `targets` the way `source` resolves."""

    def done(result: concurrent.futures.Future[int]) -> None:
        exc = result.exception()
        for fut in targets:
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result.result())

    source.add_done_callback(done)
