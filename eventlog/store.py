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

Schema and queries go through sqlite-utils; the append path uses the connection directly.
Clocks and log ids can be injected for tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

import sqlite_utils

from eventlog.errors import DecodeError, LogFileError, UsageError, ValidationError
from eventlog.event import Event, dumps, loads
from eventlog.lockfile import WriterLock
from eventlog.operation import (
    ActionType,
    Operation,
    OperationType,
    OpId,
    Submission,
    validate_operation,
    validate_submission,
)
from eventlog.reducer import apply
from eventlog.showtz import local_zone_name
from eventlog.snapshot import Snapshot, restore, take
from eventlog.state import State

log = logging.getLogger("cuelog.store")

APP: Final = "cuelog"
SCHEMA_VERSION: Final = 3
DEFAULT_SNAPSHOT_EVERY: Final = 1000
_MAX_PARAMS: Final = 900
#: rows fetched at a time by `EventLog.read_rows` when it reads up to a size
_READ_BATCH: Final = 256
_TYPES: Final = {t.value: t for t in OperationType}
_ACTIONS: Final = {a.value: a for a in ActionType}
_EVENT_COLUMNS: Final = "seq, ts, type, action, sender, target, data, origin, origin_seq"
#: what appends write: the event, and why the reducer recorded it as a no-op (NULL: applied;
#: schema 3 on; older rows say NULL too, see `EventLog.records_noops`)
_WRITE_COLUMNS: Final = _EVENT_COLUMNS + ", noop"
#: `EventLog.events_where`'s reason for a row written before reasons were recorded
NOT_RECORDED: Final = "(not recorded: the file predates recorded reasons)"
_INSERT_EVENTS: Final = f"INSERT INTO events ({_WRITE_COLUMNS}) VALUES ({', '.join('?' * 10)})"

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
#: what a log file is for: the controller's log, or a node's replica of one
Role = Literal["controller", "replica"]
ROLES: Final = ("controller", "replica")


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What `EventLog.append_batch` did.

    ``seqs[i]`` is the seq of the i-th submitted operation (its original seq when it was a
    duplicate); ``events`` are the events this call appended, in order, and ``reasons[j]`` is
    why ``events[j]`` was a recorded no-op (``None`` when the reducer applied it).
    """

    seqs: list[int]
    events: list[Event]
    reasons: list[str | None]

    @property
    def duplicates(self) -> int:
        return len(self.seqs) - len(self.events)


def _row_to_event(row: Sequence[Any], log_id: str) -> Event:
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


def _event_to_row(event: Event, noop: str | None = None) -> tuple[Any, ...]:
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


def _connect(path: str, readonly: bool) -> sqlite3.Connection:
    if path == ":memory:":
        return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    if readonly:
        uri = Path(path).absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10
        )
        try:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError as exc:
            wal = Path(path + "-wal")
            if ("readonly" in str(exc) or "unable to open" in str(exc)) and (
                not wal.exists() or wal.stat().st_size == 0
            ):
                # a WAL-mode copy in a folder this user cannot write (evidence on read-only
                # media): SQLite cannot make its -shm file there. With no WAL content to
                # read, the file alone is the whole log: read it as immutable
                conn.close()
                return sqlite3.connect(
                    uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False
                )
        except sqlite3.DatabaseError:
            pass  # not a database: said properly by the caller's first real read
        return conn
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)


class EventLog:
    """A cuelog log file (or ``:memory:``). Thread-safe: one lock serialises its calls.

    Open it with `EventLog.open`. A writable log keeps the current `state` in memory (rebuilt
    on open from the newest snapshot plus the tail) so appends can take automatic snapshots.
    """

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
        self._db = sqlite_utils.Database(conn)
        self.path = path
        self.readonly = readonly
        self.snapshot_every = snapshot_every
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        self.log_id = ""
        self.base_seq = 0
        self.created = 0.0
        self._head = 0
        self._state: State | None = None
        self._last_snapshot_seq = 0
        self._local_seq = 0
        self._synchronous: Synchronous = "FULL"
        #: the role this opener asked for (stamped into a file that has none)
        self._want_role: Role | None = None
        #: the role the file's meta gives (None for a file from before roles)
        self.role: str | None = None
        self._writer_lock: WriterLock | None = None
        #: (st_dev, st_ino) of the file and its write-ahead log as opened (writable opens)
        self._ident: tuple[int, int] | None = None
        self._wal_ident: tuple[int, int] | None = None
        #: where the last `reset` put the file it replaced (None: it kept nothing)
        self.set_aside: str | None = None

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
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
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
                _orphans_aside(spath, clock())
        try:
            conn = _connect(spath, readonly and not memory)
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
                self._check_integrity()
                if self._state is not None:
                    self._check_state()
            self._note_ident()
        except LogFileError:
            self._abandon()
            raise
        except sqlite3.DatabaseError as exc:
            self._abandon()
            raise _file_error(spath, exc, self.role) from None
        return self

    def _abandon(self) -> None:
        self._closed = True
        self._conn.close()
        if self._writer_lock is not None:
            self._writer_lock.release()

    def _setup(self, synchronous: Synchronous, create: bool, log_id: str | None) -> None:
        conn = self._conn
        self._synchronous = synchronous
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            if self.readonly or not create:
                raise LogFileError(self.path, "is empty, not a cuelog log")
            conn.execute("PRAGMA journal_mode = WAL")
            self._create_schema(log_id)
        elif "meta" not in tables:
            raise LogFileError(
                self.path, "is a SQLite database but not a cuelog log (it has no cuelog meta table)"
            )
        meta = {row[0]: row[1] for row in conn.execute("SELECT key, value FROM meta")}
        if meta.get("app") != APP:
            raise LogFileError(
                self.path,
                f"is a SQLite database but not a cuelog log (meta says app={meta.get('app')!r})",
            )
        try:
            version = int(meta.get("schema_version", "x"))
        except ValueError:
            raise LogFileError(self.path, "is damaged: its schema version is unreadable") from None
        if version > SCHEMA_VERSION:
            raise LogFileError(
                self.path,
                f"was written by a newer cuelog (log schema {version}, "
                f"this cuelog reads up to {SCHEMA_VERSION}): upgrade cuelog",
            )
        if not meta.get("log_id"):
            raise LogFileError(self.path, "is damaged: its meta has no log_id")
        if version < SCHEMA_VERSION and not (self.readonly and version >= 2):
            # schema 2 is read as it is (replay of an older copy); older ones need migrating
            if self.readonly:
                raise LogFileError(
                    self.path,
                    f"has the old log schema {version}; open it once "
                    "read-write (or run a controller on it) to migrate it",
                )
            self._migrate(version)
            meta = {row[0]: row[1] for row in conn.execute("SELECT key, value FROM meta")}
        if not self.readonly:
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.log_id = meta["log_id"]
        self.base_seq = int(meta.get("base_seq", "0"))
        self.created = float(meta.get("created", "0"))
        self.role = meta.get("role")
        #: the show's time zone (`eventlog.showtz`), recorded when the log was made; None for
        #: a file from before zones were recorded
        self.show_tz: str | None = meta.get("tz")
        #: the first seq whose row says why the reducer made it a no-op (``noop``); None when
        #: the file records none (schema 2, read as it is)
        self.noops_from: int | None = None
        if version >= 3:
            self.noops_from = int(meta.get("noops_from", "1"))
        self._refresh_head()
        self._check_role()
        if not self.readonly:
            self._rebuild_state()

    def set_show_tz(self, name: str) -> None:
        """Record the show's time zone (a replica takes its controller's)."""
        with self._lock:
            self._check_open()
            if self.readonly or name == self.show_tz or not 0 < len(name) <= 64:
                return
            with self._transaction():
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('tz', ?)", (name,)
                )
            self.show_tz = name

    def set_role(self, role: Role) -> None:
        """Mark the file as a `role` log, whatever it was (`cuelog rebuild` makes a copy of a
        node's replica the controller's log)."""
        if role not in ROLES:
            raise UsageError(f"role must be one of {ROLES}, not {role!r}")
        with self._lock:
            self._check_open()
            if self.readonly:
                raise UsageError(f"log {self.path} is open read-only")
            with self._transaction():
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('role', ?)", (role,)
                )
            self.role = role

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
            with self._transaction():
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('role', ?)", (want,)
                )
            self.role = want

    def _create_schema(self, log_id: str | None) -> None:
        db = self._db
        with self._transaction():
            db.table("meta").create({"key": str, "value": str}, pk="key")
            self._create_v1_events()
            self._create_v2_parts()
            self._create_v3_parts()
            db.table("meta").insert_all(
                [
                    {"key": "app", "value": APP},
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "log_id", "value": log_id or str(uuid.uuid4())},
                    {"key": "created", "value": repr(self._clock())},
                    {"key": "base_seq", "value": "0"},
                    {"key": "tz", "value": local_zone_name()},
                    *([{"key": "role", "value": self._want_role}] if self._want_role else []),
                ]
            )

    def _create_v1_events(self) -> None:
        table = self._db.table("events")
        table.create(
            {
                "seq": int,
                "ts": float,
                "type": str,
                "action": str,
                "sender": str,
                "target": str,
                "data": str,
                "origin": str,
                "origin_seq": int,
            },
            pk="seq",
            not_null={"ts", "type", "action", "sender", "target", "origin", "origin_seq"},
        )
        table.create_index(["origin", "origin_seq"], index_name="events_op_id", unique=True)

    def _create_v2_parts(self) -> None:
        self._db.table("snapshots").create(
            {"seq": int, "ts": float, "digest": str, "state": str},
            pk="seq",
            not_null={"ts", "digest", "state"},
        )
        self._db.table("events").create_index(["ts"], index_name="events_ts")

    def _create_v3_parts(self) -> None:
        self._conn.execute("ALTER TABLE events ADD COLUMN noop TEXT")

    def _migrate(self, version: int) -> None:
        log.info("migrating %s from log schema %d to %d", self.path, version, SCHEMA_VERSION)
        with self._transaction():
            if version < 2:
                self._create_v2_parts()
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('base_seq', '0')"
                )
            if version < 3:
                self._create_v3_parts()
                last = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('noops_from', ?)",
                    (str((last or 0) + 1),),
                )
            self._conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )

    # ------------------------------------------------------------------ basics

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
                if self._writer_lock is not None:
                    self._writer_lock.release()

    # ------------------------------------------------------------------ the file itself

    def _damaged(self, detail: str) -> LogFileError:
        hint = _repair_hint(self.path, self.role)
        return LogFileError(self.path, f"is damaged ({detail}); {hint}")

    def _check_integrity(self) -> None:
        """Refuse a damaged file: every page (SQLite's quick check), gapless seqs, the newest
        snapshot against its digest. About 0.5 s for a 1,000,000-event log in the page cache."""
        if self.path == ":memory:":
            return
        _read_through(self.path)
        conn = self._conn
        try:
            rows = conn.execute("PRAGMA quick_check(20)").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(f"SQLite's quick check of its pages failed: {exc}") from None
        problems = [str(row[0]) for row in rows if row[0] != "ok"]
        if problems:
            more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
            raise self._damaged(f"SQLite's quick check of its pages: {problems[0]}{more}")
        try:
            count, low, high = conn.execute(
                "SELECT COUNT(*), MIN(seq), MAX(seq) FROM events"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._damaged(f"its events cannot be counted: {exc}") from None
        if count and (low != self.base_seq + 1 or high - low + 1 != count):
            raise self._damaged(
                f"it holds {count} events between seq {low} and {high}, where seqs "
                f"{self.base_seq + 1}..{high} should all be"
            )
        snap = self.latest_snapshot()
        if snap is not None:
            if snap.seq > self._head or snap.seq < self.base_seq:
                raise self._damaged(
                    f"its newest snapshot is at seq {snap.seq}, outside its events "
                    f"{self.base_seq}..{self._head}"
                )
            try:
                restore(snap)
            except DecodeError as exc:
                raise self._damaged(str(exc)) from None
        elif self.base_seq:
            raise self._damaged(f"it starts after seq {self.base_seq} but has no snapshot there")

    def page_problems(self, limit: int = 20) -> list[str]:
        """What SQLite's quick check finds wrong with the file's pages (torn or overwritten
        pages, broken indexes): empty when every page is sound. Reads every page."""
        if self.path == ":memory:":
            return []
        with self._lock:
            self._check_open()
            try:
                rows = self._conn.execute(f"PRAGMA quick_check({int(limit)})").fetchall()
            except sqlite3.DatabaseError as exc:
                return [f"SQLite's quick check of its pages failed: {exc}"]
        return [f"SQLite's page check: {row[0]}" for row in rows if row[0] != "ok"]

    def _check_state(self) -> None:
        """The state rebuilt at open must be the state at the head."""
        state = self._state
        if state is not None and state.seq != self._head:
            raise self._damaged(f"its state folds to seq {state.seq}, its head is {self._head}")

    def _note_ident(self) -> None:
        if self.readonly or self.path == ":memory:":
            return
        self._ident = _ident(self.path)
        self._wal_ident = _ident(self.path + "-wal")

    def check_file(self) -> None:
        """Raise `LogFileError` if the path no longer names the file this log writes: it was
        deleted, or replaced by another file (or its write-ahead log was). Cheap (two stats):
        a controller calls it before acknowledging any commit."""
        if self._ident is None:
            return
        now = _ident(self.path)
        if now != self._ident:
            what = "deleted" if now is None else "replaced by another file"
            raise LogFileError(self.path, f"was {what} while this process was writing it")
        if self._wal_ident is not None:
            wal = _ident(self.path + "-wal")
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

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"log {self.path} is closed")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def _refresh_head(self) -> None:
        row = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()
        self._head = row[0] if row[0] is not None else self.base_seq

    @property
    def head(self) -> int:
        """The last seq in the log (0 for an empty log). Re-read for read-only opens."""
        with self._lock:
            self._check_open()
            if self.readonly:
                try:
                    self._refresh_head()
                except sqlite3.DatabaseError as exc:
                    raise _file_error(self.path, exc) from None
            return self._head

    @property
    def state(self) -> State:
        """The current state (writable logs keep it; read-only logs fold it on demand)."""
        with self._lock:
            if self._state is None:
                return self.state_at(self.head)
            return self._state

    def _rebuild_state(self) -> None:
        self._state = self._fold_to(self._head)
        snap = self.latest_snapshot()
        self._last_snapshot_seq = snap.seq if snap else 0

    # ------------------------------------------------------------------ appending

    def append(
        self, op: Operation | Mapping[str, Any] | Submission, op_id: OpId | None = None
    ) -> int:
        """Append one operation; return its seq. See `append_batch`."""
        item: Submission | Mapping[str, Any] | Operation
        if isinstance(op, Submission):
            if op_id is not None:
                raise UsageError("give the op_id inside the Submission or as op_id, not both")
            item = op
        elif op_id is not None:
            item = Submission(validate_operation(op), op_id)
        else:
            item = op
        return self.append_batch([item]).seqs[0]

    def append_batch(
        self,
        items: Sequence[Submission | Operation | Mapping[str, Any]],
        *,
        validated: bool = False,
    ) -> AppendResult:
        """Validate, deduplicate by op_id and append `items` in one durable transaction.

        Items may be `Submission`s, bare `Operation`s or wire dicts (with an optional
        ``op_id``). If any item is invalid, `ValidationError` is raised (its ``index`` attribute
        says which) and nothing is written. Operations without an op_id get one from this log.

        ``validated=True`` skips validation for `Submission`s the caller has just made with
        `validate_submission` (the controller validates each op once, outside the log's lock).
        """
        subs: list[Submission] = []
        if validated and all(type(item) is Submission for item in items):
            subs = [cast(Submission, item) for item in items]
        else:
            for index, item in enumerate(items):
                try:
                    if isinstance(item, Operation):
                        item = Submission(item)
                    subs.append(validate_submission(item))
                except ValidationError as exc:
                    exc.index = index
                    raise
        with self._lock:
            self._check_open()
            if self.readonly:
                raise UsageError(f"log {self.path} is open read-only")
            if not subs:
                return AppendResult([], [], [])
            try:
                return self._append_locked(subs)
            except sqlite3.DatabaseError as exc:
                raise _file_error(self.path, exc) from None

    def _existing(self, subs: Sequence[Submission]) -> dict[tuple[str, int], int]:
        """Seqs of the op_ids in `subs` that are already in the log: one query per chunk."""
        keys = [(sub.op_id.origin, sub.op_id.origin_seq) for sub in subs if sub.op_id is not None]
        found: dict[tuple[str, int], int] = {}
        step = _MAX_PARAMS // 2
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            marks = ",".join(["(?, ?)"] * len(chunk))
            params = [part for key in chunk for part in key]
            rows = self._conn.execute(
                f"SELECT e.origin, e.origin_seq, e.seq FROM (VALUES {marks}) AS v "
                "JOIN events AS e ON e.origin = v.column1 AND e.origin_seq = v.column2",
                params,
            )
            for origin, origin_seq, seq in rows:
                found[(origin, origin_seq)] = seq
        return found

    def _append_locked(self, subs: Sequence[Submission]) -> AppendResult:
        assert self._state is not None
        ts = self._clock()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = self._existing(subs)
            seqs: list[int] = []
            events: list[Event] = []
            reasons: list[str | None] = []
            snapped = False
            head = self._head
            for sub in subs:
                op_id = sub.op_id
                if op_id is not None:
                    key = (op_id.origin, op_id.origin_seq)
                    if key in known:
                        seqs.append(known[key])
                        continue
                    head += 1
                    known[key] = head
                else:
                    head += 1
                    op_id = OpId("~" + self.log_id, head)
                event = Event(head, ts, self.log_id, sub.op, op_id)
                events.append(event)
                seqs.append(head)
            if events:
                reasons, snapped = self._write_events(events, ts)
            conn.execute("COMMIT")
        except BaseException:
            self._recover_after_failure()
            raise
        self._head = head
        if snapped:
            self._last_snapshot_seq = head
        return AppendResult(seqs, events, reasons)

    def _write_events(self, events: Sequence[Event], ts: float) -> tuple[list[str | None], bool]:
        """The one write path of both appends (inside the caller's transaction): fold the
        events into the state (so each row records why it was a no-op), insert them, and
        take a snapshot when one is due. Returns the reasons and whether it snapshotted. On
        any failure the caller rolls back and `_recover_after_failure` rebuilds the state."""
        state = self._state
        assert state is not None
        reasons = [apply(state, event) for event in events]
        self._conn.executemany(
            _INSERT_EVENTS, [_event_to_row(e, r) for e, r in zip(events, reasons, strict=True)]
        )
        if state.seq - self._last_snapshot_seq >= self.snapshot_every:
            self._write_snapshot(take(state, ts))
            return reasons, True
        return reasons, False

    def _recover_after_failure(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._refresh_head()
            self._rebuild_state()
        except sqlite3.Error as exc:
            log.error("could not re-read %s after a failed write: %s", self.path, exc)

    def _write_snapshot(self, snap: Snapshot) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO snapshots (seq, ts, digest, state) VALUES (?, ?, ?, ?)",
            (snap.seq, snap.ts, snap.digest, snap.state.decode()),
        )

    def snapshot_now(self) -> Snapshot:
        """The current state as a `Snapshot` (encoded under the log's lock, so it is the state
        at exactly one seq even while another thread appends). Not stored."""
        with self._lock:
            self._check_open()
            if self._state is None:
                return take(self.state_at(self.head), self._clock())
            return take(self._state, self._clock())

    def write_snapshot(self) -> Snapshot:
        """Take a snapshot of the current state now and store it."""
        with self._lock:
            self._check_open()
            if self.readonly or self._state is None:
                raise UsageError(f"log {self.path} is open read-only")
            snap = take(self._state, self._clock())
            with self._transaction():
                self._write_snapshot(snap)
            self._last_snapshot_seq = snap.seq
            return snap

    # ------------------------------------------------------------------ replica side

    def append_events(self, events: Sequence[Event]) -> list[str | None]:
        """Store events made by another log (a replica following its controller).

        They must carry this log's id and continue its sequence without a hole. Returns, for
        each event, why the reducer treated it as a no-op (``None`` when applied).
        """
        with self._lock:
            self._check_open()
            if self.readonly or self._state is None:
                raise UsageError(f"log {self.path} is open read-only")
            if not events:
                return []
            expected = self._head + 1
            for event in events:
                if event.log_id != self.log_id:
                    raise UsageError(
                        f"event {event.seq} is from log {event.log_id}, "
                        f"this file holds log {self.log_id}"
                    )
                if event.seq != expected:
                    raise UsageError(f"event {event.seq} does not follow seq {expected - 1}")
                expected += 1
            try:
                with self._transaction():
                    reasons, snapped = self._write_events(events, events[-1].ts)
                    if snapped:
                        self._last_snapshot_seq = events[-1].seq
            except sqlite3.DatabaseError as exc:
                self._recover_after_failure()
                raise _file_error(self.path, exc, self.role) from None
            except BaseException:
                self._recover_after_failure()
                raise
            self._head = events[-1].seq
            return reasons

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
            self._check_open()
            if self.readonly:
                raise UsageError(f"log {self.path} is open read-only")
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
                with self._transaction():
                    self._conn.execute("DELETE FROM events")
                    self._conn.execute("DELETE FROM snapshots")
                    if snapshot is not None:
                        self._write_snapshot(snapshot)
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [("log_id", log_id), ("base_seq", str(state.seq))],
                    )
            except sqlite3.DatabaseError as exc:
                self._recover_after_failure()
                raise _file_error(self.path, exc, self.role) from None
            self.log_id = log_id
            self.base_seq = state.seq
            self._head = state.seq
            self._state = state
            self._last_snapshot_seq = state.seq

    def _move_aside(self, log_id: str) -> str:
        """Rename the file (and its WAL) out of the way and put a fresh, empty one for `log_id`
        at the path. The fresh file is made first, under another name: a full disk fails there,
        with the old file untouched and still open. The writer lock, on the path, stays held."""
        stamp = dt.datetime.fromtimestamp(self._clock()).strftime("%Y%m%dT%H%M%S")
        base = f"{self.path}.log-{self.log_id}.upto-{self._head}.{stamp}"
        aside, n = base, 1
        while any(os.path.exists(aside + suffix) for suffix in _SIDE_FILES):
            n += 1
            aside = f"{base}-{n}"
        fresh = f"{self.path}.fresh-{os.getpid()}"
        self._make_fresh(fresh, log_id)
        # the last connection closing folds the WAL into the file (unless a reader elsewhere
        # holds it open: then the WAL moves along with the file, which still reads whole)
        self._conn.close()
        moved: list[str] = []
        try:
            for suffix in _SIDE_FILES:
                if suffix == "" or os.path.exists(self.path + suffix):
                    os.rename(self.path + suffix, aside + suffix)
                    moved.append(suffix)
            os.rename(fresh, self.path)
        except OSError as exc:
            for suffix in moved:
                with contextlib.suppress(OSError):
                    os.rename(aside + suffix, self.path + suffix)
            _remove(fresh)
            self._reconnect()
            raise LogFileError(
                self.path, f"could not be set aside as {aside}: {exc.strerror}"
            ) from None
        self._reconnect()
        return aside

    def _make_fresh(self, fresh: str, log_id: str) -> None:
        """An empty log for `log_id` with this log's role, closed, at the path `fresh`."""
        _remove(fresh)
        try:
            other = EventLog(
                _connect(fresh, False),
                fresh,
                readonly=False,
                snapshot_every=self.snapshot_every,
                clock=self._clock,
            )
        except sqlite3.Error as exc:
            _remove(fresh)
            raise LogFileError(self.path, f"cannot make a fresh replica file: {exc}") from None
        other._want_role = self._want_role or cast(Role | None, self.role)
        try:
            other._setup(self._synchronous, True, log_id)
        except (sqlite3.Error, LogFileError) as exc:
            other._conn.close()
            _remove(fresh)
            raise LogFileError(self.path, f"cannot make a fresh replica file: {exc}") from None
        other._conn.close()

    def _reconnect(self) -> None:
        """Open the path again after `_move_aside` closed it. If even that fails the log is
        closed (and its writer lock released): open it again later."""
        try:
            self._conn = _connect(self.path, False)
            self._db = sqlite_utils.Database(self._conn)
            self._setup(self._synchronous, False, None)
        except (sqlite3.Error, LogFileError) as exc:
            self._abandon()
            raise LogFileError(self.path, f"cannot be opened again: {exc}") from None
        self._note_ident()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ reading

    def read(
        self, after: int = 0, limit: int | None = None, *, until: int | None = None
    ) -> list[Event]:
        """Events with ``after < seq`` (and ``seq <= until``), in order, at most `limit`."""
        where = [("seq > ?", after)]
        if until is not None:
            where.append(("seq <= ?", until))
        return self._select_where(where, limit)

    def read_time(
        self, since: float | None = None, until: float | None = None, limit: int | None = None
    ) -> list[Event]:
        """Events with ``since <= ts < until`` (either bound optional), in seq order."""
        where: list[tuple[str, Any]] = []
        if since is not None:
            where.append(("ts >= ?", since))
        if until is not None:
            where.append(("ts < ?", until))
        return self._select_where(where, limit)

    def max_origin_seq(self, origin: str) -> int:
        """The highest origin_seq stored for `origin` (0 if none): indexed, cheap."""
        row = self._rows("SELECT MAX(origin_seq) FROM events WHERE origin = ?", (origin,))[0]
        return int(row[0]) if row[0] is not None else 0

    def read_rows(
        self,
        after: int,
        limit: int,
        max_bytes: int | None = None,
        measure: Callable[[Sequence[tuple[Any, ...]]], int] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Raw rows (``seq, ts, type, action, sender, target, data JSON text, origin,
        origin_seq``) after `after`: the cheap path for streaming history to replicas.

        With `max_bytes` and `measure` (the size of a run of rows, by the caller's measure),
        it returns the longest run whose size is at most `max_bytes` (at least one row), and
        reads at most `_READ_BATCH` rows past it: a reply of big events never makes the reader
        hold much more than the reply."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
        if max_bytes is None or measure is None:
            return self._rows(sql, (after, limit))
        rows: list[tuple[Any, ...]] = []
        total = 0
        with self._lock:
            self._check_open()
            try:
                cursor = self._conn.execute(sql, (after, limit))
                try:
                    while batch := cursor.fetchmany(_READ_BATCH):
                        size = measure(batch)
                        if total + size <= max_bytes:
                            rows += batch
                            total += size
                            continue
                        # the limit falls in this batch: the longest prefix that fits
                        low, high = 0, len(batch)
                        while low < high:
                            mid = (low + high + 1) // 2
                            if total + measure(batch[:mid]) <= max_bytes:
                                low = mid
                            else:
                                high = mid - 1
                        rows += batch[: max(low, 0 if rows else 1)]
                        break
                finally:
                    cursor.close()
            except sqlite3.DatabaseError as exc:
                raise _file_error(self.path, exc) from None
        return rows

    def _select_where(self, where: list[tuple[str, Any]], limit: int | None) -> list[Event]:
        conditions = " AND ".join(cond for cond, _ in where) or "1"
        params = [value for _, value in where]
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE {conditions} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._select(sql, params)

    def iter_events(
        self, after: int = 0, until: int | None = None, chunk: int = 5000
    ) -> Iterator[Event]:
        """All events after `after` (to `until`), read in chunks so memory stays flat."""
        while True:
            events = self.read(after, chunk, until=until)
            yield from events
            if len(events) < chunk:
                return
            after = events[-1].seq

    def _select(self, sql: str, params: Sequence[Any]) -> list[Event]:
        with self._lock:
            self._check_open()
            try:
                rows = self._conn.execute(sql, params).fetchall()
                log_id = self.log_id
                return [_row_to_event(row, log_id) for row in rows]
            except sqlite3.DatabaseError as exc:
                raise _file_error(self.path, exc) from None
            except DecodeError as exc:
                raise LogFileError(self.path, f"is damaged: {exc}") from None

    def events_where(
        self, where: str, params: Sequence[Any] = (), limit: int | None = None
    ) -> list[tuple[Event, str | None]]:
        """Events matching an SQL condition on the ``events`` columns (``seq, ts, type,
        action, sender, target, data, origin, origin_seq``), in seq order, each with why the
        reducer made it a no-op: the reason, ``None`` when applied, or `NOT_RECORDED` for
        rows written before the file recorded reasons (see `noops_from`). Read-only use."""
        noop = "noop" if self.noops_from is not None else "NULL"
        sql = f"SELECT {_EVENT_COLUMNS}, {noop} FROM events WHERE {where} ORDER BY seq"
        args = list(params)
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        first = self.noops_from
        out: list[tuple[Event, str | None]] = []
        try:
            for row in self._rows(sql, args):
                event = _row_to_event(row[:9], self.log_id)
                known = first is not None and event.seq >= first
                out.append((event, row[9] if known else NOT_RECORDED))
        except DecodeError as exc:
            raise LogFileError(self.path, f"is damaged: {exc}") from None
        return out

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read query on the file (tables ``meta``, ``events``, ``snapshots``): for
        summaries (`replay info`). A damaged file is a `LogFileError` naming it."""
        return self._rows(sql, params)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read query; a damaged file becomes a `LogFileError` naming it."""
        with self._lock:
            self._check_open()
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _file_error(self.path, exc) from None

    def snapshots(self) -> list[tuple[int, float, str]]:
        """(seq, ts, digest) of every stored snapshot, oldest first."""
        rows = self._rows("SELECT seq, ts, digest FROM snapshots ORDER BY seq")
        return [(seq, ts, dig) for seq, ts, dig in rows]

    def latest_snapshot(self, at_or_before: int | None = None) -> Snapshot | None:
        """The newest snapshot with ``seq <= at_or_before`` (or the newest of all)."""
        sql = "SELECT seq, ts, digest, state FROM snapshots"
        params: list[Any] = []
        if at_or_before is not None:
            sql += " WHERE seq <= ?"
            params.append(at_or_before)
        sql += " ORDER BY seq DESC LIMIT 1"
        with self._lock:
            self._check_open()
            try:
                rows = list(self._db.query(sql, params))
            except sqlite3.DatabaseError as exc:
                raise _file_error(self.path, exc) from None
        if not rows:
            return None
        row = rows[0]
        return Snapshot(row["seq"], row["ts"], row["digest"], row["state"].encode())

    def state_at(self, seq: int) -> State:
        """The state after event `seq`: newest snapshot at or before it plus the tail."""
        with self._lock:
            self._check_open()
            head = self.head
            if not 0 <= seq <= head:
                raise UsageError(f"seq {seq} is outside this log (0..{head})")
            if seq < self.base_seq:
                raise UsageError(
                    f"this file starts after seq {self.base_seq} (a replica "
                    f"restored from a snapshot); ask the controller's log for {seq}"
                )
            return self._fold_to(seq)

    def _fold_to(self, seq: int) -> State:
        snap = self.latest_snapshot(seq)
        try:
            state = restore(snap) if snap is not None else State()
        except DecodeError as exc:
            raise LogFileError(self.path, f"is damaged: {exc}") from None
        if snap is None and self.base_seq:
            raise LogFileError(
                self.path,
                f"is damaged: it starts after seq {self.base_seq} but has no snapshot there",
            )
        for event in self.iter_events(state.seq, seq):
            if event.seq != state.seq + 1:
                raise LogFileError(
                    self.path, f"is damaged: events jump from seq {state.seq} to {event.seq}"
                )
            apply(state, event)
        if state.seq != seq:
            raise LogFileError(self.path, f"is damaged: events stop at {state.seq}, expected {seq}")
        return state

    def count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM events")[0][0])

    def time_bounds(self) -> tuple[float, float] | None:
        row = self._rows("SELECT MIN(ts), MAX(ts) FROM events")[0]
        return None if row[0] is None else (row[0], row[1])

    def seq_at_time(self, ts: float) -> int:
        """The last seq committed at or before wall-clock time `ts` (0 if none)."""
        # through the ts index (a MAX(seq) over the range would read every row before it)
        rows = self._rows(
            "SELECT seq FROM events WHERE ts <= ? ORDER BY ts DESC, seq DESC LIMIT 1", (ts,)
        )
        return int(rows[0][0]) if rows else self.base_seq


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


_SIDE_FILES: Final = ("", "-wal", "-shm")


def _remove(path: str) -> None:
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def _orphans_aside(path: str, now: float) -> None:
    """A log file deleted while open leaves its WAL (and shm) behind: never let a new log at
    that path meet them. They are renamed, not deleted (the last commits may be in the WAL)."""
    stamp = dt.datetime.fromtimestamp(now).strftime("%Y%m%dT%H%M%S")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            aside = f"{path}{suffix}.orphan-{stamp}"
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


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _repair_hint(path: str, role: str | None) -> str:
    if role == "replica":
        return (
            "move it away (keep it for the post-mortem): the node then takes a full resync "
            "from the controller"
        )
    return (
        "keep it for the post-mortem and rebuild the log from the replica file of the node "
        f"furthest ahead: cuelog rebuild --from NODE.db --db {path} --force"
    )


def _file_error(path: str, exc: sqlite3.DatabaseError, role: str | None = None) -> LogFileError:
    text = str(exc)
    if "not a database" in text:
        return LogFileError(path, "is not a SQLite database, so not a cuelog log")
    if "malformed" in text or "corrupt" in text:
        return LogFileError(path, f"is damaged ({text}); {_repair_hint(path, role)}")
    return LogFileError(path, f"cannot be used: {text}")
