"""The gateway bench's command-latency phase: a websocket GO to a node's command callback.

A websockets client sends ``/engine/command/go <k>`` (the show is loaded with the node
required and armed, so every GO fires); the node replica notes when its callback runs. p50/p99
idle and under `LOAD_RATE` operations/s of background load, each GO also timed at every hop
(`PARTS`) from the marks the gateway role's probe, the node role and the client took.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Final

from websockets.asyncio.client import connect

from gateway import osc
from tools.bench.common import START_TIMEOUT, Figures, PhaseError, delta, loopback_address, ms
from tools.bench.gateway_clients import CommandClient
from tools.bench.gateway_procs import Child, gateway_child
from tools.bench.gateway_show import go_frame
from tools.bench.gateway_sizes import LATENCY_NODE, LOAD_RATE, WARMUP_COMMANDS, Sizes


async def _send_commands(
    client: CommandClient, first: int, count: int, interval: float, rng: random.Random
) -> dict[int, float]:
    """Open loop: GO ``first``..``first+count-1`` on a jittered schedule, whatever the replies."""
    frames = [(k, go_frame(k)) for k in range(first, first + count)]
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
    server: Child,
    node: Child,
    client: CommandClient,
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
    hops: dict[str, list[float]] = {key: [] for key, _ in PARTS}
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
        for (key, _), start, end in zip(PARTS, marks, marks[1:], strict=False):
            if start is not None and end is not None:
                hops[key].append(end - start)
        if t_fired is not None:
            hops["total"].append(t_fired - t_send)
    return {
        "commands": len(sent),
        "fired": len(fired),
        "refused": refused,
        **{key: ms(values) for key, values in hops.items()},
    }


async def _latency_run(url: str, sizes: Sizes, server: Child, node: Child, load: Child) -> Figures:
    rng = random.Random(3)
    out: Figures = {}
    async with connect(
        url, compression=None, max_size=osc.MAX_FRAME_BYTES, open_timeout=10
    ) as conn:
        client = CommandClient(conn)
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
                    name: delta(cpu[name], await asyncio.to_thread(p.cpu))
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


def bench_latency(scratch: Path, sizes: Sizes) -> Figures:
    address = loopback_address()
    db = scratch / "latency.db"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(gateway_child(scratch, "lat-gateway", db, address))
        node = stack.enter_context(
            Child(scratch, "lat-node", "node", {"address": address, "node": LATENCY_NODE})
        )
        load = stack.enter_context(
            Child(scratch, "lat-load", "load", {"address": address, "rate": LOAD_RATE})
        )
        server.ask("load", nodes=[LATENCY_NODE])
        node.ask("arm")
        url = f"ws://127.0.0.1:{server.ready['port']}/realtime"
        out = asyncio.run(_latency_run(url, sizes, server, node, load))
    out["load_target"] = LOAD_RATE
    return out


#: the hops of a command, in order (each from the previous mark to the next), then totals
PARTS: Final = (
    ("client_to_gateway", "client send -> the gateway reads the frame"),
    ("gateway_to_commit", "frame -> its commit starts (task, queue, thread)"),
    ("commit", "the commit in its worker thread (sqlite, fold, digest)"),
    ("commit_to_loop", "commit done -> controller loop has it (listeners)"),
    ("durable_to_applied", "durable -> node replica applied it (NNG)"),
    ("applied_to_callback", "applied -> command callback runs (dispatcher)"),
    ("total", "client send -> node callback"),
    ("reply", "client send -> the client has the durable reply"),
)
