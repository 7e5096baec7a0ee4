"""``cuelog bench replay``: the post-mortem tool on a big log, against raw SQLite reads.

A 1,000,000-event log (100,000 with ``--quick``) of a show's usual mix, and a 3-hour show of
100,000 events with 500 cues, GOs and node restarts for the timeline. Each figure is the
median of a few runs of the real subcommand (output to /dev/null); the baseline is a bare
``sqlite3`` read of the same rows in the same run.
"""

from __future__ import annotations

import contextlib
import io
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventlog import (
    CONTROLLER,
    NODE_JOINED,
    NODE_LEFT,
    ActionType,
    Event,
    EventLog,
    Operation,
    OperationType,
    OpId,
)
from tools import replay

Figures = dict[str, Any]
TARGETS = {
    "info_s": 1.0,
    "state_at_s": 0.5,
    "events_range_s": 0.5,
    "verify_ev_s": 200_000,
    "cue_s": 0.5,
    "timeline_s": 5.0,
}


def _quiet(argv: list[str]) -> float:
    """Seconds `replay argv` takes, its output thrown away (it must succeed)."""
    sink = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
        code = replay.main(argv)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"replay {' '.join(argv)} exited {code}")
    return elapsed


def _median(fn: Callable[[], float], runs: int = 3) -> float:
    return statistics.median(fn() for _ in range(runs))


