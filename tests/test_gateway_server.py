"""The gateway over real sockets: websockets clients speaking python-osc bytes, a real
controller with its SQLite file, real node replicas. Every wait has a deadline."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from eventlog import CONTROLLER, ActionType, EventLog, Operation, OperationType
from gateway.outbox import MAX_QUEUE_BYTES
from gateway.session import Policy, parse_networks
from gateway.view import DUMP_END
from tests.cluster import ipc_address, nodes, wait_for
from tests.gateway_rig import (
    OscClient,
    command,
    expected_view,
    gateway_thread,
    open_client,
    osc,
)


def broadcast(address: str, value: Any) -> Operation:
    return Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, address, {"value": value})


def cue(action: str, cue_id: str, **data: Any) -> Operation:
    return Operation(OperationType.CUE, ActionType(action), "n1", cue_id, {"id": cue_id, **data})


async def settled(client: OscClient, rig: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Receive until the client's picture equals GET /state at the same seq; return it."""
    state: dict[str, Any] = rig.get("/state")
    want = expected_view(state)
    loop = asyncio.get_running_loop()
    fetched = loop.time()

    def same() -> bool:
        nonlocal state, want, fetched
        if client.values == want:
            return True
        if loop.time() - fetched > 0.5:  # the state may have moved on: look again
            state, fetched = rig.get("/state"), loop.time()
            want = expected_view(state)
        return client.values == want

    try:
        await client.until("the client's view to equal GET /state", same, timeout)
    except AssertionError:
        diff = {
            a: (client.values.get(a), want.get(a))
            for a in set(want) | set(client.values)
            if client.values.get(a) != want.get(a)
        }
        raise AssertionError(f"client differs from GET /state at {state['seq']}: {diff}") from None
    return state


# ---------------------------------------------------------------- connections and HTTP


async def test_a_client_gets_the_dump_then_a_command_reply(tmp_path: Path) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=["c1", "c2"]))
        client = await open_client(rig.url)
        await client.until("the dump", lambda: bool(client.dump_ends))
        assert client.dump_ends[0] == (1, rig.get("/state")["log_id"], "full")
        assert client.values == expected_view(rig.get("/state"))
        await client.send("/engine/command/go")
        reply = await client.reply("/engine/command/go")
        assert reply["status"] == "error" and "not armed" in reply["error"]
        assert reply["seq"] == 2
        await client.conn.close()


async def test_both_paths_upgrade_and_any_other_path_is_a_404(tmp_path: Path) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        for path in ("/", "/realtime", "/?since=0", "/realtime?since=0"):
            async with connect(f"ws://127.0.0.1:{rig.port}{path}") as conn:
                frame = await asyncio.wait_for(conn.recv(), 5)
                assert isinstance(frame, bytes)
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{rig.port}/elsewhere")
        assert info.value.response.status_code == 404
        for path in ("/nope", "/state/x"):
            with pytest.raises(urllib.error.HTTPError) as http:
                urllib.request.urlopen(rig.http + path, timeout=5)
            assert http.value.code == 404
        state = rig.get("/state")
        assert set(state) == {"log_id", "seq", "digest", "state"}
        cluster = rig.get("/cluster")
        assert cluster["head_seq"] == state["seq"] and cluster["log_id"] == state["log_id"]
        with urllib.request.urlopen(rig.http + "/", timeout=5) as page:
            assert page.headers["Content-Type"].startswith("text/html")
            assert b"<html" in page.read().lower()


# ---------------------------------------------------------------- late join and resume


@settings(max_examples=6, deadline=None)
@given(st.data())
def test_a_client_joining_at_a_random_point_ends_with_get_state(
    tmp_path_factory: Any, data: Any
) -> None:
    tmp = tmp_path_factory.mktemp("join")
    ops: list[Operation] = [command("load", "show", cues=[f"c{i}" for i in range(20)])]
    for i in range(data.draw(st.integers(20, 200), label="updates")):
        kind = data.draw(st.sampled_from(("bcast", "cue", "volume")))
        if kind == "bcast":
            ops.append(broadcast(f"/engine/status/x{i % 7}", i))
        elif kind == "cue":
            cue_id = f"c{i % 20}"
            ops.append(cue("add", cue_id, offset="0"))
            ops.append(cue("update", cue_id, percentage=1 + i % 98))
        else:
            address = f"/n1/audio/mixer/0/{i % 5}/volume"
            ops.append(command("player_control", i / 1000, address=address))
    join = data.draw(st.integers(0, len(ops)), label="join at")

    async def run(rig: Any) -> None:
        client: OscClient | None = None
        for i in range(0, len(ops), 7):
            if client is None and i >= join:
                client = await open_client(rig.url)
            await asyncio.to_thread(rig.append, *ops[i : i + 7])
        if client is None:
            client = await open_client(rig.url)
        await settled(client, rig)
        await client.conn.close()

    with gateway_thread(tmp / "c.db", ipc_address(tmp)) as rig:
        asyncio.run(run(rig))


