"""Admission, the order submits enter the group commit, without sockets or clocks.

The rule: a node's ops are committed in its own order whatever order its pipelined submits
arrive in, and a failed commit never lets a later op of the same node in before an earlier one.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventlog import CONTROLLER, ActionType, EventLog, Operation, OperationType, Submission
from replicas.admission import Admission, Answers, SubmitReply, Ticket
from replicas.messages import Acks, Chain, Error, Submit, error
from replicas.sequencer import ControllerCore, Prepared

ORIGIN = "n1/abc"


def prepared(first: int, count: int, node: str = "n1", origin: str = ORIGIN) -> Prepared:
    ops = [
        {
            "type": "status",
            "action": "update",
            "sender": node,
            "target": "nextcue",
            "data": {"nextcue": f"c{n}"},
            "op_id": [origin, n],
        }
        for n in range(first, first + count)
    ]
    core = ControllerCore(EventLog.open(":memory:"))
    return core.prepare_submit(Submit(node, ops))


def acked(reply: SubmitReply) -> list[int]:
    """The seqs an ``acks`` reply gives (any other reply fails the test)."""
    return [r["seq"] for r in acks(reply).results]


def acks(reply: SubmitReply) -> Acks:
    """An ``acks`` reply (any other reply fails the test)."""
    assert isinstance(reply, Acks), reply
    return reply


def refused(reply: SubmitReply) -> Error:
    """An ``error`` reply (any other reply fails the test)."""
    assert isinstance(reply, Error), reply
    return reply


def chain(first: int, count: int, head: bool = False) -> Chain:
    return Chain(ORIGIN, first - 1, first + count - 1, head)


def fresh() -> tuple[ControllerCore, Admission]:
    core = ControllerCore(EventLog.open(":memory:"))
    return core, Admission(core, park_timeout=0.5)


def commit(core: ControllerCore, admission: Admission) -> tuple[list[Ticket], Answers]:
    batch = admission.take()
    committed = core.commit([t.prepared for t in batch], 1.0)
    return batch, admission.committed(batch, committed.replies)


def test_in_order_submits_go_straight_to_the_queue() -> None:
    core, admission = fresh()
    assert admission.submit(prepared(1, 2), chain(1, 2, head=True), 1, 0.0) == []
    assert admission.submit(prepared(3, 2), chain(3, 2), 2, 0.0) == []
    assert [t.token for t in admission.queue] == [1, 2]
    _, answers = commit(core, admission)
    assert [(token, acked(reply)) for token, reply in answers] == [
        (1, [1, 2]),
        (2, [3, 4]),
    ]


def test_an_overtaking_submit_waits_for_its_predecessor_then_follows_it() -> None:
    core, admission = fresh()
    assert admission.submit(prepared(3, 2), chain(3, 2), 2, 0.0) == []
    assert admission.queue == [] and ORIGIN in admission.parked
    admission.submit(prepared(1, 2), chain(1, 2, head=True), 1, 0.1)
    assert [t.token for t in admission.queue] == [1, 2] and admission.parked == {}
    _, answers = commit(core, admission)
    assert [seq for _, reply in answers for seq in acked(reply)] == [1, 2, 3, 4]


def test_a_predecessor_that_never_comes_sends_the_successor_back() -> None:
    _, admission = fresh()
    admission.submit(prepared(3, 2), chain(3, 2), 7, 0.0)
    assert admission.expire(0.3) == []
    answers = admission.expire(0.6)
    assert [(t, refused(r).rule) for t, r in answers] == [(7, "out-of-order")]
    assert admission.parked == {}


def test_a_failed_commit_sends_back_everything_of_its_origins_behind_it() -> None:
    core, admission = fresh()
    admission.submit(prepared(1, 2), chain(1, 2, head=True), 1, 0.0)
    batch = admission.take()  # in the commit that is about to fail
    admission.submit(prepared(3, 2), chain(3, 2), 2, 0.0)  # queued behind it
    admission.submit(prepared(7, 1), chain(7, 1), 3, 0.0)  # parked: 5..6 not admitted
    other = prepared(1, 1, node="n2", origin="n2/def")
    admission.submit(other, None, 4, 0.0)  # another node: unaffected
    answers = dict(admission.commit_failed(batch, "disk I/O error"))
    assert refused(answers[1]).rule == "commit" and "disk I/O error" in refused(answers[1]).error
    assert refused(answers[2]).rule == refused(answers[3]).rule == "out-of-order"
    assert [t.token for t in admission.queue] == [4] and admission.parked == {}
    # the node resends from its oldest unacknowledged op: in order again
    admission.submit(prepared(1, 4), chain(1, 4, head=True), 5, 1.0)
    _, done = commit(core, admission)
    assert [seq for token, reply in done if token == 5 for seq in acked(reply)] == [
        2,
        3,
        4,
        5,
    ]


def test_a_failed_group_is_committed_again_one_submit_at_a_time() -> None:
    """One bad submit (a peer's, or a bug's) must not fail everyone else's in its commit."""
    _, admission = fresh()
    admission.submit(prepared(1, 2), chain(1, 2, head=True), 1, 0.0)
    admission.submit(prepared(1, 1, node="n2", origin="n2/def"), None, 2, 0.0)
    admission.submit(prepared(3, 1), chain(3, 1), 3, 0.0)
    group = admission.take()
    assert [t.token for t in group] == [1, 2, 3]
    assert admission.commit_failed(group, "Integer exceeds 64-bit range") == []
    admission.submit(prepared(1, 1, node="n3", origin="n3/abc"), None, 4, 0.0)
    # the failed group's submits come back first, each alone, in their order
    assert [t.token for t in admission.take()] == [1]  # (committed: fine)
    culprit = admission.take()  # say n2's submit is the bad one
    assert [t.token for t in culprit] == [2]
    answers = admission.commit_failed(culprit, "Integer exceeds 64-bit range")
    assert [(t, refused(r).rule) for t, r in answers] == [(2, "commit")]
    # the rest goes on: n1's second submit alone, then the new one in a group again
    assert [t.token for t in admission.take()] == [3]
    assert [t.token for t in admission.take()] == [4]


