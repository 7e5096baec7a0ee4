"""State encoding and snapshots: the state at seq N, checked by its digest on the way back."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import pytest

from eventlog import DecodeError, Snapshot, State, digest, dumps, fold, restore, take
from eventlog.state import SCHEMA
from tests.helpers import Show, show_op

EMPTY_STATE = (
    b'{"armed_nodes":{},"commands":{},"cue_enabled":{},"cues":{},"engine":{"armed":"",'
    b'"currentcue":[],"load":"","nextcue":"","running":"","timecode":0},"ignored":0,'
    b'"mixer":{},"nodes":{},"players":{},"required":[],"schema":1,"seq":0,"status":{}}'
)


def played_show() -> Show:
    show = Show()
    for n in range(1, 40):
        raw = show_op(n)
        show.do(raw["type"], raw["action"], raw["sender"], raw["target"], raw["data"])
    return show


def test_empty_state_encoding_and_digest() -> None:
    assert State().encode() == EMPTY_STATE
    assert digest(State()) == hashlib.sha256(EMPTY_STATE).hexdigest()
    assert SCHEMA == 1


def test_state_round_trips_through_its_encoding() -> None:
    state = played_show().state
    assert state.seq == 39
    again = State.decode(state.encode())
    assert again == state
    assert again.encode() == state.encode()
    assert digest(again) == digest(state)


def test_copy_is_deep_and_independent() -> None:
    state = played_show().state
    copy = state.copy()
    assert copy == state
    copy.engine["currentcue"].append(["x", "0"])
    copy.mixer["n/0/0"] = 0.5
    assert copy != state
    assert ["x", "0"] not in state.engine["currentcue"]


def test_state_equality_is_by_content() -> None:
    assert State() == State()
    assert State() != played_show().state
    assert State() != "not a state"


def test_take_and_restore() -> None:
    state = played_show().state
    snap = take(state, 1234.5)
    assert (snap.seq, snap.ts) == (39, 1234.5)
    assert snap.state == state.encode()
    assert snap.digest == digest(state)
    assert restore(snap) == state
    assert f"seq={snap.seq}" in repr(snap)


def test_restored_state_continues_like_the_original() -> None:
    show = played_show()
    restored = restore(take(fold(show.events[:20]), 0.0))
    assert fold(show.events[20:], restored) == show.state


def test_restore_refuses_a_tampered_snapshot() -> None:
    snap = take(played_show().state, 1.0)
    tampered = snap.state.replace(b'"ignored":0', b'"ignored":1')
    assert tampered != snap.state
    with pytest.raises(DecodeError):
        restore(replace(snap, state=tampered))
    with pytest.raises(DecodeError):
        restore(replace(snap, digest="0" * 64))


def test_restore_refuses_a_snapshot_at_the_wrong_seq() -> None:
    snap = take(played_show().state, 1.0)
    with pytest.raises(DecodeError):
        restore(Snapshot(snap.seq + 1, snap.ts, snap.digest, snap.state))


_DROP = object()


def _encoded(**changes: Any) -> bytes:
    """An empty state's encoding with some fields changed (or dropped, with `_DROP`)."""
    raw = State().to_dict()
    raw.update(changes)
    return dumps({k: v for k, v in raw.items() if v is not _DROP})


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        dumps({"schema": 1}),
        _encoded(schema=2),
        _encoded(schema=_DROP),
        _encoded(seq=-1),
        _encoded(seq="3"),
        _encoded(seq=True),
        _encoded(engine=[]),
        _encoded(cues=None),
        _encoded(required={}),
        _encoded(mixer=_DROP),
        _encoded(ignored=_DROP),
    ],
    ids=repr,
)
def test_decode_refuses_what_is_not_a_state(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        State.decode(raw)


@pytest.mark.parametrize("ignored", ["many", None, [1]], ids=repr)
def test_decode_refuses_a_bad_ignored_count(ignored: Any) -> None:
    with pytest.raises(DecodeError):
        State.decode(_encoded(ignored=ignored))
