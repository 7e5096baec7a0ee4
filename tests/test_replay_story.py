"""`replay` as the post-mortem, on logs made by the real controller.

The demo (a controller, two node processes, node-a killed with -9 mid-show and restarted on its
replica file, a GO refused, a STOP) is run once; every subcommand is asked about it. Damage is
planted in copies; hostile files get one clear line.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from eventlog import ActionType, EventLog, Operation, OperationType
from tests.cluster import controller_thread, ipc_address, wait_for
from tools import replay


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ws = f"127.0.0.1:{probe.getsockname()[1]}"
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "demo", "--dir", str(folder / "d"), "--ws", ws],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "replay node" in result.stdout and "timeline" in result.stdout, result.stdout
    return folder / "d"


def out(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    assert replay.main(list(argv)) == code
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_info_tells_the_restart_the_commands_and_the_verdict(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl = str(demo / "controller.db")
    text = out(capsys, "info", ctl)
    assert "integrity  OK" in text
    assert "GO " in text and "refused" in text and "STOP 1" in text
    assert "restarted at" in text and "resumed from seq" in text
    facts = json.loads(out(capsys, "info", ctl, "--json"))
    restarts = facts["nodes"]["node-a"]["restarts"]
    assert len(restarts) == 1
    assert restarts[0]["catchup"] in ("tail", "snapshot", "none")
    assert restarts[0]["resumed_from"] > 0 and restarts[0]["away_s"] >= 0
    assert facts["nodes"]["node-b"]["restarts"] == []
    assert facts["commands"]["go"]["refused"] == 1
    assert facts["zone"] and facts["types"]["command"] >= 6
    # the replica files tell the same story
    replica = json.loads(out(capsys, "info", str(demo / "node-b.db"), "--json"))
    assert replica["nodes"]["node-a"]["restarts"] == restarts
    assert replica["zone"] == facts["zone"]


def test_node_tells_joins_restarts_and_what_it_fired(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = out(capsys, "node", str(demo / "controller.db"), "node-a")
    assert "restart at" in text and "fired" in text and "reported:" in text
    facts = json.loads(out(capsys, "node", str(demo / "controller.db"), "node-a", "--json"))
    assert len(facts["periods"]) == 2 and facts["periods"][0]["leave_reason"] == "restarted"
    assert facts["fired"], "node-a reported no fired command"
    assert all(d is None or 0 <= d < 5000 for d in facts["fired"].values())
    unknown = out(capsys, "node", str(demo / "controller.db"), "node-zz")
    assert "never appears" in unknown


def test_cue_tells_why_it_played_and_who_fired_the_go(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl = str(demo / "controller.db")
    text = out(capsys, "cue", ctl, "cue-3")
    assert "PLAYED" in text and "was accepted" in text and "fired it" in text
    stopped = out(capsys, "cue", ctl, "cue-4")
    assert "STOPPED" in stopped and "STOP" in stopped
    facts = json.loads(out(capsys, "cue", ctl, "cue-2", "--json").splitlines()[0])
    run = facts["runs"][0]
    # given a time, the story of what was playing then
    with EventLog.open(ctl, readonly=True) as elog:
        ts = elog.events_where("seq = ?", (run["start_seq"] + 1,))[0][0].ts
    then = out(capsys, "cue", ctl, str(ts))
    assert "cue cue-2" in then and "playing" in then
    nothing = out(capsys, "cue", ctl, "no-such-cue")
    assert "no event of this log touches" in nothing


def test_a_refused_go_says_why_in_the_cue_story(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The question of the issue: why did cue 12 not fire? Its GO came while not armed."""
    db = tmp_path / "ctl.db"
    with EventLog.open(db, role="controller") as elog:
        cues = [{"id": "cue-11", "node": "a"}, {"id": "cue-12", "node": "a"}]
        elog.append(command("load", "show", cues=cues, nodes=["a", "b"]))
        elog.append(status("a", "nextcue", {"nextcue": "cue-12"}))
        elog.append(status("a", "armed_ready", {"armed": "yes"}))
        elog.append(command("go"))  # b never armed
    text = out(capsys, "cue", str(db), "cue-12")
    assert "never started" in text and "REFUSED" in text and "not armed" in text
    assert "required ['a', 'b']" in text and "armed nodes ['a']" in text