def test_the_controllers_own_ops_are_retried_a_few_times_then_refused() -> None:
    _, admission = fresh()
    op = Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, "t", {})
    mine = Prepared(CONTROLLER, [Submission(op)], [None])
    admission.submit(mine, None, 9, 0.0)
    for _ in range(3):
        assert admission.commit_failed(admission.take(), "busy") == []
    answers = admission.commit_failed(admission.take(), "busy")
    assert [(t, refused(r).rule) for t, r in answers] == [(9, "commit")]


def test_a_submit_whose_every_op_was_refused_is_answered_at_once_in_its_order() -> None:
    core, admission = fresh()
    bad = core.prepare_submit(
        Submit(
            "n1",
            [
                {
                    "type": "nope",
                    "action": "update",
                    "sender": "n1",
                    "target": "x",
                    "data": None,
                    "op_id": [ORIGIN, 1],
                }
            ],
        )
    )
    answers = admission.submit(bad, chain(1, 1, head=True), 1, 0.0)
    assert [(t, acks(r).results[0]["rule"]) for t, r in answers] == [(1, "unknown-type")]
    # the next one is in order after it
    assert admission.submit(prepared(2, 1), chain(2, 1), 2, 0.0) == []
    assert [t.token for t in admission.queue] == [2]


def test_drain_answers_everything_queued_and_parked() -> None:
    _, admission = fresh()
    admission.submit(prepared(1, 1), chain(1, 1, head=True), 1, 0.0)
    admission.submit(prepared(5, 1), chain(5, 1), 2, 0.0)
    stopping = error("stopping", "stopping")
    assert sorted(t for t, _ in admission.drain(stopping)) == [1, 2]
    assert admission.queue == [] and admission.parked == {}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.permutations(list(range(6))), st.integers(min_value=1, max_value=4))
def test_any_arrival_order_commits_in_the_nodes_order(order: list[int], size: int) -> None:
    """Six pipelined submits of `size` ops each, arriving in any order: committed in order."""
    core, admission = fresh()
    answered: dict[int, list[int]] = {}

    def take(answers: Answers) -> None:
        for token, reply in answers:
            answered[token] = acked(reply)

    for k in order:
        first = 1 + k * size
        take(admission.submit(prepared(first, size), chain(first, size, head=k == 0), k, 0.0))
        take(commit(core, admission)[1])
    assert sorted(answered) == list(range(6))
    seqs = [seq for k in range(6) for seq in answered[k]]
    assert seqs == list(range(1, 6 * size + 1))
