"""Small builders shared by the eventlog tests: wire dicts, events, a fake clock, a show driver.

Nothing here does I/O. `show_op` is an endless, deterministic show script (nodes join, load,
arm, GO, cues play and end, volumes move, stop) used wherever a test needs many realistic
operations whose state is not trivial.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, get_args

from eventlog import (
    CONTROLLER,
    ActionType,
    Event,
    Operation,
    OperationType,
    OpId,
    State,
    apply,
    validate_operation,
)
from replicas.messages import Message, Request, encode, parse_reply, parse_request
from replicas.protocol import NNG_MAX_BYTES

LOG_ID = "11111111-2222-4333-8444-555555555555"
TS0 = 1_700_000_000.0

Wire = dict[str, Any]


def wire(type_: str, action: str, sender: str, target: str, data: Any = None) -> Wire:
    """An upstream ``NodeOperation`` JSON object."""
    return {"type": type_, "action": action, "sender": sender, "target": target, "data": data}


def make_event(
    seq: int,
    type_: str,
    action: str,
    sender: str,
    target: str,
    data: dict[str, Any] | None = None,
    *,
    ts: float | None = None,
    log_id: str = LOG_ID,
    op_id: OpId | None = None,
    validate: bool = True,
) -> Event:
    """An event at `seq`. The operation is validated unless ``validate=False``."""
    if validate:
        op = validate_operation(wire(type_, action, sender, target, data))
    else:
        op = Operation(OperationType(type_), ActionType(action), sender, target, data)
    return Event(
        seq,
        TS0 + seq if ts is None else ts,
        log_id,
        op,
        OpId("test", seq) if op_id is None else op_id,
    )


def events_from(ops: Iterable[Operation], *, log_id: str = LOG_ID, ts0: float = TS0) -> list[Event]:
    """Number `ops` as events 1..n, the way a controller would."""
    return [
        Event(seq, ts0 + seq / 8, log_id, op, OpId("gen", seq))
        for seq, op in enumerate(ops, start=1)
    ]


class FakeClock:
    """A wall clock that only moves when the test says so."""

    def __init__(self, start: float = TS0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Show:
    """Drives the reducer one event at a time, numbering events itself."""

    def __init__(self) -> None:
        self.state = State()
        self.events: list[Event] = []
        self.reasons: list[str | None] = []

    def do(
        self,
        type_: str,
        action: str,
        sender: str,
        target: str,
        data: dict[str, Any] | None = None,
        *,
        validate: bool = True,
    ) -> str | None:
        event = make_event(
            self.state.seq + 1, type_, action, sender, target, data, validate=validate
        )
        reason = apply(self.state, event)
        self.events.append(event)
        self.reasons.append(reason)
        return reason

    @property
    def last(self) -> Event:
        return self.events[-1]

    def command(
        self, target: str, data: dict[str, Any] | None = None, *, sender: str = CONTROLLER
    ) -> str | None:
        return self.do("command", "update", sender, target, data)

    def status(self, sender: str, target: str, data: dict[str, Any] | None = None) -> str | None:
        return self.do("status", "update", sender, target, data)

    def cue(
        self, action: str, node: str, cue: str, data: dict[str, Any] | None = None
    ) -> str | None:
        return self.do("cue", action, node, cue, data)

    # the usual steps of a show
    def join(self, *nodes: str) -> None:
        for node in nodes:
            assert self.status(CONTROLLER, "node_joined", {"node": node}) is None

    def leave(self, node: str) -> None:
        assert self.status(CONTROLLER, "node_left", {"node": node}) is None

    def load(self, project: str = "alpha", nodes: list[str] | None = None) -> str | None:
        data: dict[str, Any] = {"value": project, "address": "/engine/command/load"}
        if nodes is not None:
            data["nodes"] = nodes
        return self.command("load", data)

    def arm(self, *nodes: str, armed: str = "yes") -> None:
        for node in nodes:
            self.status(node, "armed_ready", {"armed": armed})

    def go(self) -> str | None:
        return self.command("go", {"value": None, "address": "/engine/command/go"})

    def stop(self) -> str | None:
        return self.command("stop", {"value": None, "address": "/engine/command/stop"})

    def start_cue(self, node: str, cue: str, offset: str = "0") -> str | None:
        return self.cue("add", node, cue, {"id": cue, "offset": offset})


SHOW_NODES = ("node-1", "node-2", "node-3")
SHOW_CUES = ("cue-a", "cue-b", "cue-c", "cue-d")


def show_op(n: int) -> Wire:
    """The `n`-th operation (from 1) of an endless scripted show; the same for every caller."""
    step, rnd = (n - 1) % 12, (n - 1) // 12
    node = SHOW_NODES[rnd % len(SHOW_NODES)]
    cue = SHOW_CUES[rnd % len(SHOW_CUES)]
    if step == 0:
        return wire("status", "update", CONTROLLER, "node_joined", {"node": node})
    if step == 1:
        data = {"value": f"project-{rnd % 2}", "address": "/engine/command/load", "nodes": [node]}
        return wire("command", "update", CONTROLLER, "load", data)
    if step == 2:
        return wire("status", "update", node, "armed_ready", {"armed": "yes"})
    if step == 3:
        return wire("command", "update", CONTROLLER, "go", {"value": None, "address": "/x/go"})
    if step == 4:
        return wire("cue", "add", node, cue, {"id": cue, "offset": str(rnd * 1000)})
    if step == 5:
        return wire("cue", "update", node, cue, {"id": cue, "percentage": 1 + rnd % 98})
    if step == 6:
        return wire("status", "update", node, "timecode", {"value": n * 40})
    if step == 7:
        address = f"/{node}/audio/mixer/0/{rnd % 4}/volume"
        volume = {"address": address, "value": (rnd % 11) / 10}
        return wire("command", "update", CONTROLLER, "player_control", volume)
    if step == 8:
        return wire("cue", "remove", node, cue, {"id": cue})
    if step == 9:
        return wire("status", "update", node, "pong", {})
    if step == 10:
        return wire("command", "update", CONTROLLER, "stop", {"value": None, "address": "/x/stop"})
    return wire("player", "add", node, f"audioplayer_{cue}", {"round": rnd})


# ---------------------------------------------------------------- wire messages

_M = TypeVar("_M", bound=Message)


def decoded(kind: type[_M], msg: dict[str, Any]) -> _M:
    """`msg` (plain JSON values) sent as bytes and decoded the way the controller decodes a
    request (`messages.parse_request`) or a node a reply; it must come out a `kind`. Raises
    `ProtocolError` as the real shells would."""
    raw = encode(msg)
    is_request = kind in get_args(Request)
    found = parse_request(raw) if is_request else parse_reply(raw, NNG_MAX_BYTES)
    assert isinstance(found, kind), found
    return found
