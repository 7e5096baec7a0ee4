"""The ``cuelog bench`` command line: which suites to run, then their figures or their tables.

`SUITES` is the one list of suites, in the order ``cuelog bench`` (``all``) runs them: each
names what it says on stderr while it runs, how it is measured and how it is printed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eventlog import dumps
from tools.bench.common import Figures


@dataclass(frozen=True, slots=True)
class Suite:
    """One benchmark suite: its progress note, its measurement and its printed table."""

    note: str
    #: ``module:function`` of the measurement and of the printed table, imported only when
    #: the suite runs (every ``cuelog`` command builds this parser: it must stay light)
    measure: str
    show: str

    def measured(self, quick: bool, scratch: Path) -> Figures:
        found: Figures = _load(self.measure)(quick, scratch)
        return found

    def print(self, figures: Figures) -> None:
        _load(self.show)(figures)


def _load(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(f"tools.bench.{module}"), name)
    return found


SUITES: Final = {
    "log": Suite(
        "durable append vs raw sqlite3, fold, state at a seq",
        "log_measure:run_log",
        "log_report:print_log",
    ),
    "replication": Suite(
        "cluster processes, baselines",
        "replication_measure:run_replication",
        "replication_report:print_replication",
    ),
    "gateway": Suite(
        "dump, fan-out, command latency, floor",
        "gateway_measure:run_gateway",
        "gateway_report:print_gateway",
    ),
    "ha": Suite(
        "hot standby: takeovers and the synchronous standby's cost (needs etcd)",
        "ha_measure:run_ha",
        "ha_report:print_ha",
    ),
    "replay": Suite(
        "building the logs, then every subcommand",
        "replay_measure:run_replay",
        "replay_report:print_replay",
    ),
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
            figures[name] = SUITES[name].measured(args.quick, Path(tmp))
    if args.json:
        print(dumps(figures).decode())
        return 0
    for i, name in enumerate(chosen):
        if i:
            print()
        SUITES[name].print(figures[name])
    return 0
