"""``replay events`` and ``replay export``: the events themselves, as a table, CSV or JSON.

``events`` lists events after filters (seq and time bounds, type, action, target, sender, a
text in the data, a limit) as a coloured table, JSON lines or CSV; with ``--why`` (and always
in CSV and JSON) each carries the reason the reducer refused or ignored it, found by folding
the log alongside. ``export`` writes every event with its reason to a file (or stdout) as JSON
lines or CSV, for spreadsheets and pandas; a failed export leaves no file behind.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import os
import sys
from collections.abc import Iterator
from typing import Final, TextIO

from tqdm import tqdm

from eventlog import Event, EventLog, apply, dumps
from eventlog.state import State
from tools.formats import event_json, event_line, event_record, print_json, write_csv_row
from tools.reading import atomic_output, progress_wanted, read_log, show_zone, writable
from tools.replay_points import first_seq_from

#: the columns of ``replay export`` (the names of `tools.formats.event_record`)
EXPORT_COLUMNS: Final = (
    "seq",
    "ts",
    "time",
    "type",
    "action",
    "sender",
    "target",
    "data",
    "origin",
    "origin_seq",
    "noop",
)
#: ``replay events --csv``: each header and the `event_record` column under it
_EVENTS_CSV: Final = {
    "seq": "seq",
    "time": "clock",
    "sender": "sender",
    "type": "type",
    "action": "action",
    "target": "target",
    "data": "data",
    "noop": "noop",
    "iso_time": "time",
    "origin": "origin",
    "origin_seq": "origin_seq",
}


def cmd_events(args: argparse.Namespace) -> int:
    with read_log(args.log) as elog:
        tz, _ = show_zone(elog, args.utc)
        out = sys.stdout
        colour = not (args.json or args.csv) and out.isatty() and not os.environ.get("NO_COLOR")
        writer = csv.writer(out) if args.csv else None
        if writer is not None:
            writer.writerow(_EVENTS_CSV)
        events = _selected(args, elog, tz)
        why = args.why or args.csv or args.json
        for event, reason in _with_reasons(elog, events) if why else _no_reasons(events):
            if args.json:
                print_json(event_json(event, reason))
            elif writer is not None:
                write_csv_row(writer, event_record(event, reason, tz), _EVENTS_CSV.values())
            else:
                print(event_line(event, reason, tz, colour=colour))
    return 0


def _selected(args: argparse.Namespace, elog: EventLog, tz: dt.tzinfo) -> Iterator[Event]:
    """The events the filters of ``replay events`` let through, in seq order."""
    after = args.after
    until = args.to_seq
    if args.since:  # at or after: a seq, or the first event at or after a time
        after = max(after, first_seq_from(args.since, elog, tz) - 1)
    if args.until:  # before: a seq, or a time
        last = first_seq_from(args.until, elog, tz) - 1
        until = last if until is None else min(until, last)
    grep = args.grep.casefold() if args.grep else None
    shown = 0
    for event in elog.iter_events(after=after, until=until):
        op = event.op
        if args.type and op.type.value != args.type:
            continue
        if args.action and op.action.value != args.action:
            continue
        if args.target and op.target != args.target:
            continue
        if args.sender and op.sender != args.sender:
            continue
        if grep is not None and (op.data is None or grep not in dumps(op.data).decode().casefold()):
            continue
        yield event
        shown += 1
        if args.limit and shown >= args.limit:
            return


def _with_reasons(elog: EventLog, events: Iterator[Event]) -> Iterator[tuple[Event, str | None]]:
    """Each event with its no-op reason, folding the log alongside (from the state just before
    the first one, over the events the filters skipped)."""
    state: State | None = None
    for event in events:
        if state is None:
            state = elog.state_at(max(event.seq - 1, elog.base_seq))
        for gap in elog.iter_events(state.seq, until=event.seq - 1):
            apply(state, gap)
        yield event, apply(state, event)


def _no_reasons(events: Iterator[Event]) -> Iterator[tuple[Event, None]]:
    return ((event, None) for event in events)


def cmd_export(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        elog = stack.enter_context(read_log(args.log))
        out: TextIO = sys.stdout
        if args.output:
            out = stack.enter_context(atomic_output(writable(args.output, args.log)))
        head = _export(args, elog, out)
    if args.output:
        print(f"exported seqs up to {head} to {args.output}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace, elog: EventLog, out: TextIO) -> int:
    """Every event up to the head, with its reason, to `out`; returns the head."""
    tz, _ = show_zone(elog, args.utc)
    writer = csv.writer(out) if args.format == "csv" else None
    if writer is not None:
        writer.writerow(EXPORT_COLUMNS)
    head = elog.head
    state = elog.state_at(elog.base_seq)
    bar = tqdm(total=head - elog.base_seq, unit="ev", disable=not progress_wanted(args.quiet))
    for event in elog.iter_events(after=elog.base_seq, until=head):
        record = event_record(event, apply(state, event), tz)
        if writer is not None:
            write_csv_row(writer, record, EXPORT_COLUMNS)
        else:
            out.write(dumps({c: record[c] for c in EXPORT_COLUMNS}).decode() + "\n")
        bar.update(1)
    bar.close()
    return head
