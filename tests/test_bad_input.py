"""Hostile and malformed input sent to a live controller by a raw pynng socket.

Every bad request gets a clear error reply (REQ/REP always allows one) and a log line, nothing
is appended, and the controller keeps serving everyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pynng
import pytest

from eventlog import EventLog
from replicas import protocol
from replicas.protocol import origin_of
from tests.cluster import (
    ControllerThread,
    controller_thread,
    converged,
    ipc_address,
    nodes,
    wait_for,
)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, ControllerThread]]:
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr) as ctl:
        yield addr, ctl


#: the session `ask` opens: node n1, whose ops carry this origin
#: n1's op-id origin here, and the secret that proves it at hello
ORIGIN = origin_of("n1", "test")
HELLO = {"k": "hello", "node": "n1", "inst": ORIGIN, "secret": "test"}


def say_hello(sock: pynng.Req0) -> None:
    def welcomed() -> bool:
        sock.send(orjson.dumps(HELLO))
        return bool(orjson.loads(sock.recv()).get("k") == "welcome")

    wait_for("a hello as n1", welcomed, 5)


def ask(addr: str, raw: bytes, hello: bool = True) -> dict[str, Any]:
    """Send `raw` on a new connection, after a hello as n1 (a submit needs one). The last
    connection may still hold the origin for a moment after it closed: the hello is retried."""
    with pynng.Req0(dial=addr, recv_timeout=5000, send_timeout=5000) as sock:
        if hello:
            say_hello(sock)
        sock.send(raw)
        reply: dict[str, Any] = orjson.loads(sock.recv())
        return reply


def good_op(n: int) -> dict[str, Any]:
    return {
        "type": "status",
        "action": "update",
        "sender": "n1",
        "target": "nextcue",
        "data": {"nextcue": f"c{n}"},
        "op_id": [ORIGIN, n],
    }


def head(ctl: ControllerThread) -> int:
    assert ctl.controller.core is not None
    return ctl.controller.core.head


#: each with a part of the error reply that says what is wrong (and where, from msgspec's
#: decoder: ``$.field``); the node-id rule and the op-count cap say it in their own words
BAD_REQUESTS = [
    (b"\x00\xff\xfe garbage", "JSON is malformed"),
    (b"{not json", "JSON is malformed"),
    (b"[1, 2, 3]", "Expected `object`, got `array`"),
    (b'"just a string"', "Expected `object`, got `str`"),
    (b'{"no_kind": 1}', "missing required field `k`"),
    (b'{"k": "launch_missiles"}', "Invalid value 'launch_missiles' - at `$.k`"),
    (b'{"k": 7}', "at `$.k`"),
    (b'{"k": "submit"}', "missing required field `node`"),
    (b'{"k": "submit", "node": "n1", "ops": "nope"}', "Expected `array`, got `str` - at `$.ops`"),
    (b'{"k": "submit", "node": "", "ops": []}', "a node id is 1-64"),
    (b'{"k": "submit", "node": "a\\u0000b", "ops": []}', "a node id is 1-64"),
    (b'{"k": "submit", "node": "~tilde", "ops": []}', "starting with a letter"),
    (b'{"k": "submit", "node": "a/b", "ops": []}', "a node id is 1-64"),
    (b'{"k": "beat", "node": "controller", "applied": 0, "digest": ""}', "reserved"),
    (
        b'{"k": "fetch", "node": "n1", "log": "x", "after": -5}',
        "Expected `int` >= 0 - at `$.after`",
    ),
    (
        b'{"k": "fetch", "node": "n1", "log": 3, "after": 0}',
        "Expected `str`, got `int` - at `$.log`",
    ),
    (b'{"k": "beat", "node": "n1", "applied": "ten", "digest": "d"}', "got `str` - at `$.applied`"),
    (b'{"k": "hello", "node": ["n1"]}', "Expected `str`, got `array` - at `$.node`"),
    (b'{"k": "fetch", "node": "n1", "log": "x", "after": 1e999}', "Number out of range"),
    # not valid JSON anywhere in the message, even in a field no kind has
    (b'{"k": "submit", "node": "n1", "ops": [], "x": 1e999}', "bad message"),
    # past 64 bits: what a controller builds from it (a node_joined) could never be stored
    (b'{"k": "hello", "node": "n1", "after": 18446744073709551616}', "<= 9223372036854775807"),
    (b'{"k": "beat", "node": "n1", "applied": 9223372036854775808, "digest": "d"}', "<="),
    (b'{"k": "submit", "node": "n1", "ops": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deep"),
    ('"\udcff"'.encode("utf-8", "surrogatepass"), "Expected `object`, got `str`"),
    ('{"k": "hello", "node": "\udcff"}'.encode("utf-8", "surrogatepass"), "Invalid UTF-8"),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_REQUESTS)
def test_bad_request_gets_an_error_reply_and_appends_nothing(
    live: tuple[str, ControllerThread],
    raw: bytes,
    expected: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    addr, ctl = live
    caplog.set_level(logging.WARNING, logger="cuelog.controller")
    before = head(ctl)
    reply = ask(addr, raw)
    assert reply["k"] == "error"
    assert expected in reply["error"]
    assert head(ctl) == before
    assert "bad request" in caplog.text
    # and it keeps serving
    assert ask(addr, b'{"k": "status"}')["k"] == "status"


def test_invalid_operations_are_refused_one_by_one(live: tuple[str, ControllerThread]) -> None:
    addr, ctl = live
    bad_ops: list[Any] = [
        {
            "type": "bogus",
            "action": "update",
            "sender": "n1",
            "target": "t",
            "data": None,
            "op_id": [ORIGIN, 100],
        },
        {
            "type": "cue",
            "action": "update",
            "sender": "n1",
            "target": "c",
            "data": {"percentage": 1e308 * 10 if False else 500},
            "op_id": [ORIGIN, 101],
        },
        {
            "type": "status",
            "action": "update",
            "sender": "n1",
            "target": "node_joined",
            "data": {"node": "evil"},
            "op_id": [ORIGIN, 102],
        },
        {
            "type": "status",
            "action": "update",
            "sender": "n1",
            "target": "nextcue",
            "data": {"nextcue": "x"},
        },
        "not an object",
        {
            "type": "command",
            "action": "add",
            "sender": "n1",
            "target": "go",
            "data": None,
            "op_id": [ORIGIN, 103],
        },
    ]
    ops = [good_op(1), *bad_ops, good_op(2)]
    reply = ask(addr, orjson.dumps({"k": "submit", "node": "n1", "ops": ops}))
    assert reply["k"] == "acks"
    results = reply["results"]
    assert [r.get("seq") for r in results] == [1, None, None, None, None, None, None, 2]
    rules = [r.get("rule") for r in results[1:-1]]
    assert rules == [
        "unknown-type",
        "out-of-range",
        "reserved",
        "missing",
        "not-an-object",
        "action-not-allowed",
    ]
    assert head(ctl) == 2


def test_retried_submit_is_not_appended_twice(live: tuple[str, ControllerThread]) -> None:
    addr, ctl = live
    msg = orjson.dumps({"k": "submit", "node": "n1", "ops": [good_op(1), good_op(2)]})
    first = ask(addr, msg)
    again = ask(addr, msg)
    assert first["results"] == again["results"] == [{"seq": 1}, {"seq": 2}]
    assert head(ctl) == 2


def test_oversized_request_is_refused_with_a_reply(live: tuple[str, ControllerThread]) -> None:
    addr, ctl = live
    huge = b'{"k": "submit", "node": "n1", "ops": ["' + b"x" * (protocol.MAX_REQUEST_BYTES + 10)
    reply = ask(addr, huge + b'"]}')
    assert reply["k"] == "error" and "over the" in reply["error"]
    too_many = [good_op(i + 1) for i in range(protocol.MAX_SUBMIT_OPS + 1)]
    reply = ask(addr, orjson.dumps({"k": "submit", "node": "n1", "ops": too_many}))
    assert reply["k"] == "error" and "at most" in reply["error"]
    big_data = good_op(1)
    big_data["data"] = {"nextcue": "x" * 70_000}
    reply = ask(addr, orjson.dumps({"k": "submit", "node": "n1", "ops": [big_data]}))
    assert reply["results"][0]["rule"] == "too-large"
    assert head(ctl) == 0


def test_frame_beyond_the_nng_limit_is_dropped_and_the_controller_keeps_serving(
    live: tuple[str, ControllerThread],
) -> None:
    addr, ctl = live
    with pynng.Req0(dial=addr, recv_timeout=1500, send_timeout=5000) as sock:
        sock.send(b"x" * (protocol.NNG_MAX_BYTES + 1024))
        with pytest.raises(pynng.Timeout):
            sock.recv()
    assert ask(addr, b'{"k": "status"}')["head_seq"] == head(ctl) == 0


def test_foreign_log_hello_and_fetch(live: tuple[str, ControllerThread]) -> None:
    addr, ctl = live
    welcome = ask(addr, b'{"k": "hello", "node": "n9", "log": "some-other-log", "after": 40}')
    assert welcome["k"] == "welcome" and welcome["resync"] is True
    assert welcome["log"] == ctl.controller.core.log_id  # type: ignore[union-attr]
    refused = ask(addr, b'{"k": "fetch", "node": "n9", "log": "some-other-log", "after": 40}')
    assert refused["k"] == "error" and refused["rule"] == "foreign-log"


def test_fetch_past_the_head_is_refused(live: tuple[str, ControllerThread]) -> None:
    addr, ctl = live
    log_id = ctl.controller.core.log_id  # type: ignore[union-attr]
    reply = ask(addr, orjson.dumps({"k": "fetch", "node": "n1", "log": log_id, "after": 99}))
    assert reply["rule"] == "ahead-of-head"


def test_nodes_keep_converging_while_garbage_flows(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr), nodes(addr, ["a", "b"]) as (a, b):
        futures = []
        for i in range(200):
            futures.append(a.update_nextcue(f"c{i}"))
            ask(addr, BAD_REQUESTS[i % len(BAD_REQUESTS)][0])
        assert len({f.result(10) for f in futures}) == 200
        wait_for("converged", lambda: converged(addr, ["a", "b"]))
        assert a.digest == b.digest


def test_a_garbage_replica_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "node.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(Exception, match="not a SQLite database"):
        EventLog.open(bad)


def test_a_submit_that_overtakes_its_predecessor_waits_for_it(
    live: tuple[str, ControllerThread],
) -> None:
    addr, ctl = live

    def submit(first: int, count: int, head: bool) -> bytes:
        ops = [good_op(n) for n in range(first, first + count)]
        chain = {"origin": ORIGIN, "prev": first - 1, "last": first + count - 1, "head": head}
        return orjson.dumps({"k": "submit", "node": "n1", "chain": chain, "ops": ops})

    # nothing before #10 was ever admitted: it waits, then is sent back to be resent in order
    reply = ask(addr, submit(10, 2, head=False))
    assert reply["k"] == "error" and reply["rule"] == "out-of-order"
    assert head(ctl) == 0
    # sent in order from the head, both land, in order
    with pynng.Req0(dial=addr, recv_timeout=5000) as sock:
        say_hello(sock)
        later = sock.new_context()
        earlier = sock.new_context()
        later.send(submit(3, 2, head=False))  # overtakes
        earlier.send(submit(1, 2, head=True))
        first = orjson.loads(earlier.recv())
        second = orjson.loads(later.recv())
        later.close()
        earlier.close()
    assert [r["seq"] for r in first["results"]] == [1, 2]
    assert [r["seq"] for r in second["results"]] == [3, 4]
