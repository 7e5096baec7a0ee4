"""Validation of operations and op_ids: every way input can be wrong names its field and rule;
every upstream wire form validates and comes back out unchanged."""

from __future__ import annotations

import math
import types
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog import (
    MAX_DATA_BYTES,
    ActionType,
    Operation,
    OperationType,
    OpId,
    Submission,
    ValidationError,
    dumps,
    validate_op_id,
    validate_operation,
    validate_submission,
)
from eventlog.operation import MAX_DEPTH, MAX_SENDER_LEN, MAX_TARGET_LEN
from tests.helpers import Wire, wire
from tests.strategies import wire_operations

CUE = "6a0b2a3c-3f42-4bb5-9d5e-0f6e1c7b8a90"
NODE = "0367f391-ebf4-48b2-9f26-000000000001"


def pong() -> Wire:
    return wire("status", "update", NODE, "pong", {})


def refused(raw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate_operation(raw)
    return info.value


def refused_submission(raw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        validate_submission(raw)
    return info.value


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------- shape of the whole value


@pytest.mark.parametrize(
    "raw", [None, [], "pong", 3, ["status", "update"]], ids=["null", "list", "str", "int", "pair"]
)
def test_not_an_object(raw: Any) -> None:
    err = refused(raw)
    assert (err.field, err.rule) == ("$", "not-an-object")


@pytest.mark.parametrize("name", ["type", "action", "sender", "target", "data"])
def test_missing_field(name: str) -> None:
    raw = pong()
    del raw[name]
    err = refused(raw)
    assert (err.field, err.rule) == (name, "missing")


def test_unknown_field() -> None:
    err = refused({**pong(), "priority": 1})
    assert (err.field, err.rule) == ("priority", "unknown-field")


@pytest.mark.parametrize("value", ["video", "Cue", "", 1, None, ["cue"]])
def test_unknown_type(value: Any) -> None:
    err = refused({**pong(), "type": value})
    assert (err.field, err.rule) == ("type", "unknown-type")


@pytest.mark.parametrize("value", ["delete", "ADD", "", 0, None])
def test_unknown_action(value: Any) -> None:
    err = refused({**pong(), "action": value})
    assert (err.field, err.rule) == ("action", "unknown-action")


@pytest.mark.parametrize(
    ("type_", "action"),
    [("command", "add"), ("command", "remove"), ("status", "add"), ("status", "remove")],
)
def test_action_not_allowed_for_type(type_: str, action: str) -> None:
    err = refused(wire(type_, action, NODE, "go", {}))
    assert (err.field, err.rule) == ("action", "action-not-allowed")


# ---------------------------------------------------------------- sender and target


@pytest.mark.parametrize("name", ["sender", "target"])
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (5, "not-a-string"),
        (None, "not-a-string"),
        (["a"], "not-a-string"),
        ("", "empty"),
        ("a\nb", "control-character"),
        ("\x00", "control-character"),
        ("tab\there", "control-character"),
        ("del\x7f", "control-character"),
        ("\ud800", "bad-utf8"),
        ("ok\udfffok", "bad-utf8"),
    ],
    ids=lambda v: repr(v)[:12],
)
def test_bad_name(name: str, value: Any, rule: str) -> None:
    err = refused({**pong(), name: value})
    assert (err.field, err.rule) == (name, rule)


@pytest.mark.parametrize(
    ("name", "limit"), [("sender", MAX_SENDER_LEN), ("target", MAX_TARGET_LEN)]
)
def test_name_too_long(name: str, limit: int) -> None:
    validate_operation({**pong(), name: "n" * limit})
    err = refused({**pong(), name: "n" * (limit + 1)})
    assert (err.field, err.rule) == (name, "too-long")


# ---------------------------------------------------------------- data as JSON


