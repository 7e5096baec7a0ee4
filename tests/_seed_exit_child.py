"""Engine code written against the seed, ending in one of the ways engine code ends.

Run as ``python tests/_seed_exit_child.py ADDRESS PATTERN COUNT BATCH OUTDIR``: this process
imports the library (pynng included) once, then forks COUNT children, BATCH at a time. Each
child is a whole engine: it starts a `NodeCommunications` (or, for the ``controller-*``
patterns, a `ControllerCommunications`), does some work through it, and then ends the way the
pattern says, at module level, so its exit is a real interpreter exit (threading's shutdown,
atexit hooks, NNG's own teardown). Child i writes its stderr to OUTDIR/i.err. The parent
prints one JSON line per child, ``[i, exit_code]`` (negative: killed by that signal).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventlog import ActionType, Operation, OperationType
from replicas import NodeCommunications

if TYPE_CHECKING:
    from gateway import ControllerCommunications

PATTERNS = (
    "no-stop",
    "stop-no-join",
    "stop-and-join",
    "exception",
    "controller-no-stop",
    "controller-stop-no-join",
)


def fork_children(count: int, batch: int, outdir: Path) -> int | None:
    """In the parent: fork and reap every child, print their exit codes, return None.
    In a child: return its index (the caller runs the engine at module level)."""
    gc.freeze()  # the children's exits do not touch (and copy) every object of the parent
    for start in range(0, count, batch):
        pids: dict[int, int] = {}
        for i in range(start, min(start + batch, count)):
            pid = os.fork()
            if pid == 0:
                err = os.open(outdir / f"{i}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(err, 2)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                return i
            pids[pid] = i
        while pids:
            pid, status = os.wait()
            print(json.dumps([pids.pop(pid), os.waitstatus_to_exitcode(status)]), flush=True)
    return None


def node_engine(address: str, index: int, pattern: str) -> NodeCommunications:
    """A node engine at work: synced, a cue sent and acknowledged, a command fired to it."""
    fired = threading.Event()
    node_id = f"exit-{pattern}-{index}"
    comms = NodeCommunications(
        address, node_id, command_callback=lambda name, value, addr: fired.set()
    )
    comms.start()
    if not comms.wait_synced(20):
        raise SystemExit(f"{node_id}: never synced")
    comms.add_cue(f"cue-{index}", "0").result(20)
    # a command of its own, so the command dispatcher and its pool have run too
    op = Operation(OperationType.COMMAND, ActionType.UPDATE, node_id, f"probe-{index}", {})
    comms.send_operation(op).result(20)
    if not fired.wait(20):
        raise SystemExit(f"{node_id}: its command never fired")
    return comms


def controller_engine(folder: Path, index: int) -> ControllerCommunications:
    """A controller engine at work: its log, editor channel and gateway up, one broadcast."""
    from gateway import ControllerCommunications

    base = folder / f"ctl-{index}"
    comms = ControllerCommunications(
        f"ipc://{base}.ipc",
        lambda message: {"value": "ok"},
        None,
        {"port": 0},
        editor_address=f"ipc://{base}.editor.ipc",
    )
    comms.start()
    if not comms.wait_ready(20):
        raise SystemExit(f"controller {index}: never ready")
    comms.broadcast_osc("/engine/status/running", "no").result(20)
    return comms


if __name__ == "__main__":
    ADDRESS, PATTERN, COUNT, BATCH, OUTDIR = sys.argv[1:6]
    assert PATTERN in PATTERNS, PATTERN
    if PATTERN.startswith("controller-"):
        import gateway  # noqa: F401 - once, in the parent (the node patterns go without it)
    INDEX = fork_children(int(COUNT), int(BATCH), Path(OUTDIR))
    if INDEX is None:
        sys.exit(0)
    # --- from here on, this is one child: an engine's main module
    COMMS: Any
    if PATTERN.startswith("controller-"):
        COMMS = controller_engine(Path(OUTDIR), INDEX)
    else:
        COMMS = node_engine(ADDRESS, INDEX, PATTERN)
    if PATTERN in ("no-stop", "controller-no-stop"):
        raise SystemExit(0)  # upstream's node engine: stop_all() (its players), then this
    if PATTERN in ("stop-no-join", "controller-stop-no-join"):
        COMMS.stop()
        raise SystemExit(0)
    if PATTERN == "stop-and-join":
        COMMS.stop()
        COMMS.join(10)
        sys.exit(0)
    raise RuntimeError("an engine bug escapes main")
