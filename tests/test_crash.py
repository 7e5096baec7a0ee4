"""A real crash: a writer process killed with SIGKILL in the middle of appending.

Whatever it reported committed is in the file, the log has no hole, every event decodes, the
state folds, and the next append (and a retry of everything it sent) carries on from the head.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from eventlog import EventLog, OpId, decode_event, digest, encode_event, fold
from tests._crash_writer import BATCH, ORIGIN, submission
from tests.helpers import show_op

ROOT = Path(__file__).resolve().parent.parent
WANTED = 300
DEADLINE = 60.0


def read_committed(proc: subprocess.Popen[bytes], wanted: int | None, deadline: float) -> list[int]:
    """Seqs the child printed, until `wanted` of them (or end of output) or the deadline."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seqs: list[int] = []
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while wanted is None or len(seqs) < wanted:
            left = deadline - time.monotonic()
            assert left > 0, f"the writer reported only {len(seqs)} seqs in time"
            if not selector.select(timeout=left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            seqs += [int(line) for line in lines]
    return seqs


def test_kill_9_while_appending(log_path: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._crash_writer", str(log_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        printed = read_committed(proc, WANTED, deadline)
        assert proc.poll() is None, "the writer stopped on its own"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == -signal.SIGKILL
        printed += read_committed(proc, None, deadline)  # lines still in the pipe
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        assert proc.stderr is not None
        errors = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
    assert not errors, errors
    assert len(printed) >= WANTED
    assert printed == list(range(1, len(printed) + 1))

    with EventLog.open(log_path, snapshot_every=50) as log:
        head = log.head
        assert head >= printed[-1]
        assert head % BATCH == 0  # batches are all there or not at all
        events = log.read()
        assert [e.seq for e in events] == list(range(1, head + 1))
        assert log.count() == head
        for event in events:
            assert decode_event(encode_event(event)) == event
            assert event.op_id == OpId(ORIGIN, event.seq)
            assert event.op.to_wire() == show_op(event.seq)
        assert log.state_at(head) == fold(events)
        assert digest(log.state) == digest(fold(events))
        for seq, _ts, snap_digest in log.snapshots():
            assert snap_digest == digest(fold(events[:seq]))

        # the writer's in-flight batches, retried: committed ones keep their seq
        retry = log.append_batch([submission(n) for n in range(1, head + 2 * BATCH + 1)])
        assert retry.seqs == list(range(1, head + 2 * BATCH + 1))
        assert [e.seq for e in retry.events] == list(range(head + 1, head + 2 * BATCH + 1))
        assert log.append(show_op(1)) == head + 2 * BATCH + 1

    with EventLog.open(log_path, readonly=True) as reader:
        assert reader.head == head + 2 * BATCH + 1
        assert digest(reader.state) == digest(fold(reader.read()))