@pytest.mark.parametrize(
    "data",
    [[1], "text", 3, True, {1, 2}, b"{}", object()],
    ids=["list", "str", "int", "bool", "set", "bytes", "object"],
)
def test_data_not_an_object(data: Any) -> None:
    err = refused({**pong(), "data": data})
    assert (err.field, err.rule) == ("data", "not-an-object")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"tags": {"a", "b"}}, "data.tags"),
        ({"blob": b"\x00\x01"}, "data.blob"),
        ({"thing": object()}, "data.thing"),
        ({"list": [1, 2, frozenset()]}, "data.list[2]"),
        ({"deep": {"fn": print}}, "data.deep.fn"),
        ({"c": 1j}, "data.c"),
    ],
    ids=["set", "bytes", "object", "in-list", "function", "complex"],
)
def test_data_not_json(data: dict[str, Any], field: str) -> None:
    err = refused({**pong(), "data": data})
    assert (err.field, err.rule) == (field, "not-json")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"x": math.nan}, "data.x"),
        ({"x": math.inf}, "data.x"),
        ({"x": -math.inf}, "data.x"),
        ({"a": [1, {"b": math.nan}]}, "data.a[1].b"),
        ({"a": {"b": {"c": [0.5, -math.inf]}}}, "data.a.b.c[1]"),
    ],
    ids=["nan", "inf", "-inf", "nested-nan", "nested-inf"],
)
def test_data_not_finite(data: dict[str, Any], field: str) -> None:
    err = refused({**pong(), "data": data})
    assert (err.field, err.rule) == (field, "not-finite")


def test_data_too_large() -> None:
    err = refused({**pong(), "data": {"blob": "x" * (MAX_DATA_BYTES + 1)}})
    assert (err.field, err.rule) == ("data", "too-large")
    many = {f"k{i}": i for i in range(MAX_DATA_BYTES // 8)}
    err = refused({**pong(), "data": many})
    assert (err.field, err.rule) == ("data", "too-large")


def test_data_just_under_the_limit_is_accepted() -> None:
    data = {"blob": "x" * (MAX_DATA_BYTES - 100)}
    op = validate_operation({**pong(), "data": data})
    assert len(dumps(op.data)) <= MAX_DATA_BYTES


@pytest.mark.parametrize(
    "blob", ["é" * 40_000, "\U0001f3ad" * 20_000, "\x01" * 20_000], ids=["2-byte", "4-byte", "ctrl"]
)
def test_data_limit_counts_encoded_bytes(blob: str) -> None:
    # fewer characters than the limit, but more bytes once encoded (UTF-8, \u escapes)
    assert len(blob) < MAX_DATA_BYTES
    data = {"blob": blob}
    assert len(dumps(data)) > MAX_DATA_BYTES
    err = refused({**pong(), "data": data})
    assert (err.field, err.rule) == ("data", "too-large")


@pytest.mark.parametrize("fill", ["x", "é", "\x01"], ids=["ascii", "2-byte", "ctrl"])
def test_data_limit_is_exact_in_bytes(fill: str) -> None:
    width = len(dumps(fill)) - 2  # bytes one fill character takes in JSON
    overhead = len(dumps({"blob": ""}))
    count, pad = divmod(MAX_DATA_BYTES - overhead, width)
    data = {"blob": "y" * pad + fill * count}
    assert len(dumps(data)) == MAX_DATA_BYTES
    assert validate_operation({**pong(), "data": data}).data == data
    err = refused({**pong(), "data": {"blob": "y" + data["blob"]}})
    assert (err.field, err.rule) == ("data", "too-large")


def test_data_too_deep() -> None:
    validate_operation({**pong(), "data": {"a": nested(MAX_DEPTH // 2)}})
    err = refused({**pong(), "data": {"a": nested(MAX_DEPTH + 1)}})
    assert err.rule == "too-deep"
    assert err.field.startswith("data.a[0]")


def test_very_deep_data_is_refused_without_recursion_error() -> None:
    value: Any = {}
    for _ in range(50_000):
        value = {"d": value}
    err = refused({**pong(), "data": value})
    assert err.rule == "too-deep"


@pytest.mark.parametrize(
    "data", [{1: "a"}, {None: 1}, {"ok": {2.5: 1}}, {"ok": [{(1, 2): 0}]}], ids=str
)
def test_non_string_key(data: dict[Any, Any]) -> None:
    err = refused({**pong(), "data": data})
    assert err.rule == "non-string-key"
    assert err.field.startswith("data")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30, [0, -(2**64)]], ids=str)
def test_int_out_of_range(value: Any) -> None:
    err = refused({**pong(), "data": {"n": value}})
    assert err.rule == "int-out-of-range"
    assert err.field.startswith("data.n")


def test_int_limits_are_accepted() -> None:
    data = {"lo": -(2**63), "hi": 2**63 - 1}
    assert validate_operation({**pong(), "data": data}).data == data


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"s": "\ud800"}, "data.s"),
        ({"s": ["fine", "bad\udc00"]}, "data.s[1]"),
        ({"o": {"t": "\udfff"}}, "data.o.t"),
    ],
    ids=["value", "in-list", "nested"],
)
def test_lone_surrogate_in_string(data: dict[str, Any], field: str) -> None:
    err = refused({**pong(), "data": data})
    assert (err.field, err.rule) == (field, "bad-utf8")


