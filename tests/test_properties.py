"""Properties of the core, driven by hypothesis.

- a fold restarted from a snapshot at any k equals the full fold;
- the digest is the same under any hash seed (checked in child processes);
- an invalid operation in a batch changes neither the log nor the state;
- retried and duplicated submissions are appended once, and get their first seq back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from eventlog import (
    EventLog,
    Operation,
    OpId,
    State,
    Submission,
    ValidationError,
    apply,
    digest,
    fires,
    fold,
    restore,
    take,
    validate_operation,
)
from tests.helpers import FakeClock, Wire, events_from, show_op
from tests.strategies import (
    invalid_wire_operations,
    operations,
    show_wire_operations,
    shows,
    submissions,
    wire_operations,
)

op_lists = shows | st.lists(operations, max_size=30)


@given(op_lists, st.data())
def test_snapshot_at_any_k_equals_full_fold(ops: list[Operation], data: st.DataObject) -> None:
    events = events_from(ops)
    full = fold(events)
    k = data.draw(st.integers(0, len(events)), label="k")
    snap = take(fold(events[:k]), ts=float(k))
    assert snap.seq == k
    resumed = fold(events[k:], restore(snap))
    assert resumed == full
    assert digest(resumed) == digest(full)


@given(op_lists)
def test_apply_is_total_and_replayable(ops: list[Operation]) -> None:
    events = events_from(ops)
    state = State()
    reasons = [apply(state, event) for event in events]  # never raises on a valid event
    fired = [fires(event, reason) for event, reason in zip(events, reasons, strict=True)]
    assert state.seq == len(events)
    assert state.ignored == sum(reason is not None for reason in reasons)
    again = State()
    assert [fires(e, apply(again, e)) for e in events] == fired
    assert State.decode(state.encode()) == state
    assert digest(again) == digest(state)


# ---------------------------------------------------------------- digest and hash seeds

_CHILD = """
import sys
import orjson
from eventlog import digest, event_from_dict, fold
for events in orjson.loads(sys.stdin.buffer.read()):
    print(digest(fold(event_from_dict(e) for e in events)))
"""
HASH_SEEDS = ("0", "1", "4242", "random")


def digests_in_child(event_lists: list[list[dict[str, Any]]], seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=orjson.dumps(event_lists),
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout.decode().split()


def test_digest_of_a_scripted_show_is_the_same_under_any_hash_seed() -> None:
    events = events_from(validate_operation(show_op(n)) for n in range(1, 200))
    lists = [[e.to_dict() for e in events[:n]] for n in (0, 1, 37, len(events))]
    expected = [digest(fold(events[:n])) for n in (0, 1, 37, len(events))]
    for seed in HASH_SEEDS:
        assert digests_in_child(lists, seed) == expected


@settings(max_examples=3)
@given(st.lists(op_lists, min_size=1, max_size=4))
def test_digest_of_any_events_is_the_same_under_any_hash_seed(
    op_batches: list[list[Operation]],
) -> None:
    lists = [[e.to_dict() for e in events_from(ops)] for ops in op_batches]
    expected = [digest(fold(events_from(ops))) for ops in op_batches]
    for seed in HASH_SEEDS[:2]:
        assert digests_in_child(lists, seed) == expected


# ---------------------------------------------------------------- the store refuses bad input


def memory_log() -> EventLog:
    return EventLog.open(":memory:", clock=FakeClock(), snapshot_every=7)


@given(
    st.lists(wire_operations, max_size=10),
    st.lists(wire_operations, max_size=10),
    invalid_wire_operations(),
    st.data(),
)
def test_an_invalid_operation_changes_nothing(
    history: list[Wire], batch: list[Wire], bad: Wire, data: st.DataObject
) -> None:
    with memory_log() as log:
        log.append_batch(history)
        head, state_digest = log.head, digest(log.state)
        snapshots, events = log.snapshots(), log.read()
        index = data.draw(st.integers(0, len(batch)), label="index")
        items: list[Any] = [*batch[:index], bad, *batch[index:]]
        try:
            log.append_batch(items)
        except ValidationError as exc:
            assert exc.index == index
        else:
            raise AssertionError(f"{bad!r} was accepted")
        assert log.head == head
        assert log.count() == head
        assert digest(log.state) == state_digest
        assert digest(log.state_at(head)) == state_digest
        assert log.snapshots() == snapshots
        assert log.read() == events
        # and the log still works
        assert log.append_batch(batch).seqs == list(range(head + 1, head + 1 + len(batch)))


@given(st.lists(st.lists(submissions, max_size=8), max_size=8), st.data())
def test_retries_and_duplicates_are_appended_once(
    batches: list[list[Submission]], data: st.DataObject
) -> None:
    first_seq: dict[OpId, int] = {}
    sent: list[Submission] = []
    with memory_log() as log:
        for batch in batches:
            # resubmit some of what was sent before, anywhere in the batch
            retries = data.draw(st.lists(st.sampled_from(sent), max_size=3)) if sent else []
            items = [*batch, *retries]
            order = data.draw(st.permutations(range(len(items))))
            items = [items[i] for i in order]
            head = log.head
            new = list(dict.fromkeys(s.op_id for s in items if s.op_id not in first_seq))
            result = log.append_batch(items)
            assert len(result.seqs) == len(items)
            for sub, seq in zip(items, result.seqs, strict=True):
                assert sub.op_id is not None
                assert first_seq.setdefault(sub.op_id, seq) == seq
            assert [e.op_id for e in result.events] == new
            assert [e.seq for e in result.events] == list(range(head + 1, head + 1 + len(new)))
            assert result.duplicates == len(items) - len(new)
            sent.extend(items)
        events = log.read()
        assert [e.seq for e in events] == list(range(1, log.head + 1))
        assert log.head == len(first_seq)
        assert {e.op_id: e.seq for e in events} == first_seq
        assert digest(log.state) == digest(fold(events))


@given(show_wire_operations(), st.lists(st.integers(1, 6), min_size=1))
def test_stored_events_fold_to_the_live_state(ops: list[Wire], sizes: list[int]) -> None:
    with memory_log() as log:
        start, batch = 0, 0
        while start < len(ops):
            size = sizes[batch % len(sizes)]
            log.append_batch(ops[start : start + size])
            start, batch = start + size, batch + 1
        events = log.read()
        assert [e.seq for e in events] == list(range(1, log.head + 1))
        live = digest(log.state)
        assert digest(fold(events)) == live
        assert digest(log.state_at(log.head)) == live
        for seq, _ts, snap_digest in log.snapshots():
            assert digest(fold(events[:seq])) == snap_digest
