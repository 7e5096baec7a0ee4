"""``cuelog demo``: play a short scripted show and say where to look.

This stage writes the show into a real log file through the real store (validation, dedup,
durable commits, snapshots) and prints a summary and the ``replay`` commands to inspect it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from eventlog import EventLog, OpId, Submission, digest
from tools.show import demo_show

log = logging.getLogger("cuelog.demo")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="play a short scripted show into a log and print where to look",
        description="Play a short scripted show (load, players, arm, GO, cue progress, stop) "
        "into a fresh log file and print a summary plus the replay commands to inspect it.",
    )
    parser.add_argument(
        "--dir",
        default="demo-run",
        help="folder for the demo's files (default: ./demo-run; the log is recreated)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "controller.db"
    for suffix in ("", "-wal", "-shm"):
        target = Path(f"{path}{suffix}")
        if target.exists():
            os.remove(target)
    nodes = ["node-a", "node-b"]
    counters: dict[str, int] = {}
    refused: list[tuple[int, str, str]] = []
    with EventLog.open(path, snapshot_every=10) as elog:
        for step in demo_show(nodes):
            counters[step.sender] = counters.get(step.sender, 0) + 1
            sub = Submission(step.op, OpId(step.sender, counters[step.sender]))
            result = elog.append_batch([sub])
            seq, reason = result.seqs[0], result.reasons[0]
            if reason is not None:
                refused.append((seq, str(step.op), reason))
                log.warning("%s: %s", step.op, reason, extra={"seq": seq, "node": step.sender})
            elif step.note:
                log.info("%s: %s", step.note, step.op, extra={"seq": seq, "node": step.sender})
        state = elog.state
        print(f"\nlog      {path}  (log_id {elog.log_id})")
        print(f"events   {elog.head}   snapshots {len(elog.snapshots())}")
        print(f"digest   {digest(state)}")
        engine = state.engine
        print(f"engine   load={engine['load']} running={engine['running']} armed={engine['armed']}")
        for cue_id, info in sorted(state.cues.items()):
            print(f"cue      {cue_id} status={info['status']} node={info['node']}")
        print(f"ignored  {state.ignored} recorded no-ops (refused or stale)")
        for seq, what, reason in refused:
            print(f"         seq {seq}: {what}: {reason}")
    print("\nwhere to look:")
    print(f"  replay info {path}")
    print(f"  replay events {path}")
    print(f"  replay state {path} --at 12")
    print(f"  replay verify {path}")
    return 0
