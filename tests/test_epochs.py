"""Epochs: a controller's epoch travels in every welcome, beat reply and frame; a replica keeps
the highest it has seen (in its file, across restarts) and refuses anything older. An old
leader that still publishes (after a pause or a partition) can never make a replica apply its
frames once the replica follows a newer one, and the events an old leader appended after the
new one began are set aside, never merged."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog import (
    ActionType,
    EventLog,
    Operation,
    OperationType,
    Submission,
    digest,
)
from replicas import messages, protocol
from replicas.messages import Ev, Fetch, Hb, Welcome
from replicas.replica import MemoryStore, ReplicaCore, ReplicaStore
from replicas.replica_file import ReplicaFile
from replicas.sequencer import ControllerCore
from tests.cluster import controller_thread, ipc_address, nodes, status, wait_for

LIMIT = protocol.NNG_MAX_BYTES


def op(target: str, value: Any) -> Submission:
    return Submission(
        Operation(OperationType.STATUS, ActionType.UPDATE, "controller", target, {"v": value})
    )


class Leader:
    """A controller core of one epoch over its own copy of the log, and the frames it sent."""

    def __init__(self, elog: EventLog, epoch: int) -> None:
        self.core = ControllerCore(elog, epoch=epoch)
        self.core.epoch_start = elog.head + 1
        self.frames: list[bytes] = []

    def append(self, *targets: str) -> None:
        committed = self.core.commit([self.core.internal([op(t, t) for t in targets])], 1.0)
        self.frames.extend(committed.wire)

    def heartbeat(self) -> bytes:
        return messages.encode(Hb(self.core.log_id, self.core.head, 1.0, self.core.epoch))

    def welcome(self, replica: ReplicaCore) -> None:
        reply = self.core.hello(across(replica.hello()), 1.0)
        assert isinstance(reply, Welcome), reply
        replica.on_welcome(across(reply))

    def catch_up(self, replica: ReplicaCore) -> None:
        while (ask := replica.next_fetch()) is not None:
            replica.on_fetch_reply(reply_of(self.core.fetch(across(ask), 1.0)))


def across(msg: Any) -> Any:
    """A message as the other side decodes it."""
    raw = messages.encode(msg)
    if isinstance(msg, messages.RequestMessage):
        return messages.parse_request(raw)
    return messages.parse_reply(raw, LIMIT)


def reply_of(msg: Any) -> Any:
    return messages.parse_reply(messages.encode(msg), LIMIT)


def frame(raw: bytes) -> Ev | Hb:
    return messages.parse_frame(raw, LIMIT)


def two_leaders(tmp_path: Path, shared: int, old_tail: int, new_ops: int) -> tuple[Leader, Leader]:
    """Leader 1 (epoch 1) appends `shared` events, then leader 2 (epoch 2) takes over from a
    copy of that log (same log id) and appends `new_ops`; leader 1, cut off but still
    running, appends `old_tail` more that nobody ever acknowledged."""
    first = EventLog.open(tmp_path / "one.db")
    one = Leader(first, 1)
    for i in range(shared):
        one.append(f"s{i}")
    first.save_copy(tmp_path / "two.db")
    two = Leader(EventLog.open(tmp_path / "two.db"), 2)
    for i in range(old_tail):
        one.append(f"old{i}")
    two.append("leader")  # the first event of a leadership
    for i in range(new_ops):
        two.append(f"new{i}")
    return one, two


def test_a_replica_following_epoch_2_refuses_every_frame_and_reply_of_epoch_1(
    tmp_path: Path,
) -> None:
    one, two = two_leaders(tmp_path, shared=3, old_tail=4, new_ops=2)
    replica = ReplicaCore("n1", MemoryStore())
    two.welcome(replica)
    two.catch_up(replica)
    assert replica.epoch == 2 and replica.applied == two.core.head
    before = digest(replica.state)
    for raw in [*one.frames, one.heartbeat()]:
        assert replica.on_frame(frame(raw)) == []
    with pytest.raises(protocol.ProtocolError, match="old leader"):
        one.welcome(replica)
    stale = one.core.fetch(Fetch("n1", one.core.log_id, 0, 100), 1.0)
    assert replica.on_fetch_reply(reply_of(stale)) == []
    assert digest(replica.state) == before and replica.stale >= 6
    beat, _ = one.core.beat(across(replica.beat()), 1.0)
    replica.on_beat_reply(replica.beat(), reply_of(beat), 1.0)
    assert replica.missed_beats == 0 and replica.known_head == two.core.head


def test_a_frame_of_a_newer_epoch_makes_the_replica_say_hello_first(tmp_path: Path) -> None:
    one, two = two_leaders(tmp_path, shared=2, old_tail=0, new_ops=1)
    replica = ReplicaCore("n1", MemoryStore())
    one.welcome(replica)
    one.catch_up(replica)
    applied = replica.applied
    for raw in two.frames:
        assert replica.on_frame(frame(raw)) == []
    assert replica.need_hello and replica.applied == applied and replica.epoch == 1
    two.welcome(replica)
    two.catch_up(replica)
    assert digest(replica.state) == digest(two.core.elog.state)


def test_an_old_leaders_tail_is_set_aside_and_the_replica_follows_the_new_one(
    tmp_path: Path,
) -> None:
    """A node that applied what the old leader appended after the new one began (never
    acknowledged: the new leader does not have it) starts over from the new leader's log,
    and its file with that tail is set aside, not overwritten."""
    one, two = two_leaders(tmp_path, shared=3, old_tail=5, new_ops=1)
    store = ReplicaFile(EventLog.open(tmp_path / "n1.db", role="replica"), node_id="n1")
    replica = ReplicaCore("n1", store)
    one.welcome(replica)
    one.catch_up(replica)
    assert replica.applied == 3 + 5
    two.welcome(replica)
    # the new leader's head (5) is below what the replica applied (8): still a cut at the
    # fork, keeping the history, not a resync from nothing (the third review's defect)
    assert replica.applied == 3
    two.catch_up(replica)
    assert digest(replica.state) == digest(two.core.elog.state)
    assert replica.resyncs == 1 and store.elog.set_aside is not None
    with EventLog.open(store.elog.set_aside, readonly=True) as aside:
        assert aside.head == 3 + 5  # the old tail, kept
    assert store.elog.base_seq == 0 and [e.seq for e in store.elog.read(0, 3)] == [1, 2, 3]
    store.elog.close()
    # the epoch is in the file: after a restart the old leader is still refused
    again = ReplicaCore("n1", ReplicaFile(EventLog.open(tmp_path / "n1.db"), node_id="n1"))
    assert again.epoch == 2
    with pytest.raises(protocol.ProtocolError, match="old leader"):
        one.welcome(again)


def _replica(kind: str, tmp_path: Path, n: int) -> ReplicaStore:
    if kind == "memory":
        return MemoryStore()
    return ReplicaFile(EventLog.open(tmp_path / f"r{n}.db", role="replica"), node_id="n1")


@given(
    shared=st.integers(0, 4),
    old_tail=st.integers(0, 4),
    new_ops=st.integers(0, 4),
    order=st.lists(st.integers(0, 1000), min_size=1, max_size=30),
    hello_at=st.integers(0, 30),
    start_with_old=st.booleans(),
    kind=st.sampled_from(["memory", "file"]),
)
def test_frames_of_two_epochs_in_any_order_never_make_replicas_diverge(
    tmp_path_factory: pytest.TempPathFactory,
    shared: int,
    old_tail: int,
    new_ops: int,
    order: list[int],
    hello_at: int,
    start_with_old: bool,
    kind: str,
) -> None:
    """Every frame of both leaders (and their heartbeats), delivered in any order, with the
    replica saying hello to the new leader at any point (having followed the old one, or
    not): once it follows epoch 2 it never applies a frame of epoch 1, and once it caught up
    from the new leader it holds exactly the new leader's state."""
    tmp_path = tmp_path_factory.mktemp("epochs")
    one, two = two_leaders(tmp_path, shared, old_tail, new_ops)
    replica = ReplicaCore("n1", _replica(kind, tmp_path, 0))
    if start_with_old:
        one.welcome(replica)
    stream = [(1, raw) for raw in [*one.frames, one.heartbeat()]]
    stream += [(2, raw) for raw in [*two.frames, two.heartbeat()]]
    for step, pick in enumerate(order):
        if step == hello_at:
            two.welcome(replica)
        epoch, raw = stream[pick % len(stream)]
        applied, following = replica.applied, replica.epoch
        replica.on_frame(frame(raw))
        if following == 2 and epoch == 1:
            assert replica.applied == applied, "an old leader's frame was applied"
    two.welcome(replica)
    two.catch_up(replica)
    assert replica.epoch == 2
    assert replica.applied == two.core.head
    assert digest(replica.state) == digest(two.core.elog.state)


