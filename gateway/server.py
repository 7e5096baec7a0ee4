"""The gateway's shell: a websockets server around `GatewayCore`, inside the controller.

One port serves both WebSocket upgrades (on ``/`` and ``/realtime``, ``?since=<seq>`` allowed)
and plain HTTP: ``GET /`` is the status page, ``GET /state`` and ``GET /cluster`` are JSON;
any other path is a 404. The gateway is a `CommitListener` of the controller, so it sees every
committed batch on the controller's event loop before any submitter is answered: no extra hop,
and a command's reply can say whether the reducer accepted it.

Each client has a writer task that drains its session a chunk at a time (a 10,000-cue dump
yields to the loop between chunks); a client that cannot keep up is resynced or dropped by
the core, and a dropped client's connection is aborted (no close handshake: upstream's UI
reconnects only after an error). When the controller stops, every client is aborted likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from eventlog import CuelogError, Event, Operation, State, digest
from gateway.osc import MAX_FRAME_BYTES, OscMsg
from gateway.session import GatewayCore, Handle, Policy, Session, Submit, node_values
from gateway.view import StatusView
from replicas.controller import CommitListener

log = logging.getLogger("cuelog.gateway")

DEFAULT_WS: Final = "127.0.0.1:9190"
WS_PATHS: Final = frozenset({"/", "/realtime"})
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0
#: frames a writer sends before it yields to the loop
CHUNK: Final = 256
#: how often held (coalesced) values are checked
TIMER: Final = 0.05
#: how often lag and the head seq are told
SLOW_TICK: Final = 1.0
#: most concurrent clients; more are refused with HTTP 503 (well under the usual 1024 open
#: files, so nodes can always connect)
MAX_CLIENTS: Final = 256
#: frames read from one client between two yields to the loop (and after any bigger frame)
YIELD_EVERY: Final = 32
YIELD_SIZE: Final = 4096
#: seconds a client has to complete its opening handshake
OPEN_TIMEOUT: Final = 5.0
#: a client that cannot take one chunk of frames in this many seconds is dropped
WRITE_STALL: Final = 20.0
#: GET /state is served from a copy at most this old (seconds) while the state changes
STATE_CACHE: Final = 0.1
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


def _status_page() -> bytes:
    return importlib.resources.files("gateway").joinpath("static/status.html").read_bytes()


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
        self.ready = asyncio.Event()
        self.bound_port: int | None = None
        #: application handlers for OSC messages that are not commands (``gateway.compat``)
        self.on_osc: OscHandler | None = None
        #: called with each new connection once its first output is queued
        self.on_connect: Callable[[ServerConnection], Awaitable[None] | None] | None = None
        self._wakers: dict[int, asyncio.Event] = {}
        self._connections: dict[int, ServerConnection] = {}
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._state_cache: tuple[int, float, bytes] | None = None
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
        core = self.core
        if core is None:
            return
        core.on_events(events, time.monotonic())
        self._wake_all()

    def rewind(self, state: State) -> None:
        """Show `state` instead of what was folded so far (a replay seeking back): every
        client gets a full dump of it, and the stream goes on from its seq."""
        core = self.core
        if core is None:
            return
        core.reset_view(StatusView(state), time.monotonic())
        self._wake_all()

    def _wake_all(self) -> None:
        core = self.core
        if core is None:
            return
        for number, session in core.sessions.items():
            if session.dropped is not None:
                self._abort(number)
            elif session.queue:
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
        log.info(
            "gateway serving UIs on ws://%s:%d/realtime, status page http://%s:%d/",
            self.host,
            self.bound_port,
            self.host,
            self.bound_port,
            extra={"node": "gateway", "seq": self.core.seq if self.core else "-"},
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
            log.info("gateway stopped; every UI was dropped", extra={"node": "gateway", "seq": "-"})

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(TIMER)
            core = self.core
            if core is None:
                continue
            for session in core.on_timer(time.monotonic()):
                waker = self._wakers.get(session.number)
                if waker is not None:
                    waker.set()

    async def _slow_ticks(self) -> None:
        while True:
            await asyncio.sleep(SLOW_TICK)
            core = self.core
            if core is None:
                continue
            with contextlib.suppress(CuelogError):
                status = self.controller.status()
                extra = node_values(status["nodes"], status["head_seq"])
                extra.update(status.get("osc", {}))  # a source's own values (replay position)
                core.set_extra(extra, time.monotonic())
            core.tick_seq()
            self._wake_all()

    # ------------------------------------------------------------------ HTTP

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if upgrade:
            if path not in WS_PATHS:
                return _response(404, b"no WebSocket here: use / or /realtime\n", "text/plain")
            if self.core is None or len(self._connections) >= MAX_CLIENTS:
                return _response(503, b"the gateway is full or not ready\n", "text/plain")
            return None
        if path == "/":
            return _response(200, _status_page(), "text/html; charset=utf-8")
        if path in ("/state", "/cluster") and not self._may_read(conn, request):
            return _response(
                403,
                b"this gateway is private: add ?passcode=... or connect from an allowed network\n",
                "text/plain",
            )
        if path == "/state":
            return _response(200, self.state_json(), "application/json")
        if path == "/cluster":
            try:
                body = orjson.dumps(self.controller.status())
            except CuelogError as exc:
                return _response(503, f"{exc}\n".encode(), "text/plain")
            return _response(200, body, "application/json")
        if path == "/favicon.ico":
            return _response(204, b"", "text/plain")
        return _response(
            404, b"not found: try /, /state, /cluster or ws://.../realtime\n", "text/plain"
        )

    def _may_read(self, conn: ServerConnection, request: Request) -> bool:
        """Whether an HTTP client may read the state (always, unless ``--private``)."""
        policy = self.policy
        if not policy.private or policy.controls(_host(conn)):
            return True
        given = parse_qs(urlsplit(request.path).query).get("passcode", [""])[0]
        return policy.passcode is not None and hmac.compare_digest(
            given.encode(), policy.passcode.encode()
        )

    def state_json(self) -> bytes:
        """``GET /state``: the state at one seq. Cached per seq, and for `STATE_CACHE` seconds
        while it changes (encoding a big show costs milliseconds on the loop)."""
        core = self.core
        if core is None:
            return b"{}"
        state = core.view.state
        now = time.monotonic()
        cached = self._state_cache
        if cached is not None and (cached[0] == state.seq or now - cached[1] < STATE_CACHE):
            return cached[2]
        body = orjson.dumps(
            {
                "log_id": core.log_id,
                "seq": state.seq,
                "digest": digest(state),
                "state": state.to_dict(),
            }
        )
        self._state_cache = (state.seq, now, body)
        return body

    # ------------------------------------------------------------------ one client

    async def _handler(self, conn: ServerConnection) -> None:
        core = self.core
        assert core is not None
        peer = _host(conn)
        query = parse_qs(urlsplit(conn.request.path if conn.request else "").query)
        since = _int(query.get("since", [None])[0])
        their_log = query.get("log", [None])[0]
        session = core.connect(peer, since, their_log)
        number = session.number
        waker = asyncio.Event()
        waker.set()
        self._wakers[number] = waker
        self._connections[number] = conn
        log.info(
            "%s connected%s (%s)",
            session.name,
            f" resuming from seq {since}" if since is not None else "",
            "control" if session.control else "watch only",
            extra={"node": "gateway", "seq": core.seq},
        )
        if self.on_connect is not None:
            with contextlib.suppress(Exception):
                result = self.on_connect(conn)
                if asyncio.iscoroutine(result):
                    await result
        writer = asyncio.create_task(self._writer(conn, session, waker))
        try:
            handled = 0
            async for message in conn:
                handled += 1
                size = len(message)
                if handled % YIELD_EVERY == 0 or size > YIELD_SIZE:
                    await asyncio.sleep(0)  # a burst of frames must not hold the loop
                if not core.admit_frame(session, time.monotonic(), size):
                    break  # flooding: dropped (the writer aborts the connection)
                if isinstance(message, str):
                    continue  # text frames are ignored, as upstream does
                effects = core.on_frame(session, message, time.monotonic())
                for effect in effects:
                    if isinstance(effect, Submit):
                        if session.in_flight >= MAX_IN_FLIGHT:
                            core.command_failed(
                                effect, f"more than {MAX_IN_FLIGHT} commands in flight: slow down"
                            )
                            continue
                        session.in_flight += 1
                        task = asyncio.create_task(self._submit(effect))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    elif isinstance(effect, Handle):
                        await self._handle(effect)
                waker.set()
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            core.disconnect(session)
            self._wakers.pop(number, None)
            self._connections.pop(number, None)
            log.info(
                "%s disconnected after %d messages%s",
                session.name,
                session.sent,
                f" ({session.dropped})" if session.dropped else "",
                extra={"node": "gateway", "seq": core.seq},
            )

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
                        core = self.core
                        if core is not None:
                            core.drop(session, f"took nothing for {WRITE_STALL:g} s")
                        break
                    await asyncio.sleep(0)
                if session.dropped is not None:
                    self._abort(session.number)
                    return
        except ConnectionClosed:
            return

    async def _submit(self, effect: Submit) -> None:
        core = self.core
        assert core is not None
        try:
            [(seq, reason)] = await self.controller.append_local_results([effect.op])
        except CuelogError as exc:
            core.command_failed(effect, str(exc))
        except Exception as exc:  # the controller stopping, say
            core.command_failed(effect, f"not appended: {exc}")
        else:
            core.command_done(effect, seq, reason)
            log.info(
                "%s: %s %r from %s",
                effect.reply_to,
                effect.op.target,
                (effect.op.data or {}).get("value"),
                effect.session.name,
                extra={"node": "gateway", "seq": seq},
            )
        effect.session.in_flight -= 1
        waker = self._wakers.get(effect.session.number)
        if waker is not None:
            waker.set()

    async def _handle(self, effect: Handle) -> None:
        handler = self.on_osc
        core = self.core
        assert core is not None
        if handler is None:
            core.answer(effect.session, effect.msg.address, "error", error="unknown address")
            return
        try:
            result = handler(effect.session, effect.msg)
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:
            log.exception("OSC handler for %s failed", effect.msg.address)
            core.answer(effect.session, effect.msg.address, "error", error=str(exc))


async def _send_batch(conn: ServerConnection, frames: list[bytes]) -> None:
    """Send frames as WebSocket messages with one socket write: websockets' protocol frames
    them, we hand the transport the joined bytes (a write per frame costs a syscall each)."""
    async with conn.send_context():
        protocol = conn.protocol
        for frame in frames:
            protocol.send_binary(frame)
        data = b"".join(protocol.data_to_send())
        if data:
            conn.transport.write(data)


def _response(status: int, body: bytes, content_type: str) -> Response:
    reasons = {
        200: "OK",
        204: "No Content",
        403: "Forbidden",
        404: "Not Found",
        503: "Service Unavailable",
    }
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["Connection"] = "close"
    return Response(status, reasons.get(status, "OK"), headers, body)


def _host(conn: ServerConnection) -> str:
    with contextlib.suppress(Exception):
        address: Any = conn.remote_address
        return str(address[0])
    return "unknown"


def _int(text: str | None) -> int | None:
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)