@pytest.mark.parametrize("data", [{"\ud83d": 1}, {"ok": {"k\udc00": "v"}}], ids=["top", "nested"])
def test_lone_surrogate_in_key(data: dict[str, Any]) -> None:
    err = refused({**pong(), "data": data})
    assert err.rule == "bad-utf8"
    assert err.field.startswith("data.")


def test_data_mapping_is_copied_into_a_dict() -> None:
    source = {"cue_id": CUE, "enabled": True}
    op = validate_operation(
        wire("status", "update", NODE, "cue_enabled", types.MappingProxyType(source))
    )
    assert type(op.data) is dict
    assert op.data == source
    source["enabled"] = False
    assert op.data["enabled"] is True


# ---------------------------------------------------------------- cue semantics


def test_cue_add_needs_data() -> None:
    err = refused(wire("cue", "add", NODE, CUE, None))
    assert (err.field, err.rule) == ("data", "missing")


def test_cue_update_needs_data() -> None:
    err = refused(wire("cue", "update", NODE, CUE, None))
    assert (err.field, err.rule) == ("data", "missing")


def test_cue_remove_without_data_is_fine() -> None:
    assert validate_operation(wire("cue", "remove", NODE, CUE, None)).data is None


def test_cue_add_missing_offset() -> None:
    err = refused(wire("cue", "add", NODE, CUE, {"id": CUE}))
    assert (err.field, err.rule) == ("data.offset", "missing")


@pytest.mark.parametrize("offset", [None, [1], {"ms": 1}, True], ids=str)
def test_cue_add_bad_offset_type(offset: Any) -> None:
    err = refused(wire("cue", "add", NODE, CUE, {"id": CUE, "offset": offset}))
    assert (err.field, err.rule) == ("data.offset", "not-a-string-or-number")


@pytest.mark.parametrize("offset", ["1500", 1500, 1.5])
def test_cue_add_offset_kinds(offset: Any) -> None:
    op = validate_operation(wire("cue", "add", NODE, CUE, {"id": CUE, "offset": offset}))
    assert op.data == {"id": CUE, "offset": offset}


@pytest.mark.parametrize("pct", ["50", 50.0, True, None, [50]], ids=repr)
def test_cue_update_percentage_type(pct: Any) -> None:
    err = refused(wire("cue", "update", NODE, CUE, {"id": CUE, "percentage": pct}))
    assert (err.field, err.rule) == ("data.percentage", "not-an-integer")


@pytest.mark.parametrize("pct", [-2, 101, 1000, -(2**40)])
def test_cue_update_percentage_range(pct: int) -> None:
    err = refused(wire("cue", "update", NODE, CUE, {"id": CUE, "percentage": pct}))
    assert (err.field, err.rule) == ("data.percentage", "out-of-range")


@pytest.mark.parametrize("pct", [-1, 0, 1, 50, 99, 100])
def test_cue_update_percentage_limits(pct: int) -> None:
    validate_operation(wire("cue", "update", NODE, CUE, {"id": CUE, "percentage": pct}))


def test_cue_update_missing_percentage() -> None:
    err = refused(wire("cue", "update", NODE, CUE, {"id": CUE}))
    assert (err.field, err.rule) == ("data.percentage", "missing")


@pytest.mark.parametrize(
    ("action", "extra"), [("add", {"offset": "0"}), ("update", {"percentage": 5}), ("remove", {})]
)
def test_cue_data_id_must_match_target(action: str, extra: dict[str, Any]) -> None:
    err = refused(wire("cue", action, NODE, CUE, {"id": "another-cue", **extra}))
    assert (err.field, err.rule) == ("data.id", "target-mismatch")


