"""The log file on disk: connecting to it, checking it is whole, and what to say when it is not.

Everything here is about the file rather than the log in it:

- `connect` opens an ``sqlite3`` connection the way the store needs it (autocommit, so the
  store writes its own ``BEGIN``; read-only opens that cope with a copy on read-only media).
- `transaction` is the one way the store writes: ``BEGIN IMMEDIATE`` ... ``COMMIT``.
- `file_error` and `damaged` turn what SQLite says into a `LogFileError` naming the file and
  saying what to do (which depends on whether it is a controller's log or a replica).
- `check_integrity` is the ``check=True`` open: every page, gapless seqs, the newest snapshot.
- `ident` and the side-file helpers let the store notice a file deleted or replaced under it,
  move a file (with its ``-wal`` and ``-shm``) aside, and never let a new log meet the WAL of a
  deleted one (`orphans_aside`).

Plain ``sqlite3`` throughout: these are pragmas and connection settings sqlite-utils does not
wrap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Literal

from eventlog.errors import DecodeError, LogFileError
from eventlog.logctx import ComponentLog
from eventlog.snapshot import Snapshot, restore

log = ComponentLog("cuelog.store")

#: SQLite's ``PRAGMA synchronous`` levels a writable log may run at
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
#: a log file and the files SQLite keeps beside it in WAL mode
SIDE_FILES: Final = ("", "-wal", "-shm")


def connect(path: str, readonly: bool) -> sqlite3.Connection:
    """A connection to `path` (or ``:memory:``) in autocommit mode, usable from any thread.

    A read-only open of a WAL-mode file in a folder this user cannot write (evidence on
    read-only media) cannot make its ``-shm`` file: with no WAL content to read, the file alone
    is the whole log, so it is read as immutable instead."""
    if path == ":memory:":
        return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    if not readonly:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError as exc:
        wal = Path(path + "-wal")
        if ("readonly" in str(exc) or "unable to open" in str(exc)) and (
            not wal.exists() or wal.stat().st_size == 0
        ):
            conn.close()
            return sqlite3.connect(
                uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False
            )
    except sqlite3.DatabaseError:
        pass  # not a database: said properly by the caller's first real read
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: committed if the block ends normally, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled it back itself (a full disk)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# ---------------------------------------------------------------------- saying what is wrong


def repair_hint(path: str, role: str | None) -> str:
    """What to do with a damaged file: a replica resyncs, a controller's log is rebuilt."""
    if role == "replica":
        return (
            "move it away (keep it for the post-mortem): the node then takes a full resync "
            "from the controller"
        )
    return (
        "keep it for the post-mortem and rebuild the log from the replica file of the node "
        f"furthest ahead: cuelog rebuild --from NODE.db --db {path} --force"
    )


def damaged(path: str, role: str | None, detail: str) -> LogFileError:
    return LogFileError(path, f"is damaged ({detail}); {repair_hint(path, role)}")


def file_error(path: str, exc: sqlite3.DatabaseError, role: str | None = None) -> LogFileError:
    """The `LogFileError` for an error SQLite raised while using the file at `path`."""
    text = str(exc)
    if "not a database" in text:
        return LogFileError(path, "is not a SQLite database, so not a cuelog log")
    if "malformed" in text or "corrupt" in text:
        return damaged(path, role, text)
    return LogFileError(path, f"cannot be used: {text}")


# ---------------------------------------------------------------------- checking it is whole


