"""Operations: the upstream ``NodeOperation`` shape, its op_id, and validation.

An operation is what a sender asks for: ``{"type", "action", "sender", "target", "data"}``,
wire-compatible with upstream's JSON. Senders add ``"op_id": [origin, origin_seq]`` so that a
retried operation is appended once.

`validate_operation` is the only way raw input becomes an `Operation`; it raises a
`ValidationError` naming the field and the rule for each way the input can be wrong. This module
does no I/O and never reads a clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, NamedTuple

import orjson

from eventlog.errors import ValidationError

#: Largest encoded ``data`` accepted for one operation (bytes of canonical JSON).
MAX_DATA_BYTES: Final = 64 * 1024
#: Deepest nesting of lists/objects accepted inside ``data``.
MAX_DEPTH: Final = 32
MAX_SENDER_LEN: Final = 128
MAX_TARGET_LEN: Final = 512
MAX_ORIGIN_LEN: Final = 128
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
#: op_id origins with this prefix are the log's own (given to ops submitted without an op_id)
RESERVED_ORIGIN_PREFIX: Final = "~"
#: bytes one character may take in canonical JSON (a control character becomes \u00XX)
_WORST_EXPANSION: Final = 6
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


#: longest node id: with the per-process suffix of its op-id origin (``/`` + 12 hex digits)
#: it stays well inside `MAX_ORIGIN_LEN`
MAX_NODE_ID_LEN: Final = 64
_NODE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
#: ids no node may take: the controller's own sender
RESERVED_NODE_IDS: Final = frozenset({"controller"})


def check_node_id(value: Any) -> str:
    """The one rule for node ids, used by the CLI, the library and the wire protocol: 1-64
    characters, letters, digits and ``. _ : -``, starting with a letter or digit (so an id is
    always a valid op-id origin, an OSC address part and a file name), and not
    ``controller``. Raises `ValidationError` saying what is wrong."""
    if not isinstance(value, str):
        raise ValidationError("node", "not-a-string", f"a node id is a string, got {_kind(value)}")
    if not 1 <= len(value) <= MAX_NODE_ID_LEN or not _NODE_ID.fullmatch(value):
        raise ValidationError(
            "node",
            "bad-node-id",
            f"{value[:80]!r}: a node id is 1-{MAX_NODE_ID_LEN} letters, digits, '.', '_', ':' "
            "or '-', starting with a letter or digit",
        )
    if value in RESERVED_NODE_IDS:
        raise ValidationError("node", "reserved", f"{value!r} is reserved for the controller")
    return value


class OperationType(Enum):
    """The kind of thing an operation is about (upstream names and values)."""

    CUE = "cue"
    PLAYER = "player"
    COMMAND = "command"
    STATUS = "status"

    # Members are singletons: identity hashing (in C) keeps the hot paths fast.
    __hash__ = object.__hash__


class ActionType(Enum):
    """What the operation does to it (upstream names and values)."""

    ADD = "add"
    REMOVE = "remove"
    UPDATE = "update"

    __hash__ = object.__hash__


ALLOWEDACTIONS: Final[dict[OperationType, frozenset[ActionType]]] = {
    OperationType.CUE: frozenset({ActionType.ADD, ActionType.REMOVE, ActionType.UPDATE}),
    OperationType.PLAYER: frozenset({ActionType.ADD, ActionType.REMOVE, ActionType.UPDATE}),
    OperationType.COMMAND: frozenset({ActionType.UPDATE}),
    OperationType.STATUS: frozenset({ActionType.UPDATE}),
}

#: the one table from wire names to types and actions (decoders everywhere use these)
TYPES: Final = {t.value: t for t in OperationType}
ACTIONS: Final = {a.value: a for a in ActionType}
_FIELDS: Final = ("type", "action", "sender", "target", "data")
_FIELD_SET: Final = frozenset(_FIELDS)
_WIRE_KEYS: Final = frozenset((*_FIELDS, "op_id"))


class OpId(NamedTuple):
    """Identity of one submitted operation: who made it and its number at the origin.

    Immutable (a named tuple: cheap to build and hash on the hot paths)."""

    origin: str
    origin_seq: int

    def to_wire(self) -> list[Any]:
        return [self.origin, self.origin_seq]


def wire_form(
    op_type: OperationType, action: ActionType, sender: str, target: str, data: Any
) -> dict[str, Any]:
    """Upstream's ``NodeOperation`` JSON object for these fields."""
    return {
        "type": op_type.value,
        "action": action.value,
        "sender": sender,
        "target": target,
        "data": data,
    }


