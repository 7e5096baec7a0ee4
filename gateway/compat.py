"""The seed's `ControllerCommunications`: the controller, its UI gateway and the editor channel
in one `AsyncCommsThread`, with upstream's names, arguments and thread-safety.

Underneath, every call goes through the log:

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
    `LOCAL_COMMAND`, data ``{"value", "address", "client"}``). Nodes never fire status events.

  ``value`` is the message's first argument (None without one); for a built-in command it is
  the value the gateway recorded (``cue_enabled`` as ``"<cue> <0|1>"``).
- ``register_osc_handler(pattern, handler)``: OSC 1.0 address patterns (``* ? [..] [!..]
  {..}``). An exact address is looked up in a dict first; then patterns, compiled once, in
  registration order; the first match is called as ``handler(address, args)`` on the handler
  thread. These messages are not recorded (they are the application's). Built-in commands
  (`built_in`) never reach them: ``/<node>/audio/mixer/...`` is already a ``player_control``
  command event. A message nothing wants gets ``/reply<address>`` ``error`` ("unknown
  address").
  A client without control (see `gateway.session.Policy`) gets ``denied`` from every
  application handler, and nothing runs.
- ``broadcast_osc(address, value)``: thread-safe; records a status event (sender
  ``controller``, target = the address, data ``{"value": value}``; ``/engine/status/timecode``
  becomes target ``timecode`` with an int of ms, which the reducer owns). The gateway's view
  sends it to every UI and ``replay`` sees it. Addresses the log owns (running, armed, cue
  statuses ...) are recorded too, but UIs keep seeing the log's own value. Returns a
  `concurrent.futures.Future` of the seq. A value OSC cannot carry raises `ValueError` at once.
- The editor channel: NNG Rep0 on `EDITOR_ADDRESS` (IPC), JSON ``{action, action_uuid,
  value}``; `EDITOR_WORKERS` requests in flight, each on its own Rep0 context.
  ``editor_callback(message)`` (or ``editor_callback(message, context)`` when it takes two
  arguments, as upstream's did) runs on an editor worker thread. A dict it returns is the reply;
  otherwise the reply must come from ``reply_to_editor(reply, context)`` (any other thread;
  from inside the callback too) within ``editor_reply_timeout`` seconds of the callback's
  return, or the editor gets an error. Every reply carries the
  request's ``action_uuid`` (and ``type`` = the action when the reply has none). A request that
  is not JSON, not an object, or has no action gets ``{"type": "error", "value": <why>,
  "action_uuid": ...}``; a callback that raises gets the same.
- ``request_to_nodeconf`` / ``request_to_hwdiscovery``: NNG Req0 over IPC, JSON both ways; the
  reply must be a JSON object. No reply in time raises `ServiceTimeout` (a `TimeoutError` and a
  `CuelogError`) naming the service and its address; never returns None.

``set_on_client_connect(callback)``: ``callback(websocket)`` per new UI, awaited on the loop
before the gateway starts sending the client its dump. The gateway already sends every UI the whole
state at one seq; a callback that sends state itself only adds duplicates.

Differences from upstream, on purpose: the WebSocket binds 127.0.0.1 unless the config says
``host``; ``port: 0`` binds a free port (`ws_port` says which) while ``port: None`` or
``False`` disables the gateway; handlers never run on the event loop; registrations made after
`start` take effect at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import json
import logging
import math
import queue
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pynng
from websockets.asyncio.server import ServerConnection

from eventlog import (
    CONTROLLER,
    ActionType,
    CuelogError,
    Event,
    Operation,
    OperationType,
    State,
    UsageError,
    ValidationError,
    validate_operation,
)
from gateway import osc
from gateway.osc import OscMsg
from gateway.server import Gateway
from gateway.session import (
    COMMAND_PREFIX,
    ENGINE_COMMANDS,
    Policy,
    Session,
    Submit,
    parse_networks,
)
from replicas.compat import AsyncCommsThread, NodesHub
from replicas.nngio import close_all, guarded

log = logging.getLogger("cuelog.compat")

EDITOR_ADDRESS: Final = "ipc:///tmp/editor.ipc"
NODECONF_ADDRESS: Final = "ipc:///tmp/nodeconf.ipc"
HWDISCOVERY_ADDRESS: Final = "ipc:///tmp/hwdiscovery.ipc"
#: editor requests served at once (each holds one Rep0 context and one worker thread)
EDITOR_WORKERS: Final = 8
#: how long a deferred editor reply (`reply_to_editor`) may take (the editor waits 30 s)
EDITOR_REPLY_TIMEOUT: Final = 30.0
#: largest editor request or service reply accepted
MAX_JSON_BYTES: Final = 16 * 1024 * 1024
#: handler calls waiting for the handler thread; beyond it calls are dropped, loudly
HANDLER_QUEUE: Final = 10_000
#: status target recording a UI message handled without forwarding it to the nodes
LOCAL_COMMAND: Final = "local_command"
TIMECODE_ADDRESS: Final = "/engine/status/timecode"
DEFAULT_WS_HOST: Final = "127.0.0.1"
DEFAULT_WS_PORT: Final = 9190
#: the prefix of the sender the gateway records for a UI client
_UI_SENDER: Final = "ui:"
_INT32: Final = 2**31
_MAX_ADDRESS: Final = 512
#: extra seconds a caller waits beyond a service timeout for the loop to report it
_GRACE: Final = 5.0

CommandHandler = Callable[[Any], Any]
OscHandler = Callable[[str, list[Any]], Any]
ConnectCallback = Callable[[ServerConnection], Awaitable[None] | None]

__all__ = [
    "EDITOR_ADDRESS",
    "HWDISCOVERY_ADDRESS",
    "LOCAL_COMMAND",
    "NODECONF_ADDRESS",
    "ControllerCommunications",
    "EditorChannelError",
    "EditorContext",
    "OscRouter",
    "ServiceError",
    "ServiceTimeout",
    "broadcast_operation",
    "built_in",
    "compile_pattern",
    "is_pattern",
]


class ServiceError(CuelogError):
    """A local service (nodeconf, hwdiscovery) answered with something unusable."""


class ServiceTimeout(ServiceError, TimeoutError):
    """A local service did not answer in time."""


class EditorChannelError(CuelogError):
    """The editor channel could not be opened."""


# --------------------------------------------------------------------------- OSC patterns

_WILDCARDS: Final = frozenset("*?[]{}")


def is_pattern(text: str) -> bool:
    """Whether `text` uses any OSC 1.0 pattern syntax (else it is an exact address)."""
    return any(c in _WILDCARDS for c in text)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """An OSC 1.0 address pattern as a regular expression (use ``fullmatch``).

    ``?`` is one character and ``*`` any run of characters, neither crossing ``/``;
    ``[abc]``, ``[a-z]`` one of those characters, ``[!...]`` one not among them (never
    ``/``; a ``-`` first or last is literal); ``{foo,bar}`` one of the strings. Every other
    character is itself. Raises `ValueError` naming what is wrong.
    """
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"an OSC address pattern starts with '/': {pattern!r}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in pattern):
        raise ValueError(f"an OSC address pattern has no spaces or control characters: {pattern!r}")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            regex, i = _char_class(pattern, i)
            out.append(regex)
        elif c == "{":
            regex, i = _alternatives(pattern, i)
            out.append(regex)
        elif c in "]}":
            raise ValueError(f"{pattern!r}: {c!r} at {i} closes nothing")
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    """``[...]`` at `start` -> (regex, index after ``]``)."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] == "!"
    if negate:
        i += 1
    items: list[str] = []
    while True:
        if i >= len(pattern):
            raise ValueError(f"{pattern!r}: '[' at {start} is never closed")
        c = pattern[i]
        if c == "]":
            break
        if c in "[{}":
            raise ValueError(f"{pattern!r}: {c!r} inside [...] at {i}")
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            low, high = c, pattern[i + 2]
            if low > high:
                raise ValueError(f"{pattern!r}: range {low}-{high} at {i} runs backwards")
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            items.append(re.escape(c))
            i += 1
    if not items:
        raise ValueError(f"{pattern!r}: empty [...] at {start}")
    body = "".join(items)
    # neither form may match '/': a character class never crosses a part of the address
    return (f"[^/{body}]" if negate else f"(?!/)[{body}]"), i + 1


