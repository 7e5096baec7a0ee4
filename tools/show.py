"""A short scripted show, used by ``cuelog demo`` and the benchmarks.

A show is a list of `Step`s: who sends which operation. The same script drives an in-process
log (issue-2 demo), a real cluster, and benchmark load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventlog import ActionType, Operation, OperationType

CONTROLLER = "controller"


@dataclass(frozen=True, slots=True)
class Step:
    sender: str
    op: Operation
    note: str = ""


def command(name: str, value: Any = None, **extra: Any) -> Operation:
    data = {"value": value, "address": f"/engine/command/{name}", **extra}
    return Operation(OperationType.COMMAND, ActionType.UPDATE, CONTROLLER, name, data)


def status(sender: str, target: str, data: dict[str, Any]) -> Operation:
    return Operation(OperationType.STATUS, ActionType.UPDATE, sender, target, data)


def cue(sender: str, action: ActionType, cue_id: str, data: dict[str, Any]) -> Operation:
    return Operation(OperationType.CUE, action, sender, cue_id, {"id": cue_id, **data})


def player(sender: str, action: ActionType, player_id: str) -> Operation:
    return Operation(OperationType.PLAYER, action, sender, player_id, None)


def volume(node: str, out: int, channel: int, value: float) -> Operation:
    address = f"/{node}/audio/mixer/{out}/{channel}/volume"
    return Operation(
        OperationType.COMMAND,
        ActionType.UPDATE,
        CONTROLLER,
        "player_control",
        {"address": address, "value": value},
    )


def joined(node: str) -> Operation:
    return status(CONTROLLER, "node_joined", {"node": node})


def play_cue(node: str, cue_id: str, offset: int) -> list[Step]:
    """A node playing one cue: start, progress at 25/50/75 %, end."""
    steps = [Step(node, cue(node, ActionType.ADD, cue_id, {"offset": str(offset)}), "cue starts")]
    for pct in (25, 50, 75):
        steps.append(Step(node, cue(node, ActionType.UPDATE, cue_id, {"percentage": pct})))
    steps.append(Step(node, cue(node, ActionType.REMOVE, cue_id, {}), "cue ends"))
    return steps


def arm(nodes: list[str]) -> list[Step]:
    return [Step(n, status(n, "armed_ready", {"armed": "yes"}), "armed") for n in nodes]


def demo_show(nodes: list[str], project: str = "demo-show") -> list[Step]:
    """Load, players, arm, GO twice with cue progress on two nodes, a refused GO, stop."""
    a, b = nodes[0], nodes[-1]
    steps: list[Step] = [Step(CONTROLLER, command("load", project, nodes=nodes), "load")]
    for node in nodes:
        steps.append(Step(node, player(node, ActionType.ADD, "audiomixer_0")))
        steps.append(Step(node, player(node, ActionType.ADD, f"audioplayer_cue-{node}")))
    steps.append(Step(CONTROLLER, command("go"), "GO before armed: refused, never fired"))
    steps += arm(nodes)
    steps.append(Step(a, status(a, "nextcue", {"nextcue": "cue-1"})))
    steps.append(Step(CONTROLLER, command("go"), "GO cue-1"))
    steps += play_cue(a, "cue-1", 0)
    steps.append(Step(CONTROLLER, volume(b, 0, 1, 0.8), "mixer"))
    steps.append(Step(b, status(b, "nextcue", {"nextcue": "cue-2"})))
    steps.append(Step(CONTROLLER, command("go"), "GO cue-2"))
    steps += play_cue(b, "cue-2", 1500)
    steps.append(Step(b, status(b, "cue_enabled", {"cue_id": "cue-3", "enabled": False})))
    steps.append(Step(CONTROLLER, command("stop"), "stop"))
    steps += arm(nodes)
    return steps