def test_a_controller_that_no_longer_leads_acknowledges_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    """Its lease may have expired (a partition from etcd, a long pause): what it holds is
    neither acknowledged nor published; the node keeps its op and sends it again, and it is
    acknowledged once the controller leads again (here: its lease renewed)."""
    leads = threading.Event()
    leads.set()
    addr = ipc_address(tmp_path)
    with (
        controller_thread(tmp_path / "ctl.db", addr, leading=leads.is_set, epoch=5) as ctl,
        nodes(addr, ["n1"], request_timeout=2.0) as (n1,),
    ):
        assert n1.wait_synced(10)
        assert n1.replica.core is not None and n1.replica.core.epoch == 5
        first = n1.add_cue("c1", "0").result(10)
        leads.clear()
        core = ctl.controller.core
        assert core is not None
        head, applied = core.head, n1.replica.applied_seq
        pending = n1.add_cue("c2", "0")
        with pytest.raises(TimeoutError):
            pending.result(1.0)  # not acknowledged while it does not lead
        assert core.head == head and n1.replica.applied_seq == applied  # nor committed, sent
        leads.set()
        second = pending.result(10)
        assert second > first
        wait_for("the node has it", lambda: n1.replica.applied_seq >= second, 10)
        assert status(addr)["epoch"] == 5


