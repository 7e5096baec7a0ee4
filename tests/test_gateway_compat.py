"""The seed's `ControllerCommunications` on real sockets: a real controller (SQLite file, NNG),
its websockets gateway on port 0, real python-osc clients, real node replicas, a real editor
(NNG Req0 over IPC) and real nodeconf / hwdiscovery services (NNG Rep0 over IPC).

Pattern matching and broadcast checks are also tested without sockets; the pattern compiler
is checked against an independent backtracking matcher written here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pynng
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog import CuelogError, Event, EventLog, OperationType
from gateway import ControllerCommunications
from gateway.commands import LOCAL_COMMAND, broadcast_operation, built_in
from gateway.editor import EditorChannelError, EditorContext
from gateway.osc import OscMsg
from gateway.patterns import OscRouter, compile_pattern
from gateway.services import ServiceError, ServiceTimeout
from gateway.session import Session
from tests.cluster import ipc_address, nodes, wait_for
from tests.gateway_rig import OscClient, open_client

# --------------------------------------------------------------------------- helpers


@contextmanager
def running(
    tmp_path: Path,
    editor_callback: Callable[..., Any] | None = None,
    node_callbacks: dict[OperationType, Callable[..., Any]] | None = None,
    **options: Any,
) -> Iterator[ControllerCommunications]:
    comms = ControllerCommunications(
        ipc_address(tmp_path),
        editor_callback or (lambda message: {"value": "ok"}),
        node_callbacks,
        {"port": 0, "db": str(tmp_path / "ctl.db")},
        editor_address=f"ipc://{tmp_path}/editor.ipc",
        nodeconf_address=f"ipc://{tmp_path}/nodeconf.ipc",
        hwdiscovery_address=f"ipc://{tmp_path}/hwdiscovery.ipc",
        **options,
    )
    comms.start()
    try:
        assert comms.wait_ready(10), "the comms did not come up"
        yield comms
    finally:
        comms.stop()
        comms.join(10)
        assert not comms.is_alive(), "the comms thread did not stop"


def url(comms: ControllerCommunications) -> str:
    return f"ws://127.0.0.1:{comms.ws_port}/realtime"


def events(tmp_path: Path) -> list[Event]:
    with EventLog.open(tmp_path / "ctl.db", readonly=True) as elog:
        return list(elog.iter_events())


async def connected(comms: ControllerCommunications) -> OscClient:
    client = await open_client(url(comms))
    await client.until("the dump", lambda: bool(client.dump_ends))
    return client


class Calls:
    """Records calls from any thread; waits on a condition with a deadline."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, *args: Any) -> None:
        with self.lock:
            self.items.append(args[0] if len(args) == 1 else args)

    async def until(self, what: str, count: int, timeout: float = 10.0) -> None:
        await asyncio.to_thread(wait_for, what, lambda: len(self.items) >= count, timeout)


def _rep_server(address: str, answer: Callable[[bytes], bytes | None]) -> pynng.Rep0:
    """A nodeconf / hwdiscovery stand-in: one Rep0 that answers on a thread."""
    sock = pynng.Rep0(listen=address, recv_timeout=100)

    def serve() -> None:
        while True:
            try:
                request = sock.recv()
            except pynng.Timeout:
                continue
            except pynng.NNGException:
                return
            reply = answer(request)
            if reply is not None:
                try:
                    sock.send(reply)
                except pynng.NNGException:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return sock


