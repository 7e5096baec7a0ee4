"""Argument types shared by the subcommands: a bad value is a usage error (exit 2)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final

from eventlog import ValidationError, check_node_id
from eventlog.logctx import ComponentLog
from replicas import protocol
from replicas.showkey import KEY_ENV, KeyFileError, ShowKey, load_optional, secure

log = ComponentLog("cuelog")

#: the fastest a recorded show is played back (`replay serve --speed`, ``/replay/speed``)
MAX_SPEED: Final = 1000.0


def address(text: str) -> str:
    """An NNG address: tcp://HOST:PORT, ipc://PATH or inproc://NAME."""
    try:
        return protocol.check_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def addresses(text: str) -> str:
    """One or more NNG addresses, comma-separated (with ``--ha``, every controller's)."""
    try:
        return ",".join(protocol.check_addresses(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def candidate_name(text: str) -> str:
    """A hot-standby candidate's name: its standby's node id is ``standby:NAME``."""
    try:
        check_node_id(f"standby:{text}")
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"--name {text!r}: {exc.detail}") from None
    return text


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def count(text: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
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


def check_speed(value: float) -> float:
    """A playback speed: above 0 and at most `MAX_SPEED` (1 is real time); else ValueError."""
    if not 0 < value <= MAX_SPEED:
        raise ValueError(f"the speed must be above 0 and at most {MAX_SPEED:g}, not {value}")
    return float(value)


def speed(text: str) -> float:
    """A playback speed (see `check_speed`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    try:
        return check_speed(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def node_id(text: str) -> str:
    try:
        return check_node_id(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


#: the signals that ask a cuelog process to stop: Ctrl-C, a service manager or `timeout`, and
#: a closed terminal (or a supervisor's reload)
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived: raised in the main thread like Ctrl-C's KeyboardInterrupt (so
    every ``finally`` runs: child processes stopped, files closed)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _StopSignals:
    """The process's handler for `STOP_SIGNALS` (see `install_stop_signals`)."""

    def __init__(self) -> None:
        #: the first stop signal received (None: none yet)
        self.received: int | None = None
        self.installed = False
        self._holding = 0
        self._held: int | None = None

    def handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            log.info("%s: already stopping", signal.Signals(signum).name)
            return
        self.received = signum
        if self._holding:
            self._held = signum
            return
        raise Stopped(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """A stop signal arriving inside this block is raised when the block ends (starting or
        stopping a child process is never cut in half, leaving one nobody stops)."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding and self._held is not None:
                signum, self._held = self._held, None
                raise Stopped(signum)


_stop_signals = _StopSignals()


def install_stop_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise `Stopped` in the main thread (once: later ones while it
    stops are logged and ignored, so the clean-up is not cut short). Commands that run an
    event loop (`run_until_signal`) take the signals over while it runs. Only the main thread
    can set signal handlers: called from another, this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    _stop_signals.received = None
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop_signals.handle)
    _stop_signals.installed = True


def stop_signals_held() -> contextlib.AbstractContextManager[None]:
    """See `_StopSignals.held`."""
    return _stop_signals.held()


def run_until_signal(
    main: Callable[[], Coroutine[Any, Any, None]], stop: Callable[[], None]
) -> int:
    """Run `main` in a new event loop; SIGINT, SIGTERM and SIGHUP call `stop` for a clean
    shutdown (the exit code is 0: a stop asked for is a clean end)."""

    def stop_once(sig: signal.Signals) -> None:
        log.info("%s: stopping", sig.name)
        stop()

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop_once, sig)
        await main()

    asyncio.run(runner())
    if _stop_signals.installed:  # the closed loop put the default handlers back
        install_stop_signals()
    return 0


def add_key(parser: argparse.ArgumentParser, who: str) -> None:
    """``--key FILE``: the show key (default: $CUELOG_KEY)."""
    parser.add_argument(
        "--key",
        metavar="FILE",
        default=os.environ.get(KEY_ENV) or None,
        help=f"the show key ({who}); made once with `cuelog keygen FILE` and copied to every "
        f"machine. With it, tcp:// addresses use TLS and only holders of the key connect. "
        f"Default: ${KEY_ENV}, else none",
    )


def load_key(args: argparse.Namespace, *addresses: str) -> ShowKey | None:
    """The key named by ``--key`` (None without one), checked against `addresses`; raises
    `KeyFileError` (one line, exit 1) for a bad file or an address a key cannot protect."""
    key = load_optional(args.key)
    for addr in addresses:
        try:
            secure(addr, key)
        except ValueError as exc:
            raise KeyFileError(str(exc)) from None
    if key is not None and key.warning:
        log.warning(key.warning)
    return key
