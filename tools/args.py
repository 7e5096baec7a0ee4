"""Argument types shared by the subcommands: a bad value is a usage error (exit 2)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from eventlog import ValidationError, check_node_id
from replicas import protocol


def address(text: str) -> str:
    """An NNG address: tcp://HOST:PORT, ipc://PATH or inproc://NAME."""
    try:
        return protocol.check_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def hostport(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` for a server, or ``off``."""
    if text == "off":
        return None
    from gateway.server import parse_hostport

    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def networks(text: str) -> tuple[Any, ...]:
    """``CIDR[,CIDR]`` -> IP networks."""
    from gateway.session import parse_networks

    try:
        return parse_networks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def node_id(text: str) -> str:
    try:
        return check_node_id(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def run_until_signal(
    main: Callable[[], Coroutine[Any, Any, None]], stop: Callable[[], None]
) -> int:
    """Run `main` in a new event loop; SIGINT/SIGTERM call `stop` for a clean shutdown."""

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        await main()

    asyncio.run(runner())
    return 0
