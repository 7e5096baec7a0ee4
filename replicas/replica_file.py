"""A node's replica kept in its own log file, which keeps following when the file fails.

`ReplicaFile` is the `ReplicaStore` of a node started with ``--db``. While the file takes
writes it is the replica, as before. When a write fails (a full disk, a file gone read-only,
any SQLite error) the node must not die and must not stop following the show: the replica
goes on in memory from the last state the file holds, the failure is said once, and the events
the file misses wait in a bounded backlog. At most once a second (on the next events, or when
the node calls `retry`) the file is tried again and caught up; a backlog that grew past its
bound is given up and the file is instead brought to the state in memory (a snapshot of the
same log) once it takes writes again. A resync that needs to set the file aside while it is
failing is done when it recovers, before anything else is written to it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from eventlog import (
    CuelogError,
    Event,
    EventLog,
    LogFileError,
    Snapshot,
    State,
    apply,
    dumps,
    restore,
    take,
)
from eventlog.logctx import ComponentLog

log = ComponentLog("cuelog.node")

#: how often (seconds) a failing file is tried again
RETRY_INTERVAL: Final = 1.0
#: most events (and encoded bytes) kept for a failing file; beyond, a snapshot replaces them
MAX_BACKLOG_EVENTS: Final = 200_000
MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
#: most backlog events written to a recovered file per try (the rest on the next one, soon)
CATCH_UP_CHUNK: Final = 20_000

#: what a failing file raises (a caller's mistake, a `UsageError`, is not one of them)
_FAILURES = (LogFileError, sqlite3.Error, OSError)


class ReplicaFile:
    """The replica in `elog`, or in memory while `elog` cannot be written."""

    def __init__(
        self,
        elog: EventLog,
        *,
        node_id: str = "-",
        reopen: Callable[[], EventLog] | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_interval: float = RETRY_INTERVAL,
        max_backlog_events: int = MAX_BACKLOG_EVENTS,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
    ) -> None:
        self.elog = elog
        self.node_id = node_id
        self.path = elog.path
        self._reopen = reopen
        self._clock = clock
        self.retry_interval = retry_interval
        self.max_backlog_events = max_backlog_events
        self.max_backlog_bytes = max_backlog_bytes
        self.log_id = elog.log_id
        #: the highest controller epoch seen (kept in memory too while the file fails)
        self._epoch = elog.epoch
        #: what is wrong with the file (None while it takes writes)
        self.problem: str | None = None
        #: the replica while the file is failing
        self._mem: State | None = None
        self._backlog: list[Event] = []
        self._backlog_bytes = 0
        #: the backlog was given up: the file must be brought to `_mem` by a snapshot
        self._stale = False
        #: the file holds what must be set aside before it is written again
        self._aside_due = False
        self._next_try = 0.0
        self.failures = 0

    # ------------------------------------------------------------------ ReplicaStore

    @property
    def head(self) -> int:
        return self._mem.seq if self._mem is not None else self.elog.head

    @property
    def state(self) -> State:
        return self._mem if self._mem is not None else self.elog.state

    @property
    def healthy(self) -> bool:
        return self._mem is None

    def append_events(self, events: Sequence[Event]) -> list[str | None]:
        if self._mem is None:
            before = self.elog.head
            try:
                return self.elog.append_events(events)
            except _FAILURES as exc:
                self._fail(exc, before)
        mem = self._mem
        assert mem is not None
        if events and events[0].seq != mem.seq + 1:
            # the state was lost with the file: nothing fires, and as the replica is now at
            # seq 0 the node fetches the log again
            return ["the replica's state was lost with its file"] * len(events)
        reasons = [apply(mem, event) for event in events]
        self._keep(events)
        self.retry()
        return reasons

    def set_show_tz(self, name: str) -> None:
        """Keep the controller's time zone in the file's meta (skipped while it fails)."""
        if self._mem is None:
            with contextlib.suppress(*_FAILURES):
                self.elog.set_show_tz(name)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Keep the highest controller epoch seen, in the file's meta too (it survives a
        restart: an old leader stays refused)."""
        self._epoch = max(self._epoch, epoch)
        if self._mem is None:
            with contextlib.suppress(*_FAILURES):
                self.elog.set_epoch(epoch)

    def rewind(self, seq: int) -> bool:
        """Cut the file's events after `seq` (a copy of the whole is kept); False while the
        file fails, or when it cannot (then the replica resyncs in full)."""
        if self._mem is not None:
            return False
        try:
            return self.elog.rewind(seq)
        except _FAILURES as exc:
            log.warning("cannot rewind %s to seq %d: %s", self.path, seq, exc)
            return False

    def reset(self, log_id: str, snapshot: Snapshot | None) -> None:
        if self._mem is None:
            try:
                self.elog.reset(log_id, snapshot)
                self.log_id = log_id
                return
            except _FAILURES as exc:
                self._fail(exc, None)
        # failing: the reset is done in memory now and in the file once it recovers
        if self._file_must_keep(log_id, snapshot):
            self._aside_due = True
        self._mem = restore(snapshot) if snapshot is not None else State()
        self.log_id = log_id
        self._drop_backlog()
        self._stale = True
        self.retry()

    # ------------------------------------------------------------------ failing and back

    def _fail(self, exc: BaseException, before: int | None) -> None:
        """The file refused a write: follow in memory from the state it holds."""
        self.failures += 1
        elog = self.elog
        mem: State | None = None
        if not elog.closed and (before is None or elog.head == before):
            try:
                mem = elog.state.copy()
            except (CuelogError, *_FAILURES):
                mem = None
        if mem is None or (before is not None and mem.seq != before):
            # the file's state cannot be trusted: start empty, the node fetches the log again
            mem = State()
            self._stale = True
        self._mem = mem
        self._drop_backlog()
        self.problem = str(exc)
        log.error(
            "replica file %s cannot be written (%s): following the controller in memory; the "
            "file is caught up when it can be",
            self.path,
            exc,
            node=self.node_id,
            seq=mem.seq,
        )
        self._next_try = self._clock() + self.retry_interval

    def _keep(self, events: Sequence[Event]) -> None:
        if self._stale:
            return
        self._backlog.extend(events)
        for event in events:
            data = event.op.data
            self._backlog_bytes += 200 + (0 if data is None else len(dumps(data)))
        if (
            len(self._backlog) > self.max_backlog_events
            or self._backlog_bytes > self.max_backlog_bytes
        ):
            log.warning(
                "replica file %s is %d events behind: it will be brought up to date from a "
                "snapshot of this node's state once it can be written",
                self.path,
                len(self._backlog),
                node=self.node_id,
                seq=self.head,
            )
            self._drop_backlog()
            self._stale = True

    def _drop_backlog(self) -> None:
        self._backlog = []
        self._backlog_bytes = 0

    def _file_must_keep(self, log_id: str, snapshot: Snapshot | None) -> bool:
        try:
            file_log, file_head = self.elog.log_id, self.elog.head
        except (CuelogError, *_FAILURES):
            return True
        return file_head > 0 and (
            log_id != file_log or snapshot is None or snapshot.seq < file_head
        )

    def retry(self, force: bool = False) -> bool:
        """Try to catch the file up (at most once per `retry_interval` unless `force`).
        True when the file is the replica again."""
        mem = self._mem
        if mem is None:
            return True
        now = self._clock()
        if not force and now < self._next_try:
            return False
        self._next_try = now + self.retry_interval
        try:
            if not self._catch_up(mem):
                self._next_try = now  # more to write: on the next call
                return False
        except (CuelogError, *_FAILURES) as exc:
            if str(exc) != self.problem:
                self.problem = str(exc)
                log.warning(
                    "replica file %s still cannot be written: %s",
                    self.path,
                    exc,
                    node=self.node_id,
                    seq=mem.seq,
                )
            return False
        log.info(
            "replica file %s is caught up and in use again (seq %d)",
            self.path,
            self.elog.head,
            node=self.node_id,
            seq=self.elog.head,
        )
        self._mem = None
        self._stale = self._aside_due = False
        self._drop_backlog()
        self.problem = None
        self.set_epoch(self._epoch)  # what was seen while the file failed
        return True

    def _catch_up(self, mem: State) -> bool:
        """Write what the file misses; True once it holds everything memory does."""
        if self.elog.closed:
            if self._reopen is None:
                raise LogFileError(self.path, "closed after a failure and cannot be reopened")
            self.elog = self._reopen()
        elog = self.elog
        if self._aside_due:
            elog.reset(self.log_id, None)  # sets the old file aside if it holds anything
            self._aside_due = False
            self._stale = True
        if self._stale:
            if mem.seq == 0:
                elog.reset(self.log_id, None)
            else:
                elog.reset(self.log_id, take(mem, time.time()))
            self._stale = False
            return True
        if elog.log_id != self.log_id:
            raise LogFileError(self.path, f"holds log {elog.log_id}, not {self.log_id}")
        head = elog.head
        pending = [event for event in self._backlog if event.seq > head][:CATCH_UP_CHUNK]
        for start in range(0, len(pending), 1000):
            elog.append_events(pending[start : start + 1000])
        if elog.head < mem.seq and pending:
            return False
        if elog.head != mem.seq:
            raise LogFileError(self.path, f"caught up to seq {elog.head}, memory is at {mem.seq}")
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "problem": self.problem,
            "backlog": len(self._backlog),
            "stale": self._stale,
        }
