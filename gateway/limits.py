"""What one client may cost: its frame rate, its ``/engine/sync`` rate, its overflows. No I/O.

- Every frame costs one token plus one per `BYTES_PER_TOKEN` bytes (decoding cost grows with
  the bytes); tokens come back at `FRAME_RATE` per second up to `FRAME_BURST` (the largest
  frame, 1 MiB, fits in a burst; a fader drag is ~60 small frames/s). Out of tokens: dropped.
- At most `SYNC_BURST` ``/engine/sync`` in `SYNC_WINDOW` seconds (each may copy the map).
- `MAX_OVERFLOWS` queue overflows within `OVERFLOW_WINDOW` seconds: dropped.

The session core (`gateway.session`) asks; these only count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

FRAME_RATE: Final = 500.0
FRAME_BURST: Final = 6000.0
BYTES_PER_TOKEN: Final = 256
SYNC_BURST: Final = 4
SYNC_WINDOW: Final = 2.0
MAX_OVERFLOWS: Final = 3
OVERFLOW_WINDOW: Final = 60.0


@dataclass(slots=True)
class Limits:
    """One client's token bucket, recent syncs and recent overflows."""

    bucket: float = FRAME_BURST
    bucket_at: float = 0.0
    syncs: deque[float] = field(default_factory=deque)
    overflows: deque[float] = field(default_factory=deque)

    def spend(self, now: float, size: int) -> bool:
        """Take a frame's tokens; False if the client is over its rate."""
        elapsed = now - self.bucket_at
        self.bucket_at = now
        cost = 1.0 + size / BYTES_PER_TOKEN
        self.bucket = min(FRAME_BURST, self.bucket + elapsed * FRAME_RATE) - cost
        return self.bucket >= 0

    def may_sync(self, now: float) -> bool:
        """Count an ``/engine/sync``; False if the client asked too often lately."""
        while self.syncs and now - self.syncs[0] >= SYNC_WINDOW:
            self.syncs.popleft()
        if len(self.syncs) >= SYNC_BURST:
            return False
        self.syncs.append(now)
        return True

    def overflowed(self, now: float) -> bool:
        """Count an overflow; True if the client overflows too often to keep."""
        self.overflows.append(now)
        while self.overflows and now - self.overflows[0] > OVERFLOW_WINDOW:
            self.overflows.popleft()
        return len(self.overflows) >= MAX_OVERFLOWS
