"""Same-run baselines measured in this process: what the same work costs with the bare tools.

- `raw_append`: raw ``sqlite3`` ``executemany`` of the log's rows (the ``bench log`` baseline);
- `commit_floor`: one raw sqlite3 FULL commit of one row (the disk's durable floor);
- `raw_scan`: a bare sqlite3 read of every event (the floor any log reader pays);
- `naive_encode`: OSC messages built one by one with python-osc (the dump's baseline);
- `ws_round_trips` / `nng_round_trips`: loopback round trips against the echo role.

The baseline *systems* that run as processes (the upstream-style bus, the raw pynng hub, the
bare websockets server) are roles: `tools.bench.replication_baselines` and
`tools.bench.gateway_baselines`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pynng
from pythonosc.osc_message_builder import OscMessageBuilder
from websockets.asyncio.client import connect

from eventlog import Event
from eventlog.store_rows import INSERT_EVENTS, event_to_row
from tools.bench.common import Figures, ms, timeit

#: round trips made before any is timed
WARMUP_TRIPS = 20


def raw_append(path: Path, events: list[Event], batch: int) -> float:
    """Events/s of raw sqlite3: same table, same pragmas, same rows, one executemany per
    transaction of `batch` rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, ts FLOAT NOT NULL, type TEXT NOT NULL, "
        "action TEXT NOT NULL, sender TEXT NOT NULL, target TEXT NOT NULL, data TEXT, "
        "origin TEXT NOT NULL, origin_seq INTEGER NOT NULL, noop TEXT)"
    )
    conn.execute("CREATE UNIQUE INDEX events_op_id ON events (origin, origin_seq)")
    conn.execute("CREATE INDEX events_ts ON events (ts)")

    def go() -> None:
        for start in range(0, len(events), batch):
            rows = [event_to_row(e) for e in events[start : start + batch]]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_EVENTS, rows)
            conn.execute("COMMIT")

    elapsed = timeit(go)
    conn.close()
    return len(events) / elapsed


def commit_floor(scratch: Path, count: int) -> Figures:
    """Raw sqlite3, one row per commit, WAL + synchronous=FULL: the disk's durable floor."""
    conn = sqlite3.connect(scratch / "floor.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        row = json.dumps({"t": 0.0, "i": 0, "pad": "x" * 100})
        times: list[float] = []
        for _ in range(count):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (data) VALUES (?)", (row,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    summary = ms(times)
    del summary["n"]
    return {"commits": count, **summary}


def raw_scan(path: Path) -> float:
    """Rows per second of a bare sqlite3 read of every event (the floor any reader pays)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    start = time.perf_counter()
    n = 0
    for _ in conn.execute("SELECT * FROM events ORDER BY seq"):
        n += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def naive_encode(items: list[tuple[str, Any]]) -> tuple[float, list[bytes]]:
    """The same messages, one ``OscMessageBuilder`` each (what a straightforward server does):
    (seconds, the frames)."""
    start = time.perf_counter()
    out: list[bytes] = []
    for address, value in items:
        builder = OscMessageBuilder(address)
        builder.add_arg(value)
        out.append(bytes(builder.build().dgram))
    return time.perf_counter() - start, out


async def ws_round_trips(port: int, payload: bytes, count: int) -> list[float]:
    """Seconds of `count` websocket round trips of `payload` to the echo server at `port`."""
    times: list[float] = []
    async with connect(f"ws://127.0.0.1:{port}/", compression=None) as conn:
        for _ in range(WARMUP_TRIPS):
            await conn.send(payload)
            await conn.recv()
        for _ in range(count):
            start = time.perf_counter()
            await conn.send(payload)
            await conn.recv()
            times.append(time.perf_counter() - start)
    return times


def nng_round_trips(address: str, count: int) -> list[float]:
    """Seconds of `count` NNG REQ/REP round trips of a heartbeat-sized message."""
    times: list[float] = []
    with pynng.Req0(recv_timeout=5000, send_timeout=5000) as req:
        req.dial(address, block=True)
        payload = b'{"k":"beat","node":"bench","applied":1}'
        for _ in range(WARMUP_TRIPS):
            req.send(payload)
            req.recv()
        for _ in range(count):
            start = time.perf_counter()
            req.send(payload)
            req.recv()
            times.append(time.perf_counter() - start)
    return times
