"""``cuelog bench``: figures and same-run baselines. Nothing here asserts a speed.

``cuelog bench log`` measures, in one run on one machine:

- durable append throughput (events/s) at batch sizes 1, 10, 100, 1000, against a raw
  ``sqlite3`` ``executemany`` baseline with the same pragmas and the same rows;
- fold speed (events/s) of the reducer over in-memory events;
- time to rebuild the state at random seqs of a 1,000,000-event log using its snapshots.

``cuelog bench replication`` and ``cuelog bench gateway`` are in `tools.bench_replication` and
`tools.bench_gateway`.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventlog import (
    Event,
    EventLog,
    OpId,
    Submission,
    dumps,
    fold,
)
from eventlog.store import _INSERT_EVENTS, _event_to_row
from tools.bench_data import build_big_log, show_ops
from tools.bench_gateway import print_gateway, run_gateway
from tools.bench_replay import print_replay, run_replay
from tools.bench_replication import print_replication, run_replication

Figures = dict[str, Any]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="run the benchmarks and print figures against same-run baselines",
        description="Benchmarks with baselines measured in the same run. Figures vary with the "
        "machine: compare the ratios.",
    )
    parser.add_argument(
        "suite",
        nargs="?",
        default="all",
        choices=["log", "replication", "gateway", "replay", "all"],
        help="which benchmark (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (seconds, not minutes)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument(
        "--dir", default=None, help="folder for scratch files (default: a temp dir)"
    )
    parser.set_defaults(func=run)
    return parser


def _timeit(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _raw_baseline(path: Path, events: list[Event], batch: int) -> float:
    """Raw sqlite3: same table, same pragmas, same rows, one executemany per transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, ts FLOAT NOT NULL, type TEXT NOT NULL, "
        "action TEXT NOT NULL, sender TEXT NOT NULL, target TEXT NOT NULL, data TEXT, "
        "origin TEXT NOT NULL, origin_seq INTEGER NOT NULL, noop TEXT)"
    )
    conn.execute("CREATE UNIQUE INDEX events_op_id ON events (origin, origin_seq)")
    conn.execute("CREATE INDEX events_ts ON events (ts)")
    sql = _INSERT_EVENTS

    def go() -> None:
        for start in range(0, len(events), batch):
            rows = [_event_to_row(e) for e in events[start : start + batch]]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows)
            conn.execute("COMMIT")

    elapsed = _timeit(go)
    conn.close()
    return len(events) / elapsed


def _cuelog_append(path: Path, subs: list[Submission], batch: int) -> float:
    with EventLog.open(path) as elog:

        def go() -> None:
            for start in range(0, len(subs), batch):
                elog.append_batch(subs[start : start + batch])

        elapsed = _timeit(go)
    return len(subs) / elapsed


def bench_append(scratch: Path, quick: bool) -> list[Figures]:
    counts = {1: 200, 10: 1000, 100: 10000, 1000: 40000}
    if quick:
        counts = {1: 60, 10: 300, 100: 3000, 1000: 10000}
    rows: list[Figures] = []
    for batch, count in counts.items():
        ops = show_ops(count)
        subs = [Submission(op, OpId(op.sender, i + 1)) for i, op in enumerate(ops)]
        events = [
            Event(i + 1, 1.7e9 + i, "bench", op, OpId(op.sender, i + 1)) for i, op in enumerate(ops)
        ]
        raw = _raw_baseline(scratch / f"raw-{batch}.db", events, batch)
        ours = _cuelog_append(scratch / f"cuelog-{batch}.db", subs, batch)
        rows.append(
            {
                "batch": batch,
                "events": count,
                "cuelog_ev_s": ours,
                "raw_ev_s": raw,
                "ratio": ours / raw,
            }
        )
    return rows


def bench_fold(quick: bool) -> Figures:
    count = 100_000 if quick else 300_000
    ops = show_ops(count)
    events = [Event(i + 1, 1.7e9, "bench", op, OpId(op.sender, i + 1)) for i, op in enumerate(ops)]
    best = min(_timeit(lambda: fold(events)) for _ in range(3))
    return {"events": count, "fold_ev_s": count / best}


def bench_state_at(scratch: Path, quick: bool) -> Figures:
    count = 100_000 if quick else 1_000_000
    path = scratch / "big.db"
    build = _timeit(lambda: build_big_log(path, count))
    rng = random.Random(11)
    times: list[float] = []
    with EventLog.open(path, readonly=True) as elog:
        for seq in [rng.randint(1, count) for _ in range(30)]:
            start = time.perf_counter()
            elog.state_at(seq)
            times.append(time.perf_counter() - start)
    size = os.path.getsize(path)
    return {
        "events": count,
        "build_s": build,
        "file_mb": size / 1e6,
        "state_at_p50_s": statistics.median(times),
        "state_at_max_s": max(times),
    }


def run_log(scratch: Path, quick: bool) -> Figures:
    print("log: durable append vs raw sqlite3, fold, state at a seq ...", file=sys.stderr)
    return {
        "append": bench_append(scratch, quick),
        "fold": bench_fold(quick),
        "state_at": bench_state_at(scratch, quick),
    }


def print_log(figures: Figures) -> None:
    print("durable append (synchronous=FULL, WAL) vs raw sqlite3 executemany, same rows:")
    print(f"{'batch':>6} {'events':>7} {'cuelog ev/s':>12} {'raw ev/s':>10} {'ratio':>6}")
    for row in figures["append"]:
        print(
            f"{row['batch']:>6} {row['events']:>7} {row['cuelog_ev_s']:>12,.0f} "
            f"{row['raw_ev_s']:>10,.0f} {row['ratio']:>6.2f}"
        )
    print("target: ratio >= 0.50 at batch 100")
    f = figures["fold"]
    print(f"\nfold: {f['fold_ev_s']:,.0f} events/s over {f['events']:,} events (target >= 200,000)")
    s = figures["state_at"]
    print(
        f"\nstate at a random seq of a {s['events']:,}-event log ({s['file_mb']:.0f} MB, "
        f"built in {s['build_s']:.1f} s): p50 {s['state_at_p50_s'] * 1000:.1f} ms, "
        f"max {s['state_at_max_s'] * 1000:.1f} ms (target < 500 ms)"
    )


def run(args: argparse.Namespace) -> int:
    suites = ["log", "replication", "gateway", "replay"] if args.suite == "all" else [args.suite]
    figures: Figures = {"quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="cuelog-bench-", dir=args.dir) as tmp:
        scratch = Path(tmp)
        if "log" in suites:
            figures["log"] = run_log(scratch, args.quick)
        if "replication" in suites:
            print("replication: cluster processes, baselines ...", file=sys.stderr)
            figures["replication"] = run_replication(args.quick, scratch)
        if "gateway" in suites:
            print("gateway: dump, fan-out, command latency, floor ...", file=sys.stderr)
            figures["gateway"] = run_gateway(args.quick, scratch)
        if "replay" in suites:
            print("replay: building the logs, then every subcommand ...", file=sys.stderr)
            figures["replay"] = run_replay(args.quick, scratch)
    if args.json:
        print(dumps(figures).decode())
        return 0
    if "log" in figures:
        print_log(figures["log"])
    if "replication" in figures:
        if "log" in figures:
            print()
        print_replication(figures["replication"])
    if "gateway" in figures:
        if "log" in figures or "replication" in figures:
            print()
        print_gateway(figures["gateway"])
    if "replay" in figures:
        if len(figures) > 2:
            print()
        print_replay(figures["replay"])
    return 0
