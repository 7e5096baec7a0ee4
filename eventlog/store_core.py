"""What every part of an open `EventLog` shares: its connection, its lock, what it knows about
its file, and the two ways it touches the database.

`EventLog` is built in layers, one module each, every layer a subclass of the one before:

    LogCore      (here)              the fields, `_reading` and `_transaction`
    LogReads     (store_read.py)     every query: events, rows, snapshots, the state at a seq
    LogWrites    (store_write.py)    the appends (one write path for both) and snapshots
    EventLog     (store.py)          opening and closing, meta (role, time zone), the file's
                                     identity, and a replica's full resync (`reset`)

Every read goes through `_reading`: it takes the lock, refuses a closed log, and turns what
SQLite (or a damaged row) raises into a `LogFileError` naming the file, and hands out the raw
``sqlite3`` connection. Every write runs inside `_transaction` (``BEGIN IMMEDIATE`` ...
``COMMIT``, rolled back if the block raises).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator

from eventlog.errors import DecodeError, LogFileError, UsageError
from eventlog.lockfile import WriterLock
from eventlog.state import State
from eventlog.store_file import Synchronous, file_error, transaction
from eventlog.store_schema import Role


class LogCore:
    """The fields of an open log. Made by `EventLog.open`, never directly."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        *,
        readonly: bool,
        snapshot_every: int,
        clock: Callable[[], float],
    ) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self.snapshot_every = snapshot_every
        self._clock = clock
        #: serialises every call: one handle may be shared by threads
        self._lock = threading.RLock()
        self._closed = False
        # what the file's meta says (set by `EventLog._setup`)
        self.log_id = ""
        self.base_seq = 0
        self.created = 0.0
        #: the role the file's meta gives (None for a file from before roles)
        self.role: str | None = None
        #: the show's time zone (`eventlog.showtz`); None for a file from before zones
        self.show_tz: str | None = None
        #: the highest controller epoch this file has seen (`EventLog.set_epoch`)
        self.epoch = 0
        #: the first seq whose row says why the reducer made it a no-op (``noop``); None when
        #: the file records none (schema 2, read as it is)
        self.noops_from: int | None = None
        #: the last seq in the file, as of this handle's last write (or read, when read-only)
        self._head = 0
        #: the state at `_head`, kept by writable logs (None when read-only)
        self._state: State | None = None
        #: the seq of the newest stored snapshot (writable logs: when the next one is due)
        self._last_snapshot_seq = 0
        self._synchronous: Synchronous = "FULL"
        #: the role this opener asked for (stamped into a file that has none)
        self._want_role: Role | None = None
        self._writer_lock: WriterLock | None = None
        #: (st_dev, st_ino) of the file and its write-ahead log as opened (writable opens)
        self._ident: tuple[int, int] | None = None
        self._wal_ident: tuple[int, int] | None = None
        #: where the last `reset` put the file it replaced (None: it kept nothing)
        self.set_aside: str | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"log {self.path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise UsageError(f"log {self.path} is open read-only")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The guarded read: hold the lock, refuse a closed log, and say a damaged file as a
        `LogFileError` naming it (SQLite's errors, and rows that do not decode)."""
        with self._lock:
            self._check_open()
            try:
                yield self._conn
            except sqlite3.DatabaseError as exc:
                raise file_error(self.path, exc) from None
            except DecodeError as exc:
                raise LogFileError(self.path, f"is damaged: {exc}") from None

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        """A write transaction on this log's connection (the caller holds the lock)."""
        return transaction(self._conn)

    def _refresh_head(self) -> None:
        row = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()
        self._head = row[0] if row[0] is not None else self.base_seq