async def test_resume_with_a_retained_seq_gets_only_changes(tmp_path: Path) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=[f"c{i}" for i in range(50)]))
        first = await open_client(rig.url)
        await settled(first, rig)
        seq, log_id = first.seq, first.dump_ends[-1][1]
        await first.conn.close()
        rig.append(cue("add", "c7", offset="0"), broadcast("/engine/status/extra", "hi"))
        again = await open_client(f"{rig.url}?since={seq}&log={log_id}")
        await again.until("the resume", lambda: bool(again.dump_ends))
        assert again.dump_ends[0][2] == "changes"
        assert dict(again.values) == {
            "/engine/status/cue/c7": 1,
            "/engine/status/extra": "hi",
        }
        # the same over /engine/sync, and a seq the gateway cannot vouch for: a full dump
        await again.send("/engine/sync", seq)
        await again.until("a second dump", lambda: len(again.dump_ends) == 2)
        assert again.dump_ends[1][2] == "changes"
        await again.send("/engine/sync", seq + 1000)
        await again.until("a third dump", lambda: len(again.dump_ends) == 3)
        assert again.dump_ends[2][2] == "full"
        other = await open_client(f"{rig.url}?since={seq}&log=another-log")
        await other.until("the dump", lambda: bool(other.dump_ends))
        assert other.dump_ends[0][2] == "full"
        for client in (again, other):
            await client.conn.close()


async def test_clients_reconnect_across_a_controller_restart_on_the_same_file(
    tmp_path: Path,
) -> None:
    db, address = tmp_path / "c.db", ipc_address(tmp_path)
    with gateway_thread(db, address) as rig:
        rig.append(command("load", "show", cues=["c1", "c2"]), cue("add", "c1", offset="0"))
        client = await open_client(rig.url)
        await settled(client, rig)
        seq, log_id = client.seq, client.dump_ends[-1][1]
    # the controller stopped: the connection was aborted, not closed cleanly (upstream's UI
    # reconnects only after an error)
    with pytest.raises(ConnectionClosed):
        await client.until("the drop", lambda: False, 10)
    assert client.conn.close_code in (None, 1006)
    with gateway_thread(db, address) as rig:
        rig.append(cue("remove", "c1"))
        again = await open_client(f"{rig.url}?since={seq}&log={log_id}")
        again.values = dict(client.values)  # a reconnecting UI keeps what it had
        await settled(again, rig)
        # the restarted gateway knows what changed since the head it opened at
        assert again.dump_ends[0][2] == "changes"
        assert again.values["/engine/status/cue/c1"] == 100
        fresh = await open_client(f"{rig.url}?since=1&log={log_id}")
        await settled(fresh, rig)
        assert fresh.dump_ends[0][2] == "full"  # before the reopen: only a full dump can say
        await fresh.conn.close()
        await again.conn.close()


# ---------------------------------------------------------------- many clients, slow clients


async def test_fifty_clients_all_see_the_same_stream(tmp_path: Path) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=[f"c{i}" for i in range(100)]))
        clients = await asyncio.gather(*(open_client(rig.url) for _ in range(50)))
        for i in range(0, 100, 10):
            await asyncio.to_thread(
                rig.append, *[broadcast(f"/engine/status/v{j}", i) for j in range(10)]
            )
        await asyncio.to_thread(rig.append, cue("add", "c3", offset="0"))
        for client in clients:
            await settled(client, rig)
        assert len({c.dump_ends[0][1] for c in clients}) == 1
        await asyncio.gather(*(c.conn.close() for c in clients))


