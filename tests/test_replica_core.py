"""`ReplicaCore` driven by plain messages: ordering, gaps, resync and command gating."""

from __future__ import annotations

from typing import Any

from eventlog import ActionType, Event, Operation, OperationType, OpId
from replicas import messages, protocol
from replicas.messages import Error, Ev, Events, Fetch, Hb, Ok, Welcome
from replicas.replica import MemoryStore, ReplicaCore

LOG = "log-1"


def ev(seq: int, target: str = "nextcue", ts: float = 1000.0, **data: Any) -> Event:
    if target in ("go", "stop", "load"):
        op = Operation(
            OperationType.COMMAND,
            ActionType.UPDATE,
            "controller",
            target,
            {"value": None, "address": f"/engine/command/{target}"},
        )
    else:
        op = Operation(
            OperationType.STATUS, ActionType.UPDATE, "n9", target, data or {"nextcue": f"c{seq}"}
        )
    return Event(seq, ts, LOG, op, OpId("n9", seq))


def frame(*events: Event, ts: float | None = None) -> Ev:
    """An ``ev`` frame as a node receives it: built and encoded like the controller's, decoded."""
    built = protocol.events_frame(LOG, list(events), ts if ts is not None else events[-1].ts)
    msg = messages.parse_frame(messages.encode(built), protocol.MAX_FRAME_BYTES)
    assert isinstance(msg, Ev)
    return msg


def events_reply(*events: Event, head: int) -> Events:
    """An ``events`` reply to a fetch, through bytes like the controller's."""
    built = protocol.events_frame(LOG, list(events), events[-1].ts)
    built.update(k="events", head=head)
    msg = messages.parse_reply(messages.encode(built), protocol.MAX_FRAME_BYTES)
    assert isinstance(msg, Events)
    return msg


def joined(head: int = 0, ts: float = 1000.0, now: float = 0.0) -> ReplicaCore:
    core = ReplicaCore("n1", MemoryStore())
    core.on_welcome(Welcome(LOG, head, ts), now)
    return core


def test_in_order_frames_apply_and_duplicates_are_ignored() -> None:
    core = joined()
    core.on_frame(frame(ev(1), ev(2)), 0.1)
    core.on_frame(frame(ev(1), ev(2)), 0.1)
    core.on_frame(frame(ev(3)), 0.1)
    assert core.applied == 3
    assert core.next_fetch() is None


def test_a_hole_is_fetched_never_skipped() -> None:
    core = joined()
    core.on_frame(frame(ev(1)), 0.1)
    core.on_frame(frame(ev(4), ev(5)), 0.1)
    assert core.applied == 1
    assert core.pending.keys() == {4, 5}
    fetch = core.next_fetch()
    assert fetch is not None and (fetch.after, fetch.limit) == (1, 2)
    assert core.next_fetch() is None, "one fetch in flight at a time"
    core.on_fetch_reply(events_reply(ev(2), ev(3), head=3), 0.2)
    assert core.applied == 5 and not core.pending


def test_history_never_fires_but_live_commands_do() -> None:
    core = joined(head=2)
    assert core.on_fetch_reply(events_reply(ev(1), ev(2, "stop"), head=2), 0.1) == []
    fired = core.on_frame(frame(ev(3, "stop", ts=1000.5)), 0.5)
    assert [e.seq for e in fired] == [3]


def test_a_command_from_a_frozen_past_does_not_fire() -> None:
    core = joined(ts=1000.0, now=0.0)
    # the node was frozen: this frame sat in its socket for 6 s of local time
    assert core.on_frame(frame(ev(1, "stop", ts=1000.2)), now=6.0) == []
    # a fresh one fires
    assert [e.seq for e in core.on_frame(frame(ev(2, "stop", ts=1006.0)), now=6.01)] == [2]


def test_a_refused_command_never_fires() -> None:
    core = joined()
    assert core.on_frame(frame(ev(1, "go")), 0.1) == []  # go while not armed
    assert core.state.commands["go"]["accepted"] is False


def test_a_different_log_means_a_full_resync() -> None:
    core = joined()
    core.on_frame(frame(ev(1), ev(2)), 0.1)
    core.on_frame(Hb("log-2", 7, 1001.0), 0.2)
    assert core.need_hello
    core.on_welcome(Welcome("log-2", 7, 1001.0), 0.3)
    assert core.applied == 0 and core.store.log_id == "log-2" and core.resyncs == 1
    assert core.next_fetch() == Fetch("n1", "log-2", 0, limit=7)


