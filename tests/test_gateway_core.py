"""The gateway's sans-I/O parts, driven by values only: OSC bytes, the view, the sessions."""

from __future__ import annotations

import ipaddress
import json
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from eventlog import CONTROLLER, Event, OperationType, State, fold
from gateway import osc
from gateway.dump import Dump as _Dump
from gateway.lockout import LOCKOUT
from gateway.outbox import MAX_QUEUE
from gateway.pacing import COALESCE_INTERVAL
from gateway.session import GatewayCore, Policy, Session, Submit, parse_networks
from gateway.view import DUMP_BEGIN, DUMP_END, SEQ, StatusView, addresses, as_sent
from tests.helpers import LOG_ID, events_from, make_event, wire
from tests.strategies import shows

# ---------------------------------------------------------------- builders


def msg(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return bytes(builder.build().dgram)


def bundle(*elements: bytes) -> bytes:
    body = b"".join(struct.pack(">i", len(e)) + e for e in elements)
    return b"#bundle\x00" + b"\x00" * 7 + b"\x01" + body


def read(frames: list[bytes]) -> list[tuple[str, tuple[Any, ...]]]:
    out = []
    for frame in frames:
        parsed = OscMessage(frame)
        out.append((parsed.address, tuple(parsed.params)))
    return out


def drain(session: Session) -> list[tuple[str, tuple[Any, ...]]]:
    out: list[tuple[str, tuple[Any, ...]]] = []
    while session.queue:
        out.extend(read(session.take(100)))
    return out


class Client:
    """What a well-behaved client keeps: the latest value per address; after a full dump,
    only what the dump listed."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.dump: dict[str, Any] | None = None

    def feed(self, items: list[tuple[str, tuple[Any, ...]]]) -> None:
        for address, args in items:
            if address == DUMP_BEGIN:
                self.dump = {}
            elif address == DUMP_END:
                assert self.dump is not None
                if args[2] == "full":
                    self.values = self.dump
                else:
                    self.values.update(self.dump)
                self.dump = None
            elif address.startswith("/engine/status/") and address != SEQ:
                (self.values if self.dump is None else self.dump)[address] = args[0]


def cmd(seq: int, target: str, value: Any = None, sender: str = CONTROLLER, **extra: Any) -> Event:
    data = {"value": value, "address": f"/engine/command/{target}", **extra}
    return make_event(seq, "command", "update", sender, target, data)


def core_with(*events: Event, policy: Policy | None = None) -> GatewayCore:
    state = fold(events)
    return GatewayCore(StatusView(state), LOG_ID, policy)


# ---------------------------------------------------------------- OSC


osc_values = (
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
    | st.integers(-(2**31), 2**31 - 1)
    | st.floats(width=32, allow_nan=False, allow_infinity=False)
    | st.booleans()
)


@given(st.lists(osc_values, max_size=5))
def test_encoded_messages_read_back_with_python_osc(values: list[Any]) -> None:
    frame = osc.encode("/engine/status/x", *values)
    parsed = OscMessage(frame)
    assert parsed.address == "/engine/status/x"
    assert list(parsed.params) == values
    assert osc.decode(frame) == [osc.OscMsg("/engine/status/x", tuple(values))]


def test_none_is_sent_as_an_empty_string_as_upstream_does() -> None:
    assert OscMessage(osc.encode("/a", None)).params == [""]


def test_a_bundle_yields_its_messages_in_order_even_nested() -> None:
    frame = bundle(msg("/a", 1), bundle(msg("/b", "x"), msg("/c")), msg("/d", 2.5))
    assert [m.address for m in osc.decode(frame)] == ["/a", "/b", "/c", "/d"]


def test_a_bundle_nested_a_thousand_deep_is_refused_without_recursion() -> None:
    frame = msg("/deep")
    for _ in range(1000):
        frame = bundle(frame)
    with pytest.raises(osc.OscError, match="nested deeper"):
        osc.decode(frame)


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (b"", "no '/' address"),
        (b"garbage!", "no '/' address"),
        (msg("/a", 1)[:-2], "multiple of 4"),
        (b"/a\x00\x00,q\x00\x00", "malformed"),
        (b"/a\x00\x00,i\x00\x00", "malformed"),
        (b"#bundle\x00\x00\x00", "truncated bundle"),
        (bundle(msg("/a"))[:16] + b"\x00\x00\x00\x7c" + msg("/a"), "does not fit"),
        (b"/a b\x00\x00\x00\x00,\x00\x00\x00", "spaces"),
    ],
)
def test_malformed_frames_are_refused_with_a_sentence(frame: bytes, words: str) -> None:
    with pytest.raises(osc.OscError, match=words):
        osc.decode(frame)


def test_oversized_frames_and_message_floods_are_refused() -> None:
    with pytest.raises(osc.OscError, match="limit"):
        osc.decode(b"/" + b"a" * osc.MAX_FRAME_BYTES)
    with pytest.raises(osc.OscError, match="more than"):
        osc.decode(bundle(*[msg("/a")] * (osc.MAX_MESSAGES + 1)))


def test_a_blob_of_almost_the_frame_limit_decodes() -> None:
    big = bytes(osc.MAX_FRAME_BYTES - 64)
    [found] = osc.decode(msg("/blob", big))
    assert found.args == (big,)


# ---------------------------------------------------------------- the view


@given(shows)
def test_the_view_after_every_event_equals_the_addresses_of_the_fold(ops: list[Any]) -> None:
    events = events_from(ops)
    view = StatusView(State())
    for event in events:
        view.apply(event)
        assert view.values == addresses(view.state)


@given(shows, st.data())
def test_changes_since_a_seq_bring_an_old_picture_up_to_date(ops: list[Any], data: Any) -> None:
    events = events_from(ops)
    view = StatusView(State())
    pictures = [dict(view.values)]
    for event in events:
        view.apply(event)
        pictures.append(dict(view.values))
    since = data.draw(st.integers(0, len(events)))
    changes = view.since(since)
    if changes is None:
        assert view.removed_at > since
        return
    picture = pictures[since]
    picture.update(changes)
    assert picture == view.values


def test_a_load_lists_every_cue_unplayed_and_enabled() -> None:
    core = core_with(cmd(1, "load", "show", cues=["c1", {"id": "c2", "enabled": False}]))
    values = core.view.values
    assert values["/engine/status/cue/c1"] == 0 and values["/engine/status/cue/c2"] == 0
    assert values["/engine/status/cue_enabled/c1"] == 1
    assert values["/engine/status/cue_enabled/c2"] == 0
    assert values["/engine/status/load"] == "show"
    assert not any("currentcue" in a for a in values)


def test_controller_broadcasts_are_addresses_but_cannot_override_the_log() -> None:
    events = [
        make_event(1, "status", "update", CONTROLLER, "/engine/status/custom", {"value": 3.5}),
        make_event(2, "status", "update", CONTROLLER, "/engine/status/running", {"value": "yes"}),
        make_event(3, "status", "update", "node-a", "/engine/status/other", {"value": 1}),
    ]
    values = StatusView(fold(events)).values
    assert values["/engine/status/custom"] == 3.5
    assert values["/engine/status/running"] == ""
    assert "/engine/status/other" not in values


# ---------------------------------------------------------------- sessions: dump and stream


def test_a_client_gets_one_message_per_address_then_dump_end_then_deltas() -> None:
    core = core_with(cmd(1, "load", "show", cues=["c1", "c2"]))
    session = core.connect("127.0.0.1")
    core.on_events([make_event(2, "cue", "add", "n1", "c1", {"id": "c1", "offset": "0"})], 0.0)
    got = drain(session)
    addresses_sent = [a for a, _ in got]
    end = addresses_sent.index(DUMP_END)
    assert addresses_sent[0] == DUMP_BEGIN
    assert len(set(addresses_sent[1:end])) == end - 1
    assert got[end][1] == (1, LOG_ID, "full")
    assert got[end + 1 :] == [("/engine/status/cue/c1", (1,))]


@given(shows, st.data())
def test_a_client_joining_at_any_point_ends_with_the_state(ops: list[Any], data: Any) -> None:
    events = events_from(ops)
    join = data.draw(st.integers(0, len(events)))
    core = GatewayCore(StatusView(State()), LOG_ID)
    core.on_events(events[:join], 0.0)
    session = core.connect("127.0.0.1")
    client = Client()
    now = 0.0
    for event in events[join:]:
        now += data.draw(st.sampled_from((0.0, 0.01, 0.3)))
        core.on_events([event], now)
        core.on_timer(now)
        if data.draw(st.booleans()):
            client.feed(drain(session))
    core.on_timer(now + 1.0)
    client.feed(drain(session))
    assert client.values == as_sent(addresses(core.view.state))


def test_resume_sends_only_what_changed_after_the_seq() -> None:
    core = core_with(cmd(1, "load", "show", cues=["c1", "c2"]))
    core.on_events([make_event(2, "cue", "add", "n1", "c2", {"id": "c2", "offset": "0"})], 0.0)
    got = drain(core.connect("127.0.0.1", since=1, log_id=LOG_ID))
    marker = (2, LOG_ID, "changes")
    assert got == [(DUMP_BEGIN, marker), ("/engine/status/cue/c2", (1,)), (DUMP_END, marker)]


@pytest.mark.parametrize(
    ("since", "log_id"), [(5, LOG_ID), (1, "another-log"), (-1, None)], ids=str
)
def test_resume_from_an_unknown_seq_or_log_gets_a_full_dump(since: int, log_id: Any) -> None:
    core = core_with(cmd(1, "load", "show", cues=["c1"]))
    got = drain(core.connect("127.0.0.1", since=since, log_id=log_id))
    assert got[-1] == (DUMP_END, (1, LOG_ID, "full"))
    assert ("/engine/status/cue/c1", (0,)) in got


def test_engine_sync_redumps_on_request() -> None:
    core = core_with(cmd(1, "load", "show", cues=["c1"]))
    session = core.connect("127.0.0.1")
    drain(session)
    core.on_frame(session, msg("/engine/sync", 1), 0.0)
    marker = (1, LOG_ID, "changes")
    assert drain(session) == [(DUMP_BEGIN, marker), (DUMP_END, marker)]
    core.on_frame(session, msg("/engine/sync", "x"), 0.0)
    assert drain(session)[0][0] == "/reply/engine/sync"


def test_progress_is_coalesced_per_cue_but_state_changes_go_at_once() -> None:
    core = core_with(cmd(1, "load", "show", cues=["c1"]))
    session = core.connect("127.0.0.1")
    drain(session)
    seq = 1

    def cue(action: str, data: dict[str, Any], now: float) -> None:
        nonlocal seq
        seq += 1
        core.on_events([make_event(seq, "cue", action, "n1", "c1", {"id": "c1", **data})], now)

    cue("add", {"offset": "0"}, 0.0)
    for i, pct in enumerate(range(2, 40)):
        cue("update", {"percentage": pct}, 0.001 * i)
    assert drain(session) == [("/engine/status/cue/c1", (1,))]
    assert core.next_deadline() == pytest.approx(COALESCE_INTERVAL)
    core.on_timer(COALESCE_INTERVAL)
    assert drain(session) == [("/engine/status/cue/c1", (39,))]
    cue("update", {"percentage": 50}, 0.3)
    cue("remove", {}, 0.31)
    assert drain(session) == [("/engine/status/cue/c1", (100,))]
    core.on_timer(10.0)
    assert drain(session) == []


def test_a_client_that_overflows_is_resynced_at_a_later_seq_then_dropped() -> None:
    core = core_with(cmd(1, "load", "show", cues=["c1"]))
    slow = core.connect("127.0.0.1")
    fast = core.connect("127.0.0.1")
    fast_view = Client()
    seq = 1
    for round_ in range(3):
        for _ in range(2):
            batch = []
            for _ in range(MAX_QUEUE // 2 + 1):
                seq += 1
                target = f"/engine/status/v{seq % 3}"
                value = {"value": seq}
                batch.append(make_event(seq, "status", "update", CONTROLLER, target, value))
            core.on_events(batch, float(round_))
            fast_view.feed(drain(fast))
        if round_ == 0:
            assert slow.dropped is None
            first = slow.queue[0]
            assert isinstance(first, _Dump) and first.seq > 1  # a fresh dump at a later seq
            assert slow.queued < MAX_QUEUE
    assert slow.dropped is not None and not slow.queue
    assert fast.dropped is None and core.stats["drops"] == 1
    assert fast_view.values == as_sent(addresses(core.view.state))


# ---------------------------------------------------------------- commands


def submits(core: GatewayCore, session: Session, frame: bytes) -> list[Submit]:
    return [e for e in core.on_frame(session, frame, 0.0) if isinstance(e, Submit)]


@pytest.mark.parametrize(
    ("frame", "target", "value"),
    [
        (msg("/engine/command/go"), "go", None),
        (msg("/engine/command/stop"), "stop", None),
        (msg("/engine/command/pause"), "pause", None),
        (msg("/engine/command/load", "show"), "load", "show"),
        (msg("/engine/command/setnextcue", "c2"), "setnextcue", "c2"),
        (msg("/engine/command/cue_enabled", "c1 0"), "cue_enabled", "c1 0"),
        (msg("/engine/command/cue_enabled", "c1", 1), "cue_enabled", "c1 1"),
        (msg("/n1/audio/mixer/0/master/volume", 0.5), "player_control", 0.5),
        (msg("/n1/audio/mixer/0/3/volume", 1), "player_control", 1),
        (msg("/n1/video/mixer/0/xscale", 0.25), "player_control", 0.25),
        (msg("/n1/video/mixer/0/1/corner1", 0.5, 0.25), "player_control", [0.5, 0.25]),
    ],
)
def test_ui_messages_become_command_events(frame: bytes, target: str, value: Any) -> None:
    core = core_with()
    session = core.connect("127.0.0.1")
    [submit] = submits(core, session, frame)
    op = submit.op
    assert op.type is OperationType.COMMAND and op.target == target
    assert op.sender == session.sender and op.sender.startswith("ui:")
    assert op.data is not None and op.data["value"] == value
    assert op.data["address"] == OscMessage(frame).address


@pytest.mark.parametrize(
    "frame",
    [
        msg("/engine/command/load", 3),
        msg("/engine/command/load"),
        msg("/engine/command/setnextcue", 1.5),
        msg("/engine/command/cue_enabled", "c1 maybe"),
        msg("/engine/command/cue_enabled", "c1", 7),
        msg("/engine/command/go", "a", "b"),
        msg("/n1/audio/mixer/0/1/volume", "loud"),
        msg("/n1/audio/mixer/0/1/volume"),
        msg("/n1/audio/mixer/0/1/volume", 1.0, 2.0),
        msg("/n1/video/mixer/0/1/corner1", 1.0, 2.0, 3.0),
        msg("/n1/video/mixer/0/xscale", float("nan")),
        msg("/n1/audio/mixer/0/1/gain", 1.0),
    ],
)
def test_wrong_argument_types_get_an_error_reply_and_append_nothing(frame: bytes) -> None:
    core = core_with()
    session = core.connect("127.0.0.1")
    drain(session)
    assert submits(core, session, frame) == []
    [(address, args)] = drain(session)
    assert address == "/reply" + OscMessage(frame).address
    reply = json.loads(args[0])
    assert reply["status"] == "error" and reply["error"]


def test_a_bundle_of_commands_is_handled_at_once_in_order() -> None:
    core = core_with()
    session = core.connect("127.0.0.1")
    frame = bundle(msg("/engine/command/stop"), msg("/engine/command/load", "x"))
    assert [s.op.target for s in submits(core, session, frame)] == ["stop", "load"]


def test_command_outcomes_are_replied_with_the_reducers_reason() -> None:
    core = core_with()
    session = core.connect("127.0.0.1")
    drain(session)
    [submit] = submits(core, session, msg("/engine/command/go"))
    core.on_events([cmd(1, "go", sender=session.sender)], 0.0)
    core.command_done(submit, 1, "go refused: not armed")
    replies = [json.loads(a[0]) for addr, a in drain(session) if addr.startswith("/reply")]
    assert replies == [{"status": "error", "seq": 1, "error": "go refused: not armed"}]


# ---------------------------------------------------------------- who may control


def test_loopback_and_allowed_networks_control_others_are_denied() -> None:
    policy = Policy(allow=parse_networks("10.1.0.0/16"))
    assert policy.controls("127.0.0.1") and policy.controls("::1")
    assert policy.controls("10.1.2.3") and policy.controls("::ffff:10.1.2.3")
    assert not policy.controls("10.2.0.1") and not policy.controls("not-an-ip")
    core = core_with(policy=policy)
    outsider = core.connect("192.168.1.9")
    drain(outsider)
    assert submits(core, outsider, msg("/engine/command/go")) == []
    [(address, args)] = drain(outsider)
    assert address == "/reply/engine/command/go"
    assert json.loads(args[0])["status"] == "denied"


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        parse_networks("10.0.0.0/8,10.0.0.300")
    assert parse_networks("10.0.0.7") == (ipaddress.ip_network("10.0.0.7/32"),)


def test_the_passcode_gives_control_and_five_wrong_ones_lock_the_address_out() -> None:
    core = core_with(policy=Policy(passcode="s3cret", private=True))
    session = core.connect("192.168.1.9")
    assert not session.queue  # private: no status before /connect
    for _ in range(5):
        core.on_frame(session, msg("/connect", "guess"), 0.0)
    assert [a for _, a in drain(session)] == [("badpass",)] * 5
    core.on_frame(session, msg("/connect", "s3cret"), 1.0)
    assert drain(session)[0][1][0] == "badpass"  # locked, even with the right passcode
    assert not session.control
    core.on_frame(session, msg("/connect", "s3cret"), LOCKOUT + 1.0)
    got = drain(session)
    assert got[0] == ("/reply/connect", ("ok",))
    assert got[-1][0] == DUMP_END  # now it sees the status
    assert session.control and submits(core, session, msg("/engine/command/stop"))


def test_read_only_mode_denies_every_command() -> None:
    core = core_with()
    core.read_only = "this is a replay"
    session = core.connect("127.0.0.1")
    drain(session)
    assert submits(core, session, msg("/engine/command/stop")) == []
    reply = json.loads(drain(session)[0][1][0])
    assert reply == {"status": "denied", "seq": None, "error": "this is a replay"}


def test_a_wire_example_is_valid() -> None:
    assert wire("status", "update", "n", "t")["type"] == "status"


def test_a_client_flooding_frames_is_dropped_and_a_fader_drag_is_not() -> None:
    core = core_with()
    fader = core.connect("127.0.0.1")
    flood = core.connect("127.0.0.1")
    now = 100.0
    for _ in range(600):  # ten seconds of a fader dragged at 60 frames/s
        now += 1 / 60
        assert core.admit_frame(fader, now)
    admitted = 0
    while core.admit_frame(flood, now) and admitted < 100_000:
        admitted += 1
    assert 1000 < admitted < 8000 and flood.dropped and "flooding" in flood.dropped
    assert fader.dropped is None
    heavy = core.connect("127.0.0.1")
    frames = 0
    while core.admit_frame(heavy, now, 87_000) and frames < 1000:
        frames += 1
    assert frames < 20  # big frames cost more: decoding grows with their bytes


def test_a_client_holding_a_value_is_told_the_seq_once_it_has_it() -> None:
    core = core_with(cmd(1, "load", "show", cues=["c1"]))
    session = core.connect("127.0.0.1")
    drain(session)
    core.on_events([make_event(2, "cue", "add", "n1", "c1", {"id": "c1", "offset": "0"})], 0.0)
    core.on_events([make_event(3, "cue", "update", "n1", "c1", {"percentage": 50})], 0.01)
    drain(session)
    assert core.tick_seq() is False  # 50 % is held: resuming from seq 3 would skip it
    core.on_timer(0.3)
    assert drain(session) == [("/engine/status/cue/c1", (50,))]
    assert core.tick_seq() is True
    assert drain(session) == [(SEQ, (3,))]
    assert core.tick_seq() is False  # told once
