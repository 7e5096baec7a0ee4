"""The command line: help, exit codes, one-line errors, replay on a real log, the demo."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from eventlog import EventLog, OpId, digest
from tests.helpers import show_op
from tools import cli, replay


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("sub", ["controller", "node", "status", "demo", "bench", "replay"])
def test_every_subcommand_explains_itself(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([sub, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("cuelog ")


@pytest.mark.parametrize(
    "argv",
    [
        ["node", "--id", "a", "--controller", "http://nope"],
        ["node", "--id", "has space", "--controller", "tcp://127.0.0.1:7"],
        ["node", "--id", "n" * 116, "--controller", "tcp://127.0.0.1:7"],
        ["node", "--id", "~reserved", "--controller", "tcp://127.0.0.1:7"],
        ["node", "--id", "controller", "--controller", "tcp://127.0.0.1:7"],
        ["controller", "--db", "x.db", "--listen", "tcp://127.0.0.1:99999"],
        ["controller", "--db", "x.db", "--snapshot-every", "0"],
        ["status", "--timeout", "-1"],
        ["controller", "--db", "x.db", "--ws", "9190"],
        ["controller", "--db", "x.db", "--ws", "127.0.0.1:70000"],
        ["controller", "--db", "x.db", "--allow", "10.0.0.0/33"],
        ["controller", "--db", "x.db", "--allow", ","],
        ["demo", "--ws", "nowhere"],
        ["controller", "--db", "x.db", "--ha", "127.0.0.1:2379", "--name", "has space"],
        ["controller", "--db", "x.db", "--ha", "127.0.0.1:2379", "--advertise", "http://x"],
        ["controller", "--db", "x.db", "--ha-ttl", "0"],
        ["node", "--id", "a", "--controller", "tcp://127.0.0.1:7,http://nope"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_taken_gateway_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "controller",
            "--db",
            str(tmp_path / "c.db"),
            "--listen",
            f"ipc://{tmp_path}/c.ipc",
            "--ws",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors and f"127.0.0.1:{port}" in errors[-1] and "--ws" in errors[-1]
    assert "Traceback" not in result.stderr


def test_a_bad_log_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"definitely not sqlite" * 50)
    result = run("controller", "--db", str(bad), "--listen", f"ipc://{tmp_path}/c.ipc")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a SQLite database" in lines[0] and str(bad) in lines[0]
    result = run("replay", "info", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_a_candidate_on_a_file_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Two hot-standby candidates given one --db: the second is refused at start, before
    etcd is even asked (the review found it standing by on a file it could not open)."""
    from eventlog import EventLog

    db = tmp_path / "shared.db"
    with EventLog.open(db, role="controller"):
        result = run(
            "controller", "--ha", "127.0.0.1:9", "--name", "c", "--db", str(db),
            "--listen", f"ipc://{tmp_path}/c.ipc", "--ws", "off",
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0] and str(db) in lines[0]


def test_status_of_a_missing_controller_says_what_to_do(tmp_path: Path) -> None:
    result = run("status", "--controller", f"ipc://{tmp_path}/none.ipc", "--timeout", "0.3")
    assert result.returncode == 1
    assert "is it running" in result.stderr


@pytest.fixture
def show_log(tmp_path: Path) -> Path:
    path = tmp_path / "show.db"
    clock = iter(range(1_700_000_000, 1_700_100_000))
    with EventLog.open(path, snapshot_every=25, clock=lambda: float(next(clock))) as elog:
        for n in range(1, 121):
            elog.append(show_op(n), OpId("t", n))
    return path


def test_replay_info_events_state_diff_verify(
    show_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert replay.main(["info", str(show_log), "--json"]) == 0
    info = orjson.loads(capsys.readouterr().out)
    assert info["head_seq"] == 120 and info["snapshots"] == 4

    assert replay.main(["events", str(show_log), "--after", "10", "--limit", "5", "--json"]) == 0
    seqs = [orjson.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()]
    assert seqs == [11, 12, 13, 14, 15]

    assert replay.main(["events", str(show_log), "--type", "command", "--why"]) == 0
    text = capsys.readouterr().out
    assert "command/update" in text and "cue/" not in text

    assert replay.main(["state", str(show_log), "--at", "60", "--json"]) == 0
    state = orjson.loads(capsys.readouterr().out)
    with EventLog.open(show_log, readonly=True) as elog:
        assert state["digest"] == digest(elog.state_at(60))

    assert replay.main(["diff", str(show_log), "59", "60"]) == 0
    assert "seq: 59 -> 60" in capsys.readouterr().out

    assert replay.main(["verify", str(show_log), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("OK ")


def test_replay_state_at_a_time(show_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EventLog.open(show_log, readonly=True) as elog:
        ts = elog.read(49, 1)[0].ts
    assert replay.main(["state", str(show_log), "--at", str(ts), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["state"]["seq"] == 50


def test_replay_refuses_a_bad_time(show_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.main(["state", str(show_log), "--at", "half past nine"]) == 2
    assert "is not a point in the show" in capsys.readouterr().err


def test_the_demo_plays_kills_restarts_and_converges(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port of our own: another demo may hold 9190
        probe.bind(("127.0.0.1", 0))
        ws = f"127.0.0.1:{probe.getsockname()[1]}"
    result = run("demo", "--dir", str(tmp_path / "demo"), "--ws", ws, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "node-a killed (kill -9)" in result.stdout
    assert "every digest matches the controller's log" in result.stdout
    assert "refused, recorded, never fired: seq 4 go" in result.stdout
    with (
        EventLog.open(tmp_path / "demo" / "node-a.db", readonly=True) as replica,
        EventLog.open(tmp_path / "demo" / "controller.db", readonly=True) as controller,
    ):
        assert replica.log_id == controller.log_id
        assert replica.head == controller.head
