"""`SyncGate`, the rule of when a leader with ``--ha`` may acknowledge: with a synchronous
standby only once the standby holds the seq; alone only once etcd records that it runs alone.

The property test drives the gate with commits, standby reports (true, late, from a peer
lying about its origin), time, forgotten standbys and etcd writes that succeed or fail, in any
order, and checks after every step that no answer went out that a standby etcd names (or may
name: a write on its way) lacks, and that nothing waits forever once the standby is given up.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from replicas.syncrep import NO_CHANGE, SyncGate

INSTS = {"x": "x-origin", "y": "y-origin"}


def _gate(timeout: float = 1.0) -> SyncGate[int]:
    gate: SyncGate[int] = SyncGate(timeout)
    gate.members = dict(INSTS)
    return gate


def test_alone_answers_at_once_then_a_standby_that_caught_up_gates_them() -> None:
    gate = _gate()
    assert gate.committed(1, [1], 0.0) == [1]  # alone: at once
    assert gate.copied("x", 1, 0.1, INSTS["x"]) == []
    assert gate.sync == "x" and gate.want == "x"  # joining: etcd should name it
    assert gate.committed(2, [2], 0.2) == []  # waits for x's copy
    assert gate.copied("x", 2, 0.3, INSTS["x"]) == [2]
    gate.write_started("x")
    assert gate.written("x", True) == [] and gate.recorded == "x"
    assert gate.describe(0.3)["synchronous"] is True


def test_a_silent_standby_is_given_up_only_once_etcd_records_the_leader_alone() -> None:
    gate = _gate()
    gate.copied("x", 0, 0.0, INSTS["x"])
    gate.write_started("x")
    gate.written("x", True)
    assert gate.committed(1, [1], 0.0) == []
    assert gate.tick(0.5) == []
    assert gate.tick(1.2) == [] and gate.leaving  # waited too long: leaving
    assert gate.want is None
    gate.write_started(None)
    assert gate.tick(5.0) == []  # the write is on its way: still nothing alone
    assert gate.written(None, False) == []  # etcd refused: nothing alone either
    gate.write_started(None)
    assert gate.written(None, True) == [1]
    assert gate.committed(2, [2], 5.1) == [2]  # alone now


def test_a_peer_lying_about_its_origin_never_becomes_synchronous() -> None:
    gate = _gate()
    gate.committed(1, [1], 0.0)
    gate.copied("x", 1, 0.1, "stolen-name-other-origin")
    assert gate.sync is None and gate.want is NO_CHANGE
    assert "x" in gate.describe(0.1)["standbys"]  # shown, never counted
    assert gate.committed(2, [2], 0.2) == [2]


def test_a_liar_s_report_never_counts_for_the_real_standby() -> None:
    """A peer using the standby's name (the real one away a moment) reports the head: nothing
    is released, and when the real one reports again only its own seq counts."""
    gate = _gate()
    gate.copied("x", 0, 0.0, INSTS["x"])
    gate.write_started("x")
    gate.written("x", True)
    assert gate.committed(5, [5], 0.1) == []
    gate.forget("x")
    assert gate.copied("x", 5, 0.2, "liar-origin") == []  # the head, from another process
    assert gate.copied("x", 2, 0.3, INSTS["x"]) == []  # the real one holds 2 only
    assert gate.copied("x", 5, 0.4, INSTS["x"]) == [5]


def test_a_copy_beyond_the_head_is_refused() -> None:
    gate = _gate()
    gate.committed(3, [3], 0.0)
    try:
        gate.copied("x", 4, 0.1, INSTS["x"])
    except ValueError as exc:
        assert "beyond the head" in str(exc)
    else:
        raise AssertionError("a copy beyond the head was taken")


STEP = st.one_of(
    st.tuples(st.just("commit"), st.integers(0, 2)),
    st.tuples(st.just("copy"), st.sampled_from(["x", "y"]), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("tick"), st.floats(0.0, 1.5)),
    st.tuples(st.just("write"), st.booleans()),
    st.tuples(st.just("forget"), st.sampled_from(["x", "y"])),
)


@settings(max_examples=settings().max_examples * 8)  # ci: 400, fixed; long: 16,000
@given(st.lists(STEP, max_size=60))
def test_no_answer_goes_out_that_a_named_standby_lacks(steps: list[Any]) -> None:
    gate = _gate()
    head = 0
    now = 0.0
    etcd: str | None = None  # what etcd records
    inflight: list[Any] = []  # a write on its way: [value]
    released: set[int] = set()
    committed: set[int] = set()

    def check(out: list[int]) -> None:
        for seq in out:
            assert seq in committed and seq not in released
            released.add(seq)
            for named in {etcd, *(v for v in inflight if v is not None)} - {None}:
                copy = gate.copies.get(str(named))
                assert copy is not None and copy.seq >= seq, (named, seq, copy)

    for step in steps:
        kind = step[0]
        if kind == "commit":
            head += 1
            answers = [head] if step[1] else []
            committed.update(answers)
            check(gate.committed(head, answers, now))
        elif kind == "copy":
            _, name, lag, honest = step
            inst = INSTS[name] if honest else "liar"
            check(gate.copied(name, max(0, head - lag), now, inst))
        elif kind == "tick":
            now += step[1]
            check(gate.tick(now))
        elif kind == "forget":
            gate.forget(step[1])
        elif inflight:
            value = inflight.pop()
            if step[1]:
                etcd = value
            check(gate.written(value, step[1]))
        else:
            value = gate.want
            if value is not NO_CHANGE:
                if value is not None:  # etcd may name it only when it holds all answered
                    copy = gate.copies.get(value)
                    assert copy is not None and copy.seq >= max(released, default=0)
                gate.write_started(value)
                inflight.append(value)
    # liveness: finish a write on its way, give the standby up, record alone: all goes out
    if inflight:
        value = inflight.pop()
        etcd = value
        check(gate.written(value, True))
    for _ in range(3):
        now += 10.0
        check(gate.tick(now))
        value = gate.want
        if value is not NO_CHANGE:
            gate.write_started(value)
            if value is not None:
                copy = gate.copies.get(value)
                assert copy is not None and copy.seq >= max(released, default=0)
            etcd = value
            check(gate.written(value, True))
    assert released == committed and not gate.synchronous
