"""How the post-mortem tools write times and events: one place for every output format.

    clock(ts, tz)            21:43:05.250           (the show's zone)
    stamp(ts, tz)            2026-11-28 21:43:05.250
    duration(seconds)        4.2 s, 3m07s, 1h02m03s
    event_line(...)          one event as a row of the ``replay events`` table
    event_record(...)        one event as a dict of named columns, for CSV and JSON lines
    write_csv_row(...)       such a record as a CSV row, in a given column order
    print_json(value)        one JSON line on stdout

``replay events``, ``replay export`` and the cue story all go through these, so an event looks
the same wherever it is shown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Final

from eventlog import Event, dumps

#: ANSI colours of the ``events`` table, by operation type (and for the no-op note)
COLOURS: Final = {
    "command": "\x1b[1;33m",
    "cue": "\x1b[36m",
    "player": "\x1b[35m",
    "status": "",
    "noop": "\x1b[31m",
}
RESET: Final = "\x1b[0m"


def clock(ts: float, tz: dt.tzinfo, ms: bool = True) -> str:
    """``21:43:05.250`` in the show's zone (``21:43:05`` without `ms`)."""
    text = dt.datetime.fromtimestamp(ts, tz).strftime("%H:%M:%S.%f")
    return text[:-3] if ms else text[:-7]


def stamp(ts: float, tz: dt.tzinfo) -> str:
    """``2026-11-28 21:43:05.250`` in the show's zone."""
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def iso(ts: float, tz: dt.tzinfo) -> str:
    """``2026-11-28T21:43:05.250+01:00``: a time a spreadsheet or pandas reads back."""
    return dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="milliseconds")


def duration(seconds: float) -> str:
    """A length of time for people: ``4.2 s``, ``3m07s``, ``1h02m03s``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def data_text(data: Any, width: int | None = None) -> str:
    """An operation's data as compact JSON ("" for none), cut to `width` characters."""
    if data is None:
        return ""
    text = dumps(data).decode()
    return text if width is None or len(text) <= width else text[: width - 1] + "\u2026"


def event_line(
    event: Event,
    reason: str | None,
    tz: dt.tzinfo,
    *,
    colour: bool = False,
    data_width: int | None = None,
) -> str:
    """One event as a table row: seq, time, sender, type/action, target, data, and the
    reason when the reducer refused or ignored it."""
    op = event.op
    kind = f"{op.type.value}/{op.action.value}"
    line = f"{event.seq:>8}  {clock(event.ts, tz)}  {op.sender:<14} {kind:<14} "
    line += f"{op.target:<20} {data_text(op.data, data_width)}"
    if colour:
        line = f"{COLOURS.get(op.type.value, '')}{line}{RESET}"
    if reason is not None:
        note = f"   <- no-op: {reason}"
        line += f"{COLOURS['noop']}{note}{RESET}" if colour else note
    return line


def event_record(event: Event, reason: str | None, tz: dt.tzinfo) -> dict[str, Any]:
    """Every column an event has, by name (``data`` stays an object: JSON keeps it so)."""
    op = event.op
    return {
        "seq": event.seq,
        "ts": event.ts,
        "time": iso(event.ts, tz),
        "clock": clock(event.ts, tz),
        "type": op.type.value,
        "action": op.action.value,
        "sender": op.sender,
        "target": op.target,
        "data": op.data,
        "origin": event.op_id.origin,
        "origin_seq": event.op_id.origin_seq,
        "noop": reason,
    }


def event_json(event: Event, reason: str | None) -> dict[str, Any]:
    """The event as the log stores it, with its no-op reason (None: it took effect)."""
    return {**event.to_dict(), "noop": reason}


def write_csv_row(writer: Any, record: dict[str, Any], columns: Iterable[str]) -> None:
    """`record`'s `columns` as one CSV row: data as JSON text, None as an empty cell."""
    writer.writerow([data_text(record[c]) if c == "data" else record[c] for c in columns])


def print_json(value: Any) -> None:
    """`value` as one line of JSON on stdout."""
    print(dumps(value).decode())
