"""Child process of test_crash: append batches to a log forever, printing each committed seq.

Run as ``python -m tests._crash_writer LOG_PATH``. Every line on stdout is a seq whose batch
``append_batch`` has returned, so it is durably committed. The parent kills this process with
SIGKILL at a moment of its choosing.
"""

from __future__ import annotations

import sys

from eventlog import EventLog, OpId, Submission, validate_operation
from tests.helpers import show_op

ORIGIN = "crash-writer"
BATCH = 7


def submission(n: int) -> Submission:
    """The `n`-th submission this writer makes; the parent can make the same ones."""
    return Submission(validate_operation(show_op(n)), OpId(ORIGIN, n))


def main(argv: list[str]) -> int:
    with EventLog.open(argv[1], snapshot_every=50) as log:
        n = log.head
        while True:
            batch = [submission(n + i) for i in range(1, BATCH + 1)]
            result = log.append_batch(batch)
            n += BATCH
            sys.stdout.write("".join(f"{seq}\n" for seq in result.seqs))
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
