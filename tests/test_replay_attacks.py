"""Hostile-user reproductions of defects found in `replay` (each test fails while its defect
is there). Logs are built with `EventLog` directly (fixed clock), no cluster needed."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from eventlog import (
    CONTROLLER,
    ActionType,
    EventLog,
    Operation,
    OperationType,
    apply,
)
from eventlog.snapshot import take
from tests.cluster import replay_serve
from tools import replay, story

T0 = 1_700_000_000.0


def cmd(name: str, value: Any = None, **extra: Any) -> Operation:
    data = {"value": value, "address": f"/engine/command/{name}", **extra}
    return Operation(OperationType.COMMAND, ActionType.UPDATE, "operator", name, data)


def st(sender: str, target: str, data: dict[str, Any]) -> Operation:
    return Operation(OperationType.STATUS, ActionType.UPDATE, sender, target, data)


def cue(sender: str, action: ActionType, cid: str, **data: Any) -> Operation:
    return Operation(OperationType.CUE, action, sender, cid, {"id": cid, **data})


def make(path: Path, ops: list[Operation], step: float = 1.0) -> Path:
    tick = itertools.count()
    with EventLog.open(
        path, role="controller", clock=lambda: T0 + next(tick) * step, snapshot_every=10_000
    ) as elog:
        for op in ops:
            elog.append(op)
    return path


def joined(node: str) -> Operation:
    return st(CONTROLLER, "node_joined", {"node": node, "reason": "first", "resumed_from": 0})


def small_show(path: Path) -> Path:
    """Two nodes online from the start; c1 plays on a from seq 6 to 12, c2 on b 8..11."""
    cues = [{"id": "c1", "node": "a"}, {"id": "c2", "node": "b"}]
    return make(
        path,
        [
            joined("a"),  # 1
            joined("b"),  # 2
            cmd("load", "show", cues=cues, nodes=["a", "b"]),  # 3
            st("a", "armed_ready", {"armed": "yes"}),  # 4
            st("b", "armed_ready", {"armed": "yes"}),  # 5
            cmd("go"),  # 6
            cue("a", ActionType.ADD, "c1", offset="0"),  # 7
            cmd("go"),  # 8
            cue("b", ActionType.ADD, "c2", offset="0"),  # 9
            cue("a", ActionType.UPDATE, "c1", percentage=50),  # 10
            cue("b", ActionType.REMOVE, "c2"),  # 11
            cue("a", ActionType.REMOVE, "c1"),  # 12
            st("a", "timecode", {"value": 1}),  # 13
            st("b", "timecode", {"value": 2}),  # 14
        ],
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = replay.main(list(argv))
    except SystemExit as exc:  # argparse refuses an argument: exit 2, as on the command line
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ------------------------------------------------------------------ 1. output over the log


@pytest.mark.parametrize("sub", ["export", "timeline"])
@pytest.mark.parametrize("suffix", ["", "-wal"])
def test_output_onto_the_log_itself_is_refused_and_the_log_survives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sub: str, suffix: str
) -> None:
    """`replay export LOG -o LOG` (a slip of tab completion) truncates the evidence to 0
    bytes; `timeline LOG -o LOG` overwrites it with SVG; -o LOG-wal writes into its WAL."""
    log = small_show(tmp_path / "show.db")
    before = log.read_bytes()
    code, text = run(capsys, sub, str(log), "-o", str(log) + suffix)
    assert code == 2, text
    assert log.read_bytes() == before
    assert run(capsys, "info", str(log))[0] == 0


# ------------------------------------------------------------------ 2. serve: seek races a read


def test_a_seek_while_playback_reads_never_commits_stale_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A UI seeks back while `_play` awaits its chunk read: the chunk (of the old position)
    is committed after the rewind; the gateway's view raises on the hole and `serve` dies."""
    from tools.replay_serve import Playback

    log = small_show(tmp_path / "show.db")
    slow = {"on": False}
    reading = threading.Event()
    original = EventLog.read

    def slow_read(self: EventLog, *args: Any, **kwargs: Any) -> Any:
        if slow["on"]:
            reading.set()
            time.sleep(0.3)  # the fault: a slow disk, so a seek lands during the read
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EventLog, "read", slow_read)

    class View:  # what the gateway's StatusView does with commits: fold them in order
        state: Any = None

        def on_open(self, log_id: str, state: Any) -> None:
            self.state = state

        def rewind(self, state: Any) -> None:
            self.state = state

        def on_commit(self, events: list[Any], reasons: list[Any]) -> None:
            for event in events:
                if event.seq > self.state.seq:
                    apply(self.state, event)

    async def scenario() -> tuple[BaseException | None, int, int]:
        playback = Playback(str(log), speed=1000, start=8)
        view = View()
        playback.listeners.append(view)
        playback.pause()
        task = asyncio.create_task(playback.run())
        await playback.ready.wait()
        slow["on"] = True
        playback.play()
        # the read of seqs 9.. is in its thread now
        assert await asyncio.to_thread(reading.wait, 10), "playback never read"
        playback.seek(3)
        slow["on"] = False
        finished = asyncio.create_task(playback.finished.wait())
        await asyncio.wait({task, finished}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        error = task.exception() if task.done() else None
        task.cancel()
        return error, view.state.seq, playback.position

    error, view_seq, position = asyncio.run(scenario())
    assert error is None, f"playback died: {error!r}"
    assert view_seq == position


# ------------------------------------------------------------------ 3. stories from a base


def _replica_from(src: Path, dst: Path, at: int) -> Path:
    with EventLog.open(src, readonly=True) as elog:
        state = elog.state_at(at)
        events = elog.read(at)
        log_id = elog.log_id
    with EventLog.open(dst, role="replica") as rep:
        rep.reset(log_id, take(state, events[0].ts - 0.001))
        rep.append_events(events)
    return dst


def test_a_replica_that_began_from_a_snapshot_tells_the_same_story(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node's replica restored from a snapshot at seq 9: c1 and c2 were playing, a and b
    online (the base snapshot says so). The stories ignore the base state."""
    ctl = small_show(tmp_path / "ctl.db")
    rep = _replica_from(ctl, tmp_path / "rep.db", 9)
    code, text = run(capsys, "cue", str(rep), "c2")
    assert code == 0
    assert "never started" not in text, text
    assert "PLAYED" in text, text
    code, text = run(capsys, "node", str(rep), "a")
    assert "never appears" not in text, text
    facts = json.loads(run(capsys, "info", str(rep), "--json")[1])
    assert set(facts["nodes"]) == {"a", "b"}, facts["nodes"]


def test_timeline_since_keeps_nodes_online_and_the_cues_already_playing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = small_show(tmp_path / "show.db")
    svg = tmp_path / "t.svg"
    code, text = run(capsys, "timeline", str(log), "--since", "#10", "-o", str(svg))
    assert code == 0, text
    ns = "{http://www.w3.org/2000/svg}"
    titles = [t.text or "" for t in ET.parse(svg).getroot().iter(f"{ns}title")]
    assert not any(" offline " in t for t in titles), titles  # a and b never left
    assert any(t.startswith("c1 on a: played") for t in titles), titles
    assert any(t.startswith("c2 on b: played") for t in titles), titles


# ------------------------------------------------------------------ 4. cue story vs timeline


def test_cue_story_and_timeline_name_the_same_go(tmp_path: Path) -> None:
    """An accepted GO (seq 5), b disarms, a refused GO (seq 7), then c1 starts: the timeline
    ties c1 to the accepted GO; the cue story ties it to the refused one and says the GO
    that started a cue that PLAYED was REFUSED."""
    cues = [{"id": "c1", "node": "a"}]
    log = make(
        tmp_path / "show.db",
        [
            joined("a"),  # 1
            cmd("load", "show", cues=cues, nodes=["a", "b"]),  # 2
            st("a", "armed_ready", {"armed": "yes"}),  # 3
            st("b", "armed_ready", {"armed": "yes"}),  # 4
            cmd("go"),  # 5 accepted
            st("b", "armed_ready", {"armed": "no"}),  # 6
            cmd("go"),  # 7 refused: not armed
            cue("a", ActionType.ADD, "c1", offset="0"),  # 8
            cue("a", ActionType.REMOVE, "c1"),  # 9
        ],
    )
    tz = dt.UTC
    with EventLog.open(log, readonly=True) as elog:
        show = story.read_show(elog)
        lines, facts = story.cue_story(elog, "c1", tz, "UTC")
    [run_] = show.runs
    assert run_.go_seq == 5
    assert facts["runs"][0]["go_seq"] == run_.go_seq, "\n".join(lines)


# ------------------------------------------------------------------ 5. numeric cue ids


def test_a_numeric_cue_that_never_fired_gets_its_story(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Theatre cues are numbers. 'Why did cue 12 not fire?' is answered with an error
    (seq 12 is outside this log) or the state at seq 3."""
    cues = [{"id": "3", "node": "a"}, {"id": "12", "node": "a"}]
    log = make(
        tmp_path / "show.db",
        [
            joined("a"),
            cmd("load", "show", cues=cues, nodes=["a", "b"]),
            st("a", "armed_ready", {"armed": "yes"}),
            st("a", "nextcue", {"nextcue": "12"}),
            cmd("go"),
        ],
    )
    code, text = run(capsys, "cue", str(log), "12")
    assert code == 0 and "cue 12" in text and "REFUSED" in text, text
    code, text = run(capsys, "cue", str(log), "3")
    assert "cue 3" in text, text


# ------------------------------------------------------------------ 6. markup


@pytest.mark.parametrize("cid", ["cue\ufffe", "cue\uffff"])
def test_timeline_svg_stays_well_formed_with_any_accepted_cue_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cid: str
) -> None:
    """`validate_operation` accepts U+FFFE/U+FFFF in a cue id; XML 1.0 forbids them, so
    the SVG does not parse (a browser shows an XML error instead of the picture)."""
    log = make(
        tmp_path / "show.db",
        [
            joined("a"),
            cmd("load", "show", cues=[{"id": cid, "node": "a"}], nodes=["a"]),
            st("a", "armed_ready", {"armed": "yes"}),
            cmd("go"),
            cue("a", ActionType.ADD, cid, offset="0"),
            cue("a", ActionType.REMOVE, cid),
        ],
    )
    svg = tmp_path / "t.svg"
    assert run(capsys, "timeline", str(log), "-o", str(svg))[0] == 0
    ET.parse(svg)


# ------------------------------------------------------------------ 7. one-line errors


@pytest.mark.parametrize("sub", ["export", "timeline"])
@pytest.mark.parametrize("where", ["/nonexistent-dir/x.out", "DIR"])
def test_an_unwritable_output_is_one_line_not_a_traceback(
    tmp_path: Path, sub: str, where: str
) -> None:
    log = small_show(tmp_path / "show.db")
    target = str(tmp_path) if where == "DIR" else where
    result = subprocess.run(
        [sys.executable, "-m", "tools.replay", sub, str(log), "-o", target],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode in (1, 2) and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("point", ["\u00b2", "#\u00b2", "\u00b9\u00b2"])
def test_a_point_of_unicode_digits_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], point: str
) -> None:
    """'²'.isdigit() is True but int('²') raises ValueError: a traceback, exit 1."""
    log = small_show(tmp_path / "show.db")
    assert run(capsys, "state", str(log), "--at", point)[0] == 2


