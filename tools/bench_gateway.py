"""``cuelog bench gateway``: the UI gateway's figures and same-run baselines. Nothing asserted.

Measured in one run, on one machine, everything over loopback:

- **dump**: a show of 10,000 cues and 1,000 mixer channels is built by folding events (a load
  and ``show_cues`` listings, cues played by nodes, cue_enabled commands, mixer moves). Timed:
  `GatewayCore` producing every frame of one client's full dump (``connect``, then ``take``
  until the queue is empty); and, from a real controller and gateway in another process, the
  time from connecting to ``dump_end`` for two clients: a websockets (asyncio) client, and a
  lean client whose handshake is websockets' but which counts frames from their headers
  (websockets' parser costs ~20 µs a frame in Python, so the first client mostly measures
  itself). Baselines: the same messages encoded one by one with python-osc's
  ``OscMessageBuilder``; the same frames sent to the same clients by a bare websockets server
  with one ``await send`` per frame (as the gateway's writer does), one ``broadcast`` write
  per frame, and one transport write per 256 frames. With the big show loaded, the durable
  reply time of ``cue_enabled`` commands, and what the controller's per-commit state digest
  costs at that size.
- **fan-out**: 50 lean clients (as above); the controller appends events (``append_local``
  from four appenders, durable, group-committed) that each change one address, so each is one
  message to every client. Events/s delivered to all 50, against a bare websockets server
  sending the same frames to 50 clients with ``broadcast`` per frame, and in one write per
  client per 256 frames; the server's CPU per message sent.
- **command latency**: a websockets client sends ``/engine/command/go <k>`` (the show is loaded
  with the node required and the node reported ``armed_ready``, so every GO is accepted and
  fires); a node replica (`NodeCommunications`, its own process) notes ``time.monotonic()``
  first thing in its command callback. p50/p99 idle and under 5,000 operations/s of background
  load (cue progress and status, what a busy node sends) submitted by a `ControllerClient` in
  another process. Each GO is also timed at every hop: the gateway reading its frame, its
  commit starting and ending (in the controller's worker thread), the controller's loop
  handing it on, the node replica applying it, the callback; and the client's durable reply.
  Floor: one sqlite3 FULL commit of one row, one websockets and one NNG round trip.

Every role runs in its own process (multiprocessing, spawn), so a server never shares a GIL
with its clients; ``time.monotonic()`` (CLOCK_MONOTONIC) is one clock for every process on the
host, so a send in one process and a callback in another compare. The server-side marks come
from wrapping `GatewayCore.on_frame` and `ControllerCore.commit` in the bench's own controller
process, and from a commit listener. Children log to ``<scratch>/<name>.log``; every wait has
a deadline and a stuck phase becomes an ``error`` figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import random
import statistics
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import pynng
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from tqdm import tqdm
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from eventlog import (
    CONTROLLER,
    NODE_JOINED,
    ActionType,
    Event,
    EventLog,
    Operation,
    OperationType,
    OpId,
    State,
    digest,
    fold,
    validate_operation,
)
from eventlog.reducer import SHOW_CUES
from gateway import osc
from gateway.server import CHUNK, Gateway
from gateway.session import GatewayCore
from gateway.view import CUE, CUE_ENABLED, DUMP_END, NEXTCUE, StatusView
from replicas import NodeCommunications
from replicas.client import ControllerClient
from replicas.controller import Controller
from replicas.sequencer import ControllerCore
from tools.bench_replication import (
    PhaseError,
    _commit_floor,
    _guard,
    _percentile,
    node_ops,
    print_table,
)
from tools.demo import free_port_pair

Figures = dict[str, Any]
Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[Message]]

TARGET_DUMP_MS: Final = 100.0
TARGET_IDLE_P50_MS: Final = 1.5
TARGET_IDLE_P99_MS: Final = 3.0
TARGET_LOADED_P99_MS: Final = 10.0

CLIENTS: Final = 50
LOAD_RATE: Final = 5_000
#: the background load is submitted in this many batches a second
LOAD_BATCHES_S: Final = 100
#: nodes of the dump's show (its mixer channels are spread over them)
SHOW_NODES: Final = 4
#: cues per load / ``show_cues`` listing (well under the 64 KiB operation limit)
LISTING: Final = 500
#: fan-out appenders in flight at once (their appends are group-committed)
APPENDERS: Final = 4
FAN_BATCH: Final = 50
LATENCY_NODE: Final = "bench-node"
LOAD_NODE: Final = "bench-load"
FAN_SENDER: Final = "bench-fan"
WARMUP_COMMANDS: Final = 20

START_TIMEOUT: Final = 20.0
STOP_GRACE: Final = 3.0

GO: Final = "/engine/command/go"
_GO_PREFIX: Final = GO.encode() + b"\x00"
_GO_REPLY_PREFIX: Final = b"/reply" + GO.encode() + b"\x00"
_DUMP_END_PREFIX: Final = DUMP_END.encode() + b"\x00"
#: what a fan-out event looks like on the wire (the dump before dump_end is not counted)
_FAN_PREFIXES: Final = (
    (CUE + "fan-").encode(),
    (CUE_ENABLED + "fan-").encode(),
    NEXTCUE.encode() + b"\x00",
)

log = logging.getLogger("cuelog.bench")


@dataclass(frozen=True, slots=True)
class Sizes:
    quick: bool
    cues: int
    channels: int
    dump_repeats: int
    connects: int
    ws_connects: int
    big_commands: int
    fan_events: int
    commands: int
    interval: float
    round_trips: int
    commits: int

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                quick=True,
                cues=10_000,
                channels=1_000,
                dump_repeats=5,
                connects=2,
                ws_connects=1,
                big_commands=30,
                fan_events=500,
                commands=120,
                interval=0.01,
                round_trips=200,
                commits=100,
            )
        return cls(
            quick=False,
            cues=10_000,
            channels=1_000,
            dump_repeats=15,
            connects=15,
            ws_connects=7,
            big_commands=200,
            fan_events=5_000,
            commands=1_000,
            interval=0.01,
            round_trips=1_000,
            commits=300,
        )


# ====================================================================== the show


def _command(name: str, value: Any, sender: str = CONTROLLER, **extra: Any) -> Operation:
    data = {"value": value, "address": f"/engine/command/{name}", **extra}
    return Operation(OperationType.COMMAND, ActionType.UPDATE, sender, name, data)


def big_show_ops(cues: int, channels: int, seed: int = 5) -> list[Operation]:
    """A loaded show of `cues` cues (uuids, as upstream's) and `channels` mixer channels.

    Nodes join; a load lists the first cues and ``show_cues`` listings the rest (every 50th
    cue disabled); nodes play three cues in ten (add, progress, end; the last 20 still
    playing); the operator disables 200 cues; every channel's fader moves twice.
    """
    rng = random.Random(seed)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(cues)]
    nodes = [f"node-{i}" for i in range(SHOW_NODES)]
    ops = [
        Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, NODE_JOINED, {"node": n})
        for n in nodes
    ]
    listed: list[dict[str, Any]] = []
    for i, cue in enumerate(ids):
        item: dict[str, Any] = {"id": cue, "node": nodes[i % SHOW_NODES]}
        if i % 50 == 49:
            item["enabled"] = False
        listed.append(item)
    ops.append(_command("load", "bench-show", cues=listed[:LISTING], nodes=nodes))
    for start in range(LISTING, len(listed), LISTING):
        data = {"cues": listed[start : start + LISTING]}
        ops.append(Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, SHOW_CUES, data))
    played = cues * 3 // 10
    for i, cue in enumerate(ids[:played]):
        node = nodes[i % SHOW_NODES]
        ops.append(
            Operation(OperationType.CUE, ActionType.ADD, node, cue, {"id": cue, "offset": "0"})
        )
        pct = rng.randint(2, 99)
        ops.append(
            Operation(
                OperationType.CUE, ActionType.UPDATE, node, cue, {"id": cue, "percentage": pct}
            )
        )
        if i < played - 20:
            ops.append(Operation(OperationType.CUE, ActionType.REMOVE, node, cue, {"id": cue}))
    for cue in rng.sample(ids, min(200, len(ids))):
        ops.append(_command("cue_enabled", f"{cue} 0"))
    for _ in range(2):
        for c in range(channels):
            node, out, ch = nodes[c % SHOW_NODES], (c // SHOW_NODES) % 2, c // (2 * SHOW_NODES)
            address = f"/{node}/audio/mixer/{out}/{ch}/volume"
            ops.append(_command("player_control", round(rng.random(), 4), address=address))
    ops.append(
        Operation(OperationType.STATUS, ActionType.UPDATE, nodes[0], "nextcue", {"nextcue": ids[0]})
    )
    return [validate_operation(op) for op in ops]


def big_show_events(log_id: str, ops: list[Operation]) -> list[Event]:
    base = time.time() - len(ops) / 1000
    return [
        Event(seq, base + seq / 1000, log_id, op, OpId("bench-show", seq))
        for seq, op in enumerate(ops, 1)
    ]


def _fan_ops(count: int) -> list[Operation]:
    """Events that each change exactly one address, whatever order they commit in."""
    ops: list[Operation] = []
    for i in range(count):
        cue = f"fan-{i}"
        kind = i % 3
        if kind == 0:
            op = Operation(
                OperationType.CUE, ActionType.ADD, FAN_SENDER, cue, {"id": cue, "offset": "0"}
            )
        elif kind == 1:
            op = Operation(
                OperationType.STATUS, ActionType.UPDATE, FAN_SENDER, "nextcue", {"nextcue": cue}
            )
        else:
            op = _command("cue_enabled", f"{cue} 0")
        ops.append(op)
    return ops


def _fan_frames(count: int) -> list[bytes]:
    """The frames the gateway sends for `_fan_ops(count)`, byte for byte."""
    frames: list[bytes] = []
    for i in range(count):
        cue = f"fan-{i}"
        kind = i % 3
        if kind == 0:
            frames.append(osc.encode_int(CUE + cue, 1))
        elif kind == 1:
            frames.append(osc.encode(NEXTCUE, cue))
        else:
            frames.append(osc.encode_int(CUE_ENABLED + cue, 0))
    return frames


def _go_frame(k: int) -> bytes:
    builder = OscMessageBuilder(GO)
    builder.add_arg(k, "i")
    return bytes(builder.build().dgram)


# ====================================================================== child processes


class _Link:
    """A child's end of its pipe to the bench: messages out, commands in."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, **fields: Any) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(fields)

    async def serve(self, handlers: dict[str, Handler]) -> None:
        """Run each command's handler on this loop, one at a time, until ``stop``."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Message] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    msg = {"cmd": "stop"}
                try:
                    loop.call_soon_threadsafe(inbox.put_nowait, msg)
                except RuntimeError:
                    return  # the loop is closed
                if msg.get("cmd") == "stop":
                    return

        threading.Thread(target=read, name="bench-link", daemon=True).start()
        while True:
            msg = await inbox.get()
            cmd = str(msg.get("cmd"))
            if cmd == "stop":
                return
            try:
                if cmd == "cpu":
                    result: Message = {"cpu_s": time.process_time()}
                else:
                    result = await handlers[cmd](msg)
            except Exception as exc:
                log.exception("command %s failed", cmd)
                self.send(kind="error", id=msg.get("id"), error=f"{type(exc).__name__}: {exc}")
            else:
                self.send(kind="reply", id=msg.get("id"), **result)


async def _started(ready: asyncio.Event, tasks: list[asyncio.Task[None]], what: str) -> None:
    """Wait for `ready`; raise what a task died of if one ends first."""
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait(
        {waiter, *tasks}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    if waiter in done:
        return
    waiter.cancel()
    for task in done:
        task.result()
    raise PhaseError(f"{what} not ready within {START_TIMEOUT:g} s")


def _ui_go(event: Event) -> int | None:
    """The ``k`` of a GO the bench's client sent, else None."""
    op = event.op
    if op.target != "go" or not op.sender.startswith("ui:"):
        return None
    value = (op.data or {}).get("value")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Probe:
    """Server side of the latency phase, for each UI GO: when the gateway read its frame,
    when the commit that holds it started and ended (in its worker thread), and when the
    controller's loop handed the committed batch to its listeners."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, float]] = []
        self.spans: list[tuple[int, float, float]] = []
        self.commits: list[tuple[int, int, float, str | None]] = []
        #: how long every commit took in its worker thread (seconds)
        self.durations: list[float] = []

    def on_open(self, log_id: str, state: State) -> None:
        return None

    def on_commit(self, events: list[Event], reasons: list[str | None]) -> None:
        now = time.monotonic()
        for event, reason in zip(events, reasons, strict=True):
            k = _ui_go(event)
            if k is not None:
                self.commits.append((k, event.seq, now, reason))

    def watch(self, gateway: GatewayCore, sequencer: ControllerCore) -> None:
        on_frame, commit = gateway.on_frame, sequencer.commit

        def frame_read(session: Any, frame: bytes, now: float) -> Any:
            if frame.startswith(_GO_PREFIX) and len(frame) >= 4:
                (k,) = struct.unpack(">i", frame[-4:])
                self.frames.append((k, time.monotonic()))
            return on_frame(session, frame, now)

        def timed_commit(batch: Any, now: float, **options: Any) -> Any:
            start = time.monotonic()
            committed = commit(batch, now, **options)
            end = time.monotonic()
            self.durations.append(end - start)
            for event in committed.result.events:
                k = _ui_go(event)
                if k is not None:
                    self.spans.append((k, start, end))
            return committed

        gateway.on_frame = frame_read  # type: ignore[method-assign]
        sequencer.commit = timed_commit  # type: ignore[method-assign]


async def _role_gateway(cfg: Message, link: _Link) -> None:
    """A controller with its gateway, as ``cuelog controller --ws`` runs them."""
    controller = Controller(cfg["db"], cfg["address"])
    gateway = Gateway(controller, "127.0.0.1", 0)
    probe = _Probe()
    controller.listeners.insert(0, probe)  # noted before the gateway folds the batch
    tasks = [asyncio.create_task(controller.run()), asyncio.create_task(gateway.run())]
    try:
        await _started(gateway.ready, tasks, "the gateway")
        core = gateway.core
        assert core is not None and controller.core is not None
        probe.watch(core, controller.core)
        link.send(
            kind="ready", port=gateway.bound_port, head=core.seq, messages=len(core.view.values)
        )

        async def load(msg: Message) -> Message:
            op = _command(
                "load", "bench-latency", cues=[f"c{i}" for i in range(20)], nodes=msg["nodes"]
            )
            seqs = await controller.append_local([op])
            return {"seq": seqs[0]}

        async def fanout(msg: Message) -> Message:
            ops = _fan_ops(int(msg["count"]))
            chunks = iter([ops[i : i + FAN_BATCH] for i in range(0, len(ops), FAN_BATCH)])

            async def appender() -> None:
                for chunk in chunks:
                    await controller.append_local(chunk)

            commits = controller.stats["commits"]
            t_first = time.monotonic()
            await asyncio.gather(*(appender() for _ in range(APPENDERS)))
            return {
                "t_first": t_first,
                "t_committed": time.monotonic(),
                "commits": controller.stats["commits"] - commits,
                **core.stats,
            }

        async def probed(msg: Message) -> Message:
            out = {
                "frames": probe.frames,
                "spans": probe.spans,
                "commits": probe.commits,
                "durations": probe.durations,
                **core.stats,
            }
            probe.frames, probe.spans, probe.commits, probe.durations = [], [], [], []
            return out

        async def digest_ms(msg: Message) -> Message:
            assert controller.core is not None
            return {"ms": _digest_ms(controller.core.elog.state)}

        await link.serve({"load": load, "fanout": fanout, "probe": probed, "digest": digest_ms})
    finally:
        gateway.stop()
        controller.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


def _write_chunk(conn: ServerConnection, frames: list[bytes]) -> None:
    """Frame every message, then hand the lot to the transport in one write (one syscall)."""
    for frame in frames:
        conn.protocol.send_binary(frame)
    conn.transport.write(b"".join(conn.protocol.data_to_send()))


async def _role_raw_ws(cfg: Message, link: _Link) -> None:
    """A bare websockets server: the same frames, no log, no core.

    The dump paths: ``/send`` sends the frames with one ``await send`` each (as the gateway's
    writer does); ``/write`` with one ``broadcast`` each (no await, still one transport write
    and so one syscall a frame); ``/batch`` frames `CHUNK` of them at a time and writes each
    chunk at once. ``/fan`` joins the fan-out set for the ``fanout`` command (``broadcast``
    per frame, or ``batch``). Every path ends what it sends with a ``dump_end`` frame.
    """
    dump: list[bytes] = cfg["dump"]
    fan: list[bytes] = cfg["fan"]
    end = osc.encode(DUMP_END, 0, "raw", "full")
    fans: set[ServerConnection] = set()

    async def handler(conn: ServerConnection) -> None:
        path = conn.request.path if conn.request is not None else "/"
        try:
            if path == "/send":
                for frame in dump:
                    await conn.send(frame)
                await conn.send(end)
            elif path == "/write":
                for frame in dump:
                    broadcast([conn], frame)
                broadcast([conn], end)
            elif path == "/batch":
                for start in range(0, len(dump), CHUNK):
                    _write_chunk(conn, dump[start : start + CHUNK])
                    await conn.drain()
                _write_chunk(conn, [end])
            else:
                fans.add(conn)
                await conn.send(end)
            await conn.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            fans.discard(conn)

    async def fanout(msg: Message) -> Message:
        targets = [conn for conn in fans if conn.protocol.state is OPEN]
        t_first = time.monotonic()
        for start in range(0, len(fan), CHUNK):
            chunk = fan[start : start + CHUNK]
            if msg.get("mode") == "batch":
                for conn in targets:
                    _write_chunk(conn, chunk)
            else:
                for frame in chunk:
                    broadcast(targets, frame)
            await asyncio.sleep(0)
        return {"t_first": t_first, "t_committed": time.monotonic(), "clients": len(targets)}

    async with serve(
        handler, "127.0.0.1", 0, compression=None, max_size=osc.MAX_FRAME_BYTES
    ) as server:
        port = int(next(iter(server.sockets)).getsockname()[1])
        link.send(kind="ready", port=port)
        await link.serve({"fanout": fanout})


async def _role_node(cfg: Message, link: _Link) -> None:
    """A node replica whose command callback notes when each command arrives."""
    fired: list[tuple[str, Any, float]] = []
    applied: list[tuple[int, float]] = []

    def on_command(name: str, value: Any, address: str) -> None:
        fired.append((name, value, time.monotonic()))

    def on_applied(batch: list[Event]) -> None:
        now = time.monotonic()
        for event in batch:
            k = _ui_go(event)
            if k is not None:
                applied.append((k, now))

    comms = NodeCommunications(cfg["address"], cfg["node"], command_callback=on_command)
    comms.replica.on_applied = on_applied
    comms.start()
    try:
        if not await asyncio.to_thread(comms.wait_synced, START_TIMEOUT):
            raise PhaseError(f"{cfg['node']} not in sync with the controller")
        link.send(kind="ready", applied=comms.applied_seq)

        async def arm(msg: Message) -> Message:
            future = comms.send_status("armed_ready", {"armed": "yes"})
            seq = await asyncio.wait_for(asyncio.wrap_future(future), 10.0)
            return {"seq": seq}

        async def report(msg: Message) -> Message:
            return {"fired": [(v, t) for name, v, t in fired if name == "go"], "applied": applied}

        await link.serve({"arm": arm, "fired": report})
    finally:
        comms.stop()
        await asyncio.to_thread(comms.join, STOP_GRACE)


class _Load:
    """Submits `rate` status/cue operations a second through a `ControllerClient`."""

    def __init__(self, address: str, rate: int) -> None:
        self.address = address
        self.rate = rate
        self.ops = node_ops(LOAD_NODE, 3000)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-load", daemon=True)
        self.sent = self.errors = 0
        self.started = self.ended = 0.0
        self.behind = 0

    def _run(self) -> None:
        """Every 1/`LOAD_BATCHES_S` s, submit what is due; a submit that waited for a slow
        commit is followed by a bigger one (up to two batches), so the rate mostly holds."""
        per = max(1, self.rate // LOAD_BATCHES_S)
        with ControllerClient(self.address, timeout=5.0) as client:
            self.started = start = time.monotonic()
            while not self.stop.is_set():
                due = int((time.monotonic() - start) * self.rate) - self.sent
                if due < per:
                    time.sleep((per - due) / self.rate)
                    continue
                if due > 2 * per:
                    self.behind += 1
                count = min(due, 2 * per)
                batch = [self.ops[(self.sent + i) % len(self.ops)] for i in range(count)]
                try:
                    results = client.submit(batch, node=LOAD_NODE)
                except Exception:
                    log.exception("background submit failed")
                    self.errors += count
                else:
                    self.errors += sum(1 for r in results if "seq" not in r)
                self.sent += count
                self.ended = time.monotonic()


async def _role_load(cfg: Message, link: _Link) -> None:
    load = _Load(cfg["address"], int(cfg["rate"]))
    link.send(kind="ready")

    async def start(msg: Message) -> Message:
        load.thread.start()
        return {}

    async def finish(msg: Message) -> Message:
        load.stop.set()
        await asyncio.to_thread(load.thread.join, 10.0)
        seconds = load.ended - load.started
        return {
            "sent": load.sent,
            "errors": load.errors,
            "seconds": seconds,
            "rate": load.sent / seconds if seconds > 0 else 0.0,
            "fell_behind": load.behind,
        }

    try:
        await link.serve({"start": start, "finish": finish})
    finally:
        load.stop.set()


async def _role_echo(cfg: Message, link: _Link) -> None:
    """Loopback echo: a websockets server and an NNG REP socket (the floor's two hops)."""
    rep = pynng.Rep0()
    port = free_port_pair()
    rep.listen(f"tcp://127.0.0.1:{port}")

    def echo() -> None:
        while True:
            try:
                rep.send(rep.recv())
            except pynng.NNGException:
                return

    threading.Thread(target=echo, name="bench-nng-echo", daemon=True).start()

    async def handler(conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                await conn.send(message)

    try:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            ws_port = int(next(iter(server.sockets)).getsockname()[1])
            link.send(kind="ready", ws_port=ws_port, nng=f"tcp://127.0.0.1:{port}")
            await link.serve({})
    finally:
        rep.close()


_ROLES: Final[dict[str, Callable[[Message, _Link], Coroutine[Any, Any, None]]]] = {
    "gateway": _role_gateway,
    "raw_ws": _role_raw_ws,
    "node": _role_node,
    "load": _role_load,
    "echo": _role_echo,
}


def _child_main(role: str, cfg: Message, conn: Connection, log_path: str) -> None:
    """Entry point of a bench child (spawned): run `role`; report a failure as a message."""
    logging.basicConfig(
        filename=log_path,
        level=logging.WARNING,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    link = _Link(conn)
    try:
        asyncio.run(_ROLES[role](cfg, link))
    except Exception as exc:
        log.exception("role %s failed", role)
        link.send(kind="error", id=None, error=f"{type(exc).__name__}: {exc}")


# ====================================================================== the bench's side


class _Child:
    """One child process: started, asked, always stopped (stop, then SIGTERM, then SIGKILL)."""

    def __init__(self, scratch: Path, name: str, role: str, cfg: Message) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.log_path = scratch / f"{name}.log"
        self._conn, theirs = context.Pipe()
        self._proc = context.Process(
            target=_child_main,
            args=(role, cfg, theirs, str(self.log_path)),
            name=f"bench-{name}",
            daemon=True,
        )
        self._proc.start()
        theirs.close()
        self._lock = threading.Lock()
        self._ids = 0
        try:
            self.ready = self._recv(None, START_TIMEOUT, "ready")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln]
            if lines:
                return f" (its log ends: {lines[-1].strip()[:300]})"
        return ""

    def _recv(self, want: int | None, timeout: float, what: str) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._conn.poll(left):
                raise PhaseError(f"{self.name}: no {what} within {timeout:g} s{self._tail()}")
            try:
                msg: Message = self._conn.recv()
            except (EOFError, OSError):
                raise PhaseError(f"{self.name} exited{self._tail()}") from None
            if msg.get("kind") == "error":
                raise PhaseError(f"{self.name}: {msg.get('error')}")
            if want is None or msg.get("id") == want:
                return msg

    def ask(self, cmd: str, timeout: float = 30.0, **fields: Any) -> Message:
        with self._lock:
            self._ids += 1
            try:
                self._conn.send({"cmd": cmd, "id": self._ids, **fields})
            except (OSError, ValueError):
                raise PhaseError(f"{self.name} is gone{self._tail()}") from None
            return self._recv(self._ids, timeout, f"reply to {cmd}")

    def cpu(self) -> float | None:
        try:
            return float(self.ask("cpu", 5.0)["cpu_s"])
        except PhaseError:
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send({"cmd": "stop"})
        self._proc.join(STOP_GRACE)
        if self._proc.is_alive():
            log.warning(
                "bench child %s did not stop in %g s: terminating it", self.name, STOP_GRACE
            )
            self._proc.terminate()
            self._proc.join(STOP_GRACE)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(STOP_GRACE)
        self._conn.close()


def _address() -> str:
    return f"tcp://127.0.0.1:{free_port_pair()}"


def _ms(values: list[float]) -> Figures:
    """p50 / p99 / max in milliseconds of durations in seconds."""
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": _percentile(ordered, 0.50) * 1000,
        "p99_ms": _percentile(ordered, 0.99) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def _ratio(top: Any, bottom: Any) -> float | None:
    if not isinstance(top, int | float) or not isinstance(bottom, int | float) or bottom <= 0:
        return None
    return float(top) / float(bottom)


class _LeanClient(asyncio.Protocol):
    """A WebSocket client that reads frames without websockets' per-frame parser.

    websockets' own parser costs about 20 µs a frame in Python, so a 21,000-frame dump takes
    a websockets client some 0.4 s whatever the server does. This client does the handshake
    with websockets (its sans-I/O `ClientProtocol` writes the request and checks the server's
    101), then counts the server's frames (never masked, never fragmented here) from their
    headers, so what it measures is the server. It only reads.
    """

    def __init__(self, url: str, target: int | None = None) -> None:
        self.handshake = ClientProtocol(parse_uri(url), max_size=None)
        self.target = target
        self.opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.synced = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._rest = b""
        self.frames = 0
        #: fan-out frames received after the first dump_end
        self.matched = 0
        self.dump_ends: list[float] = []
        self.done_at: float | None = None

    @classmethod
    async def open(cls, url: str, target: int | None = None) -> _LeanClient:
        where = parse_uri(url)
        loop = asyncio.get_running_loop()
        client = cls(url, target)
        await loop.create_connection(lambda: client, where.host, where.port)
        async with asyncio.timeout(START_TIMEOUT):
            await client.opened
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.handshake.send_request(self.handshake.connect())
        for data in self.handshake.data_to_send():
            transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.handshake.receive_data(bytes(self._head[: end + 4]))
            self.handshake.events_received()
            if self.handshake.state is not OPEN:
                why = self.handshake.handshake_exc
                self.opened.set_exception(ConnectionError(f"handshake refused: {why}"))
                self.close()
                return
            self.opened.set_result(time.monotonic())
            data = bytes(self._head[end + 4 :])
        buf = self._rest + data if self._rest else data
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if start + length > size:
                break
            if buf[pos] == 0x82:  # FIN, binary
                self._frame(buf, start)
            pos = start + length
        self._rest = buf[pos:]

    def _frame(self, buf: bytes, start: int) -> None:
        self.frames += 1
        if buf.startswith(_DUMP_END_PREFIX, start):
            self.dump_ends.append(time.monotonic())
            self.synced.set()
        elif self.dump_ends and buf.startswith(_FAN_PREFIXES, start):
            self.matched += 1
            if self.target is not None and self.matched >= self.target and self.done_at is None:
                self.done_at = time.monotonic()


# ---------------------------------------------------------------------- dump


def _core_dump(state: State, log_id: str) -> tuple[float, float, list[bytes]]:
    """One client's whole dump from a fresh `GatewayCore`: (connect s, total s, frames)."""
    core = GatewayCore(StatusView(state.copy()), log_id)
    start = time.perf_counter()
    session = core.connect("127.0.0.1")
    connected = time.perf_counter()
    frames: list[bytes] = []
    while session.has_output():
        frames.extend(session.take(CHUNK))
    return connected - start, time.perf_counter() - start, frames


def _naive(items: list[tuple[str, Any]]) -> tuple[float, list[bytes]]:
    """The same messages, one ``OscMessageBuilder`` each (what a straightforward server does)."""
    start = time.perf_counter()
    out: list[bytes] = []
    for address, value in items:
        builder = OscMessageBuilder(address)
        builder.add_arg(value)
        out.append(bytes(builder.build().dgram))
    return time.perf_counter() - start, out


async def _receive_dump(url: str) -> Figures:
    """Connect, read up to dump_end; how long the client waited."""
    t0 = time.monotonic()
    async with connect(
        url, compression=None, max_size=osc.MAX_FRAME_BYTES, open_timeout=10
    ) as conn:
        t_open = time.monotonic()
        count = 0
        async with asyncio.timeout(30):
            async for frame in conn:
                count += 1
                if isinstance(frame, bytes) and frame.startswith(_DUMP_END_PREFIX):
                    break
        t_end = time.monotonic()
    return {
        "total_s": t_end - t0,
        "open_s": t_open - t0,
        "after_open_s": t_end - t_open,
        "messages": count,
    }


async def _receive_dump_lean(url: str) -> Figures:
    t0 = time.monotonic()
    client = await _LeanClient.open(url)
    try:
        t_open = client.opened.result()
        async with asyncio.timeout(30):
            await client.synced.wait()
    finally:
        client.close()
    t_end = client.dump_ends[0]
    return {
        "total_s": t_end - t0,
        "open_s": t_open - t0,
        "after_open_s": t_end - t_open,
        "messages": client.frames,
    }


def _connects(url: str, count: int, lean: bool) -> list[Figures]:
    receive = _receive_dump_lean if lean else _receive_dump

    async def main() -> list[Figures]:
        return [await receive(url) for _ in range(count)]

    return asyncio.run(main())


def _summarise(runs: list[Figures]) -> Figures:
    """The first connection on its own (cold caches), the median of the rest."""
    rest = runs[1:] or runs
    return {
        "connections": len(runs),
        "messages": runs[0]["messages"],
        "first_ms": runs[0]["total_s"] * 1000,
        "p50_ms": statistics.median(r["total_s"] for r in rest) * 1000,
        "best_ms": min(r["total_s"] for r in rest) * 1000,
        "handshake_p50_ms": statistics.median(r["open_s"] for r in rest) * 1000,
    }


def _bench_dump(scratch: Path, sizes: Sizes) -> Figures:
    ops = big_show_ops(sizes.cues, sizes.channels)
    db = scratch / "dump.db"
    with EventLog.open(db, synchronous="OFF") as elog:
        events = big_show_events(elog.log_id, ops)
        elog.append_events(events)
        log_id = elog.log_id
    started = time.perf_counter()
    state = fold(events)
    fold_s = time.perf_counter() - started
    started = time.perf_counter()
    view = StatusView(state.copy())
    view_s = time.perf_counter() - started
    items = list(view.values.items())
    osc._prefixes.clear()  # the first dump of a process encodes every address prefix
    _, cold_s, frames = _core_dump(state, log_id)
    runs = [_core_dump(state, log_id) for _ in range(sizes.dump_repeats)]
    naive_runs = [_naive(items) for _ in range(max(3, sizes.dump_repeats // 3))]
    naive_frames = naive_runs[0][1]
    core_p50 = statistics.median(r[1] for r in runs)
    naive_p50 = statistics.median(r[0] for r in naive_runs)
    out: Figures = {
        "cues": len(state.cues),
        "mixer_channels": len(state.mixer),
        "events": len(events),
        "messages": len(frames),
        "bytes": sum(len(f) for f in frames),
        "fold_ms": fold_s * 1000,
        "view_build_ms": view_s * 1000,
        "core": {
            "cold_ms": cold_s * 1000,
            "p50_ms": core_p50 * 1000,
            "best_ms": min(r[1] for r in runs) * 1000,
            "connect_p50_ms": statistics.median(r[0] for r in runs) * 1000,
            "repeats": len(runs),
        },
        "naive": {
            "p50_ms": naive_p50 * 1000,
            # the gateway's frames are these plus its dump_begin/dump_end markers
            "same_bytes": not Counter(naive_frames) - Counter(frames),
            "markers": len(frames) - len(naive_frames),
        },
        "core_vs_naive": _ratio(core_p50, naive_p50),
    }
    # the lean client first: its first connection finds the server's caches cold
    with _Child(scratch, "dump-gateway", "gateway", {"db": str(db), "address": _address()}) as gw:
        url = f"ws://127.0.0.1:{gw.ready['port']}/realtime"
        out["gateway"] = {
            "lean": _summarise(_connects(url, sizes.connects, lean=True)),
            "websockets": _summarise(_connects(url, sizes.ws_connects, lean=False)),
        }
        cues = list(state.cues)[: sizes.big_commands]
        gw.ask("probe")  # forget the commits so far
        out["big_show_reply"] = _guard(
            lambda: asyncio.run(_big_show_replies(url, cues, sizes.big_commands))
        )
        out["big_show_commit"] = _ms(gw.ask("probe")["durations"])
        out["state_digest_ms"] = gw.ask("digest")["ms"]
    body = frames[:-1] if frames[-1].startswith(_DUMP_END_PREFIX) else frames
    paths = ("send", "batch") if sizes.quick else ("send", "write", "batch")
    with _Child(scratch, "dump-raw", "raw_ws", {"dump": body, "fan": []}) as raw:
        for path in paths:
            url = f"ws://127.0.0.1:{raw.ready['port']}/{path}"
            out[f"raw_{path}"] = {
                "lean": _summarise(_connects(url, sizes.connects, lean=True)),
                "websockets": _summarise(_connects(url, sizes.ws_connects, lean=False)),
            }
    for client in ("lean", "websockets"):
        out[f"{client}_vs_raw_send"] = _ratio(
            out["gateway"][client]["p50_ms"], out["raw_send"][client]["p50_ms"]
        )
    return out


def _digest_ms(state: State) -> float:
    """How long `digest` of `state` takes (p50 of 5): the controller digests its head after
    answering a commit (at least every 0.25 s under load)."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        digest(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def _big_show_replies(url: str, cues: list[str], count: int) -> Figures:
    """With the big show loaded: ``cue_enabled`` commands, each sent once the last one's
    (durable) reply is in; how long each reply takes."""
    address = "/engine/command/cue_enabled"
    prefix = b"/reply" + address.encode() + b"\x00"
    times: list[float] = []
    errors = 0
    async with connect(url, compression=None, max_size=osc.MAX_FRAME_BYTES) as conn:
        async with asyncio.timeout(60):
            async for frame in conn:
                if isinstance(frame, bytes) and frame.startswith(_DUMP_END_PREFIX):
                    break
        for i in range(count):
            builder = OscMessageBuilder(address)
            builder.add_arg(f"{cues[i % len(cues)]} {i % 2}", "s")
            payload = bytes(builder.build().dgram)
            await asyncio.sleep(0.02)
            sent = time.monotonic()
            await conn.send(payload)
            async with asyncio.timeout(10):
                async for frame in conn:
                    if isinstance(frame, bytes) and frame.startswith(prefix):
                        times.append(time.monotonic() - sent)
                        status = json.loads(OscMessage(frame).params[0]).get("status")
                        errors += status != "ok"
                        break
    return {**_ms(times), "errors": errors}


# ---------------------------------------------------------------------- fan-out


async def _fan_run(url: str, server: _Child, count: int, mode: str = "") -> Figures:
    """`CLIENTS` lean clients join; the server sends `count` events; when has each all?"""
    clients: list[_LeanClient] = []
    try:
        async with asyncio.timeout(START_TIMEOUT):
            clients = list(
                await asyncio.gather(*(_LeanClient.open(url, count) for _ in range(CLIENTS)))
            )
            await asyncio.gather(*(c.synced.wait() for c in clients))
        await asyncio.sleep(0.2)
        cpu = await asyncio.to_thread(server.cpu)
        bench_cpu = time.process_time()
        timeout = 60.0 + count / 200
        started = await asyncio.to_thread(server.ask, "fanout", timeout, count=count, mode=mode)
        deadline = time.monotonic() + 20.0 + count / 500
        while any(c.done_at is None for c in clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        bench_cpu = time.process_time() - bench_cpu
        cpu_after = await asyncio.to_thread(server.cpu)
    finally:
        for client in clients:
            client.close()
    reached = [c.done_at for c in clients if c.done_at is not None]
    least = min((c.matched for c in clients), default=0)
    if len(reached) < CLIENTS:
        raise PhaseError(
            f"only {len(reached)} of {CLIENTS} clients got all {count:,} messages "
            f"(least: {least:,})"
        )
    seconds = max(reached) - started["t_first"]
    commit_s = started["t_committed"] - started["t_first"]
    server_cpu = _delta(cpu, cpu_after)
    out: Figures = {
        "clients": CLIENTS,
        "events": count,
        "seconds": seconds,
        "events_s": count / seconds,
        "messages_s": count * CLIENTS / seconds,
        "first_client_s": min(reached) - started["t_first"],
        "commit_s": commit_s,
        "committed_events_s": count / commit_s if commit_s > 0 else None,
        "client_resyncs": sum(len(c.dump_ends) - 1 for c in clients),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_message": None
        if server_cpu is None
        else server_cpu / (count * CLIENTS) * 1e6,
        "bench_clients_cpu_s": bench_cpu,
    }
    for key in ("commits", "resyncs", "drops"):
        if key in started:
            out[f"server_{key}"] = started[key]
    return out


def _fan(url: str, server: _Child, count: int, mode: str) -> Figures:
    return asyncio.run(_fan_run(url, server, count, mode))


def _bench_fanout(scratch: Path, sizes: Sizes) -> Figures:
    count = sizes.fan_events
    out: Figures = {}
    db = scratch / "fan.db"
    with _Child(scratch, "fan-gateway", "gateway", {"db": str(db), "address": _address()}) as gw:
        url = f"ws://127.0.0.1:{gw.ready['port']}/realtime"
        out["gateway"] = _guard(functools.partial(_fan, url, gw, count, ""))
    raw_cfg = {"dump": [], "fan": _fan_frames(count)}
    with _Child(scratch, "fan-raw", "raw_ws", raw_cfg) as raw:
        url = f"ws://127.0.0.1:{raw.ready['port']}/fan"
        for mode in ("broadcast", "batch"):
            out[f"raw_{mode}"] = _guard(functools.partial(_fan, url, raw, count, mode))
    out["ratio"] = _ratio(out["gateway"].get("events_s"), out["raw_broadcast"].get("events_s"))
    return out


# ---------------------------------------------------------------------- command latency


class _CommandClient:
    """A UI that sends GOs and notes when each reply arrives (by the reply's seq)."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.synced = asyncio.Event()
        self.replies: dict[int, tuple[float, str]] = {}
        self.unmatched: list[str] = []
        self.received = 0

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.conn:
                if not isinstance(frame, bytes):
                    continue
                self.received += 1
                if frame.startswith(_GO_REPLY_PREFIX):
                    now = time.monotonic()
                    reply = json.loads(OscMessage(frame).params[0])
                    if isinstance(reply.get("seq"), int):
                        self.replies[reply["seq"]] = (now, str(reply.get("status")))
                    else:
                        self.unmatched.append(str(reply))
                elif frame.startswith(_DUMP_END_PREFIX):
                    self.synced.set()

    async def send(self, frame: bytes) -> float:
        sent = time.monotonic()
        await self.conn.send(frame)
        return sent


async def _send_commands(
    client: _CommandClient, first: int, count: int, interval: float, rng: random.Random
) -> dict[int, float]:
    """Open loop: GO ``first``..``first+count-1`` on a jittered schedule, whatever the replies."""
    frames = [(k, _go_frame(k)) for k in range(first, first + count)]
    sent: dict[int, float] = {}
    due = time.monotonic() + 0.01
    for k, frame in frames:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[k] = await client.send(frame)
        due += interval * rng.uniform(0.5, 1.5)
    return sent


def _collect(
    sent: dict[int, float],
    server: _Child,
    node: _Child,
    client: _CommandClient,
) -> Figures:
    """Join what each process noted for the GOs in `sent`; split their latency by hop."""
    wanted = set(sent)
    deadline = time.monotonic() + 10.0
    fired: dict[int, float] = {}
    while True:
        report = node.ask("fired")
        fired = {int(k): t for k, t in report["fired"] if k in wanted}
        if len(fired) >= len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    applied = {int(k): t for k, t in report["applied"] if k in wanted}
    probe = server.ask("probe")
    frames = {int(k): t for k, t in probe["frames"] if k in wanted}
    spans = {int(k): (start, end) for k, start, end in probe["spans"] if k in wanted}
    commits = {
        int(k): (int(seq), t, reason) for k, seq, t, reason in probe["commits"] if k in wanted
    }
    hops: dict[str, list[float]] = {key: [] for key, _ in _PARTS}
    refused = 0
    for k, t_send in sent.items():
        t_in, span, found = frames.get(k), spans.get(k), commits.get(k)
        t_applied, t_fired = applied.get(k), fired.get(k)
        if found is not None:
            refused += found[2] is not None
            if found[0] in client.replies:
                hops["reply"].append(client.replies[found[0]][0] - t_send)
        marks = [
            t_send,
            t_in,
            span[0] if span else None,
            span[1] if span else None,
            found[1] if found else None,
            t_applied,
            t_fired,
        ]
        for (key, _), start, end in zip(_PARTS, marks, marks[1:], strict=False):
            if start is not None and end is not None:
                hops[key].append(end - start)
        if t_fired is not None:
            hops["total"].append(t_fired - t_send)
    return {
        "commands": len(sent),
        "fired": len(fired),
        "refused": refused,
        **{key: _ms(values) for key, values in hops.items()},
    }


async def _latency_run(
    url: str, sizes: Sizes, server: _Child, node: _Child, load: _Child
) -> Figures:
    rng = random.Random(3)
    out: Figures = {}
    async with connect(
        url, compression=None, max_size=osc.MAX_FRAME_BYTES, open_timeout=10
    ) as conn:
        client = _CommandClient(conn)
        reader = asyncio.create_task(client.read())
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await client.synced.wait()
            warm = await _send_commands(client, -WARMUP_COMMANDS, WARMUP_COMMANDS, 0.02, rng)
            await asyncio.sleep(0.3)
            warmup = await asyncio.to_thread(_collect, warm, server, node, client)
            if warmup["fired"] == 0:
                statuses = sorted({status for _, status in client.replies.values()})
                raise PhaseError(f"no warm-up GO reached the node (replies: {statuses})")
            procs = {"server": server, "node": node}
            for phase in ("idle", "loaded"):
                if phase == "loaded":
                    procs["load"] = load
                    await asyncio.to_thread(load.ask, "start")
                    await asyncio.sleep(0.5)
                cpu = {name: await asyncio.to_thread(p.cpu) for name, p in procs.items()}
                bench_cpu = time.process_time()
                t0 = time.monotonic()
                first = 0 if phase == "idle" else 1_000_000
                sent = await _send_commands(client, first, sizes.commands, sizes.interval, rng)
                await asyncio.sleep(0.2)
                seconds = time.monotonic() - t0
                used = {
                    name: _delta(cpu[name], await asyncio.to_thread(p.cpu))
                    for name, p in procs.items()
                }
                used["bench_client"] = time.process_time() - bench_cpu
                if phase == "loaded":
                    out["load"] = await asyncio.to_thread(load.ask, "finish", 20.0)
                figures = await asyncio.to_thread(_collect, sent, server, node, client)
                figures["cpu_s"] = used
                figures["seconds"] = seconds
                figures["rate"] = 1 / sizes.interval
                out[phase] = figures
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return out


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 3)


def _bench_latency(scratch: Path, sizes: Sizes) -> Figures:
    address = _address()
    db = scratch / "latency.db"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            _Child(scratch, "lat-gateway", "gateway", {"db": str(db), "address": address})
        )
        node = stack.enter_context(
            _Child(scratch, "lat-node", "node", {"address": address, "node": LATENCY_NODE})
        )
        load = stack.enter_context(
            _Child(scratch, "lat-load", "load", {"address": address, "rate": LOAD_RATE})
        )
        server.ask("load", nodes=[LATENCY_NODE])
        node.ask("arm")
        url = f"ws://127.0.0.1:{server.ready['port']}/realtime"
        out = asyncio.run(_latency_run(url, sizes, server, node, load))
    out["load_target"] = LOAD_RATE
    return out


# ---------------------------------------------------------------------- floor


async def _ws_round_trips(port: int, count: int) -> list[float]:
    times: list[float] = []
    url = f"ws://127.0.0.1:{port}/"
    async with connect(url, compression=None) as conn:
        payload = _go_frame(1)
        for _ in range(20):
            await conn.send(payload)
            await conn.recv()
        for _ in range(count):
            start = time.perf_counter()
            await conn.send(payload)
            await conn.recv()
            times.append(time.perf_counter() - start)
    return times


def _nng_round_trips(address: str, count: int) -> list[float]:
    times: list[float] = []
    with pynng.Req0(recv_timeout=5000, send_timeout=5000) as req:
        req.dial(address, block=True)
        payload = b'{"k":"beat","node":"bench","applied":1}'
        for _ in range(20):
            req.send(payload)
            req.recv()
        for _ in range(count):
            start = time.perf_counter()
            req.send(payload)
            req.recv()
            times.append(time.perf_counter() - start)
    return times


def _bench_floor(scratch: Path, sizes: Sizes) -> Figures:
    commit = _commit_floor(scratch, sizes.commits)
    with _Child(scratch, "echo", "echo", {}) as echo:
        ws = _ms(asyncio.run(_ws_round_trips(int(echo.ready["ws_port"]), sizes.round_trips)))
        nng = _ms(_nng_round_trips(str(echo.ready["nng"]), sizes.round_trips))
    floor = {key: commit[key] + ws[key] + nng[key] for key in ("p50_ms", "p99_ms")}
    return {"commit": commit, "ws_round_trip": ws, "nng_round_trip": nng, "floor": floor}


# ---------------------------------------------------------------------- the suite


def run_gateway(quick: bool, scratch: Path) -> Figures:
    """Run every gateway measurement (see the module docstring); return the figures."""
    sizes = Sizes.pick(quick)
    figures: Figures = {
        "suite": "gateway",
        "quick": quick,
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        "clients": CLIENTS,
    }
    phases: list[tuple[str, str, Callable[[], Figures]]] = [
        ("dump", "dump", lambda: _bench_dump(scratch, sizes)),
        ("fanout", "fan-out", lambda: _bench_fanout(scratch, sizes)),
        ("floor", "floor", lambda: _bench_floor(scratch, sizes)),
        ("latency", "command latency", lambda: _bench_latency(scratch, sizes)),
    ]
    bar = tqdm(total=len(phases), unit="phase", disable=not sys.stderr.isatty())
    started = time.perf_counter()
    try:
        for key, desc, phase in phases:
            bar.set_description(desc)
            figures[key] = _guard(phase)
            bar.update(1)
    finally:
        bar.close()
    lat, floor = figures["latency"], figures["floor"]
    idle_p50 = lat.get("idle", {}).get("total", {}).get("p50_ms")
    figures["latency_vs_floor"] = _ratio(idle_p50, floor.get("floor", {}).get("p50_ms"))
    figures["elapsed_s"] = time.perf_counter() - started
    return figures


# ====================================================================== printing


def _num(value: Any, fmt: str = ".2f", unit: str = " ms") -> str:
    return "n/a" if not isinstance(value, int | float) else f"{value:{fmt}}{unit}"


def _meets(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "NO")


def _below(value: Any, target: float) -> bool | None:
    return None if not isinstance(value, int | float) else value < target


def print_gateway(figures: Figures) -> None:
    """A readable table of `run_gateway`'s figures, each with its target and baseline."""
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    missed: list[str] = []

    def row(label: str, value: str = "", target: str = "", ok: bool | None = None) -> None:
        rows.append((label, value, target, _meets(ok)))
        if ok is False:
            missed.append(label.strip())

    def failed(label: str, part: Any) -> bool:
        if not isinstance(part, dict) or not part:
            row(label, "n/a")
            return True
        if "error" in part:
            row(label, "error")
            notes.append(f"{label.strip()}: {part['error']}")
            return True
        return False

    _dump_rows(figures.get("dump", {}), row, failed)
    _fan_rows(figures, row, failed)
    _latency_rows(figures.get("latency", {}), row, failed)
    floor = figures.get("floor", {})
    if not failed("floor", floor):
        row("floor, same run: p50 / p99")
        for key, label in (
            ("commit", "  one sqlite3 FULL commit of one row"),
            ("ws_round_trip", "  websockets round trip, loopback"),
            ("nng_round_trip", "  NNG REQ/REP round trip, loopback"),
            ("floor", "  floor: the commit + both round trips"),
        ):
            part = floor[key]
            row(label, f"{_num(part['p50_ms'], '.2f', '')} / {_num(part['p99_ms'], '.2f')}")
        row("  ratio idle p50 / floor p50", _num(figures.get("latency_vs_floor"), unit=""))

    quick = " (quick)" if figures.get("quick") else ""
    print_table(
        f"cuelog gateway bench: controller log synchronous=FULL, tcp loopback, every role its "
        f"own process, {figures.get('cpus')} CPUs (load average "
        f"{figures.get('loadavg_1m', 0.0):.1f} at the start){quick}",
        rows,
        notes,
    )
    for line in _breakdown(figures.get("latency", {})):
        print(line)
    for line in _where_time_goes(figures, missed):
        print(line)
    if "elapsed_s" in figures:
        print(
            f"(whole run {figures['elapsed_s']:.1f} s; figures vary with the machine: "
            "compare the ratios)"
        )


Row = Callable[..., None]
Failed = Callable[[str, Any], bool]


def _pair(part: Figures, key: str = "p50_ms") -> str:
    return f"{_num(part['lean'][key], '.1f', '')} / {_num(part['websockets'][key], '.1f')}"


def _dump_rows(dump: Figures, row: Row, failed: Failed) -> None:
    if failed("dump", dump):
        return
    target = f"< {TARGET_DUMP_MS:g} ms"
    row(
        f"dump: {dump['cues']:,} cues, {dump['mixer_channels']:,} mixer channels",
        f"{dump['messages']:,} msgs",
    )
    core = dump["core"]
    row(
        "  GatewayCore: connect + take until empty, p50",
        _num(core["p50_ms"]),
        target,
        _below(core["p50_ms"], TARGET_DUMP_MS),
    )
    row("    of which connect (the copy of the address map)", _num(core["connect_p50_ms"]))
    row("    first dump of a process (address cache cold)", _num(core["cold_ms"]))
    naive = dump["naive"]
    row("  baseline: python-osc OscMessageBuilder, same messages", _num(naive["p50_ms"]))
    row("    same bytes as the gateway's", str(naive["same_bytes"]))
    row("  ratio GatewayCore / python-osc", _num(dump["core_vs_naive"], unit=""))
    gateway = dump.get("gateway", {})
    if not failed("  controller + gateway, connect -> dump_end", gateway):
        lean, ws = gateway["lean"], gateway["websockets"]
        row(
            "  lean client (frames counted), connect -> dump_end, p50",
            _num(lean["p50_ms"], ".1f"),
            target,
            _below(lean["p50_ms"], TARGET_DUMP_MS),
        )
        row("    first connection (the server's caches cold)", _num(lean["first_ms"], ".1f"))
        row("    of which the websocket handshake", _num(lean["handshake_p50_ms"], ".1f"))
        row(
            "  websockets client (asyncio), connect -> dump_end, p50",
            _num(ws["p50_ms"], ".1f"),
            target,
            _below(ws["p50_ms"], TARGET_DUMP_MS),
        )
    for key, label in (
        ("raw_send", "  baseline: bare server, await send per frame"),
        ("raw_write", "  baseline: bare server, broadcast write per frame"),
        ("raw_batch", "  baseline: bare server, one write per 256 frames"),
    ):
        part = dump.get(key)
        if part is not None and not failed(label, part):
            row(f"{label}, lean / websockets client", _pair(part))
    lean_ratio = _num(dump.get("lean_vs_raw_send"), unit="")
    ws_ratio = _num(dump.get("websockets_vs_raw_send"), unit="")
    row("  ratio gateway / bare await-send, lean / websockets client", f"{lean_ratio} / {ws_ratio}")
    big = dump.get("big_show_reply", {})
    if not failed("  command reply with this show loaded", big):
        row(
            "  cue_enabled command -> durable reply with this show loaded, p50 / p99",
            f"{_num(big['p50_ms'], '.2f', '')} / {_num(big['p99_ms'], '.2f')}",
        )
        commit = dump.get("big_show_commit", {})
        row(
            "    of which the commit in its worker thread, p50 / p99",
            f"{_num(commit.get('p50_ms'), '.2f', '')} / {_num(commit.get('p99_ms'), '.2f')}",
        )
        row(
            "    digest of the controller's state (after the answers, off their path)",
            _num(dump.get("state_digest_ms")),
        )
    row(
        "  (once per log open: fold / StatusView of the state)",
        f"{dump['fold_ms']:.0f} / {dump['view_build_ms']:.0f} ms",
    )


def _fan_rows(figures: Figures, row: Row, failed: Failed) -> None:
    fan = figures.get("fanout", {})
    if failed("fan-out", fan):
        return
    gw = fan.get("gateway", {})
    label = f"fan-out to {figures.get('clients', CLIENTS)} websocket clients"
    if not failed(label, gw):
        row(f"{label}, {gw['events']:,} events of one message each")
        row("  events/s delivered to every client", _num(gw["events_s"], ",.0f", " ev/s"))
        row("  messages/s sent (events x clients)", _num(gw["messages_s"], ",.0f", " /s"))
        row(
            "  events/s committed meanwhile (append_local, durable)",
            _num(gw["committed_events_s"], ",.0f", " ev/s"),
        )
        row(
            "  first / last client complete after",
            f"{gw['first_client_s']:.2f} / {gw['seconds']:.2f} s",
        )
        row(
            "  server CPU (the whole process) per message sent",
            _num(gw["server_cpu_us_per_message"], ".1f", " µs"),
        )
        row("  the 50 clients' CPU (one process)", _num(gw["bench_clients_cpu_s"], ".2f", " s"))
        row(
            "  resyncs / drops",
            f"{gw.get('server_resyncs', 0)} / {gw.get('server_drops', 0)}",
            "0 / 0",
            gw.get("server_resyncs", 0) == 0 and gw.get("server_drops", 0) == 0,
        )
    for key, label in (
        ("raw_broadcast", "  baseline: bare server, websockets broadcast per frame"),
        ("raw_batch", "  baseline: bare server, one write per client per 256 frames"),
    ):
        raw = fan.get(key, {})
        if not failed(label, raw):
            row(label, _num(raw["events_s"], ",.0f", " ev/s"))
            row(
                "    its CPU per message sent", _num(raw["server_cpu_us_per_message"], ".1f", " µs")
            )
    row("  ratio gateway / bare broadcast", _num(fan.get("ratio"), unit=""))


def _latency_rows(lat: Figures, row: Row, failed: Failed) -> None:
    if failed("command latency", lat):
        return
    idle, loaded, load = lat.get("idle", {}), lat.get("loaded", {}), lat.get("load", {})
    row(
        f"command latency, websocket GO -> node callback ({idle.get('commands', 0):,} "
        f"a phase, ~{idle.get('rate', 0):.0f}/s)"
    )
    if not failed("  idle", idle):
        total = idle["total"]
        row(
            "  idle p50",
            _num(total["p50_ms"]),
            f"< {TARGET_IDLE_P50_MS:g} ms",
            _below(total["p50_ms"], TARGET_IDLE_P50_MS),
        )
        row(
            "  idle p99",
            _num(total["p99_ms"]),
            f"< {TARGET_IDLE_P99_MS:g} ms",
            _below(total["p99_ms"], TARGET_IDLE_P99_MS),
        )
    if not failed("  loaded", loaded):
        total = loaded["total"]
        rate = _num(load.get("rate"), ",.0f", "")
        row(f"  loaded ({rate} ev/s background, asked {LOAD_RATE:,}) p50", _num(total["p50_ms"]))
        row(
            "  loaded p99",
            _num(total["p99_ms"]),
            f"< {TARGET_LOADED_P99_MS:g} ms",
            _below(total["p99_ms"], TARGET_LOADED_P99_MS),
        )
    if "total" in idle and "total" in loaded:
        lost = sum(p["commands"] - p["fired"] for p in (idle, loaded))
        row("  GOs that never fired / refused", f"{lost} / {idle['refused'] + loaded['refused']}")


#: the hops of a command, in order (each from the previous mark to the next), then totals
_PARTS: Final = (
    ("client_to_gateway", "client send -> the gateway reads the frame"),
    ("gateway_to_commit", "frame -> its commit starts (task, queue, thread)"),
    ("commit", "the commit in its worker thread (sqlite, fold, digest)"),
    ("commit_to_loop", "commit done -> controller loop has it (listeners)"),
    ("durable_to_applied", "durable -> node replica applied it (NNG)"),
    ("applied_to_callback", "applied -> command callback runs (dispatcher)"),
    ("total", "client send -> node callback"),
    ("reply", "client send -> the client has the durable reply"),
)


def _breakdown(lat: Figures) -> Iterator[str]:
    """The command latency split by hop, and the CPU each process used."""
    idle, loaded = lat.get("idle", {}), lat.get("loaded", {})
    if "total" not in idle or "total" not in loaded:
        return
    width = max(len(label) for _, label in _PARTS) + 2
    yield ""
    yield f"{'where a command spends its time, ms':<{width}}  idle p50   p99  loaded p50   p99"
    for key, label in _PARTS:
        a, b = idle[key], loaded[key]
        yield (
            f"  {label:<{width - 2}}  {_num(a['p50_ms'], '8.2f', '')} "
            f"{_num(a['p99_ms'], '5.2f', '')}  {_num(b['p50_ms'], '10.2f', '')} "
            f"{_num(b['p99_ms'], '5.2f', '')}"
        )
    for phase, part in (("idle", idle), ("loaded", loaded)):
        cpu = ", ".join(f"{k} {_num(v, '.2f', '')}" for k, v in part.get("cpu_s", {}).items())
        yield f"  CPU s used in the {phase} phase ({part['seconds']:.1f} s): {cpu}"


def _where_time_goes(figures: Figures, missed: list[str]) -> Iterator[str]:
    """One sentence per missed target saying which part of the path took the time."""
    dump = figures.get("dump", {})
    if any("dump_end" in m or "GatewayCore" in m for m in missed) and "gateway" in dump:
        gateway = dump["gateway"]
        send, batch = dump.get("raw_send", {}), dump.get("raw_batch", {})
        yield (
            f"missed (dump): GatewayCore makes the {dump['messages']:,} frames in "
            f"{dump['core']['p50_ms']:.1f} ms; the rest is the socket: connect -> dump_end "
            f"takes {_pair(gateway)} (lean / websockets client), a bare server sending the "
            f"same frames with one await send each {_pair(send) if 'lean' in send else 'n/a'}, "
            f"and writing them 256 frames at a time {_pair(batch) if 'lean' in batch else 'n/a'}."
        )
    big, commit = dump.get("big_show_reply", {}), dump.get("big_show_commit", {})
    if isinstance(big.get("p50_ms"), float) and big["p50_ms"] > TARGET_IDLE_P50_MS:
        yield (
            f"note: with the {dump['cues']:,}-cue show loaded a command's durable reply takes "
            f"{big['p50_ms']:.2f} ms (p50), its commit {_num(commit.get('p50_ms'), '.2f')}; "
            f"a digest of the whole state takes {_num(dump.get('state_digest_ms'), '.2f')} ms "
            "at this size (done after the answers, between commits)."
        )
    lat, floor = figures.get("latency", {}), figures.get("floor", {})
    #: the floor figure each hop compares with
    floors = {
        "client_to_gateway": ("a websockets round trip", "ws_round_trip"),
        "commit": ("a raw sqlite FULL commit of one row", "commit"),
        "durable_to_applied": ("an NNG round trip", "nng_round_trip"),
    }
    for phase in ("idle", "loaded"):
        part = lat.get(phase, {})
        if "total" not in part:
            continue
        for q in ("p50", "p99"):
            if f"{phase} {q}" not in missed:
                continue
            key_q = f"{q}_ms"
            hops = sorted(
                ((part[key][key_q] or 0.0, key, label) for key, label in _PARTS[:6]),
                reverse=True,
            )
            shares = []
            for value, key, label in hops:
                text = f"{label.split(' (')[0]} {value:.2f}"
                if key in floors and isinstance(floor.get(floors[key][1]), dict):
                    what, where = floors[key]
                    text += f" ({what}: {_num(floor[where][key_q], '.2f', '')})"
                shares.append(text)
            yield (
                f"missed ({phase} {q}, {_num(part['total'][key_q])}), biggest hop first, ms: "
                + "; ".join(shares)
            )
