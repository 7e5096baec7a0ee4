"""The seed's `ControllerCommunications`: the controller, its UI gateway and the editor channel
in one `AsyncCommsThread`, with upstream's names, arguments and thread-safety.

This module only wires the parts together and keeps upstream's API; each part has its home:
the operations a UI message or broadcast becomes (`gateway.commands`), OSC address patterns
and the handler table (`gateway.patterns`), the handler thread (`gateway.handlers`), the
editor channel (`gateway.editor`), the local services (`gateway.services`). Underneath, every
call goes through the log:

- ``register_command_handler(address, handler, forward_to_nodes=True)``: a UI message on
  `address` becomes an event first, and ``handler(value)`` runs only once that event is
  durable (and, for a command, accepted by the reducer), on the handler thread, in seq order.

  * A built-in gateway command (``/engine/command/{go,stop,pause,load,unload,setnextcue,
    cue_enabled,resetall}`` and ``/<node>/{audio,video}/mixer/...``) always takes the
    gateway's own path: checked, appended with the client as sender, gated by the reducer and
    answered on ``/reply<address>``. The handler is called after that event is committed and
    accepted; a refused one (``go`` while not armed) never calls it. `forward_to_nodes` cannot
    keep a built-in command from the nodes (the log decides, not the handler). Upstream's
    engine registers go/load/stop/setnextcue/cue_enabled with ``forward_to_nodes=False`` and
    sends them to the nodes itself from the handler; here that second send would be a second
    command event, fired twice: such a handler must only update the engine (registering one
    logs a warning saying so).
  * Any other address with ``forward_to_nodes=True`` is appended as a command
    ``target=<last path part>``, ``data={"value", "address"}`` (sender: the client), which
    nodes fire like any command. The client gets ``/reply<address>`` ``ok``/``error``.
  * With ``forward_to_nodes=False`` nothing reaches the nodes, but the message is still
    recorded, so ``replay`` sees it: a status event (sender ``controller``, target
    ``local_command``, data ``{"value", "address", "client"}``). Nodes never fire status events.

  ``value`` is the message's first argument (None without one); for a built-in command it is
  the value the gateway recorded (``cue_enabled`` as ``"<cue> <0|1>"``).
- ``register_osc_handler(pattern, handler)``: OSC 1.0 address patterns (``* ? [..] [!..]
  {..}``). An exact address is looked up in a dict first; then patterns, compiled once, in
  registration order; the first match is called as ``handler(address, args)`` on the handler
  thread. These messages are not recorded (they are the application's). Built-in commands
  never reach them: ``/<node>/audio/mixer/...`` is already a ``player_control`` command
  event. A message nothing wants gets ``/reply<address>`` ``error`` ("unknown address").
  A client without control (see `gateway.session.Policy`) gets ``denied`` from every
  application handler, and nothing runs.
- ``broadcast_osc(address, value)``: thread-safe; records a status event (sender
  ``controller``, target = the address, data ``{"value": value}``; ``/engine/status/timecode``
  becomes target ``timecode`` with an int of ms, which the reducer owns). The gateway's view
  sends it to every UI and ``replay`` sees it. Addresses the log owns (running, armed, cue
  statuses ...) are recorded too, but UIs keep seeing the log's own value. Returns a
  `concurrent.futures.Future` of the seq. A value OSC cannot carry raises `ValueError` at once.
- The editor channel: NNG Rep0 on ``editor_address`` (IPC), JSON ``{action, action_uuid,
  value}``. ``editor_callback(message)`` (or ``editor_callback(message, context)``) runs on an
  editor worker thread; a dict it returns is the reply, otherwise ``reply_to_editor(reply,
  context)`` (from any other thread, or from inside the callback) must answer within
  ``editor_reply_timeout`` seconds. Bad requests and failing callbacks get error replies.
- ``request_to_nodeconf`` / ``request_to_hwdiscovery``: NNG Req0 over IPC, JSON both ways; the
  reply must be a JSON object. No reply in time raises `ServiceTimeout` (a `TimeoutError` and a
  `CuelogError`) naming the service and its address; never returns None.

``set_on_client_connect(callback)``: ``callback(websocket)`` per new UI, awaited on the loop
before the gateway starts sending the client its dump. The gateway already sends every UI the
whole state at one seq (`gateway.dump`); a callback that sends state itself only adds
duplicates.

Differences from upstream, on purpose: the WebSocket binds 127.0.0.1 unless the config says
``host``; ``port: 0`` binds a free port (`ws_port` says which) while ``port: None`` or
``False`` disables the gateway; handlers never run on the event loop; registrations made after
`start` take effect at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from websockets.asyncio.server import ServerConnection

from eventlog import CONTROLLER, CuelogError, Operation, OperationType, UsageError
from eventlog.logctx import ComponentLog
from gateway.commands import application_operation, broadcast_operation, built_in
from gateway.editor import EDITOR_ADDRESS, EDITOR_REPLY_TIMEOUT, EditorChannel, EditorContext
from gateway.handlers import CommandEntry, CommandHandler, CommittedCommands, HandlerThread
from gateway.osc import OscMsg
from gateway.patterns import OscHandler, OscRouter, compile_pattern, is_pattern
from gateway.server import Gateway
from gateway.services import (
    HWDISCOVERY_ADDRESS,
    NODECONF_ADDRESS,
    ServiceError,
    Services,
    ServiceTimeout,
    encode_request,
)
from gateway.session import Policy, Session, Submit, parse_networks
from replicas.compat import AsyncCommsThread, NodesHub

log = ComponentLog("cuelog.compat")

DEFAULT_WS_HOST: Final = "127.0.0.1"
DEFAULT_WS_PORT: Final = 9190
#: extra seconds a caller waits beyond a service timeout for the loop to report it
_GRACE: Final = 5.0

ConnectCallback = Callable[[ServerConnection], Awaitable[None] | None]

__all__ = ["ControllerCommunications"]


class ControllerCommunications(AsyncCommsThread):
    """The controller engine's comms: the log's controller, the UI gateway, the editor channel
    and the nodeconf / hwdiscovery requesters, on one asyncio loop in a daemon thread.

    ``websocket_osc_config`` keys: ``host`` (default 127.0.0.1), ``port`` (default 9190; 0 a
    free port; None or False: no gateway), ``node_id`` (default "controller"), ``db`` (the log
    file, default ":memory:"), ``passcode``, ``allow`` (CIDRs, a string or a list), ``private``.
    Keyword-only options: ``db`` (wins over the config's), ``editor_address``,
    ``nodeconf_address``, ``hwdiscovery_address``, ``editor_reply_timeout``, ``timeout`` and
    ``thread_name`` (`AsyncCommsThread`'s); the rest go to `replicas.Controller`.
    """

    def __init__(
        self,
        nng_hub_address: str,
        editor_callback: Callable[..., Any],
        node_operation_callback: dict[OperationType, Callable[..., Any]] | None,
        websocket_osc_config: dict[str, Any] | None = None,
        *,
        db: str | Path | None = None,
        editor_address: str = EDITOR_ADDRESS,
        nodeconf_address: str = NODECONF_ADDRESS,
        hwdiscovery_address: str = HWDISCOVERY_ADDRESS,
        editor_reply_timeout: float = EDITOR_REPLY_TIMEOUT,
        **options: Any,
    ) -> None:
        thread_options = {k: options.pop(k) for k in ("thread_name", "timeout") if k in options}
        super().__init__(**thread_options)
        config = dict(websocket_osc_config or {})
        self.nodeconf_address = nodeconf_address
        self.hwdiscovery_address = hwdiscovery_address
        self._ws_osc_config = config
        self._ws_osc_host: str = config.get("host", DEFAULT_WS_HOST)
        port = config.get("port", DEFAULT_WS_PORT)
        if (
            port is not None
            and port is not False
            and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535)
        ):
            raise ValueError(f"websocket_osc_config port must be 0..65535 or None, got {port!r}")
        self._ws_osc_port: int | None = None if port is None or port is False else port
        self._node_id: str = config.get("node_id", CONTROLLER)
        self.log = log.for_node(self._node_id)
        log_file = db if db is not None else config.get("db", ":memory:")

        self.nng_hub = NodesHub(nng_hub_address, NodesHub.Mode.LISTENER, db=log_file, **options)
        assert self.nng_hub.controller is not None
        self.controller = self.nng_hub.controller
        self.node_operation_callback = node_operation_callback or {}
        if node_operation_callback:
            self.nng_hub.set_receive_callbacks(node_operation_callback)
        self._command_handlers: dict[str, CommandEntry] = {}
        self._committed = CommittedCommands(self._command_handlers)
        self.controller.listeners.append(self._committed)

        self.gateway: Gateway | None = None
        if self._ws_osc_port is not None:
            allow = config.get("allow")
            if isinstance(allow, list | tuple):
                allow = ",".join(str(a) for a in allow)
            policy = Policy(
                allow=parse_networks(allow) if allow else (),
                passcode=config.get("passcode"),
                private=bool(config.get("private", False)),
            )
            self.gateway = Gateway(
                self.controller, self._ws_osc_host, self._ws_osc_port, policy=policy
            )
            self.gateway.on_osc = self._on_osc
            self.gateway.on_connect = self._client_connected

        self._osc_router = OscRouter()
        self._on_client_connect: ConnectCallback | None = None
        self._runner: HandlerThread | None = None
        self.editor = EditorChannel(
            editor_address, editor_callback, editor_reply_timeout, self._node_id
        )
        self._services = Services(self._node_id)
        #: set once the controller, the gateway and the editor channel are all up (or failed)
        self.ready = threading.Event()
        #: why start-up failed (`wait_ready` raises it)
        self.failure: BaseException | None = None
        self.stopped = threading.Event()

    # ------------------------------------------------------------------ properties

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def ws_port(self) -> int | None:
        """The port the gateway listens on (None until it does, or when it is disabled)."""
        return self.gateway.bound_port if self.gateway is not None else None

    @property
    def editor_callback(self) -> Callable[..., Any]:
        return self.editor.callback

    @editor_callback.setter
    def editor_callback(self, callback: Callable[..., Any]) -> None:
        self.editor.callback = callback

    @property
    def editor_address(self) -> str:
        return self.editor.address

    @editor_address.setter
    def editor_address(self, address: str) -> None:
        self.editor.address = address

    @property
    def editor_reply_timeout(self) -> float:
        return self.editor.reply_timeout

    @editor_reply_timeout.setter
    def editor_reply_timeout(self, seconds: float) -> None:
        self.editor.reply_timeout = seconds

    # ------------------------------------------------------------------ lifecycle

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until everything listens; raise what failed if start-up failed."""
        done = self.ready.wait(timeout)
        if self.failure is not None:
            raise self.failure
        return done

    def create_all_tasks(self) -> list[asyncio.Task[Any]]:
        loop = asyncio.get_running_loop()
        self._runner = self._committed.runner = HandlerThread(loop, self.timeout, self._node_id)
        tasks = [
            asyncio.ensure_future(self.nng_hub.start()),
            asyncio.ensure_future(self.editor_listener()),
        ]
        if self.gateway is not None:
            tasks.append(asyncio.ensure_future(self.gateway.run()))
        tasks.append(asyncio.ensure_future(self._watch_ready(list(tasks))))
        return tasks

    async def run_asyncio_comms(self) -> None:
        try:
            await super().run_asyncio_comms()
        finally:
            self._services.close()
            if self._runner is not None:
                self._runner.close()
            self.editor.close()
            self.ready.set()
            self.stopped.set()

    async def _watch_ready(self, tasks: list[asyncio.Future[Any]]) -> None:
        async def all_up() -> None:
            await self.controller.ready.wait()
            await self.editor.listening.wait()
            if self.gateway is not None:
                await self.gateway.ready.wait()

        up = asyncio.ensure_future(all_up())
        try:
            await asyncio.wait([up, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.failure = task.exception()
        self.ready.set()

    # ------------------------------------------------------------------ UI: registrations

    def register_command_handler(
        self, osc_path: str, handler: CommandHandler, forward_to_nodes: bool = True
    ) -> None:
        """Call ``handler(value)`` for every UI message on `osc_path` the log accepted (see
        the module's docstring for what is appended, and when)."""
        if is_pattern(osc_path):
            raise ValueError(f"a command handler takes an exact address, not {osc_path!r}")
        compile_pattern(osc_path)  # the address checks
        if not forward_to_nodes and built_in(osc_path):
            # upstream's engine registers go/load/stop... this way and forwards them itself:
            # here the gateway has already appended the command, so that would fire it twice
            self.log.warning(
                "%s is a built-in command: the gateway appends it and nodes fire it when the "
                "log accepts it, whatever forward_to_nodes says; its handler must not forward "
                "it to the nodes again",
                osc_path,
            )
        self._command_handlers[osc_path] = CommandEntry(handler, bool(forward_to_nodes))
        self.log.debug("command handler for %s (forward=%s)", osc_path, forward_to_nodes)

    def register_osc_handler(self, osc_pattern: str, handler: OscHandler) -> None:
        """Call ``handler(address, args)`` for UI messages matching `osc_pattern`."""
        self._osc_router.register(osc_pattern, handler)
        self.log.debug("OSC handler for %s", osc_pattern)

    def set_on_client_connect(self, callback: ConnectCallback | None) -> None:
        """``callback(websocket)`` for each new UI connection, on the comms loop (a coroutine
        is awaited), before its state dump is sent. Keep it quick."""
        self._on_client_connect = callback

    # ------------------------------------------------------------------ UI: messages

    async def _client_connected(self, conn: ServerConnection) -> None:
        callback = self._on_client_connect
        if callback is None:
            return
        try:
            result = callback(conn)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.log.exception("on_client_connect callback failed")

    async def _on_osc(self, session: Session, msg: OscMsg) -> None:
        """A UI message that is not a built-in command (the gateway's `on_osc` hook)."""
        gateway = self.gateway
        assert gateway is not None and gateway.core is not None
        core = gateway.core
        address = msg.address
        command = self._command_handlers.get(address)
        handler = None if command is not None else self._osc_router.match(address)
        if command is None and handler is None:
            core.answer(session, address, "error", error="unknown address")
            return
        if core.refuse(session, address):
            return
        if handler is not None:
            if self._runner is not None:
                self._runner.push(handler, (address, list(msg.args)), address)
            return
        assert command is not None
        value = msg.args[0] if msg.args else None
        op = application_operation(session.sender, address, value, command.forward)
        # awaited here (not in a task) so this client's messages stay in order and the reply
        # is queued before the gateway wakes the client's writer
        await gateway.append(Submit(session, address, op))

    # ------------------------------------------------------------------ UI: broadcasts

    def broadcast_osc(self, address: str, value: Any) -> concurrent.futures.Future[int]:
        """Record `value` on `address` as a status event; every UI is sent it (thread-safe).

        Raises ValueError for a value OSC cannot carry, `UsageError` before `start`. The
        future gives the event's seq once it is durable."""
        op = broadcast_operation(address, value)
        loop = self._loop()
        try:
            return asyncio.run_coroutine_threadsafe(self._append(op), loop)
        except RuntimeError as exc:  # the loop has closed: the comms stopped
            failed: concurrent.futures.Future[int] = concurrent.futures.Future()
            failed.set_exception(CuelogError(f"{self.name} has stopped: {exc}"))
            self.log.debug("broadcast on %s after stop: dropped", address)
            return failed

    async def _append(self, op: Operation) -> int:
        if not self.controller.ready.is_set():
            await self.controller.ready.wait()
        return (await self.controller.append_local([op]))[0]

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.ident is None:
            raise UsageError(f"{self.name} is not started: call start() first")
        self.loop_ready.wait(self.timeout)
        loop = self.event_loop
        if loop is None:
            raise UsageError(f"{self.name} has no event loop")
        return loop

    def _blocking_call(self) -> asyncio.AbstractEventLoop:
        loop = self._loop()
        if threading.get_ident() == self.ident:
            raise UsageError(
                "this call waits for the comms loop and cannot be made on it: await the "
                "async form (respond_to_editor) or call it from another thread"
            )
        return loop

    # ------------------------------------------------------------------ the editor

    async def editor_listener(self) -> None:
        """Serve editor requests on `editor_address` until cancelled."""
        await self.editor.listen()

    async def respond_to_editor(self, message: Any, context: EditorContext) -> None:
        """Answer an editor request (on the comms loop)."""
        await self.editor.respond(message, context)

    def reply_to_editor(self, message: Any, context: EditorContext) -> None:
        """Answer an editor request from any other thread; waits until it is sent."""
        loop = self._blocking_call()
        future = asyncio.run_coroutine_threadsafe(self.respond_to_editor(message, context), loop)
        try:
            future.result(self.timeout)
        except BaseException:
            future.cancel()
            raise

    # ------------------------------------------------------------------ local services

    def request_to_nodeconf(
        self, message: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Ask nodeconf (thread-safe); its JSON reply. Raises `ServiceTimeout` in time."""
        return self._request("nodeconf", self.nodeconf_address, message, timeout)

    def request_to_hwdiscovery(
        self, message: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Ask hwdiscovery (thread-safe); its JSON reply. Raises `ServiceTimeout` in time."""
        return self._request("hwdiscovery", self.hwdiscovery_address, message, timeout)

    def _request(
        self, service: str, address: str, message: Any, timeout: float | None
    ) -> dict[str, Any]:
        wait: float | None = self.timeout if timeout is None else timeout
        if wait == -1:
            wait = None
        data = encode_request(service, message)
        loop = self._blocking_call()
        future = asyncio.run_coroutine_threadsafe(
            self._services.request(service, address, data, wait), loop
        )
        try:
            reply: dict[str, Any] = future.result(None if wait is None else wait + _GRACE)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            if isinstance(exc, ServiceTimeout):
                raise
            raise ServiceTimeout(
                f"no reply from {service} at {address} within {wait:g} s (the comms loop is stuck?)"
            ) from None
        except concurrent.futures.CancelledError:
            raise ServiceError(
                f"the {service} request was cancelled: {self.name} stopped"
            ) from None
        return reply
