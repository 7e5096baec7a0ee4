"""No peer may speak for another: op ids, sender and connection are bound at hello.

Any peer that reaches the controller can read a node's op-id origin from the log (every
event carries it). Before this rule, it could submit ops under that origin: the node's own
next ops were then taken for retries of the impostor's and never appended. Here a real node
runs beside raw pynng impostors that try every way in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pynng
import pytest

from eventlog import EventLog
from replicas.compat import NodeCommunications
from replicas.messages import Beat, Error, Hello, Ok, Reply, Submit, Welcome, encode
from replicas.protocol import origin_of
from replicas.sequencer import ControllerCore
from tests.cluster import (
    ControllerThread,
    controller_thread,
    converged,
    ipc_address,
    nodes,
    wait_for,
)
from tests.helpers import decoded


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, ControllerThread, NodeCommunications]]:
    addr = ipc_address(tmp_path)
    with (
        controller_thread(tmp_path / "ctl.db", addr) as ctl,
        nodes(addr, ["n1"], request_timeout=5.0) as (n1,),
    ):
        assert n1.wait_synced(10)
        core = ctl.controller.core
        assert core is not None
        # n1 holds its id once it beats
        wait_for("n1 online", lambda: bool(core.nodes.get("n1") and core.nodes["n1"].instance))
        # and its node_joined (the log's first event) is committed and applied: heads the
        # tests read stay put
        wait_for("n1 in step", lambda: core.head >= 1 and converged(addr, ["n1"]))
        yield addr, ctl, n1


class Peer:
    """A raw REQ connection speaking the protocol by hand."""

    def __init__(self, addr: str) -> None:
        self.sock = pynng.Req0(dial=addr, recv_timeout=5000, send_timeout=5000)

    def ask(self, msg: dict[str, Any] | bytes) -> dict[str, Any]:
        self.sock.send(msg if isinstance(msg, bytes) else orjson.dumps(msg))
        reply: dict[str, Any] = orjson.loads(self.sock.recv())
        return reply

    def close(self) -> None:
        self.sock.close()


def hello(node: str, secret: str) -> dict[str, Any]:
    """A hello that proves its origin (`origin_of(node, secret)`)."""
    return {"k": "hello", "node": node, "inst": origin_of(node, secret), "secret": secret}


def rule(reply: Reply) -> str:
    """The rule of an ``error`` reply (any other reply fails the test)."""
    assert isinstance(reply, Error), reply
    return reply.rule


def op(sender: str, origin: str, n: int, cue: str) -> dict[str, Any]:
    return {
        "type": "cue",
        "action": "add",
        "sender": sender,
        "target": cue,
        "data": {"id": cue, "offset": "0"},
        "op_id": [origin, n],
    }


def read_origin(n1: NodeCommunications) -> str:
    """What any peer can read: the node's origin, from the op ids in the log."""
    seq = n1.add_cue("own-0", "0").result(10)
    with pynng.Req0(dial=n1.replica.controller, recv_timeout=5000) as sock:
        sock.send(orjson.dumps({"k": "fetch", "node": "reader", "log": "", "after": seq - 1}))
        reply = orjson.loads(sock.recv())
    if reply.get("k") != "events":  # another log id: ask again with the right one
        with pynng.Req0(dial=n1.replica.controller, recv_timeout=5000) as sock:
            log_id = n1.replica.core.controller_log if n1.replica.core else ""
            ask = {"k": "fetch", "node": "reader", "log": log_id, "after": seq - 1}
            sock.send(orjson.dumps(ask))
            reply = orjson.loads(sock.recv())
    origin: str = reply["events"][0]["op_id"][0]
    assert origin.startswith("n1/")
    return origin


