"""The gateway bench's show and the frames it expects on the wire.

- `big_show_ops` / `big_show_events`: a loaded show of 10,000 cues and 1,000 mixer channels
  (the dump phase's log);
- `fan_ops` / `fan_frames`: events that each change one address, and the frames the gateway
  sends for them byte for byte (the fan-out phase, and the bare server's copy of it);
- `go_frame` and the prefixes the bench's clients and probes recognise frames by.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any, Final

from pythonosc.osc_message_builder import OscMessageBuilder

from eventlog import (
    CONTROLLER,
    NODE_JOINED,
    ActionType,
    Event,
    Operation,
    OperationType,
    OpId,
    validate_operation,
)
from eventlog.reducer import SHOW_CUES
from gateway import osc
from gateway.view import CUE, CUE_ENABLED, DUMP_END, NEXTCUE

#: nodes of the dump's show (its mixer channels are spread over them)
SHOW_NODES: Final = 4
#: cues per load / ``show_cues`` listing (well under the 64 KiB operation limit)
LISTING: Final = 500
FAN_SENDER: Final = "bench-fan"

GO: Final = "/engine/command/go"
GO_PREFIX: Final = GO.encode() + b"\x00"
GO_REPLY_PREFIX: Final = b"/reply" + GO.encode() + b"\x00"
DUMP_END_PREFIX: Final = DUMP_END.encode() + b"\x00"
#: what a fan-out event looks like on the wire (the dump before dump_end is not counted)
FAN_PREFIXES: Final = (
    (CUE + "fan-").encode(),
    (CUE_ENABLED + "fan-").encode(),
    NEXTCUE.encode() + b"\x00",
)


def command_op(name: str, value: Any, sender: str = CONTROLLER, **extra: Any) -> Operation:
    """The command ``/engine/command/<name> value`` as `sender` submits it."""
    data = {"value": value, "address": f"/engine/command/{name}", **extra}
    return Operation(OperationType.COMMAND, ActionType.UPDATE, sender, name, data)


def big_show_ops(cues: int, channels: int, seed: int = 5) -> list[Operation]:
    """A loaded show of `cues` cues (uuids, as upstream's) and `channels` mixer channels.

    Nodes join; a load lists the first cues and ``show_cues`` listings the rest (every 50th
    cue disabled); nodes play three cues in ten (add, progress, end; the last 20 still
    playing); the operator disables 200 cues; every channel's fader moves twice.
    """
    rng = random.Random(seed)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(cues)]
    nodes = [f"node-{i}" for i in range(SHOW_NODES)]
    ops = [
        Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, NODE_JOINED, {"node": n})
        for n in nodes
    ]
    listed: list[dict[str, Any]] = []
    for i, cue in enumerate(ids):
        item: dict[str, Any] = {"id": cue, "node": nodes[i % SHOW_NODES]}
        if i % 50 == 49:
            item["enabled"] = False
        listed.append(item)
    ops.append(command_op("load", "bench-show", cues=listed[:LISTING], nodes=nodes))
    for start in range(LISTING, len(listed), LISTING):
        data = {"cues": listed[start : start + LISTING]}
        ops.append(Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, SHOW_CUES, data))
    played = cues * 3 // 10
    for i, cue in enumerate(ids[:played]):
        node = nodes[i % SHOW_NODES]
        ops.append(
            Operation(OperationType.CUE, ActionType.ADD, node, cue, {"id": cue, "offset": "0"})
        )
        pct = rng.randint(2, 99)
        ops.append(
            Operation(
                OperationType.CUE, ActionType.UPDATE, node, cue, {"id": cue, "percentage": pct}
            )
        )
        if i < played - 20:
            ops.append(Operation(OperationType.CUE, ActionType.REMOVE, node, cue, {"id": cue}))
    for cue in rng.sample(ids, min(200, len(ids))):
        ops.append(command_op("cue_enabled", f"{cue} 0"))
    for _ in range(2):
        for c in range(channels):
            node, out, ch = nodes[c % SHOW_NODES], (c // SHOW_NODES) % 2, c // (2 * SHOW_NODES)
            address = f"/{node}/audio/mixer/{out}/{ch}/volume"
            ops.append(command_op("player_control", round(rng.random(), 4), address=address))
    ops.append(
        Operation(OperationType.STATUS, ActionType.UPDATE, nodes[0], "nextcue", {"nextcue": ids[0]})
    )
    return [validate_operation(op) for op in ops]


def big_show_events(log_id: str, ops: list[Operation]) -> list[Event]:
    """`ops` as the events of log `log_id`, one a millisecond up to now."""
    base = time.time() - len(ops) / 1000
    return [
        Event(seq, base + seq / 1000, log_id, op, OpId("bench-show", seq))
        for seq, op in enumerate(ops, 1)
    ]


def fan_ops(count: int) -> list[Operation]:
    """Events that each change exactly one address, whatever order they commit in."""
    ops: list[Operation] = []
    for i in range(count):
        cue = f"fan-{i}"
        kind = i % 3
        if kind == 0:
            op = Operation(
                OperationType.CUE, ActionType.ADD, FAN_SENDER, cue, {"id": cue, "offset": "0"}
            )
        elif kind == 1:
            op = Operation(
                OperationType.STATUS, ActionType.UPDATE, FAN_SENDER, "nextcue", {"nextcue": cue}
            )
        else:
            op = command_op("cue_enabled", f"{cue} 0")
        ops.append(op)
    return ops


def fan_frames(count: int) -> list[bytes]:
    """The frames the gateway sends for `fan_ops(count)`, byte for byte."""
    frames: list[bytes] = []
    for i in range(count):
        cue = f"fan-{i}"
        kind = i % 3
        if kind == 0:
            frames.append(osc.encode_int(CUE + cue, 1))
        elif kind == 1:
            frames.append(osc.encode(NEXTCUE, cue))
        else:
            frames.append(osc.encode_int(CUE_ENABLED + cue, 0))
    return frames


def go_frame(k: int) -> bytes:
    """The frame of ``/engine/command/go k`` as a UI sends it."""
    builder = OscMessageBuilder(GO)
    builder.add_arg(k, "i")
    return bytes(builder.build().dgram)
