"""One client's outgoing queue: deltas, replies and dumps, in order, bounded. No I/O.

A delta is ``(address, frame)``; a reply (or ``/engine/status/seq``) is bare bytes; a dump is
a `gateway.dump.Dump`, encoded only as it is taken. The queue is bounded by the deltas and
replies it holds (`MAX_QUEUE` messages, `MAX_QUEUE_BYTES` bytes; a dump's items are not
counted: they are shared and read lazily). Clearing it for a dump or a resync keeps the
replies, in order: every command gets its answer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from gateway.dump import Dump

#: messages, and bytes, one client may have queued before it is resynced
MAX_QUEUE: Final = 20_000
MAX_QUEUE_BYTES: Final = 8 * 1024 * 1024

#: a delta is (address, its encoded frame); a reply or marker is bare bytes
Delta = tuple[str, bytes]
Item = Delta | bytes | Dump


@dataclass(eq=False, slots=True, kw_only=True)
class Outbox:
    """The queue, what it holds, and how many frames were taken from it."""

    queue: deque[Item] = field(default_factory=deque)
    #: messages in `queue` that are not part of a dump, and their bytes
    queued: int = 0
    queued_bytes: int = 0
    sent: int = 0

    def has_output(self) -> bool:
        return bool(self.queue)

    def take(self, limit: int = 256) -> list[bytes]:
        """Up to `limit` frames to send now (encoded here, so a dump costs no more per call)."""
        out: list[bytes] = []
        queue = self.queue
        while queue and len(out) < limit:
            item = queue[0]
            if isinstance(item, Dump):
                if item.write(out, limit):
                    queue.popleft()
                continue
            queue.popleft()
            data = item if isinstance(item, bytes) else item[1]
            self.queued -= 1
            self.queued_bytes -= len(data)
            out.append(data)
        self.sent += len(out)
        return out

    def push(self, item: Delta | bytes) -> None:
        self.queue.append(item)
        self.queued += 1
        self.queued_bytes += len(item if isinstance(item, bytes) else item[1])

    def clear(self, keep_replies: bool) -> None:
        """Empty the queue; replies (bare bytes) stay, in order, if `keep_replies`."""
        kept = [i for i in self.queue if isinstance(i, bytes)] if keep_replies else []
        self.queue.clear()
        self.queue.extend(kept)
        self.queued = len(kept)
        self.queued_bytes = sum(len(i) for i in kept)

    @property
    def overflowing(self) -> bool:
        return self.queued > MAX_QUEUE or self.queued_bytes > MAX_QUEUE_BYTES
