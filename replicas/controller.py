"""The controller process: NNG sockets and asyncio tasks around `ControllerCore`.

One address: a REP socket on it answers node requests (hello, submit, fetch, beat, status);
a PUB socket on the derived address (`protocol.events_address`) streams batched event frames
and idle heartbeats. Group commit: every submit that arrives while a commit runs goes into the
next one. SQLite work runs in worker threads so the event loop keeps serving; a slow or dead
node costs the controller nothing but a bounded socket buffer (NNG PUB drops for slow
subscribers; the node repairs the gap by fetching).

Everything is owned by one `asyncio.TaskGroup`; `stop()` (or Ctrl-C) cancels it and the
sockets are closed before the interpreter exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

import pynng

from eventlog import (
    DEFAULT_SNAPSHOT_EVERY,
    CuelogError,
    Event,
    EventLog,
    InputError,
    LogFileError,
    Operation,
    OperationType,
    State,
    Submission,
    dumps,
    validate_operation,
)
from eventlog.store import Synchronous
from replicas import protocol
from replicas.admission import Admission, Answers
from replicas.nngio import close_all, guarded
from replicas.protocol import ProtocolError, Rule
from replicas.sequencer import (
    DEFAULT_NODE_TIMEOUT,
    DEFAULT_TAIL_LIMIT,
    STALL,
    Chain,
    Committed,
    ControllerCore,
    Prepared,
)
from replicas.showkey import ShowKey, secure

log = logging.getLogger("cuelog.controller")

DEFAULT_LISTEN: Final = "tcp://127.0.0.1:9093"
HEARTBEAT_INTERVAL: Final = 0.1
WORKERS: Final = 16
#: committed events waiting for `node_operation_callback` (beyond it, calls are dropped)
CALLBACK_QUEUE: Final = 100_000
#: how long a submit that overtook its predecessor waits for it (seconds)
#: how often parked submits are looked at (they wait at most `admission.PARK_TIMEOUT`)
PARK_TICK: Final = 0.05
#: how often liveness is checked (seconds)
LIVENESS_TICK: Final = 0.25
#: how often (seconds) a node's unknown digest match may be settled by folding the log
SETTLE_INTERVAL: Final = 1.0
#: under continuous load the head is digested at least this often (seconds); idle, always
DIGEST_INTERVAL: Final = 0.25
#: besides before every acknowledgement, the log file is checked this often (seconds)
FILE_CHECK_INTERVAL: Final = 1.0
#: problems kept for `cuelog status` (the oldest are forgotten first)
MAX_PROBLEMS: Final = 20

#: per operation type, a callable given each committed `Operation` of that type (the seed
#: API's `NodeOperation` form is `replicas.compat.as_node_operations`' business)
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


class ListenError(CuelogError):
    """The controller's addresses could not be bound."""


class _FileLost(Exception):
    """The log file was deleted or replaced under the controller (see `Controller._lose_file`)."""

    def __init__(self, error: LogFileError) -> None:
        self.error = error
        super().__init__(str(error))


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
                            extra={"seq": event.seq},
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
                log.exception("operation callback failed", extra={"seq": event.seq})

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)