# --------------------------------------------------------------------------- OSC patterns


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("/a/*", ["/a/", "/a/xyz"], ["/a", "/a/x/y", "/b/x"]),
        ("/a/*/c", ["/a/b/c", "/a//c"], ["/a/b/x/c"]),
        ("/a/x*y", ["/a/xy", "/a/x123y"], ["/a/x/y"]),
        ("/a?c", ["/abc", "/a-c"], ["/ac", "/a/c", "/abbc"]),
        ("/[abc]", ["/a", "/c"], ["/d", "/", "/ab"]),
        ("/[a-c]x", ["/bx"], ["/dx", "/-x"]),
        ("/[-a]", ["/-", "/a"], ["/b"]),
        ("/[a-]", ["/-", "/a"], ["/b"]),
        ("/[!a-c]", ["/d", "/-", "/!"], ["/a", "/b", "//"]),
        ("/[!-0]", ["/a", "/."], ["/-", "//", "/0"]),
        ("/[.-0]", ["/.", "/0"], ["//"]),
        ("/{foo,bar}/x", ["/foo/x", "/bar/x"], ["/baz/x", "/foobar/x", "/fo/x"]),
        ("/{a,ab}c", ["/ac", "/abc"], ["/abbc"]),
        ("/x{,s}", ["/x", "/xs"], ["/xx"]),
        ("/a.b+(c)", ["/a.b+(c)"], ["/axb+(c)", "/a.bb(c)"]),
        ("/[a]!", ["/a!"], ["/!"]),
        (
            "/*/audio/mixer/[0-9]/{master,0,1}/volume",
            ["/n1/audio/mixer/0/master/volume", "/n2/audio/mixer/3/1/volume"],
            ["/n1/audio/mixer/0/2/volume", "/n1/audio/mixer/x/master/volume"],
        ),
    ],
)
def test_each_pattern_feature(pattern: str, matches: list[str], misses: list[str]) -> None:
    compiled = compile_pattern(pattern)
    for address in matches:
        assert compiled.fullmatch(address), f"{pattern} should match {address}"
    for address in misses:
        assert not compiled.fullmatch(address), f"{pattern} should not match {address}"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a/b",
        "/a[",
        "/a[bc",
        "/a{b",
        "/a]",
        "/a}",
        "/[]",
        "/[!]",
        "/[z-a]",
        "/{a*,b}",
        "/{a,[b]}",
    ],
)
def test_bad_patterns_are_refused_with_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_pattern(bad)


def _reference(pattern: str, address: str) -> bool:
    """OSC 1.0 matching by plain backtracking over the pattern (no regular expressions)."""
    if not pattern:
        return not address
    c = pattern[0]
    if c == "*":
        return any(
            _reference(pattern[1:], address[i:])
            for i in range(len(address) + 1)
            if "/" not in address[:i]
        )
    if c == "?":
        return bool(address) and address[0] != "/" and _reference(pattern[1:], address[1:])
    if c == "[":
        end = pattern.index("]", 2 if pattern[1:2] != "!" else 3)
        body = pattern[1:end]
        negate = body.startswith("!")
        if negate:
            body = body[1:]
        if not address or address[0] == "/":
            return False
        found, i = False, 0
        while i < len(body):
            if i + 2 < len(body) and body[i + 1] == "-":
                found = found or body[i] <= address[0] <= body[i + 2]
                i += 3
            else:
                found = found or body[i] == address[0]
                i += 1
        return found != negate and _reference(pattern[end + 1 :], address[1:])
    if c == "{":
        end = pattern.index("}")
        return any(
            address.startswith(word) and _reference(pattern[end + 1 :], address[len(word) :])
            for word in pattern[1:end].split(",")
        )
    return bool(address) and address[0] == c and _reference(pattern[1:], address[1:])


_CHARS = "ab/-.!"
_valid_class = st.text(_CHARS, min_size=1, max_size=3).filter(
    lambda s: all(a <= b for a, b in re.findall(r"(.)-(.)", s))
)


@st.composite
def _pattern_and_address(draw: st.DrawFn) -> tuple[str, str]:
    """A pattern and an address built alongside it, so that many pairs match (the matcher
    decides; this only makes matches likely)."""
    pattern, address = ["/"], ["/"]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["literal", "*", "?", "[", "{"]))
        guess = draw(st.text(_CHARS, max_size=2))
        if kind == "literal":
            char = draw(st.sampled_from(list("ab/-.")))
            pattern.append(char)
            address.append(char if draw(st.booleans()) else guess)
        elif kind in "*?":
            pattern.append(kind)
            address.append(guess)
        elif kind == "[":
            chars = draw(_valid_class)
            pattern.append("[" + ("!" if draw(st.booleans()) else "") + chars + "]")
            address.append(draw(st.sampled_from(list(_CHARS))))
        else:
            words = draw(st.lists(st.text("ab/", max_size=2), min_size=1, max_size=3))
            pattern.append("{" + ",".join(words) + "}")
            address.append(draw(st.sampled_from(words)) if draw(st.booleans()) else guess)
    return "".join(pattern), "".join(address)


