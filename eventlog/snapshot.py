"""Snapshots: the state at seq N, canonically encoded, with its digest.

A snapshot is not a different kind of thing from the state: it is ``State.encode()`` at some
seq plus ``digest`` of those bytes. ``restore(snapshot)`` followed by the events after it equals
the full fold. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventlog.errors import DecodeError
from eventlog.state import State, digest_bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    ts: float
    digest: str
    state: bytes

    def __repr__(self) -> str:
        return f"<Snapshot seq={self.seq} digest={self.digest[:12]} bytes={len(self.state)}>"


def take(state: State, ts: float) -> Snapshot:
    encoded = state.encode()
    return Snapshot(state.seq, ts, digest_bytes(encoded), encoded)


def restore(snapshot: Snapshot) -> State:
    """Rebuild the state a snapshot holds, after checking its digest."""
    if digest_bytes(snapshot.state) != snapshot.digest:
        raise DecodeError(f"snapshot at seq {snapshot.seq} does not match its digest")
    state = State.decode(snapshot.state)
    if state.seq != snapshot.seq:
        raise DecodeError(f"snapshot says seq {snapshot.seq} but holds a state at {state.seq}")
    return state