async def test_a_client_that_never_reads_does_not_hold_back_the_others(tmp_path: Path) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=["c1"]))
        stuck = await connect(rig.url, max_queue=1)  # reads nothing after its first frame
        live = await open_client(rig.url)
        await settled(live, rig)
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        for i in range(0, 20_000, 500):
            # ~1 KiB per message: 20 MB in all, far more than the kernel's socket buffers
            batch = [
                broadcast(f"/engine/status/n{j % 40}", f"{i + j:08d}" + "x" * 1000)
                for j in range(500)
            ]
            sent = loop.time()
            await asyncio.to_thread(rig.append, *batch)
            want = (f"/engine/status/n{499 % 40}", f"{i + 499:08d}" + "x" * 1000)
            await live.until(
                "the live client to get the batch",
                lambda w=want: live.values.get(w[0]) == w[1],
                10,
            )
            lags.append(loop.time() - sent)
        core = rig.gateway.core
        assert core is not None
        assert max(lags) < 5.0, f"a live client waited {max(lags):.2f} s"
        for session in core.sessions.values():
            assert session.queued_bytes <= MAX_QUEUE_BYTES + 600_000  # bounded: one batch over
        assert core.stats["resyncs"] + core.stats["drops"] >= 1
        await settled(live, rig)
        await live.conn.close()
        stuck.transport.abort()


# ---------------------------------------------------------------- commands reach nodes


async def test_a_ui_command_fires_once_on_a_node_and_a_refused_one_never(tmp_path: Path) -> None:
    address = ipc_address(tmp_path)
    fired: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def callback(name: str, value: Any, where: str) -> None:
        with lock:
            fired.append((name, value))

    with (
        gateway_thread(tmp_path / "c.db", address) as rig,
        nodes(address, ["n1"], command_callback=callback) as (node,),
    ):
        assert node.wait_synced(10)
        client = await open_client(rig.url)
        await client.send("/engine/command/load", "show")
        assert (await client.reply("/engine/command/load"))["status"] == "ok"
        await client.send("/engine/command/go")
        refused = await client.reply("/engine/command/go")
        assert refused["status"] == "error" and refused["seq"] > 0
        await asyncio.to_thread(
            lambda: node.send_status("armed_ready", {"armed": "yes"}).result(10)
        )
        await client.until("armed", lambda: client.values.get("/engine/status/armed") == "yes")
        await client.send("/engine/command/go")
        accepted = await client.reply("/engine/command/go")
        assert accepted["status"] == "ok"
        await asyncio.to_thread(wait_for, "the go to fire", lambda: ("go", None) in fired, 10)
        await client.until("running", lambda: client.values.get("/engine/status/running") == "yes")
        with lock:
            assert fired.count(("go", None)) == 1
        await client.conn.close()
    with EventLog.open(tmp_path / "c.db", readonly=True) as elog:
        gos = [e for e in elog.iter_events() if e.op.target == "go"]
    assert [e.seq for e in gos] == [refused["seq"], accepted["seq"]]
    assert all(e.op.sender.startswith("ui:") for e in gos)


# ---------------------------------------------------------------- bad input


def _bundle(*elements: bytes) -> bytes:
    body = b"".join(struct.pack(">i", len(e)) + e for e in elements)
    return b"#bundle\x00" + bytes(8) + body


async def test_hostile_frames_get_errors_and_never_append(tmp_path: Path) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=["c1"]))
        watcher = await open_client(rig.url)
        await settled(watcher, rig)
        head = rig.get("/state")["seq"]
        attacker = await open_client(rig.url)
        nested = osc("/engine/command/stop")
        for _ in range(1000):
            nested = _bundle(nested)
        hostile = [
            osc("/engine/command/go")[:-3],
            b"/engine/command/go\x00\x00,x\x00\x00",
            nested,
            osc("/blob", b"\x00" * (1024 * 1024 - 100)),
            osc("/engine/command/load", 42),
            osc("/engine/command/cue_enabled", 1.5),
            osc("/no/such/address", 1),
            osc("/n1/audio/mixer/0/1/volume", "loud"),
        ]
        for frame in hostile:
            await attacker.conn.send(frame)
        await attacker.conn.send("text frames are ignored \x00\xff")
        await attacker.until("every reply", lambda: len(attacker.replies) >= len(hostile) - 0, 10)
        assert all(r[1]["status"] == "error" for r in attacker.replies)
        # a flood of bad frames: answered, never appended
        for _ in range(1500):
            await attacker.conn.send(b"\x00garbage")
        await attacker.until("the flood answered", lambda: len(attacker.replies) >= 1508, 20)
        # an oversized frame closes that connection only
        await attacker.conn.send(b"/" + b"a" * (1024 * 1024 + 8))
        with pytest.raises(ConnectionClosed):
            await attacker.until("the close", lambda: False, 10)
        assert rig.get("/state")["seq"] == head
        rig.append(cue("add", "c1", offset="0"))
        await settled(watcher, rig)
        await watcher.conn.close()


