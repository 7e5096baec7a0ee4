"""``cuelog status``: head seq, digest and the per-node table of a running controller."""

from __future__ import annotations

import argparse
from typing import Any

from eventlog import dumps
from replicas import DEFAULT_LISTEN
from replicas.client import ControllerClient, ControllerUnreachable
from tools import args as types


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "status",
        help="ask a running controller for its head seq, digest and nodes",
        description="Print the controller's log id, head seq and digest, and for every node: "
        "online, applied seq, lag in events and seconds, and whether its digest matches the "
        "log at its seq, and any problem with the controller's log file (deleted, replaced, "
        "behind what a node holds). Exit 1 if the controller does not answer, a node diverged "
        "or there is a problem.",
    )
    parser.add_argument(
        "--controller",
        default=DEFAULT_LISTEN,
        type=types.addresses,
        metavar="ADDR[,ADDR]",
        help=f"the controller's address (default {DEFAULT_LISTEN}); with a hot standby every "
        "candidate's, comma-separated: the leader answers",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    types.add_key(parser, "the controller's")
    parser.add_argument(
        "--timeout",
        type=types.positive_float,
        default=2.0,
        metavar="S",
        help="how long to wait for an answer (default 2 s)",
    )
    parser.set_defaults(func=run)
    return parser


def render(status: dict[str, Any]) -> str:
    lines = [
        f"log      {status['log_id']}",
        f"head     {status['head_seq']}",
        f"digest   {status['digest'] or 'not yet at this head (busy; it is between commits)'}",
        f"key      {status.get('key') or 'none (any peer that reaches it is admitted)'}",
        *([f"epoch    {status['epoch']}"] if status.get("epoch") else []),
        "",
        f"{'node':<16} {'online':<7} {'applied':>8} {'lag ev':>7} {'lag s':>7}  digest",
    ]
    for node, info in status["nodes"].items():
        match = {True: "match", False: "DIVERGED", None: "unknown"}[info["digest_match"]]
        lag_s = info["lag_seconds"]
        lag_text = "?" if lag_s is None else f"{lag_s:.2f}"
        lines.append(
            f"{node:<16} {'yes' if info['online'] else 'NO':<7} {info['applied_seq']:>8} "
            f"{info['lag_events']:>7} {lag_text:>7}  {info['digest'][:12]} {match}"
        )
        if info.get("conflict"):
            lines.append(
                f"  ! another process ({info['conflict']}) claims the id {node}: refused; stop "
                "one of them or give it another --id"
            )
    if not status["nodes"]:
        lines.append("(no node has checked in)")
    cluster = status.get("cluster")
    if cluster:
        lines += ["", *render_cluster(cluster)]
    for problem in status.get("problems", []):
        lines.append(f"PROBLEM  {problem}")
    for warning in status.get("warnings", []):
        lines.append(f"WARNING  {warning}")
    return "\n".join(lines)


def render_cluster(cluster: dict[str, Any]) -> list[str]:
    """The hot standby: who leads, whether answers wait for a standby, each standby's lag."""
    sync = cluster.get("sync_standby")
    lines = [
        f"leader   {cluster.get('leader')} (epoch {cluster.get('epoch')}, lease "
        f"{cluster.get('valid_for_s')} s left of {cluster.get('ttl_s')} s)"
        + ("" if cluster.get("leading", True) else "  NOT LEADING: its lease may have expired"),
        "acks     "
        + (
            f"synchronous: each waits for standby {sync}"
            if cluster.get("synchronous") and sync
            else "ALONE: no standby may take over until one has caught up"
            + (f" (standby {cluster['joining']} is joining)" if cluster.get("joining") else "")
        ),
    ]
    for name, info in (cluster.get("standbys") or {}).items():
        lines.append(
            f"standby  {name:<12} copied {info['copied']:>8}  lag {info['lag']:>6} ev  "
            f"seen {info['seen_ago_s']:.2f} s ago"
        )
    listed = ", ".join(sorted(cluster.get("candidates") or {}))
    if listed:
        lines.append(f"in etcd  {listed}")
    return lines


def run(args: argparse.Namespace) -> int:
    status = _ask_leader(args)
    status.pop("k", None)
    print(dumps(status).decode() if args.json else render(status))
    bad = any(
        info["digest_match"] is False or info.get("conflict") for info in status["nodes"].values()
    )
    return 1 if bad or status.get("problems") else 0


def _ask_leader(args: argparse.Namespace) -> dict[str, Any]:
    """The status of the controller that leads, among ``--controller``'s addresses (only the
    leader listens; a fenced one says it does not lead)."""
    addresses = args.controller.split(",")
    found: dict[str, Any] | None = None
    failed: ControllerUnreachable | None = None
    for address in addresses:
        key = types.load_key(args, address)
        try:
            with ControllerClient(address, timeout=args.timeout, key=key) as client:
                status = client.status()
        except ControllerUnreachable as exc:
            failed = exc
            continue
        if (status.get("cluster") or {}).get("leading", True):
            return status
        found = found or status
    if found is not None:
        return found
    assert failed is not None
    raise failed
