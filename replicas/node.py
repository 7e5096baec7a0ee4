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
import threading
import time
from collections.abc import Callable, Coroutine
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
)
from eventlog.logctx import ComponentLog
from replicas import messages, protocol
from replicas.catchup import CatchUp
from replicas.commands import CommandCallback, CommandDispatcher, RestoreCallback
from replicas.messages import Error, Fetch, Message, Ok, Reply, Welcome
from replicas.nngio import close_all, guarded
from replicas.outbox import (
    Coalescer,
    Outbox,
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
from replicas.restore import RestoreGate
from replicas.showkey import ShowKey, diagnose, secure

log = ComponentLog("cuelog.node")

BEAT_INTERVAL: Final = 0.25
REQUEST_TIMEOUT: Final = 2.0
OUTBOX_SIZE: Final = 10_000
#: the status target a node reports each fired command under: {seq, command, delay_ms}
FIRED: Final = "fired"
#: submits in flight at once. The controller keeps each node's order for any depth (see
#: `_submitter`); on loopback with 2 cores, 1 measured best (more requests cost more CPU than
#: the queueing they save); a node on a slow link may want 2.
SUBMIT_DEPTH: Final = 1
#: catch-up requests in flight at once (the controller reads ahead while the node applies)
FETCH_DEPTH: Final = 3


class NodeReplica:
    """A node: a full replica of the controller's log plus an outbox for its own operations.

    ``restore_callback(state, why)`` tells the engine what it must restore, once per session
    and after every resync: ``why`` is ``"start"`` (it began empty), ``"restart"`` (it resumed
    from its own replica file) or ``"resync"`` (its replica was rebuilt from the controller's
    snapshot, or it held another log). It is called once the replica has caught up, with a
    copy of the state at that seq, on a command thread, and every live command of the session
    (a command that arrives while it catches up is held) fires after it has returned.
    """

    #: how the replica catches up (`ReplicaCore.fetch_mode`)
    fetch_mode = "auto"

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
        addresses = protocol.check_addresses(controller)
        self.submit_depth = max(1, submit_depth)
        self.node_id = check_node_id(node_id)  # one rule for ids: raises ValidationError
        self.log = log.for_node(self.node_id)
        #: with a show key the node dials with TLS and proves it holds the key
        self.key = key
        #: every controller address (with ``--ha`` the candidates; only the leader listens,
        #: so the node follows whichever serves, and refuses an older epoch's frames)
        self.controllers = [secure(address, key) for address in addresses]
        self.controller = ",".join(self.controllers)
        self.db = None if db is None else str(db)
        self.beat_interval = beat_interval
        self.request_timeout = request_timeout
        self.max_command_age = max_command_age
        origin, self._secret = protocol.new_origin(node_id)
        self.outbox = Outbox(node_id, outbox_size, origin)
        self.submitter = SubmitterCore(self.outbox, node_id)
        self.commands = CommandDispatcher(node_id)
        self.commands.callback = command_callback
        self.commands.on_fired = self._report_fired
        self.restore_callback = restore_callback
        #: the restore owed to the engine and the commands held for it
        self.restores = RestoreGate()
        self.core: ReplicaCore | None = None
        #: the replica file (with --db): it keeps following in memory if the file fails
        self._file: ReplicaFile | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._fetch_wake = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        #: held-back progress updates, at most `cue_status_hz` per key
        self.coalescer = Coalescer(self.outbox, 1.0 / cue_status_hz)
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

    # ------------------------------------------------------------------ sending (any thread)

    def submit(self, op: Operation, key: str | None = None) -> concurrent.futures.Future[int]:
        """Queue an operation for the controller; the future gives its seq once committed.

        Never blocks on the network. Raises `OutboxFull` when too many are unacknowledged and
        `ValidationError` when the operation itself is invalid. With a `key` (``cue:<id>``),
        a progress update still held back for that key is superseded by this operation, so it
        can never arrive after it (a progress after its cue's remove, say).
        """
        return self.coalescer.put(op, key)

    def submit_coalesced(self, key: str, op: Operation) -> concurrent.futures.Future[int]:
        """Like `submit`, but at most `cue_status_hz` per key; the latest value wins.

        An update within the interval is held (replacing any held one) and sent when the
        interval ends; every caller's future gets the seq of the value that was sent.
        """
        loop = self._loop
        running = loop is not None and not loop.is_closed()
        future, delay = self.coalescer.put_latest(key, op, time.monotonic(), running)
        if delay is not None and loop is not None:
            loop.call_soon_threadsafe(loop.call_later, delay, self._flush_key, key)
        return future

    def _flush_key(self, key: str) -> None:
        self.coalescer.flush(key, time.monotonic())

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
        self.core.fetch_mode = self.fetch_mode
        self._start_session(resumed=store.head > 0)
        events_addr = ",".join(protocol.events_address(a) for a in self.controllers)
        # several (a hot standby): redial every 250 ms, back within a quarter second of a new
        # leader; one controller: the usual backoff to 2 s
        self._redial_max = 250 if len(self.controllers) > 1 else 2000
        tls = {} if self.key is None else {"tls_config": self.key.client()}
        req = pynng.Req0(
            recv_max_size=protocol.NNG_MAX_BYTES,
            reconnect_time_min=100,
            reconnect_time_max=self._redial_max,
            **tls,
        )
        sub = pynng.Sub0(
            recv_max_size=protocol.NNG_MAX_BYTES,
            recv_buffer_size=1024,
            reconnect_time_min=100,
            reconnect_time_max=self._redial_max,
            **tls,
        )
        sub.subscribe(b"")
        contexts: list[Any] = []
        try:
            if store.head:
                self.log.info(
                    "resuming from replica file %s at seq %d (log %s)",
                    self.db,
                    store.head,
                    store.log_id,
                    seq=self.applied_seq,
                )
            self.log.info(
                "dialing controller %s (events %s)",
                self.controller,
                events_addr,
                seq=self.applied_seq,
            )
            for address in self.controllers:
                req.dial(address, block=False)
                sub.dial(protocol.events_address(address), block=False)
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
                for side in self._side_tasks(req, contexts):
                    tasks.create_task(side)
        except asyncio.CancelledError:
            pass
        finally:
            close_all(contexts, req, sub)
            self.commands.close()
            self.coalescer.drop(CuelogError(f"node {self.node_id} stopped"))
            self.log.info("node stopped", seq=self.applied_seq)
            if self._file is not None:
                self.core = None
                self._file.elog.close()

    def _side_tasks(self, req: Any, contexts: list[Any]) -> list[Coroutine[Any, Any, None]]:
        """More tasks to run beside the node's own (a standby's reports); a context they
        open on `req` goes into `contexts`, closed with the rest."""
        return []

    def stop(self) -> None:
        """Ask the node to stop (from any thread; safe to call twice or after it ended)."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(task.cancel)

    # ------------------------------------------------------------------ tasks

    async def _request(self, ctx: Any, msg: Message) -> Reply | None:
        return (await self._sized_request(ctx, msg))[0]

    async def _sized_request(self, ctx: Any, msg: Message) -> tuple[Reply | None, int]:
        """The reply to `msg` (None if it failed) and its size in bytes."""
        try:
            async with asyncio.timeout(self.request_timeout):
                await guarded(ctx.asend(messages.encode(msg)))
                raw = await guarded(ctx.arecv())
        except TimeoutError:
            return None, 0
        except pynng.NNGException as exc:
            self.log.debug("%s failed: %s", type(msg).__name__, exc, seq=self.applied_seq)
            return None, 0
        try:
            return messages.parse_reply(raw, protocol.NNG_MAX_BYTES), len(raw)
        except ProtocolError as exc:
            self.log.warning("bad reply to %s: %s", type(msg).__name__, exc, seq=self.applied_seq)
            return None, 0

    def _fire(self, events: list[Event]) -> None:
        self._note_resync()
        for event in events:
            if event.op.target == "ping":
                pong = Operation(OperationType.STATUS, ActionType.UPDATE, self.node_id, "pong", {})
                with contextlib.suppress(CuelogError):
                    self.outbox.put(pong)
                continue
            if not self.restores.hold(event):  # held: fired once the engine has restored
                self.commands.push(event)

    def _report_fired(self, event: Event) -> None:
        """Tell the log this node fired `event`'s command, and how long after its commit
        (on the controller's clock as this node estimates it): the post-mortem's evidence."""
        core = self.core
        delay = None
        if core is not None and core.offset is not None:
            # never below 0: the clock estimate may be off by a few ms, a command never early
            delay = max(0.0, round((time.monotonic() + core.offset - event.ts) * 1000, 1))
        report = {"seq": event.seq, "command": event.op.target, "delay_ms": delay}
        op = Operation(OperationType.STATUS, ActionType.UPDATE, self.node_id, FIRED, report)
        try:
            self.outbox.put(op)
        except CuelogError as exc:
            self.log.warning("could not report firing: %s", exc, seq=self.applied_seq)

    def _start_session(self, resumed: bool) -> None:
        """A new session of `core`: the engine is owed a restore once it caught up."""
        assert self.core is not None
        self.restores.start(resumed, self.core.resyncs)

    def _need_hello(self) -> None:
        """Say hello again before anything else (a new connection, or the id changed hands)."""
        if self.core is not None:
            self.core.say_hello_again()
        if self._welcomed is not None:
            self._welcomed.clear()
        self._fetch_wake.set()

    def _note_resync(self) -> None:
        if self.core is not None:
            self.restores.note(self.core.resyncs)

    def _deliver_restore(self) -> None:
        """The replica caught up: queue the owed restore, then the commands held for it."""
        core = self.core
        assert core is not None
        callback = self.restore_callback
        why, held = self.restores.deliver(callback is not None)
        if callback is not None and why is not None:
            self.commands.push_restore(callback, core.state.copy(), why)
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
        callback, core = self.restore_callback, self.core
        if callback is None or core is None:
            return
        why = self.restores.late()
        if why is not None:
            self.commands.push_restore(callback, core.state.copy(), why)

    def _after_input(self) -> None:
        core = self.core
        assert core is not None
        self._note_resync()
        if core.synced and self.restores.owed is not None:
            self._deliver_restore()
        if core.synced and not self.synced.is_set():
            self.log.info("in sync with the controller", seq=self.applied_seq)
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
                if isinstance(reply, Error) and reply.rule in (Rule.ID_IN_USE, Rule.ORIGIN_IN_USE):
                    if not self._id_refused:
                        self._id_refused = True
                        self.log.error("%s; waiting until it is gone", reply.error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if not isinstance(reply, Welcome):
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                try:
                    core.on_welcome(reply, time.monotonic())
                except ProtocolError as exc:  # a bad one, or an old leader's: not followed
                    if backoff <= 0.1 or backoff >= 2.0:  # said once, then every 2 s at most
                        self.log.warning("not following: %s", exc, seq=self.applied_seq)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
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

    async def _catch_up(self, fetch: Fetch, contexts: list[Any]) -> bool:
        """Run `fetch` and the further chunks `CatchUp` asks for, up to ``len(contexts) - 1``
        of them in flight while a reply is applied. False if a request failed."""
        core = self.core
        assert core is not None
        free = list(contexts)
        plan = CatchUp(fetch, core.fetch_limit, min(core.pending) - 1 if core.pending else None)
        ctx = free.pop()
        reply, size = await self._sized_request(ctx, fetch)
        free.append(ctx)
        inflight: collections.deque[tuple[Any, Fetch, asyncio.Task[tuple[Reply | None, int]]]]
        inflight = collections.deque()
        try:
            while reply is not None:
                for ask in plan.on_reply(reply, size, len(free)):
                    ctx = free.pop()
                    task = asyncio.ensure_future(self._sized_request(ctx, ask))
                    inflight.append((ctx, ask, task))
                try:
                    self._fire(core.on_fetch_reply(reply, time.monotonic()))
                except (ProtocolError, CuelogError) as exc:
                    self.log.warning("bad fetch reply: %s", exc, seq=self.applied_seq)
                    break
                except Exception:  # a bug (or a lying peer) costs this reply, never the node
                    self.log.exception("could not apply a fetch reply", seq=self.applied_seq)
                    break
                self._after_input()
                if not inflight:
                    return True
                ctx, ask, pending = inflight.popleft()
                plan.answering(ask)
                core.on_fetch_sent()
                reply, size = await pending
                free.append(ctx)
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
                msg = messages.parse_frame(raw, protocol.NNG_MAX_BYTES)
                self._fire(core.on_frame(msg, time.monotonic()))
            except (ProtocolError, CuelogError) as exc:
                self.log.warning("dropped a bad frame: %s", exc, seq=self.applied_seq)
            except Exception:  # a bug (or a lying peer) costs this frame, never the node
                self.log.exception("could not apply a frame; dropped", seq=self.applied_seq)
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
                if isinstance(reply, Ok):
                    self._after_input()
            if self._file is not None and not self._file.healthy:
                self._file.retry()  # a failing replica file is caught up even when idle
            await asyncio.sleep(self.beat_interval)

    async def _submitter(self, contexts: list[Any]) -> None:
        """Send the outbox in order, with up to ``len(contexts)`` submits in flight; what to
        send, what each reply means and when to send again is `SubmitterCore`'s. Each submit
        is chained after the one before it, so the controller keeps this node's order even
        when a later one overtakes an earlier one."""
        core = self.submitter
        free = list(contexts)
        inflight: collections.deque[tuple[Any, asyncio.Task[Reply | None]]]
        inflight = collections.deque()
        wake = self._outbox_wake
        while True:
            if not inflight and self._welcomed is not None and not self._welcomed.is_set():
                with contextlib.suppress(TimeoutError):  # submits wait for the hello
                    async with asyncio.timeout(1.0):
                        await self._welcomed.wait()
            while free and (msg := core.next_submit()) is not None:
                ctx = free.pop()
                inflight.append((ctx, asyncio.ensure_future(self._request(ctx, msg))))
            if not inflight:
                wake.clear()
                if not len(self.outbox):
                    await wake.wait()
                continue
            ctx, task = inflight[0]
            if free and not task.done() and not core.draining:
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
            verdict = core.on_reply(reply)
            if verdict.hello:
                self._need_hello()
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
                self.log.info("connected to controller %s", self.controller, seq=self.applied_seq)
                interval = 1.0
            elif not connected and self._reachable:
                self.log.warning(
                    "lost the controller %s; redialing", self.controller, seq=self.applied_seq
                )
                quiet_until = now + interval
            elif not connected and now >= quiet_until and now - started > 0.5:
                why = await asyncio.to_thread(diagnose, self.controllers[0], self.key)
                self.unreachable_why = why
                self.log.warning(
                    "controller %s not reachable%s; still trying (next note in %.0f s)",
                    self.controller,
                    f": {why}" if why else "",
                    interval,
                    seq=self.applied_seq,
                )
                now = time.monotonic()
                quiet_until = now + interval
                interval = min(interval * 2, 30.0)
            self._reachable = connected