def test_an_impostor_with_the_nodes_origin_is_refused_and_the_node_loses_nothing(
    live: tuple[str, ControllerThread, NodeCommunications], caplog: pytest.LogCaptureFixture
) -> None:
    addr, ctl, n1 = live
    origin = read_origin(n1)
    core = ctl.controller.core
    assert core is not None
    head = core.head
    impostor = Peer(addr)
    try:
        # the attack of the issue: the node's next ten op ids, with no hello
        ops = [op("n1", origin, k, f"evil{k}") for k in range(2, 12)]
        raw = {"k": "submit", "node": "n1", "ops": ops}
        reply = impostor.ask(raw)
        assert reply["k"] == "error" and reply["rule"] == "hello-first", reply
        # a hello as n1 with the node's own origin: it cannot prove it (no secret, or a guess)
        reply = impostor.ask({"k": "hello", "node": "n1", "inst": origin})
        assert reply["k"] == "error" and reply["rule"] == "unproven", reply
        reply = impostor.ask({"k": "hello", "node": "n1", "inst": origin, "secret": "guess"})
        assert reply["k"] == "error" and reply["rule"] == "unproven", reply
        # a hello as n1 with an origin of its own: n1 is held by a live process
        reply = impostor.ask(hello("n1", "evil"))
        assert reply["k"] == "error" and reply["rule"] == "id-in-use", reply
        assert impostor.ask(raw)["rule"] == "hello-first"
        # a hello as itself, then the node's op ids, or the node as sender
        assert impostor.ask(hello("evil", "1"))["k"] == "welcome"
        evil = origin_of("evil", "1")
        reply = impostor.ask({**raw, "node": "evil"})
        assert reply["k"] == "error" and reply["rule"] == "not-yours", reply
        reply = impostor.ask(raw)  # as n1, on a connection that said hello as evil
        assert reply["k"] == "error" and reply["rule"] == "not-yours", reply
        chained = {
            "k": "submit",
            "node": "evil",
            "chain": {"origin": origin, "prev": 1, "last": 2, "head": True},
            "ops": [op("evil", evil, 1, "x")],
        }
        assert impostor.ask(chained)["rule"] == "not-yours"
        reply = impostor.ask({"k": "submit", "node": "evil", "ops": [op("n1", evil, 1, "e")]})
        assert reply["k"] == "acks" and reply["results"][0]["rule"] == "not-yours", reply
        # beats for n1 from this connection are refused too (it would take over n1's liveness)
        beat = {"k": "beat", "node": "n1", "inst": origin, "applied": 0, "digest": ""}
        assert impostor.ask(beat)["rule"] == "not-yours"
    finally:
        impostor.close()
    assert core.head == head, "an impostor's op was appended"
    # the node's next ten ops are its own, each at the seq it was told
    seqs = [n1.add_cue(f"own-{k}", "0").result(10) for k in range(1, 11)]
    with EventLog.open(ctl.controller.db, readonly=True) as elog:
        events = {e.seq: e for e in elog.iter_events() if e.seq > head}
    assert [events[s].op.target for s in seqs] == [f"own-{k}" for k in range(1, 11)]
    assert all(events[s].op.sender == "n1" and events[s].op_id.origin == origin for s in seqs)
    assert not [e for e in events.values() if e.op.target.startswith("evil")]
    assert "does not prove origin" in caplog.text and "claims node id n1" in caplog.text


def test_a_replayed_hello_opens_no_session(
    live: tuple[str, ControllerThread, NodeCommunications],
) -> None:
    """The node's own hello, byte for byte, from another connection: refused while the node's
    connection lives, and a submit after it is still refused."""
    addr, ctl, n1 = live
    core = n1.replica.core
    assert core is not None
    captured = encode(core.hello())
    head = ctl.controller.core.head if ctl.controller.core else 0
    replayer = Peer(addr)
    try:
        reply = replayer.ask(captured)
        assert reply["k"] == "error" and reply["rule"] == "origin-in-use", reply
        origin = core.instance
        submit = {"k": "submit", "node": "n1", "ops": [op("n1", origin, 99, "replayed")]}
        assert replayer.ask(submit)["rule"] == "hello-first"
    finally:
        replayer.close()
    assert ctl.controller.core is not None and ctl.controller.core.head == head
    assert n1.add_cue("own", "0").result(10) == head + 1  # the node's session is untouched