# ---------------------------------------------------------------- status semantics


@pytest.mark.parametrize(
    ("target", "data", "field", "rule"),
    [
        ("cue_enabled", {"enabled": True}, "data.cue_id", "missing"),
        ("cue_enabled", {"cue_id": 7, "enabled": True}, "data.cue_id", "not-a-string"),
        ("cue_enabled", {"cue_id": CUE}, "data.enabled", "missing"),
        ("cue_enabled", {"cue_id": CUE, "enabled": 1}, "data.enabled", "not-a-boolean"),
        ("cue_enabled", {"cue_id": CUE, "enabled": "yes"}, "data.enabled", "not-a-boolean"),
        ("nextcue", {}, "data.nextcue", "missing"),
        ("nextcue", {"nextcue": None}, "data.nextcue", "not-a-string"),
        ("nextcue", {"nextcue": 3}, "data.nextcue", "not-a-string"),
        ("timecode", {}, "data.value", "missing"),
        ("timecode", {"value": "1000"}, "data.value", "not-an-integer"),
        ("timecode", {"value": 1.5}, "data.value", "not-an-integer"),
        ("timecode", {"value": False}, "data.value", "not-an-integer"),
    ],
)
def test_status_field_types(target: str, data: dict[str, Any], field: str, rule: str) -> None:
    err = refused(wire("status", "update", NODE, target, data))
    assert (err.field, err.rule) == (field, rule)


@pytest.mark.parametrize("target", ["nextcue", "cue_enabled", "timecode", "armed_ready"])
def test_status_without_data_is_fine(target: str) -> None:
    assert validate_operation(wire("status", "update", NODE, target, None)).data is None


# ---------------------------------------------------------------- command semantics


@pytest.mark.parametrize("address", ["engine/command/go", "", 5, ["/engine"], True], ids=repr)
def test_command_bad_address(address: Any) -> None:
    err = refused(wire("command", "update", "controller", "go", {"address": address}))
    assert (err.field, err.rule) == ("data.address", "bad-address")


@pytest.mark.parametrize(
    "value", ["", CUE, f"{CUE} 2", f"{CUE} yes", f"{CUE} 1 extra", 1, True, [CUE, "1"]], ids=repr
)
def test_command_bad_cue_enabled_value(value: Any) -> None:
    data = {"value": value, "address": "/engine/command/cue_enabled"}
    err = refused(wire("command", "update", "controller", "cue_enabled", data))
    assert (err.field, err.rule) == ("data.value", "bad-cue-enabled")


@pytest.mark.parametrize("value", ["0.5", None, True, [0.5], {"v": 1}], ids=repr)
def test_command_volume_must_be_a_number(value: Any) -> None:
    data = {"address": f"/{NODE}/audio/mixer/0/1/volume", "value": value}
    err = refused(wire("command", "update", "controller", "player_control", data))
    assert (err.field, err.rule) == ("data.value", "not-a-number")


def test_command_non_volume_player_control_takes_any_value() -> None:
    data = {"address": f"/{NODE}/video/mixer/0/position", "value": [0.1, 0.2]}
    validate_operation(wire("command", "update", "controller", "player_control", data))


# ---------------------------------------------------------------- op_id


@pytest.mark.parametrize(
    ("op_id", "field", "rule"),
    [
        ("ui-1:1", "op_id", "bad-op-id"),
        (["ui-1"], "op_id", "bad-op-id"),
        (["ui-1", 1, 2], "op_id", "bad-op-id"),
        ({"origin": "ui-1", "origin_seq": 1}, "op_id", "bad-op-id"),
        (7, "op_id", "bad-op-id"),
        (["", 1], "op_id[0]", "bad-origin"),
        ([1, 1], "op_id[0]", "bad-origin"),
        ([None, 1], "op_id[0]", "bad-origin"),
        (["o" * 129, 1], "op_id[0]", "bad-origin"),
        (["\ud800", 1], "op_id[0]", "bad-utf8"),
        (["ui-1", 0], "op_id[1]", "bad-origin-seq"),
        (["ui-1", -5], "op_id[1]", "bad-origin-seq"),
        (["ui-1", True], "op_id[1]", "bad-origin-seq"),
        (["ui-1", 1.0], "op_id[1]", "bad-origin-seq"),
        (["ui-1", "1"], "op_id[1]", "bad-origin-seq"),
        (["ui-1", 2**63], "op_id[1]", "bad-origin-seq"),
    ],
    ids=repr,
)
def test_bad_op_id(op_id: Any, field: str, rule: str) -> None:
    err = refused_submission({**pong(), "op_id": op_id})
    assert (err.field, err.rule) == (field, rule)
    with pytest.raises(ValidationError) as info:
        validate_op_id(op_id)
    assert (info.value.field, info.value.rule) == (field, rule)