def test_a_negative_limit_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`events --limit -3` printed exactly one event and exited 0."""
    log = small_show(tmp_path / "show.db")
    code, _ = run(capsys, "events", str(log), "--limit", "-3")
    assert code == 2


# ------------------------------------------------------------------ 8. times and zones


def test_a_time_of_day_with_an_offset_keeps_its_offset(tmp_path: Path) -> None:
    """'22:13:05+05:00' is read as 22:13:05 in the show's zone: the offset is dropped."""
    log = small_show(tmp_path / "show.db")
    with EventLog.open(log, readonly=True) as elog:
        day = dt.datetime.fromtimestamp(T0, dt.UTC).date().isoformat()
        got = replay.parse_when("22:13:05+05:00", elog, dt.UTC)
        want = replay.parse_when(f"{day}T22:13:05+05:00", elog, dt.UTC)
    assert got == want


def test_an_unreadable_zone_is_not_shown_under_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file from a machine with a zone this one cannot read: times are silently shown in
    UTC, labelled with the recorded zone (hours off, claiming to be local)."""
    log = small_show(tmp_path / "show.db")
    conn = sqlite3.connect(log)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('tz', 'Mars/Olympus')")
    conn.commit()
    conn.close()
    facts = json.loads(run(capsys, "info", str(log), "--json")[1])
    assert facts["zone"] != "Mars/Olympus", facts["zone"]


# ------------------------------------------------------------------ 9. read-only copies


def test_a_copy_in_a_read_only_folder_can_be_read(tmp_path: Path) -> None:
    """Evidence on read-only media (or a colleague's folder): SQLite cannot make the -shm,
    and replay refuses the file ('attempt to write a readonly database')."""
    folder = Path(tempfile.mkdtemp(prefix="rv-ro-", dir="/tmp"))
    try:
        log = small_show(folder / "show.db")
        for side in ("-wal", "-shm"):
            Path(str(log) + side).unlink(missing_ok=True)
        os.chmod(log, 0o444)
        os.chmod(folder, 0o555)
        argv = [sys.executable, "-m", "tools.replay", "info", str(log)]
        if os.geteuid() == 0:  # root ignores modes: read it as nobody
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert result.returncode == 0, result.stderr
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------- 10. a long reader on a live log


def test_replay_serve_on_a_live_log_does_not_hold_its_wal(tmp_path: Path) -> None:
    """`replay serve` runs for hours: were it one read transaction, no checkpoint could pass
    it and a live log's WAL would hold the whole show. It reads in short transactions."""
    path = tmp_path / "live.db"
    writer = EventLog.open(path, role="controller", synchronous="OFF")
    try:
        writer.append(st("a", "t", {"n": 0}))
        with replay_serve(path):
            for i in range(200):
                writer.append_batch([st("a", "t", {"n": i, "pad": "x" * 500}) for _ in range(50)])
            wal = os.path.getsize(str(path) + "-wal")
    finally:
        writer.close()
    assert wal < 8_000_000, f"the WAL grew to {wal / 1e6:.1f} MB behind replay serve"
