"""``cuelog node``: a node replica of the controller's log."""

from __future__ import annotations

import argparse
from typing import Any

from eventlog import EventLog
from eventlog.logctx import ComponentLog
from replicas import NodeCommunications
from tools import args as types
from tools.engine import SimulatedEngine

log = ComponentLog("cuelog.node")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "node",
        help="run a node replica of the controller's log",
        description="Run a node: dial the controller (redialing forever), replicate its log, "
        "heartbeat its applied seq and digest. With --db the replica is kept in its own SQLite "
        "file (a valid cuelog log that `replay` reads), so a restart resumes where it stopped.",
    )
    parser.add_argument("--id", required=True, type=types.node_id, help="this node's id")
    parser.add_argument(
        "--controller",
        required=True,
        type=types.addresses,
        metavar="ADDR[,ADDR]",
        help="the controller's address, e.g. tcp://127.0.0.1:9093; with a hot standby every "
        "candidate's, comma-separated (the node follows whichever leads)",
    )
    parser.add_argument("--db", metavar="PATH", help="keep the replica in this log file")
    types.add_key(parser, "the controller's")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="act as a node engine: react to load/go/stop with players, cues and progress",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.db:
        # a bad file, the controller's log, or one another process writes: one clear line
        EventLog.open(args.db, synchronous="NORMAL", role="replica").close()
    key = types.load_key(args, args.controller)
    comms = NodeCommunications(args.controller, args.id, db=args.db, key=key)
    if args.simulate:
        engine = SimulatedEngine(comms)
        comms.set_command_callback(engine.on_command)
        comms.set_restore_callback(engine.on_restore)
    else:
        node_log = log.for_node(args.id)
        comms.set_command_callback(
            lambda name, value, address: node_log.info("command %s = %r (%s)", name, value, address)
        )
    replica = comms.replica
    return types.run_until_signal(replica.run, replica.stop)
