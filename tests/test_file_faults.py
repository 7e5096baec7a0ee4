"""Never lose or wipe a copy of the show: real `cuelog` processes and real files (issue 7, 3-6).

- two controllers on one file: the second is refused, naming the first; kill -9 frees the file
- the controller's file deleted while it runs: it acknowledges nothing more and says why; a
  restarted controller starts a new log, and the node sets its replica of the old one aside
  (never wipes it); `cuelog rebuild` makes the controller's log again from that file
- a controller restarted on an older backup: the node sets its replica aside, status says so
- random bytes over eight pages in the middle of the controller's file: refused at restart
- a node on the controller's file: refused; a node whose disk fills: follows in memory, then
  catches its file up

Every wait is on a condition with a deadline; every process is stopped at the end.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlog import ActionType, CuelogError, EventLog, Operation, OperationType, digest
from replicas.client import ControllerClient
from tests.cluster import Proc, converged, ipc_address, status, wait_for
from tools.bench import data as bench_data

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if "error" in line.lower()]


class LimitedProc(Proc):
    """A `cuelog` subcommand whose files may not grow past `fsize` bytes (RLIMIT_FSIZE: a
    write past it fails the way a full disk does; SIGXFSZ is ignored by Python)."""

    def __init__(self, folder: Path, name: str, args: list[str], fsize: int) -> None:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

        super().__init__(folder, name, args, preexec_fn=limit)

    def lift_limit(self) -> None:
        inf = resource.RLIM_INFINITY
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (inf, inf))


class Rig:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.address = ipc_address(folder)
        self.db = folder / "ctl.db"
        self.procs: list[Proc] = []
        self.acked: dict[int, str] = {}
        self._n = 0

    def controller(self, name: str = "controller", address: str | None = None) -> Proc:
        args = ["controller", "--db", str(self.db), "--listen", address or self.address]
        proc = Proc(self.folder, name, [*args, "--ws", "off", "--snapshot-every", "100"])
        self.procs.append(proc)
        return proc

    def node(self, node_id: str, fsize: int | None = None) -> Proc:
        args = ["node", "--id", node_id, "--controller", self.address]
        args += ["--db", str(self.folder / f"{node_id}.db")]
        proc: Proc = (
            Proc(self.folder, node_id, args)
            if fsize is None
            else LimitedProc(self.folder, node_id, args, fsize)
        )
        self.procs.append(proc)
        return proc

    def serving(self) -> bool:
        try:
            status(self.address)
        except CuelogError:
            return False
        return True

    def traffic(self, count: int) -> None:
        """`count` acknowledged ops, remembered by seq."""
        with ControllerClient(self.address, timeout=5) as client:
            while count > 0:
                ops = []
                for _ in range(min(20, count)):
                    self._n += 1
                    ops.append(
                        Operation(
                            OperationType.STATUS,
                            ActionType.UPDATE,
                            "driver",
                            "nextcue",
                            {"nextcue": f"c{self._n}"},
                        )
                    )
                results = client.submit(ops, node="driver", retries=20)
                for op, result in zip(ops, results, strict=True):
                    self.acked[result["seq"]] = op.data["nextcue"]  # type: ignore[index]
                count -= len(ops)

    def holds_every_ack(self, path: Path | str) -> int:
        with EventLog.open(path, readonly=True) as elog:
            events = {e.seq: e for e in elog.iter_events()}
            assert sorted(events) == list(range(1, elog.head + 1)), "gapless"
            for seq, value in self.acked.items():
                assert events[seq].op.data == {"nextcue": value}, f"acknowledged {seq} lost"
            return elog.head

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.stop()


# ---------------------------------------------------------------------------- 3. one writer


def test_a_second_controller_on_the_same_file_is_refused_naming_the_first(rig: Rig) -> None:
    first = rig.controller()
    wait_for("controller serving", rig.serving)
    rig.traffic(40)
    other = ipc_address(rig.folder, "other")
    result = cli("controller", "--db", str(rig.db), "--listen", other, "--ws", "off")
    assert result.returncode == 1, result.stderr
    lines = errors(result)
    assert len(lines) == 1, result.stderr
    assert f"pid {first.proc.pid}" in lines[0]
    assert f"listening on {rig.address}" in lines[0]
    assert "one writer per log file" in lines[0]
    assert "Traceback" not in result.stderr
    # the first one never noticed: it commits, and its status is the file's head
    rig.traffic(40)
    assert status(rig.address)["head_seq"] == rig.holds_every_ack(rig.db)
    # kill -9: the kernel drops the lock with the process; the next controller starts at once
    first.kill9()
    rig.controller("second")
    wait_for("second controller serving", rig.serving)
    rig.traffic(20)
    assert rig.holds_every_ack(rig.db) >= 100


# ---------------------------------------------------------------------------- 4. lost file


def test_a_deleted_file_stops_acks_and_no_replica_is_ever_wiped(rig: Rig) -> None:
    ctl = rig.controller()
    rig.node("a")
    wait_for("node a in sync", lambda: rig.serving() and converged(rig.address, ["a"]))
    rig.traffic(200)
    wait_for("node a has everything", lambda: converged(rig.address, ["a"]))
    old_log = status(rig.address)["log_id"]
    acked_head = max(rig.acked)

    os.unlink(rig.db)
    with pytest.raises(CuelogError, match="was deleted while"):
        rig.traffic(1)
    rig._n -= 1
    st = status(rig.address)
    assert any("was deleted" in p for p in st.get("problems", [])), st
    shown = cli("status", "--controller", rig.address)
    assert shown.returncode == 1
    assert "PROBLEM" in shown.stdout and "was deleted" in shown.stdout
    said = [line for line in ctl.log_text().splitlines() if "was deleted while" in line]
    assert len(said) == 1, said
    # what the controller still had open is saved, every acknowledged op in it
    saved = list(rig.folder.glob("ctl.db.saved-*"))
    assert len(saved) == 1 and saved[0].name in said[0]
    assert rig.holds_every_ack(saved[0]) >= acked_head

    # restarted on the missing path: a new log; the node sets its replica of the old one aside
    assert ctl.stop() == 0
    rig.controller("controller-2")
    wait_for("new controller serving", rig.serving)
    new_log = status(rig.address)["log_id"]
    assert new_log != old_log
    wait_for("node a on the new log", lambda: converged(rig.address, ["a"]), 30)
    kept = [p for p in rig.folder.glob(f"a.db.log-{old_log}.upto-*") if p.suffix != ".db-shm"]
    kept = [p for p in kept if not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1, list(rig.folder.iterdir())
    assert rig.holds_every_ack(kept[0]) >= acked_head
    node_said = [line for line in rig.procs[1].log_text().splitlines() if "set aside as" in line]
    assert len(node_said) == 1 and kept[0].name in node_said[0]

    # rebuild the controller's log from the node's replica of it
    refused = cli("rebuild", "--from", str(kept[0]), "--db", str(rig.db))
    assert refused.returncode == 1 and "exists" in refused.stderr
    busy = cli("rebuild", "--from", str(kept[0]), "--db", str(rig.db), "--force")
    assert busy.returncode == 1 and "in use by pid" in busy.stderr
    assert rig.procs[-1].stop() == 0
    done = cli("rebuild", "--from", str(kept[0]), "--db", str(rig.db), "--force")
    assert done.returncode == 0, done.stderr
    assert f"log {old_log}" in done.stdout
    assert len(list(rig.folder.glob("ctl.db.replaced-*"))) == 1  # the new log, kept too
    rig.controller("controller-3")
    wait_for("rebuilt controller serving", rig.serving)
    assert status(rig.address)["log_id"] == old_log
    wait_for("node a back on the old log", lambda: converged(rig.address, ["a"]), 30)
    rig.traffic(10)
    assert rig.holds_every_ack(rig.db) > acked_head
    # the node's replica of the short-lived new log was set aside too
    assert list(rig.folder.glob(f"a.db.log-{new_log}.upto-*"))


def test_a_controller_on_an_older_backup_is_reported_and_nodes_keep_their_files(
    rig: Rig,
) -> None:
    ctl = rig.controller()
    rig.node("a")
    wait_for("node a in sync", lambda: rig.serving() and converged(rig.address, ["a"]))
    rig.traffic(100)
    backup = rig.folder / "backup.db"
    with EventLog.open(rig.db, readonly=True) as live:
        live.save_copy(backup)
        backup_head = live.head
    rig.traffic(100)
    wait_for("node a has everything", lambda: converged(rig.address, ["a"]))
    ahead = status(rig.address)["head_seq"]
    assert ctl.stop() == 0
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{rig.db}{suffix}").exists():
            os.unlink(f"{rig.db}{suffix}")
    shutil.move(backup, rig.db)

    rig.controller("restored")
    wait_for("restored controller serving", rig.serving)
    wait_for(
        "the restored controller reports the node ahead of it",
        lambda: any(
            "beyond this controller's head" in p for p in status(rig.address).get("problems", [])
        ),
    )
    shown = cli("status", "--controller", rig.address)
    assert shown.returncode == 1 and "PROBLEM" in shown.stdout
    assert f"up to seq {ahead}" in shown.stdout
    wait_for("node a follows the restored log", lambda: converged(rig.address, ["a"]), 30)
    kept = [
        p
        for p in rig.folder.glob(f"a.db.log-*.upto-{ahead}.*")
        if not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(kept) == 1, list(rig.folder.iterdir())
    assert rig.holds_every_ack(kept[0]) == ahead
    assert status(rig.address)["head_seq"] < ahead
    assert backup_head < ahead


# ---------------------------------------------------------------------------- 5. damage


def test_random_bytes_in_the_middle_of_the_file_are_refused_at_restart(rig: Rig) -> None:
    bench_data.build_big_log(rig.db, 20_000)
    first = rig.controller()
    wait_for("controller serving", rig.serving)
    assert status(rig.address)["head_seq"] == 20_000
    assert first.stop() == 0
    size = rig.db.stat().st_size
    page = 4096
    middle = size // page // 2
    with open(rig.db, "r+b") as f:
        f.seek(middle * page)
        f.write(random.Random(5).randbytes(8 * page))
    result = cli(
        "controller", "--db", str(rig.db), "--listen", rig.address, "--ws", "off", timeout=60
    )
    assert result.returncode == 1, result.stderr
    lines = errors(result)
    assert len(lines) == 1, result.stderr
    assert "is damaged" in lines[0]
    assert f"cuelog rebuild --from NODE.db --db {rig.db}" in lines[0]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------- 6. node files


def test_a_node_on_the_controllers_file_is_refused(rig: Rig) -> None:
    ctl = rig.controller()
    wait_for("controller serving", rig.serving)
    rig.traffic(20)
    args = ["node", "--id", "x", "--controller", rig.address, "--db", str(rig.db)]
    running = cli(*args)
    assert running.returncode == 1
    assert len(errors(running)) == 1 and "in use by pid" in running.stderr, running.stderr
    assert ctl.stop() == 0
    head = rig.holds_every_ack(rig.db)
    stopped = cli(*args)
    assert stopped.returncode == 1
    lines = errors(stopped)
    assert len(lines) == 1 and "is a controller's log" in lines[0], stopped.stderr
    assert rig.holds_every_ack(rig.db) == head
    assert "Traceback" not in running.stderr + stopped.stderr


def test_a_node_whose_disk_fills_keeps_following_and_catches_its_file_up(rig: Rig) -> None:
    rig.controller()
    node = rig.node("a", fsize=256 * 1024)
    assert isinstance(node, LimitedProc)
    wait_for("node a in sync", lambda: rig.serving() and converged(rig.address, ["a"]))
    said = "cannot be written"
    for _ in range(40):
        rig.traffic(100)
        if said in node.log_text():
            break
    assert said in node.log_text(), "the replica file hit the limit"
    rig.traffic(300)
    wait_for("node a follows in memory", lambda: converged(rig.address, ["a"]), 30)
    text = node.log_text()
    assert text.count(said) == 1, "said once"
    assert "Traceback" not in text
    assert node.proc.poll() is None, "the node is alive"
    node.lift_limit()
    wait_for("the replica file caught up", lambda: "caught up and in use again" in node.log_text())
    rig.traffic(20)
    wait_for("node a in sync", lambda: converged(rig.address, ["a"]))
    st = status(rig.address)
    assert node.stop() == 0
    with EventLog.open(rig.folder / "a.db", readonly=True) as replica:
        assert replica.head == st["head_seq"]
        assert digest(replica.state) == st["digest"]
    assert rig.holds_every_ack(rig.folder / "a.db") == st["head_seq"]