@given(_pattern_and_address())
def test_patterns_agree_with_a_backtracking_matcher(pair: tuple[str, str]) -> None:
    pattern, address = pair
    try:
        compiled = compile_pattern(pattern)
    except ValueError:
        return  # "[!]": a class with nothing in it
    assert bool(compiled.fullmatch(address)) == _reference(pattern, address), (pattern, address)


def test_the_router_looks_up_exact_addresses_first_then_patterns_in_order() -> None:
    router = OscRouter()

    def first(a: str, args: list[Any]) -> None: ...
    def second(a: str, args: list[Any]) -> None: ...
    def exact(a: str, args: list[Any]) -> None: ...
    def replaced(a: str, args: list[Any]) -> None: ...

    router.register("/p/*", first)
    router.register("/p/{x,y}", second)
    router.register("/p/x", exact)  # registered last, still wins for its address
    assert router.match("/p/x") is exact
    assert router.match("/p/y") is first
    router.register("/p/*", replaced)  # replaced in place: still before /p/{x,y}
    assert router.match("/p/y") is replaced
    assert router.unregister("/p/*")
    assert router.match("/p/y") is second
    assert router.match("/q") is None
    with pytest.raises(ValueError):
        router.register("/p/[", first)


def test_a_broadcast_is_a_controller_status_event_and_bad_values_are_refused() -> None:
    op = broadcast_operation("/app/level", 0.5)
    assert (op.type, op.sender, op.target, op.data) == (
        OperationType.STATUS,
        "controller",
        "/app/level",
        {"value": 0.5},
    )
    timecode = broadcast_operation("/engine/status/timecode", 1234.0)
    assert (timecode.target, timecode.data) == ("timecode", {"value": 1234})
    assert broadcast_operation("/x", None).data == {"value": None}
    assert broadcast_operation("/x", True).data == {"value": True}
    for address, value in [
        ("/x", math.nan),
        ("/x", math.inf),
        ("/x", [1, 2]),
        ("/x", b"blob"),
        ("/x", {"a": 1}),
        ("/x", 2**40),
        ("/x", "v" * 70_000),
        ("/engine/status/timecode", "12"),
        ("/engine/status/timecode", math.nan),
        ("no-slash", 1),
        ("/with space", 1),
        ("/pattern/*", 1),
    ]:
        with pytest.raises(ValueError):
            broadcast_operation(address, value)


# --------------------------------------------------------------------------- commands


async def test_a_built_in_command_calls_its_handler_once_after_commit_and_a_node_fires_it_once(
    tmp_path: Path,
) -> None:
    fired = Calls()
    with (
        running(tmp_path) as comms,
        nodes(ipc_address(tmp_path), ["n1"], command_callback=fired) as (node,),
    ):
        assert node.wait_synced(10)
        handled = Calls()
        refused = Calls()
        comms.register_command_handler("/engine/command/stop", handled)
        comms.register_command_handler("/engine/command/go", refused, forward_to_nodes=False)
        client = await connected(comms)

        await client.send("/engine/command/go")  # not armed: recorded, refused, never fired
        reply = await client.reply("/engine/command/go")
        assert reply["status"] == "error" and "not armed" in reply["error"]

        await client.send("/engine/command/stop")
        reply = await client.reply("/engine/command/stop")
        assert reply["status"] == "ok"
        await handled.until("the stop handler", 1)
        await fired.until("the node's stop", 1)
        await client.conn.close()

    assert handled.items == [None]
    assert refused.items == [], "a refused command never calls its handler"
    assert fired.items == [("stop", None, "/engine/command/stop")]
    commands = [e for e in events(tmp_path) if e.op.type is OperationType.COMMAND]
    assert [e.op.target for e in commands] == ["go", "stop"]
    assert all(e.op.sender.startswith("ui:") for e in commands)