def _alternatives(pattern: str, start: int) -> tuple[str, int]:
    """``{a,b}`` at `start` -> (regex, index after ``}``)."""
    end = pattern.find("}", start + 1)
    if end < 0:
        raise ValueError(f"{pattern!r}: '{{' at {start} is never closed")
    body = pattern[start + 1 : end]
    nested = sorted(set(body) & set("*?[]{"))
    if nested:
        raise ValueError(f"{pattern!r}: {''.join(nested)!r} inside {{...}} at {start}")
    return "(?:" + "|".join(re.escape(word) for word in body.split(",")) + ")", end + 1


class OscRouter:
    """Handlers by exact address (a dict) and by pattern (compiled once, first match wins).

    Registration may happen on any thread while the loop matches: patterns are kept in a
    tuple that is replaced, never changed in place.
    """

    def __init__(self) -> None:
        self._exact: dict[str, OscHandler] = {}
        self._patterns: tuple[tuple[str, re.Pattern[str], OscHandler], ...] = ()
        self._lock = threading.Lock()

    def register(self, pattern: str, handler: OscHandler) -> None:
        """Add (or replace, keeping its place) the handler of `pattern`."""
        if not is_pattern(pattern):
            compile_pattern(pattern)  # the same checks as a pattern
            self._exact[pattern] = handler
            return
        compiled = compile_pattern(pattern)
        with self._lock:
            found = [p for p in self._patterns if p[0] == pattern]
            if found:
                self._patterns = tuple(
                    (p[0], compiled, handler) if p[0] == pattern else p for p in self._patterns
                )
            else:
                self._patterns = (*self._patterns, (pattern, compiled, handler))

    def unregister(self, pattern: str) -> bool:
        if self._exact.pop(pattern, None) is not None:
            return True
        with self._lock:
            kept = tuple(p for p in self._patterns if p[0] != pattern)
            removed = len(kept) != len(self._patterns)
            self._patterns = kept
        return removed

    def match(self, address: str) -> OscHandler | None:
        handler = self._exact.get(address)
        if handler is not None:
            return handler
        for _, compiled, found in self._patterns:
            if compiled.fullmatch(address):
                return found
        return None