class Operation(NamedTuple):
    """A validated operation. Build it with `validate_operation` from untrusted input.

    Immutable (a named tuple: cheap to build on the hot paths)."""

    type: OperationType
    action: ActionType
    sender: str
    target: str
    data: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The upstream JSON object (without op_id)."""
        return wire_form(self.type, self.action, self.sender, self.target, self.data)

    def __str__(self) -> str:
        return f"{self.type.value}/{self.action.value} {self.target} from {self.sender}"


@dataclass(frozen=True, slots=True)
class Submission:
    """An operation on its way to the log, with the op_id that makes retries safe.

    ``op_id`` may be ``None`` for operations made by the log's owner itself; the store then
    gives it one.
    """

    op: Operation
    op_id: OpId | None = None


def _str_field(raw: Mapping[str, Any], name: str, max_len: int) -> str:
    return _check_str(name, raw[name], max_len)


def _check_str(name: str, value: Any, max_len: int) -> str:
    if type(value) is not str:
        if not isinstance(value, str):
            raise ValidationError(name, "not-a-string", f"must be a string, got {_kind(value)}")
        value = str(value)
    if not value:
        raise ValidationError(name, "empty", "must not be empty")
    if len(value) > max_len:
        raise ValidationError(
            name, "too-long", f"is {len(value)} characters, the limit is {max_len}"
        )
    if value.isascii():
        if not value.isprintable():  # for ASCII: exactly the control characters
            raise ValidationError(name, "control-character", "must not contain control characters")
    else:
        if _CONTROL.search(value):
            raise ValidationError(name, "control-character", "must not contain control characters")
        _check_utf8(name, value)
    result: str = value
    return result


def _check_utf8(where: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            where, "bad-utf8", f"is not valid UTF-8 text ({exc.reason})"
        ) from None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def check_json_value(value: Any, where: str = "data", depth: int = 0) -> int:
    """Check that `value` is plain JSON with finite numbers; return a size estimate in bytes.

    Raises `ValidationError` naming the path (``data.cues[3].offset``) and the rule.
    """
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _check_utf8(where, value)
        return len(value) + 2
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValidationError(where, "int-out-of-range", "integer does not fit in 64 bits")
        return 20
    if value is None or kind is bool:
        return 5
    if kind is float:
        if not math.isfinite(value):
            raise ValidationError(where, "not-finite", f"must be a finite number, got {value}")
        return 24
    if depth >= MAX_DEPTH:
        raise ValidationError(where, "too-deep", f"nests deeper than {MAX_DEPTH} levels")
    if kind is dict:
        size = 2
        for key, item in value.items():
            if type(key) is not str:
                raise ValidationError(where, "non-string-key", f"has a key that is {_kind(key)}")
            if not key.isascii():
                _check_utf8(f"{where}.{key}", key)
            item_kind = type(item)
            # flat values inline: most operations carry a small flat object
            if item_kind is str and item.isascii():
                size += len(key) + len(item) + 6
            elif item_kind is int and _INT_MIN <= item <= _INT_MAX:
                size += len(key) + 24
            else:
                size += len(key) + 4 + check_json_value(item, f"{where}.{key}", depth + 1)
        return size
    if kind is list or kind is tuple:
        size = 2
        for i, item in enumerate(value):
            size += check_json_value(item, f"{where}[{i}]", depth + 1) + 1
        return size
    raise ValidationError(
        where,
        "not-json",
        f"must be JSON (object, list, string, number, boolean or null), got {_kind(value)}",
    )


def _need(data: Mapping[str, Any], key: str, kinds: tuple[type, ...], rule_kind: str) -> Any:
    if key not in data:
        raise ValidationError(f"data.{key}", "missing", "is required")
    value = data[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ValidationError(
            f"data.{key}",
            f"not-{rule_kind}",
            f"must be {rule_kind.replace('-', ' ')}, got {_kind(value)}",
        )
    return value


def _check_semantics(
    op_type: OperationType, action: ActionType, target: str, data: dict[str, Any] | None
) -> None:
    """Type-specific rules for the operations the reducer interprets."""
    if op_type is OperationType.CUE:
        if action is ActionType.REMOVE and data is None:
            return
        if data is None:
            raise ValidationError("data", "missing", f"cue/{action.value} needs a data object")
        if "id" in data and data["id"] != target:
            raise ValidationError("data.id", "target-mismatch", "must equal the target cue id")
        if action is ActionType.ADD:
            offset = _need(data, "offset", (str, int, float), "a-string-or-number")
            if isinstance(offset, float) and not math.isfinite(offset):
                raise ValidationError("data.offset", "not-finite", "must be a finite number")
        elif action is ActionType.UPDATE:
            pct = _need(data, "percentage", (int,), "an-integer")
            if not -1 <= pct <= 100:
                raise ValidationError(
                    "data.percentage", "out-of-range", f"must be between -1 and 100, got {pct}"
                )
    elif op_type is OperationType.STATUS and data is not None:
        if target == "nextcue":
            _need(data, "nextcue", (str,), "a-string")
        elif target == "cue_enabled":
            _need(data, "cue_id", (str,), "a-string")
            _need(data, "enabled", (bool,), "a-boolean")
        elif target == "timecode":
            _need(data, "value", (int,), "an-integer")
    elif op_type is OperationType.COMMAND:
        if data is None:
            return
        address = data.get("address")
        if address is not None and (not isinstance(address, str) or not address.startswith("/")):
            raise ValidationError(
                "data.address", "bad-address", "must be an OSC address string starting with '/'"
            )
        value = data.get("value")
        if target == "cue_enabled" and value is not None and not _is_cue_enabled_value(value):
            raise ValidationError("data.value", "bad-cue-enabled", "must be '<cue uuid> <0|1>'")
        is_volume = isinstance(address, str) and address.endswith("/volume")
        if target == "player_control" and is_volume and not _is_number(value):
            raise ValidationError(
                "data.value", "not-a-number", f"a volume must be a number, got {_kind(value)}"
            )


def _is_cue_enabled_value(value: Any) -> bool:
    return isinstance(value, str) and len(value.split()) == 2 and value.split()[1] in ("0", "1")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_operation(raw: Any) -> Operation:
    """Turn untrusted decoded JSON into an `Operation`, or raise `ValidationError`.

    Accepts a mapping with exactly the upstream keys (an ``op_id`` key is tolerated and
    ignored here; see `validate_submission`), or an `Operation` built by hand, which is checked
    by the same rules and returned as is when it passes.
    """
    if isinstance(raw, Operation):
        op_type, action = raw.type, raw.action
        if type(op_type) is not OperationType or type(action) is not ActionType:
            return validate_operation(
                {
                    "type": getattr(op_type, "value", op_type),
                    "action": getattr(action, "value", action),
                    "sender": raw.sender,
                    "target": raw.target,
                    "data": raw.data,
                }
            )
        _check_parts(op_type, action, raw.sender, raw.target, raw.data)
        if raw.data is None:
            return raw
        return Operation(op_type, action, raw.sender, raw.target, _own(raw.data))
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise ValidationError(
            "$", "not-an-object", f"an operation must be a JSON object, got {_kind(raw)}"
        )
    keys = raw.keys()
    if keys != _WIRE_KEYS and keys != _FIELD_SET:  # the common shapes, checked in C
        for name in _FIELDS:
            if name not in raw:
                raise ValidationError(name, "missing", "is required")
        for key in raw:
            if key not in _WIRE_KEYS:
                raise ValidationError(
                    str(key),
                    "unknown-field",
                    f"is not a field of an operation (allowed: {', '.join(_FIELDS)}, op_id)",
                )
    type_raw, action_raw = raw["type"], raw["action"]
    found_type = TYPES.get(type_raw) if isinstance(type_raw, str) else None
    if found_type is None:
        raise ValidationError(
            "type", "unknown-type", f"{type_raw!r} is not one of {', '.join(sorted(TYPES))}"
        )
    found_action = ACTIONS.get(action_raw) if isinstance(action_raw, str) else None
    if found_action is None:
        raise ValidationError(
            "action",
            "unknown-action",
            f"{action_raw!r} is not one of {', '.join(sorted(ACTIONS))}",
        )
    data = raw["data"]
    if data is not None and isinstance(data, Mapping):
        data = dict(data)
    sender, target = raw["sender"], raw["target"]
    _check_parts(found_type, found_action, sender, target, data)
    return Operation(found_type, found_action, sender, target, None if data is None else _own(data))


_SCALARS: Final = (str, int, float, bool, type(None))


def _own(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of validated `data` that shares nothing with the caller's objects.

    The state and its snapshots keep operation data; a caller mutating its dict afterwards
    must not change them behind the log's back.
    """
    for value in data.values():
        if type(value) not in _SCALARS:
            copied: dict[str, Any] = orjson.loads(orjson.dumps(data))
            return copied
    return dict(data)


