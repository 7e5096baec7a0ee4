"""The ``cuelog bench`` command line: which suites to run, then their figures or their tables.

`SUITES` is the one list of suites, in the order ``cuelog bench`` (``all``) runs them: each
names what it says on stderr while it runs, how it is measured and how it is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eventlog import dumps
from tools.bench.common import Figures
from tools.bench.gateway_measure import run_gateway
from tools.bench.gateway_report import print_gateway
from tools.bench.log_measure import run_log
from tools.bench.log_report import print_log
from tools.bench.replay_measure import run_replay
from tools.bench.replay_report import print_replay
from tools.bench.replication_measure import run_replication
from tools.bench.replication_report import print_replication


@dataclass(frozen=True, slots=True)
class Suite:
    """One benchmark suite: its progress note, its measurement and its printed table."""

    note: str
    measure: Callable[[bool, Path], Figures]
    show: Callable[[Figures], None]


SUITES: Final = {
    "log": Suite("durable append vs raw sqlite3, fold, state at a seq", run_log, print_log),
    "replication": Suite("cluster processes, baselines", run_replication, print_replication),
    "gateway": Suite("dump, fan-out, command latency, floor", run_gateway, print_gateway),
    "replay": Suite("building the logs, then every subcommand", run_replay, print_replay),
}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``cuelog`` subcommands `sub`."""
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
        choices=[*SUITES, "all"],
        help="which benchmark (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (seconds, not minutes)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument(
        "--dir", default=None, help="folder for scratch files (default: a temp dir)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the chosen suites in a scratch folder; print their figures as JSON or as tables."""
    chosen = list(SUITES) if args.suite == "all" else [args.suite]
    figures: Figures = {"quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="cuelog-bench-", dir=args.dir) as tmp:
        for name in chosen:
            print(f"{name}: {SUITES[name].note} ...", file=sys.stderr)
            figures[name] = SUITES[name].measure(args.quick, Path(tmp))
    if args.json:
        print(dumps(figures).decode())
        return 0
    for i, name in enumerate(chosen):
        if i:
            print()
        SUITES[name].show(figures[name])
    return 0
