"""Logs for the benchmarks and the tests that need a big one: a show's usual mix of ops."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from tqdm import tqdm

from eventlog import ActionType, Event, EventLog, Operation, OperationType, OpId


def show_ops(count: int, seed: int = 7) -> list[Operation]:
    """A realistic mix: cue progress, players, status, mixer moves, commands."""
    rng = random.Random(seed)
    nodes = [f"node-{i}" for i in range(4)]
    ops: list[Operation] = []
    for i in range(count):
        node = nodes[i % 4]
        cue_id = f"cue-{(i // 6) % 50}"
        kind = i % 6
        if kind == 0:
            op = Operation(
                OperationType.CUE, ActionType.ADD, node, cue_id, {"id": cue_id, "offset": str(i)}
            )
        elif kind in (1, 2):
            pct = rng.randint(1, 99)
            op = Operation(
                OperationType.CUE,
                ActionType.UPDATE,
                node,
                cue_id,
                {"id": cue_id, "percentage": pct},
            )
        elif kind == 3:
            op = Operation(OperationType.CUE, ActionType.REMOVE, node, cue_id, {"id": cue_id})
        elif kind == 4:
            address = f"/{node}/audio/mixer/0/{rng.randint(0, 7)}/volume"
            op = Operation(
                OperationType.COMMAND,
                ActionType.UPDATE,
                "controller",
                "player_control",
                {"address": address, "value": round(rng.random(), 3)},
            )
        else:
            op = Operation(
                OperationType.STATUS, ActionType.UPDATE, node, "nextcue", {"nextcue": cue_id}
            )
        ops.append(op)
    return ops


def build_big_log(path: Path, count: int, snapshot_every: int = 1000) -> None:
    """A `count`-event log with snapshots, built through the replica path in big batches."""
    ops = show_ops(10_000)
    with EventLog.open(path, synchronous="OFF", snapshot_every=snapshot_every) as elog:
        bar = tqdm(total=count, unit="ev", desc="building log", disable=not sys.stderr.isatty())
        seq = 0
        while seq < count:
            n = min(10_000, count - seq)
            batch = [
                Event(
                    seq + i + 1,
                    1.7e9 + (seq + i) / 1000,
                    elog.log_id,
                    ops[i],
                    OpId("b", seq + i + 1),
                )
                for i in range(n)
            ]
            elog.append_events(batch)
            seq += n
            bar.update(n)
        bar.close()
