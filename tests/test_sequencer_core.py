"""`ControllerCore` driven by plain values: liveness clocks, node bounds, ordering marks."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from eventlog import ActionType, EventLog, Operation, OperationType, Submission
from replicas.membership import MAX_NODES
from replicas.messages import Beat, Submit
from replicas.protocol import ProtocolError
from replicas.sequencer import ControllerCore


def beat(core: ControllerCore, node: str) -> Beat:
    return Beat(node, 0, "", log=core.log_id)


def test_liveness_follows_the_monotonic_clock_not_the_wall_clock() -> None:
    elog = EventLog.open(":memory:")
    core = ControllerCore(elog, now=1_000_000.0, mono=10.0)
    _, ops = core.beat(beat(core, "a"), 1_000_000.0, 10.0)
    assert [s.op.target for s in ops] == ["node_joined"]
    core.commit([core.internal(ops)], 1_000_000.0)
    # the wall clock jumps 5 s forward (NTP) while only 0.3 s really passed
    core.beat(beat(core, "a"), 1_000_005.0, 10.2)
    assert core.tick(10.5) == []
    assert [s.op.target for s in core.tick(13.3)] == ["node_left"]


def test_a_left_node_is_disarmed_and_must_re_arm() -> None:
    elog = EventLog.open(":memory:")
    core = ControllerCore(elog)
    _, ops = core.beat(beat(core, "a"), 0.0, 0.0)
    load = Operation(OperationType.COMMAND, ActionType.UPDATE, "controller", "load", {"value": "x"})
    armed = Operation(OperationType.STATUS, ActionType.UPDATE, "a", "armed_ready", {"armed": "yes"})
    core.commit([core.internal([*ops, Submission(load), Submission(armed)])], 0.0)
    assert elog.state.engine["armed"] == "yes"
    core.commit([core.internal(core.tick(10.0))], 10.0)
    assert elog.state.engine["armed"] == "no", "a node that left must report armed again"


def test_the_node_table_is_bounded() -> None:
    core = ControllerCore(EventLog.open(":memory:"))
    for i in range(MAX_NODES):
        core.beat(beat(core, f"n{i}"), 0.0, 0.0)
    with pytest.raises(ProtocolError, match="not admitted"):
        core.beat(beat(core, "one-too-many"), 0.0, 0.0)
    core.tick(100.0)  # all of them left: now a newcomer takes the place of an offline one
    core.beat(beat(core, "newcomer"), 100.0, 100.0)
    assert len(core.nodes) == MAX_NODES and "newcomer" in core.nodes


def test_commit_rings_are_safe_to_read_while_a_commit_thread_writes() -> None:
    elog = EventLog.open(":memory:")
    core = ControllerCore(elog, now=1.0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                head = core.head
                core.ts_of(head)
                core.digest_at(head)
                core.status(2.0, 2.0)
            except BaseException as exc:  # pragma: no cover - what the test looks for
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    op = Operation(OperationType.STATUS, ActionType.UPDATE, "a", "nextcue", {"nextcue": "c"})
    for _ in range(300):
        core.commit([core.internal([Submission(op)])], 1.5)
    stop.set()
    thread.join(10)
    assert errors == []


def test_order_marks_come_from_the_log_when_not_in_memory(tmp_path: Any) -> None:
    path = tmp_path / "ctl.db"
    with EventLog.open(path) as elog:
        core = ControllerCore(elog)
        op = {
            "type": "status",
            "action": "update",
            "sender": "a",
            "target": "nextcue",
            "data": {"nextcue": "c"},
        }
        prepared = core.prepare_submit(
            Submit("a", [{**op, "op_id": ["a/x", n]} for n in (1, 2, 3)])
        )
        core.commit([prepared], 0.0)
    with EventLog.open(path) as elog:  # a restarted controller
        core = ControllerCore(elog)
        assert core.in_order("a/x", 3, head=False)
        assert not core.in_order("a/x", 4, head=False)
        core.admitted("a/x", 10)
        assert core.in_order("a/x", 10, head=False)
        core.forget_origins({"a/x"})
        assert not core.in_order("a/x", 10, head=False), "re-read from the log after a failure"


def test_a_stall_of_the_controller_is_not_counted_against_the_nodes() -> None:
    elog = EventLog.open(":memory:")
    core = ControllerCore(elog, mono=0.0)
    _, ops = core.beat(beat(core, "a"), 0.0, 0.0)
    core.commit([core.internal(ops)], 0.0)
    core.beat(beat(core, "a"), 1.0, 1.0)
    # the controller is SIGSTOPped at 1.2 s for 10 s; its liveness loop wakes 10 s late
    core.stalled(10.0, 11.2)
    assert core.tick(11.2) == [], "the node was never silent while the controller ran"
    assert [s.op.target for s in core.tick(14.1)] == ["node_left"], "real silence still counts"


@pytest.mark.parametrize(
    ("address", "exposed"),
    [
        ("tcp://127.0.0.1:9093", False),
        ("tcp://[::1]:9093", False),
        ("tcp://localhost:9093", False),
        ("ipc:///tmp/x.ipc", False),
        ("inproc://x", False),
        ("tcp://0.0.0.0:9093", True),
        ("tcp://10.0.0.5:9093", True),
        ("tcp://show-controller:9093", True),
    ],
)
def test_a_listen_address_beyond_loopback_is_warned_about(address: str, exposed: bool) -> None:
    from replicas.nngio import beyond_loopback
    from tools.status import render

    assert beyond_loopback(address) is exposed
    shown = render(
        {"log_id": "l", "head_seq": 0, "digest": "", "nodes": {}, "warnings": ["open to all"]}
    )
    assert "WARNING  open to all" in shown
