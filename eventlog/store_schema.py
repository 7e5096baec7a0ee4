"""The log file's tables, their migrations, and its ``meta`` table (what the file says it is).

A cuelog log file holds three tables:

- ``meta``: key/value text. ``app`` (always ``cuelog``), ``schema_version``, ``log_id``,
  ``created``, ``base_seq`` (the seq of the snapshot a replica was restored from; 0 for a log
  that starts at seq 1), ``tz`` (the show's time zone), ``role`` (``controller`` or
  ``replica``) and ``noops_from`` (the first seq whose row records why it was a no-op).
- ``events``: one row per event, keyed by ``seq``; unique on its op id (``origin``,
  ``origin_seq``), indexed on ``ts``; ``noop`` says why the reducer made it a no-op.
- ``snapshots``: the encoded state at some seqs, with its digest.

Schema history: 1 had meta and events; 2 added snapshots, ``base_seq`` and the ``ts`` index;
3 added ``noop`` (rows before ``noops_from`` say NULL whatever they did). A writable open
migrates an older file; a read-only open reads a schema-2 file as it is and refuses older ones.

sqlite-utils builds and inspects the tables here (it spells the DDL and lists the tables); the
``meta`` rows are read and written with plain statements inside the store's transactions, the
same way every time (`write_meta`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import sqlite_utils

from eventlog.errors import LogFileError
from eventlog.logctx import ComponentLog
from eventlog.store_file import transaction

log = ComponentLog("cuelog.store")

APP: Final = "cuelog"
SCHEMA_VERSION: Final = 3

#: what a log file is for: the controller's log, or a node's replica of one
Role = Literal["controller", "replica"]
ROLES: Final = ("controller", "replica")


@dataclass(frozen=True, slots=True)
class NewLog:
    """What a new, empty file is stamped with."""

    log_id: str
    created: float
    tz: str
    role: Role | None


@dataclass(frozen=True, slots=True)
class Meta:
    """What a file's ``meta`` says about it, once `load` has checked it."""

    log_id: str
    base_seq: int
    created: float
    #: None for a file from before roles were recorded
    role: str | None
    #: the show's time zone (`eventlog.showtz`); None for a file from before zones
    tz: str | None
    #: the first seq whose row records its no-op reason; None when the file records none
    #: (schema 2, read as it is)
    noops_from: int | None
    #: the highest controller epoch this file has seen (a node refuses anything older: an old
    #: leader's frames); 0 for a log that never had more than one controller
    epoch: int = 0


def load(
    conn: sqlite3.Connection,
    path: str,
    *,
    readonly: bool,
    new: Callable[[], NewLog] | None,
) -> Meta:
    """Check that the file is a cuelog log this cuelog can use and return its `Meta`.

    An empty file becomes a new log stamped with ``new()`` (refused when `new` is None). An
    older schema is migrated (writable opens). Anything else is a `LogFileError` naming the
    file: not a cuelog log, written by a newer cuelog, or damaged meta.
    """
    tables = set(_db(conn).table_names())
    if not tables:
        if readonly or new is None:
            raise LogFileError(path, "is empty, not a cuelog log")
        create(conn, new())
    elif "meta" not in tables:
        raise LogFileError(
            path, "is a SQLite database but not a cuelog log (it has no cuelog meta table)"
        )
    meta = read_meta(conn)
    if meta.get("app") != APP:
        raise LogFileError(
            path, f"is a SQLite database but not a cuelog log (meta says app={meta.get('app')!r})"
        )
    try:
        version = int(meta.get("schema_version", "x"))
    except ValueError:
        raise LogFileError(path, "is damaged: its schema version is unreadable") from None
    if version > SCHEMA_VERSION:
        raise LogFileError(
            path,
            f"was written by a newer cuelog (log schema {version}, "
            f"this cuelog reads up to {SCHEMA_VERSION}): upgrade cuelog",
        )
    if not meta.get("log_id"):
        raise LogFileError(path, "is damaged: its meta has no log_id")
    if version < SCHEMA_VERSION and not (readonly and version >= 2):
        # schema 2 is read as it is (replay of an older copy); older ones need migrating
        if readonly:
            raise LogFileError(
                path,
                f"has the old log schema {version}; open it once "
                "read-write (or run a controller on it) to migrate it",
            )
        _migrate(conn, path, version)
        meta = read_meta(conn)
        version = SCHEMA_VERSION
    return Meta(
        log_id=meta["log_id"],
        base_seq=int(meta.get("base_seq", "0")),
        created=float(meta.get("created", "0")),
        role=meta.get("role"),
        tz=meta.get("tz"),
        noops_from=int(meta.get("noops_from", "1")) if version >= 3 else None,
        epoch=_epoch(meta.get("epoch", "0")),
    )


def _epoch(text: str) -> int:
    """A stored epoch; a value that is not one counts as none (0): the epoch only ever goes
    up, and the next frame of a live controller sets it again."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else 0


def create(conn: sqlite3.Connection, new: NewLog) -> None:
    """Make the tables of the current schema in an empty file, in WAL mode, and stamp it."""
    conn.execute("PRAGMA journal_mode = WAL")
    db = _db(conn)
    with transaction(conn):
        db.table("meta").create({"key": str, "value": str}, pk="key")
        _create_v1_events(db)
        _create_v2_parts(db)
        _create_v3_parts(db)
        write_meta(
            conn,
            {
                "app": APP,
                "schema_version": str(SCHEMA_VERSION),
                "log_id": new.log_id,
                "created": repr(new.created),
                "base_seq": "0",
                "tz": new.tz,
                **({"role": new.role} if new.role else {}),
            },
        )


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute("SELECT key, value FROM meta")}


def write_meta(conn: sqlite3.Connection, values: Mapping[str, str]) -> None:
    """Set meta keys (inside the caller's transaction)."""
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())


def _db(conn: sqlite3.Connection) -> sqlite_utils.Database:
    return sqlite_utils.Database(conn)


def _create_v1_events(db: sqlite_utils.Database) -> None:
    table = db.table("events")
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


def _create_v2_parts(db: sqlite_utils.Database) -> None:
    db.table("snapshots").create(
        {"seq": int, "ts": float, "digest": str, "state": str},
        pk="seq",
        not_null={"ts", "digest", "state"},
    )
    db.table("events").create_index(["ts"], index_name="events_ts")


def _create_v3_parts(db: sqlite_utils.Database) -> None:
    db.table("events").add_column("noop", str)


def _migrate(conn: sqlite3.Connection, path: str, version: int) -> None:
    log.info("migrating %s from log schema %d to %d", path, version, SCHEMA_VERSION)
    db = _db(conn)
    with transaction(conn):
        values: dict[str, str] = {}
        if version < 2:
            _create_v2_parts(db)
            values["base_seq"] = "0"
        if version < 3:
            _create_v3_parts(db)
            last = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
            values["noops_from"] = str((last or 0) + 1)
        values["schema_version"] = str(SCHEMA_VERSION)
        write_meta(conn, values)
