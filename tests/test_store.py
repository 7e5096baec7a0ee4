"""The SQLite event log.

`TestLogContract` is the one contract every log store keeps; it runs against a log file and
against ``:memory:``. The tests after it are about files only: foreign, newer, older and damaged
files, missing paths, and a reader beside a writer.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventlog import (
    CONTROLLER,
    SCHEMA_VERSION,
    Event,
    EventLog,
    LogFileError,
    OpId,
    State,
    Submission,
    UsageError,
    ValidationError,
    apply,
    digest,
    dumps,
    fold,
    restore,
    validate_operation,
)
from tests.helpers import LOG_ID, TS0, FakeClock, Wire, show_op, wire


def ops(first: int, last: int) -> list[Wire]:
    """Operations `first`..`last` of the scripted show."""
    return [show_op(n) for n in range(first, last + 1)]


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


class LogMaker:
    """Opens logs for one contract test: a file in tmp_path or ``:memory:``."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.path = ":memory:" if kind == "memory" else str(directory / "contract.cuelog")
        self.clock = FakeClock()
        self._opened: list[EventLog] = []

    def open(self, **options: Any) -> EventLog:
        options.setdefault("clock", self.clock)
        log = EventLog.open(self.path, **options)
        self._opened.append(log)
        return log

    def need_file(self) -> None:
        if self.kind != "file":
            pytest.skip("a :memory: log does not outlive its connection")

    def close_all(self) -> None:
        for log in self._opened:
            log.close()


