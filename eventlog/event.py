"""Events and their one canonical encoding.

An `Event` is an operation the log accepted: its gapless ``seq`` (from 1), the controller's
wall-clock ``ts`` chosen once at append, the ``log_id`` of the log, the operation and its
``op_id``. `encode_event` gives the canonical bytes (orjson, sorted keys); `decode_event` turns
bytes back into an `Event` and refuses anything malformed with a `DecodeError`. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from eventlog.errors import DecodeError, ValidationError
from eventlog.operation import ActionType, Operation, OperationType, OpId, validate_op_id

_OPTS: Final = orjson.OPT_SORT_KEYS
_TYPES: Final = {t.value: t for t in OperationType}
_ACTIONS: Final = {a.value: a for a in ActionType}


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted operation at its place in the log."""

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
    """Build an `Event` from its flat dict form (trusted shape check, no semantic validation).

    ``log_id`` fills in a missing ``log_id`` key (frames carry it once for many events).
    """
    if not isinstance(raw, Mapping):
        raise DecodeError("an event must be a JSON object")
    try:
        seq = raw["seq"]
        ts = raw["ts"]
        lid = raw.get("log_id", log_id)
        op_type = _TYPES[raw["type"]]
        action = _ACTIONS[raw["action"]]
        sender = raw["sender"]
        target = raw["target"]
        data = raw["data"]
        op_id = validate_op_id(raw["op_id"], allow_reserved=True)
    except KeyError as exc:
        raise DecodeError(f"event is missing or has a bad value for {exc}") from None
    except (TypeError, ValidationError) as exc:
        raise DecodeError(f"event has a bad op_id: {exc}") from None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise DecodeError("event seq must be a positive integer")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise DecodeError("event ts must be a finite number")
    if not isinstance(lid, str) or not lid:
        raise DecodeError("event log_id must be a non-empty string")
    if not isinstance(sender, str) or not isinstance(target, str):
        raise DecodeError("event sender and target must be strings")
    if data is not None and not isinstance(data, dict):
        raise DecodeError("event data must be an object or null")
    return Event(seq, float(ts), lid, Operation(op_type, action, sender, target, data), op_id)


def decode_event(raw: bytes | bytearray | memoryview | str) -> Event:
    return event_from_dict(loads(raw))