def built_in(address: str) -> bool:
    """Whether the gateway itself turns `address` into a command event (an engine command or
    a player-control address), so that application OSC handlers never see it."""
    if address.startswith(COMMAND_PREFIX):
        return address[len(COMMAND_PREFIX) :] in ENGINE_COMMANDS
    parts = address[1:].split("/")
    return len(parts) >= 4 and parts[1] in ("audio", "video") and parts[2] == "mixer"


# --------------------------------------------------------------------------- broadcasts


def _osc_scalar(address: str, value: Any) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if not -_INT32 <= value < _INT32:
            raise ValueError(f"{address}: {value} does not fit an OSC int (32 bits)")
        return value
    if isinstance(value, float):
        if not osc.fits_float32(value):
            raise ValueError(
                f"{address}: an OSC float must be finite and fit 32 bits, got {value!r}"
            )
        return value
    raise ValueError(
        f"{address}: cannot broadcast a {type(value).__name__} (use str, int, float, bool or None)"
    )


def broadcast_operation(address: str, value: Any) -> Operation:
    """The status event that records ``broadcast_osc(address, value)``. Raises ValueError."""
    if (
        not isinstance(address, str)
        or not address.startswith("/")
        or len(address) > _MAX_ADDRESS
        or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in address)
        or is_pattern(address)
    ):
        raise ValueError(f"not an OSC address to broadcast on: {address!r}")
    if address == TIMECODE_ADDRESS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{address}: the timecode is a number of ms, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{address}: the timecode must be finite, got {value!r}")
        op = Operation(
            OperationType.STATUS,
            ActionType.UPDATE,
            CONTROLLER,
            "timecode",
            {"value": _osc_scalar(address, int(value))},
        )
    else:
        op = Operation(
            OperationType.STATUS,
            ActionType.UPDATE,
            CONTROLLER,
            address,
            {"value": _osc_scalar(address, value)},
        )
    try:
        return validate_operation(op)
    except ValidationError as exc:
        raise ValueError(f"{address}: {exc}") from None


# --------------------------------------------------------------------------- handler thread