def command(name: str, value: Any = None, **extra: Any) -> Operation:
    data = {"value": value, "address": f"/engine/command/{name}", **extra}
    return Operation(OperationType.COMMAND, ActionType.UPDATE, "operator", name, data)


def status(sender: str, target: str, data: dict[str, Any]) -> Operation:
    return Operation(OperationType.STATUS, ActionType.UPDATE, sender, target, data)


def test_timeline_draws_every_run_the_restart_and_the_markers(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svg = tmp_path / "show.svg"
    text = out(capsys, "timeline", str(demo / "controller.db"), "-o", str(svg))
    assert "4 cue runs on 2 nodes" in text
    root = ET.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text or "" for t in root.iter(f"{ns}title")]
    assert sum(1 for t in titles if " on node-" in t and "seq" in t) == 4
    assert any(t.startswith("node-a restarted at") for t in titles)
    assert any(t.startswith("GO at") and "REFUSED" in t for t in titles)
    assert any(t.startswith("STOP at") for t in titles)
    assert any("stopped" in t for t in titles)
    page = tmp_path / "show.html"
    out(capsys, "timeline", str(demo / "controller.db"), "-o", str(page))
    assert page.read_text().startswith("<!doctype html>") and "<svg" in page.read_text()


def test_events_filters_formats_and_points(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = str(demo / "controller.db")
    adds = out(capsys, "events", ctl, "--action", "add", "--type", "cue", "--grep", "CUE-3")
    assert len(adds.strip().splitlines()) == 1 and "cue-3" in adds
    lines = out(capsys, "events", ctl, "--type", "command", "--json").strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["noop"] for r in rows if r["target"] == "go"].count("go refused: not armed") == 1
    table = out(capsys, "events", ctl, "--csv", "--since", "#5", "--until", "#9")
    header, *body = table.strip().splitlines()
    assert header.startswith("seq,time,sender,type,action,target,data,noop")
    assert [int(line.split(",")[0]) for line in body] == [5, 6, 7, 8]
    # +Ns from the start: every event shown is in the window
    window = out(capsys, "events", ctl, "--since", "+1s", "--until", "+2s", "--json")
    with EventLog.open(ctl, readonly=True) as elog:
        first = elog.time_bounds()
        assert first is not None
        for line in window.strip().splitlines():
            ts = json.loads(line)["ts"]
            assert first[0] + 1 <= ts < first[0] + 2
    assert out(capsys, "events", ctl, "--since", "tea time", code=2).count("not a point") == 1


