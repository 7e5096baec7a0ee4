"""The SQLite event log: one file holds meta, events and snapshots.

Rules this module never breaks:

- ``seq`` starts at 1 (or right after the file's base snapshot) and never has holes.
- A batch is validated whole before anything is written, and written in one transaction: it
  is all there after a crash or not at all.
- An operation whose ``op_id`` is already in the log is not appended again; its original seq is
  returned instead.
- A reader (another connection, another process) never blocks the writer: the file is in WAL
  mode. A reader opened with ``pin=True`` sees the file as it was when it opened, however long
  it reads (one read transaction).
- One writer per file: a writable open takes an exclusive lock on ``PATH.lock`` (see
  `eventlog.lockfile`) and a second writer is refused with a line naming the first.
- A full resync never overwrites the events of another log (or more events of this one than the
  controller has): the old file is set aside under a name that says what it holds.
- A file knows whose it is (``role`` in meta: ``controller`` or ``replica``), so a node cannot
  take over the controller's log and a controller cannot silently start from a replica.

`EventLog` is this module's class; its methods live in layers, one module per job (see
`eventlog.store_core` for how they stack):

- ``store.py`` (here): opening and closing, the open-time checks, meta the log can change
  (role, time zone), the file's identity, copies, and a replica's full resync (`reset`).
- ``store_core.py``: the fields every layer shares, the guarded read, the write transaction.
- ``store_read.py``: every query. ``store_write.py``: the appends and snapshots.
- ``store_schema.py``: the tables, migrations and meta. ``store_rows.py``: event <-> row.
- ``store_file.py``: connecting, error messages, integrity checks, files beside the log.

sqlite-utils builds and inspects the schema (``store_schema``), where spelling the DDL by hand
would buy nothing; everything that runs per event or per read uses the ``sqlite3`` connection
directly (``executemany`` for appends, cursors for reads), where sqlite-utils' dict rows and
its own commits would cost time and control. Clocks and log ids can be injected for tests.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from eventlog.errors import LogFileError, UsageError
from eventlog.lockfile import WriterLock
from eventlog.logctx import ComponentLog
from eventlog.showtz import local_zone_name
from eventlog.snapshot import Snapshot, restore
from eventlog.state import State
from eventlog.store_file import (
    SYNCHRONOUS,
    Synchronous,
    check_integrity,
    connect,
    damaged,
    file_error,
    free_name,
    ident,
    orphans_aside,
    remove,
    stamp,
    swap,
)
from eventlog.store_rows import NOT_RECORDED
from eventlog.store_schema import ROLES, SCHEMA_VERSION, NewLog, Role, create, load, write_meta
from eventlog.store_write import AppendResult, LogWrites

__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "NOT_RECORDED",
    "ROLES",
    "SCHEMA_VERSION",
    "AppendResult",
    "EventLog",
    "Role",
    "Synchronous",
]

log = ComponentLog("cuelog.store")

DEFAULT_SNAPSHOT_EVERY: Final = 1000


class EventLog(LogWrites):
    """A cuelog log file (or ``:memory:``). Thread-safe: one lock serialises its calls.

    Open it with `EventLog.open`. A writable log keeps the current `state` in memory (rebuilt
    on open from the newest snapshot plus the tail) so appends can take automatic snapshots.
    """

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        readonly: bool = False,
        synchronous: Synchronous = "FULL",
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        clock: Callable[[], float] = time.time,
        log_id: str | None = None,
        role: Role | None = None,
        owner: Mapping[str, Any] | None = None,
        check: bool = False,
        pin: bool = False,
    ) -> EventLog:
        """Open (or create) a log file.

        Raises `LogFileError` naming the file when it is missing (and ``create`` is false), not
        a cuelog log, written by a newer cuelog, damaged, or held by another writer. An older
        schema is migrated.

        A writable open holds the file's writer lock until `close` (``owner`` says who holds
        it, for the refusal a second writer gets). ``role`` refuses a file that belongs to the
        other kind of process (and is stamped into a new file or one that has none).
        ``check`` verifies the whole file first (SQLite's quick check of every page, gapless
        seqs, the newest snapshot against its digest): a damaged file is refused with a line
        that says how to rebuild it. ``pin`` (read-only) makes every reading of this handle
        see the file as it was at open, while a writer goes on appending.
        """
        spath = os.fspath(path)
        if synchronous not in SYNCHRONOUS:
            raise UsageError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        if snapshot_every < 1:
            raise UsageError("snapshot_every must be at least 1")
        if role is not None and role not in ROLES:
            raise UsageError(f"role must be one of {ROLES}, not {role!r}")
        memory = spath == ":memory:"
        if not memory:
            exists = os.path.exists(spath)
            if os.path.isdir(spath):
                raise LogFileError(spath, "is a directory, not a log file")
            if not exists and (readonly or not create):
                raise LogFileError(spath, "no such log file (check the path)")
        lock = None
        if not memory and not readonly:
            if not os.path.isdir(os.path.dirname(os.path.abspath(spath))):
                raise LogFileError(spath, "cannot be opened: its folder does not exist")
            lock = WriterLock.acquire(spath, owner)
            if not os.path.exists(spath):
                orphans_aside(spath, clock())
        try:
            conn = connect(spath, readonly and not memory)
        except sqlite3.Error as exc:
            if lock is not None:
                lock.release()
            raise LogFileError(spath, f"cannot be opened: {exc}") from None
        self = cls(
            conn,
            spath,
            readonly=readonly and not memory,
            snapshot_every=snapshot_every,
            clock=clock,
        )
        self._writer_lock = lock
        self._want_role = role
        try:
            if pin and self.readonly:
                # one read transaction for the life of this handle: WAL gives it the file as
                # of its first read, whatever the writer appends meanwhile
                conn.execute("BEGIN")
            self._setup(synchronous, create, log_id)
            if check:
                self._check_whole()
            self._note_ident()
        except LogFileError:
            self._abandon()
            raise
        except sqlite3.DatabaseError as exc:
            self._abandon()
            raise file_error(spath, exc, self.role) from None
        return self

    def _setup(self, synchronous: Synchronous, create: bool, log_id: str | None) -> None:
        """Read (or make, or migrate) the file's schema and meta on a new connection, set the
        connection up, check the role, and rebuild the state a writable log keeps."""
        conn = self._conn
        self._synchronous = synchronous
        meta = load(
            conn,
            self.path,
            readonly=self.readonly,
            new=None
            if self.readonly or not create
            else lambda: self._new_log(log_id, self._want_role),
        )
        if not self.readonly:
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.log_id = meta.log_id
        self.base_seq = meta.base_seq
        self.created = meta.created
        self.role = meta.role
        self.show_tz = meta.tz
        self.epoch = meta.epoch
        self.noops_from = meta.noops_from
        self._refresh_head()
        self._check_role()
        if not self.readonly:
            self._rebuild_state()

    def _new_log(self, log_id: str | None, role: Role | None) -> NewLog:
        """What a new file made now is stamped with (a fresh log id unless one is given)."""
        return NewLog(log_id or str(uuid.uuid4()), self._clock(), local_zone_name(), role)

    def _check_role(self) -> None:
        want, have = self._want_role, self.role
        if want is None or want == have:
            return
        if have == "replica":
            raise LogFileError(
                self.path,
                f"is a node's replica of log {self.log_id} (up to seq {self._head}), not a "
                "controller's log: a controller never takes a replica file over; to make a "
                f"controller's log from it run `cuelog rebuild --from {self.path} --db NEW.db`",
            )
        if have == "controller":
            raise LogFileError(
                self.path,
                f"is a controller's log (log {self.log_id}), not a node replica: give each "
                "node a --db file of its own",
            )
        if have is not None:
            raise LogFileError(self.path, f"is damaged: its meta names an unknown role {have!r}")
        if not self.readonly:
            self._set_meta("role", want)
            self.role = want

    def _check_whole(self) -> None:
        """``check=True``: the whole file is sound, and the state rebuilt at open is the state
        at the head."""
        check_integrity(
            self._conn,
            self.path,
            self.role,
            base_seq=self.base_seq,
            head=self._head,
            latest_snapshot=self.latest_snapshot,
        )
        state = self._state
        if state is not None and state.seq != self._head:
            raise damaged(
                self.path,
                self.role,
                f"its state folds to seq {state.seq}, its head is {self._head}",
            )

    # ------------------------------------------------------------------ meta the log can change

    def set_show_tz(self, name: str) -> None:
        """Record the show's time zone (a replica takes its controller's)."""
        with self._lock:
            self._check_open()
            if self.readonly or name == self.show_tz or not 0 < len(name) <= 64:
                return
            self._set_meta("tz", name)
            self.show_tz = name

    def set_epoch(self, epoch: int) -> None:
        """Record the highest controller epoch seen (it only goes up; a replica refuses any
        frame of an older one, also after a restart)."""
        with self._lock:
            self._check_open()
            if self.readonly or epoch <= self.epoch:
                return
            self._set_meta("epoch", str(epoch))
            self.epoch = epoch

    def set_role(self, role: Role) -> None:
        """Mark the file as a `role` log, whatever it was (`cuelog rebuild` makes a copy of a
        node's replica the controller's log)."""
        if role not in ROLES:
            raise UsageError(f"role must be one of {ROLES}, not {role!r}")
        with self._lock:
            self._check_writable()
            self._set_meta("role", role)
            self.role = role

    def _set_meta(self, key: str, value: str) -> None:
        with self._transaction():
            write_meta(self._conn, {key: value})

    # ------------------------------------------------------------------ closing

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._abandon()

    def _abandon(self) -> None:
        """Close the connection and let go of the writer lock (a failed open, or `close`)."""
        self._closed = True
        self._conn.close()
        if self._writer_lock is not None:
            self._writer_lock.release()

    # ------------------------------------------------------------------ the file itself

    def _note_ident(self) -> None:
        if self.readonly or self.path == ":memory:":
            return
        self._ident = ident(self.path)
        self._wal_ident = ident(self.path + "-wal")

    def check_file(self) -> None:
        """Raise `LogFileError` if the path no longer names the file this log writes: it was
        deleted, or replaced by another file (or its write-ahead log was). Cheap (two stats):
        a controller calls it before acknowledging any commit."""
        if self._ident is None:
            return
        now = ident(self.path)
        if now != self._ident:
            what = "deleted" if now is None else "replaced by another file"
            raise LogFileError(self.path, f"was {what} while this process was writing it")
        if self._wal_ident is not None:
            wal = ident(self.path + "-wal")
            if wal != self._wal_ident:
                what = "deleted" if wal is None else "replaced by another file"
                raise LogFileError(
                    self.path,
                    f"its write-ahead log {self.path}-wal was {what} while this process was "
                    "writing it",
                )

    def save_copy(self, dest: str | os.PathLike[str]) -> None:
        """Copy the log as this handle sees it (even if its path was deleted) to `dest`, a new
        file, through SQLite's online backup: consistent, whatever is being appended."""
        target = os.fspath(dest)
        if os.path.exists(target):
            raise UsageError(f"{target} exists: not overwriting it")
        with self._lock:
            self._check_open()
            try:
                out = sqlite3.connect(target)
                try:
                    self._conn.backup(out)
                finally:
                    out.close()
            except sqlite3.Error as exc:
                raise LogFileError(target, f"cannot be written: {exc}") from None

    # ------------------------------------------------------------------ an old leader's tail

    def rewind(self, seq: int) -> bool:
        """Cut the events after `seq` (an old leader's tail that a new leader never had).

        Nothing is thrown away: the whole file is first copied (SQLite's online backup) to
        ``PATH.log-<log id>.upto-<head>.<time>``, which `replay` reads; that name goes into
        `set_aside`. The file then holds the log up to `seq` and continues from there,
        keeping its history (a full resync would keep a snapshot only). False, and nothing
        done, when `seq` is before the file's base (only a full resync can help then)."""
        with self._lock:
            self._check_writable()
            if seq >= self._head:
                return True
            if seq < self.base_seq:
                return False
            aside = None
            if self.path != ":memory:":
                aside = free_name(
                    f"{self.path}.log-{self.log_id}.upto-{self._head}.{stamp(self._clock())}"
                )
                # copied under a name that says it is partial, renamed once whole: a crash in
                # the middle leaves a ``.part`` file, never a half copy under the real name
                part = f"{aside}.part"
                for stale in glob.glob(f"{glob.escape(self.path)}.log-*.part*"):
                    remove(stale)  # a copy a kill cut short before (partial by its name)
                self.save_copy(part)
                try:
                    os.replace(part, aside)
                except OSError as exc:
                    raise LogFileError(aside, f"cannot be written: {exc.strerror}") from None
            old_head = self._head
            try:
                with self._writing():
                    self._conn.execute("DELETE FROM events WHERE seq > ?", (seq,))
                    self._conn.execute("DELETE FROM snapshots WHERE seq > ?", (seq,))
            except sqlite3.DatabaseError as exc:
                raise file_error(self.path, exc, self.role) from None
            self._refresh_head()
            self._rebuild_state()
            self.set_aside = aside
            log.warning(
                "%s: events %d-%d (an old leader's tail, never acknowledged) cut; the whole "
                "file was kept as %s",
                self.path,
                seq + 1,
                old_head,
                aside,
            )
            return True

    # ------------------------------------------------------------------ a replica's full resync

    def reset(self, log_id: str, snapshot: Snapshot | None) -> None:
        """Start over as a replica of `log_id` at `snapshot` (a full resync).

        Afterwards the file holds that snapshot as its base and continues with the events
        after it. Events the controller may not have are never thrown away: if the file holds
        another log, or this log further than `snapshot` (or at all, with no snapshot: the
        controller is behind it), the file is first set aside as
        ``PATH.log-<log id>.upto-<seq>.<time>`` (that name goes into `set_aside`, None when
        nothing needed keeping) and a fresh file is made at the path.
        """
        with self._lock:
            self._check_writable()
            state = restore(snapshot) if snapshot is not None else State()
            keep = self._head > 0 and (
                log_id != self.log_id or snapshot is None or state.seq < self._head
            )
            aside = self.set_aside = None
            if keep and self.path != ":memory:":
                old_log, old_head = self.log_id, self._head
                aside = self.set_aside = self._move_aside(log_id)
                log.warning(
                    "replica file %s held log %s up to seq %d: set aside as %s (never "
                    "overwritten); starting a fresh replica of log %s",
                    self.path,
                    old_log,
                    old_head,
                    aside,
                    log_id,
                )
            try:
                with self._writing():
                    self._conn.execute("DELETE FROM events")
                    self._conn.execute("DELETE FROM snapshots")
                    if snapshot is not None:
                        self._write_snapshot(snapshot)
                    fresh = {"log_id": log_id, "base_seq": str(state.seq)}
                    if self.epoch:  # a file set aside took its meta along: keep the fence
                        fresh["epoch"] = str(self.epoch)
                    write_meta(self._conn, fresh)
            except sqlite3.DatabaseError as exc:
                raise file_error(self.path, exc, self.role) from None
            self.log_id = log_id
            self.base_seq = state.seq
            self._head = state.seq
            self._state = state
            self._last_snapshot_seq = state.seq

    def _move_aside(self, log_id: str) -> str:
        """Rename the file (and its WAL) out of the way and put a fresh, empty one for `log_id`
        at the path. The fresh file is made first, under another name: a full disk fails there,
        with the old file untouched and still open. The writer lock, on the path, stays held."""
        aside = free_name(f"{self.path}.log-{self.log_id}.upto-{self._head}.{stamp(self._clock())}")
        fresh = f"{self.path}.fresh-{os.getpid()}"
        self._make_fresh(fresh, log_id)
        # the last connection closing folds the WAL into the file (unless a reader elsewhere
        # holds it open: then the WAL moves along with the file, which still reads whole)
        self._conn.close()
        try:
            swap(self.path, aside, fresh)
        except OSError as exc:
            self._reconnect()
            raise LogFileError(
                self.path, f"could not be set aside as {aside}: {exc.strerror}"
            ) from None
        self._reconnect()
        return aside

    def _make_fresh(self, fresh: str, log_id: str) -> None:
        """An empty log for `log_id` with this log's role, closed, at the path `fresh`."""
        remove(fresh)
        try:
            conn = connect(fresh, False)
            try:
                create(conn, self._new_log(log_id, self._want_role or cast(Role | None, self.role)))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            remove(fresh)
            raise LogFileError(self.path, f"cannot make a fresh replica file: {exc}") from None

    def _reconnect(self) -> None:
        """Open the path again after `_move_aside` closed it. If even that fails the log is
        closed (and its writer lock released): open it again later."""
        try:
            self._conn = connect(self.path, False)
            self._setup(self._synchronous, False, None)
        except (sqlite3.Error, LogFileError) as exc:
            self._abandon()
            raise LogFileError(self.path, f"cannot be opened again: {exc}") from None
        self._note_ident()
