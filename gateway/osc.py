"""OSC 1.0 bytes in and out of the gateway. Values in, values out; no sockets, no clock.

Rules this module never breaks:

- `encode` produces exactly one OSC message (never a bundle: upstream's UI cannot unpack one)
  with only the types upstream's UI reads: ``s``, ``i``, ``f``, ``T``/``F``; ``None`` becomes
  an empty string, as upstream sends it.
- `decode` accepts one message or a bundle (nested at most `MAX_BUNDLE_DEPTH` deep, at most
  `MAX_MESSAGES` messages) and returns its messages in order; anything else raises `OscError`
  with a sentence saying what is wrong. It never recurses on peer input.

Argument encoding and message parsing are python-osc's (`pythonosc.parsing.osc_types`,
`OscMessage`); the encoded address and type tag of an address are cached, because a state
dump sends thousands of messages whose addresses repeat.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from pythonosc.osc_message import OscMessage
from pythonosc.parsing import osc_types

from eventlog import InputError

#: Largest frame the gateway reads (the websockets server enforces it too).
MAX_FRAME_BYTES: Final = 1024 * 1024
#: Deepest bundle nesting accepted from a client.
MAX_BUNDLE_DEPTH: Final = 8
#: Most messages one frame (bundle) may carry.
MAX_MESSAGES: Final = 256
#: Longest address accepted.
MAX_ADDRESS: Final = 1024

_BUNDLE: Final = b"#bundle\x00"
#: the range of an OSC ``i`` (32-bit int)
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
_PREFIX_CACHE: Final = 65_536
#: type tags python-osc reads (anything else is refused, never skipped)
_KNOWN_TAGS: Final = frozenset("ifdsbhtrmTFN[]")
#: most arguments one message may carry (python-osc parses them in quadratic time)
MAX_ARGS: Final = 64
#: the largest magnitude an OSC ``f`` (32-bit float) holds
FLOAT32_MAX: Final = 3.4028234663852886e38
#: addresses longer than this are encoded without the cache (the cache's memory stays small)
_CACHED_ADDRESS: Final = 256

OscValue = str | int | float | bool | bytes | None


class OscError(InputError):
    """A client sent bytes that are not an acceptable OSC message or bundle."""


@dataclass(frozen=True, slots=True)
class OscMsg:
    """One decoded OSC message."""

    address: str
    args: tuple[Any, ...]


_prefixes: OrderedDict[tuple[str, str], bytes] = OrderedDict()


def _prefix(address: str, tags: str, cache: bool = True) -> bytes:
    key = (address, tags)
    found = _prefixes.get(key)
    if found is None:
        if "\x00" in address:
            raise ValueError(f"an OSC address cannot hold a NUL character: {address!r}")
        found = osc_types.write_string(address) + osc_types.write_string(tags)
        if cache and len(address) <= _CACHED_ADDRESS:
            _prefixes[key] = found
            if len(_prefixes) > _PREFIX_CACHE:
                _prefixes.popitem(last=False)
    return found


def fits_int32(value: int) -> bool:
    """Whether an OSC ``i`` can carry `value`."""
    return INT32_MIN <= value <= INT32_MAX


def fits_float32(value: float) -> bool:
    """Whether an OSC ``f`` can carry `value` (finite, within the 32-bit range)."""
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def _tag(value: OscValue) -> tuple[str, bytes]:
    if value is None:
        return "s", osc_types.write_string("")
    if value is True:
        return "T", b""
    if value is False:
        return "F", b""
    if isinstance(value, int):
        if fits_int32(value):
            return "i", osc_types.write_int(value)
        return "h", osc_types.write_int64(value)
    if isinstance(value, float):
        if not fits_float32(value):
            raise ValueError(f"an OSC float must be finite and fit 32 bits, got {value!r}")
        return "f", osc_types.write_float(value)
    if isinstance(value, str):
        # a NUL would end the string early and the rest would be read as more arguments
        return "s", osc_types.write_string(value.replace("\x00", "\ufffd"))
    if isinstance(value, bytes):
        return "b", osc_types.write_blob(value)
    raise TypeError(f"cannot send a {type(value).__name__} as an OSC argument")


def encode(address: str, *values: OscValue, cache: bool = True) -> bytes:
    """One OSC message: `address` with `values` as its arguments. Raises ValueError for an
    address or a value OSC cannot carry. ``cache=False`` for addresses a client chose."""
    if not address.startswith("/"):
        raise ValueError(f"OSC address must start with '/': {address!r}")
    tags = [","]
    parts: list[bytes] = []
    for value in values:
        tag, data = _tag(value)
        tags.append(tag)
        parts.append(data)
    return _prefix(address, "".join(tags), cache) + b"".join(parts)


def encode_int(address: str, value: int) -> bytes:
    """Fast path for the dump's most common message (a cue status)."""
    if fits_int32(value):
        return _prefix(address, ",i") + struct.pack(">i", value)
    return encode(address, value)