def test_heartbeat_reveals_missed_events() -> None:
    core = joined()
    core.on_frame(Hb(LOG, 3, 1000.1), 0.1)
    fetch = core.next_fetch()
    assert fetch is not None and fetch.after == 0 and fetch.limit == 3


def test_a_controller_clock_stepped_back_is_followed_at_the_next_heartbeat() -> None:
    core = joined(ts=1000.0, now=0.0)
    assert [e.seq for e in core.on_frame(frame(ev(1, "stop", ts=1001.0)), 1.0)] == [1]
    # NTP steps the controller's wall clock back 60 s; its next heartbeat reply says so
    core.on_clock(942.0, 2.0)
    fired = []
    for i in range(2, 6):
        fired += core.on_frame(frame(ev(i, "stop", ts=940.0 + i)), float(i))
    assert [e.seq for e in fired] == [2, 3, 4, 5], "live, fresh commands still fire"


def test_beat_replies_decide_when_to_say_hello_again() -> None:
    """The beat's answer is an input of the core: a new connection (hello rules), two beats
    without an answer, another log, or a controller behind this replica mean hello again; an
    answer moves the known head and the clock."""

    def applied_five() -> ReplicaCore:
        core = joined(head=5)
        core.on_frame(frame(*[ev(seq) for seq in range(1, 6)]), 0.1)
        assert core.applied == 5
        return core

    core = applied_five()
    beat = core.beat()
    core.on_beat_reply(beat, Ok(LOG, 9, 2000.0), 10.0)
    assert not core.need_hello and core.known_head == 9
    assert core.controller_now() == 2000.0
    core.on_beat_reply(beat, None, 11.0)
    assert not core.need_hello, "one missed beat is not yet a reason"
    core.on_beat_reply(beat, None, 12.0)
    assert core.need_hello
    replies: list[Ok | Error] = [
        messages.error("say hello", "hello-first"),
        messages.error("in use", "id-in-use"),
        Ok("another-log", 9, 2001.0),
        Ok(LOG, 4, 2001.0),  # behind what this replica holds
    ]
    for reply in replies:
        core = applied_five()
        core.on_beat_reply(core.beat(), reply, 20.0)
        assert core.need_hello, reply


def test_one_lying_heartbeat_head_costs_one_fetch_not_a_fetch_loop() -> None:
    """A heartbeat may claim any head (a stale or hostile one); the fetch reply's head is the
    controller's word and ends the hunt for events that do not exist."""
    core = joined()
    core.on_frame(Hb(LOG, messages.MAX_INT, 1000.0), 0.1)
    ask = core.next_fetch()
    assert ask is not None and ask.after == 0
    empty = messages.parse_reply(
        messages.encode(protocol.rows_reply(LOG, [], 0, 1000.0)), protocol.MAX_FRAME_BYTES
    )
    core.on_fetch_reply(empty, 0.2)
    assert core.next_fetch() is None and core.known_head == 0


def test_a_frame_with_values_no_replica_could_store_is_refused_whole() -> None:
    """An int over 64 bits in an event's data (only a lying controller sends one) would break
    the replica's file and its digest: the frame is refused before anything is applied."""
    good = protocol.events_frame(LOG, [ev(1)], 1000.0)
    bad = protocol.events_frame(LOG, [ev(2)], 1000.0)
    raw = messages.encode(bad).replace(b'"nextcue":"c2"', b'"nextcue":' + str(2**64).encode())
    core = joined()
    core.on_frame(messages.parse_frame(messages.encode(good), protocol.MAX_FRAME_BYTES), 0.1)
    wire = messages.parse_frame(raw, protocol.MAX_FRAME_BYTES)
    try:
        core.on_frame(wire, 0.1)
    except protocol.ProtocolError as exc:
        assert "bad event data" in str(exc)
    else:
        raise AssertionError("a frame with a 65-bit int was applied")
    assert core.applied == 1
    core.digest()  # the state is still whole


def test_seqs_and_op_ids_past_64_bits_are_refused_at_decoding() -> None:
    for field in (b'"first":1', b'"op_id":["n9",1]'):
        raw = messages.encode(protocol.events_frame(LOG, [ev(1)], 1000.0))
        huge = (
            field.replace(b"1", str(2**64).encode())
            if b"op_id" not in field
            else (b'"op_id":["n9",' + str(2**64).encode() + b"]")
        )
        try:
            messages.parse_frame(raw.replace(field, huge), protocol.MAX_FRAME_BYTES)
        except protocol.ProtocolError as exc:
            assert "<= 9223372036854775807" in str(exc), exc
        else:
            raise AssertionError(f"{huge!r} was decoded")
