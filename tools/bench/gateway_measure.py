"""``cuelog bench gateway``: the UI gateway's figures and same-run baselines. Nothing asserted.

Measured in one run, on one machine, everything over loopback:

- **dump** (`tools.bench.gateway_dump`): a 10,000-cue, 1,000-channel show's full dump, from
  `GatewayCore` and over the wire, against python-osc and a bare websockets server;
- **fan-out** (here): `CLIENTS` lean clients; the controller appends events (``append_local``
  from four appenders, durable, group-committed) that each change one address, so each is one
  message to every client. Events/s delivered to all of them, against a bare websockets
  server sending the same frames with ``broadcast`` per frame, and in one write per client
  per 256 frames; the server's CPU per message sent;
- **command latency** (`tools.bench.gateway_latency`): websocket GO -> node callback, idle and
  under background load, split by hop;
- **floor** (here): one sqlite3 FULL commit of one row, one websockets and one NNG round trip.

Every role runs in its own process (`tools.bench.gateway_roles`, spawned by
`tools.bench.gateway_procs.Child`), so a server never shares a GIL with its clients;
``time.monotonic()`` is one clock for every process on the host. Children log to
``<scratch>/<name>.log``; every wait has a deadline and a stuck phase becomes an ``error``
figure. The table that prints the figures is `tools.bench.gateway_report`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from typing import Final

from tools.bench.baselines import commit_floor, nng_round_trips, ws_round_trips
from tools.bench.common import (
    START_TIMEOUT,
    Figures,
    Phase,
    PhaseError,
    delta,
    guard,
    loopback_address,
    machine,
    ms,
    run_phases,
)
from tools.bench.gateway_clients import LeanClient
from tools.bench.gateway_dump import bench_dump
from tools.bench.gateway_latency import bench_latency
from tools.bench.gateway_procs import Child, gateway_child
from tools.bench.gateway_show import fan_frames, go_frame
from tools.bench.gateway_sizes import CLIENTS, Sizes
from tools.bench.table import Ratio

#: the gateway's fan-out over the bare server's broadcast, and idle latency over the floor
FAN_RATIO: Final = Ratio("gateway.events_s", "raw_broadcast.events_s")
FLOOR_RATIO: Final = Ratio("latency.idle.total.p50_ms", "floor.floor.p50_ms")


async def _fan_run(url: str, server: Child, count: int, mode: str = "") -> Figures:
    """`CLIENTS` lean clients join; the server sends `count` events; when has each all?"""
    clients: list[LeanClient] = []
    try:
        async with asyncio.timeout(START_TIMEOUT):
            clients = list(
                await asyncio.gather(*(LeanClient.open(url, count) for _ in range(CLIENTS)))
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
    server_cpu = delta(cpu, cpu_after)
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


def _fan(url: str, server: Child, count: int, mode: str) -> Figures:
    return asyncio.run(_fan_run(url, server, count, mode))


def _bench_fanout(scratch: Path, sizes: Sizes) -> Figures:
    count = sizes.fan_events
    out: Figures = {}
    db = scratch / "fan.db"
    with gateway_child(scratch, "fan-gateway", db, loopback_address()) as gw:
        url = f"ws://127.0.0.1:{gw.ready['port']}/realtime"
        out["gateway"] = guard(functools.partial(_fan, url, gw, count, ""))
    raw_cfg = {"dump": [], "fan": fan_frames(count)}
    with Child(scratch, "fan-raw", "raw_ws", raw_cfg) as raw:
        url = f"ws://127.0.0.1:{raw.ready['port']}/fan"
        for mode in ("broadcast", "batch"):
            out[f"raw_{mode}"] = guard(functools.partial(_fan, url, raw, count, mode))
    out["ratio"] = FAN_RATIO.of(out)
    return out


def _bench_floor(scratch: Path, sizes: Sizes) -> Figures:
    """The hops a command cannot avoid: a durable commit, a websocket and an NNG round trip."""
    commit = commit_floor(scratch, sizes.commits)
    with Child(scratch, "echo", "echo", {}) as echo:
        trips = ws_round_trips(int(echo.ready["ws_port"]), go_frame(1), sizes.round_trips)
        ws = ms(asyncio.run(trips))
        nng = ms(nng_round_trips(str(echo.ready["nng"]), sizes.round_trips))
    floor = {key: commit[key] + ws[key] + nng[key] for key in ("p50_ms", "p99_ms")}
    return {"commit": commit, "ws_round_trip": ws, "nng_round_trip": nng, "floor": floor}


def run_gateway(quick: bool, scratch: Path) -> Figures:
    """Run every gateway measurement (see the module docstring); return the figures."""
    sizes = Sizes.pick(quick)
    figures: Figures = {"suite": "gateway", "quick": quick, **machine(), "clients": CLIENTS}
    phases: list[Phase] = [
        ("dump", "dump", lambda: bench_dump(scratch, sizes)),
        ("fanout", "fan-out", lambda: _bench_fanout(scratch, sizes)),
        ("floor", "floor", lambda: _bench_floor(scratch, sizes)),
        ("latency", "command latency", lambda: bench_latency(scratch, sizes)),
    ]
    run_phases(phases, figures)
    figures["latency_vs_floor"] = FLOOR_RATIO.of(figures)
    return figures