class TestLogContract:
    @pytest.fixture(params=["file", "memory"])
    def make_log(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogMaker]:
        maker = LogMaker(request.param, tmp_path)
        yield maker
        maker.close_all()

    # ------------------------------------------------------------ creating

    def test_new_log_is_empty(self, make_log: LogMaker) -> None:
        log = make_log.open()
        assert log.head == 0
        assert log.count() == 0
        assert log.read() == []
        assert log.base_seq == 0
        assert log.state == State()
        assert log.latest_snapshot() is None
        assert log.snapshots() == []
        assert log.time_bounds() is None
        assert log.seq_at_time(TS0 + 1e6) == 0
        assert log.created == TS0
        assert str(uuid.UUID(log.log_id)) == log.log_id

    def test_log_id_can_be_chosen(self, make_log: LogMaker) -> None:
        assert make_log.open(log_id=LOG_ID).log_id == LOG_ID

    def test_bad_open_arguments(self, make_log: LogMaker) -> None:
        with pytest.raises(UsageError):
            make_log.open(snapshot_every=0)
        with pytest.raises(UsageError):
            make_log.open(synchronous="SOMETIMES")

    # ------------------------------------------------------------ appending

    def test_appends_are_numbered_without_gaps(self, make_log: LogMaker) -> None:
        log = make_log.open()
        assert log.append(show_op(1)) == 1
        assert log.append(validate_operation(show_op(2))) == 2
        assert log.append(Submission(validate_operation(show_op(3)), OpId("ui-1", 1))) == 3
        result = log.append_batch(ops(4, 20))
        assert result.seqs == list(range(4, 21))
        assert seqs(result.events) == list(range(4, 21))
        assert result.duplicates == 0
        assert log.head == log.count() == 20
        assert seqs(log.read()) == list(range(1, 21))

    def test_events_carry_log_id_clock_time_and_operation(self, make_log: LogMaker) -> None:
        log = make_log.open()
        make_log.clock.now = 5000.25
        log.append_batch(ops(1, 3))
        make_log.clock.advance(1.5)
        log.append(show_op(4))
        events = log.read()
        assert [e.ts for e in events] == [5000.25, 5000.25, 5000.25, 5001.75]
        assert {e.log_id for e in events} == {log.log_id}
        assert [e.op.to_wire() for e in events] == ops(1, 4)

    def test_an_op_id_is_appended_once(self, make_log: LogMaker) -> None:
        log = make_log.open()
        log.append_batch(ops(1, 5))
        retry = {**show_op(6), "op_id": ["ui-1", 7]}
        assert log.append(retry) == 6
        assert log.append(retry) == 6
        assert log.append({**show_op(9), "op_id": ["ui-1", 7]}) == 6  # same id: same operation
        result = log.append_batch([show_op(7), retry, {**show_op(8), "op_id": ["ui-2", 7]}])
        assert result.seqs == [7, 6, 8]
        assert seqs(result.events) == [7, 8]
        assert result.duplicates == 1
        assert log.head == 8
        assert [e.op_id for e in log.read() if e.op_id.origin.startswith("ui")] == [
            OpId("ui-1", 7),
            OpId("ui-2", 7),
        ]

    def test_duplicates_within_one_batch(self, make_log: LogMaker) -> None:
        log = make_log.open()
        a = Submission(validate_operation(show_op(1)), OpId("ui-1", 1))
        b = Submission(validate_operation(show_op(2)), OpId("ui-1", 2))
        result = log.append_batch([a, b, a, a, b])
        assert result.seqs == [1, 2, 1, 1, 2]
        assert seqs(result.events) == [1, 2]
        assert log.head == 2

    def test_operations_without_op_id_get_one_from_the_log(self, make_log: LogMaker) -> None:
        log = make_log.open()
        log.append_batch(ops(1, 3))
        log.append_batch(ops(1, 3))  # no op_id: nothing to deduplicate on
        assert log.head == 6
        assert [e.op_id for e in log.read()] == [OpId("~" + log.log_id, n) for n in range(1, 7)]

    def test_invalid_batch_writes_nothing(self, make_log: LogMaker) -> None:
        log = make_log.open(snapshot_every=5)
        log.append_batch(ops(1, 4))
        before = (log.head, digest(log.state), log.snapshots())
        batch: list[Any] = [*ops(5, 9), wire("cue", "add", "n", "c", None), *ops(10, 12)]
        with pytest.raises(ValidationError) as info:
            log.append_batch(batch)
        assert info.value.index == 5
        assert (info.value.field, info.value.rule) == ("data", "missing")
        assert (log.head, digest(log.state), log.snapshots()) == before
        assert log.count() == 4
        assert log.append(show_op(5)) == 5

    def test_append_result_says_why_an_event_was_a_noop(self, make_log: LogMaker) -> None:
        log = make_log.open()
        go = wire("command", "update", CONTROLLER, "go", {"value": None})
        retry = {**go, "op_id": ["ui-1", 1]}
        result = log.append_batch([show_op(1), go, retry, retry])
        assert result.seqs == [1, 2, 3, 3]
        assert seqs(result.events) == [1, 2, 3]
        assert len(result.reasons) == 3
        assert result.reasons[0] is None
        assert result.reasons[1] is not None
        assert "armed" in result.reasons[1]
        assert result.reasons[2] == result.reasons[1]
        assert log.state.ignored == 2

    def test_dedup_across_many_origins_and_a_big_batch(self, make_log: LogMaker) -> None:
        log = make_log.open()

        def sub(n: int) -> Submission:
            return Submission(validate_operation(show_op(n)), OpId(f"ui-{n % 3}", n))

        first = [sub(n) for n in range(1, 1001)]
        assert log.append_batch(first).seqs == list(range(1, 1001))
        again = log.append_batch([*reversed(first), *(sub(n) for n in range(995, 1011))])
        assert again.seqs == [*range(1000, 0, -1), *range(995, 1011)]
        assert seqs(again.events) == list(range(1001, 1011))
        assert again.duplicates == 1006
        assert log.head == 1010

    def test_empty_batch(self, make_log: LogMaker) -> None:
        log = make_log.open()
        result = log.append_batch([])
        assert (result.seqs, result.events) == ([], [])
        assert log.head == 0

    # ------------------------------------------------------------ reading

    def test_read_after_limit_until(self, make_log: LogMaker) -> None:
        log = make_log.open()
        log.append_batch(ops(1, 30))
        assert seqs(log.read(after=25)) == [26, 27, 28, 29, 30]
        assert seqs(log.read(after=5, limit=3)) == [6, 7, 8]
        assert seqs(log.read(until=4)) == [1, 2, 3, 4]
        assert seqs(log.read(after=10, until=14)) == [11, 12, 13, 14]
        assert seqs(log.read(after=10, limit=2, until=14)) == [11, 12]
        assert log.read(after=30) == []
        assert log.read(after=12, until=12) == []
        assert log.read(limit=0) == []

    def test_iter_events_reads_in_chunks(self, make_log: LogMaker) -> None:
        log = make_log.open()
        log.append_batch(ops(1, 23))
        assert seqs(list(log.iter_events(chunk=5))) == list(range(1, 24))
        assert seqs(list(log.iter_events(after=3, until=20, chunk=4))) == list(range(4, 21))
        assert list(log.iter_events(after=23, chunk=5)) == []
        assert log.read() == list(log.iter_events(chunk=7))

    def test_read_by_time(self, make_log: LogMaker) -> None:
        log = make_log.open()
        clock = make_log.clock
        for t, batch in ((100.0, ops(1, 3)), (200.0, ops(4, 5)), (300.0, ops(6, 9))):
            clock.now = t
            log.append_batch(batch)
        assert seqs(log.read_time(since=200.0, until=300.0)) == [4, 5]
        assert seqs(log.read_time(since=150.0)) == [4, 5, 6, 7, 8, 9]
        assert seqs(log.read_time(until=200.0)) == [1, 2, 3]
        assert seqs(log.read_time(since=100.0, limit=2)) == [1, 2]
        assert seqs(log.read_time()) == list(range(1, 10))
        assert log.read_time(since=301.0) == []
        assert log.time_bounds() == (100.0, 300.0)
        assert log.seq_at_time(99.0) == 0
        assert log.seq_at_time(100.0) == 3
        assert log.seq_at_time(250.0) == 5
        assert log.seq_at_time(1e9) == 9

    # ------------------------------------------------------------ state and snapshots

    def test_automatic_snapshot_every_k(self, make_log: LogMaker) -> None:
        log = make_log.open(snapshot_every=10)
        for n in range(1, 36):
            log.append(show_op(n))
        assert [s[0] for s in log.snapshots()] == [10, 20, 30]
        events = log.read()
        for seq, _ts, snap_digest in log.snapshots():
            assert snap_digest == digest(fold(events[:seq]))

    def test_snapshot_when_a_batch_crosses_k(self, make_log: LogMaker) -> None:
        log = make_log.open(snapshot_every=10)
        log.append_batch(ops(1, 7))
        assert log.snapshots() == []
        log.append_batch(ops(8, 24))
        assert [s[0] for s in log.snapshots()] == [24]
        log.append_batch(ops(25, 33))
        assert [s[0] for s in log.snapshots()] == [24]
        log.append(show_op(34))
        assert [s[0] for s in log.snapshots()] == [24, 34]

    def test_latest_snapshot_at_or_before(self, make_log: LogMaker) -> None:
        log = make_log.open(snapshot_every=10)
        for n in range(1, 36):
            make_log.clock.advance(1.0)
            log.append(show_op(n))
        assert log.latest_snapshot(9) is None
        for at, expected in ((10, 10), (19, 10), (20, 20), (25, 20), (35, 30), (None, 30)):
            snap = log.latest_snapshot(at)
            assert snap is not None
            assert snap.seq == expected
            assert snap.ts == TS0 + expected
            assert restore(snap) == log.state_at(expected)

    def test_state_at_equals_fold_of_the_prefix(self, make_log: LogMaker) -> None:
        log = make_log.open(snapshot_every=10)
        log.append_batch(ops(1, 17))
        for n in range(18, 42):
            log.append(show_op(n))
        events = log.read()
        for n in range(0, 42):
            assert log.state_at(n) == fold(events[:n]), n
        assert log.state == fold(events)
        assert log.state_at(0) == State()

    @pytest.mark.parametrize("seq", [-1, 6, 100])
    def test_state_at_outside_the_log(self, make_log: LogMaker, seq: int) -> None:
        log = make_log.open()
        log.append_batch(ops(1, 5))
        with pytest.raises(UsageError):
            log.state_at(seq)

    def test_write_snapshot(self, make_log: LogMaker) -> None:
        log = make_log.open(snapshot_every=100)
        log.append_batch(ops(1, 13))
        make_log.clock.now = 777.0
        snap = log.write_snapshot()
        assert (snap.seq, snap.ts, snap.digest) == (13, 777.0, digest(log.state))
        assert log.snapshots() == [(13, 777.0, snap.digest)]
        assert log.latest_snapshot() == snap
        assert restore(snap) == log.state
        # the automatic count starts again from the written snapshot
        log.append_batch(ops(14, 112))
        assert [s[0] for s in log.snapshots()] == [13]
        log.append(show_op(113))
        assert [s[0] for s in log.snapshots()] == [13, 113]

    # ------------------------------------------------------------ reopening (files)

    def test_log_id_is_stable_across_reopen(self, make_log: LogMaker) -> None:
        make_log.need_file()
        log = make_log.open()
        log_id, created = log.log_id, log.created
        log.close()
        make_log.clock.advance(60)
        again = make_log.open()
        assert (again.log_id, again.created) == (log_id, created)

    def test_reopen_continues_sequence_and_state(self, make_log: LogMaker) -> None:
        make_log.need_file()
        log = make_log.open(snapshot_every=10)
        log.append_batch(ops(1, 7))
        log.append(Submission(validate_operation(show_op(8)), OpId("ui-1", 1)))
        state = log.state.copy()
        log.close()
        again = make_log.open(snapshot_every=10)
        assert again.head == 8
        assert again.state == state
        assert again.append(Submission(validate_operation(show_op(8)), OpId("ui-1", 1))) == 8
        assert again.append_batch(ops(9, 12)).seqs == [9, 10, 11, 12]
        assert [s[0] for s in again.snapshots()] == [12]
        assert again.state == fold(again.read())
        again.close()
        third = make_log.open(snapshot_every=10)
        assert third.head == 12
        assert third.state == fold(third.read())

    def test_read_only_open_refuses_writes(self, make_log: LogMaker) -> None:
        make_log.need_file()
        log = make_log.open()
        log.append_batch(ops(1, 5))
        reader = make_log.open(readonly=True)
        assert reader.readonly
        assert reader.head == 5
        assert reader.state == log.state
        with pytest.raises(UsageError):
            reader.append(show_op(6))
        with pytest.raises(UsageError):
            reader.write_snapshot()
        with pytest.raises(UsageError):
            reader.append_events(log.read())
        with pytest.raises(UsageError):
            reader.reset(log.log_id, None)
        assert log.append(show_op(6)) == 6
        assert reader.head == 6

    # ------------------------------------------------------------ replica side

    def controller(self, count: int, snapshot_every: int = 10) -> EventLog:
        """A controller's log of `count` events appended one by one (snapshots every 10)."""
        log = EventLog.open(":memory:", clock=FakeClock(), snapshot_every=snapshot_every)
        for n in range(1, count + 1):
            log.append(show_op(n))
        return log

    def test_append_events_from_the_controller(self, make_log: LogMaker) -> None:
        with self.controller(25) as source:
            replica = make_log.open(log_id=source.log_id, snapshot_every=10)
            expected = State()
            reasons = [apply(expected, event) for event in source.read()]
            assert replica.append_events(source.read(until=8)) == reasons[:8]
            assert replica.append_events([]) == []
            assert replica.append_events(source.read(after=8)) == reasons[8:]
            assert replica.read() == source.read()
            assert replica.head == 25
            assert digest(replica.state) == digest(source.state)
            assert [s[0] for s in replica.snapshots()] == [25]
            assert replica.state_at(13) == source.state_at(13)

    def test_append_events_refuses_gaps_and_foreign_events(self, make_log: LogMaker) -> None:
        with self.controller(10) as source:
            replica = make_log.open(log_id=source.log_id)
            replica.append_events(source.read(until=3))
            with pytest.raises(UsageError):
                replica.append_events(source.read(after=4))  # 4 is missing
            with pytest.raises(UsageError):
                replica.append_events(source.read(until=3))  # already there
            events = source.read(after=3)
            with pytest.raises(UsageError):
                replica.append_events([events[0], events[2]])
            foreign = Event(4, 1.0, "another-log", events[0].op, events[0].op_id)
            with pytest.raises(UsageError):
                replica.append_events([foreign])
            assert replica.head == 3
            assert replica.state == source.state_at(3)

    def test_reset_to_a_snapshot_then_follow(self, make_log: LogMaker) -> None:
        with self.controller(25) as source:
            snap = source.latest_snapshot(22)
            assert snap is not None
            assert snap.seq == 20
            replica = make_log.open(snapshot_every=10)
            replica.append_batch(ops(1, 3))  # whatever it held before is thrown away
            replica.reset(source.log_id, snap)
            assert (replica.log_id, replica.base_seq, replica.head) == (source.log_id, 20, 20)
            assert replica.read() == []
            assert replica.count() == 0
            assert replica.state == restore(snap)
            assert replica.latest_snapshot() == snap
            assert replica.state_at(20) == source.state_at(20)
            with pytest.raises(UsageError):
                replica.state_at(19)
            with pytest.raises(UsageError):
                replica.append_events(source.read(after=19))
            replica.append_events(source.read(after=20))
            assert replica.head == 25
            assert digest(replica.state) == digest(source.state)
            assert replica.state_at(23) == source.state_at(23)

    def test_reset_survives_reopen(self, make_log: LogMaker) -> None:
        make_log.need_file()
        with self.controller(25) as source:
            snap = source.latest_snapshot()
            assert snap is not None
            replica = make_log.open()
            replica.reset(source.log_id, snap)
            replica.append_events(source.read(after=snap.seq))
            replica.close()
            again = make_log.open()
            assert (again.log_id, again.base_seq, again.head) == (source.log_id, 20, 25)
            assert digest(again.state) == digest(source.state)

    def test_reset_without_a_snapshot_starts_empty(self, make_log: LogMaker) -> None:
        log = make_log.open(log_id="old-log")
        log.append_batch(ops(1, 5))
        log.reset("new-log", None)
        assert (log.log_id, log.head, log.base_seq) == ("new-log", 0, 0)
        assert log.state == State()
        assert log.read() == []
        assert log.append(show_op(1)) == 1
        assert log.read()[0].log_id == "new-log"

    # ------------------------------------------------------------ closing

    def test_a_closed_log_raises_usage_error(self, make_log: LogMaker) -> None:
        log = make_log.open()
        log.append_batch(ops(1, 3))
        events = log.read()
        log.close()
        log.close()  # closing twice is fine
        calls: list[Callable[[], object]] = [
            lambda: log.append(show_op(4)),
            lambda: log.append_batch(ops(4, 5)),
            lambda: log.read(),
            lambda: log.read_time(),
            lambda: log.head,
            lambda: log.state_at(1),
            lambda: log.latest_snapshot(),
            lambda: log.snapshots(),
            lambda: log.write_snapshot(),
            lambda: log.count(),
            lambda: log.time_bounds(),
            lambda: log.seq_at_time(0.0),
            lambda: log.append_events(events),
            lambda: log.reset(log.log_id, None),
        ]
        for call in calls:
            with pytest.raises(UsageError):
                call()

    def test_context_manager_closes(self, make_log: LogMaker) -> None:
        with make_log.open() as log:
            log.append(show_op(1))
        with pytest.raises(UsageError):
            log.read()