def build_show(path: Path, count: int, hours: float, cues: int = 500) -> None:
    """A show of `count` events over `hours`: cues on 4 nodes run one after another (add,
    progress, remove), a GO before each, a restart of a node every few hundred cues."""
    rng = random.Random(5)
    nodes = [f"node-{i}" for i in range(4)]
    span = hours * 3600
    with EventLog.open(path, synchronous="OFF", snapshot_every=1000) as elog:
        seq = 0
        batch: list[Event] = []

        def add(op: Operation) -> None:
            nonlocal seq
            seq += 1
            ts = 1.7e9 + seq * span / count
            batch.append(Event(seq, ts, elog.log_id, op, OpId("bench", seq)))
            if len(batch) >= 5000:
                elog.append_events(batch)
                batch.clear()

        def status(sender: str, target: str, data: dict[str, Any]) -> Operation:
            return Operation(OperationType.STATUS, ActionType.UPDATE, sender, target, data)

        for node in nodes:
            add(status(CONTROLLER, NODE_JOINED, {"node": node, "reason": "first"}))
        listed = [{"id": f"cue-{i}", "node": nodes[i % 4]} for i in range(cues)]
        load = {"value": "big", "address": "/engine/command/load", "cues": listed[:4096]}
        add(Operation(OperationType.COMMAND, ActionType.UPDATE, "operator", "load", load))
        for node in nodes:
            add(status(node, "armed_ready", {"armed": "yes"}))
        per_cue = max(6, (count - seq) // cues)
        i = 0
        while seq < count - per_cue:
            cue, node = f"cue-{i % cues}", nodes[i % 4]
            go = {"value": None, "address": "/engine/command/go"}
            add(Operation(OperationType.COMMAND, ActionType.UPDATE, "operator", "go", go))
            add(status(node, "fired", {"seq": seq, "command": "go", "delay_ms": 2.0}))
            add(Operation(OperationType.CUE, ActionType.ADD, node, cue, {"id": cue, "offset": "0"}))
            for k in range(per_cue - 5):
                pct = min(99, 1 + k * 98 // max(1, per_cue - 5))
                add(
                    Operation(
                        OperationType.CUE,
                        ActionType.UPDATE,
                        node,
                        cue,
                        {"id": cue, "percentage": pct},
                    )
                )
            add(Operation(OperationType.CUE, ActionType.REMOVE, node, cue, {"id": cue}))
            if i % 150 == 149:  # a node restarts
                away = {"node": node, "reason": "restarted", "away_s": rng.random()}
                add(status(CONTROLLER, NODE_LEFT, away))
                add(
                    status(
                        CONTROLLER, NODE_JOINED, {**away, "resumed_from": seq, "catchup": "tail"}
                    )
                )
            i += 1
        while seq < count:
            add(status(nodes[seq % 4], "timecode", {"value": seq}))
        if batch:
            elog.append_events(batch)


def _raw_scan(path: Path) -> float:
    """Rows per second of a bare sqlite3 read of every event (the floor any reader pays)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    start = time.perf_counter()
    n = 0
    for _ in conn.execute("SELECT * FROM events ORDER BY seq"):
        n += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def run_replay(quick: bool, scratch: Path) -> Figures:
    count = 100_000 if quick else 1_000_000
    big = scratch / "replay-big.db"
    start = time.perf_counter()
    build_show(big, count, hours=count / 1000 / 3600 * 3)
    build_s = time.perf_counter() - start
    show = scratch / "replay-show.db"
    build_show(show, 100_000, hours=3.0)
    rng = random.Random(3)
    with EventLog.open(big, readonly=True) as elog:
        bounds = elog.time_bounds()
        assert bounds is not None
    points = [rng.randint(1, count) for _ in range(5)]
    mid = (bounds[0] + bounds[1]) / 2
    figures: Figures = {"events": count, "build_s": build_s}
    figures["info_s"] = _median(lambda: _quiet(["info", str(big)]))
    figures["state_at_s"] = max(
        _quiet(["state", str(big), "--at", str(p), "--json"]) for p in points
    )
    figures["events_range_s"] = _median(
        lambda: _quiet(
            ["events", str(big), "--since", str(mid), "--until", str(mid + 1.0), "--json"]
        )
    )
    verify_s = _median(lambda: _quiet(["verify", str(big), "--quiet"]), runs=1)
    figures["verify_ev_s"] = count / verify_s
    figures["raw_scan_ev_s"] = _raw_scan(big)
    figures["cue_s"] = _median(lambda: _quiet(["cue", str(big), "cue-137"]))
    out = scratch / "timeline.html"
    figures["timeline_s"] = _median(
        lambda: _quiet(["timeline", str(show), "-o", str(out), "--quiet"]), runs=1
    )
    figures["timeline_kb"] = out.stat().st_size / 1024
    return figures


def print_replay(f: Figures) -> None:
    print(
        f"replay on a {f['events']:,}-event log (built in {f['build_s']:.1f} s), each the real "
        "subcommand with its output discarded:"
    )
    rows = [
        ("info (counts, nodes, commands, fast check)", "info_s", "s", "<"),
        ("state --at (worst of 5 random points)", "state_at_s", "s", "<"),
        ("events in a 1-second time range", "events_range_s", "s", "<"),
        ("cue (one cue's story)", "cue_s", "s", "<"),
        ("verify (every event, every snapshot)", "verify_ev_s", "ev/s", ">="),
        ("timeline of a 3-hour, 100,000-event show", "timeline_s", "s", "<"),
    ]
    for label, key, unit, op in rows:
        value, target = f[key], TARGETS[key]
        ok = value < target if op == "<" else value >= target
        shown = f"{value:,.0f} {unit}" if unit == "ev/s" else f"{value:.3f} {unit}"
        print(f"  {label:<45} {shown:>14}  {op} {target:,} {unit:<5} {'yes' if ok else 'NO'}")
    print(
        f"  baseline: bare sqlite3 read of every row   {f['raw_scan_ev_s']:>10,.0f} ev/s; "
        f"verify / raw = {f['verify_ev_s'] / f['raw_scan_ev_s']:.2f}"
    )
    print(f"  timeline file: {f['timeline_kb']:.0f} KiB")


if __name__ == "__main__":  # pragma: no cover - by hand
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print_replay(run_replay("--quick" in sys.argv, Path(tmp)))
