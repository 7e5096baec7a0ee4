"""The gateway bench's side of its child processes: `Child` starts one (spawned), asks it
commands with deadlines, and always stops it (stop, then SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

from tools.bench.common import START_TIMEOUT, STOP_GRACE, Message, PhaseError, log, log_tail
from tools.bench.gateway_child import child_main


class Child:
    """One child process: started, asked, always stopped (stop, then SIGTERM, then SIGKILL)."""

    def __init__(self, scratch: Path, name: str, role: str, cfg: Message) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.log_path = scratch / f"{name}.log"
        self._conn, theirs = context.Pipe()
        self._proc = context.Process(
            target=child_main,
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

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tail(self) -> str:
        return log_tail(self.log_path)

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


def gateway_child(scratch: Path, name: str, db: Path, address: str) -> Child:
    """A controller with its gateway on log `db`, serving NNG at `address`, in a child."""
    return Child(scratch, name, "gateway", {"db": str(db), "address": address})
