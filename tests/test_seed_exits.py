"""Engine code written against the seed exits cleanly, however it ends (issue 7, item 12),
and `AsyncCommsThread` keeps the seed's loop lifetime (item 13).

Each exit pattern runs 50 times as real interpreter exits: `_seed_exit_child.py` imports the
library once and forks the engines (10 at a time), so 50 exits cost about what 5 fresh
interpreters would. NNG aborts (SIGABRT, "pthread_mutex_lock: Invalid argument") or corrupts
the heap when its sockets outlive the interpreter; the library must close them itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicas import AsyncCommsThread
from tests.cluster import ControllerThread, ipc_address

RUNS = 50
BATCH = 10
CHILD = Path(__file__).with_name("_seed_exit_child.py")
#: what NNG or libc print when a process dies of sockets left open at exit
CRASH_SIGNS = ("Invalid argument", "corrupted", "double free", "Fatal Python error", "Aborted")


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[str]:
    """A fresh controller per pattern (the log does not grow from one pattern to the next)."""
    folder = tmp_path
    address = ipc_address(folder)
    ctl = ControllerThread(folder / "ctl.db", address, synchronous="NORMAL").start()
    try:
        yield address
    finally:
        ctl.stop()


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("no-stop", 0),
        ("stop-no-join", 0),
        ("stop-and-join", 0),
        ("exception", 1),  # what Python gives for an uncaught exception
        ("controller-no-stop", 0),
        ("controller-stop-no-join", 0),
    ],
)
def test_every_exit_is_clean(controller: str, tmp_path: Path, pattern: str, expected: int) -> None:
    runs = RUNS if not pattern.startswith("controller-") else RUNS // 2
    done = subprocess.run(
        [sys.executable, str(CHILD), controller, pattern, str(runs), str(BATCH), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    codes = dict(json.loads(line) for line in done.stdout.splitlines())
    assert sorted(codes) == list(range(runs)), done.stdout
    bad = []
    for index, code in sorted(codes.items()):
        err = (tmp_path / f"{index}.err").read_text(errors="replace")
        crashed = [sign for sign in CRASH_SIGNS if sign in err]
        if code != expected or crashed:
            bad.append(f"run {index}: exit {code}, {crashed or ''} {err[-600:]!r}")
        if pattern == "exception":
            assert "RuntimeError: an engine bug escapes main" in err
    assert not bad, f"{len(bad)} of {runs} runs did not exit cleanly:\n" + "\n".join(bad[:5])


# ------------------------------------------------------------------ the loop's lifetime


class _OneShot(AsyncCommsThread):
    """A comms thread whose only task ends at once (the way a failed task ends)."""

    def create_all_tasks(self) -> list[asyncio.Task[None]]:
        return [asyncio.ensure_future(asyncio.sleep(0))]


async def _answer(message: str) -> str:
    await asyncio.sleep(0)
    return f"echo {message}"


def test_the_loop_runs_until_stop_even_when_its_tasks_ended() -> None:
    comms = _OneShot(thread_name="one-shot")
    comms.start()
    try:
        assert comms.loop_ready.wait(5)
        loop = comms.event_loop
        assert loop is not None
        # the tasks are over, the loop still serves (upstream's deploy code keeps the loop)
        finished = threading.Event()
        loop.call_soon_threadsafe(finished.set)
        assert finished.wait(5)
        for i in range(3):
            assert comms.run_coroutine(_answer, str(i), timeout=5) == f"echo {i}"
        future = asyncio.run_coroutine_threadsafe(_answer("kept"), loop)
        assert future.result(5) == "echo kept"
        assert comms.is_alive() and not loop.is_closed()
    finally:
        comms.stop()
        comms.join(5)
    assert not comms.is_alive()
    assert loop.is_closed()  # after stop() the loop is closed: late calls fail at once
    late = _answer("late")
    with pytest.raises(RuntimeError):
        asyncio.run_coroutine_threadsafe(late, loop)
    late.close()
    # a stop() that comes before the loop exists is remembered
    early = _OneShot(thread_name="early-stop")
    early.stop()
    early.start()
    early.join(5)
    assert not early.is_alive()