def test_an_origin_moves_to_a_new_connection_once_the_old_one_closed(tmp_path: Path) -> None:
    """A node that reconnects (same process, new connection) gets its origin back."""
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr) as ctl:
        first = Peer(addr)
        assert first.ask(hello("x", "1"))["k"] == "welcome"
        second = Peer(addr)  # the same process on a new connection (or a replay of its hello)
        assert second.ask(hello("x", "1"))["rule"] == "origin-in-use"
        first.close()

        def welcomed() -> bool:
            return bool(second.ask(hello("x", "1"))["k"] == "welcome")

        wait_for("the origin free again", welcomed, 10)
        reply = second.ask(
            {"k": "submit", "node": "x", "ops": [op("x", origin_of("x", "1"), 1, "c")]}
        )
        assert reply["k"] == "acks" and "seq" in reply["results"][0], reply
        second.close()
        core = ctl.controller.core
        assert core is not None
        wait_for("sessions closed", lambda: not core.sessions, 10)


@pytest.mark.parametrize(
    "inst",
    ["", "x", "x/", "y/1", "xy/1", "x/" + "a" * 127, 7],
    ids=["empty", "bare", "no-unique", "other-node", "prefix-only", "too-long", "not-a-string"],
)
def test_a_hello_with_a_bad_inst_is_refused(inst: Any) -> None:
    core = ControllerCore(EventLog.open(":memory:"))
    msg = {"k": "hello", "node": "x", "inst": inst, "secret": "s"}
    if inst == "":  # no inst: a reader's hello, no session
        assert isinstance(core.hello(decoded(Hello, msg), 1.0, 1.0, pipe=5), Welcome)
        assert core.sessions == {}
        return
    # refused where it is decoded (not a string) or by the core (the origin rule)
    with pytest.raises(Exception, match="inst"):
        core.hello(decoded(Hello, msg), 1.0, 1.0, pipe=5)
    assert core.sessions == {}


def test_a_silent_holder_gives_its_origin_up_after_the_timeout() -> None:
    """A connection that went dead without closing (a cable pulled) cannot lock its node out."""
    core = ControllerCore(EventLog.open(":memory:"), node_timeout=3.0)
    msg = decoded(Hello, hello("x", "1"))
    assert isinstance(core.hello(msg, 0.0, 10.0, pipe=1), Welcome)
    assert rule(core.hello(msg, 0.0, 12.0, pipe=2)) == "origin-in-use"
    assert isinstance(core.hello(msg, 0.0, 13.5, pipe=2), Welcome)
    assert set(core.sessions) == {2}
    # the old connection is no longer a session: it must say hello again (and is refused)
    with pytest.raises(Exception, match="say hello"):
        core.prepare_submit(Submit("x", []), pipe=1, mono=14.0)
    assert rule(core.hello(msg, 0.0, 14.0, pipe=1)) == "origin-in-use"
    core.pipe_closed(2)
    assert core.sessions == {} and isinstance(core.hello(msg, 0.0, 14.1, pipe=3), Welcome)


def test_a_session_opened_before_the_node_beat_loses_the_id_to_the_beating_process() -> None:
    """An impostor that said hello as x first (before x's first beat) cannot submit as x once
    the real process beats: the id belongs to the process that holds it by its beats."""
    core = ControllerCore(EventLog.open(":memory:"))
    assert isinstance(core.hello(decoded(Hello, hello("x", "evil")), 0.0, 1.0, pipe=1), Welcome)
    assert isinstance(core.hello(decoded(Hello, hello("x", "real")), 0.0, 1.0, pipe=2), Welcome)
    beat = Beat("x", 0, "", origin_of("x", "real"))
    reply, joined = core.beat(beat, 0.0, 1.1, pipe=2)
    assert isinstance(reply, Ok) and joined
    submit = Submit("x", [op("x", origin_of("x", "evil"), 1, "c")])
    with pytest.raises(Exception, match="in use by another live process"):
        core.prepare_submit(submit, pipe=1, mono=1.2)
    real = Submit("x", [op("x", origin_of("x", "real"), 1, "c")])
    assert core.prepare_submit(real, pipe=2, mono=1.2).errors == [None]