def test_export_jsonl_and_csv_hold_every_event(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl = str(demo / "controller.db")
    jsonl = tmp_path / "show.jsonl"
    out(capsys, "export", ctl, "-o", str(jsonl))
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    with EventLog.open(ctl, readonly=True) as elog:
        assert [r["seq"] for r in rows] == list(range(1, elog.head + 1))
    assert set(rows[0]) == set(replay.EXPORT_COLUMNS)
    assert sum(1 for r in rows if r["noop"]) >= 1
    csv_text = out(capsys, "export", ctl, "--format", "csv")
    assert csv_text.splitlines()[0] == ",".join(replay.EXPORT_COLUMNS)
    assert len(csv_text.strip().splitlines()) == len(rows) + 1


def test_state_at_n_is_the_digest_the_controller_had(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from replicas.client import ControllerClient

    addr = ipc_address(tmp_path)
    had: dict[int, str] = {}
    with controller_thread(tmp_path / "ctl.db", addr, snapshot_every=7) as ctl:
        core = ctl.controller.core
        assert core is not None
        with ControllerClient(addr, timeout=5) as client:
            for n in range(40):
                op = status("operator", f"t{n % 5}", {"n": n})
                [result] = client.submit([op])
                seq: int = result["seq"]

                def digested(at: int = seq) -> bool:
                    return core.digest_at(at) is not None

                wait_for("the digest", digested, 5)
                had[seq] = str(core.digest_at(seq))
    assert len(had) == 40
    for seq, want in list(had.items())[::7]:
        got = json.loads(out(capsys, "state", str(tmp_path / "ctl.db"), "--at", str(seq), "--json"))
        assert got["digest"] == want


# ------------------------------------------------------------------------- damage and hostility


def _copy(demo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.db"
    with EventLog.open(demo / "controller.db", readonly=True) as elog:
        elog.save_copy(copy)
    return copy


def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("plant", "finds"),
    [
        ("DELETE FROM events WHERE seq = 20", "gap: expected seq 20"),
        ("UPDATE events SET data = '{not json' WHERE seq = 30", "damaged"),
        ("UPDATE events SET type = 'banana' WHERE seq = 31", "event 31 is damaged"),
        ("DELETE FROM events WHERE seq > 55", None),
    ],
    ids=["deleted-row", "corrupted-json", "invalid-op", "cut-tail"],
)
def test_verify_finds_planted_damage(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], plant: str, finds: str | None
) -> None:
    copy = _copy(demo, tmp_path)
    _sql(copy, plant)
    if finds is None:  # a cut tail is a shorter log, not damage: verify says where it ends
        text = out(capsys, "verify", str(copy), "--quiet")
        assert "seqs 1..55 gapless" in text
        return
    text = out(capsys, "verify", str(copy), "--quiet", code=1)
    assert finds in text and "Traceback" not in text


def test_verify_of_a_copy_with_torn_pages_is_one_clear_line(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Random bytes over pages in the middle of a copy (a torn copy, a bad disk)."""
    copy = _copy(demo, tmp_path)
    raw = bytearray(copy.read_bytes())
    page = 4096
    for n in range(2, len(raw) // page - 1, 2):
        raw[n * page + 100 : n * page + 1100] = os.urandom(1000)
    copy.write_bytes(bytes(raw))
    result = subprocess.run(
        [sys.executable, "-m", "tools.replay", "verify", str(copy), "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    said = result.stdout + result.stderr
    assert str(copy) in said or "FAIL" in said, said


def test_verify_finds_a_snapshot_that_does_not_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "snap.db"
    with EventLog.open(db, snapshot_every=10) as elog:
        for n in range(35):
            elog.append(status("a", f"t{n % 3}", {"n": n}))
    _sql(db, "UPDATE snapshots SET digest = 'f00d' WHERE seq = 20")
    text = out(capsys, "verify", str(db), "--quiet", code=1)
    assert "snapshot at seq 20 does not match" in text


SUBCOMMANDS = [
    ["info"],
    ["events"],
    ["state", "--at", "1"],
    ["verify", "--quiet"],
    ["cue", "cue-1"],
    ["node", "a"],
    ["export"],
]


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=[a[0] for a in SUBCOMMANDS])
@pytest.mark.parametrize("kind", ["missing", "random-bytes", "other-app", "truncated", "empty"])
def test_hostile_files_get_one_clear_line(
    tmp_path: Path, demo: Path, argv: list[str], kind: str
) -> None:
    path = tmp_path / "bad.db"
    if kind == "random-bytes":
        path.write_bytes(os.urandom(64 * 1024))
    elif kind == "other-app":
        _sql(path, "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    elif kind == "truncated":
        whole = (demo / "controller.db").read_bytes()
        copy = _copy(demo, tmp_path)
        path.write_bytes(copy.read_bytes()[: len(whole) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "tools.replay", argv[0], str(path), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.stderr


def test_replay_never_writes_to_the_file_it_reads(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = _copy(demo, tmp_path)
    before = copy.read_bytes()
    mtime = copy.stat().st_mtime_ns
    for argv in (["info"], ["events", "--why"], ["cue", "cue-1"], ["node", "node-a"], ["export"]):
        out(capsys, argv[0], str(copy), *argv[1:])
    out(capsys, "timeline", str(copy), "-o", str(tmp_path / "t.svg"))
    assert copy.read_bytes() == before and copy.stat().st_mtime_ns == mtime
    assert not (tmp_path / "copy.db-wal").exists() or (tmp_path / "copy.db-wal").stat().st_size == 0


def test_an_older_copy_without_recorded_reasons_is_read_as_it_is(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schema-2 file (sent by e-mail from an older cuelog): read-only, reasons folded."""
    copy = _copy(demo, tmp_path)
    _sql(
        copy,
        "ALTER TABLE events DROP COLUMN noop",
        "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
        "DELETE FROM meta WHERE key = 'tz'",
    )
    text = out(capsys, "info", str(copy))
    assert "predates recorded refusals" in text and "this machine's" in text
    assert "REFUSED" not in out(capsys, "cue", str(copy), "cue-3")
    lines = out(capsys, "events", str(copy), "--type", "command", "--json").splitlines()
    assert any(json.loads(line)["noop"] == "go refused: not armed" for line in lines)


# ------------------------------------------------------------------------------- serve


def test_serve_plays_the_show_to_a_real_ui_client_and_obeys_its_controls(demo: Path) -> None:
    """`replay serve` at 10x: a WebSocket OSC client ends with the state at the end of the
    log; seeking back shows the state there; the client's commands are refused."""
    import asyncio

    from tests.gateway_rig import expected_view, open_client

    ctl = demo / "controller.db"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with EventLog.open(ctl, readonly=True) as elog:
        head = elog.head
        at_end = elog.state_at(head).to_dict()
        at_20 = elog.state_at(20).to_dict()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.replay",
            "serve",
            str(ctl),
            "--ws",
            f"127.0.0.1:{port}",
            "--speed",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def shown(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if not k.startswith("/replay/")}

    async def watch() -> None:
        client = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while client is None:
            try:
                client = await open_client(f"ws://127.0.0.1:{port}/realtime")
            except OSError:
                if loop.time() > deadline or proc.poll() is not None:
                    raise
                await asyncio.sleep(0.05)
        try:
            await client.until("the end of the show", lambda: client.seq >= head, 20)
            assert shown(client.values) == shown(expected_view({"state": at_end}))
            await client.send("/engine/command/go")
            reply = await client.reply("/engine/command/go")
            assert reply["status"] == "denied" and "replay" in reply["error"]
            await client.send("/replay/seek", 20)
            assert (await client.reply("/replay/seek"))["status"] == "ok"
            await client.until("the dump at seq 20", lambda: client.seq == 20, 10)
            assert shown(client.values) == shown(expected_view({"state": at_20}))
            await client.send("/replay/speed", 0.0)
            assert (await client.reply("/replay/speed"))["status"] == "error"
            await client.send("/replay/speed", 50.0)
            assert (await client.reply("/replay/speed"))["status"] == "ok"
            await client.until("the end again", lambda: client.seq >= head, 20)
            assert shown(client.values) == shown(expected_view({"state": at_end}))
        finally:
            await client.conn.close()

    try:
        asyncio.run(watch())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "replaying" in err


def test_parallel_verify_agrees_with_the_walk_and_finds_damage_in_any_segment(
    tmp_path: Path,
) -> None:
    """Big logs are verified in segments on every core: same digest as one walk, and damage
    in a late segment (an invalid op, a snapshot whose state was altered) is found."""
    from tools.bench.data import build_show
    from tools.verify import verify_log

    db = tmp_path / "big.db"
    build_show(db, 80_000, hours=0.5)
    with EventLog.open(db, readonly=True, pin=True) as elog:
        one = verify_log(elog, workers=1)
        many = verify_log(elog, workers=2)
    assert one.problems == many.problems == [] and one.digest == many.digest
    _sql(
        db,
        'UPDATE events SET data = \'{"id": "cue-1", "percentage": 500}\' '
        "WHERE seq = 70001 AND type = 'cue' AND action = 'update'",
        "UPDATE events SET type = 'cue', action = 'update', "
        'data = \'{"id": "x", "percentage": 500}\' WHERE seq = 70002',
        'UPDATE snapshots SET state = replace(state, \'"armed":"yes"\', \'"armed":"no"\') '
        "WHERE seq = 60000",
    )
    with EventLog.open(db, readonly=True, pin=True) as elog:
        many = verify_log(elog, workers=2)
        one = verify_log(elog, workers=1)
    assert any("seq 70002: invalid operation" in p for p in many.problems), many.problems
    assert any("seq 70002: invalid operation" in p for p in one.problems), one.problems
    assert any("snapshot at seq 60000 is damaged" in p for p in many.problems), many.problems