def test_a_node_does_not_follow_a_controller_older_than_its_file_and_does_not_flood_it(
    tmp_path: Path,
) -> None:
    """A node whose file has seen epoch 2 meets a controller of epoch 0 (an old leader, or a
    controller restarted on an old copy): it says so, keeps asking at a growing interval, and
    never takes the old controller's log."""
    with EventLog.open(tmp_path / "n1.db", role="replica") as elog:
        elog.set_epoch(2)
    addr = ipc_address(tmp_path)
    with (
        controller_thread(tmp_path / "ctl.db", addr) as ctl,
        nodes(addr, ["n1"], db=str(tmp_path / "n1.db"), request_timeout=1.0) as (n1,),
    ):
        wait_for("a few hellos", lambda: ctl.controller.stats["requests"] >= 3, 10)
        seen = ctl.controller.stats["requests"]
        assert not n1.wait_synced(2.0)
        assert ctl.controller.stats["requests"] - seen < 12  # backing off, not a flood
        assert n1.replica.core is not None and n1.replica.core.epoch == 2
        assert n1.replica.core.stale >= 1 and n1.replica.core.controller_log is None


def test_a_leadership_begins_with_its_story_in_the_log_and_its_epoch_in_the_file(
    tmp_path: Path,
) -> None:
    elog = EventLog.open(tmp_path / "ctl.db")
    core = ControllerCore(elog)
    core.commit([core.internal([op("nextcue", "c1")])], 1.0)
    first = core.internal(core.begin_epoch(7, "ctl-b", "ctl-a's lease expired"))
    committed = core.commit([first], 2.0)
    (event,) = committed.result.events
    assert event.op.target == "leader" and event.seq == core.epoch_start == 2
    assert event.op.data == {
        "epoch": 7,
        "leader": "ctl-b",
        "reason": "ctl-a's lease expired",
        "from_seq": 2,
    }
    assert frame(committed.wire[0]).epoch == 7
    replica = ReplicaCore("n1", MemoryStore())
    welcome = core.hello(across(replica.hello()), 2.0)
    assert isinstance(welcome, Welcome) and (welcome.epoch, welcome.epoch_start) == (7, 2)
    with pytest.raises(ValueError, match="not above"):
        core.begin_epoch(7, "ctl-c", "again")
    elog.close()
    # a controller restarted on this file serves under the epoch it recorded
    again = ControllerCore(EventLog.open(tmp_path / "ctl.db"))
    assert again.epoch == 7
    # and no node may append a leader event of its own
    bad = messages.Submit(
        "n1",
        [
            {
                "type": "status",
                "action": "update",
                "sender": "n1",
                "target": "leader",
                "data": {},
                "op_id": ["n1/x", 1],
            }
        ],
    )
    prepared = again.prepare_submit(bad)
    assert prepared.subs == [] and prepared.errors[0] is not None
    assert "controller only" in prepared.errors[0]["error"]