# ---------------------------------------------------------------- store bugs (memory is enough)


def test_append_keeps_the_op_id_of_a_wire_dict() -> None:
    with EventLog.open(":memory:") as log:
        assert log.append(show_op(1), OpId("ui-1", 1)) == 1
        assert log.append(show_op(1), OpId("ui-1", 1)) == 1
        assert log.head == 1


def test_a_peer_cannot_take_the_op_ids_the_log_makes() -> None:
    with EventLog.open(":memory:") as log:
        spoof = {**show_op(1), "op_id": ["~" + log.log_id, 2]}
        try:
            log.append(spoof)
        except ValidationError as exc:  # refusing the reserved origin is a fine fix too
            assert exc.field == "op_id[0]"
            return
        assert log.append(show_op(2)) == 2
        assert log.append_batch([show_op(3), {**show_op(4), "op_id": spoof["op_id"]}]).seqs == [
            3,
            1,
        ]


def test_the_state_shares_nothing_with_the_caller() -> None:
    with EventLog.open(":memory:", snapshot_every=2) as log:
        data = {"config": {"gain": 1}}
        log.append(wire("player", "add", "node-1", "audiomixer_0", data))
        data["config"]["gain"] = 99  # the caller reuses its dict
        log.append(show_op(1))  # seq 2: an automatic snapshot of the live state
        snap = log.latest_snapshot()
        assert snap is not None
        assert snap.seq == 2
        assert snap.digest == digest(fold(log.read()))
        assert log.state == fold(log.read())


