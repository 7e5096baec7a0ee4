"""The submitter's decisions (`SubmitterCore`), without sockets: what goes next, what a reply
means, and how a failure makes the node send again from its oldest unacknowledged op."""

from __future__ import annotations

import concurrent.futures

import pytest

from eventlog import ActionType, Operation, OperationType
from replicas.messages import Acks, Chain, Submit, error
from replicas.outbox import BACKOFF_MIN, Items, OperationRefused, Outbox, SubmitterCore


def filled(count: int) -> tuple[SubmitterCore, list[concurrent.futures.Future[int]]]:
    outbox = Outbox("n1", 100, "n1/abc")
    futures = [
        outbox.put(Operation(OperationType.STATUS, ActionType.UPDATE, "n1", "t", {"n": i}))
        for i in range(count)
    ]
    return SubmitterCore(outbox, "n1"), futures


def acks(first_seq: int, count: int) -> Acks:
    return Acks([{"seq": first_seq + i} for i in range(count)], 99)


def sent(core: SubmitterCore) -> tuple[Submit, Items]:
    """The next submit (there must be one) and its items."""
    msg = core.next_submit()
    assert msg is not None
    return msg, core.inflight[-1]


def test_submits_go_in_order_chained_and_acks_empty_the_outbox() -> None:
    core, futures = filled(3)
    msg, _ = sent(core)
    assert msg.chain == Chain(origin="n1/abc", prev=0, last=3, head=True)
    assert core.next_submit() is None and not core.more
    verdict = core.on_reply(acks(10, 3))
    assert not verdict.resend and len(core.outbox) == 0 and core.sent == 0
    assert [f.result(0) for f in futures] == [10, 11, 12]


def test_a_lost_reply_resends_from_the_oldest_after_a_growing_backoff() -> None:
    core, _ = filled(2)
    sent(core)
    first = core.on_reply(None)
    assert first.resend and first.delay == BACKOFF_MIN and len(core.outbox) == 2
    sent(core)
    second = core.on_reply(error("disk", "commit"))
    assert second.resend and second.delay == 2 * BACKOFF_MIN
    sent(core)
    assert not core.on_reply(acks(1, 2)).resend and core.backoff == BACKOFF_MIN


@pytest.mark.parametrize(("rule", "hello"), [("out-of-order", False), ("hello-first", True)])
def test_the_controller_asking_for_a_resend_costs_no_wait(rule: str, hello: bool) -> None:
    core, _ = filled(1)
    sent(core)
    verdict = core.on_reply(error("again", rule))
    assert verdict.resend and verdict.delay == 0 and verdict.hello is hello


def test_after_a_failure_the_rest_in_flight_land_before_anything_is_sent_again() -> None:
    core, futures = filled(4)
    core.outbox.batch = 2
    sent(core)
    sent(core)
    verdict = core.on_reply(error("stopping", "stopping"))
    # one is still in flight behind the failure: nothing new goes out, and no wait yet
    assert verdict.resend and verdict.delay == 0 and core.draining
    assert core.next_submit() is None and not core.more
    # it was acknowledged all the same: its acks count
    last = core.on_reply(acks(7, 2))
    assert last.resend and last.delay == BACKOFF_MIN and not core.draining and core.sent == 0
    assert [f.done() for f in futures] == [False, False, True, True]
    core.outbox.batch = 4
    sent(core)
    refused = {"error": "bad", "rule": "unknown-type"}
    core.on_reply(Acks([{"seq": 5}, refused, {"seq": 7}, {"seq": 8}], 8))
    with pytest.raises(OperationRefused, match="bad"):
        futures[1].result(0)
    assert futures[2].result(0) == 7