class _HandlerRunner:
    """Runs application handlers on one thread, in the order they were queued."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], str] | None] = (
            queue.Queue(maxsize=HANDLER_QUEUE)
        )
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="cuelog-handlers", daemon=True)
        self._thread.start()

    def push(self, handler: Callable[..., Any], args: tuple[Any, ...], address: str) -> None:
        try:
            self._queue.put_nowait((handler, args, address))
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.error(
                    "OSC handlers are %d calls behind; %d calls dropped (a handler is stuck?)",
                    HANDLER_QUEUE,
                    self.dropped,
                )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            handler, args, address = item
            try:
                result = handler(*args)
                if inspect.isawaitable(result):
                    # an async handler runs on the comms loop; the next waits for it
                    asyncio.run_coroutine_threadsafe(_awaited(result), self._loop).result(
                        self._timeout
                    )
            except Exception:
                log.exception("handler for %s failed", address)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


class _CommittedCommands:
    """A commit listener: calls command handlers for the UI messages the log accepted."""

    def __init__(self, comms: ControllerCommunications) -> None:
        self.comms = comms

    def on_open(self, log_id: str, state: State) -> None:
        """Nothing to do: history never calls a handler."""

    def on_commit(self, events: list[Event], reasons: list[str | None]) -> None:
        handlers = self.comms._command_handlers
        runner = self.comms._runner
        if not handlers or runner is None:
            return
        for event, reason in zip(events, reasons, strict=False):
            op = event.op
            if op.type is OperationType.COMMAND:
                if reason is not None or not op.sender.startswith(_UI_SENDER):
                    continue
            elif not (
                op.type is OperationType.STATUS
                and op.target == LOCAL_COMMAND
                and op.sender == CONTROLLER
            ):
                continue
            data = op.data or {}
            address = data.get("address")
            if not isinstance(address, str):
                continue
            entry = handlers.get(address)
            if entry is not None:
                runner.push(entry.handler, (data.get("value"),), address)


@dataclass(frozen=True, slots=True)
class _Command:
    handler: CommandHandler
    forward: bool


# --------------------------------------------------------------------------- the editor


class EditorContext:
    """One editor request waiting for its reply (pass it to `reply_to_editor`)."""

    def __init__(self, nng_context: Any, action: str | None, action_uuid: Any) -> None:
        self.nng_context = nng_context
        self.action = action
        self.action_uuid = action_uuid
        self.replied = False
        self.done = asyncio.Event()

    def __repr__(self) -> str:
        return f"EditorContext({self.action!r}, {self.action_uuid!r}, replied={self.replied})"


class _BadRequest(Exception):
    def __init__(self, why: str, action_uuid: Any = None) -> None:
        super().__init__(why)
        self.action_uuid = action_uuid


def _uuid_of(request: Any) -> Any:
    found = request.get("action_uuid") if isinstance(request, dict) else None
    return found if isinstance(found, str | int) and not isinstance(found, bool) else None


def _decode_request(raw: bytes) -> dict[str, Any]:
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _BadRequest(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise _BadRequest(
            f"the request must be a JSON object {{action, action_uuid, value}}, "
            f"got {type(request).__name__}"
        )
    action = request.get("action")
    if not isinstance(action, str) or not action:
        raise _BadRequest("the request has no action", _uuid_of(request))
    return request


def _takes_context(callback: Callable[..., Any]) -> bool:
    """Whether `callback` takes (message, context), as upstream's editor callbacks do."""
    try:
        inspect.signature(callback).bind(None, None)
    except (TypeError, ValueError):
        return False
    return True


