"""The gateway's asyncio shell: a websockets server that feeds `GatewayCore` and drains it.

Every decision is the core's (`gateway.session`: what a client is sent and what its messages
mean; `gateway.dump`: what a (re)connecting client is sent first) or the HTTP routes'
(`gateway.pages`); this module only moves bytes and time:

- The gateway is a `CommitListener` of its source (a `replicas.Controller`, or a recorded show
  played back), so it sees every committed batch on the source's event loop before any
  submitter is answered: no extra hop, and a command's reply can say whether the reducer
  accepted it. Each batch goes to `GatewayCore.on_events`.
- One port serves both WebSocket upgrades and plain HTTP (`StatusPages.respond`).
- Each client has a reader (frames -> `GatewayCore.on_frame`, effects carried out) and a
  writer task that drains its session a chunk at a time (a 10,000-cue dump yields to the loop
  between chunks). A client the core dropped is aborted (no close handshake: upstream's UI
  reconnects only after an error); so is every client when the gateway stops.
- Timers: held values every `TIMER` seconds (`on_timer`); each `SLOW_TICK` the source's
  status (`on_status`: node lag) and the head seq (`tick_seq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from eventlog import CuelogError, Event, Operation, State
from eventlog.logctx import ComponentLog
from gateway.osc import MAX_FRAME_BYTES, OscMsg
from gateway.pages import StatusPages, resume_point
from gateway.session import NODE_ID, GatewayCore, Handle, Policy, Session, Submit
from gateway.view import StatusView
from replicas.callbacks import CommitListener

log = ComponentLog("cuelog.gateway")

DEFAULT_WS: Final = "127.0.0.1:9190"
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0
#: frames a writer sends before it yields to the loop
CHUNK: Final = 256
#: how often held (coalesced) values are checked
TIMER: Final = 0.05
#: how often lag and the head seq are told
SLOW_TICK: Final = 1.0
#: frames read from one client between two yields to the loop (and after any bigger frame)
YIELD_EVERY: Final = 32
YIELD_SIZE: Final = 4096
#: seconds a client has to complete its opening handshake
OPEN_TIMEOUT: Final = 5.0
#: a client that cannot take one chunk of frames in this many seconds is dropped
WRITE_STALL: Final = 20.0
#: commands one client may have waiting for their commit
MAX_IN_FLIGHT: Final = 256

OscHandler = Callable[[Session, OscMsg], Awaitable[None] | None]


class GatewayError(CuelogError):
    """The gateway could not start (its port is taken, say)."""


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port). Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9190)")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"{text!r}: the port must be 0..65535")
    return host.strip("[]"), number


def raise_open_files() -> None:
    """Lift this process's soft limit of open files to the hard one: every UI, node and
    handshake is a descriptor, and a flood of half-open connections must not lock nodes out."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, 1 << 20), hard))


class CommitSource(Protocol):
    """What the gateway serves: a `replicas.Controller`, or a recorded show played back
    (`tools.replay_serve`). It feeds its ``listeners`` the commit stream."""

    listeners: list[CommitListener]
    ready: asyncio.Event

    def status(self) -> dict[str, Any]: ...

    async def append_local_results(self, ops: list[Operation]) -> list[tuple[int, str | None]]: ...


