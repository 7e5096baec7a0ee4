"""Reading a log after the fact, and writing what was read somewhere safe.

    with read_log(path) as elog: ...     one consistent snapshot of the file, read-only
    show_zone(elog, utc)                 the zone its times are shown in, and its name
    writable(output, log)                an output path that is never the log being read
    atomic_output(target)                a file that appears only once complete
    progress_wanted(quiet)               whether a progress bar belongs on stderr

``replay``, ``rebuild`` and ``demo`` open logs this way: a log being written is read as it was
at the moment of opening (one read transaction), never half before and half after an append.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from eventlog import EventLog, UsageError
from eventlog.showtz import readable, zone

#: the files SQLite and the writer lock keep beside a log
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")


def read_log(path: str | Path) -> EventLog:
    """`path` opened read-only and pinned: one read transaction for the whole reading."""
    return EventLog.open(path, readonly=True, pin=True)


def show_zone(elog: EventLog, utc: bool = False) -> tuple[dt.tzinfo, str]:
    """The zone to show the log's times in: the one it recorded (UTC with `utc`, and this
    machine's for a file that recorded none), and how to name it."""
    if utc:
        return dt.UTC, "UTC"
    if elog.show_tz and readable(elog.show_tz):
        return zone(elog.show_tz), elog.show_tz
    if elog.show_tz:
        return dt.UTC, f"UTC (the log's zone {elog.show_tz} is unknown on this machine)"
    local = dt.datetime.now().astimezone().tzinfo or dt.UTC
    return local, f"{local} (this machine's; the log records no zone)"


def progress_wanted(quiet: bool = False) -> bool:
    """A progress bar only for a person watching stderr, and not when asked to be quiet."""
    return sys.stderr.isatty() and not quiet


def writable(output: str, log: str) -> Path:
    """`output` checked before anything is written: never the log itself or one of its
    companion files (replay never writes to what it reads), and a folder that exists."""
    target = Path(output)
    log_path = Path(log).resolve()
    resolved = target.resolve()
    companions = {log_path} | {
        log_path.with_name(log_path.name + suffix) for suffix in COMPANION_SUFFIXES
    }
    same = resolved in companions or (
        target.exists() and log_path.exists() and os.path.samefile(target, log_path)
    )
    if same:
        raise UsageError(f"{output} is the log being read (or one of its files): write elsewhere")
    if target.is_dir():
        raise UsageError(f"{output} is a folder: give a file name")
    if not resolved.parent.is_dir():
        raise UsageError(f"cannot write {output}: the folder {resolved.parent} does not exist")
    return target


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[TextIO]:
    """A text file written beside `target` and renamed to it when the block ends cleanly; a
    block that fails leaves nothing behind."""
    tmp = target.with_name(f".{target.name}.part")
    try:
        with _create(tmp) as out:
            yield out
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _create(path: Path) -> TextIO:
    try:
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
