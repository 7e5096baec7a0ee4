"""Events and their canonical encoding: round trips, byte stability, refusal of bad bytes."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog import (
    DecodeError,
    Event,
    Operation,
    OpId,
    decode_event,
    dumps,
    encode_event,
    event_from_dict,
    loads,
)
from tests.helpers import LOG_ID, make_event
from tests.strategies import json_values, operations


def sample_event() -> Event:
    return make_event(
        7,
        "cue",
        "add",
        "node-1",
        "cue-a",
        {"id": "cue-a", "offset": "1500", "extra": {"z": [1, 2.5, None], "a": True}},
        ts=1_700_000_123.25,
        op_id=OpId("node-1", 12),
    )


def shuffled(value: Any, rnd: random.Random) -> Any:
    """The same JSON value with every object's keys in a random insertion order."""
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {key: shuffled(value[key], rnd) for key in keys}
    if isinstance(value, list):
        return [shuffled(item, rnd) for item in value]
    return value


def test_round_trip() -> None:
    event = sample_event()
    encoded = encode_event(event)
    assert isinstance(encoded, bytes)
    assert decode_event(encoded) == event
    assert decode_event(encoded.decode()) == event
    assert decode_event(bytearray(encoded)) == event
    assert decode_event(memoryview(encoded)) == event


def test_flat_form_is_upstream_operation_plus_event_fields() -> None:
    event = sample_event()
    assert event.to_dict() == {
        "seq": 7,
        "ts": 1_700_000_123.25,
        "log_id": LOG_ID,
        "type": "cue",
        "action": "add",
        "sender": "node-1",
        "target": "cue-a",
        "data": {"id": "cue-a", "offset": "1500", "extra": {"z": [1, 2.5, None], "a": True}},
        "op_id": ["node-1", 12],
    }


def test_canonical_encoding_is_exact() -> None:
    event = make_event(1, "status", "update", "n", "pong", {}, ts=2.5, op_id=OpId("o", 1))
    assert encode_event(event) == (
        b'{"action":"update","data":{},"log_id":"' + LOG_ID.encode() + b'",'
        b'"op_id":["o",1],"sender":"n","seq":1,"target":"pong","ts":2.5,"type":"status"}'
    )
    assert dumps({"b": {"z": 1, "a": [{"y": 0, "x": 1}]}, "a": None}) == (
        b'{"a":null,"b":{"a":[{"x":1,"y":0}],"z":1}}'
    )


def test_encoding_does_not_depend_on_insertion_order() -> None:
    data = {"zeta": 1, "alpha": {"y": [3, {"k2": 0, "k1": 1}], "b": "é"}, "mid": None}
    event = make_event(3, "status", "update", "n", "generic", data)
    for seed in range(5):
        reordered = shuffled(data, random.Random(seed))
        other = make_event(3, "status", "update", "n", "generic", reordered)
        assert encode_event(other) == encode_event(event)


def test_non_ascii_and_control_characters_survive() -> None:
    data = {"név": "ünïcødé \U0001f3ad", "ctl": "\x00\x1f\x7f", "quote": '"\\'}
    event = make_event(1, "status", "update", "nöde", "tärget", data)
    assert decode_event(encode_event(event)) == event


def test_log_id_can_come_from_the_frame() -> None:
    raw = sample_event().to_dict()
    del raw["log_id"]
    with pytest.raises(DecodeError):
        event_from_dict(raw)
    assert event_from_dict(raw, log_id=LOG_ID) == sample_event()
    # a log_id in the event itself wins over the frame's
    assert event_from_dict({**raw, "log_id": "own"}, log_id=LOG_ID).log_id == "own"


def test_integer_ts_is_read_as_a_float() -> None:
    event = event_from_dict({**sample_event().to_dict(), "ts": 5})
    assert event.ts == 5.0
    assert isinstance(event.ts, float)