class Gateway:
    """Serves UIs for one `Controller` (or any `CommitSource`). Create it before the source
    runs."""

    def __init__(
        self,
        controller: CommitSource,
        host: str = "127.0.0.1",
        port: int = 9190,
        *,
        policy: Policy | None = None,
    ) -> None:
        self.controller = controller
        self.host = host
        self.port = port
        self.policy = policy or Policy()
        self.core: GatewayCore | None = None
        self.pages = StatusPages(self.policy, controller.status)
        self.ready = asyncio.Event()
        self.bound_port: int | None = None
        #: application handlers for OSC messages that are not commands (``gateway.compat``)
        self.on_osc: OscHandler | None = None
        #: called with each new connection once its first output is queued
        self.on_connect: Callable[[ServerConnection], Awaitable[None] | None] | None = None
        self.log = log.for_node(NODE_ID)
        self._wakers: dict[int, asyncio.Event] = {}
        self._connections: dict[int, ServerConnection] = {}
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        controller.listeners.append(self)

    # ------------------------------------------------------------------ commit stream

    def on_open(self, log_id: str, state: State) -> None:
        core = GatewayCore(StatusView(state), log_id, self.policy)
        if self.core is not None:  # the controller restarted in this process
            core.sessions = self.core.sessions
            for session in core.sessions.values():
                core.drop(session, "the controller reopened its log")
        self.core = core

    def on_commit(self, events: list[Event], reasons: list[str | None]) -> None:
        if self.core is not None:
            self.core.on_events(events, time.monotonic())
            self._wake_all()

    def rewind(self, state: State) -> None:
        """Show `state` instead of what was folded so far (a replay seeking back): every
        client gets a full dump of it, and the stream goes on from its seq."""
        if self.core is not None:
            self.core.reset_view(StatusView(state), time.monotonic())
            self._wake_all()

    def _wake_all(self) -> None:
        core = self.core
        if core is None:
            return
        for number, session in core.sessions.items():
            if session.dropped is not None:
                self._abort(number)
            elif session.queue:
                self._wake(number)

    def _wake(self, number: int) -> None:
        waker = self._wakers.get(number)
        if waker is not None:
            waker.set()

    def _abort(self, number: int) -> None:
        conn = self._connections.get(number)
        if conn is not None and conn.transport is not None:
            conn.transport.abort()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve until cancelled. Waits for the controller to open its log first."""
        self._task = asyncio.current_task()
        raise_open_files()
        await self.controller.ready.wait()
        try:
            server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                max_size=MAX_FRAME_BYTES,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
                open_timeout=OPEN_TIMEOUT,
                compression=None,
                server_header="cuelog",
            )
        except OSError as exc:
            raise GatewayError(
                f"cannot serve UIs on {self.host}:{self.port}: {exc.strerror or exc} (is another "
                "controller running there? pick another --ws)"
            ) from None
        self._server = server
        sockets = list(server.sockets)
        self.bound_port = int(sockets[0].getsockname()[1]) if sockets else self.port
        self.log.info(
            "gateway serving UIs on ws://%s:%d/realtime, status page http://%s:%d/",
            self.host,
            self.bound_port,
            self.host,
            self.bound_port,
            seq=self.core.seq if self.core else None,
        )
        self.ready.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._timer())
                tasks.create_task(self._slow_ticks())
        except asyncio.CancelledError:
            pass
        finally:
            self.ready.clear()
            server.close(close_connections=False)
            # abort, not close: upstream's UI reconnects only after an error. Connections still
            # in their handshake or serving HTTP are aborted too.
            for conn in list(server.all_connections):
                if conn.transport is not None:
                    conn.transport.abort()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await server.wait_closed()
            self.log.info("gateway stopped; every UI was dropped")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(TIMER)
            if self.core is not None:
                for session in self.core.on_timer(time.monotonic()):
                    self._wake(session.number)

    async def _slow_ticks(self) -> None:
        while True:
            await asyncio.sleep(SLOW_TICK)
            core = self.core
            if core is None:
                continue
            with contextlib.suppress(CuelogError):
                core.on_status(self.controller.status(), time.monotonic())
            core.tick_seq()
            self._wake_all()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        return self.pages.respond(
            request, _host(conn), self.core, len(self._connections), time.monotonic()
        )

    # ------------------------------------------------------------------ one client

    async def _handler(self, conn: ServerConnection) -> None:
        core = self.core
        assert core is not None
        since, their_log = resume_point(conn.request.path if conn.request else "")
        session = core.connect(_host(conn), since, their_log)
        number = session.number
        waker = asyncio.Event()
        waker.set()
        self._wakers[number] = waker
        self._connections[number] = conn
        self.log.info(
            "%s connected%s (%s)",
            session.name,
            f" resuming from seq {since}" if since is not None else "",
            "control" if session.control else "watch only",
            seq=core.seq,
        )
        if self.on_connect is not None:
            with contextlib.suppress(Exception):
                result = self.on_connect(conn)
                if asyncio.iscoroutine(result):
                    await result
        writer = asyncio.create_task(self._writer(conn, session, waker))
        try:
            await self._reader(conn, core, session, waker)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            core.disconnect(session)
            self._wakers.pop(number, None)
            self._connections.pop(number, None)
            self.log.info(
                "%s disconnected after %d messages%s",
                session.name,
                session.sent,
                f" ({session.dropped})" if session.dropped else "",
                seq=core.seq,
            )

    async def _reader(
        self, conn: ServerConnection, core: GatewayCore, session: Session, waker: asyncio.Event
    ) -> None:
        handled = 0
        async for message in conn:
            handled += 1
            size = len(message)
            if handled % YIELD_EVERY == 0 or size > YIELD_SIZE:
                await asyncio.sleep(0)  # a burst of frames must not hold the loop
            if not core.admit_frame(session, time.monotonic(), size):
                return  # flooding: dropped (the writer aborts the connection)
            if isinstance(message, str):
                continue  # text frames are ignored, as upstream does
            for effect in core.on_frame(session, message, time.monotonic()):
                if isinstance(effect, Submit):
                    self._start_submit(core, effect)
                elif isinstance(effect, Handle):
                    await self._handle(core, effect)
            waker.set()

    async def _writer(self, conn: ServerConnection, session: Session, waker: asyncio.Event) -> None:
        try:
            while True:
                await waker.wait()
                waker.clear()
                while session.queue and session.dropped is None:
                    try:
                        async with asyncio.timeout(WRITE_STALL):
                            await _send_batch(conn, session.take(CHUNK))
                    except TimeoutError:
                        if self.core is not None:
                            self.core.drop(session, f"took nothing for {WRITE_STALL:g} s")
                        break
                    await asyncio.sleep(0)
                if session.dropped is not None:
                    self._abort(session.number)
                    return
        except ConnectionClosed:
            return

    # ------------------------------------------------------------------ effects

    def _start_submit(self, core: GatewayCore, effect: Submit) -> None:
        session = effect.session
        if session.in_flight >= MAX_IN_FLIGHT:
            core.command_failed(effect, f"more than {MAX_IN_FLIGHT} commands in flight: slow down")
            return
        session.in_flight += 1
        task = asyncio.create_task(self._submit(effect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, effect: Submit) -> None:
        try:
            await self.append(effect)
        finally:
            effect.session.in_flight -= 1
            self._wake(effect.session.number)

    async def append(self, submit: Submit) -> None:
        """Append a client's operation and queue its answer: ``ok`` or ``error`` with its seq
        (the reducer's reason), or ``error`` saying why it was not appended."""
        core = self.core
        assert core is not None
        try:
            [(seq, reason)] = await self.controller.append_local_results([submit.op])
        except CuelogError as exc:
            core.command_failed(submit, str(exc))
            return
        except Exception as exc:  # the controller stopping, say
            core.command_failed(submit, f"not appended: {exc}")
            return
        core.command_done(submit, seq, reason)
        self.log.info(
            "%s: %s %r from %s",
            submit.reply_to,
            submit.op.target,
            (submit.op.data or {}).get("value"),
            submit.session.name,
            seq=seq,
        )

    async def _handle(self, core: GatewayCore, effect: Handle) -> None:
        handler = self.on_osc
        if handler is None:
            core.answer(effect.session, effect.msg.address, "error", error="unknown address")
            return
        try:
            result = handler(effect.session, effect.msg)
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            self.log.exception("OSC handler for %s failed", effect.msg.address)
            core.answer(effect.session, effect.msg.address, "error", error=str(exc))


async def _send_batch(conn: ServerConnection, frames: list[bytes]) -> None:
    """Send frames as WebSocket messages with one socket write: websockets' protocol frames
    them, we hand the transport the joined bytes (a write per frame costs a syscall each)."""
    async with conn.send_context():
        protocol = conn.protocol
        for data in frames:
            protocol.send_binary(data)
        data = b"".join(protocol.data_to_send())
        if data:
            conn.transport.write(data)


def _host(conn: ServerConnection) -> str:
    with contextlib.suppress(Exception):
        address: Any = conn.remote_address
        return str(address[0])
    return "unknown"
