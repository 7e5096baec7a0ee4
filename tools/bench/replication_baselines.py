"""The replication bench's two baseline systems, each role run in its own process.

- the **upstream-style** bus: ``bus_hub``, an NNG Bus0 listener whose receive loop sleeps
  10 ms after every message (as upstream's does), and ``bus_node``, which sends one JSON
  message per operation with non-blocking sends;
- the **raw pynng** ceiling: ``raw_hub`` answers batched REQ/REP submits and publishes PUB/SUB
  event frames of the same shape as the controller's, JSON at every hop, but no validation,
  no log and no reducer; ``raw_node`` submits its share and counts the frames it receives.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Final

import pynng

from eventlog import dumps, loads
from replicas.nngio import close_all, guarded
from replicas.outbox import SUBMIT_BATCH
from replicas.protocol import MAX_FRAME_EVENTS, NNG_MAX_BYTES, events_address
from tools.bench.common import START_TIMEOUT, Message, PhaseError
from tools.bench.data import node_ops
from tools.bench.replication_procs import Link, on_signals, serve_commands, until

#: upstream's receive loop sleeps this long after every message
UPSTREAM_SLEEP: Final = 0.01


def role_bus_hub(cfg: Message, link: Link) -> None:
    """Upstream's hub: a Bus0 listener whose receive loop sleeps 10 ms after each message."""
    expected = int(cfg["peers"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        on_signals(loop, stop.set)
        sock = pynng.Bus0(recv_max_size=NNG_MAX_BYTES)
        counts: Message = {"received": 0, "bad": 0, "t_first": None, "t_last": None}
        try:
            sock.listen(cfg["address"])

            async def receive() -> None:
                while True:
                    raw = await guarded(sock.arecv())
                    now = time.monotonic()
                    counts["received"] += 1
                    if counts["t_first"] is None:
                        counts["t_first"] = now
                    counts["t_last"] = now
                    try:
                        json.loads(raw)
                    except ValueError:
                        counts["bad"] += 1
                    await asyncio.sleep(UPSTREAM_SLEEP)

            async def announce() -> None:
                await until(lambda: len(sock.pipes) >= expected, START_TIMEOUT, "bus peers")
                link.send("connected", peers=len(sock.pipes))

            def on_command(msg: Message) -> None:
                cmd = msg.get("cmd")
                if cmd == "report":
                    link.send("report", **counts)
                elif cmd == "stop":
                    stop.set()

            serve_commands(link, loop, on_command)
            link.send("ready")
            tasks = [asyncio.create_task(receive()), asyncio.create_task(announce())]
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({tasks[0], stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in [*tasks, stopper]:
                task.cancel()
            results = await asyncio.gather(*tasks, stopper, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    raise result
        finally:
            sock.close()

    asyncio.run(main())


def role_bus_node(cfg: Message, link: Link) -> None:
    """Upstream's node: one JSON message per operation, non-blocking Bus0 sends."""
    node: str = cfg["node"]
    messages = [json.dumps(op.to_wire()).encode() for op in node_ops(node, int(cfg["ops"]))]
    sock = pynng.Bus0()
    try:
        sock.dial(cfg["address"], block=False)
        deadline = time.monotonic() + START_TIMEOUT
        while not sock.pipes:
            if time.monotonic() > deadline:
                raise PhaseError(f"{node} could not reach the bus hub")
            time.sleep(0.005)
        link.send("ready")
        for msg in link.commands():
            cmd = msg.get("cmd")
            if cmd == "go":
                sent = refused = 0
                t_first = time.monotonic()
                for data in messages:
                    try:
                        sock.send(data, block=False)
                        sent += 1
                    except pynng.TryAgain:
                        refused += 1
                link.send(
                    "sent", sent=sent, refused=refused, t_first=t_first, t_last=time.monotonic()
                )
            elif cmd == "stop":
                break
    finally:
        sock.close()


def role_raw_hub(cfg: Message, link: Link) -> None:
    """The transport alone: REQ/REP submits in, PUB/SUB event frames out, no log."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        on_signals(loop, stop.set)
        rep = pynng.Rep0(recv_max_size=NNG_MAX_BYTES)
        pub = pynng.Pub0(send_buffer_size=1024)
        contexts: list[Any] = []
        head = [0]
        try:
            rep.listen(cfg["address"])
            pub.listen(events_address(cfg["address"]))

            async def serve(ctx: Any) -> None:
                while True:
                    msg = loads(await guarded(ctx.arecv()))
                    now = time.time()
                    first = head[0] + 1
                    events = [
                        {
                            "seq": first + i,
                            "ts": now,
                            "type": op["type"],
                            "action": op["action"],
                            "sender": op["sender"],
                            "target": op["target"],
                            "data": op["data"],
                            "op_id": op["op_id"],
                        }
                        for i, op in enumerate(msg["ops"])
                    ]
                    head[0] += len(events)
                    results = [{"seq": event["seq"]} for event in events]
                    await guarded(
                        ctx.asend(dumps({"k": "acks", "results": results, "head": head[0]}))
                    )
                    for start in range(0, len(events), MAX_FRAME_EVENTS):
                        chunk = events[start : start + MAX_FRAME_EVENTS]
                        frame = {
                            "k": "ev",
                            "log": "raw",
                            "first": chunk[0]["seq"],
                            "last": chunk[-1]["seq"],
                            "ts": now,
                            "events": chunk,
                        }
                        await guarded(pub.asend(dumps(frame)))

            serve_commands(link, loop, lambda msg: stop.set() if msg.get("cmd") == "stop" else None)
            contexts = [rep.new_context() for _ in range(16)]
            tasks = [asyncio.create_task(serve(ctx)) for ctx in contexts]
            link.send("ready")
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            close_all(contexts, rep, pub)

    asyncio.run(main())


def role_raw_node(cfg: Message, link: Link) -> None:
    """Sends its share in SUBMIT_BATCH-op requests; counts every event frame it receives."""
    node: str = cfg["node"]
    wire: list[dict[str, Any]] = []
    for i, op in enumerate(node_ops(node, int(cfg["ops"])), 1):
        item = op.to_wire()
        item["op_id"] = [f"{node}/raw", i]
        wire.append(item)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        on_signals(loop, stop.set)
        req = pynng.Req0(recv_max_size=NNG_MAX_BYTES)
        sub = pynng.Sub0(recv_max_size=NNG_MAX_BYTES, recv_buffer_size=1024)
        sub.subscribe(b"")
        contexts: list[Any] = []
        received = [0]
        target: list[int] = []
        try:
            req.dial(cfg["address"], block=False)
            sub.dial(events_address(cfg["address"]), block=False)
            await until(lambda: bool(req.pipes) and bool(sub.pipes), START_TIMEOUT, "raw hub")
            contexts.append(req.new_context())
            ctx = contexts[0]

            async def receive() -> None:
                while True:
                    msg = loads(await guarded(sub.arecv()))
                    if msg.get("k") == "ev":
                        received[0] += len(msg["events"])
                    if target and received[0] >= target[0]:
                        target.clear()
                        link.send("reached", what="load", t=time.monotonic(), count=received[0])

            async def submit() -> None:
                errors = 0
                t_first = time.monotonic()
                for start in range(0, len(wire), SUBMIT_BATCH):
                    batch = wire[start : start + SUBMIT_BATCH]
                    await guarded(ctx.asend(dumps({"k": "submit", "node": node, "ops": batch})))
                    reply = loads(await guarded(ctx.arecv()))
                    if reply.get("k") != "acks":
                        errors += len(batch)
                t_acked = time.monotonic()
                link.send("submitted", t_first=t_first, t_acked=t_acked, errors=errors)

            tasks = [asyncio.create_task(receive())]

            def on_command(msg: Message) -> None:
                cmd = msg.get("cmd")
                if cmd == "expect":
                    target[:] = [int(msg["count"])]
                    if received[0] >= target[0]:
                        target.clear()
                        link.send("reached", what="load", t=time.monotonic(), count=received[0])
                elif cmd == "go":
                    tasks.append(asyncio.create_task(submit()))
                elif cmd == "stop":
                    stop.set()

            serve_commands(link, loop, on_command)
            link.send("ready")
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            close_all(contexts, req, sub)

    asyncio.run(main())
