"""Hypothesis strategies for cuelog operations and submissions.

Every operation drawn here passes `validate_operation`. The strategies cover every type and
action, the targets the reducer interprets (cue add/update/remove with percentages; status
nextcue, armed_ready, cue_enabled, pong, timecode, node_joined, node_left; commands load, go,
stop, unload, cue_enabled, player_control with a mixer volume address) and generic targets with
arbitrary JSON data. Cue ids, node ids and op_id origins come from small pools so that
operations meet each other: a remove finds the cue an add started, a GO finds the arming.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from eventlog import CONTROLLER, Operation, OpId, Submission, validate_operation
from tests.helpers import Wire, wire

CUES = ("cue-1", "cue-2", "cue-3")
NODES = ("node-a", "node-b", "node-c")
ORIGINS = ("ui-1", "ui-2", "editor")
STATUS_TARGETS = frozenset(
    {"nextcue", "armed_ready", "cue_enabled", "pong", "timecode", "node_joined", "node_left"}
)
COMMAND_TARGETS = frozenset({"load", "go", "stop", "unload", "cue_enabled", "player_control"})

#: text that is valid UTF-8 (no lone surrogates); control characters allowed (data only)
texts = st.text(st.characters(codec="utf-8"), max_size=10)
#: sender/target names: non-empty, no control characters
_CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f"]
names = st.text(st.characters(codec="utf-8", exclude_characters=_CONTROLS), min_size=1, max_size=12)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
#: a generic data object; no "address" key, which commands give a meaning to
generic_data = st.dictionaries(texts.filter(lambda k: k != "address"), json_values, max_size=4)

cue_ids = st.sampled_from(CUES)
node_ids = st.sampled_from(NODES)
finite_numbers = st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)


def _address(target: str) -> str:
    return f"/engine/command/{target}"


@st.composite
def cue_ops(draw: st.DrawFn) -> Wire:
    action = draw(st.sampled_from(("add", "update", "remove")))
    node, cue = draw(node_ids), draw(cue_ids)
    data: dict[str, Any] = {"id": cue} if draw(st.booleans()) else {}
    if action == "add":
        data["offset"] = draw(st.integers(0, 10**7).map(str) | finite_numbers)
    elif action == "update":
        data["percentage"] = draw(st.integers(-1, 100))
    elif draw(st.booleans()):
        return wire("cue", action, node, cue, None)
    return wire("cue", action, node, cue, data)


@st.composite
def player_ops(draw: st.DrawFn) -> Wire:
    action = draw(st.sampled_from(("add", "update", "remove")))
    node = draw(node_ids)
    target = draw(
        st.sampled_from(("audiomixer_0", f"dmxplayer_{node}"))
        | cue_ids.map(lambda cue: f"audioplayer_{cue}")
    )
    return wire("player", action, node, target, draw(st.none() | generic_data))


@st.composite
def status_ops(draw: st.DrawFn) -> Wire:
    kind = draw(
        st.sampled_from(
            ("nextcue", "armed_ready", "cue_enabled", "pong", "timecode", "liveness", "generic")
        )
    )
    node = draw(node_ids)
    if kind == "nextcue":
        return wire("status", "update", node, "nextcue", {"nextcue": draw(cue_ids | st.just(""))})
    if kind == "armed_ready":
        data = draw(st.none() | st.just({}) | st.sampled_from(("yes", "no")).map(_armed))
        return wire("status", "update", node, "armed_ready", data)
    if kind == "cue_enabled":
        data = {"cue_id": draw(cue_ids), "enabled": draw(st.booleans())}
        return wire("status", "update", node, "cue_enabled", data)
    if kind == "pong":
        return wire("status", "update", node, "pong", draw(st.none() | st.just({})))
    if kind == "timecode":
        sender = draw(st.just(node) | st.just(CONTROLLER))
        value = draw(st.integers(0, 10**9))
        return wire("status", "update", sender, "timecode", {"value": value})
    if kind == "liveness":
        target = draw(st.sampled_from(("node_joined", "node_left")))
        # mostly the controller; now and then a node that must be refused
        sender = draw(st.sampled_from((CONTROLLER, CONTROLLER, CONTROLLER, node)))
        return wire("status", "update", sender, target, {"node": draw(node_ids)})
    target = draw(
        st.sampled_from(("action_cue_outcome", "player_state"))
        | names.filter(lambda t: t not in STATUS_TARGETS)
    )
    sender = draw(node_ids | st.just(CONTROLLER) | names)
    return wire("status", "update", sender, target, draw(st.none() | generic_data))


def _armed(value: str) -> dict[str, Any]:
    return {"armed": value}


@st.composite
def command_ops(draw: st.DrawFn) -> Wire:
    kind = draw(
        st.sampled_from(
            ("load", "go", "go", "stop", "unload", "cue_enabled", "player_control", "generic")
        )
    )
    sender = draw(st.just(CONTROLLER) | st.sampled_from(("ui-1", "editor")))
    if kind == "load":
        data: dict[str, Any] = {
            "value": draw(st.sampled_from(("alpha", "beta"))),
            "address": _address("load"),
        }
        if draw(st.booleans()):
            data["nodes"] = draw(st.lists(node_ids, max_size=3, unique=True))
        return wire("command", "update", sender, "load", data)
    if kind in ("go", "stop", "unload"):
        data_or_none = draw(st.none() | st.just({"value": None, "address": _address(kind)}))
        return wire("command", "update", sender, kind, data_or_none)
    if kind == "cue_enabled":
        flag = f"{draw(cue_ids)} {draw(st.sampled_from(('0', '1')))}"
        data = {"value": flag, "address": _address("cue_enabled")}
        return wire("command", "update", sender, "cue_enabled", data)
    if kind == "player_control":
        node, out = draw(node_ids), draw(st.integers(0, 3))
        channel = draw(st.integers(0, 7).map(str) | st.just("master"))
        if draw(st.integers(0, 4)):
            address = f"/{node}/audio/mixer/{out}/{channel}/volume"
            value: Any = draw(finite_numbers)
        else:
            address = f"/{node}/video/mixer/{out}/position"
            value = draw(st.lists(finite_numbers, min_size=2, max_size=2))
        return wire(
            "command", "update", sender, "player_control", {"address": address, "value": value}
        )
    target = draw(
        st.sampled_from(("setnextcue", "ping", "pause", "deploy"))
        | names.filter(lambda t: t not in COMMAND_TARGETS)
    )
    data_g: dict[str, Any] | None = draw(
        st.none()
        | generic_data
        | json_values.map(lambda v: {"value": v, "address": _address(target)})
    )
    return wire("command", "update", sender, target, data_g)


#: upstream wire dicts that validate
wire_operations: st.SearchStrategy[Wire] = st.one_of(
    cue_ops(), player_ops(), status_ops(), command_ops()
)
#: validated operations
operations: st.SearchStrategy[Operation] = wire_operations.map(validate_operation)

op_ids = st.builds(OpId, st.sampled_from(ORIGINS), st.integers(1, 6))
#: submissions with op_ids from a small pool, so retries and duplicates are common
submissions: st.SearchStrategy[Submission] = st.builds(Submission, operations, op_ids)


#: ways to break a valid wire operation, each one certain to be refused
BREAKERS: tuple[tuple[str, Any], ...] = (
    ("drop:type", None),
    ("drop:data", None),
    ("set:type", "video"),
    ("set:type", 3),
    ("set:action", "delete"),
    ("set:sender", ""),
    ("set:sender", 7),
    ("set:target", "go\n"),
    ("set:target", "x" * 600),
    ("set:data", [1, 2]),
    ("set:data", {"x": math.nan}),
    ("set:data", {"x": [math.inf]}),
    ("set:data", {"x": 2**64}),
    ("set:data", {"x": {1, 2}}),
    ("set:data", {"x": "\ud800"}),
    ("set:extra", 1),
    ("set:op_id", ["", 1]),
    ("set:op_id", ["ui-1", 0]),
    ("set:op_id", "ui-1:1"),
)


@st.composite
def invalid_wire_operations(draw: st.DrawFn) -> Wire:
    """A wire operation broken in exactly one certain way."""
    raw = dict(draw(wire_operations))
    how, value = draw(st.sampled_from(BREAKERS))
    verb, key = how.split(":")
    if verb == "drop":
        del raw[key]
    else:
        raw[key] = value
    return raw


@st.composite
def _arm_and_go(draw: st.DrawFn) -> list[Wire]:
    nodes = draw(st.lists(node_ids, min_size=1, max_size=3, unique=True))
    ops = [wire("status", "update", CONTROLLER, "node_joined", {"node": n}) for n in nodes]
    load: dict[str, Any] = {"value": draw(st.sampled_from(("alpha", "beta")))}
    if draw(st.booleans()):
        load["nodes"] = nodes
    ops.append(wire("command", "update", CONTROLLER, "load", load))
    ops += [wire("status", "update", n, "armed_ready", {"armed": "yes"}) for n in nodes]
    ops.append(wire("command", "update", CONTROLLER, "go", {"value": None}))
    return ops


@st.composite
def _play_cue(draw: st.DrawFn) -> list[Wire]:
    node, cue = draw(node_ids), draw(cue_ids)
    ops = [wire("cue", "add", node, cue, {"id": cue, "offset": str(draw(st.integers(0, 9999)))})]
    for pct in draw(st.lists(st.integers(1, 99), max_size=3)):
        ops.append(wire("cue", "update", node, cue, {"id": cue, "percentage": pct}))
    end = draw(st.sampled_from(("remove", "100", "-1", "none")))
    if end == "remove":
        ops.append(wire("cue", "remove", node, cue, {"id": cue}))
    elif end != "none":
        ops.append(wire("cue", "update", node, cue, {"id": cue, "percentage": int(end)}))
    return ops


_stop = st.just([wire("command", "update", CONTROLLER, "stop", {"value": None})])


@st.composite
def show_wire_operations(draw: st.DrawFn, max_steps: int = 12) -> list[Wire]:
    """Wire operations that read like a show: arming and GO, cues playing, stops, with random
    operations of every kind in between."""
    steps = draw(
        st.lists(
            _arm_and_go() | _play_cue() | _stop | st.lists(wire_operations, max_size=3),
            max_size=max_steps,
        )
    )
    return [op for step in steps for op in step]


#: validated operations in show order
shows: st.SearchStrategy[list[Operation]] = show_wire_operations().map(
    lambda ops: [validate_operation(op) for op in ops]
)
