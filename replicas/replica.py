"""The node replica's core: ordering, gap repair, resync and command gating. No I/O.

`ReplicaCore` takes decoded messages (welcome, ``ev``/``hb`` frames, fetch replies) and tells
its caller what to do next (`next_fetch`) and which commands to fire. Rules it never breaks:

- Events are applied strictly in seq order, exactly once; duplicates are ignored, events ahead
  of a hole wait in a bounded buffer and the hole is pulled with a fetch, never skipped.
- A replica holds one log: a different log id from the controller means a full resync.
- A command fires only if the reducer accepted it, it is newer than the head the controller
  reported when this replica joined (history never fires: catch-up, snapshots and a restart
  with its own file only rebuild state), and it is at most ``max_command_age`` seconds old in
  the controller's clock (a node that was frozen does not play a GO from the past). The
  replica estimates the controller's "now" as local monotonic time plus the offset measured
  by the latest welcome or heartbeat reply (replies cannot sit in a buffer the way stream
  frames can); callers pass their local monotonic time as ``now``. Without ``now`` the
  latest controller ts seen stands in for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Protocol

from eventlog import (
    Event,
    OperationType,
    Snapshot,
    State,
    apply,
    digest,
    fires,
    restore,
)
from eventlog.logctx import ComponentLog
from replicas.messages import (
    Beat,
    Error,
    Ev,
    Events,
    Fetch,
    Hb,
    Hello,
    Ok,
    Reply,
    SnapshotChunk,
    Welcome,
    chunk_bytes,
    events_of,
)
from replicas.protocol import HELLO_RULES, MAX_FRAME_EVENTS, ProtocolError, Rule

DEFAULT_MAX_PENDING: Final = 50_000
#: beats in a row without an answer after which the node says hello again
MISSED_BEATS: Final = 2
DEFAULT_MAX_COMMAND_AGE: Final = 2.0


class ReplicaStore(Protocol):
    """Where a replica keeps what it applied: memory, or its own log file (`EventLog`)."""

    log_id: str

    @property
    def head(self) -> int: ...

    @property
    def state(self) -> State: ...

    def append_events(self, events: Sequence[Event]) -> list[str | None]: ...

    def reset(self, log_id: str, snapshot: Snapshot | None) -> None: ...

    def set_show_tz(self, name: str) -> None: ...

    @property
    def epoch(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def rewind(self, seq: int) -> bool:
        """Cut the events after `seq`, keeping a copy of the whole; False if it cannot."""
        ...


class SnapshotParts:
    """A snapshot arriving in chunks (`protocol.snapshot_reply`): what came so far."""

    __slots__ = ("data", "digest", "log_id", "seq", "size", "ts")

    def __init__(self, log_id: str, seq: int, ts: float, digest: str, size: int) -> None:
        self.log_id = log_id
        self.seq = seq
        self.ts = ts
        self.digest = digest
        self.size = size
        self.data = bytearray()

    def follows(self, log_id: str, seq: int, digest: str, size: int, offset: int) -> bool:
        """Whether a chunk at `offset` of that snapshot is the next one."""
        return (self.log_id, self.seq, self.digest, self.size, len(self.data)) == (
            log_id,
            seq,
            digest,
            size,
            offset,
        )


class MemoryStore:
    """A replica that keeps only the state (memory does not grow with the log)."""

    def __init__(self) -> None:
        self.log_id = ""
        self.show_tz: str | None = None
        self._state = State()
        self._epoch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch = max(self._epoch, epoch)

    def rewind(self, seq: int) -> bool:
        return False  # no history in memory: a full resync instead

    @property
    def head(self) -> int:
        return self._state.seq

    @property
    def state(self) -> State:
        return self._state

    def append_events(self, events: Sequence[Event]) -> list[str | None]:
        return [apply(self._state, event) for event in events]

    def reset(self, log_id: str, snapshot: Snapshot | None) -> None:
        self.log_id = log_id
        self._state = restore(snapshot) if snapshot is not None else State()

    def set_show_tz(self, name: str) -> None:
        self.show_tz = name


class ReplicaCore:
    """One node's view of the log. Feed it messages; ask it what to fetch; fire what it returns."""

    def __init__(
        self,
        node_id: str,
        store: ReplicaStore,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        fetch_limit: int = MAX_FRAME_EVENTS,
        max_command_age: float = DEFAULT_MAX_COMMAND_AGE,
        instance: str = "",
        secret: str = "",
    ) -> None:
        self.node_id = node_id
        self.log = ComponentLog("cuelog.replica", node_id)
        #: this process's claim on the id (its op-id origin): one live process per id
        self.instance = instance
        #: proves `instance` at hello (`protocol.origin_of`); never sent elsewhere
        self.secret = secret
        self.store = store
        self.max_pending = max_pending
        self.fetch_limit = fetch_limit
        #: ``auto``: far behind, the newest snapshot then the tail; ``tail``: always the tail
        #: (a standby: its file must hold the whole history, for `replay` after a takeover)
        self.fetch_mode = "auto"
        self.max_command_age = max_command_age
        #: the log id the controller announced (None until welcomed)
        self.controller_log: str | None = None
        #: newest head seq the controller reported
        self.known_head = 0
        #: newest controller clock reading seen (frames, heartbeats, replies)
        self.controller_ts = 0.0
        #: freshest controller-clock minus local-clock offset seen (None: no local clock given)
        self.offset: float | None = None
        self._now: float | None = None
        #: commands with seq <= live_from are history and never fire
        self.live_from: int | None = None
        self.pending: dict[int, Event] = {}
        #: a snapshot too big for one reply, while its chunks arrive
        self.partial: SnapshotParts | None = None
        self.fetching = False
        #: beats in a row that got no answer
        self.missed_beats = 0
        #: set when the controller's log changed under us: say hello again
        self.need_hello = True
        self.resyncs = 0
        self.gaps = 0
        #: called with every batch of events right after it was applied (in seq order)
        self.on_applied: Callable[[list[Event]], None] | None = None
        #: highest seq ever applied from the current log: nothing at or below it fires again
        self.high_water = store.head
        #: the highest controller epoch seen (kept by the store: a replica file remembers it
        #: across restarts); frames and replies of an older one are an old leader's, refused
        self.epoch = store.epoch
        #: frames and replies refused as an older epoch's
        self.stale = 0

    # ---------------------------------------------------------------- views

    @property
    def applied(self) -> int:
        return self.store.head

    @property
    def state(self) -> State:
        return self.store.state

    def digest(self) -> str:
        return digest(self.store.state)

    @property
    def synced(self) -> bool:
        return (
            self.controller_log is not None
            and not self.need_hello
            and (self.applied >= self.known_head)
        )

    # ---------------------------------------------------------------- requests

    def hello(self) -> Hello:
        held = self.store.log_id or None
        return Hello(
            self.node_id, self.instance, self.secret or None, held, self.applied, self.epoch
        )

    def beat(self) -> Beat:
        return Beat(
            self.node_id, self.applied, self.digest(), self.instance, self.store.log_id or None
        )

    def next_fetch(self) -> Fetch | None:
        """The fetch request to send now, or None (nothing missing, or one is in flight)."""
        if self.need_hello or self.controller_log is None or self.fetching:
            return None
        applied = self.applied
        parts = self.partial
        if parts is not None:
            if parts.seq > applied and parts.log_id == self.controller_log:
                self.fetching = True
                return Fetch(
                    self.node_id,
                    self.controller_log,
                    applied,
                    snapshot=parts.seq,
                    offset=len(parts.data),
                )
            self.partial = None  # the replica got past it meanwhile (or the log changed)
        if applied >= self.known_head and not self.pending:
            return None
        end = min(self.pending) - 1 if self.pending else self.known_head
        if end <= applied:
            return None
        self.fetching = True
        return Fetch(
            self.node_id,
            self.controller_log,
            applied,
            limit=min(self.fetch_limit, end - applied),
            mode=self.fetch_mode,
        )

    # ---------------------------------------------------------------- inputs

    def _saw(self, head: int | None, ts: float) -> None:
        if head is not None and head > self.known_head:
            self.known_head = head
        self.controller_ts = float(ts)

    def _fresh_clock(self, ts: float, now: float | None) -> None:
        """A reading of the controller's clock that cannot have waited in a buffer (a reply
        to a request just made): it resets the estimate, so a controller clock stepped back
        (NTP) is followed within one heartbeat instead of silencing every command."""
        if now is not None:
            self.offset = float(ts) - now

    def controller_now(self) -> float:
        """The controller's clock now, as well as this replica can tell."""
        if self._now is not None and self.offset is not None:
            return self._now + self.offset
        return self.controller_ts

    def _full_resync(self, log_id: str, why: str) -> None:
        if self.store.head:
            self.log.warning("full resync: %s", why, seq=self.applied)
        self.resyncs += 1
        self.store.reset(log_id, None)
        self.pending.clear()
        self.partial = None

    def on_welcome(self, msg: Welcome, now: float | None = None) -> None:
        """The controller's answer to `hello`: its log id, head, clock and epoch. Raises
        `ProtocolError` for a controller of an older epoch than this replica has seen (an
        old leader: the replica does not follow it)."""
        self._now = now
        log_id, head, tz = msg.log, msg.head, msg.tz
        if msg.epoch < self.epoch:
            self.stale += 1
            raise ProtocolError(
                f"the controller is of epoch {msg.epoch}, older than epoch {self.epoch} this "
                "replica has seen: an old leader, not followed"
            )
        self.fetching = False
        changed = self.controller_log != log_id
        if changed:
            self.partial = None
        if self.store.log_id != log_id:
            changed = True
            if self.store.head:
                self._full_resync(
                    log_id,
                    f"the controller holds log {log_id}, this replica held "
                    f"{self.store.log_id or 'nothing'}",
                )
            else:
                self.store.reset(log_id, None)
                self.pending.clear()
            self.live_from = head
            self.high_water = 0
        elif msg.epoch > self.epoch and 0 < msg.epoch_start <= self.applied:
            # (before the head check: an old tail past the new head is not a lost log)
            # what it applied from epoch_start on came from an older leader: a tail that was
            # never acknowledged (or the new leader would hold it). Set aside, never merged:
            # a file cuts it (keeping a copy of the whole) and goes on by tail; else a resync
            changed = True
            why = (
                f"events from seq {msg.epoch_start} on were applied under epoch {self.epoch}, "
                f"before leader epoch {msg.epoch} began there: an old leader's tail"
            )
            if self.store.rewind(msg.epoch_start - 1):
                self.log.warning("rewound to seq %d: %s", msg.epoch_start - 1, why)
                self.resyncs += 1  # the engine is owed a restore: its state went back
                self.pending.clear()
                self.partial = None
            else:
                self._full_resync(log_id, why)
                self.live_from = head
                self.high_water = head
        elif head < self.applied:
            changed = True
            self._full_resync(
                log_id,
                f"this replica is at seq {self.applied} but the controller's head is "
                f"{head}: the controller lost events; starting over from its log",
            )
            self.live_from = head
            self.high_water = head
        if msg.epoch > self.epoch:
            # events buffered ahead of a hole came from the old leader: never applied now
            self.pending.clear()
            self.partial = None
            self.epoch = msg.epoch
            self.store.set_epoch(msg.epoch)
        if self.live_from is None:
            self.live_from = head
        self.controller_log = log_id
        if tz:
            self.store.set_show_tz(tz)  # the show's zone, for `replay` of this replica's file
        self.known_head = head  # the controller's word now (frames before it were dropped)
        self._saw(head, msg.ts)
        self._fresh_clock(msg.ts, now)
        self.need_hello = False
        self.missed_beats = 0  # a fresh session: the count starts again
        self.log.info(
            "joined log %s at seq %d (controller head %d)",
            log_id,
            self.applied,
            head,
            seq=self.applied,
        )

    def on_frame(self, msg: Ev | Hb, now: float | None = None) -> list[Event]:
        """A frame from the event stream. Returns the commands to fire, in order."""
        self._now = now
        if self.controller_log is None or self.need_hello:
            return []
        if msg.log != self.controller_log:
            self.log.warning(
                "event stream now carries log %s: saying hello again", msg.log, seq=self.applied
            )
            self.need_hello = True
            return []
        if not self._same_epoch(msg.epoch, "frame"):
            return []
        if isinstance(msg, Hb):
            self._saw(msg.head, msg.ts)
            return []
        events = events_of(msg)
        self._saw(events[-1].seq if events else None, msg.ts)
        return self._receive(events)

    def on_fetch_reply(self, msg: Reply, now: float | None = None) -> list[Event]:
        """The answer to `next_fetch`'s request. Returns the commands to fire, in order."""
        self._now = now
        self.fetching = False
        if isinstance(msg, Error):
            self.log.warning("fetch refused: %s", msg.error, seq=self.applied)
            if msg.rule in (Rule.FOREIGN_LOG, Rule.SNAPSHOT_GONE):
                self.partial = None
            if msg.rule == Rule.FOREIGN_LOG:
                self.need_hello = True
            return []
        if not isinstance(msg, Events | SnapshotChunk):
            raise ProtocolError(f"unexpected reply {type(msg).__name__} to fetch")
        log_id = msg.log
        if log_id != self.controller_log:
            self.need_hello = True
            return []
        if not self._same_epoch(msg.epoch, "fetch reply"):
            return []
        # a reply is the controller's word on its head now: a frame's may have been stale, or
        # a lie (one huge heartbeat head must not make the node fetch nothing forever)
        self.known_head = msg.head
        self.controller_ts = msg.ts
        if isinstance(msg, Events):
            return self._receive(events_of(msg))
        seq, ts, dig, size, offset = msg.seq, msg.ts, msg.digest, msg.size, msg.offset
        if seq <= self.applied:
            self.partial = None
            self.log.debug(
                "ignoring a snapshot at seq %d: already at %d", seq, self.applied, seq=self.applied
            )
            return self._drain()
        chunk = chunk_bytes(size, offset, msg.chunk)
        parts = self.partial
        if offset == 0:
            parts = self.partial = SnapshotParts(log_id, seq, ts, dig, size)
        elif parts is None or not parts.follows(log_id, seq, dig, size, offset):
            self.partial = None
            raise ProtocolError(
                f"snapshot chunk at offset {offset} of seq {seq} follows nothing asked for"
            )
        parts.data += chunk
        if len(parts.data) < size:
            return []  # `next_fetch` asks for the next chunk
        self.partial = None
        encoded = bytes(parts.data)
        if size > len(chunk):
            self.log.info("snapshot at seq %d reassembled: %d bytes", seq, size, seq=seq)
        snap = Snapshot(seq, ts, dig, encoded)
        try:
            self.store.reset(log_id, snap)
        except Exception as exc:
            raise ProtocolError(f"bad snapshot: {exc}") from None
        for held in [s for s in self.pending if s <= snap.seq]:
            del self.pending[held]
        self.resyncs += 1
        self.log.info("restored snapshot at seq %d", snap.seq, seq=snap.seq)
        return self._drain()

    def on_beat_reply(self, beat: Beat, reply: Reply | None, now: float) -> None:
        """The answer to `beat` (None: none came in time). Sets `need_hello` when the replica
        must say hello again: the connection is new or the id changed hands (a hello rule),
        `MISSED_BEATS` beats went unanswered, the controller serves another log, or it holds
        less of this log than this replica did when it beat (restarted on an older file: the
        welcome sets the replica aside and follows the controller). Also a clock reading."""
        if isinstance(reply, Error) and reply.rule in HELLO_RULES:
            self.need_hello = True
            return
        if not isinstance(reply, Ok):
            self.missed_beats += 1
            if self.missed_beats >= MISSED_BEATS:
                self.need_hello = True
            return
        if not self._same_epoch(reply.epoch, "beat reply"):
            return
        self.missed_beats = 0
        head = reply.head
        if reply.log != self.controller_log:
            self.need_hello = True
        else:
            self.known_head = max(self.known_head, head)
            if head < beat.applied:
                self.need_hello = True
        self.on_clock(reply.ts, now)

    def on_clock(self, controller_ts: float, now: float) -> None:
        """A controller time reading received at local time `now` (a beat reply)."""
        self._now = now
        self._saw(None, controller_ts)
        self._fresh_clock(controller_ts, now)

    def _same_epoch(self, epoch: int, what: str) -> bool:
        """Whether a frame or reply is of the epoch this replica follows. An older one is an
        old leader's (still publishing after a partition or a pause): refused, never applied.
        A newer one means a new leader: say hello to learn where its epoch began."""
        if epoch == self.epoch:
            return True
        if epoch < self.epoch:
            self.stale += 1
            if self.stale == 1 or self.stale % 1000 == 0:
                self.log.warning(
                    "refused a %s of epoch %d: epoch %d is newer (an old leader); %d refused",
                    what,
                    epoch,
                    self.epoch,
                    self.stale,
                    seq=self.applied,
                )
        else:
            self.need_hello = True
        return False

    def say_hello_again(self) -> None:
        """The connection is new, or the controller said so: hello before anything else."""
        self.need_hello = True

    def on_fetch_sent(self) -> None:
        """A further fetch of the same catch-up round is in flight (`replicas.catchup`)."""
        self.fetching = True

    def on_fetch_failed(self) -> None:
        """The fetch got no answer (timeout, lost connection): it may be asked again."""
        self.fetching = False

    # ---------------------------------------------------------------- applying

    def _receive(self, events: list[Event]) -> list[Event]:
        applied = self.applied
        if not self.pending and events and events[0].seq == applied + 1:
            # the common case, live or catching up: consecutive and next (decode_events
            # guarantees a frame is consecutive), so no buffering is needed
            return self._apply_batch(events)
        for event in events:
            seq = event.seq
            if seq <= applied or seq in self.pending:
                continue
            if seq != applied + 1 and len(self.pending) >= self.max_pending:
                continue  # bounded: it will be fetched again
            self.pending[seq] = event
        if self.pending and min(self.pending) > applied + 1:
            self.gaps += 1
        return self._drain()

    def _drain(self) -> list[Event]:
        batch: list[Event] = []
        seq = self.applied + 1
        while seq in self.pending:
            batch.append(self.pending.pop(seq))
            seq += 1
        if not batch:
            return []
        return self._apply_batch(batch)

    def _apply_batch(self, batch: list[Event]) -> list[Event]:
        reasons = self.store.append_events(batch)
        if self.on_applied is not None:
            self.on_applied(batch)
        floor = self.high_water
        self.high_water = max(floor, batch[-1].seq)
        return self._to_fire(batch, reasons, floor)

    def _to_fire(self, batch: list[Event], reasons: list[str | None], floor: int) -> list[Event]:
        out: list[Event] = []
        live_from = max(floor, self.live_from if self.live_from is not None else self.known_head)
        controller_now = self.controller_now()
        for event, reason in zip(batch, reasons, strict=True):
            if event.op.type is not OperationType.COMMAND:
                continue
            if not fires(event, reason):
                self.log.info("not firing %s: %s", event.op.target, reason, seq=event.seq)
            elif event.seq <= live_from:
                self.log.debug("history, not fired: %s", event.op.target, seq=event.seq)
            elif controller_now - event.ts > self.max_command_age:
                self.log.warning(
                    "not firing %s: it is %.1f s old (this node was behind)",
                    event.op.target,
                    controller_now - event.ts,
                    seq=event.seq,
                )
            else:
                out.append(event)
        return out