class Controller:
    """The controller: log, sequencer, publisher, catch-up and liveness on one address."""

    def __init__(
        self,
        db: str | Path,
        listen: str = DEFAULT_LISTEN,
        *,
        node_timeout: float = DEFAULT_NODE_TIMEOUT,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        tail_limit: int = DEFAULT_TAIL_LIMIT,
        synchronous: Synchronous = "FULL",
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        node_operation_callback: OperationCallbacks | None = None,
        key: ShowKey | None = None,
    ) -> None:
        protocol.check_address(listen)
        self.db = str(db)
        #: with a show key, peers must prove they hold it (TLS); the sockets use `secure`'s
        #: ``tls+tcp://`` form of the address
        self.key = key
        self.listen = secure(listen, key)
        self.events_listen = protocol.events_address(self.listen)
        self.node_timeout = node_timeout
        self.snapshot_every = snapshot_every
        self.tail_limit = tail_limit
        self.synchronous = synchronous
        self.heartbeat_interval = heartbeat_interval
        self.callbacks = node_operation_callback or {}
        self.listeners: list[CommitListener] = []
        self.core: ControllerCore | None = None
        self.ready = asyncio.Event()
        #: the commit queue and the parked submits (every ordering decision is its)
        self.admission: Admission | None = None
        #: what each admission token's submitter waits on
        self._futures: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._tokens = itertools.count(1)
        self._wake = asyncio.Event()
        self._last_publish = 0.0
        self._digested = 0.0
        self._pub: pynng.Pub0 | None = None
        self._settling: set[str] = set()
        self._settled_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.stats = {"commits": 0, "events": 0, "requests": 0, "bad_requests": 0}
        #: what is wrong with this controller's log, shown by `cuelog status` (oldest first)
        self.problems: list[str] = []
        #: what `cuelog status` should warn about (not a fault: exit code unchanged)
        self.warnings: list[str] = []
        #: set once the log file is deleted or replaced: from then on nothing is acknowledged
        self.file_problem: str | None = None
        self._ahead_seen: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve until cancelled (or `stop`). Opens the log and the sockets; closes them."""
        self._task = asyncio.current_task()
        # the writer lock (one writer per file) is held until the log closes; the whole file
        # is checked first, so a damaged one is refused before anything is served from it
        elog = await asyncio.to_thread(
            EventLog.open,
            self.db,
            snapshot_every=self.snapshot_every,
            synchronous=self.synchronous,
            role="controller",
            owner={"what": "cuelog controller", "listen": self.listen},
            check=True,
        )
        reader = lookup = elog
        try:
            if self.db != ":memory:":
                reader = await asyncio.to_thread(EventLog.open, self.db, readonly=True)
                lookup = await asyncio.to_thread(EventLog.open, self.db, readonly=True)
        except BaseException:
            if reader is not elog:
                reader.close()
            elog.close()
            raise
        self.core = ControllerCore(
            elog,
            reader,
            node_timeout=self.node_timeout,
            tail_limit=self.tail_limit,
            now=time.time(),
            mono=time.monotonic(),
            lookup=lookup,
        )
        self.admission = Admission(self.core)
        for listener in self.listeners:
            listener.on_open(elog.log_id, elog.state.copy())
        runner = CallbackRunner(lambda: self.callbacks, "cuelog-callbacks")
        tls = {} if self.key is None else {"tls_config": self.key.server()}
        rep = pynng.Rep0(recv_max_size=protocol.NNG_MAX_BYTES, **tls)
        pub = pynng.Pub0(send_buffer_size=1024, **tls)
        contexts: list[Any] = []
        try:
            try:
                rep.listen(self.listen)
                pub.listen(self.events_listen)
            except pynng.NNGException as exc:
                raise ListenError(
                    f"cannot listen on {self.listen} / {self.events_listen}: {exc} (is another "
                    "controller running there? pick another --listen)"
                ) from None
            self._pub = pub
            loop = asyncio.get_running_loop()
            core = self.core

            def closed(pipe: Any) -> None:  # on an NNG thread
                pipe_id = _pipe_id(pipe)
                if pipe_id is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is closing
                        loop.call_soon_threadsafe(core.pipe_closed, pipe_id, time.monotonic())

            rep.add_post_pipe_remove_cb(closed)
            log.info(
                "controller serving log %s at seq %d on %s (events on %s), file %s",
                elog.log_id,
                elog.head,
                self.listen,
                self.events_listen,
                self.db,
                extra={"node": "controller", "seq": elog.head},
            )
            if self.key is not None:
                log.info(
                    "only peers holding show key %s (%s) are admitted",
                    self.key.fingerprint,
                    self.key.path.name,
                    extra={"node": "controller", "seq": elog.head},
                )
                if self.key.warning:
                    self.warnings.append(self.key.warning)
                    log.warning(self.key.warning, extra={"node": "controller", "seq": elog.head})
            elif beyond_loopback(self.listen):
                self.warnings = [
                    f"listening on {self.listen}, beyond loopback, with no show key: any "
                    "machine that reaches it can read the show and submit as any node that is "
                    "not connected; give every machine a key (cuelog keygen FILE, then --key "
                    "FILE everywhere)"
                ]
                log.warning(self.warnings[0], extra={"node": "controller", "seq": elog.head})
            self.ready.set()
            async with asyncio.TaskGroup() as tasks:
                for _ in range(WORKERS):
                    contexts.append(rep.new_context())
                    tasks.create_task(self._serve(contexts[-1]))
                tasks.create_task(self._committer(runner))
                tasks.create_task(self._heartbeats())
                tasks.create_task(self._liveness())
                tasks.create_task(self._watch_file())
                tasks.create_task(self._park_timer())
        except asyncio.CancelledError:
            pass
        finally:
            self._pub = None
            close_all(contexts, rep, pub)
            if runner is not None:
                runner.close()
            if self.admission is not None:
                stopping = protocol.error("controller stopping", Rule.STOPPING)
                self._answer(self.admission.drain(stopping))
            for fut in self._futures.values():
                if not fut.done():
                    fut.set_result(protocol.error("controller stopping", Rule.STOPPING))
            self._futures.clear()
            for extra in (reader, lookup):
                if extra is not elog:
                    extra.close()
            elog.close()
            log.info("controller stopped", extra={"node": "controller", "seq": "-"})

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # ------------------------------------------------------------------ requests

    async def _serve(self, ctx: Any) -> None:
        while True:
            try:
                msg = await guarded(ctx.arecv_msg())
            except pynng.Closed:
                return
            raw = msg.bytes
            try:
                reply = await self.handle(raw, msg.pipe)
            except Exception as exc:  # a bug must cost one reply, never the controller
                log.exception("internal error handling a request from %s", _peer(msg.pipe))
                reply = protocol.error(f"internal error: {exc}", Rule.INTERNAL_ERROR)
            try:
                await guarded(ctx.asend(dumps(reply)))
            except pynng.Closed:
                return
            except pynng.NNGException as exc:
                log.warning("could not reply: %s", exc)

    async def handle(self, raw: bytes, pipe: Any = None) -> dict[str, Any]:
        """One request in, one reply out. Bad input gets an error reply and a log line."""
        core = self.core
        assert core is not None
        self.stats["requests"] += 1
        now = time.time()
        try:
            msg = protocol.decode(raw)
            kind = msg["k"]
            if kind == "submit":
                if self.file_problem is not None:
                    return protocol.error(self.file_problem, Rule.LOG_FILE)
                pipe_id = _pipe_id(pipe)
                mono = time.monotonic()
                prepared = core.prepare_submit(msg, pipe_id, mono)
                chain = core.chain(msg, pipe_id)
                return await self._submit_nowait(prepared, chain, mono)
            if kind == "fetch":
                return await asyncio.to_thread(core.fetch, msg, now)
            if kind == "beat":
                reply, ops = core.beat(msg, now, time.monotonic(), _pipe_id(pipe))
                if ops:
                    self._submit_nowait(core.internal(ops))
                node = protocol.node_id(msg)
                info = core.nodes.get(node)
                if (
                    info is not None
                    and info.digest_match is None
                    and node not in self._settling
                    and now - self._settled_at.get(node, 0.0) >= SETTLE_INTERVAL
                ):
                    # at most once a second per node: it folds up to a snapshot interval
                    self._settling.add(node)
                    if len(self._settled_at) > 4096:
                        self._settled_at.clear()
                    self._settled_at[node] = now
                    asyncio.get_running_loop().create_task(self._settle(node))
                return reply
            if kind == "hello":
                self._check_ahead(msg)
                reply = core.hello(msg, now, time.monotonic(), _pipe_id(pipe))
                ops = core.take_ops()
                if ops:  # a node restarted: its story goes into the log
                    self._submit_nowait(core.internal(ops))
                return reply
            if kind == "status":
                return self._with_problems(core.status(now, time.monotonic()))
            if kind == "state":
                return await asyncio.to_thread(core.state_reply, msg)
            raise ProtocolError(
                f"unknown request kind {kind!r} (expected one of "
                f"{', '.join(sorted(protocol.REQUEST_KINDS))})"
            )
        except InputError as exc:
            rule = getattr(exc, "rule", Rule.BAD_REQUEST)
            if rule == Rule.HELLO_FIRST:  # a reconnected node: routine, it says hello next
                log.info("%s: %s", _peer(pipe), exc, extra={"node": "controller", "seq": "-"})
                return protocol.error(str(exc), rule)
            self.stats["bad_requests"] += 1
            where = _peer(pipe)
            log.warning(
                "bad request from %s: %s",
                where,
                exc,
                extra={"node": "controller", "seq": core.head},
            )
            return protocol.error(str(exc), rule)

    def _submit_nowait(
        self, prepared: Prepared, chain: Chain | None = None, mono: float | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Hand a submit to admission; the future gets its reply (after its commit, or at
        once when admission answers it)."""
        admission = self.admission
        assert admission is not None
        token = next(self._tokens)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._futures[token] = fut
        now = time.monotonic() if mono is None else mono
        self._answer(admission.submit(prepared, chain, token, now))
        if admission.queue:
            self._wake.set()
        return fut

    def _answer(self, answers: Answers) -> None:
        """Deliver admission's decisions to the submitters waiting on them."""
        for token, reply in answers:
            fut = self._futures.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    async def _park_timer(self) -> None:
        """Send back parked submits whose predecessor never came."""
        admission = self.admission
        assert admission is not None
        while True:
            await asyncio.sleep(PARK_TICK)
            if admission.parked:
                self._answer(admission.expire(time.monotonic()))

    async def _settle(self, node: str) -> None:
        core = self.core
        assert core is not None
        try:
            await asyncio.to_thread(core.settle_digest, node)
        except Exception as exc:
            log.debug("could not settle the digest of %s: %s", node, exc)
        finally:
            self._settling.discard(node)

    async def enqueue(self, prepared: Prepared) -> dict[str, Any]:
        return await self._submit_nowait(prepared)

    def status(self) -> dict[str, Any]:
        """What ``cuelog status --json`` shows: head, digest, every node's lag and match."""
        core = self.core
        if core is None:
            raise CuelogError("the controller has not opened its log yet")
        return self._with_problems(core.status(time.time(), time.monotonic()))

    def _with_problems(self, status: dict[str, Any]) -> dict[str, Any]:
        if self.problems:
            status["problems"] = list(self.problems)
        if self.warnings:
            status["warnings"] = list(self.warnings)
        status["key"] = self.key.fingerprint if self.key is not None else None
        return status

    def _problem(self, text: str) -> None:
        """Say once, in the log and in `cuelog status`, what is wrong with this log."""
        seq = self.core.head if self.core is not None else "-"
        log.error("%s", text, extra={"node": "controller", "seq": seq})
        self.problems.append(text)
        del self.problems[:-MAX_PROBLEMS]

    def _check_ahead(self, msg: dict[str, Any]) -> None:
        """A node that holds more of this very log than this controller does: the controller's
        file is older than the show (restored from a backup, or rolled back). The node sets its
        replica aside (it never wipes it) and follows this log; the operator is told how to
        get the lost events back."""
        core = self.core
        assert core is not None
        node, their_log, after = msg.get("node"), msg.get("log"), msg.get("after")
        if their_log != core.log_id or not isinstance(after, int) or after <= core.head:
            return
        key = (str(node), after)
        if key in self._ahead_seen:
            return
        if len(self._ahead_seen) > 1024:
            self._ahead_seen.clear()
        self._ahead_seen.add(key)
        self._problem(
            f"node {node} holds log {core.log_id} up to seq {after}, beyond this controller's "
            f"head {core.head}: {self.db} is behind the show (restored from an older backup?); "
            f"{node} sets its replica file aside and follows this log; to get the missing "
            f"events back, stop this controller and run `cuelog rebuild --from <{node}'s "
            f"set-aside file> --db {self.db} --force`"
        )

    async def _watch_file(self) -> None:
        """Notice a deleted or replaced log file even when nothing is being committed."""
        core = self.core
        assert core is not None
        while self.file_problem is None:
            await asyncio.sleep(FILE_CHECK_INTERVAL)
            try:
                core.elog.check_file()  # two stats
            except LogFileError as exc:
                await self._lose_file(exc)

    def _check_file(self, elog: EventLog) -> None:
        try:
            elog.check_file()
        except LogFileError as exc:
            raise _FileLost(exc) from None

    async def _lose_file(self, error: LogFileError) -> None:
        """The log file is gone or replaced: acknowledge nothing more (an acknowledged op must
        survive a restart, and a restart would not find it), save what this controller still
        has open, and say so once."""
        if self.file_problem is not None:
            return
        core = self.core
        assert core is not None
        saved = f"{self.db}.saved-{time.strftime('%Y%m%dT%H%M%S')}"
        self.file_problem = f"log file {error.path}: {error.problem}"
        try:
            await asyncio.to_thread(core.elog.save_copy, saved)
            keep = (
                f"the log up to seq {core.head} is saved as {saved}: stop this controller and "
                f"start it with --db {saved}"
            )
        except CuelogError as exc:
            keep = f"could not save a copy ({exc}): stop this controller"
        self.file_problem += (
            f"; this controller acknowledges nothing more (submits are refused); {keep}, or "
            f"rebuild the log from the node replica furthest ahead: cuelog rebuild --from "
            f"NODE.db --db {self.db}"
        )
        self._problem(self.file_problem)

    async def append_local(self, ops: list[Operation]) -> list[int]:
        """Append operations made by the controller itself (the operator's commands).

        Returns their seqs once they are durable; raises `InputError` if they were refused."""
        return [seq for seq, _ in await self.append_local_results(ops)]

    async def append_local_results(self, ops: list[Operation]) -> list[tuple[int, str | None]]:
        """Like `append_local`, with the reducer's verdict on each: ``(seq, reason)``, reason
        None when it applied the op, else why it was a recorded no-op (a refused GO)."""
        core = self.core
        if core is None:
            raise CuelogError("the controller has not opened its log yet")
        reply = await self.enqueue(
            core.internal([Submission(validate_operation(op)) for op in ops])
        )
        if reply.get("k") != "acks":
            raise InputError(reply.get("error", "append failed"))
        return [(r["seq"], r.get("reason")) for r in reply["results"]]

    # ------------------------------------------------------------------ commit & publish

    async def _committer(self, runner: CallbackRunner | None) -> None:
        core = self.core
        assert core is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            admission = self.admission
            assert admission is not None
            while admission.queue:
                batch = admission.take()
                if self.file_problem is not None:
                    self._answer(admission.refuse(batch, self._file_error()))
                    continue
                try:
                    committed = await asyncio.to_thread(
                        self._commit_checked, core, [ticket.prepared for ticket in batch]
                    )
                except _FileLost as lost:
                    await self._lose_file(lost.error)
                    self._answer(admission.refuse(batch, self._file_error()))
                    continue
                except Exception as exc:
                    log.error(
                        "commit of %d submits failed (%s); they were not acknowledged and will "
                        "be retried",
                        len(batch),
                        exc,
                        extra={"node": "controller", "seq": core.head},
                    )
                    self._answer(admission.commit_failed(batch, str(exc)))
                    continue
                events = committed.result.events
                # nodes first: a GO's way to the nodes is the show's critical path
                for wire in committed.wire:  # encoded by the commit, each under the byte cap
                    await self._publish(wire)
                if events:
                    for listener in self.listeners:
                        try:
                            listener.on_commit(events, committed.result.reasons)
                        except Exception:  # a listener bug must not stop commits
                            log.exception("commit listener %r failed", listener)
                self._answer(admission.committed(batch, committed.replies))
                if events:
                    self.stats["commits"] += 1
                    self.stats["events"] += len(events)
                    log.debug(
                        "committed %d events",
                        len(events),
                        extra={"node": "controller", "seq": events[-1].seq},
                    )
                if runner is not None and events:
                    runner.push(events)
                now = time.monotonic()
                if events and (not admission.queue or now - self._digested >= DIGEST_INTERVAL):
                    # after the answers went out: a big show's digest costs milliseconds
                    self._digested = now
                    await asyncio.to_thread(core.remember_digest)

    def _commit_checked(self, core: ControllerCore, batch: list[Prepared]) -> Committed:
        """(In a worker thread.) One group commit, with the log file checked before it and
        again before anything is acknowledged: an op committed into a deleted file would be
        gone after a restart, so it is never acknowledged."""
        self._check_file(core.elog)
        committed = core.commit(batch, time.time(), digest=False)
        self._check_file(core.elog)
        return committed

    def _file_error(self) -> dict[str, Any]:
        return protocol.error(self.file_problem or "the log file is lost", Rule.LOG_FILE)

    async def _publish(self, data: bytes) -> None:
        pub = self._pub
        if pub is None:
            return
        self._last_publish = time.monotonic()
        try:
            await guarded(pub.asend(data))
        except pynng.NNGException as exc:
            log.warning("publish failed: %s", exc)

    async def _heartbeats(self) -> None:
        core = self.core
        assert core is not None
        while True:
            await asyncio.sleep(self.heartbeat_interval / 2)
            if time.monotonic() - self._last_publish >= self.heartbeat_interval:
                frame = protocol.heartbeat_frame(core.log_id, core.head, time.time())
                await self._publish(dumps(frame))

    async def _liveness(self) -> None:
        core = self.core
        assert core is not None
        last = time.monotonic()
        while True:
            await asyncio.sleep(LIVENESS_TICK)
            now = time.monotonic()
            late = now - last - LIVENESS_TICK
            last = now
            if late > STALL:  # this process (or its host) was stopped: not the nodes' fault
                core.stalled(late, now)
            ops = core.tick(now)
            if ops:
                self._submit_nowait(core.internal(ops))


def beyond_loopback(address: str) -> bool:
    """Whether a listen address can be reached from other machines (tcp on a non-loopback
    address; ipc and inproc stay on this one)."""
    scheme = next((p for p in ("tcp://", "tls+tcp://") if address.startswith(p)), None)
    if scheme is None:
        return False
    host = address[len(scheme) :].rpartition(":")[0].strip("[]")
    if host in ("localhost", ""):
        return host == ""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: assume it is reachable


def _pipe_id(pipe: Any) -> int | None:
    """The id of the connection a request came on; None only for calls from this process
    (no pipe), which are trusted: a pipe that cannot be read is never taken for one."""
    if pipe is None:
        return None
    with contextlib.suppress(Exception):
        return int(pipe.id)
    return 0


def _peer(pipe: Any) -> str:
    if pipe is None:
        return "a peer"
    with contextlib.suppress(Exception):
        return f"pipe {pipe.id} ({pipe.remote_address})"
    return "a peer"