async def test_a_custom_command_is_a_command_event_that_reaches_a_node_exactly_once(
    tmp_path: Path,
) -> None:
    fired = Calls()
    with (
        running(tmp_path) as comms,
        nodes(ipc_address(tmp_path), ["n1"], command_callback=fired) as (node,),
    ):
        assert node.wait_synced(10)
        handled = Calls()
        comms.register_command_handler("/engine/command/deploy", handled)
        client = await connected(comms)
        await client.send("/engine/command/deploy", "myshow")
        reply = await client.reply("/engine/command/deploy")
        assert reply["status"] == "ok" and isinstance(reply["seq"], int)
        deploy_seq = reply["seq"]
        await handled.until("the deploy handler", 1)
        await fired.until("the node's deploy", 1)
        # a later command reaches the node only after every earlier one: nothing more came
        await client.send("/engine/command/stop")
        await client.reply("/engine/command/stop")
        await fired.until("the node's stop", 2)
        await client.conn.close()

    assert handled.items == ["myshow"]
    assert fired.items == [
        ("deploy", "myshow", "/engine/command/deploy"),
        ("stop", None, "/engine/command/stop"),
    ]
    deploys = [e for e in events(tmp_path) if e.op.target == "deploy"]
    assert len(deploys) == 1 and deploys[0].seq == deploy_seq
    assert deploys[0].op.type is OperationType.COMMAND
    assert deploys[0].op.data == {"value": "myshow", "address": "/engine/command/deploy"}


async def test_a_command_not_forwarded_is_recorded_as_status_and_never_reaches_a_node(
    tmp_path: Path,
) -> None:
    fired = Calls()
    with (
        running(tmp_path) as comms,
        nodes(ipc_address(tmp_path), ["n1"], command_callback=fired) as (node,),
    ):
        assert node.wait_synced(10)
        handled = Calls()
        comms.register_command_handler("/app/tap", handled, forward_to_nodes=False)
        client = await connected(comms)
        await client.send("/app/tap", 7)
        reply = await client.reply("/app/tap")
        assert reply["status"] == "ok"
        await handled.until("the local handler", 1)
        # commands reach a node in seq order: once this later one arrived, nothing else will
        await client.send("/engine/command/stop")
        await client.reply("/engine/command/stop")
        await fired.until("the node's stop", 1)
        await client.conn.close()

    assert handled.items == [7]
    assert fired.items == [("stop", None, "/engine/command/stop")]
    (local,) = [e for e in events(tmp_path) if e.op.target == LOCAL_COMMAND]
    assert local.op.type is OperationType.STATUS and local.op.sender == "controller"
    assert local.op.data is not None and local.op.data["address"] == "/app/tap"
    assert local.op.data["value"] == 7 and local.op.data["client"].startswith("ui:")


async def test_a_command_value_the_log_refuses_gets_an_error_and_calls_nothing(
    tmp_path: Path,
) -> None:
    with running(tmp_path) as comms:
        handled = Calls()
        comms.register_command_handler("/app/blob", handled)
        client = await connected(comms)
        await client.send("/app/blob", b"\x00\x01")  # a blob is not JSON: not appended
        reply = await client.reply("/app/blob")
        assert reply["status"] == "error"
        await client.send("/app/blob", "fine")
        assert (await client.reply("/app/blob"))["status"] == "ok"
        await handled.until("the handler", 1)
        await client.conn.close()
    assert handled.items == ["fine"]


# --------------------------------------------------------------------------- OSC handlers


async def test_osc_handlers_exact_before_pattern_and_unknown_addresses_get_an_error(
    tmp_path: Path,
) -> None:
    with running(tmp_path) as comms:
        exact, star, alternatives, negated = Calls(), Calls(), Calls(), Calls()
        comms.register_osc_handler("/engine/players/*", star)
        comms.register_osc_handler("/engine/players/main", exact)
        comms.register_osc_handler("/fx/{reverb,delay}/[0-9]", alternatives)
        comms.register_osc_handler("/fx/[!rd]*", negated)
        client = await connected(comms)
        await client.send("/engine/players/main", 1, "two")
        await client.send("/engine/players/other", 2.5)
        await client.send("/fx/delay/3", "x")
        await client.send("/fx/chorus")
        await client.send("/fx/delay/33")  # no handler wants it
        reply = await client.reply("/fx/delay/33")
        assert reply == {"status": "error", "seq": None, "error": "unknown address"}
        await negated.until("the negated-class handler", 1)
        await client.conn.close()
    assert exact.items == [("/engine/players/main", [1, "two"])]
    assert star.items == [("/engine/players/other", [2.5])]
    assert alternatives.items == [("/fx/delay/3", ["x"])]
    assert negated.items == [("/fx/chorus", [])]
    assert not any(e.op.target.startswith("/fx") for e in events(tmp_path)), "not recorded"


