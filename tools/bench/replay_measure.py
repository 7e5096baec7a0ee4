"""``cuelog bench replay``: the post-mortem tool on a big log, against raw SQLite reads.

A 1,000,000-event log (100,000 with ``--quick``) of a show's usual mix, and a 3-hour show of
100,000 events with 500 cues, GOs and node restarts for the timeline (both `build_show`).
Each figure is the median of a few runs of the real subcommand (output discarded); the
baseline is a bare ``sqlite3`` read of the same rows in the same run (`raw_scan`). The table
that prints them is `tools.bench.replay_report`.
"""

from __future__ import annotations

import contextlib
import io
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Final

from eventlog import EventLog
from tools import replay
from tools.bench.baselines import raw_scan
from tools.bench.common import Figures, timeit
from tools.bench.data import build_show
from tools.bench.table import Ratio

#: verify's events/s over the bare read's
VERIFY_RATIO: Final = Ratio("verify_ev_s", "raw_scan_ev_s")


def _quiet(argv: list[str]) -> float:
    """Seconds `replay argv` takes, its output thrown away (it must succeed)."""
    codes: list[int] = []
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        elapsed = timeit(lambda: codes.append(replay.main(argv)))
    if codes[0] != 0:
        raise RuntimeError(f"replay {' '.join(argv)} exited {codes[0]}")
    return elapsed


def _median(fn: Callable[[], float], runs: int = 3) -> float:
    return statistics.median(fn() for _ in range(runs))


def run_replay(quick: bool, scratch: Path) -> Figures:
    """Every replay measurement (see the module docstring)."""
    count = 100_000 if quick else 1_000_000
    big = scratch / "replay-big.db"
    build_s = timeit(lambda: build_show(big, count, hours=count / 1000 / 3600 * 3))
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
    figures["raw_scan_ev_s"] = raw_scan(big)
    figures["cue_s"] = _median(lambda: _quiet(["cue", str(big), "cue-137"]))
    out = scratch / "timeline.html"
    figures["timeline_s"] = _median(
        lambda: _quiet(["timeline", str(show), "-o", str(out), "--quiet"]), runs=1
    )
    figures["timeline_kb"] = out.stat().st_size / 1024
    return figures
