"""``cuelog controller``: the log, sequencer, publisher, catch-up and liveness."""

from __future__ import annotations

import argparse
from typing import Any

from eventlog import DEFAULT_SNAPSHOT_EVERY, EventLog
from replicas import DEFAULT_LISTEN, Controller
from replicas.sequencer import DEFAULT_NODE_TIMEOUT, DEFAULT_TAIL_LIMIT
from tools import args as types


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "controller",
        help="run the controller: the show log and its replication to nodes",
        description="Run the controller. Every operation from nodes and the operator is "
        "appended to the SQLite log at --db (created if missing, continued if it exists) and "
        "streamed to every node. Nodes connect to --listen; the event stream uses the next "
        "port (tcp) or PATH.events (ipc).",
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="the log file")
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        type=types.address,
        metavar="ADDR",
        help=f"where nodes connect (default {DEFAULT_LISTEN}; a rig uses tcp://0.0.0.0:9093)",
    )
    parser.add_argument(
        "--node-timeout",
        type=types.positive_float,
        default=DEFAULT_NODE_TIMEOUT,
        metavar="S",
        help=f"a node silent this long has left (default {DEFAULT_NODE_TIMEOUT:g} s)",
    )
    parser.add_argument(
        "--snapshot-every",
        type=types.positive_int,
        default=DEFAULT_SNAPSHOT_EVERY,
        metavar="K",
        help=f"store a snapshot every K events (default {DEFAULT_SNAPSHOT_EVERY})",
    )
    parser.add_argument(
        "--tail-limit",
        type=types.positive_int,
        default=DEFAULT_TAIL_LIMIT,
        metavar="N",
        help="a node further behind than N events is sent a snapshot instead of the tail "
        f"(default {DEFAULT_TAIL_LIMIT})",
    )
    parser.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="SQLite durability: FULL survives power loss (default), NORMAL only crashes",
    )
    parser.set_defaults(func=run, node_name="controller")
    return parser


def run(args: argparse.Namespace) -> int:
    # open once here so a bad file is a one-line error before any socket is bound
    EventLog.open(args.db, synchronous=args.synchronous).close()
    controller = Controller(
        args.db,
        args.listen,
        node_timeout=args.node_timeout,
        snapshot_every=args.snapshot_every,
        tail_limit=args.tail_limit,
        synchronous=args.synchronous,
    )
    return types.run_until_signal(controller.run, controller.stop)