# ---------------------------------------------------------------- files that are not logs


def test_random_bytes_are_not_a_log(log_path: Path) -> None:
    log_path.write_bytes(random.Random(7).randbytes(16384))
    for readonly in (False, True):
        with pytest.raises(LogFileError) as info:
            EventLog.open(log_path, readonly=readonly)
        assert info.value.path == str(log_path)
        assert str(log_path) in str(info.value)
        assert "not a SQLite database" in str(info.value)


def test_sqlite_database_without_meta_is_not_a_log(log_path: Path) -> None:
    with sqlite3.connect(log_path) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    conn.close()
    for readonly in (False, True):
        with pytest.raises(LogFileError) as info:
            EventLog.open(log_path, readonly=readonly)
        assert "not a cuelog log" in str(info.value)
        assert str(log_path) in str(info.value)


def test_meta_of_another_app_is_not_a_log(log_path: Path) -> None:
    with sqlite3.connect(log_path) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('app', 'datasette'), ('schema_version', '1')")
    conn.close()
    with pytest.raises(LogFileError) as info:
        EventLog.open(log_path)
    assert "not a cuelog log" in str(info.value)


def _set_meta(path: Path, key: str, value: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    conn.close()


def test_newer_schema_is_refused(log_path: Path) -> None:
    with EventLog.open(log_path) as log:
        log.append_batch(ops(1, 3))
    _set_meta(log_path, "schema_version", str(SCHEMA_VERSION + 1))
    for readonly in (False, True):
        with pytest.raises(LogFileError) as info:
            EventLog.open(log_path, readonly=readonly)
        assert "newer" in str(info.value)
        assert str(log_path) in str(info.value)


@pytest.mark.parametrize(("key", "value"), [("schema_version", "two"), ("log_id", "")])
def test_unreadable_meta_is_damage(log_path: Path, key: str, value: str) -> None:
    EventLog.open(log_path).close()
    _set_meta(log_path, key, value)
    with pytest.raises(LogFileError) as info:
        EventLog.open(log_path)
    assert "damaged" in str(info.value)


def _write_v1_log(path: Path, count: int) -> None:
    """A log as schema 1 wrote it: meta and events, no snapshots table, no ts index."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY, ts FLOAT NOT NULL, type TEXT NOT NULL,
            action TEXT NOT NULL, sender TEXT NOT NULL, target TEXT NOT NULL, data TEXT,
            origin TEXT NOT NULL, origin_seq INTEGER NOT NULL
        );
        CREATE UNIQUE INDEX events_op_id ON events (origin, origin_seq);
        """
    )
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("app", "cuelog"), ("schema_version", "1"), ("log_id", LOG_ID), ("created", "12.5")],
    )
    rows = []
    for n in range(1, count + 1):
        raw = show_op(n)
        data = None if raw["data"] is None else dumps(raw["data"]).decode()
        rows.append(
            (n, TS0 + n, raw["type"], raw["action"], raw["sender"], raw["target"], data, "ui", n)
        )
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def test_older_schema_is_migrated(log_path: Path) -> None:
    _write_v1_log(log_path, 40)
    with pytest.raises(LogFileError) as info:
        EventLog.open(log_path, readonly=True)
    assert "migrate" in str(info.value)
    assert "snapshots" not in _tables(log_path)

    with EventLog.open(log_path, snapshot_every=50) as log:
        assert (log.log_id, log.head, log.base_seq, log.created) == (LOG_ID, 40, 0, 12.5)
        assert log.state == fold(log.read())
        assert log.read(after=39)[0].op_id == OpId("ui", 40)
        assert log.append(show_op(41)) == 41
        assert log.append({**show_op(7), "op_id": ["ui", 7]}) == 7
        log.append_batch(ops(42, 50))
        assert [s[0] for s in log.snapshots()] == [50]
        state = log.state.copy()
    assert {"snapshots", "events_ts"} <= _tables(log_path)
    with EventLog.open(log_path, readonly=True) as reader:
        assert reader.head == 50
        assert reader.state == state
    with sqlite3.connect(log_path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert version == (str(SCHEMA_VERSION),)


@pytest.mark.parametrize(
    "name", ["with space.cuelog", "what?.cuelog", "no#1.cuelog", "100%.cuelog"]
)
def test_read_only_open_of_an_awkward_path(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with EventLog.open(path) as log:
        log.append_batch(ops(1, 3))
    with EventLog.open(path, readonly=True) as reader:
        assert reader.head == 3
        assert reader.path == str(path)


def test_read_only_open_of_a_path_with_a_percent_escape(tmp_path: Path) -> None:
    path = tmp_path / "show%41.cuelog"
    with EventLog.open(path) as log:
        log.append_batch(ops(1, 3))
    with EventLog.open(tmp_path / "showA.cuelog") as decoy:
        decoy.append(show_op(1))
    with EventLog.open(path, readonly=True) as reader:
        assert reader.head == 3


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.cuelog"
    for create, readonly in ((False, False), (True, True)):
        with pytest.raises(LogFileError) as info:
            EventLog.open(path, create=create, readonly=readonly)
        assert str(path) in str(info.value)
        assert not path.exists()


def test_a_directory_is_not_a_log(tmp_path: Path) -> None:
    with pytest.raises(LogFileError) as info:
        EventLog.open(tmp_path)
    assert "directory" in str(info.value)


def test_missing_parent_directory(tmp_path: Path) -> None:
    with pytest.raises(LogFileError):
        EventLog.open(tmp_path / "no" / "such" / "dir.cuelog")


def test_empty_file_is_not_a_log_when_not_creating(log_path: Path) -> None:
    log_path.write_bytes(b"")
    for create, readonly in ((False, False), (True, True)):
        with pytest.raises(LogFileError) as info:
            EventLog.open(log_path, create=create, readonly=readonly)
        assert "empty" in str(info.value)
    with EventLog.open(log_path) as log:  # creating into an empty file is fine
        assert log.append(show_op(1)) == 1


# ---------------------------------------------------------------- damaged files

PAGE = 4096


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed log of 3000 events with snapshots every 1000, built once."""
    path = tmp_path_factory.mktemp("damage") / "big.cuelog"
    clock = FakeClock()
    with EventLog.open(path, snapshot_every=1000, clock=clock, synchronous="OFF") as log:
        for first in range(1, 3001, 500):
            clock.advance(1.0)
            log.append_batch(ops(first, first + 499))
    return path


def _damage(source: Path, target: Path, how: str) -> None:
    target.write_bytes(source.read_bytes())
    size = target.stat().st_size
    assert size > 40 * PAGE
    with target.open("r+b") as f:
        if how == "truncated":
            f.truncate(size * 55 // 100 // PAGE * PAGE)
        elif how == "overwritten":
            f.seek(size * 40 // 100 // PAGE * PAGE)
            f.write(random.Random(3).randbytes(8 * PAGE))
        elif how == "zeroed":
            f.seek(size * 60 // 100 // PAGE * PAGE)
            f.write(bytes(6 * PAGE))
        else:
            f.seek(size // 2 + 123)
            f.write(b"\xff" * 300)


def _readers(log: EventLog) -> list[Callable[[], object]]:
    """Every way of reading the whole log that replay and catch-up use."""
    return [
        lambda: log.head,
        lambda: log.read(),
        lambda: list(log.iter_events(chunk=700)),
        lambda: log.read_time(since=0.0),
        lambda: [log.state_at(n) for n in range(0, log.head + 1, 250)],
        lambda: log.latest_snapshot(),
        lambda: log.latest_snapshot(1500),
    ]


@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
@pytest.mark.parametrize("how", ["truncated", "overwritten", "zeroed", "scribbled"])
def test_damaged_file_gives_log_file_error(
    big_log: Path, tmp_path: Path, how: str, readonly: bool
) -> None:
    path = tmp_path / f"{how}.cuelog"
    _damage(big_log, path, how)
    try:
        log = EventLog.open(path, readonly=readonly)
    except LogFileError as exc:
        assert exc.path == str(path)
        return
    found: list[LogFileError] = []
    with log:
        for read in _readers(log):
            try:
                read()
            except LogFileError as exc:  # anything else fails the test
                assert exc.path == str(path)
                found.append(exc)
    assert found, f"{how}: damage went unnoticed"


def test_damaged_file_summaries_give_log_file_error(big_log: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad-index.cuelog"
    path.write_bytes(big_log.read_bytes())
    pages = _pages_of(path, "events_ts")
    assert len(pages) > 3
    with path.open("r+b") as f:
        for page in pages[1:]:  # every page of the ts index but its root
            f.seek((page - 1) * PAGE)
            f.write(bytes(PAGE))
    found: list[LogFileError] = []
    with EventLog.open(path, readonly=True) as log:
        assert log.head == 3000
        for call in (log.count, log.time_bounds, log.snapshots, lambda: log.seq_at_time(1e12)):
            try:
                call()
            except LogFileError as exc:  # a raw sqlite3 error fails the test
                found.append(exc)
    assert found


def _pages_of(path: Path, name: str) -> list[int]:
    """The page numbers of one table or index (SQLite's dbstat table)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (name,))
        return [row[0] for row in rows]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table")
    finally:
        conn.close()


def _delete_event(path: Path, seq: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
    conn.close()


def test_a_hole_in_the_events_is_damage(log_path: Path) -> None:
    with EventLog.open(log_path) as log:
        log.append_batch(ops(1, 6))
    _delete_event(log_path, 3)
    with pytest.raises(LogFileError) as info:
        EventLog.open(log_path)
    assert "damaged" in str(info.value)
    with EventLog.open(log_path, readonly=True) as reader, pytest.raises(LogFileError):
        reader.state_at(6)


def test_an_unreadable_event_row_is_damage(log_path: Path) -> None:
    with EventLog.open(log_path) as log:
        log.append_batch(ops(1, 6))
    with sqlite3.connect(log_path) as conn:
        conn.execute("UPDATE events SET data = '{not json' WHERE seq = 4")
        conn.execute("UPDATE events SET type = 'video' WHERE seq = 5")
    conn.close()
    with pytest.raises(LogFileError) as info:
        EventLog.open(log_path)
    assert "damaged" in str(info.value)
    with EventLog.open(log_path, readonly=True) as reader:
        assert seqs(reader.read(until=3)) == [1, 2, 3]
        with pytest.raises(LogFileError):
            reader.read()
        with pytest.raises(LogFileError):
            reader.read(after=4)


# ---------------------------------------------------------------- a reader beside a writer


def test_reader_sees_a_consistent_prefix_and_never_blocks_the_writer(log_path: Path) -> None:
    writer = EventLog.open(log_path, snapshot_every=40, synchronous="NORMAL")
    writer.append_batch(ops(1, 5))
    reader = EventLog.open(log_path, readonly=True)
    # a raw connection holding a read transaction open the whole time
    holder = sqlite3.connect(log_path, isolation_level=None)
    holder.execute("BEGIN")
    assert holder.execute("SELECT COUNT(*) FROM events").fetchone() == (5,)

    digests = {writer.head: digest(writer.state)}
    seen: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read_while_writing() -> None:
        try:
            while not done.is_set() or not seen or seen[-1][0] < writer.head:
                head = reader.head
                events = reader.read(until=head)
                assert seqs(events) == list(range(1, head + 1))
                seen.append((head, digest(reader.state_at(head))))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=read_while_writing)
    thread.start()
    started = time.monotonic()
    try:
        for first in range(6, 306, 6):
            writer.append_batch(ops(first, first + 5))
            digests[writer.head] = digest(writer.state)
        elapsed = time.monotonic() - started
    finally:
        done.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert not errors, errors
    assert elapsed < 8.0, "the writer was held up by readers"
    assert writer.head == 305
    # the held transaction still sees the old prefix; the reader sees everything
    assert holder.execute("SELECT COUNT(*) FROM events").fetchone() == (5,)
    holder.execute("COMMIT")
    holder.close()
    assert reader.head == 305
    assert len(seen) >= 2
    for head, seen_digest in seen:
        assert seen_digest == digests[head], head
    assert seen[-1][0] == 305
    reader.close()
    writer.close()


def test_rewind_cuts_an_old_tail_and_keeps_a_whole_copy_first(log_path: Path) -> None:
    """`rewind` (an old leader's tail): the whole file is copied, under a name that says what
    it holds, then the events after the seq are cut and the state is the state at that seq;
    the file goes on from there, keeping its history."""
    with EventLog.open(log_path, snapshot_every=5) as elog:
        for n in range(1, 13):
            elog.append(show_op(n))
        at_eight = digest(elog.state_at(8))
        assert elog.rewind(8)
        assert elog.head == 8 and digest(elog.state) == at_eight
        aside = elog.set_aside
        assert aside is not None and ".upto-12." in aside
        assert not list(log_path.parent.glob("*.part"))
        with EventLog.open(aside, readonly=True) as copy:
            assert copy.head == 12
        seq = elog.append(show_op(9))  # the file goes on by tail, history kept
        assert seq == 9 and elog.read(0)[0].seq == 1
        assert elog.rewind(9)  # nothing after it: nothing to do
    with EventLog.open(log_path) as again:  # what was cut stays cut after a reopen
        assert again.head == 9 and fold(again.read(0)).seq == 9