def check_integrity(
    conn: sqlite3.Connection,
    path: str,
    role: str | None,
    *,
    base_seq: int,
    head: int,
    latest_snapshot: Callable[[], Snapshot | None],
) -> None:
    """Refuse a damaged file: every page (SQLite's quick check), gapless seqs, the newest
    snapshot against its digest. About 0.5 s for a 1,000,000-event log in the page cache."""
    if path == ":memory:":
        return
    _read_through(path)
    try:
        rows = conn.execute("PRAGMA quick_check(20)").fetchall()
    except sqlite3.DatabaseError as exc:
        raise damaged(path, role, f"SQLite's quick check of its pages failed: {exc}") from None
    problems = [str(row[0]) for row in rows if row[0] != "ok"]
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise damaged(path, role, f"SQLite's quick check of its pages: {problems[0]}{more}")
    try:
        count, low, high = conn.execute(
            "SELECT COUNT(*), MIN(seq), MAX(seq) FROM events"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise damaged(path, role, f"its events cannot be counted: {exc}") from None
    if count and (low != base_seq + 1 or high - low + 1 != count):
        raise damaged(
            path,
            role,
            f"it holds {count} events between seq {low} and {high}, where seqs "
            f"{base_seq + 1}..{high} should all be",
        )
    snap = latest_snapshot()
    if snap is not None:
        if snap.seq > head or snap.seq < base_seq:
            raise damaged(
                path,
                role,
                f"its newest snapshot is at seq {snap.seq}, outside its events {base_seq}..{head}",
            )
        try:
            restore(snap)
        except DecodeError as exc:
            raise damaged(path, role, str(exc)) from None
    elif base_seq:
        raise damaged(path, role, f"it starts after seq {base_seq} but has no snapshot there")


def _read_through(path: str) -> None:
    """Read the file (and its WAL) once, front to back, into the page cache. SQLite's check
    walks the pages in tree order, one random 4 KiB read at a time: on a cold cache that took
    3.5 s for a 120 MB log, after one sequential pass (0.2 s) it takes 0.6 s.

    Another process reads it: closing any descriptor of a file drops every POSIX lock this
    process holds on it, SQLite's included, so cuelog never opens a log file itself."""
    cat = shutil.which("cat")
    if cat is None:
        return
    files = [name for name in (path, path + "-wal") if os.path.exists(name)]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [cat, "--", *files],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )


# ---------------------------------------------------------------------- the files on disk


def ident(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of `path`, None if there is none: which file the path names."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def stamp(now: float) -> str:
    """A wall-clock time for a file name."""
    return dt.datetime.fromtimestamp(now).strftime("%Y%m%dT%H%M%S")


def remove(path: str) -> None:
    """Delete a log file and its side files, whichever exist."""
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def free_name(base: str) -> str:
    """`base`, or ``base-2``, ``base-3``... : the first name no log file (or side file) has."""
    name, n = base, 1
    while any(os.path.exists(name + suffix) for suffix in SIDE_FILES):
        n += 1
        name = f"{base}-{n}"
    return name


def swap(path: str, aside: str, fresh: str) -> None:
    """Rename the log at `path` (and its side files) to `aside`, then `fresh` to `path`. If a
    rename fails, the moved files go back, `fresh` is removed and `OSError` is raised."""
    moved: list[str] = []
    try:
        for suffix in SIDE_FILES:
            if suffix == "" or os.path.exists(path + suffix):
                os.rename(path + suffix, aside + suffix)
                moved.append(suffix)
        os.rename(fresh, path)
    except OSError:
        for suffix in moved:
            with contextlib.suppress(OSError):
                os.rename(aside + suffix, path + suffix)
        remove(fresh)
        raise


def orphans_aside(path: str, now: float) -> None:
    """A log file deleted while open leaves its WAL (and shm) behind: never let a new log at
    that path meet them. They are renamed, not deleted (the last commits may be in the WAL)."""
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            aside = f"{path}{suffix}.orphan-{stamp(now)}"
            try:
                os.rename(path + suffix, aside)
            except OSError as exc:
                raise LogFileError(
                    path, f"is missing but {path}{suffix} is there and cannot be moved: {exc}"
                ) from None
            log.warning(
                "%s is missing but its %s was left behind (the log file was deleted while in "
                "use): set it aside as %s before making a new log there",
                path,
                suffix[1:].upper(),
                aside,
            )
