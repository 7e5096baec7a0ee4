"""The editor channel: NNG Rep0 over IPC, one JSON request, one JSON reply.

A request is ``{action, action_uuid, value}``; `EDITOR_WORKERS` are served at once, each on
its own Rep0 context. The application's ``editor_callback(message)`` (or
``editor_callback(message, context)`` when it takes two arguments, as upstream's did) runs on
an editor worker thread (a coroutine function runs on the loop). A dict it returns is the
reply; otherwise the reply must come from `EditorChannel.respond` (``reply_to_editor`` in
`gateway.compat`) within ``reply_timeout`` seconds of the callback's return, or the editor
gets an error. Every reply carries the request's ``action_uuid`` (and ``type`` = the action
when the reply has none). A request that is not JSON, not an object, or has no action gets
``{"type": "error", "value": <why>, "action_uuid": ...}``; a callback that raises gets the
same. `decode_request` and `encode_reply` are those rules, on values only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from collections.abc import Callable
from typing import Any, Final

import pynng

from eventlog import CuelogError, UsageError
from eventlog.logctx import ComponentLog
from gateway import nngjson
from gateway.nngjson import MAX_JSON_BYTES
from replicas.nngio import close_all, guarded

log = ComponentLog("cuelog.compat")

EDITOR_ADDRESS: Final = "ipc:///tmp/editor.ipc"
#: editor requests served at once (each holds one Rep0 context and one worker thread)
EDITOR_WORKERS: Final = 8
#: how long a deferred editor reply (`reply_to_editor`) may take (the editor waits 30 s)
EDITOR_REPLY_TIMEOUT: Final = 30.0


class EditorChannelError(CuelogError):
    """The editor channel could not be opened."""


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


class BadRequest(Exception):
    """An editor request that cannot be served; the editor is told why."""

    def __init__(self, why: str, action_uuid: Any = None) -> None:
        super().__init__(why)
        self.action_uuid = action_uuid


def _uuid_of(request: Any) -> Any:
    found = request.get("action_uuid") if isinstance(request, dict) else None
    return found if isinstance(found, str | int) and not isinstance(found, bool) else None


def decode_request(raw: bytes) -> tuple[dict[str, Any], str, Any]:
    """An editor request -> (request, action, action_uuid). Raises `BadRequest`."""
    try:
        request = nngjson.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest(
            f"the request must be a JSON object {{action, action_uuid, value}}, "
            f"got {type(request).__name__}"
        )
    action = request.get("action")
    if not isinstance(action, str) or not action:
        raise BadRequest("the request has no action", _uuid_of(request))
    return request, action, _uuid_of(request)


def encode_reply(reply: Any, action: str | None, action_uuid: Any) -> bytes:
    """The reply's bytes: `reply` (a dict, or a bare value) with ``type`` and ``action_uuid``;
    an error reply if JSON cannot carry it."""
    body = dict(reply) if isinstance(reply, dict) else {"value": reply}
    body.setdefault("type", action or "error")
    body["action_uuid"] = action_uuid
    try:
        return nngjson.dumps(body)
    except (TypeError, ValueError, RecursionError) as exc:
        log.error("editor reply to %s cannot be sent as JSON: %s", action, exc)
        return nngjson.dumps(
            {
                "type": "error",
                "value": f"the controller's reply could not be encoded: {exc}",
                "action_uuid": action_uuid,
            }
        )


def takes_context(callback: Callable[..., Any]) -> bool:
    """Whether `callback` takes (message, context), as upstream's editor callbacks do."""
    try:
        inspect.signature(callback).bind(None, None)
    except (TypeError, ValueError):
        return False
    return True


class EditorChannel:
    """Serves editor requests on `address` with `callback` (see the module's docstring)."""

    def __init__(
        self, address: str, callback: Callable[..., Any], reply_timeout: float, node: str
    ) -> None:
        self.address = address
        self.callback = callback
        self.reply_timeout = reply_timeout
        self.listening = asyncio.Event()
        self.log = log.for_node(node)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            EDITOR_WORKERS, thread_name_prefix="cuelog-editor"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def listen(self) -> None:
        """Serve until cancelled."""
        rep = pynng.Rep0(recv_max_size=MAX_JSON_BYTES)
        contexts: list[Any] = []
        try:
            try:
                rep.listen(self.address)
            except pynng.NNGException as exc:
                raise EditorChannelError(
                    f"cannot listen for the editor on {self.address}: {exc} (is another "
                    "controller running?)"
                ) from None
            self.log.info("editor channel on %s", self.address)
            self.listening.set()
            async with asyncio.TaskGroup() as tasks:
                for _ in range(EDITOR_WORKERS):
                    contexts.append(rep.new_context())
                    tasks.create_task(self._worker(contexts[-1]))
        except asyncio.CancelledError:
            pass
        finally:
            close_all(contexts, rep)

    async def _worker(self, ctx: Any) -> None:
        while True:
            try:
                msg = await guarded(ctx.arecv_msg())
            except pynng.Closed:
                return
            except pynng.NNGException as exc:
                self.log.warning("editor channel: %s", exc)
                continue
            await self._request(ctx, msg.bytes)

    async def _request(self, ctx: Any, raw: bytes) -> None:
        try:
            request, action, action_uuid = decode_request(raw)
        except BadRequest as exc:
            self.log.warning("bad editor request: %s", exc)
            await self.respond(
                {"type": "error", "value": str(exc)}, EditorContext(ctx, None, exc.action_uuid)
            )
            return
        context = EditorContext(ctx, action, action_uuid)
        try:
            result = await self._call(request, context)
        except Exception as exc:
            self.log.exception("editor callback failed on %s", action)
            result = {"type": "error", "value": f"the controller failed on {action}: {exc}"}
        if isinstance(result, dict):
            if context.replied:
                self.log.warning(
                    "editor callback for %s replied twice (returned a reply after "
                    "reply_to_editor): the returned one is dropped",
                    action,
                )
            else:
                await self.respond(result, context)
            return
        try:
            async with asyncio.timeout(self.reply_timeout):
                await context.done.wait()
        except TimeoutError:
            if not context.replied:
                self.log.error(
                    "no reply to the editor's %s within %g s", action, self.reply_timeout
                )
                await self.respond(
                    {"type": "error", "value": f"no reply within {self.reply_timeout:g} s"},
                    context,
                )

    async def _call(self, request: dict[str, Any], context: EditorContext) -> Any:
        callback = self.callback
        args: tuple[Any, ...] = (request, context) if takes_context(callback) else (request,)
        if inspect.iscoroutinefunction(callback):
            return await callback(*args)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, functools.partial(callback, *args))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def respond(self, reply: Any, context: EditorContext) -> None:
        """Send `reply` to the request of `context` (once; on the loop)."""
        if not isinstance(context, EditorContext):
            raise TypeError(f"not an editor request context: {context!r}")
        if context.replied:
            raise UsageError(f"the editor's {context.action} was already answered")
        context.replied = True
        try:
            data = encode_reply(reply, context.action, context.action_uuid)
            await guarded(context.nng_context.asend(data))
        except pynng.NNGException as exc:
            self.log.warning("could not reply to the editor's %s: %s", context.action, exc)
        finally:
            context.done.set()