async def test_handlers_registered_after_start_and_after_a_miss_take_effect(
    tmp_path: Path,
) -> None:
    with running(tmp_path) as comms:
        client = await connected(comms)
        await client.send("/late/thing", 1)
        assert (await client.reply("/late/thing"))["status"] == "error"
        late = Calls()
        comms.register_osc_handler("/late/*", late)
        await client.send("/late/thing", 2)
        await late.until("the late handler", 1)
        command = Calls()
        comms.register_command_handler("/late/cmd", command)
        await client.send("/late/cmd", "v")
        assert (await client.reply("/late/cmd"))["status"] == "ok"
        await command.until("the late command handler", 1)
        await client.conn.close()
    assert late.items == [("/late/thing", [2])]
    assert command.items == ["v"]


def test_a_client_without_control_is_denied_by_application_handlers(tmp_path: Path) -> None:
    with running(tmp_path) as comms:
        handled = Calls()
        comms.register_osc_handler("/app/*", handled)
        comms.register_command_handler("/cmd/x", handled)
        assert comms.gateway is not None and comms.gateway.core is not None
        assert comms.event_loop is not None
        watcher = Session(999, "192.0.2.7", control=False, watching=True)
        for address in ("/app/y", "/cmd/x"):
            asyncio.run_coroutine_threadsafe(
                comms._on_osc(watcher, OscMsg(address, (1,))), comms.event_loop
            ).result(5)
        replies = [bytes(f) for f in watcher.take() if isinstance(f, bytes)]
    assert len(replies) == 2 and all(b"denied" in r for r in replies)
    assert handled.items == []


# --------------------------------------------------------------------------- broadcasts


async def test_broadcast_osc_reaches_every_ui_and_is_in_the_log(tmp_path: Path) -> None:
    with running(tmp_path) as comms:
        client = await connected(comms)
        seq = await asyncio.wrap_future(comms.broadcast_osc("/app/level", 0.5))
        await asyncio.wrap_future(comms.broadcast_osc("/engine/status/timecode", 61_000))
        await client.until(
            "both broadcasts",
            lambda: (
                client.values.get("/app/level") == 0.5
                and client.values.get("/engine/status/timecode") == 61_000
            ),
        )
        late = await connected(comms)  # a late joiner gets the latest values in its dump
        assert late.values["/app/level"] == 0.5
        assert late.values["/engine/status/timecode"] == 61_000
        with pytest.raises(ValueError):
            comms.broadcast_osc("/app/level", math.nan)
        await client.conn.close()
        await late.conn.close()
    recorded = {e.seq: e for e in events(tmp_path)}
    assert recorded[seq].op.sender == "controller" and recorded[seq].op.target == "/app/level"
    assert recorded[seq].op.data == {"value": 0.5}
    assert any(
        e.op.target == "timecode" and e.op.data == {"value": 61_000} for e in recorded.values()
    )


def test_broadcast_before_start_is_a_usage_error(tmp_path: Path) -> None:
    comms = ControllerCommunications(ipc_address(tmp_path), lambda m: None, None, {"port": None})
    with pytest.raises(CuelogError):
        comms.broadcast_osc("/app/x", 1)
    assert comms.gateway is None


# --------------------------------------------------------------------------- connections


async def test_on_client_connect_is_called_for_each_new_ui(tmp_path: Path) -> None:
    with running(tmp_path) as comms:
        seen: list[Any] = []

        async def on_connect(websocket: Any) -> None:
            seen.append(websocket)

        comms.set_on_client_connect(on_connect)  # after start
        first = await connected(comms)
        second = await connected(comms)
        await asyncio.to_thread(wait_for, "two connections", lambda: len(seen) == 2, 5)
        assert seen[0] is not seen[1] and hasattr(seen[0], "send")
        sync_seen = Calls()
        comms.set_on_client_connect(sync_seen)
        third = await connected(comms)
        await sync_seen.until("the sync callback", 1)
        for client in (first, second, third):
            await client.conn.close()


# --------------------------------------------------------------------------- the editor


def _editor_request(address: str, payload: bytes, timeout: int = 10_000) -> Any:
    with pynng.Req0(dial=address, recv_timeout=timeout, send_timeout=timeout) as sock:
        sock.send(payload)
        return json.loads(sock.recv())


