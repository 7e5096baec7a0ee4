"""The printed report of ``cuelog bench replay``: its table of rows (see `tools.bench.table`).

Every row is one real ``replay`` subcommand timed with its output discarded, held to its
target; verify is also set against the bare sqlite3 read of every row.
"""

from __future__ import annotations

from typing import Final

from tools.bench.common import Figures
from tools.bench.replay_measure import VERIFY_RATIO
from tools.bench.table import Row, Section, Target, print_report


def _seconds(label: str, key: str, limit: float) -> Row:
    """A subcommand timed in seconds, held to ``< limit`` seconds."""
    return Row(label, f"{{{key}:.3f}}", "s", target=Target("<", limit, " s", key=key))


SECTIONS: Final = (
    Section(
        "",
        "replay",
        (
            Row("log built in", "{build_s:.1f}", "s"),
            _seconds("info (counts, nodes, commands, fast check)", "info_s", 1.0),
            _seconds("state --at (worst of 5 random points)", "state_at_s", 0.5),
            _seconds("events in a 1-second time range", "events_range_s", 0.5),
            _seconds("cue (one cue's story)", "cue_s", 0.5),
            Row(
                "verify (every event, every snapshot)",
                "{verify_ev_s:,.0f}",
                "ev/s",
                baseline="{raw_scan_ev_s:,.0f} ev/s bare read",
                ratio=VERIFY_RATIO,
                target=Target(">=", 200_000, " ev/s", key="verify_ev_s"),
            ),
            _seconds("timeline of a 3-hour, 100,000-event show", "timeline_s", 5.0),
            Row("  timeline file", "{timeline_kb:.0f}", "KiB"),
        ),
    ),
)


def print_replay(figures: Figures) -> None:
    """The replay suite's table."""
    print_report(
        f"cuelog replay bench: a {figures.get('events', 0):,}-event log, each row the real "
        "subcommand with its output discarded; baseline: a bare sqlite3 read of every row",
        SECTIONS,
        figures,
    )