def _encode_reply(reply: Any, context: EditorContext) -> bytes:
    body = dict(reply) if isinstance(reply, dict) else {"value": reply}
    body.setdefault("type", context.action or "error")
    body["action_uuid"] = context.action_uuid
    try:
        return json.dumps(body, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        log.error("editor reply to %s cannot be sent as JSON: %s", context.action, exc)
        return json.dumps(
            {
                "type": "error",
                "value": f"the controller's reply could not be encoded: {exc}",
                "action_uuid": context.action_uuid,
            }
        ).encode()


# --------------------------------------------------------------------------- the API


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
        self.editor_callback = editor_callback
        self.editor_address = editor_address
        self.nodeconf_address = nodeconf_address
        self.hwdiscovery_address = hwdiscovery_address
        self.editor_reply_timeout = editor_reply_timeout
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
        log_file = db if db is not None else config.get("db", ":memory:")

        self.nng_hub = NodesHub(nng_hub_address, NodesHub.Mode.LISTENER, db=log_file, **options)
        assert self.nng_hub.controller is not None
        self.controller = self.nng_hub.controller
        self.node_operation_callback = node_operation_callback or {}
        if node_operation_callback:
            self.nng_hub.set_receive_callbacks(node_operation_callback)
        self.controller.listeners.append(_CommittedCommands(self))

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

        self._command_handlers: dict[str, _Command] = {}
        self._osc_router = OscRouter()
        self._on_client_connect: ConnectCallback | None = None
        self._runner: _HandlerRunner | None = None
        self._editor_pool = concurrent.futures.ThreadPoolExecutor(
            EDITOR_WORKERS, thread_name_prefix="cuelog-editor"
        )
        self._editor_listening = asyncio.Event()
        self._requesters: dict[str, Any] = {}
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

    # ------------------------------------------------------------------ lifecycle

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until everything listens; raise what failed if start-up failed."""
        done = self.ready.wait(timeout)
        if self.failure is not None:
            raise self.failure
        return done

    def create_all_tasks(self) -> list[asyncio.Task[Any]]:
        loop = asyncio.get_running_loop()
        self._runner = _HandlerRunner(loop, self.timeout)
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
            for sock in self._requesters.values():
                sock.close()
            self._requesters.clear()
            if self._runner is not None:
                self._runner.close()
            self._editor_pool.shutdown(wait=False, cancel_futures=True)
            self.ready.set()
            self.stopped.set()

    async def _watch_ready(self, tasks: list[asyncio.Future[Any]]) -> None:
        async def all_up() -> None:
            await self.controller.ready.wait()
            await self._editor_listening.wait()
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
            log.warning(
                "%s is a built-in command: the gateway appends it and nodes fire it when the "
                "log accepts it, whatever forward_to_nodes says; its handler must not forward "
                "it to the nodes again",
                osc_path,
            )
        self._command_handlers[osc_path] = _Command(handler, bool(forward_to_nodes))
        log.debug("command handler for %s (forward=%s)", osc_path, forward_to_nodes)

    def register_osc_handler(self, osc_pattern: str, handler: OscHandler) -> None:
        """Call ``handler(address, args)`` for UI messages matching `osc_pattern`."""
        self._osc_router.register(osc_pattern, handler)
        log.debug("OSC handler for %s", osc_pattern)

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
            log.exception("on_client_connect callback failed")

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
        if core.read_only is not None:
            core.answer(session, address, "denied", error=core.read_only)
            return
        if not session.control:
            core.answer(
                session,
                address,
                "denied",
                error="this client may not control the show: send /connect <passcode>",
            )
            log.warning("denied %s from %s (no control)", address, session.name)
            return
        if handler is not None:
            runner = self._runner
            if runner is not None:
                runner.push(handler, (address, list(msg.args)), address)
            return
        assert command is not None
        value = msg.args[0] if msg.args else None
        if command.forward:
            target = next((p for p in reversed(address.split("/")) if p), address)
            op = Operation(
                OperationType.COMMAND,
                ActionType.UPDATE,
                session.sender,
                target,
                {"value": value, "address": address},
            )
        else:
            op = Operation(
                OperationType.STATUS,
                ActionType.UPDATE,
                CONTROLLER,
                LOCAL_COMMAND,
                {"value": value, "address": address, "client": session.sender},
            )
        # awaited here (not in a task) so this client's messages stay in order and the reply
        # is queued before the gateway wakes the client's writer
        try:
            [(seq, reason)] = await self.controller.append_local_results([op])
        except CuelogError as exc:
            core.answer(session, address, "error", error=str(exc))
            return
        except Exception as exc:  # the controller stopping, say
            core.answer(session, address, "error", error=f"not appended: {exc}")
            return
        if command.forward:
            core.command_done(Submit(session, address, op), seq, reason)
        else:
            core.answer(session, address, "ok", seq=seq)

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
            log.debug("broadcast on %s after stop: dropped", address)
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
        rep = pynng.Rep0(recv_max_size=MAX_JSON_BYTES)
        contexts: list[Any] = []
        try:
            try:
                rep.listen(self.editor_address)
            except pynng.NNGException as exc:
                raise EditorChannelError(
                    f"cannot listen for the editor on {self.editor_address}: {exc} (is another "
                    "controller running?)"
                ) from None
            log.info("editor channel on %s", self.editor_address)
            self._editor_listening.set()
            async with asyncio.TaskGroup() as tasks:
                for _ in range(EDITOR_WORKERS):
                    contexts.append(rep.new_context())
                    tasks.create_task(self._editor_worker(contexts[-1]))
        except asyncio.CancelledError:
            pass
        finally:
            close_all(contexts, rep)

    async def _editor_worker(self, ctx: Any) -> None:
        while True:
            try:
                msg = await guarded(ctx.arecv_msg())
            except pynng.Closed:
                return
            except pynng.NNGException as exc:
                log.warning("editor channel: %s", exc)
                continue
            await self._editor_request(ctx, msg.bytes)

    async def _editor_request(self, ctx: Any, raw: bytes) -> None:
        try:
            request = _decode_request(raw)
        except _BadRequest as exc:
            log.warning("bad editor request: %s", exc)
            context = EditorContext(ctx, None, exc.action_uuid)
            await self._answer(context, {"type": "error", "value": str(exc)})
            return
        context = EditorContext(ctx, request["action"], _uuid_of(request))
        try:
            result = await self._call_editor(request, context)
        except Exception as exc:
            log.exception("editor callback failed on %s", context.action)
            result = {"type": "error", "value": f"the controller failed on {context.action}: {exc}"}
        if isinstance(result, dict):
            if context.replied:
                log.warning(
                    "editor callback for %s replied twice (returned a reply after "
                    "reply_to_editor): the returned one is dropped",
                    context.action,
                )
            else:
                await self._answer(context, result)
            return
        try:
            async with asyncio.timeout(self.editor_reply_timeout):
                await context.done.wait()
        except TimeoutError:
            if not context.replied:
                log.error(
                    "no reply to the editor's %s within %g s",
                    context.action,
                    self.editor_reply_timeout,
                )
                await self._answer(
                    context,
                    {
                        "type": "error",
                        "value": f"no reply within {self.editor_reply_timeout:g} s",
                    },
                )

    async def _call_editor(self, request: dict[str, Any], context: EditorContext) -> Any:
        callback = self.editor_callback
        args: tuple[Any, ...] = (request, context) if _takes_context(callback) else (request,)
        if inspect.iscoroutinefunction(callback):
            return await callback(*args)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._editor_pool, functools.partial(callback, *args))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _answer(self, context: EditorContext, reply: Any) -> None:
        if context.replied:
            raise UsageError(f"the editor's {context.action} was already answered")
        context.replied = True
        try:
            await guarded(context.nng_context.asend(_encode_reply(reply, context)))
        except pynng.NNGException as exc:
            log.warning("could not reply to the editor's %s: %s", context.action, exc)
        finally:
            context.done.set()

    async def respond_to_editor(self, message: Any, context: EditorContext) -> None:
        """Answer an editor request (on the comms loop)."""
        if not isinstance(context, EditorContext):
            raise TypeError(f"not an editor request context: {context!r}")
        await self._answer(context, message)

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
        try:
            data = json.dumps(message, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the {service} request is not JSON: {exc}") from None
        loop = self._blocking_call()
        future = asyncio.run_coroutine_threadsafe(
            self._service_request(service, address, data, wait), loop
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

    async def _service_request(
        self, service: str, address: str, data: bytes, wait: float | None
    ) -> dict[str, Any]:
        sock = self._requesters.get(service)
        if sock is None:
            sock = pynng.Req0(recv_max_size=MAX_JSON_BYTES)
            sock.dial(address, block=False)
            self._requesters[service] = sock
            log.info(
                "dialing %s at %s (requests time out when it does not answer)", service, address
            )
        ctx = sock.new_context()
        try:
            async with asyncio.timeout(wait):
                await guarded(ctx.asend(data))
                raw = await guarded(ctx.arecv())
        except TimeoutError:
            raise ServiceTimeout(
                f"no reply from {service} at {address} within {wait:g} s (is {service} running?)"
            ) from None
        except pynng.NNGException as exc:
            raise ServiceError(f"{service} at {address}: {exc}") from None
        finally:
            with contextlib.suppress(pynng.NNGException):
                ctx.close()
        try:
            reply = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ServiceError(
                f"{service} at {address} replied with something not JSON: {exc}"
            ) from None
        if not isinstance(reply, dict):
            raise ServiceError(
                f"{service} at {address} replied with a {type(reply).__name__}, not an object"
            )
        return reply
