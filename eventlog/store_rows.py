"""How an `Event` is laid out as a row of the ``events`` table, both ways.

The column lists and the insert statement live here so the store's reads, its one write path
and the log benchmark (which times raw ``executemany`` against the store) all use the same
ones. Plain tuples, no sqlite-utils: these run once per event on the hot paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from eventlog.errors import DecodeError
from eventlog.event import Event, dumps, loads
from eventlog.operation import ActionType, Operation, OperationType, OpId

_TYPES: Final = {t.value: t for t in OperationType}
_ACTIONS: Final = {a.value: a for a in ActionType}

#: the columns an `Event` is read from, in `row_to_event`'s order
EVENT_COLUMNS: Final = "seq, ts, type, action, sender, target, data, origin, origin_seq"
#: what appends write: the event, and why the reducer recorded it as a no-op (NULL: applied;
#: schema 3 on; older rows say NULL too, see ``EventLog.noops_from``)
WRITE_COLUMNS: Final = EVENT_COLUMNS + ", noop"
INSERT_EVENTS: Final = f"INSERT INTO events ({WRITE_COLUMNS}) VALUES ({', '.join('?' * 10)})"
#: ``EventLog.events_where``'s reason for a row written before reasons were recorded
NOT_RECORDED: Final = "(not recorded: the file predates recorded reasons)"


def row_to_event(row: Sequence[Any], log_id: str) -> Event:
    """The event in a row of `EVENT_COLUMNS`; `DecodeError` naming its seq if it is damaged."""
    seq, ts, type_, action, sender, target, data, origin, origin_seq = row
    try:
        op = Operation(
            _TYPES[type_], _ACTIONS[action], sender, target, None if data is None else loads(data)
        )
    except KeyError:
        raise DecodeError(
            f"event {seq} is damaged: its type/action {type_!r}/{action!r} is not a valid one"
        ) from None
    except DecodeError as exc:
        raise DecodeError(f"event {seq} is damaged: {exc}") from None
    return Event(seq, ts, log_id, op, OpId(origin, origin_seq))


def event_to_row(event: Event, noop: str | None = None) -> tuple[Any, ...]:
    """The parameters of `INSERT_EVENTS` for `event` (``noop``: why it was a no-op)."""
    op = event.op
    return (
        event.seq,
        event.ts,
        op.type._value_,
        op.action._value_,
        op.sender,
        op.target,
        None if op.data is None else dumps(op.data).decode(),
        event.op_id.origin,
        event.op_id.origin_seq,
        noop,
    )
