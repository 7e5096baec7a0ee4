"""The logs and operations the benchmarks (and the tests that need a big log) are built from.

- `show_ops`: a show's usual mix from four nodes (cue progress, status, mixer commands);
- `node_ops`: what one busy node sends (its cues starting, progressing, ending);
- `build_big_log`: a log of any size with snapshots, written through the replica path;
- `build_show`: a whole show over hours (GOs, cues one after another, node restarts), the log
  the replay suite and the timeline are measured on.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from eventlog import (
    CONTROLLER,
    NODE_JOINED,
    NODE_LEFT,
    ActionType,
    Event,
    EventLog,
    Operation,
    OperationType,
    OpId,
)


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


def node_ops(node: str, count: int) -> list[Operation]:
    """What a busy node sends: cues starting, progressing, ending, and its next cue."""
    ops: list[Operation] = []
    for i in range(count):
        cue = f"{node}-cue-{(i // 6) % 50}"
        step = i % 6
        if step == 0:
            op = Operation(
                OperationType.CUE, ActionType.ADD, node, cue, {"id": cue, "offset": str(i)}
            )
        elif step < 4:
            op = Operation(
                OperationType.CUE,
                ActionType.UPDATE,
                node,
                cue,
                {"id": cue, "percentage": 25 * step},
            )
        elif step == 4:
            op = Operation(OperationType.CUE, ActionType.REMOVE, node, cue, {"id": cue})
        else:
            op = Operation(
                OperationType.STATUS, ActionType.UPDATE, node, "nextcue", {"nextcue": cue}
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


def build_show(path: Path, count: int, hours: float, cues: int = 500) -> None:
    """A show of `count` events over `hours`: cues on 4 nodes run one after another (add,
    progress, remove), a GO before each, a restart of a node every few hundred cues."""
    rng = random.Random(5)
    nodes = [f"node-{i}" for i in range(4)]
    span = hours * 3600
    with EventLog.open(path, synchronous="OFF", snapshot_every=1000) as elog:
        seq = 0
        batch: list[Event] = []

        def add(op: Operation) -> None:
            nonlocal seq
            seq += 1
            ts = 1.7e9 + seq * span / count
            batch.append(Event(seq, ts, elog.log_id, op, OpId("bench", seq)))
            if len(batch) >= 5000:
                elog.append_events(batch)
                batch.clear()

        def status(sender: str, target: str, data: dict[str, Any]) -> Operation:
            return Operation(OperationType.STATUS, ActionType.UPDATE, sender, target, data)

        for node in nodes:
            add(status(CONTROLLER, NODE_JOINED, {"node": node, "reason": "first"}))
        listed = [{"id": f"cue-{i}", "node": nodes[i % 4]} for i in range(cues)]
        load = {"value": "big", "address": "/engine/command/load", "cues": listed[:4096]}
        add(Operation(OperationType.COMMAND, ActionType.UPDATE, "operator", "load", load))
        for node in nodes:
            add(status(node, "armed_ready", {"armed": "yes"}))
        per_cue = max(6, (count - seq) // cues)
        i = 0
        while seq < count - per_cue:
            cue, node = f"cue-{i % cues}", nodes[i % 4]
            go = {"value": None, "address": "/engine/command/go"}
            add(Operation(OperationType.COMMAND, ActionType.UPDATE, "operator", "go", go))
            add(status(node, "fired", {"seq": seq, "command": "go", "delay_ms": 2.0}))
            add(Operation(OperationType.CUE, ActionType.ADD, node, cue, {"id": cue, "offset": "0"}))
            for k in range(per_cue - 5):
                pct = min(99, 1 + k * 98 // max(1, per_cue - 5))
                add(
                    Operation(
                        OperationType.CUE,
                        ActionType.UPDATE,
                        node,
                        cue,
                        {"id": cue, "percentage": pct},
                    )
                )
            add(Operation(OperationType.CUE, ActionType.REMOVE, node, cue, {"id": cue}))
            if i % 150 == 149:  # a node restarts
                away = {"node": node, "reason": "restarted", "away_s": rng.random()}
                add(status(CONTROLLER, NODE_LEFT, away))
                add(
                    status(
                        CONTROLLER, NODE_JOINED, {**away, "resumed_from": seq, "catchup": "tail"}
                    )
                )
            i += 1
        while seq < count:
            add(status(nodes[seq % 4], "timecode", {"value": seq}))
        if batch:
            elog.append_events(batch)