def test_three_editor_requests_in_flight_are_answered_out_of_order_by_action_uuid(
    tmp_path: Path,
) -> None:
    release = {name: threading.Event() for name in "abc"}
    arrived = Calls()

    def editor_callback(message: dict[str, Any]) -> dict[str, Any]:
        arrived(message["value"])
        assert release[message["value"]].wait(10)
        return {"type": message["action"], "value": message["value"].upper()}

    with running(tmp_path, editor_callback) as comms:
        replies: list[Any] = []
        lock = threading.Lock()

        def ask(value: str) -> None:
            request = {"action": "project_status", "action_uuid": f"uuid-{value}", "value": value}
            reply = _editor_request(comms.editor_address, json.dumps(request).encode())
            with lock:
                replies.append(reply)

        threads = [threading.Thread(target=ask, args=(v,)) for v in "abc"]
        for thread in threads:
            thread.start()
        wait_for("three requests in the callback at once", lambda: len(arrived.items) == 3, 10)

        def replied(want: int) -> Callable[[], bool]:
            return lambda: len(replies) >= want

        for count, name in enumerate("cba", 1):
            release[name].set()
            wait_for(f"reply {count}", replied(count), 10)
        for thread in threads:
            thread.join(10)
    assert [r["value"] for r in replies] == ["C", "B", "A"]
    for reply in replies:
        assert reply["action_uuid"] == f"uuid-{reply['value'].lower()}"
        assert reply["type"] == "project_status"


def test_a_seed_style_editor_callback_replies_with_reply_to_editor(tmp_path: Path) -> None:
    """Upstream's callback takes (message, context), returns None and replies through
    `reply_to_editor`, from inside the callback or later from another thread."""
    pending: list[tuple[dict[str, Any], EditorContext]] = []
    second_reply: list[BaseException] = []
    holder: list[ControllerCommunications] = []

    def editor_callback(message: dict[str, Any], context: EditorContext) -> None:
        if message["action"] == "project_status":
            holder[0].reply_to_editor({"type": "project_status", "value": "idle"}, context)
        else:
            pending.append((message, context))

    def replier() -> None:
        wait_for("a pending request", lambda: bool(pending), 10)
        message, context = pending[0]
        holder[0].reply_to_editor({"value": message["value"] * 2}, context)
        try:
            holder[0].reply_to_editor({"value": "again"}, context)
        except CuelogError as exc:  # one reply per request
            second_reply.append(exc)

    with running(tmp_path, editor_callback) as comms:
        holder.append(comms)
        inline = _editor_request(
            comms.editor_address,
            json.dumps({"action": "project_status", "action_uuid": "u-1"}).encode(),
        )
        thread = threading.Thread(target=replier)
        thread.start()
        request = {"action": "nodeconf", "action_uuid": "u-7", "value": 21}
        later = _editor_request(comms.editor_address, json.dumps(request).encode())
        thread.join(10)
    assert inline == {"type": "project_status", "value": "idle", "action_uuid": "u-1"}
    assert later == {"value": 42, "type": "nodeconf", "action_uuid": "u-7"}
    assert len(second_reply) == 1 and "already answered" in str(second_reply[0])


def test_bad_editor_requests_get_error_replies_and_the_channel_keeps_working(
    tmp_path: Path,
) -> None:
    def editor_callback(message: dict[str, Any]) -> dict[str, Any] | None:
        if message["action"] == "boom":
            raise RuntimeError("kaput")
        if message["action"] == "silent":
            return None  # and never replies
        return {"value": "fine"}

    with running(tmp_path, editor_callback, editor_reply_timeout=0.3) as comms:
        address = comms.editor_address
        not_json = _editor_request(address, b"{not json")
        assert not_json["type"] == "error" and "not JSON" in not_json["value"]
        assert not_json["action_uuid"] is None
        not_utf8 = _editor_request(address, b"\xff\xfe")
        assert not_utf8["type"] == "error"
        a_list = _editor_request(address, b"[1, 2]")
        assert a_list["type"] == "error" and "object" in a_list["value"]
        nested = _editor_request(address, b"[" * 100_000)
        assert nested["type"] == "error"
        no_action = _editor_request(address, json.dumps({"action_uuid": "u1"}).encode())
        assert no_action == {
            "type": "error",
            "value": "the request has no action",
            "action_uuid": "u1",
        }
        boom = _editor_request(
            address, json.dumps({"action": "boom", "action_uuid": "u2"}).encode()
        )
        assert boom["type"] == "error" and "kaput" in boom["value"] and boom["action_uuid"] == "u2"
        silent = _editor_request(
            address, json.dumps({"action": "silent", "action_uuid": "u3"}).encode()
        )
        assert silent["type"] == "error" and "no reply" in silent["value"]
        assert silent["action_uuid"] == "u3"
        good = _editor_request(
            address, json.dumps({"action": "project_ready", "action_uuid": "u4"}).encode()
        )
        assert good == {"value": "fine", "type": "project_ready", "action_uuid": "u4"}


