"""Points in a show, as a person names them on the command line or in ``/replay/seek``.

A point is a seq (``123``, ``#123``) or a wall-clock time: a time of day in the show's zone
(``21:43``, ``21:43:05.250``, ``21:43+01:00``), an ISO date-time (``2026-11-28T21:43``), an
offset from the first event (``+5m``, ``+1h30m``, ``+90s``) or unix seconds. `parse_when` tells
which; `seq_of` and `first_seq_from` turn either into the seq a subcommand needs.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Final, Literal

from eventlog import EventLog, UsageError

POINT_HELP: Final = (
    "a seq (123 or #123), a time in the show's zone (21:43, 21:43:05.250), an ISO date-time "
    "(2026-11-28T21:43), +5m / +1h30m / +90s from the start, or unix seconds"
)

_OFFSET: Final = re.compile(r"^\+(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")
#: a bare number below this is a seq; above, unix seconds (1973 onwards)
_SEQ_BELOW: Final = 100_000_000
#: unix seconds are believed between these (1973 .. 5138)
_UNIX_RANGE: Final = (1e8, 1e11)

Point = tuple[Literal["seq", "ts"], float]


def parse_when(text: str, elog: EventLog, tz: dt.tzinfo) -> Point:
    """A point in the show: ``("seq", n)`` or ``("ts", unix seconds)``; see `POINT_HELP`."""
    raw = text.strip()
    if raw.startswith("#") and _ascii_digits(raw[1:]):
        return "seq", int(raw[1:])
    if _ascii_digits(raw) and int(raw) < _SEQ_BELOW:
        return "seq", int(raw)
    bounds = elog.time_bounds()
    match = _OFFSET.match(raw)
    if match and raw != "+" and any(match.groups()):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        if bounds is None:
            raise UsageError(f"{text!r} counts from the start, and the log has no events")
        return "ts", bounds[0] + hours * 3600 + minutes * 60 + seconds
    try:
        value = float(raw)
        if math.isfinite(value) and _UNIX_RANGE[0] < value < _UNIX_RANGE[1]:
            return "ts", value
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(raw)
        if when.tzinfo is None:
            when = when.replace(tzinfo=tz)
        return "ts", when.timestamp()
    except ValueError:
        pass
    try:
        time_of_day = dt.time.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"{text!r} is not a point in the show: use {POINT_HELP}") from None
    return "ts", _nearest_day(time_of_day, bounds, tz)


def _nearest_day(time_of_day: dt.time, bounds: tuple[float, float] | None, tz: dt.tzinfo) -> float:
    """That time of day on the show's first day, the day before or the days after: the one
    nearest the show (a show that runs past midnight, a zone other than the show's); today
    for a log without events."""
    zone = time_of_day.tzinfo or tz  # 21:43+01:00 keeps its own offset
    naive = time_of_day.replace(tzinfo=None)
    if not bounds:
        return dt.datetime.combine(dt.datetime.now(zone).date(), naive, zone).timestamp()
    first, last = bounds
    first_day = dt.datetime.fromtimestamp(first, zone).date()
    candidates = [
        dt.datetime.combine(first_day + dt.timedelta(days=d), naive, zone).timestamp()
        for d in (-1, 0, 1, 2)
    ]
    return min(candidates, key=lambda ts: max(0.0, first - ts, ts - last))


def _ascii_digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def seq_of(text: str, elog: EventLog, tz: dt.tzinfo) -> int:
    """The seq a point names: itself, or the last event at or before a time."""
    kind, value = parse_when(text, elog, tz)
    return int(value) if kind == "seq" else elog.seq_at_time(value)


def first_seq_from(text: str, elog: EventLog, tz: dt.tzinfo) -> int:
    """The first seq at or after a point: the seq itself, or the first event at or after the
    time (one past the head when none is)."""
    kind, value = parse_when(text, elog, tz)
    if kind == "seq":
        return int(value)
    rows = elog.select("SELECT seq FROM events WHERE ts >= ? ORDER BY ts, seq LIMIT 1", (value,))
    return int(rows[0][0]) if rows else elog.head + 1
