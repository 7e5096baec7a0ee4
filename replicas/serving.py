"""Catch-up: what the controller sends a node that is behind, and a tool that asks for the
whole state. No sockets; reads the log through the core's reader connection.

The rule (`fetch`, and `catchup_path` that names it in advance): a node that is behind by at
most the tail limit (20,000 events), within what the log still holds, gets the tail after its
seq, at most ``MAX_FRAME_EVENTS`` events and ``MAX_FRAME_BYTES`` per reply, the stored JSON
embedded as is (`protocol.rows_reply`); further behind, or on another log, it gets the newest
snapshot in chunks of ``SNAPSHOT_CHUNK_BYTES`` and then the tail after it. The snapshot being
served is kept in memory, so the chunks of a big one are not read again for every node.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Final

import msgspec

from eventlog import EventLog, Snapshot, take
from eventlog.logctx import ComponentLog
from replicas import messages, protocol
from replicas.messages import Error, Fetch, SnapshotChunk, State, StateChunk, StateRequest
from replicas.protocol import MAX_FRAME_EVENTS, Rule

log = ComponentLog("cuelog.sequencer")

#: big states kept for the tools reading them in chunks (the newest)
STATES_KEPT: Final = 4
#: a fetch further behind than this (in events) gets the newest snapshot instead of the tail
DEFAULT_TAIL_LIMIT: Final = 20_000


class CatchUpServer:
    """The catch-up half of `replicas.sequencer.ControllerCore` (which sets these fields)."""

    reader: EventLog
    elog: EventLog
    log_id: str
    tail_limit: int
    epoch: int
    _head: int
    #: the snapshot last sent to a node, and the big state last sent to a tool (chunks of
    #: them are asked for one at a time)
    _served: Snapshot | None
    _states_sent: OrderedDict[int, Snapshot]

    def fetch(self, msg: Fetch, now: float) -> dict[str, Any] | SnapshotChunk | Error:
        """The tail after ``after`` if it is retained and not too long, else the newest
        snapshot (the node then fetches the tail after it). Reads the reader log."""
        node, their_log, after, chunk_of = msg.node, msg.log, msg.after, msg.snapshot
        limit = min(msg.limit or MAX_FRAME_EVENTS, MAX_FRAME_EVENTS)
        if their_log != self.log_id:
            return messages.error(
                f"this controller holds log {self.log_id}, not {their_log}: say hello again",
                Rule.FOREIGN_LOG,
                log=self.log_id,
            )
        reader = self.reader
        head = reader.head
        if chunk_of is not None:
            # the next chunk of a snapshot too big for one reply
            offset = msg.offset or 0  # Fetch checks it is there
            snap = self._snapshot(chunk_of)
            if snap is None:
                return messages.error(
                    f"there is no snapshot at seq {chunk_of} any more: fetch again",
                    Rule.SNAPSHOT_GONE,
                )
            return messages.snapshot_reply(self.log_id, snap, head, offset, self.epoch)
        if after > head:
            return messages.error(f"seq {after} is past the head {head}", Rule.AHEAD, head=head)
        use_snapshot = (
            after < reader.base_seq
            or msg.mode == "snapshot"
            or (msg.mode == "auto" and head - after > self.tail_limit)
        )
        if use_snapshot:
            snap = reader.latest_snapshot()
            if snap is not None and snap.seq > after:
                self._served = snap
                chunks = -(-len(snap.state) // protocol.SNAPSHOT_CHUNK_BYTES)
                log.info(
                    "sending %s the snapshot at seq %d (it is at %d): %d bytes, %d chunk%s",
                    node,
                    snap.seq,
                    after,
                    len(snap.state),
                    chunks,
                    "" if chunks == 1 else "s",
                    node=node,
                    seq=snap.seq,
                )
                return messages.snapshot_reply(self.log_id, snap, head, 0, self.epoch)
        rows = reader.read_rows(
            after, max(1, limit), protocol.rows_budget(self.log_id), protocol.rows_bytes
        )
        return protocol.rows_reply(self.log_id, rows, head, now, self.epoch)

    def _snapshot(self, seq: int) -> Snapshot | None:
        """The stored snapshot at `seq` (the one served last is kept in memory: a big one is
        fetched in several chunks, by every node that resyncs)."""
        served = self._served
        if served is not None and served.seq == seq:
            return served
        snap = self.reader.latest_snapshot(seq)
        if snap is None or snap.seq != seq:
            return None
        self._served = snap
        return snap

    def catchup_path(self, after: int) -> str:
        """How a node holding the log up to `after` will catch up: the same rule as `fetch`."""
        head = self._head
        if after >= head:
            return "none"
        if after < self.reader.base_seq or head - after > self.tail_limit:
            return "snapshot"
        return "tail"

    def state_reply(self, msg: StateRequest | None = None) -> State | StateChunk | Error:
        """The whole current state at one seq (folds on the reader's connection: call it off
        the event loop; the writer, and so every GO, never waits for it).

        A state over ``MAX_FRAME_BYTES`` encoded is sent in chunks (`messages.StateChunk`):
        the client asks for the next one with ``seq`` and ``offset``. The last few such states
        are kept for that, so tools reading at the same time do not push each other out."""
        seq = None if msg is None else msg.seq
        if msg is not None and seq is not None:
            held = self._states_sent.get(seq)
            if held is None:
                return messages.error(
                    f"the state at seq {seq} is gone: ask for the state again", Rule.STATE_GONE
                )
            return self._state_chunk(held, msg.offset or 0)
        snap = take(self.reader.state_at(self._head), time.time())
        if len(snap.state) + protocol.ENVELOPE_BYTES > protocol.MAX_FRAME_BYTES:
            self._states_sent[snap.seq] = snap
            while len(self._states_sent) > STATES_KEPT:
                self._states_sent.popitem(last=False)
            return self._state_chunk(snap, 0)
        return State(self.log_id, snap.seq, snap.digest, msgspec.Raw(snap.state))

    def _state_chunk(self, snap: Snapshot, offset: int) -> StateChunk:
        c = messages.snapshot_reply(self.log_id, snap, self._head, offset)
        return StateChunk(c.log, c.seq, c.ts, c.digest, c.head, c.size, c.offset, c.chunk)