def test_op_id_limits() -> None:
    assert validate_op_id(["o" * 128, 2**63 - 1]) == OpId("o" * 128, 2**63 - 1)
    assert validate_op_id(("ui-1", 1)) == OpId("ui-1", 1)
    assert validate_op_id(OpId("ui-1", 9)) == OpId("ui-1", 9)


def test_operation_ignores_op_id_but_submission_reads_it() -> None:
    raw = {**pong(), "op_id": ["ui-1", 42]}
    assert validate_operation(raw).to_wire() == pong()
    sub = validate_submission(raw)
    assert sub.op_id == OpId("ui-1", 42)
    assert sub.op.to_wire() == pong()


def test_submission_without_op_id() -> None:
    assert validate_submission(pong()).op_id is None
    assert validate_submission({**pong(), "op_id": None}).op_id is None


def test_submission_object_is_revalidated() -> None:
    bad = Operation(OperationType.CUE, ActionType.ADD, NODE, CUE, None)
    with pytest.raises(ValidationError) as info:
        validate_submission(Submission(bad, OpId("ui-1", 1)))
    assert (info.value.field, info.value.rule) == ("data", "missing")
    good = Submission(validate_operation(pong()), OpId("ui-1", 1))
    assert validate_submission(good) == good


def _hand_built(
    type_: Any = OperationType.STATUS,
    action: Any = ActionType.UPDATE,
    sender: Any = NODE,
    target: Any = "pong",
    data: Any = None,
) -> Operation:
    return Operation(type_, action, sender, target, data)


