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
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import pynng

from eventlog import (
    DEFAULT_SNAPSHOT_EVERY,
    CuelogError,
    EventLog,
    InputError,
    Operation,
    Submission,
    validate_operation,
)
from eventlog.logctx import ComponentLog
from eventlog.store import Synchronous
from replicas import messages, nngio, protocol
from replicas.admission import Admission, Answers, SubmitReply
from replicas.callbacks import CallbackRunner, CommitListener, OperationCallbacks
from replicas.filewatch import FileLost, LogFileGuard
from replicas.membership import DEFAULT_NODE_TIMEOUT
from replicas.messages import (
    Beat,
    Chain,
    Copied,
    Error,
    Fetch,
    Hb,
    Hello,
    Message,
    Status,
    StatusRequest,
    Submit,
)
from replicas.nngio import beyond_loopback, close_all, guarded, peer
from replicas.protocol import Rule
from replicas.sequencer import (
    STALL,
    Committed,
    ControllerCore,
    Prepared,
)
from replicas.serving import DEFAULT_TAIL_LIMIT
from replicas.showkey import ShowKey, secure
from replicas.syncrep import SyncGate
from replicas.syncserve import SyncLeader, not_leading

log = ComponentLog("cuelog.controller", "controller")

DEFAULT_LISTEN: Final = "tcp://127.0.0.1:9093"
HEARTBEAT_INTERVAL: Final = 0.1
WORKERS: Final = 16
#: how often parked submits are looked at (they wait at most `admission.PARK_TIMEOUT`)
PARK_TICK: Final = 0.05
#: how often liveness is checked (seconds)
LIVENESS_TICK: Final = 0.25
#: how often (seconds) a node's unknown digest match may be settled by folding the log
SETTLE_INTERVAL: Final = 1.0
#: under continuous load the head is digested at least this often (seconds); idle, always
DIGEST_INTERVAL: Final = 0.25


class ListenError(CuelogError):
    """The controller's addresses could not be bound."""


