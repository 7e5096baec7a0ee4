"""The replication bench's child processes and the lines between them and the bench.

Every role runs in its own process (``sys.executable -c``, so the controller and the nodes do
not share one GIL) and talks to the bench over JSON lines: commands in on its stdin, messages
out on its stdout; its log goes to ``<scratch>/<name>.log``.

- the child's side: `Link` (the two streams), `serve_commands` (each command run on the role's
  loop), `in_thread`, `on_signals`, `until` (a wait with a deadline);
- the bench's side: `Children`, which starts the roles (`tools.bench.replication_child`
  is their entry point), collects their messages with deadlines, and always stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from eventlog import DecodeError, dumps, loads
from tools.bench.common import (
    STOP_GRACE,
    Message,
    PhaseError,
    cpu_seconds,
    delta,
    log,
    log_tail,
)

_ROOT: Final = Path(__file__).resolve().parents[2]
_BOOT: Final = (
    "import sys; from tools.bench.replication_child import child_main; "
    "sys.exit(child_main(sys.argv[1:]))"
)


class Link:
    """A child's end of the line to the bench: JSON lines out on stdout, commands in on stdin.

    Stray writes to stdout (fd 1 or ``sys.stdout``) are sent to stderr, the child's log file,
    so they cannot corrupt the message stream.
    """

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, kind: str, **fields: Any) -> None:
        line = dumps({"kind": kind, **fields}) + b"\n"
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._out.write(line)
            self._out.flush()

    def commands(self) -> Iterator[Message]:
        """Commands until stdin closes; the last one is always ``stop``."""
        for line in sys.stdin.buffer:
            with contextlib.suppress(DecodeError):
                msg = loads(line)
                if isinstance(msg, dict):
                    yield msg
        yield {"cmd": "stop"}


def serve_commands(
    link: Link, loop: asyncio.AbstractEventLoop, handler: Callable[[Message], None]
) -> None:
    """Read commands on a daemon thread and run `handler` for each on `loop`."""

    def run() -> None:
        for msg in link.commands():
            try:
                loop.call_soon_threadsafe(handler, msg)
            except RuntimeError:
                return  # the loop is closed: the role is over
            if msg.get("cmd") == "stop":
                return

    threading.Thread(target=run, name="bench-commands", daemon=True).start()


def in_thread(link: Link, fn: Callable[..., None], *args: Any) -> None:
    """Run `fn(*args)` on a daemon thread; an exception becomes an ``error`` message."""

    def run() -> None:
        try:
            fn(*args)
        except Exception as exc:
            log.exception("%s failed", getattr(fn, "__name__", fn))
            link.send("error", error=f"{type(exc).__name__}: {exc}")

    threading.Thread(target=run, name="bench-worker", daemon=True).start()


def on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """SIGINT and SIGTERM call `stop` on `loop`."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds; `PhaseError` (naming `what`) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise PhaseError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.005)


class Children:
    """The bench's child processes: start them, talk to them, always stop them."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.inbox: queue.Queue[tuple[str, Message]] = queue.Queue()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stash: dict[str, list[Message]] = {}
        self.stopping: set[str] = set()
        #: children that needed SIGTERM or SIGKILL to stop
        self.forced: list[str] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(reversed(list(self.procs)))

    def start(self, name: str, role: str, cfg: Message) -> None:
        with open(self.scratch / f"{name}.log", "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, role, dumps(cfg).decode()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                cwd=_ROOT,
            )
        self.procs[name] = proc
        self.stash[name] = []
        threading.Thread(target=self._read, args=(name, proc), daemon=True).start()

    def _read(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                with contextlib.suppress(DecodeError):
                    msg = loads(line)
                    if isinstance(msg, dict):
                        self.inbox.put((name, msg))
        self.inbox.put((name, {"kind": "exit", "rc": proc.wait()}))

    def send(self, name: str, cmd: str, **fields: Any) -> None:
        stdin = self.procs[name].stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(OSError, ValueError):
            stdin.write(dumps({"cmd": cmd, **fields}) + b"\n")
            stdin.flush()

    def tell(self, names: Iterable[str], cmd: str, **fields: Any) -> None:
        for name in names:
            self.send(name, cmd, **fields)

    def _tail(self, name: str) -> str:
        return log_tail(self.scratch / f"{name}.log")

    def collect(self, kind: str, names: list[str], timeout: float, what: str) -> dict[str, Message]:
        """One message of `kind` from each of `names`, within `timeout` seconds.

        Raises `PhaseError` on the deadline, or as soon as any running child reports an error
        or exits (it will never answer).
        """
        deadline = time.monotonic() + timeout
        got: dict[str, Message] = {}
        while True:
            for name in names:
                if name in got:
                    continue
                for i, msg in enumerate(self.stash[name]):
                    if msg.get("kind") == kind:
                        got[name] = self.stash[name].pop(i)
                        break
            missing = [name for name in names if name not in got]
            if not missing:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise PhaseError(
                    f"timed out after {timeout:g} s waiting for {what} ({', '.join(missing)})"
                )
            try:
                name, msg = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if name in self.stopping:
                continue
            if msg.get("kind") == "error":
                raise PhaseError(f"{name}: {msg.get('error')}{self._tail(name)}")
            if msg.get("kind") == "exit":
                raise PhaseError(f"{name} exited with code {msg.get('rc')}{self._tail(name)}")
            self.stash[name].append(msg)

    def cpu(self, names: Iterable[str]) -> dict[str, float | None]:
        """CPU seconds each of `names` has used so far."""
        return {name: cpu_seconds(self.procs[name].pid) for name in names}

    def cpu_since(self, before: dict[str, float | None]) -> dict[str, float | None]:
        """CPU seconds each child in `before` (from `cpu`) has used since."""
        after = self.cpu(before)
        return {name: delta(start, after[name]) for name, start in before.items()}

    def ask(self, name: str, cmd: str, timeout: float = 5.0) -> Message:
        if self.procs[name].poll() is not None:
            raise PhaseError(f"{name} is not running")
        self.send(name, cmd)
        return self.collect(cmd, [name], timeout, f"the answer to {cmd!r}")[name]

    def stop(self, names: Iterable[str], grace: float = STOP_GRACE) -> None:
        """Stop command and EOF first; SIGTERM after `grace` seconds; SIGKILL 2 s later."""
        chosen = [name for name in names if name in self.procs]
        for name in chosen:
            self.stopping.add(name)
            self.send(name, "stop")
            stdin = self.procs[name].stdin
            if stdin is not None:
                with contextlib.suppress(OSError):
                    stdin.close()
        deadline = time.monotonic() + grace
        for name in chosen:
            proc = self.procs[name]
            try:
                proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.forced.append(f"{name}: SIGTERM")
                proc.terminate()
        for name in chosen:
            proc = self.procs.pop(name)
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.forced.append(f"{name}: SIGKILL")
                proc.kill()
                proc.wait(2.0)
