"""Events and their one canonical encoding.

An `Event` is an operation the log accepted: its gapless ``seq`` (from 1), the controller's
wall-clock ``ts`` chosen once at append, the ``log_id`` of the log, the operation and its
``op_id``. `encode_event` gives the canonical bytes (orjson, sorted keys); `decode_event` turns
bytes back into an `Event` and refuses anything malformed with a `DecodeError`. No I/O here.
"""

from __future__ import annotations

import math
from typing import Any, Final, NamedTuple

import orjson

from eventlog.errors import DecodeError
from eventlog.operation import ACTIONS, TYPES, Operation, OpId

_OPTS: Final = orjson.OPT_SORT_KEYS


class Event(NamedTuple):
    """One accepted operation at its place in the log (immutable; a named tuple because
    replicas build one per event and it is the cheapest immutable record to build)."""

    seq: int
    ts: float
    log_id: str
    op: Operation
    op_id: OpId

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON form: event fields plus the upstream operation fields."""
        op = self.op
        return {
            "seq": self.seq,
            "ts": self.ts,
            "log_id": self.log_id,
            "type": op.type.value,
            "action": op.action.value,
            "sender": op.sender,
            "target": op.target,
            "data": op.data,
            "op_id": [self.op_id.origin, self.op_id.origin_seq],
        }


def dumps(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, shortest float repr."""
    return orjson.dumps(value, option=_OPTS)


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON, turning every parser failure into a `DecodeError`."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None


def encode_event(event: Event) -> bytes:
    return dumps(event.to_dict())


def event_from_dict(raw: Any, log_id: str | None = None) -> Event:
    """Build an `Event` from its flat dict form: shapes and types are checked, the operation's
    semantics are not (it was validated when it was appended).

    ``log_id`` fills in a missing ``log_id`` key (frames carry it once for many events).
    Raises `DecodeError` on anything malformed. This is the hot path of every replica.
    """
    if type(raw) is not dict:
        raise DecodeError("an event must be a JSON object")
    try:
        seq = raw["seq"]
        ts = raw["ts"]
        lid = raw.get("log_id", log_id)
        op_type = TYPES[raw["type"]]
        action = ACTIONS[raw["action"]]
        sender = raw["sender"]
        target = raw["target"]
        data = raw["data"]
        op_id = raw["op_id"]
    except (KeyError, TypeError) as exc:
        raise DecodeError(f"event is missing or has a bad value for {exc}") from None
    if type(seq) is not int or seq < 1:
        raise DecodeError("event seq must be a positive integer")
    if type(ts) is not float:
        if type(ts) is not int:
            raise DecodeError("event ts must be a finite number")
        ts = float(ts)
    elif not math.isfinite(ts):
        raise DecodeError("event ts must be a finite number")
    if type(lid) is not str or not lid:
        raise DecodeError("event log_id must be a non-empty string")
    if type(sender) is not str or type(target) is not str:
        raise DecodeError("event sender and target must be strings")
    if data is not None and type(data) is not dict:
        raise DecodeError("event data must be an object or null")
    if (
        type(op_id) is not list
        or len(op_id) != 2
        or type(op_id[0]) is not str
        or not op_id[0]
        or type(op_id[1]) is not int
        or op_id[1] < 1
    ):
        raise DecodeError("event op_id must be [origin, origin_seq]")
    return Event(
        seq, ts, lid, Operation(op_type, action, sender, target, data), OpId(op_id[0], op_id[1])
    )


def decode_event(raw: bytes | bytearray | memoryview | str) -> Event:
    return event_from_dict(loads(raw))
