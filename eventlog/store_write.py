"""The write side of an `EventLog`: appending operations (the controller), appending events
made elsewhere (a replica), and snapshots of the state it keeps in memory.

Both appends come down to `LogWrites._write_events` inside `LogWrites._writing`: one
``BEGIN IMMEDIATE`` transaction that folds the events into the in-memory state (so each row
records why the reducer made it a no-op), inserts them with one ``sqlite3`` ``executemany``
(the hot path: no sqlite-utils, no per-row Python beyond `event_to_row`) and stores a snapshot
when one is due. If anything fails the transaction is rolled back and the state rebuilt from
the file, so memory never runs ahead of the disk.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from eventlog.errors import UsageError, ValidationError
from eventlog.event import Event
from eventlog.logctx import ComponentLog
from eventlog.operation import (
    Operation,
    OpId,
    Submission,
    validate_operation,
    validate_submission,
)
from eventlog.reducer import apply
from eventlog.snapshot import Snapshot, take
from eventlog.state import State
from eventlog.store_file import file_error
from eventlog.store_read import LogReads
from eventlog.store_rows import INSERT_EVENTS, event_to_row

log = ComponentLog("cuelog.store")

#: SQLite's limit on the parameters of one statement, with room to spare
_MAX_PARAMS: Final = 900


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


class LogWrites(LogReads):
    """Appends and snapshots on an open, writable log. See `EventLog`."""

    # ------------------------------------------------------------------ the controller's appends

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
            self._check_writable()
            if not subs:
                return AppendResult([], [], [])
            try:
                return self._append_locked(subs)
            except sqlite3.DatabaseError as exc:
                raise file_error(self.path, exc) from None

    def _append_locked(self, subs: Sequence[Submission]) -> AppendResult:
        ts = self._clock()
        seqs: list[int] = []
        events: list[Event] = []
        reasons: list[str | None] = []
        snapped = False
        head = self._head
        with self._writing():
            known = self._existing(subs)
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
        self._head = head
        if snapped:
            self._last_snapshot_seq = head
        return AppendResult(seqs, events, reasons)

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

    # ------------------------------------------------------------------ a replica's appends

    def append_events(self, events: Sequence[Event]) -> list[str | None]:
        """Store events made by another log (a replica following its controller).

        They must carry this log's id and continue its sequence without a hole. Returns, for
        each event, why the reducer treated it as a no-op (``None`` when applied).
        """
        with self._lock:
            self._writable_state()
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
                with self._writing():
                    reasons, snapped = self._write_events(events, events[-1].ts)
            except sqlite3.DatabaseError as exc:
                raise file_error(self.path, exc, self.role) from None
            self._head = events[-1].seq
            if snapped:
                self._last_snapshot_seq = self._head
            return reasons

    # ------------------------------------------------------------------ the one write path

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The appends' transaction: if anything in it fails, it is rolled back and the head
        and state are read again from the file (what the caller raises is up to it)."""
        try:
            with self._transaction():
                yield
        except BaseException:
            self._recover_after_failure()
            raise

    def _write_events(self, events: Sequence[Event], ts: float) -> tuple[list[str | None], bool]:
        """The one write path of both appends (inside `_writing`): fold the events into the
        state (so each row records why it was a no-op), insert them, and take a snapshot when
        one is due. Returns the reasons and whether it snapshotted."""
        state = self._state
        assert state is not None
        reasons = [apply(state, event) for event in events]
        self._conn.executemany(
            INSERT_EVENTS, [event_to_row(e, r) for e, r in zip(events, reasons, strict=True)]
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

    def _rebuild_state(self) -> None:
        """The state at the head, folded from the file (at open, and after a failed write)."""
        self._state = self._fold_to(self._head)
        snap = self.latest_snapshot()
        self._last_snapshot_seq = snap.seq if snap else 0

    def _writable_state(self) -> State:
        """The state a writable log keeps; `UsageError` if this log is read-only (or closed)."""
        self._check_writable()
        if self._state is None:
            raise UsageError(f"log {self.path} is open read-only")
        return self._state

    # ------------------------------------------------------------------ snapshots

    def _write_snapshot(self, snap: Snapshot) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO snapshots (seq, ts, digest, state) VALUES (?, ?, ?, ?)",
            (snap.seq, snap.ts, snap.digest, snap.state.decode()),
        )

    def write_snapshot(self) -> Snapshot:
        """Take a snapshot of the current state now and store it."""
        with self._lock:
            snap = take(self._writable_state(), self._clock())
            with self._transaction():
                self._write_snapshot(snap)
            self._last_snapshot_seq = snap.seq
            return snap
