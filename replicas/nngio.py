"""Thin helpers around pynng's asyncio calls.

pynng turns an asyncio cancellation into an NNG abort, but when the operation completed (or
failed for another reason) just as it was cancelled, the cancellation is swallowed and the
task runs on: a `TaskGroup` would then wait forever at shutdown and `asyncio.timeout` would
never fire. `guarded` re-raises the pending cancellation in that case.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable
from typing import Any, TypeVar

import pynng

T = TypeVar("T")


def _cancel_pending() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await a pynng operation without ever losing a cancellation of the calling task."""
    try:
        result = await awaitable
    except asyncio.CancelledError:
        raise
    except Exception:
        if _cancel_pending():
            raise asyncio.CancelledError from None
        raise
    if _cancel_pending():
        raise asyncio.CancelledError
    return result


def close_all(contexts: list[Any], *sockets: Any) -> None:
    """Close NNG contexts, then their sockets (a context outliving its socket complains)."""
    for ctx in contexts:
        with contextlib.suppress(pynng.NNGException):
            ctx.close()
    contexts.clear()
    for sock in sockets:
        sock.close()


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


def pipe_id(pipe: Any) -> int | None:
    """The id of the connection a request came on; None only for calls from this process
    (no pipe), which are trusted: a pipe that cannot be read is never taken for one."""
    if pipe is None:
        return None
    with contextlib.suppress(Exception):
        return int(pipe.id)
    return 0


def peer(pipe: Any) -> str:
    if pipe is None:
        return "a peer"
    with contextlib.suppress(Exception):
        return f"pipe {pipe.id} ({pipe.remote_address})"
    return "a peer"
