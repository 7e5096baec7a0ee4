"""The ``cuelog`` command: one parser, one logging setup, one error policy.

Exit codes: 0 success, 1 when what it reads or checks is bad (a cuelog error), 2 on a usage
error, 130 on Ctrl-C (128 + the signal for SIGTERM / SIGHUP) when that cut the work short;
a server stopped by any of them exits 0. Errors print as one line; ``--log-level debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable

from eventlog import CuelogError, __version__
from tools import args as types
from tools import bench, controller, demo, keygen, logs, node, rebuild, replay, status

log = logging.getLogger("cuelog")

Runner = Callable[[argparse.Namespace], int]


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="info",
        help="how much to log to stderr (default: info; debug also shows tracebacks)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cuelog",
        description="cuelog keeps the state of a live show consistent across machines: every "
        "operation is a numbered event in the controller's SQLite log, replicated to nodes.",
        epilog="Run `cuelog SUBCOMMAND --help` for the options of each subcommand.",
    )
    parser.add_argument("--version", action="version", version=f"cuelog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for module in (controller, node, status, demo, bench, rebuild, keygen):
        child = module.add_parser(sub)
        add_common(child)
    rp = sub.add_parser(
        "replay",
        help="post-mortem of a log file (same as the `replay` command)",
        description="Post-mortem of a log file; see `replay --help`.",
        add_help=False,
    )
    rp.add_argument("rest", nargs=argparse.REMAINDER)
    rp.set_defaults(func=lambda args: replay.main(args.rest), log_level="info")
    return parser


def run(func: Runner, args: argparse.Namespace) -> int:
    """Run a subcommand with the shared error policy."""
    try:
        return func(args)
    except CuelogError as exc:
        if args.log_level == "debug":
            log.exception("failed")
        print(f"{args.prog_name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (`types.Stopped`)
        if isinstance(exc, types.Stopped) and exc.signum != signal.SIGINT:
            print(f"{args.prog_name}: stopped by {exc}", file=sys.stderr)
            return exc.exit_code
        print(f"{args.prog_name}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["replay"]:
        return replay.main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.prog_name = "cuelog"
    node_name = getattr(args, "node_name", None) or getattr(args, "id", None) or "-"
    logs.configure(args.log_level, node=str(node_name))
    types.install_stop_signals()
    func: Runner = args.func
    return run(func, args)


if __name__ == "__main__":
    sys.exit(main())
