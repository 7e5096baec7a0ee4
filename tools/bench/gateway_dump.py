"""The gateway bench's dump phase: a big show's full dump, from the core and over the wire.

A show of 10,000 cues and 1,000 mixer channels (`big_show_ops`) is folded; timed are:
`GatewayCore` producing every frame of one client's dump, against python-osc encoding the
same messages (`naive_encode`); a real controller and gateway in another process, from
connecting to ``dump_end``, for a lean client and a websockets client, against a bare
websockets server sending the same frames three ways; and, with the show loaded, the durable
reply time of ``cue_enabled`` commands and what the state digest costs at that size.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Final

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from websockets.asyncio.client import connect

from eventlog import EventLog, State, fold
from gateway import osc
from gateway.server import CHUNK
from gateway.session import GatewayCore
from gateway.view import StatusView
from tools.bench.baselines import naive_encode
from tools.bench.common import Figures, guard, loopback_address, ms
from tools.bench.gateway_clients import LeanClient
from tools.bench.gateway_procs import Child, gateway_child
from tools.bench.gateway_show import DUMP_END_PREFIX, big_show_events, big_show_ops
from tools.bench.gateway_sizes import Sizes
from tools.bench.table import Ratio

#: the core against python-osc, and the gateway against a bare server's await send per frame
RATIOS: Final = {
    "core_vs_naive": Ratio("core.p50_ms", "naive.p50_ms"),
    "lean_vs_raw_send": Ratio("gateway.lean.p50_ms", "raw_send.lean.p50_ms"),
    "websockets_vs_raw_send": Ratio("gateway.websockets.p50_ms", "raw_send.websockets.p50_ms"),
}


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
                if isinstance(frame, bytes) and frame.startswith(DUMP_END_PREFIX):
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
    client = await LeanClient.open(url)
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


def _both_clients(url: str, sizes: Sizes) -> Figures:
    """Connect -> dump_end at `url`, for the lean client, then the websockets client."""
    return {
        "lean": _summarise(_connects(url, sizes.connects, lean=True)),
        "websockets": _summarise(_connects(url, sizes.ws_connects, lean=False)),
    }


def bench_dump(scratch: Path, sizes: Sizes) -> Figures:
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
    naive_runs = [naive_encode(items) for _ in range(max(3, sizes.dump_repeats // 3))]
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
    }
    # the lean client first: its first connection finds the server's caches cold
    with gateway_child(scratch, "dump-gateway", db, loopback_address()) as gw:
        url = f"ws://127.0.0.1:{gw.ready['port']}/realtime"
        out["gateway"] = _both_clients(url, sizes)
        cues = list(state.cues)[: sizes.big_commands]
        gw.ask("probe")  # forget the commits so far
        out["big_show_reply"] = guard(
            lambda: asyncio.run(_big_show_replies(url, cues, sizes.big_commands))
        )
        out["big_show_commit"] = ms(gw.ask("probe")["durations"])
        out["state_digest_ms"] = gw.ask("digest")["ms"]
    body = frames[:-1] if frames[-1].startswith(DUMP_END_PREFIX) else frames
    paths = ("send", "batch") if sizes.quick else ("send", "write", "batch")
    with Child(scratch, "dump-raw", "raw_ws", {"dump": body, "fan": []}) as raw:
        for path in paths:
            url = f"ws://127.0.0.1:{raw.ready['port']}/{path}"
            out[f"raw_{path}"] = _both_clients(url, sizes)
    out.update((key, formed.of(out)) for key, formed in RATIOS.items())
    return out


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
                if isinstance(frame, bytes) and frame.startswith(DUMP_END_PREFIX):
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
    return {**ms(times), "errors": errors}
