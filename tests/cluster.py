"""Helpers for tests that run real controllers and nodes: threads, processes, waiting.

Waiting is always on a condition with a deadline; the poll interval is an `Event.wait`, not a
bare sleep, and a missed deadline fails with what was being waited for.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from replicas import Controller, NodeCommunications
from replicas.client import ControllerClient, ControllerUnreachable
from tools.bench.ha_cluster import Proc as Proc  # shared with the benchmarks
from tools.bench.ha_cluster import wait_for as wait_for


def ipc_address(folder: Path, name: str = "ctl") -> str:
    return f"ipc://{folder}/{name}.ipc"


class ControllerThread:
    """A `Controller` running on its own event loop in a daemon thread."""

    def __init__(self, db: str | Path, address: str, **options: Any) -> None:
        self.controller = Controller(db, address, **options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self.controller.run())

    def start(self) -> ControllerThread:
        self.thread.start()
        wait_for("controller ready", self.controller.ready.is_set, 10)
        return self

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.controller.stop)
        self.thread.join(10)
        assert not self.thread.is_alive(), "controller thread did not stop"


@contextmanager
def controller_thread(db: str | Path, address: str, **options: Any) -> Iterator[ControllerThread]:
    ctl = ControllerThread(db, address, **options).start()
    try:
        yield ctl
    finally:
        ctl.stop()


@contextmanager
def nodes(address: str, ids: list[str], **options: Any) -> Iterator[list[NodeCommunications]]:
    started = [NodeCommunications(address, node_id, **options) for node_id in ids]
    for comms in started:
        comms.start()
    try:
        yield started
    finally:
        for comms in started:
            comms.stop()
        for comms in started:
            comms.join(10)


def status(address: str) -> dict[str, Any]:
    with ControllerClient(address, timeout=5.0) as client:
        return client.status()


def converged(address: str, ids: list[str]) -> bool:
    try:
        st = status(address)
    except ControllerUnreachable:  # still starting (a loaded machine takes seconds)
        return False
    return all(
        st["nodes"].get(n, {}).get("online")
        and st["nodes"][n]["applied_seq"] == st["head_seq"]
        and st["nodes"][n]["digest_match"] is True
        for n in ids
    )


@contextmanager
def replay_serve(db: str | Path, *extra: str, speed: str = "1000") -> Iterator[int]:
    """`replay serve DB` in its own process on a free loopback port: yields the port once it
    accepts connections; stops the process after."""
    import contextlib
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    argv = ["serve", str(db), "--ws", f"127.0.0.1:{port}", "--speed", speed, *extra]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.replay", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def listening() -> bool:
        assert proc.poll() is None, (
            f"replay serve exited: {proc.stderr.read() if proc.stderr else ''}"
        )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False

    try:
        wait_for("replay serve to listen", listening, 20)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