def test_an_old_tail_is_cut_where_the_next_leadership_began_however_many_came_after(
    tmp_path: Path,
) -> None:
    """A replica last followed leader epoch 3 and applied its tail; leaders of epochs 8 and
    then 11 followed (the second one on the same file, after a restart). When the replica
    joins epoch 11 the welcome says where the first leadership after epoch 3 began, and the
    replica cuts its file there (keeping a copy), then catches up by tail: no old event is
    merged into the new history (the review's defect: only the current leadership's start
    was told, which was past the old tail)."""
    first = EventLog.open(tmp_path / "one.db")
    one = ControllerCore(first)
    one.commit([one.internal(one.begin_epoch(3, "a", "no controller led"))], 1.0)
    for i in range(3):
        one.commit([one.internal([op(f"s{i}", i)])], 1.0)
    first.save_copy(tmp_path / "two.db")
    store = ReplicaFile(EventLog.open(tmp_path / "n1.db", role="replica"), node_id="n1")
    replica = ReplicaCore("n1", store)
    for i in range(5):  # the old leader's tail, which the next one never had
        one.commit([one.internal([op(f"old{i}", i)])], 1.0)
    reply = one.hello(across(replica.hello()), 1.0)
    replica.on_welcome(across(reply))
    while (ask := replica.next_fetch()) is not None:
        replica.on_fetch_reply(reply_of(one.fetch(across(ask), 1.0)))
    assert replica.epoch == 3 and replica.applied == one.head
    second = EventLog.open(tmp_path / "two.db")
    two = ControllerCore(second)
    two.commit([two.internal(two.begin_epoch(8, "b", "a's lease expired"))], 1.0)
    fork = two.epoch_start
    for i in range(4):
        two.commit([two.internal([op(f"new{i}", i)])], 1.0)
    second.close()
    again = ControllerCore(EventLog.open(tmp_path / "two.db"))  # b restarts and leads again
    assert again.leaderships == [(3, 1), (8, fork)]
    again.commit([again.internal(again.begin_epoch(11, "b", "it led before and came back"))], 1.0)
    again.commit([again.internal([op("later", 1)])], 1.0)
    assert again.fork_point(3) == fork and again.fork_point(8) == again.epoch_start
    reply = again.hello(across(replica.hello()), 1.0)
    assert isinstance(reply, Welcome) and reply.epoch_start == fork
    replica.on_welcome(across(reply))
    assert replica.applied == fork - 1 and store.elog.set_aside is not None
    while (ask := replica.next_fetch()) is not None:
        replica.on_fetch_reply(reply_of(again.fetch(across(ask), 1.0)))
    assert replica.applied == again.head
    assert digest(replica.state) == digest(again.elog.state)
    with EventLog.open(store.elog.set_aside, readonly=True) as aside:
        assert [e.op.target for e in aside.read(fork - 1)] == [f"old{i}" for i in range(5)]


def test_a_standby_catches_up_by_tail_however_far_behind(tmp_path: Path) -> None:
    """A standby asks for the tail, never a snapshot: once promoted, its log must hold the
    whole history (for `replay`). A node far behind gets the snapshot, as before."""
    elog = EventLog.open(tmp_path / "ctl.db", snapshot_every=10)
    core = ControllerCore(elog, tail_limit=20)
    for i in range(60):
        core.commit([core.internal([op(f"t{i}", i)])], 1.0)
    for fetch_mode, base in (("tail", 0), ("auto", 60)):
        name = f"{fetch_mode}.db"
        store = ReplicaFile(EventLog.open(tmp_path / name, role="replica"), node_id="n1")
        replica = ReplicaCore("standby:b" if fetch_mode == "tail" else "n1", store)
        replica.fetch_mode = fetch_mode
        replica.on_welcome(across(core.hello(across(replica.hello()), 1.0)))
        while (ask := replica.next_fetch()) is not None:
            replica.on_fetch_reply(reply_of(core.fetch(across(ask), 1.0)))
        assert replica.applied == core.head
        assert digest(replica.state) == digest(elog.state)
        assert store.elog.base_seq == base, fetch_mode
        store.elog.close()
