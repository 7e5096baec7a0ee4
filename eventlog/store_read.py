"""The read side of an `EventLog`: events by seq or by time, raw rows for replicas, the rows
behind ``replay``'s summaries, snapshots, and the state at any seq.

Every query here runs inside `LogCore._reading` (the lock, the closed check, a damaged file
said as a `LogFileError`) on the raw ``sqlite3`` connection: these are the hot read paths
(streaming history to replicas, folding to a seq), written as the SQL they run, with rows as
tuples. ``read_rows`` walks a cursor so a reply of big events never holds more than it sends.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from eventlog.errors import DecodeError, LogFileError, UsageError
from eventlog.event import Event
from eventlog.reducer import apply
from eventlog.snapshot import Snapshot, restore
from eventlog.state import State
from eventlog.store_core import LogCore
from eventlog.store_rows import EVENT_COLUMNS, NOT_RECORDED, row_to_event

#: rows fetched at a time by `LogReads.read_rows` when it reads up to a size
_READ_BATCH: Final = 256


def _events_sql(columns: str, where: str, limit: int | None, params: list[Any]) -> str:
    """``SELECT columns FROM events WHERE where ORDER BY seq`` (and ``LIMIT``, added to
    `params`)."""
    sql = f"SELECT {columns} FROM events WHERE {where} ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql


class LogReads(LogCore):
    """Queries on an open log. See `EventLog`."""

    # ------------------------------------------------------------------ where the log stands

    @property
    def head(self) -> int:
        """The last seq in the log (0 for an empty log). Re-read for read-only opens."""
        with self._reading():
            if self.readonly:
                self._refresh_head()
            return self._head

    @property
    def state(self) -> State:
        """The current state (writable logs keep it; read-only logs fold it on demand)."""
        with self._lock:
            if self._state is None:
                return self.state_at(self.head)
            return self._state

    def count(self) -> int:
        return int(self.select("SELECT COUNT(*) FROM events")[0][0])

    def time_bounds(self) -> tuple[float, float] | None:
        row = self.select("SELECT MIN(ts), MAX(ts) FROM events")[0]
        return None if row[0] is None else (row[0], row[1])

    def seq_at_time(self, ts: float) -> int:
        """The last seq committed at or before wall-clock time `ts` (0 if none)."""
        # through the ts index (a MAX(seq) over the range would read every row before it)
        rows = self.select(
            "SELECT seq FROM events WHERE ts <= ? ORDER BY ts DESC, seq DESC LIMIT 1", (ts,)
        )
        return int(rows[0][0]) if rows else self.base_seq

    def max_origin_seq(self, origin: str) -> int:
        """The highest origin_seq stored for `origin` (0 if none): indexed, cheap."""
        row = self.select("SELECT MAX(origin_seq) FROM events WHERE origin = ?", (origin,))[0]
        return int(row[0]) if row[0] is not None else 0

    # ------------------------------------------------------------------ events

    def read(
        self, after: int = 0, limit: int | None = None, *, until: int | None = None
    ) -> list[Event]:
        """Events with ``after < seq`` (and ``seq <= until``), in order, at most `limit`."""
        if until is None:
            return self._events("seq > ?", [after], limit)
        return self._events("seq > ? AND seq <= ?", [after, until], limit)

    def read_time(
        self, since: float | None = None, until: float | None = None, limit: int | None = None
    ) -> list[Event]:
        """Events with ``since <= ts < until`` (either bound optional), in seq order."""
        conditions: list[str] = []
        params: list[Any] = []
        if since is not None:
            conditions.append("ts >= ?")
            params.append(since)
        if until is not None:
            conditions.append("ts < ?")
            params.append(until)
        return self._events(" AND ".join(conditions) or "1", params, limit)

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

    def _events(self, where: str, params: list[Any], limit: int | None) -> list[Event]:
        sql = _events_sql(EVENT_COLUMNS, where, limit, params)
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
            log_id = self.log_id
            return [row_to_event(row, log_id) for row in rows]

    def events_where(
        self, where: str, params: Sequence[Any] = (), limit: int | None = None
    ) -> list[tuple[Event, str | None]]:
        """Events matching an SQL condition on the ``events`` columns (``seq, ts, type,
        action, sender, target, data, origin, origin_seq``), in seq order, each with why the
        reducer made it a no-op: the reason, ``None`` when applied, or `NOT_RECORDED` for
        rows written before the file recorded reasons (see `noops_from`). Read-only use."""
        first = self.noops_from
        noop = "noop" if first is not None else "NULL"
        args = list(params)
        sql = _events_sql(f"{EVENT_COLUMNS}, {noop}", where, limit, args)
        with self._reading() as conn:
            rows = conn.execute(sql, args).fetchall()
            log_id = self.log_id
            out: list[tuple[Event, str | None]] = []
            for row in rows:
                event = row_to_event(row[:9], log_id)
                known = first is not None and event.seq >= first
                out.append((event, row[9] if known else NOT_RECORDED))
            return out

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
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
        if max_bytes is None or measure is None:
            return self.select(sql, (after, limit))
        rows: list[tuple[Any, ...]] = []
        total = 0
        with self._reading() as conn:
            cursor = conn.execute(sql, (after, limit))
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
        return rows

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read query on the file (tables ``meta``, ``events``, ``snapshots``): for
        summaries (`replay info`). A damaged file is a `LogFileError` naming it."""
        with self._reading() as conn:
            return conn.execute(sql, params).fetchall()

    def page_problems(self, limit: int = 20) -> list[str]:
        """What SQLite's quick check finds wrong with the file's pages (torn or overwritten
        pages, broken indexes): empty when every page is sound. Reads every page."""
        if self.path == ":memory:":
            return []
        with self._reading() as conn:
            try:
                rows = conn.execute(f"PRAGMA quick_check({int(limit)})").fetchall()
            except sqlite3.DatabaseError as exc:
                # a check that cannot finish is one more thing wrong, not an error to raise
                return [f"SQLite's quick check of its pages failed: {exc}"]
        return [f"SQLite's page check: {row[0]}" for row in rows if row[0] != "ok"]

    # ------------------------------------------------------------------ snapshots and states

    def snapshots(self) -> list[tuple[int, float, str]]:
        """(seq, ts, digest) of every stored snapshot, oldest first."""
        rows = self.select("SELECT seq, ts, digest FROM snapshots ORDER BY seq")
        return [(seq, ts, dig) for seq, ts, dig in rows]

    def latest_snapshot(self, at_or_before: int | None = None) -> Snapshot | None:
        """The newest snapshot with ``seq <= at_or_before`` (or the newest of all)."""
        sql = "SELECT seq, ts, digest, state FROM snapshots"
        params: list[Any] = []
        if at_or_before is not None:
            sql += " WHERE seq <= ?"
            params.append(at_or_before)
        rows = self.select(sql + " ORDER BY seq DESC LIMIT 1", params)
        if not rows:
            return None
        seq, ts, digest, state = rows[0]
        return Snapshot(seq, ts, digest, state.encode())

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
        """The newest snapshot at or before `seq` plus the events after it, each checked to
        follow the last: a hole or a missing snapshot is a damaged file."""
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
