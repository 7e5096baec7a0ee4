"""The wire protocol between the controller and its nodes. Values in, values out; no sockets.

One controller address carries two channels:

- **requests** (NNG REQ/REP on the configured address): every message is one JSON object with a
  kind ``k``. Nodes send ``hello``, ``submit``, ``fetch`` and ``beat``; tools send ``status``.
  The controller answers each with exactly one reply (``error`` when the request is bad).
  ``state`` returns the whole current state with its seq and digest (for tools and UIs).
- **events** (NNG PUB/SUB on the derived address, see `events_address`): batched ``ev`` frames
  carrying ``(log, first, last)`` and idle ``hb`` heartbeats carrying the head seq.

Decoders check shapes strictly and raise `ProtocolError` (a peer broke the protocol); they
never trust a field they did not check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, Final

import orjson

from eventlog import (
    DecodeError,
    Event,
    InputError,
    ValidationError,
    check_node_id,
    event_from_dict,
    loads,
)

#: Largest request the controller reads (bytes); larger ones get an error reply.
MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
#: NNG-level cap: a frame larger than this is dropped by the transport before we see it.
NNG_MAX_BYTES: Final = 16 * 1024 * 1024
#: Most operations in one submit request.
MAX_SUBMIT_OPS: Final = 5000
#: Most events in one ``ev`` frame or ``events`` reply.
MAX_FRAME_EVENTS: Final = 5000

PROTOCOL_VERSION: Final = 1

REQUEST_KINDS: Final = frozenset({"hello", "submit", "fetch", "beat", "status", "state"})


class ProtocolError(InputError):
    """A peer sent something that breaks the protocol."""


def events_address(address: str) -> str:
    """The event stream's address, derived from the controller address.

    ``tcp://host:9093`` -> ``tcp://host:9094``; ``ipc:///tmp/x.ipc`` -> ``ipc:///tmp/x.ipc.events``;
    ``inproc://name`` -> ``inproc://name.events``.
    """
    if address.startswith("tcp://"):
        host, sep, port = address[6:].rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{address!r} has no port: use tcp://HOST:PORT")
        number = int(port)
        if not 0 < number < 65535:
            raise ValueError(
                f"{address!r}: the port must be 1..65534 (the next one carries events)"
            )
        return f"tcp://{host}:{number + 1}"
    if address.startswith(("ipc://", "inproc://")):
        return address + ".events"
    raise ValueError(f"{address!r} is not a tcp://HOST:PORT, ipc://PATH or inproc://NAME address")


def check_address(address: str) -> str:
    """Validate a controller address; return it, or raise ValueError saying what is wrong."""
    events_address(address)
    return address


def decode(raw: bytes, limit: int = MAX_REQUEST_BYTES) -> dict[str, Any]:
    """Bytes -> a message dict with a string ``k``. Raises `ProtocolError`."""
    if len(raw) > limit:
        raise ProtocolError(f"message of {len(raw)} bytes is over the {limit}-byte limit")
    try:
        value = loads(raw)
    except DecodeError as exc:
        raise ProtocolError(str(exc)) from None
    if not isinstance(value, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = value.get("k")
    if not isinstance(kind, str):
        raise ProtocolError("a message needs a string kind 'k'")
    return value


def field(
    msg: Mapping[str, Any], name: str, kind: type | tuple[type, ...], *, optional: bool = False
) -> Any:
    """One checked field of a message."""
    if name not in msg or msg[name] is None:
        if optional:
            return None
        raise ProtocolError(f"{msg.get('k')!r} message needs {name!r}")
    value = msg[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(f"{name!r} has the wrong type")
    if not isinstance(value, kinds):
        raise ProtocolError(f"{name!r} has the wrong type")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(f"{name!r} must be finite")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ProtocolError(f"{name!r} must not be negative")
    return value


def node_id(msg: Mapping[str, Any]) -> str:
    """The request's ``node``, checked by the one node-id rule (`eventlog.check_node_id`)."""
    value: str = field(msg, "node", str)
    try:
        return check_node_id(value)
    except ValidationError as exc:
        raise ProtocolError(f"'node': {exc.detail}") from None


def error(text: str, rule: str = "bad-request", **extra: Any) -> dict[str, Any]:
    return {"k": "error", "error": text, "rule": rule, **extra}


def compact(event: Event) -> dict[str, Any]:
    """An event without its log_id (frames carry the log id once)."""
    op = event.op
    return {
        "seq": event.seq,
        "ts": event.ts,
        "type": op.type._value_,
        "action": op.action._value_,
        "sender": op.sender,
        "target": op.target,
        "data": op.data,
        "op_id": [event.op_id.origin, event.op_id.origin_seq],
    }


def rows_reply(log_id: str, rows: list[tuple[Any, ...]], head: int, ts: float) -> dict[str, Any]:
    """An ``events`` reply built straight from stored rows (`EventLog.read_rows`): the stored
    data JSON is embedded as is, without decoding and re-encoding it."""
    events = [
        {
            "seq": seq,
            "ts": ets,
            "type": type_,
            "action": action,
            "sender": sender,
            "target": target,
            "data": None if data is None else orjson.Fragment(data),
            "op_id": [origin, origin_seq],
        }
        for seq, ets, type_, action, sender, target, data, origin, origin_seq in rows
    ]
    reply: dict[str, Any] = {"k": "events", "log": log_id, "head": head, "ts": ts, "events": events}
    if rows:
        reply["first"] = rows[0][0]
        reply["last"] = rows[-1][0]
    return reply


def events_frame(log_id: str, events: list[Event], ts: float) -> dict[str, Any]:
    return {
        "k": "ev",
        "log": log_id,
        "first": events[0].seq,
        "last": events[-1].seq,
        "ts": ts,
        "events": [compact(e) for e in events],
    }


def heartbeat_frame(log_id: str, head: int, ts: float) -> dict[str, Any]:
    return {"k": "hb", "log": log_id, "head": head, "ts": ts}


def decode_events(msg: Mapping[str, Any]) -> tuple[str, list[Event]]:
    """The events of an ``ev`` frame or ``events`` reply, checked to be consecutive."""
    log_id: str = field(msg, "log", str)
    raw = field(msg, "events", list)
    if len(raw) > MAX_FRAME_EVENTS:
        raise ProtocolError(f"frame has {len(raw)} events, more than {MAX_FRAME_EVENTS}")
    try:
        events = [event_from_dict(item, log_id) for item in raw]
    except DecodeError as exc:
        raise ProtocolError(f"bad event in frame: {exc}") from None
    for before, after in itertools.pairwise(events):
        if after.seq != before.seq + 1:
            raise ProtocolError("events in a frame must be consecutive")
    if events:
        first = field(msg, "first", int)
        last = field(msg, "last", int)
        if (first, last) != (events[0].seq, events[-1].seq):
            raise ProtocolError("frame first/last do not match its events")
    return log_id, events
