"""Thin helpers around pynng's asyncio calls.

pynng turns an asyncio cancellation into an NNG abort, but when the operation completed (or
failed for another reason) just as it was cancelled, the cancellation is swallowed and the
task runs on: a `TaskGroup` would then wait forever at shutdown and `asyncio.timeout` would
never fire. `guarded` re-raises the pending cancellation in that case.
"""

from __future__ import annotations

import asyncio
import contextlib
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
