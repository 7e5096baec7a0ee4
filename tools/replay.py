"""``replay``: the post-mortem tool. Read-only on a log file (a copy, or a live log).

Every reading is one consistent snapshot of the file (one read transaction), however long it
takes and whatever a controller appends meanwhile.

    replay info LOG                      what the file is, how long, how many events
    replay events LOG [filters]          the events, as text, JSON lines or CSV
    replay state LOG --at WHEN           the state at a seq or a wall-clock time
    replay diff LOG A B                  what changed between two points
    replay cue LOG CUE|WHEN              why a cue played, or did not
    replay node LOG NODE                 a node's joins, restarts and what it fired
    replay timeline LOG -o FILE          a picture of the show (SVG or HTML)
    replay export LOG [-o FILE]          every event with its no-op reason, JSONL or CSV
    replay serve LOG --ws HOST:PORT      play the show again to UIs
    replay verify LOG                    gapless seqs, valid events, snapshots re-derived

This module is the parser and the error policy; each group of subcommands has its module:
``replay_info`` (info, verify), ``replay_events`` (events, export), ``replay_state`` (state,
diff), ``replay_stories`` (cue, node, timeline) and ``replay_serve`` (serve). Points in the show
are read by ``replay_points``; output is written by ``formats``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from eventlog import CuelogError, UsageError
from tools import args as types
from tools import logs
from tools.replay_events import EXPORT_COLUMNS, cmd_events, cmd_export
from tools.replay_info import cmd_info, cmd_verify
from tools.replay_points import POINT_HELP, parse_when
from tools.replay_state import cmd_diff, cmd_state
from tools.replay_stories import cmd_cue, cmd_node, cmd_timeline

__all__ = ["EXPORT_COLUMNS", "build_parser", "main", "parse_when"]

#: what runs a subcommand: its exit code from the parsed arguments
Command = Callable[[argparse.Namespace], int]


def cmd_serve(args: argparse.Namespace) -> int:
    """``replay serve``, its gateway imported only when it runs."""
    from tools.replay_serve import cmd_serve as serve

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replay",
        description="Post-mortem of a cuelog log file: the controller's log, a node's replica, "
        "or a copy. Read-only: safe on a live log, never writes to the file.",
        epilog=f"Points in the show (--at, --since, --until, cue): {POINT_HELP}. Times are "
        "shown in the zone the log recorded (--utc for UTC). Exit codes: 0 fine, 1 a bad or "
        "damaged log, 2 a usage error.",
    )
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="warning",
        help="stderr logging (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    def command(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("log", help="the log file")
        p.add_argument("--utc", action="store_true", help="show times in UTC")
        p.set_defaults(func=func)
        return p

    p = command(
        "info",
        "what the file is and what happened: events by type, action and sender, nodes with "
        "their online periods and restarts, commands issued and refused, a fast integrity check",
        cmd_info,
    )
    p.add_argument("--json", action="store_true", help="one JSON object")

    p = command("events", "list events, filtered; a table, JSON lines or CSV", cmd_events)
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only seq > SEQ")
    p.add_argument("--to-seq", type=int, default=None, metavar="SEQ", help="only seq <= SEQ")
    p.add_argument("--since", metavar="WHEN", help="only events at or after WHEN (a seq or time)")
    p.add_argument("--until", metavar="WHEN", help="only events before WHEN (a seq or time)")
    p.add_argument("--type", choices=["cue", "player", "command", "status"])
    p.add_argument("--action", choices=["add", "update", "remove"])
    p.add_argument("--target", help="only this target (cue id, command name, ...)")
    p.add_argument("--sender", help="only from this sender (node id or 'controller')")
    p.add_argument("--grep", metavar="TEXT", help="only events whose data contains TEXT")
    p.add_argument("--limit", type=types.count, default=0, help="at most this many events (0: all)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON lines (with the no-op reason)")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.add_argument(
        "--why", action="store_true", help="mark events the reducer refused or ignored, and why"
    )

    p = command("state", "the state at a seq or a time", cmd_state)
    p.add_argument("--at", required=True, metavar="WHEN", help="a seq or a time")
    p.add_argument("--json", action="store_true", help="the state and its digest as JSON")

    p = command("diff", "what changed in the state between A and B", cmd_diff)
    p.add_argument("a", metavar="A", help="a seq or a time")
    p.add_argument("b", metavar="B", help="a seq or a time")

    p = command("verify", "check gapless seqs, valid events and snapshot digests", cmd_verify)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "cue",
        "the story of one cue: what touched it, the commands around it, whether its GO was "
        "refused and why, which nodes were online and fired it, how late; given a time, the "
        "story of what was playing then",
        cmd_cue,
    )
    p.add_argument("cue", metavar="CUE_ID|WHEN", help="a cue id, or a point in the show")
    p.add_argument("--json", action="store_true", help="the facts as JSON (one line per cue)")

    p = command(
        "node",
        "the story of one node: joins, leaves, restarts, the commands it got and fired (and "
        "how late), what it reported",
        cmd_node,
    )
    p.add_argument("node", metavar="NODE_ID", help="the node id")
    p.add_argument("--json", action="store_true", help="the facts as JSON")

    p = command(
        "timeline",
        "a picture of the show: one lane per node, cue bars coloured by outcome, GO/STOP/LOAD "
        "markers, offline periods and restarts (SVG, or HTML if FILE ends in .html)",
        cmd_timeline,
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .svg or .html file")
    p.add_argument("--since", metavar="WHEN", help="start the picture here")
    p.add_argument("--until", metavar="WHEN", help="end it here")
    p.add_argument("--title", help="the picture's title")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "export",
        "every event with its no-op reason as JSON lines or CSV (for spreadsheets, pandas, "
        "or sqlite-utils); columns: " + ", ".join(EXPORT_COLUMNS),
        cmd_export,
    )
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "serve",
        "play the recorded show to UIs through the gateway (WebSocket OSC and the status "
        "page), at any speed; UIs steer it with /replay/pause, /replay/play, "
        "/replay/seek <seq|time> and /replay/speed <x>; their commands are refused",
        cmd_serve,
    )
    p.add_argument(
        "--ws",
        default=("127.0.0.1", 9290),
        type=types.hostport,
        metavar="HOST:PORT",
        help="where UIs connect (default 127.0.0.1:9290)",
    )
    p.add_argument(
        "--speed", type=types.speed, default=1.0, help="1 is real time, 10 ten times faster"
    )
    p.add_argument("--from", dest="from_", metavar="WHEN", help="start here (a seq or a time)")
    p.add_argument("--to", metavar="WHEN", help="stop here (a seq or a time)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        result: int = args.func(args)
        return result
    except UsageError as exc:  # what was asked makes no sense: exit 2, as argparse does
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2
    except CuelogError as exc:  # the log is bad (missing, not a log, damaged)
        print(f"replay: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:  # an output that cannot be written, a file gone mid-read
        where = f" {exc.filename}" if exc.filename else ""
        print(f"replay: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
