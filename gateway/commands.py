"""What a UI message, or a broadcast, becomes in the log. Values in, an `Operation` out.

Three kinds of UI message turn into operations (the rest are protocol: ``/connect``,
``/engine/sync``, or the application's own OSC handlers):

- a built-in command (`built_in`): ``/engine/command/<name>`` for a name in `ENGINE_COMMANDS`,
  or a player-control address ``/<node>/{audio,video}/mixer/...``. `command_operation` checks
  its arguments and builds a ``command`` operation whose sender is the client; a wrong
  argument gives a sentence saying what is wrong instead.
- an application command (``register_command_handler`` in `gateway.compat`):
  `application_operation` records it as a command the nodes fire (forwarded) or as a
  `LOCAL_COMMAND` status event of the controller (not forwarded, but still in the log).
- a broadcast (``broadcast_osc``): `broadcast_operation` records the value as a status event
  of the controller whose target is the OSC address (the view sends it to every UI).

No I/O, no clock.
"""

from __future__ import annotations

import math
from typing import Any, Final

from eventlog import (
    CONTROLLER,
    ActionType,
    Operation,
    OperationType,
    ValidationError,
    validate_operation,
)
from gateway import osc
from gateway.patterns import is_pattern, unprintable

COMMAND_PREFIX: Final = "/engine/command/"
#: engine commands the gateway turns into command events itself
ENGINE_COMMANDS: Final = frozenset(
    {"go", "stop", "pause", "load", "unload", "setnextcue", "cue_enabled", "resetall"}
)
#: the prefix of the sender recorded for a UI client's commands
UI_SENDER: Final = "ui:"
#: status target recording a UI message handled without forwarding it to the nodes
LOCAL_COMMAND: Final = "local_command"
TIMECODE_ADDRESS: Final = "/engine/status/timecode"
_MAX_ADDRESS: Final = 512


def _player_parts(address: str) -> list[str] | None:
    """The parts of a player-control address (``/<node>/{audio,video}/mixer/...``), or None."""
    parts = address[1:].split("/")
    if len(parts) >= 4 and parts[1] in ("audio", "video") and parts[2] == "mixer":
        return parts
    return None


def built_in(address: str) -> bool:
    """Whether the gateway itself turns `address` into a command event (an engine command or
    a player-control address), so that application OSC handlers never see it."""
    if address.startswith(COMMAND_PREFIX):
        return address[len(COMMAND_PREFIX) :] in ENGINE_COMMANDS
    return _player_parts(address) is not None


def command_operation(sender: str, address: str, args: tuple[Any, ...]) -> Operation | str | None:
    """The command event a built-in command asks for; an error sentence; or None (`address`
    is not a built-in command: the application's handlers may want it)."""
    if address.startswith(COMMAND_PREFIX):
        name = address[len(COMMAND_PREFIX) :]
        if name not in ENGINE_COMMANDS:
            return None
        try:
            value = _engine_value(name, args)
        except ValueError as exc:
            return f"{address} {exc} (got {osc.describe(args)})"
        return _checked(sender, name, {"value": value, "address": address})
    parts = _player_parts(address)
    if parts is None:
        return None
    try:
        value = _player_value(parts, args)
    except ValueError as exc:
        return f"{address} {exc} (got {osc.describe(args)})"
    return _checked(sender, "player_control", {"address": address, "value": value})


def application_operation(sender: str, address: str, value: Any, forward: bool) -> Operation:
    """An application command on `address`: a command the nodes fire (``forward``, target the
    last part of the address), or a `LOCAL_COMMAND` status event of the controller."""
    if forward:
        target = next((p for p in reversed(address.split("/")) if p), address)
        data: dict[str, Any] = {"value": value, "address": address}
        return Operation(OperationType.COMMAND, ActionType.UPDATE, sender, target, data)
    data = {"value": value, "address": address, "client": sender}
    return Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, LOCAL_COMMAND, data)


def broadcast_operation(address: str, value: Any) -> Operation:
    """The status event that records ``broadcast_osc(address, value)``. Raises ValueError."""
    if (
        not isinstance(address, str)
        or not address.startswith("/")
        or len(address) > _MAX_ADDRESS
        or unprintable(address)
        or is_pattern(address)
    ):
        raise ValueError(f"not an OSC address to broadcast on: {address!r}")
    target = address
    if address == TIMECODE_ADDRESS:
        # the reducer owns the timecode: target ``timecode``, an int of ms
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{address}: the timecode is a number of ms, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{address}: the timecode must be finite, got {value!r}")
        target, value = "timecode", int(value)
    op = Operation(
        OperationType.STATUS,
        ActionType.UPDATE,
        CONTROLLER,
        target,
        {"value": _osc_scalar(address, value)},
    )
    try:
        return validate_operation(op)
    except ValidationError as exc:
        raise ValueError(f"{address}: {exc}") from None


# --------------------------------------------------------------------------- argument rules


def _checked(sender: str, target: str, data: dict[str, Any]) -> Operation | str:
    try:
        return validate_operation(
            Operation(OperationType.COMMAND, ActionType.UPDATE, sender, target, data)
        )
    except ValidationError as exc:
        return str(exc)


def _number(arg: Any) -> bool:
    return (
        isinstance(arg, int | float)
        and not isinstance(arg, bool)
        and arg == arg
        and abs(arg) != float("inf")
    )


def _engine_value(name: str, args: tuple[Any, ...]) -> Any:
    if name in ("load", "setnextcue"):
        if len(args) != 1 or not isinstance(args[0], str):
            raise ValueError("expects one string")
        if name == "load" and not args[0]:
            raise ValueError("expects a project name")
        return args[0]
    if name == "cue_enabled":
        if len(args) == 1 and isinstance(args[0], str):
            words = args[0].split()
            if len(words) == 2 and words[1] in ("0", "1"):
                return f"{words[0]} {words[1]}"
        if (
            len(args) == 2
            and isinstance(args[0], str)
            and args[0]
            and " " not in args[0]
            and (args[1] in (0, 1) or isinstance(args[1], bool))
        ):
            return f"{args[0]} {int(args[1])}"
        raise ValueError("expects '<cue id> <0|1>' as one string")
    # go, stop, pause, unload, resetall: no argument, or one plain value (kept)
    if not args:
        return None
    if len(args) == 1 and (isinstance(args[0], str | bool) or _number(args[0])):
        return args[0]
    raise ValueError("expects no argument or one value")


def _player_value(parts: list[str], args: tuple[Any, ...]) -> Any:
    node = parts[0]
    if not node or len(node) > 128:
        raise ValueError("names no node")
    if parts[1] == "audio":
        if parts[-1] != "volume" or len(parts) != 6:
            raise ValueError("is not /<node>/audio/mixer/<out>/<ch|master>/volume")
        if len(args) != 1 or not _number(args[0]):
            raise ValueError("expects one number")
        return args[0]
    if not 1 <= len(args) <= 2 or not all(_number(a) for a in args):
        raise ValueError("expects one or two numbers")
    return args[0] if len(args) == 1 else list(args)


def _osc_scalar(address: str, value: Any) -> Any:
    """`value` if OSC can carry it as one argument; else ValueError naming `address`."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if not osc.fits_int32(value):
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