# --------------------------------------------------------------------------- local services


def test_nodeconf_and_hwdiscovery_requests_and_their_timeouts(tmp_path: Path) -> None:
    with running(tmp_path) as comms:
        nodeconf = _rep_server(
            comms.nodeconf_address,
            lambda raw: json.dumps({"echo": json.loads(raw), "from": "nodeconf"}).encode(),
        )
        try:
            assert comms.request_to_nodeconf({"action": "list"}, timeout=5) == {
                "echo": {"action": "list"},
                "from": "nodeconf",
            }
            # several requests at once, from several threads
            results: list[Any] = []

            def ask(i: int) -> None:
                results.append(comms.request_to_nodeconf({"i": i}, 5))

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(5)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert sorted(r["echo"]["i"] for r in results) == list(range(5))
        finally:
            nodeconf.close()

        # nobody listens on hwdiscovery's address: a clear timeout, never None
        with pytest.raises(ServiceTimeout) as caught:
            comms.request_to_hwdiscovery({"action": "scan"}, timeout=0.3)
        assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, CuelogError)
        assert "hwdiscovery" in str(caught.value) and comms.hwdiscovery_address in str(caught.value)

        # a service that answers with something that is not a JSON object
        hw = _rep_server(comms.hwdiscovery_address, lambda raw: b"not json")
        try:
            with pytest.raises(ServiceError, match="not JSON"):
                comms.request_to_hwdiscovery({"action": "scan"}, timeout=5)
        finally:
            hw.close()
        with pytest.raises(ValueError):
            comms.request_to_nodeconf({"x": math.nan})


def test_stop_closes_every_socket(tmp_path: Path) -> None:
    with running(tmp_path) as comms:
        port = comms.ws_port
        editor = comms.editor_address
    assert comms.stopped.is_set()
    # the addresses are free again: a new listener can take them
    with pynng.Rep0(listen=editor):
        pass
    with pynng.Rep0(listen=ipc_address(tmp_path)):
        pass
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port or 0))


def test_a_start_up_failure_is_raised_by_wait_ready(tmp_path: Path) -> None:
    with pynng.Rep0(listen=f"ipc://{tmp_path}/editor.ipc"):  # the editor's address is taken
        comms = ControllerCommunications(
            ipc_address(tmp_path),
            lambda m: None,
            None,
            {"port": None},
            editor_address=f"ipc://{tmp_path}/editor.ipc",
        )
        comms.start()
        try:
            with pytest.raises(EditorChannelError, match=r"editor\.ipc"):
                comms.wait_ready(10)
        finally:
            comms.stop()
            comms.join(10)
        assert not comms.is_alive()


def test_stop_right_after_start_ends_the_thread(tmp_path: Path) -> None:
    comms = ControllerCommunications(
        ipc_address(tmp_path),
        lambda m: None,
        None,
        {"port": 0},
        editor_address=f"ipc://{tmp_path}/editor.ipc",
    )
    comms.start()
    comms.stop()
    comms.join(10)
    assert not comms.is_alive() and comms.stopped.is_set()


def test_built_in_addresses_and_the_warning_for_not_forwarding_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert built_in("/engine/command/go") and built_in("/n1/audio/mixer/0/master/volume")
    assert built_in("/n1/video/mixer/0/xscale")
    assert not built_in("/engine/command/deploy") and not built_in("/engine/players/x")
    comms = ControllerCommunications(ipc_address(tmp_path), lambda m: None, None, {"port": None})
    with caplog.at_level(logging.WARNING, logger="cuelog.compat"):
        comms.register_command_handler("/engine/command/go", lambda v: None, forward_to_nodes=False)
        comms.register_command_handler("/app/x", lambda v: None, forward_to_nodes=False)
    assert [r.getMessage().split()[0] for r in caplog.records] == ["/engine/command/go"]
    with pytest.raises(ValueError):
        comms.register_command_handler("/engine/*", lambda v: None)