def _check_parts(
    op_type: OperationType, action: ActionType, sender: Any, target: Any, data: Any
) -> None:
    if action not in ALLOWEDACTIONS[op_type]:
        raise ValidationError(
            "action",
            "action-not-allowed",
            f"{action.value!r} is not allowed for type {op_type.value!r}",
        )
    _check_str("sender", sender, MAX_SENDER_LEN)
    _check_str("target", target, MAX_TARGET_LEN)
    if data is not None:
        if type(data) is not dict:
            raise ValidationError(
                "data", "not-an-object", f"must be an object or null, got {_kind(data)}"
            )
        size = check_json_value(data)
        if size * _WORST_EXPANSION > MAX_DATA_BYTES:
            # the estimate counts characters; escapes and UTF-8 can take up to 6 bytes each
            size = len(orjson.dumps(data))
        if size > MAX_DATA_BYTES:
            raise ValidationError(
                "data", "too-large", f"is about {size} bytes, the limit is {MAX_DATA_BYTES}"
            )
    _check_semantics(op_type, action, target, data)


def validate_op_id(raw: Any, *, allow_reserved: bool = False) -> OpId:
    """Turn a wire ``op_id`` (``[origin, origin_seq]``) into an `OpId`.

    Origins starting with ``~`` belong to the log itself (the ids it gives its own
    operations); senders may not use them unless `allow_reserved` (reading stored events).
    """
    if type(raw) is OpId:
        origin, origin_seq = raw.origin, raw.origin_seq
        if (
            type(origin) is str
            and type(origin_seq) is int
            and origin
            and origin.isascii()
            and len(origin) <= MAX_ORIGIN_LEN
            and 1 <= origin_seq <= _INT_MAX
            and (allow_reserved or not origin.startswith(RESERVED_ORIGIN_PREFIX))
        ):
            return raw
        raw = raw.to_wire()
    if (
        type(raw) is list
        and len(raw) == 2
        and type(raw[0]) is str
        and type(raw[1]) is int
        and 0 < len(raw[0]) <= MAX_ORIGIN_LEN
        and raw[0].isascii()
        and 1 <= raw[1] <= _INT_MAX
        and (allow_reserved or raw[0][0] != RESERVED_ORIGIN_PREFIX)
    ):
        return OpId(raw[0], raw[1])
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise ValidationError("op_id", "bad-op-id", "must be [origin, origin_seq]")
    origin, origin_seq = raw
    if not isinstance(origin, str) or not origin or len(origin) > MAX_ORIGIN_LEN:
        raise ValidationError(
            "op_id[0]",
            "bad-origin",
            f"origin must be a non-empty string of at most {MAX_ORIGIN_LEN}",
        )
    _check_utf8("op_id[0]", origin)
    if origin.startswith(RESERVED_ORIGIN_PREFIX) and not allow_reserved:
        raise ValidationError(
            "op_id[0]", "reserved-origin", "origins starting with '~' belong to the log itself"
        )
    if (
        isinstance(origin_seq, bool)
        or not isinstance(origin_seq, int)
        or not 1 <= origin_seq <= _INT_MAX
    ):
        raise ValidationError(
            "op_id[1]", "bad-origin-seq", "origin_seq must be a positive 64-bit integer"
        )
    return OpId(origin, origin_seq)


def validate_submission(raw: Any) -> Submission:
    """Validate a wire operation that may carry ``op_id``."""
    if isinstance(raw, Submission):
        op = validate_operation(raw.op)
        op_id = None if raw.op_id is None else validate_op_id(raw.op_id)
        if op is raw.op and op_id is raw.op_id:
            return raw
        return Submission(op, op_id)
    op = validate_operation(raw)
    op_id_raw = raw.get("op_id") if isinstance(raw, Mapping) else None
    return Submission(op, None if op_id_raw is None else validate_op_id(op_id_raw))