class Controller(SyncLeader):
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
        leading: Callable[[], bool] | None = None,
        epoch: int | None = None,
        check: bool = True,
        adopt: bool = False,
        begin: Callable[[ControllerCore], list[Submission]] | None = None,
        sync: SyncGate[tuple[int, SubmitReply]] | None = None,
        record_sync: Callable[[str | None], Awaitable[bool]] | None = None,
        cluster: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        protocol.check_address(listen)
        #: whether this controller may act as leader now (`replicas.election.Election.leading`,
        #: on its own clock): when not, it acknowledges nothing and publishes nothing. None:
        #: the only controller, always leading.
        self.leading = leading or (lambda: True)
        #: the epoch to serve under (None: the one the log recorded last)
        self.epoch = epoch
        #: check every page of the file before serving it (a standby being promoted skips
        #: it: it wrote the file itself until a moment ago, and the show waits for it)
        self.check = check
        #: serve a standby's file (a replica of this log) as the controller's log: a promoted
        #: standby, or ``--no-ha`` on the standby's file; it is marked the controller's
        self.adopt = adopt
        #: the story a leadership starts with (`ControllerCore.begin_epoch`, or `override`
        #: for ``--no-ha``), committed before anything is served
        self.begin = begin
        #: with ``--ha``: answers wait for the synchronous standby's copy (`replicas.syncrep`);
        #: `record_sync` writes who that is into etcd, guarded by this leadership (False: the
        #: leadership is lost); `cluster` says who leads and who stands by (for status)
        self.sync = sync
        self.record_sync = record_sync
        self.cluster = cluster
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
        self._futures: dict[int, asyncio.Future[SubmitReply]] = {}
        self._tokens = itertools.count(1)
        self._wake = asyncio.Event()
        self._last_publish = 0.0
        self._digested = 0.0
        self._pub: pynng.Pub0 | None = None
        self._settling: set[str] = set()
        self._settled_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.stats = {"commits": 0, "events": 0, "requests": 0, "bad_requests": 0}
        #: what `cuelog status` should warn about (not a fault: exit code unchanged)
        self.warnings: list[str] = []
        #: the log file's problems (deleted, replaced, behind the show), said once each
        self.files = LogFileGuard(self.db)

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
            role=None if self.adopt else "controller",
            owner={"what": "cuelog controller", "listen": self.listen},
            check=self.check,
        )
        if self.adopt and elog.role != "controller":
            await asyncio.to_thread(elog.set_role, "controller")
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
            epoch=self.epoch,
        )
        self.admission = Admission(self.core)
        if self.begin is not None:
            first = self.core.internal(self.begin(self.core))
            await asyncio.to_thread(self.core.commit, [first], time.time())
            if self.sync is not None:
                self.sync.head = self.core.head
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
                conn = nngio.pipe_id(pipe)
                if conn is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is closing
                        loop.call_soon_threadsafe(self._pipe_closed, conn, time.monotonic())

            rep.add_post_pipe_remove_cb(closed)
            log.info(
                "controller serving log %s at seq %d on %s (events on %s), file %s",
                elog.log_id,
                elog.head,
                self.listen,
                self.events_listen,
                self.db,
                seq=elog.head,
            )
            if self.key is not None:
                log.info(
                    "only peers holding show key %s (%s) are admitted",
                    self.key.fingerprint,
                    self.key.path.name,
                    seq=elog.head,
                )
                if self.key.warning:
                    self.warnings.append(self.key.warning)
                    log.warning(self.key.warning, seq=elog.head)
            elif beyond_loopback(self.listen):
                self.warnings = [
                    f"listening on {self.listen}, beyond loopback, with no show key: any "
                    "machine that reaches it can read the show and submit as any node that is "
                    "not connected; give every machine a key (cuelog keygen FILE, then --key "
                    "FILE everywhere)"
                ]
                log.warning(self.warnings[0], seq=elog.head)
            self.ready.set()
            async with asyncio.TaskGroup() as tasks:
                for _ in range(WORKERS):
                    contexts.append(rep.new_context())
                    tasks.create_task(self._serve(contexts[-1]))
                tasks.create_task(self._committer(runner))
                tasks.create_task(self._heartbeats())
                tasks.create_task(self._liveness())
                tasks.create_task(self.files.watch(core))
                tasks.create_task(self._park_timer())
                if self.sync is not None:
                    tasks.create_task(self._sync_keeper(self.sync))
        except asyncio.CancelledError:
            pass
        finally:
            self._pub = None
            close_all(contexts, rep, pub)
            if runner is not None:
                runner.close()
            if self.admission is not None:
                stopping = messages.error("controller stopping", Rule.STOPPING)
                self._answer(self.admission.drain(stopping))
            for fut in self._futures.values():
                if not fut.done():
                    fut.set_result(messages.error("controller stopping", Rule.STOPPING))
            self._futures.clear()
            for extra in (reader, lookup):
                if extra is not elog:
                    extra.close()
            elog.close()
            log.info("controller stopped")

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
                log.exception("internal error handling a request from %s", peer(msg.pipe))
                reply = messages.error(f"internal error: {exc}", Rule.INTERNAL_ERROR)
            try:
                await guarded(ctx.asend(messages.encode(reply)))
            except pynng.Closed:
                return
            except pynng.NNGException as exc:
                log.warning("could not reply: %s", exc)

    async def handle(self, raw: bytes, pipe: Any = None) -> Message | dict[str, Any]:
        """One request in, one reply out. Bad input gets an error reply and a log line."""
        core = self.core
        assert core is not None
        self.stats["requests"] += 1
        now = time.time()
        try:
            msg = messages.parse_request(raw)
            if isinstance(msg, Submit):
                if self.files.file_problem is not None:
                    return messages.error(self.files.file_problem, Rule.LOG_FILE)
                conn = nngio.pipe_id(pipe)
                mono = time.monotonic()
                prepared = core.prepare_submit(msg, conn, mono)
                chain = core.chain(msg, conn)
                return await self._submit_nowait(prepared, chain, mono)
            if isinstance(msg, Fetch):
                return await asyncio.to_thread(core.fetch, msg, now)
            if isinstance(msg, Beat):
                beat, ops = core.beat(msg, now, time.monotonic(), nngio.pipe_id(pipe))
                if ops:
                    self._submit_nowait(core.internal(ops))
                node = msg.node
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
                return beat
            if isinstance(msg, Hello):
                self.files.check_ahead(core, msg)
                reply = core.hello(msg, now, time.monotonic(), nngio.pipe_id(pipe))
                ops = core.take_ops()
                if ops:  # a node restarted: its story goes into the log
                    self._submit_nowait(core.internal(ops))
                return reply
            if isinstance(msg, Copied):
                return self._copied(msg, pipe)
            if isinstance(msg, StatusRequest):
                return self._with_problems(core.status(now, time.monotonic()))
            return await asyncio.to_thread(core.state_reply, msg)
        except InputError as exc:
            rule = getattr(exc, "rule", Rule.BAD_REQUEST)
            if rule == Rule.HELLO_FIRST:  # a reconnected node: routine, it says hello next
                log.info("%s: %s", peer(pipe), exc)
                return messages.error(str(exc), rule)
            self.stats["bad_requests"] += 1
            where = peer(pipe)
            log.warning(
                "bad request from %s: %s",
                where,
                exc,
                seq=core.head,
            )
            return messages.error(str(exc), rule)

    def _submit_nowait(
        self, prepared: Prepared, chain: Chain | None = None, mono: float | None = None
    ) -> asyncio.Future[SubmitReply]:
        """Hand a submit to admission; the future gets its reply (after its commit, or at
        once when admission answers it)."""
        admission = self.admission
        assert admission is not None
        token = next(self._tokens)
        fut: asyncio.Future[SubmitReply] = asyncio.get_running_loop().create_future()
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
            asked = core.to_settle(node)
            if asked is not None:
                found = await asyncio.to_thread(core.digest_of, asked[0])
                core.settled(node, *asked, found)  # on the loop, like every write to the core
        except Exception as exc:
            log.debug("could not settle the digest of %s: %s", node, exc)
        finally:
            self._settling.discard(node)

    async def enqueue(self, prepared: Prepared) -> SubmitReply:
        return await self._submit_nowait(prepared)

    def status(self) -> dict[str, Any]:
        """What ``cuelog status --json`` shows: head, digest, every node's lag and match."""
        core = self.core
        if core is None:
            raise CuelogError("the controller has not opened its log yet")
        return self._with_problems(core.status(time.time(), time.monotonic())).plain()

    def _with_problems(self, status: Status) -> Status:
        status.problems = list(self.files.problems) or None
        status.warnings = list(self.warnings) or None
        status.key = self.key.fingerprint if self.key is not None else None
        if self.cluster is not None or self.sync is not None:
            cluster = dict(self.cluster()) if self.cluster is not None else {}
            if self.sync is not None:
                cluster.update(self.sync.describe(time.monotonic()))
            cluster["leading"] = self.leading()
            status.cluster = cluster
        return status

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
        if isinstance(reply, Error):
            raise InputError(reply.error)
        return [(r["seq"], r.get("reason")) for r in reply.results]

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
                if self.files.file_problem is not None:
                    self._answer(admission.refuse(batch, self.files.error()))
                    continue
                if not self.leading():
                    self._answer(admission.refuse(batch, not_leading()))
                    continue
                try:
                    committed = await asyncio.to_thread(
                        self._commit_checked, core, [ticket.prepared for ticket in batch]
                    )
                except FileLost as lost:
                    await self.files.lose_file(core, lost.error)
                    self._answer(admission.refuse(batch, self.files.error()))
                    continue
                except Exception as exc:
                    log.error(
                        "commit of %d submit%s failed (%s); nothing of it is acknowledged%s",
                        len(batch),
                        "s" if len(batch) > 1 else "",
                        exc,
                        "; committing them one at a time to find the one at fault"
                        if len(batch) > 1
                        else "",
                        seq=core.head,
                    )
                    self._answer(admission.commit_failed(batch, str(exc)))
                    continue
                core.record(committed)  # on the loop: the core is only ever written from here
                if self.sync is not None:  # before anything goes out: standbys report it next
                    self.sync.head = core.head
                events = committed.result.events
                if not self.leading():
                    # the lease may have expired while it committed: nothing of it goes out
                    # (a new leader never had it; this tail is set aside when this one
                    # rejoins as a standby)
                    log.error(
                        "no longer leading: %d committed events are neither published nor "
                        "acknowledged",
                        len(events),
                        seq=core.head,
                    )
                    self._answer(admission.refuse(batch, not_leading()))
                    continue
                # nodes first: a GO's way to the nodes is the show's critical path
                for wire in committed.wire:  # encoded by the commit, each under the byte cap
                    await self._publish(wire)
                if events:
                    for listener in self.listeners:
                        try:
                            listener.on_commit(events, committed.result.reasons)
                        except Exception:  # a listener bug must not stop commits
                            log.exception("commit listener %r failed", listener)
                answers = admission.committed(batch, committed.replies)
                if self.sync is not None:  # acknowledged once the synchronous standby has it
                    answers = self.sync.committed(core.head, answers, time.monotonic())
                self._answer(answers)
                if events:
                    self.stats["commits"] += 1
                    self.stats["events"] += len(events)
                    log.debug(
                        "committed %d events",
                        len(events),
                        seq=events[-1].seq,
                    )
                if runner is not None and events:
                    runner.push(events)
                now = time.monotonic()
                if events and (not admission.queue or now - self._digested >= DIGEST_INTERVAL):
                    # after the answers went out: a big show's digest costs milliseconds
                    self._digested = now
                    found = await asyncio.to_thread(core.digest_now)
                    if found is not None:
                        core.store_digest(*found)

    def _commit_checked(self, core: ControllerCore, batch: list[Prepared]) -> Committed:
        """(In a worker thread.) One group commit, with the log file checked before it and
        again before anything is acknowledged: an op committed into a deleted file would be
        gone after a restart, so it is never acknowledged."""
        self.files.check(core.elog)
        committed = core.commit(batch, time.time(), record=False)
        self.files.check(core.elog)
        return committed

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
            if time.monotonic() - self._last_publish >= self.heartbeat_interval and self.leading():
                frame = Hb(core.log_id, core.head, time.time(), core.epoch)
                await self._publish(messages.encode(frame))

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
