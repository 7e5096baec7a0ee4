"""The printed report of ``cuelog bench log``: its table of rows (see `tools.bench.table`)."""

from __future__ import annotations

from typing import Final

from tools.bench.common import Figures
from tools.bench.log_measure import APPEND_RATIO
from tools.bench.table import Row, Section, Target, print_report

#: the append ratio is held to its target at this batch size
TARGET_BATCH: Final = 100
TARGET_APPEND_RATIO: Final = 0.5
TARGET_FOLD_EV_S: Final = 200_000
TARGET_STATE_AT_MS: Final = 500.0

SECTIONS: Final = (
    Section(
        "append",
        "durable append",
        (
            Row(
                "durable append, batch {batch:,} ({events:,} events)",
                "{cuelog_ev_s:,.0f}",
                "ev/s",
                baseline="{raw_ev_s:,.0f} ev/s",
                ratio=APPEND_RATIO,
                target=Target(
                    ">=",
                    TARGET_APPEND_RATIO,
                    key="ratio",
                    applies=lambda item: item.get("batch") == TARGET_BATCH,
                ),
            ),
        ),
        each=True,
    ),
    Section(
        "fold",
        "fold",
        (
            Row(
                "fold of {events:,} in-memory events",
                "{fold_ev_s:,.0f}",
                "ev/s",
                target=Target(">=", TARGET_FOLD_EV_S, " ev/s", key="fold_ev_s"),
            ),
        ),
    ),
    Section(
        "state_at",
        "state at a seq",
        (
            Row("state at a random seq of a {events:,}-event log ({file_mb:.0f} MB)"),
            Row("  log built in", "{build_s:.1f}", "s"),
            Row("  p50", lambda f: f"{f['state_at_p50_s'] * 1000:.1f}", "ms"),
            Row(
                "  max",
                lambda f: f"{f['state_at_max_s'] * 1000:.1f}",
                "ms",
                target=Target(
                    "<", TARGET_STATE_AT_MS, " ms", key=lambda f: f["state_at_max_s"] * 1000
                ),
            ),
        ),
    ),
)


def print_log(figures: Figures) -> None:
    """The log suite's table: each append against raw sqlite3, fold, state at a seq."""
    print_report(
        "cuelog log bench: durable append (synchronous=FULL, WAL) vs raw sqlite3 executemany "
        "of the same rows, fold, state at a seq",
        SECTIONS,
        figures,
    )
