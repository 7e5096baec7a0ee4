"""``cuelog controller``: the log, sequencer, publisher, catch-up, liveness and UI gateway."""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any
from urllib.parse import urlsplit

from eventlog import DEFAULT_SNAPSHOT_EVERY, CuelogError, EventLog
from eventlog.logctx import ComponentLog
from gateway.server import DEFAULT_WS, Gateway, raise_open_files
from gateway.session import Policy
from replicas import DEFAULT_LISTEN, Controller
from replicas.candidate import Candidate, claim_after_override
from replicas.election import DEFAULT_TTL, Election
from replicas.membership import DEFAULT_NODE_TIMEOUT
from replicas.serving import DEFAULT_TAIL_LIMIT
from replicas.syncrep import DEFAULT_SYNC_TIMEOUT
from tools import args as types

log = ComponentLog("cuelog.controller", "controller")


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
    types.add_key(parser, "nodes and tools must hold it")
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
    ui = parser.add_argument_group(
        "UI gateway",
        "WebSocket + OSC for browsers, tablets and upstream's UI (ws://HOST:PORT/realtime), and "
        "on the same port the status page (/), /state and /cluster (JSON).",
    )
    ui.add_argument(
        "--ws",
        default=DEFAULT_WS,
        type=types.hostport,
        metavar="HOST:PORT",
        help=f"where UIs connect (default {DEFAULT_WS}; a rig uses 0.0.0.0:9190; "
        "'off' serves no UIs)",
    )
    ui.add_argument(
        "--allow",
        type=types.networks,
        default=(),
        metavar="CIDR[,CIDR]",
        help="networks whose UIs may control the show without a passcode (loopback always "
        "may; upstream's UI cannot send a passcode, so list the show network here)",
    )
    ui.add_argument(
        "--passcode",
        metavar="X",
        help="any other UI may take control after sending /connect X (five wrong tries lock "
        "its address out for 30 s)",
    )
    ui.add_argument(
        "--private",
        action="store_true",
        help="UIs without control see nothing either (by default they see the status)",
    )
    ha = parser.add_argument_group(
        "hot standby",
        "Start the same command on two controller hosts (each with its own --db, --listen and "
        "--name) and a three-member etcd (the third on a node machine). One leads; the other "
        "follows its log into its own file and takes over when the leader's etcd lease "
        "expires. A submit is acknowledged once the synchronous standby holds it durably. "
        "Nodes take every controller's address: --controller A,B.",
    )
    ha.add_argument(
        "--ha",
        metavar="HOST:PORT[,HOST:PORT]",
        help="etcd's client endpoints: run as a candidate of a hot-standby pair",
    )
    ha.add_argument(
        "--name",
        type=types.candidate_name,
        metavar="NAME",
        help="this candidate's name, unique in the cluster (default: the host name)",
    )
    ha.add_argument(
        "--advertise",
        type=types.address,
        metavar="ADDR",
        help="the address the other candidate follows this one at, when --listen is not "
        "dialable as is (tcp://0.0.0.0:9093 is not): e.g. tcp://192.168.1.10:9093",
    )
    ha.add_argument(
        "--ha-ttl",
        type=types.positive_int,
        default=DEFAULT_TTL,
        metavar="S",
        help=f"the leader's etcd lease (default {DEFAULT_TTL} s): a dead leader is replaced "
        "about this long after it died",
    )
    ha.add_argument(
        "--sync-timeout",
        type=types.positive_float,
        default=DEFAULT_SYNC_TIMEOUT,
        metavar="S",
        help="a synchronous standby silent this long is given up: the leader records in etcd "
        f"that it runs alone and acknowledges without it (default {DEFAULT_SYNC_TIMEOUT:g} s)",
    )
    ha.add_argument(
        "--cluster",
        default="show",
        metavar="NAME",
        help="the etcd key prefix's cluster name (default show): one etcd can serve several",
    )
    ha.add_argument(
        "--no-ha",
        action="store_true",
        help="etcd lost its majority and the show must go on: serve as the only controller on "
        "this file, without an election (logged, and written in the log; stop the other "
        "candidate first). With --ha ETCD too, it records in etcd as soon as etcd answers "
        "that only this host may lead next",
    )
    parser.set_defaults(func=run, node_name="controller")
    return parser


