"""``cuelog bench log``: the event log itself, measured in one run on one machine.

- durable append throughput (events/s) at batch sizes 1, 10, 100, 1000, against a raw
  ``sqlite3`` ``executemany`` baseline with the same pragmas and the same rows;
- fold speed (events/s) of the reducer over in-memory events;
- time to rebuild the state at random seqs of a 1,000,000-event log using its snapshots.

The table that prints these figures is `tools.bench.log_report`.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path
from typing import Final

from eventlog import Event, EventLog, OpId, Submission, fold
from tools.bench.baselines import raw_append
from tools.bench.common import Figures, timeit
from tools.bench.data import build_big_log, show_ops
from tools.bench.table import Ratio

#: events appended at each batch size
COUNTS: Final = {1: 200, 10: 1000, 100: 10000, 1000: 40000}
QUICK_COUNTS: Final = {1: 60, 10: 300, 100: 3000, 1000: 10000}
#: an append row's ratio: cuelog's events/s over raw sqlite3's
APPEND_RATIO: Final = Ratio("cuelog_ev_s", "raw_ev_s")


def _cuelog_append(path: Path, subs: list[Submission], batch: int) -> float:
    with EventLog.open(path) as elog:

        def go() -> None:
            for start in range(0, len(subs), batch):
                elog.append_batch(subs[start : start + batch])

        elapsed = timeit(go)
    return len(subs) / elapsed


def bench_append(scratch: Path, quick: bool) -> list[Figures]:
    rows: list[Figures] = []
    for batch, count in (QUICK_COUNTS if quick else COUNTS).items():
        ops = show_ops(count)
        subs = [Submission(op, OpId(op.sender, i + 1)) for i, op in enumerate(ops)]
        events = [
            Event(i + 1, 1.7e9 + i, "bench", op, OpId(op.sender, i + 1)) for i, op in enumerate(ops)
        ]
        row: Figures = {
            "batch": batch,
            "events": count,
            "cuelog_ev_s": _cuelog_append(scratch / f"cuelog-{batch}.db", subs, batch),
            "raw_ev_s": raw_append(scratch / f"raw-{batch}.db", events, batch),
        }
        row["ratio"] = APPEND_RATIO.of(row)
        rows.append(row)
    return rows


def bench_fold(quick: bool) -> Figures:
    count = 100_000 if quick else 300_000
    ops = show_ops(count)
    events = [Event(i + 1, 1.7e9, "bench", op, OpId(op.sender, i + 1)) for i, op in enumerate(ops)]
    best = min(timeit(lambda: fold(events)) for _ in range(3))
    return {"events": count, "fold_ev_s": count / best}


def bench_state_at(scratch: Path, quick: bool) -> Figures:
    count = 100_000 if quick else 1_000_000
    path = scratch / "big.db"
    build = timeit(lambda: build_big_log(path, count))
    rng = random.Random(11)
    times: list[float] = []
    with EventLog.open(path, readonly=True) as elog:
        for seq in [rng.randint(1, count) for _ in range(30)]:
            start = time.perf_counter()
            elog.state_at(seq)
            times.append(time.perf_counter() - start)
    return {
        "events": count,
        "build_s": build,
        "file_mb": os.path.getsize(path) / 1e6,
        "state_at_p50_s": statistics.median(times),
        "state_at_max_s": max(times),
    }


def run_log(quick: bool, scratch: Path) -> Figures:
    """Every log measurement (see the module docstring)."""
    return {
        "append": bench_append(scratch, quick),
        "fold": bench_fold(quick),
        "state_at": bench_state_at(scratch, quick),
    }