@pytest.mark.parametrize(
    ("op", "field", "rule"),
    [
        (_hand_built(OperationType.COMMAND, ActionType.ADD), "action", "action-not-allowed"),
        (_hand_built(sender=""), "sender", "empty"),
        (_hand_built(sender=None), "sender", "not-a-string"),
        (_hand_built(target="a\x00b"), "target", "control-character"),
        (_hand_built(data=[1]), "data", "not-an-object"),
        (_hand_built(data={"x": math.nan}), "data.x", "not-finite"),
        (_hand_built(target="timecode", data={"value": "1"}), "data.value", "not-an-integer"),
        (_hand_built(OperationType.CUE, ActionType.ADD, target=CUE), "data", "missing"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_hand_built_operation_is_checked_by_the_same_rules(
    op: Operation, field: str, rule: str
) -> None:
    err = refused(op)
    assert (err.field, err.rule) == (field, rule)


def test_hand_built_operation_with_plain_strings() -> None:
    op = validate_operation(_hand_built("status", "update", data={}))
    assert (op.type, op.action) == (OperationType.STATUS, ActionType.UPDATE)
    assert op.to_wire() == pong()
    for bad, field, rule in (
        (_hand_built("video"), "type", "unknown-type"),
        (_hand_built(action="upsert"), "action", "unknown-action"),
    ):
        err = refused(bad)
        assert (err.field, err.rule) == (field, rule)


def test_validation_error_describes_itself() -> None:
    err = refused({**pong(), "type": "video"})
    assert err.index is None
    assert err.to_dict() == {"field": "type", "rule": "unknown-type", "detail": err.detail}
    assert "type" in str(err)
    assert "unknown-type" in str(err)
    assert "video" in err.detail


# ---------------------------------------------------------------- upstream wire compatibility

UPSTREAM_WIRE: list[Wire] = [
    wire("command", "update", "controller", "go", {"value": None, "address": "/engine/command/go"}),
    wire(
        "command",
        "update",
        "controller",
        "stop",
        {"value": None, "address": "/engine/command/stop"},
    ),
    wire(
        "command",
        "update",
        "controller",
        "load",
        {"value": "my_show", "address": "/engine/command/load"},
    ),
    wire(
        "command",
        "update",
        "controller",
        "setnextcue",
        {"value": CUE, "address": "/engine/command/setnextcue"},
    ),
    wire(
        "command",
        "update",
        "controller",
        "cue_enabled",
        {"value": f"{CUE} 0", "address": "/engine/command/cue_enabled"},
    ),
    wire(
        "command",
        "update",
        "controller",
        "player_control",
        {"address": f"/{NODE}/audio/mixer/0/1/volume", "value": 0.8},
    ),
    wire(
        "command",
        "update",
        "controller",
        "player_control",
        {"address": f"/{NODE}/audio/mixer/1/master/volume", "value": 1},
    ),
    wire(
        "command",
        "update",
        "controller",
        "ping",
        {"value": None, "address": "/engine/cluster/ping"},
    ),
    wire("status", "update", NODE, "pong", {}),
    wire("status", "update", NODE, "armed_ready", {"armed": "yes"}),
    wire("status", "update", NODE, "nextcue", {"nextcue": CUE}),
    wire("status", "update", NODE, "nextcue", {"nextcue": ""}),
    wire("status", "update", NODE, "cue_enabled", {"cue_id": CUE, "enabled": False}),
    wire(
        "status", "update", NODE, "action_cue_outcome", {"cue": CUE, "outcome": "ok", "errors": []}
    ),
    wire("cue", "add", NODE, CUE, {"id": CUE, "offset": "125000"}),
    wire("cue", "remove", NODE, CUE, {"id": CUE}),
    wire("cue", "update", NODE, CUE, {"id": CUE, "percentage": 1}),
    wire("cue", "update", NODE, CUE, {"id": CUE, "percentage": 99}),
    wire("player", "add", NODE, f"audioplayer_{CUE}", None),
    wire("player", "remove", NODE, f"audioplayer_{CUE}", None),
    wire("player", "add", NODE, "audiomixer_0", None),
    wire("player", "add", NODE, f"dmxplayer_{NODE}", None),
]


@pytest.mark.parametrize("raw", UPSTREAM_WIRE, ids=lambda r: f"{r['type']}-{r['target'][:12]}")
def test_upstream_wire_round_trips(raw: Wire) -> None:
    op = validate_operation(raw)
    assert op.type is OperationType(raw["type"])
    assert op.action is ActionType(raw["action"])
    assert op.to_wire() == raw
    assert dumps(op.to_wire()) == dumps(raw)
    assert validate_operation(op) == op


@pytest.mark.parametrize("raw", UPSTREAM_WIRE[:4], ids=lambda r: str(r["target"]))
def test_upstream_wire_with_op_id_round_trips(raw: Wire) -> None:
    sub = validate_submission({**raw, "op_id": ["ui-1", 3]})
    assert sub.op.to_wire() == raw
    assert sub.op_id is not None
    assert sub.op_id.to_wire() == ["ui-1", 3]


def test_operation_str_names_it() -> None:
    op = validate_operation(UPSTREAM_WIRE[14])
    assert str(op) == f"cue/add {CUE} from {NODE}"


@given(wire_operations)
def test_generated_operations_validate_and_round_trip(raw: Wire) -> None:
    op = validate_operation(raw)
    assert op.to_wire() == raw
    assert validate_operation(op.to_wire()) == op


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True))
def test_every_accepted_node_id_can_send_operations(node: str) -> None:
    """One rule for ids: whatever the CLI and the protocol accept makes a valid op-id origin
    (the id plus a per-process suffix) and a valid sender."""
    from eventlog import check_node_id

    if node == "controller":
        return
    assert check_node_id(node) == node
    origin = f"{node}/{'f' * 12}"
    assert validate_op_id([origin, 1]).origin == origin
    validate_operation(wire("status", "update", node, "pong", {}))


@pytest.mark.parametrize("node", ["", "n" * 65, "~x", "a b", "a/b", "é", "controller", "-x"])
def test_node_ids_outside_the_rule_are_refused_with_the_rule(node: str) -> None:
    from eventlog import check_node_id

    with pytest.raises(ValidationError) as info:
        check_node_id(node)
    assert info.value.field == "node"