def run(args: argparse.Namespace) -> int:
    raise_open_files()
    if args.ha and not args.no_ha:
        return _run_candidate(args)
    name = args.name or socket.gethostname()
    if args.no_ha:
        log.warning(
            "--no-ha: %s serves %s as the only controller, without an election; make sure no "
            "other candidate runs (stop it first). %s",
            name,
            args.db,
            "It records in etcd, as soon as etcd answers, that only it may lead next."
            if args.ha
            else "Start this host first when you go back to --ha: its file holds what is "
            "acknowledged now (give --ha ETCD too and it records that in etcd itself).",
        )
    # open once here so a bad file (or one in use by another writer, or a node's replica) is
    # a one-line error before any socket is bound; the controller checks every page of it
    # when it opens it for good
    EventLog.open(
        args.db,
        synchronous=args.synchronous,
        role=None if args.no_ha else "controller",  # --no-ha: a standby's file serves as it is
        owner={"what": "cuelog controller", "listen": args.listen},
    ).close()
    key = types.load_key(args, args.listen)
    controller = Controller(
        args.db,
        args.listen,
        key=key,
        node_timeout=args.node_timeout,
        snapshot_every=args.snapshot_every,
        tail_limit=args.tail_limit,
        synchronous=args.synchronous,
        begin=(lambda core: core.override(name)) if args.no_ha else None,
        adopt=args.no_ha,
    )
    gateway = None
    if args.ws is not None:
        host, port = args.ws
        gateway = Gateway(
            controller,
            host,
            port,
            policy=Policy(allow=args.allow, passcode=args.passcode, private=args.private),
        )

    async def both() -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(controller.run())
                if gateway is not None:
                    tasks.create_task(gateway.run())
                if args.no_ha and args.ha:
                    tasks.create_task(_record_override(args, name, controller))
        except BaseExceptionGroup as group:  # one clear error, not a group's traceback
            raise _first(group) from None

    def stop() -> None:
        if gateway is not None:
            gateway.stop()
        controller.stop()

    return types.run_until_signal(both, stop)


async def _record_override(args: argparse.Namespace, name: str, controller: Controller) -> None:
    """``--no-ha --ha ETCD``: once etcd answers, record that only this host may lead next."""
    await controller.ready.wait()
    assert controller.core is not None
    core = controller.core
    async with Election(args.ha, name, cluster=args.cluster) as election:
        election.log_id = core.log_id
        # raises (and so stops this controller) if another leads under the election
        await claim_after_override(election, args.db, head=lambda: core.head)


def _run_candidate(args: argparse.Namespace) -> int:
    """``--ha``: stand by or lead as etcd decides, the UI gateway running while leading."""
    key = types.load_key(args, args.listen)
    name = args.name or socket.gethostname()
    # the file is this candidate's alone: another process holding it is a one-line error now
    # (a controller's log or a replica of one; anything else is refused the same way)
    EventLog.open(
        args.db, owner={"what": f"cuelog candidate {name}", "listen": args.listen}
    ).close()
    ws = None if args.ws is None else _reachable_ws(args.ws, args.advertise or args.listen)

    async def serve(controller: Controller) -> None:
        assert args.ws is not None
        host, port = args.ws
        policy = Policy(allow=args.allow, passcode=args.passcode, private=args.private)
        await Gateway(controller, host, port, policy=policy).run()

    candidate = Candidate(
        types.candidate_name(name),
        args.ha,
        args.db,
        args.listen,
        cluster=args.cluster,
        ttl=args.ha_ttl,
        sync_timeout=args.sync_timeout,
        key=key,
        ws=ws,
        advertise=args.advertise,
        serve=None if args.ws is None else serve,
        controller_options={
            "node_timeout": args.node_timeout,
            "snapshot_every": args.snapshot_every,
            "tail_limit": args.tail_limit,
            "synchronous": args.synchronous,
        },
    )

    async def main() -> None:
        try:
            await candidate.run()
        except BaseExceptionGroup as group:
            raise _first(group) from None

    return types.run_until_signal(main, candidate.stop)


def _reachable_ws(ws: tuple[str, int], advertise: str) -> str:
    """Where a browser reaches this candidate's gateway: a wildcard bind (0.0.0.0) is
    reached at the advertised controller address's host."""
    host, port = ws
    if host in ("0.0.0.0", "::", ""):
        found = urlsplit(advertise.replace("tls+tcp://", "tcp://")).hostname
        host = found if found and found not in ("0.0.0.0", "::") else socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group, unwrapped (a `CuelogError` when there is one)."""
    flat: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            pending[:0] = list(exc.exceptions)
        else:
            flat.append(exc)
    for exc in flat:
        if isinstance(exc, CuelogError):
            return exc
    return flat[0] if flat else group
