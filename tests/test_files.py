"""Every copy of the show is precious: the store's side of it (issue 7, items 3-7).

One writer per file (a lock the kernel drops when the writer dies), files that know whose they
are, a full resync that sets another log's file aside instead of wiping it, a controller that
notices its file deleted or replaced, damage found at open, and readers that see one snapshot.
Process-level versions of these are in tests/test_file_faults.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eventlog import (
    Event,
    EventLog,
    LogFileError,
    OpId,
    Submission,
    UsageError,
    apply,
    digest,
    fold,
    take,
    validate_operation,
)
from replicas.replica_file import ReplicaFile
from tests.helpers import show_op
from tools import cli, rebuild
from tools.bench import data as bench_data

ROOT = Path(__file__).resolve().parent.parent


def fill(elog: EventLog, count: int, start: int = 1, origin: str = "t") -> None:
    for first in range(start, start + count, 100):
        last = min(first + 100, start + count)
        elog.append_batch(
            [
                Submission(validate_operation(show_op(n)), OpId(origin, n))
                for n in range(first, last)
            ]
        )


# ---------------------------------------------------------------------------- one writer


def test_a_second_writer_is_refused_naming_the_first(log_path: Path) -> None:
    owner = {"what": "cuelog controller", "listen": "tcp://127.0.0.1:9093"}
    with EventLog.open(log_path, owner=owner) as first:
        fill(first, 5)
        with pytest.raises(LogFileError) as info:
            EventLog.open(log_path)
        text = str(info.value)
        assert f"pid {os.getpid()}" in text
        assert "listening on tcp://127.0.0.1:9093" in text
        assert "one writer per log file" in text
        assert "\n" not in text
        # readers are never refused
        with EventLog.open(log_path, readonly=True) as reader:
            assert reader.head == 5
        fill(first, 5, start=6)  # the first writer never noticed
    with EventLog.open(log_path) as again:  # released at close
        assert again.head == 10
    assert not Path(f"{log_path}.lock").exists()


def test_the_lock_of_a_killed_writer_is_gone(log_path: Path) -> None:
    """kill -9 of the writer: the kernel drops its lock, the next writer opens at once."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from eventlog import EventLog\n"
            "log = EventLog.open(sys.argv[1], owner={'what': 'doomed'})\n"
            "print('open', flush=True)\n"
            "time.sleep(60)\n",
            str(log_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(LogFileError, match=f"pid {child.pid} .*doomed"):
            EventLog.open(log_path)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        assert child.stdout is not None
        child.stdout.close()
    assert Path(f"{log_path}.lock").exists()  # left behind, but nobody holds it
    with EventLog.open(log_path) as elog:
        assert elog.head == 0


# ---------------------------------------------------------------------------- roles


def test_files_know_whose_they_are(tmp_path: Path) -> None:
    ctl, rep = tmp_path / "ctl.db", tmp_path / "node.db"
    with EventLog.open(ctl, role="controller") as elog:
        fill(elog, 3)
        log_id = elog.log_id
    with pytest.raises(LogFileError, match=r"is a controller's log .* not a node replica"):
        EventLog.open(ctl, role="replica")
    with EventLog.open(rep, role="replica") as replica:
        replica.reset(log_id, None)
    with pytest.raises(LogFileError, match="cuelog rebuild --from"):
        EventLog.open(rep, role="controller")
    # a file from before roles takes the role of its first user
    old = tmp_path / "old.db"
    EventLog.open(old).close()
    EventLog.open(old, role="controller").close()
    with EventLog.open(old, readonly=True) as elog:
        assert elog.role == "controller"


# ---------------------------------------------------------------------------- set aside


def test_a_replica_of_another_log_is_set_aside_not_wiped(log_path: Path) -> None:
    with EventLog.open(log_path, role="replica", clock=lambda: 1.7e9) as replica:
        replica.reset("log-one", None)
        old = [e._replace(log_id="log-one") for e in _events(50)]
        replica.append_events(old)
        replica.reset("log-two", None)
        aside = replica.set_aside
        assert aside is not None
        assert aside.startswith(f"{log_path}.log-log-one.upto-50.")
        assert replica.log_id == "log-two"
        assert replica.head == 0
        # the same log again with a snapshot ahead: nothing else to keep, done in place
        replica.reset("log-two", None)
        assert replica.set_aside is None
    with EventLog.open(aside, readonly=True) as kept:
        assert kept.log_id == "log-one"
        assert [e.seq for e in kept.read()] == list(range(1, 51))
    with EventLog.open(log_path, readonly=True) as fresh:
        assert fresh.log_id == "log-two"
        assert fresh.role == "replica"


def test_a_controller_behind_the_replica_makes_it_set_aside(log_path: Path) -> None:
    with EventLog.open(log_path, role="replica") as replica:
        replica.reset("the-log", None)
        replica.append_events([e._replace(log_id="the-log") for e in _events(30)])
        replica.reset("the-log", None)  # the controller's head is behind 30
        aside = replica.set_aside
        assert aside is not None and ".log-the-log.upto-30." in aside
        # a snapshot ahead of the replica, same log: the events before it are the
        # controller's too, so the file is reset in place
        replica.append_events([e._replace(log_id="the-log") for e in _events(10)])
        state = replica.state.copy()
        for event in _events(20)[10:]:
            apply(state, event._replace(log_id="the-log"))
        replica.reset("the-log", take(state, 1.0))
        assert replica.set_aside is None
        assert replica.head == 20
    assert len(list(log_path.parent.glob("*.upto-*"))) == 1


def _events(count: int) -> list[Event]:
    return [
        Event(n, 1.7e9 + n, "x", validate_operation(show_op(n)), OpId("t", n))
        for n in range(1, count + 1)
    ]


# ---------------------------------------------------------------------------- deleted file


def test_a_deleted_or_replaced_file_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "ctl.db"
    with EventLog.open(path) as elog:
        fill(elog, 5)
        elog.check_file()
        os.unlink(path)
        with pytest.raises(LogFileError, match="was deleted while"):
            elog.check_file()
        elog.save_copy(tmp_path / "saved.db")
    with EventLog.open(tmp_path / "saved.db", readonly=True) as saved:
        assert saved.head == 5
    with EventLog.open(path) as elog:
        fill(elog, 5)
        os.rename(path, tmp_path / "moved.db")
        EventLog.open(tmp_path / "other.db").close()
        os.rename(tmp_path / "other.db", path)
        with pytest.raises(LogFileError, match="was replaced by another file"):
            elog.check_file()


# ---------------------------------------------------------------------------- damage at open


def test_random_bytes_over_eight_middle_pages_are_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "ctl.db"
    bench_data.build_big_log(path, 20_000)
    EventLog.open(path, check=True).close()
    size = path.stat().st_size
    page = 4096
    middle = (size // page) // 2
    with open(path, "r+b") as f:
        f.seek(middle * page)
        f.write(random.Random(7).randbytes(8 * page))
    with EventLog.open(path) as unchecked:  # what the controller used to do: no complaint
        assert unchecked.head == 20_000
    with pytest.raises(LogFileError) as info:
        EventLog.open(path, check=True)
    text = str(info.value)
    assert "is damaged" in text and "quick check" in text
    assert f"cuelog rebuild --from NODE.db --db {path}" in text
    assert "\n" not in text


def test_a_hole_or_a_bad_snapshot_is_refused_at_open(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "ctl.db"
    with EventLog.open(path, snapshot_every=10) as elog:
        fill(elog, 25)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM events WHERE seq = 7")
    conn.commit()
    with pytest.raises(LogFileError, match="between seq 1 and 25"):
        EventLog.open(path, check=True)
    conn.execute("UPDATE snapshots SET digest = 'x' WHERE seq = 20")
    conn.execute("DELETE FROM events WHERE seq < 7")  # now 8..25, gapless from 8: not from 1
    conn.commit()
    conn.close()
    with pytest.raises(LogFileError, match="is damaged"):
        EventLog.open(path, check=True)


# ---------------------------------------------------------------------------- one snapshot


def test_a_pinned_reader_sees_one_snapshot_while_the_writer_appends(log_path: Path) -> None:
    with EventLog.open(log_path, snapshot_every=50) as writer:
        fill(writer, 200)
        with EventLog.open(log_path, readonly=True, pin=True) as pinned:
            head = pinned.head
            fill(writer, 300, start=201)
            assert pinned.head == head == 200
            assert [e.seq for e in pinned.iter_events(chunk=64)] == list(range(1, 201))
            assert max(seq for seq, _, _ in pinned.snapshots()) == 200
            assert digest(pinned.state_at(200)) == digest(writer.state_at(200))
        with EventLog.open(log_path, readonly=True) as live:
            assert live.head == 500


def test_replay_verify_of_a_log_being_written_never_fails(tmp_path: Path) -> None:
    """A writer in another process appends as fast as it can while verify reads the file."""
    path = tmp_path / "live.db"
    bench_data.build_big_log(path, 30_000, snapshot_every=500)
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests._crash_writer", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None
        writer.stdout.readline()  # it is appending
        results = []
        for _ in range(4):
            results.append(
                subprocess.run(
                    [sys.executable, "-m", "tools.replay", "verify", "--quiet", str(path)],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            )
        assert writer.poll() is None, "the writer kept appending throughout"
    finally:
        writer.kill()
        writer.wait(10)
        assert writer.stdout is not None and writer.stderr is not None
        writer.stdout.close()
        writer.stderr.close()
    for result in results:
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("OK ")
    with EventLog.open(path, readonly=True) as elog:
        assert elog.head > 30_000


# ---------------------------------------------------------------------------- a failing replica


def _show_events(first: int, last: int, log_id: str) -> list[Event]:
    return [
        Event(n, 1.7e9 + n, log_id, validate_operation(show_op(n)), OpId("t", n))
        for n in range(first, last + 1)
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _full_disk(elog: EventLog) -> None:
    """A real SQLITE_FULL: the file may not grow by a single page any more."""
    pages = elog._conn.execute("PRAGMA page_count").fetchone()[0]
    elog._conn.execute(f"PRAGMA max_page_count = {pages}")


def _roomy_disk(elog: EventLog) -> None:
    elog._conn.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_replica_disk_is_followed_in_memory_and_caught_up(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    elog = EventLog.open(log_path, role="replica", synchronous="NORMAL")
    store = ReplicaFile(elog, node_id="a", clock=clock)
    store.reset("L", None)
    store.append_events(_show_events(1, 100, "L"))
    _full_disk(elog)
    everything = _show_events(1, 3000, "L")
    for first in range(101, 3001, 50):
        store.append_events(everything[first - 1 : first + 49])  # never raises
    assert not store.healthy and "full" in (store.problem or "")
    assert store.head == 3000
    assert digest(store.state) == digest(fold(everything))
    assert 100 <= elog.head < 3000  # the file stopped where the disk did
    said = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(said) == 1, "said once"
    assert store.retry() is False  # not yet due, and the disk is still full
    clock.now += 5
    assert store.retry() is False
    _roomy_disk(elog)
    clock.now += 5
    assert store.retry() is True
    assert store.healthy and elog.head == 3000
    assert digest(elog.state) == digest(fold(everything))
    store.append_events(_show_events(3001, 3010, "L"))
    elog.close()
    with EventLog.open(log_path, readonly=True) as again:
        assert [e.seq for e in again.read()] == list(range(1, 3011))


def test_a_backlog_past_its_bound_becomes_a_snapshot(log_path: Path) -> None:
    clock = Clock()
    elog = EventLog.open(log_path, role="replica", synchronous="NORMAL")
    store = ReplicaFile(elog, clock=clock, max_backlog_events=300)
    store.reset("L", None)
    store.append_events(_show_events(1, 50, "L"))
    _full_disk(elog)
    everything = _show_events(1, 2000, "L")
    for first in range(51, 2001, 50):
        store.append_events(everything[first - 1 : first + 49])
    _roomy_disk(elog)
    clock.now += 5
    assert store.retry() is True
    assert elog.head == 2000 and elog.base_seq == 2000  # the same log, from its snapshot
    assert digest(elog.state) == digest(fold(everything))
    elog.close()


def test_a_resync_while_the_file_fails_sets_the_old_log_aside_later(log_path: Path) -> None:
    clock = Clock()
    elog = EventLog.open(log_path, role="replica", synchronous="NORMAL")
    store = ReplicaFile(elog, clock=clock)
    store.reset("old", None)
    store.append_events(_show_events(1, 200, "old"))
    _full_disk(elog)
    store.append_events(_show_events(201, 400, "old"))
    assert not store.healthy
    store.reset("new", None)  # the controller now holds another log
    store.append_events(_show_events(1, 30, "new"))
    assert store.head == 30 and store.log_id == "new"
    _roomy_disk(elog)
    clock.now += 5
    assert store.retry() is True
    kept = [p for p in log_path.parent.iterdir() if ".log-old." in p.name and p.suffix != ".db-wal"]
    assert len([p for p in kept if not p.name.endswith(("-wal", "-shm"))]) == 1
    assert elog.log_id == "new" and elog.head == 30
    elog.close()
    aside = next(p for p in kept if not p.name.endswith(("-wal", "-shm")))
    with EventLog.open(aside, readonly=True) as old:
        assert old.log_id == "old" and old.head >= 200  # what the file held when it failed


# ---------------------------------------------------------------------------- rebuild


def _replica(path: Path, log_id: str, events: list[Event]) -> Path:
    with EventLog.open(path, role="replica", snapshot_every=50) as replica:
        replica.reset(log_id, None)
        replica.append_events([e._replace(log_id=log_id) for e in events])
    return path


def test_rebuild_takes_the_furthest_replica_and_never_overwrites(tmp_path: Path) -> None:
    everything = _show_events(1, 300, "L")
    a = _replica(tmp_path / "a.db", "L", everything[:200])
    b = _replica(tmp_path / "b.db", "L", everything)
    target = tmp_path / "ctl.db"
    summary = rebuild.rebuild([str(a), str(b)], str(target))
    assert "from " + str(b) in summary and "seqs 1..300" in summary
    with EventLog.open(target, role="controller", check=True) as elog:
        assert (elog.log_id, elog.head, elog.role) == ("L", 300, "controller")
        assert digest(elog.state) == digest(fold(everything))
    with pytest.raises(UsageError, match="exists"):
        rebuild.rebuild([str(a)], str(target))
    rebuild.rebuild([str(a)], str(target), force=True)
    kept = list(tmp_path.glob("ctl.db.replaced-*"))
    assert len(kept) == 1
    with EventLog.open(kept[0], readonly=True) as old:
        assert old.head == 300  # the file it replaced, intact
    with EventLog.open(target, readonly=True) as elog:
        assert elog.head == 200


def test_rebuild_refuses_replicas_that_disagree_or_are_damaged(tmp_path: Path) -> None:
    import sqlite3

    everything = _show_events(1, 300, "L")
    b = _replica(tmp_path / "b.db", "L", everything)
    forked = everything[:149] + _show_events(1000, 1050, "L")
    forked = [e._replace(seq=n) for n, e in enumerate(forked, start=1)]
    c = _replica(tmp_path / "c.db", "L", forked)
    with pytest.raises(LogFileError, match="diverges"):
        rebuild.rebuild([str(b), str(c)], str(tmp_path / "x.db"))
    other = _replica(tmp_path / "o.db", "M", everything[:10])
    with pytest.raises(UsageError, match="different logs"):
        rebuild.rebuild([str(b), str(other)], str(tmp_path / "x.db"))
    conn = sqlite3.connect(b)
    conn.execute("DELETE FROM events WHERE seq = 77")
    conn.commit()
    conn.close()
    with pytest.raises(LogFileError, match="not a sound replica: gap"):
        rebuild.rebuild([str(b)], str(tmp_path / "x.db"))
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["rebuild", "--help"])
    assert exit_info.value.code == 0