async def test_passcode_lockout_and_allow_over_real_sockets(tmp_path: Path) -> None:
    policy = Policy(passcode="letmein", loopback=False)
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path), policy) as rig:
        client = await open_client(rig.url)
        await client.until("the dump", lambda: bool(client.dump_ends))  # not private: sees status
        await client.send("/engine/command/stop")
        assert (await client.reply("/engine/command/stop"))["status"] == "denied"
        for _ in range(5):
            await client.send("/connect", "wrong")
        await client.send("/connect", "letmein")
        await client.until(
            "six connect replies",
            lambda: len([m for m in client.received if m[0] == "/reply/connect"]) == 6,
        )
        answers = [m[1][0] for m in client.received if m[0] == "/reply/connect"]
        assert answers == ["badpass"] * 6  # the sixth, right, one came during the lockout
        await client.send("/engine/command/stop")
        assert (await client.reply("/engine/command/stop"))["status"] == "denied"
        assert rig.get("/state")["seq"] == 0
        await client.conn.close()
    allow = Policy(allow=parse_networks("127.0.0.0/8"), loopback=False, private=True)
    with gateway_thread(tmp_path / "d.db", ipc_address(tmp_path, "d"), allow) as rig:
        client = await open_client(rig.url)
        await client.send("/engine/command/stop")
        assert (await client.reply("/engine/command/stop"))["status"] == "ok"
        await client.conn.close()
    private = Policy(passcode="p", loopback=False, private=True)
    with gateway_thread(tmp_path / "e.db", ipc_address(tmp_path, "e"), private) as rig:
        client = await open_client(rig.url)
        await client.send("/engine/command/stop")
        assert (await client.reply("/engine/command/stop"))["status"] == "denied"
        assert not client.dump_ends and DUMP_END not in [m[0] for m in client.received]
        await client.send("/connect", "p")
        await client.until("the dump after /connect", lambda: bool(client.dump_ends))
        await client.conn.close()


def test_the_reply_is_one_json_string() -> None:
    assert json.loads('{"status": "ok", "seq": 1, "error": null}')["status"] == "ok"


def show_of(cues: int) -> list[Operation]:
    """A load of `cues` cues: 4,096 in the load, the rest in ``show_cues`` events."""
    ids = [f"cue-{i:05d}" for i in range(cues)]
    ops = [command("load", "big", cues=ids[:4096])]
    for start in range(4096, cues, 2000):
        data = {"cues": ids[start : start + 2000]}
        ops.append(
            Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, "show_cues", data)
        )
    return ops


async def test_dumps_of_a_10000_cue_show_do_not_hold_up_a_live_client(tmp_path: Path) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(*show_of(10_000))
        live = await open_client(rig.url)
        await settled(live, rig)
        assert sum(a.startswith("/engine/status/cue/") for a in live.values) == 10_000
        loop = asyncio.get_running_loop()
        # ten clients join at once and read slowly: ten dumps of 20,000 messages in flight
        joiners = [await connect(rig.url, max_queue=4) for _ in range(10)]
        lags = []
        for i in range(10):
            sent = loop.time()
            await asyncio.to_thread(rig.append, broadcast("/engine/status/tick", i))
            await live.until("the tick", lambda i=i: live.values.get("/engine/status/tick") == i)
            lags.append(loop.time() - sent)
        assert max(lags) < 2.0, f"a live client waited {max(lags):.2f} s behind the dumps"
        for conn in joiners:
            conn.transport.abort()
        await live.conn.close()