def decode(frame: bytes) -> list[OscMsg]:
    """A client's binary frame -> its messages in order. Raises `OscError`."""
    if len(frame) > MAX_FRAME_BYTES:
        raise OscError(f"frame of {len(frame)} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    found: list[OscMsg] = []
    # explicit stack of (buffer, position, depth): no recursion on peer input
    stack: list[tuple[bytes, int, int]] = [(frame, -1, 0)]
    while stack:
        data, pos, depth = stack.pop()
        if pos < 0:  # a whole element: a message or a bundle to open
            if data.startswith(_BUNDLE):
                if depth >= MAX_BUNDLE_DEPTH:
                    raise OscError(f"bundles nested deeper than {MAX_BUNDLE_DEPTH} levels")
                if len(data) < 16:
                    raise OscError("truncated bundle header")
                stack.append((data, 16, depth + 1))
                continue
            found.append(_message(data))
            if len(found) > MAX_MESSAGES:
                raise OscError(f"more than {MAX_MESSAGES} messages in one frame")
            continue
        if pos >= len(data):
            continue
        if pos + 4 > len(data):
            raise OscError("truncated bundle element size")
        (size,) = struct.unpack_from(">i", data, pos)
        if size <= 0 or size % 4 or pos + 4 + size > len(data):
            raise OscError(f"bundle element size {size} does not fit the bundle")
        # continue this bundle after the element; open the element first
        stack.append((data, pos + 4 + size, depth))
        stack.append((data[pos + 4 : pos + 4 + size], -1, depth))
    return found


def _message(data: bytes) -> OscMsg:
    if not data.startswith(b"/"):
        raise OscError("not an OSC message (no '/' address) or bundle")
    if len(data) % 4:
        raise OscError(f"OSC message of {len(data)} bytes is not a multiple of 4")
    try:
        _, index = osc_types.get_string(data, 0)
        tags, _ = osc_types.get_string(data, index) if index < len(data) else (",", index)
    except Exception as exc:
        raise OscError(f"malformed OSC message: {exc}") from None
    if not tags.startswith(",") or not set(tags[1:]) <= _KNOWN_TAGS:
        raise OscError(f"malformed OSC message: unknown type tags {tags[:20]!r}")
    if len(tags) - 1 > MAX_ARGS:
        raise OscError(f"more than {MAX_ARGS} arguments in one message")
    try:
        msg = OscMessage(data)
        address = msg.address
        args = tuple(msg.params)
    except Exception as exc:  # python-osc raises several types for bad input
        raise OscError(f"malformed OSC message: {exc}") from None
    if len(address) > MAX_ADDRESS:
        raise OscError(f"address longer than {MAX_ADDRESS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in address) or " " in address:
        raise OscError("address has spaces or control characters")
    return OscMsg(address, args)


def describe(args: tuple[Any, ...]) -> str:
    """The OSC type letters of decoded arguments, for error messages."""
    letters = []
    for arg in args:
        if isinstance(arg, bool):
            letters.append("T" if arg else "F")
        elif isinstance(arg, int):
            letters.append("i")
        elif isinstance(arg, float):
            letters.append("f")
        elif isinstance(arg, str):
            letters.append("s")
        elif isinstance(arg, bytes):
            letters.append("b")
        elif arg is None:
            letters.append("N")
        else:
            letters.append("?")
    return "".join(letters) or "no arguments"