@given(
    operations,
    st.integers(1, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    st.builds(OpId, st.text(st.characters(codec="utf-8"), min_size=1), st.integers(1, 2**63 - 1)),
)
def test_round_trip_of_any_valid_event(
    op: Operation, seq: int, ts: float, log_id: str, op_id: OpId
) -> None:
    event = Event(seq, ts, log_id, op, op_id)
    encoded = encode_event(event)
    decoded = decode_event(encoded)
    assert decoded == event
    assert encode_event(decoded) == encoded


@given(operations, st.randoms(use_true_random=False))
def test_canonical_bytes_are_stable_under_reordering(op: Operation, rnd: random.Random) -> None:
    event = Event(1, 1.5, LOG_ID, op, OpId("o", 1))
    flat = shuffled(event.to_dict(), rnd)
    assert dumps(flat) == encode_event(event)
    assert encode_event(event_from_dict(flat)) == encode_event(event)


# ---------------------------------------------------------------- refusing bad input


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xfe\x00", b"{", b"{}}", b"[1,", b"nul", b'{"seq": NaN}', b"\x00" * 8, "\ud800"],
    ids=repr,
)
def test_decode_garbage(raw: bytes | str) -> None:
    with pytest.raises(DecodeError):
        decode_event(raw)


def test_loads_refuses_like_decode() -> None:
    with pytest.raises(DecodeError):
        loads(b"{'single': 'quotes'}")
    assert loads(b'{"a":[1]}') == {"a": [1]}


@pytest.mark.parametrize("raw", [b"[]", b"null", b"1", b'"event"', b"[{}]", b"true"])
def test_decode_not_an_object(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_event(raw)


def _without(key: str) -> dict[str, Any]:
    raw = sample_event().to_dict()
    del raw[key]
    return raw


def _with(key: str, value: Any) -> dict[str, Any]:
    return {**sample_event().to_dict(), key: value}


BAD_SHAPES: list[tuple[str, dict[str, Any]]] = [
    *[(f"no-{key}", _without(key)) for key in ("seq", "ts", "log_id", "type", "action")],
    *[(f"no-{key}", _without(key)) for key in ("sender", "target", "data", "op_id")],
    ("seq-0", _with("seq", 0)),
    ("seq-negative", _with("seq", -3)),
    ("seq-float", _with("seq", 1.0)),
    ("seq-str", _with("seq", "1")),
    ("seq-bool", _with("seq", True)),
    ("ts-str", _with("ts", "now")),
    ("ts-null", _with("ts", None)),
    ("ts-bool", _with("ts", False)),
    ("ts-huge", _with("ts", 1e400)),
    ("log_id-empty", _with("log_id", "")),
    ("log_id-int", _with("log_id", 5)),
    ("type-unknown", _with("type", "video")),
    ("type-list", _with("type", ["cue"])),
    ("type-object", _with("type", {"cue": 1})),
    ("action-unknown", _with("action", "delete")),
    ("action-null", _with("action", None)),
    ("sender-int", _with("sender", 1)),
    ("target-null", _with("target", None)),
    ("data-list", _with("data", [1])),
    ("data-str", _with("data", "x")),
    ("op_id-str", _with("op_id", "node-1:12")),
    ("op_id-short", _with("op_id", ["node-1"])),
    ("op_id-zero", _with("op_id", ["node-1", 0])),
    ("op_id-origin", _with("op_id", ["", 1])),
]


@pytest.mark.parametrize(("name", "raw"), BAD_SHAPES, ids=[name for name, _ in BAD_SHAPES])
def test_decode_wrong_shapes(name: str, raw: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        event_from_dict(raw)
    with pytest.raises(DecodeError):
        decode_event(orjson.dumps(raw))  # (orjson writes inf as null)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    try:
        event = decode_event(raw)
    except DecodeError:
        return
    assert decode_event(encode_event(event)) == event


@given(
    st.sampled_from(sorted(sample_event().to_dict())),
    st.none() | json_values,
)
def test_any_field_replaced_decodes_or_raises_decode_error(key: str, value: Any) -> None:
    raw = orjson.dumps(_with(key, value))
    try:
        event = decode_event(raw)
    except DecodeError:
        return
    assert event.to_dict()[key] == value
