"""The controller's core: sequencing, catch-up decisions and liveness. No sockets, no clock.

`ControllerCore` turns decoded requests into replies and committed events into frames. The
caller (the asyncio shell in `replicas.controller`, or a simulated network in the tests) owns
the sockets, the clock (``now`` is passed in) and group commit: it collects prepared submits
while a commit runs and hands them all to the next `commit`.

Rules it never breaks:

- An operation is acknowledged only after the commit that holds it returned (durable).
- Invalid operations are answered with their validation error and never appended; the valid
  operations of the same request still are.
- Nodes cannot append ``node_joined``/``node_left``: only liveness does.
- No peer speaks for another: a connection submits and beats only as the node it said
  ``hello`` as, with that hello's op-id origin (``inst``) in every op id and that node as every
  op's sender. An origin is held by one live connection at a time (`_origin_held`).
- Memory stays bounded: the digest and commit-time rings and the node table have fixed caps;
  history is read back from the log file.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from eventlog import (
    CONTROLLER,
    NODE_JOINED,
    NODE_LEFT,
    ActionType,
    AppendResult,
    EventLog,
    Operation,
    OperationType,
    Snapshot,
    Submission,
    ValidationError,
    digest,
    validate_submission,
)
from eventlog.operation import MAX_ORIGIN_LEN
from replicas import protocol
from replicas.protocol import MAX_FRAME_EVENTS, MAX_SUBMIT_OPS, ProtocolError, Rule

log = logging.getLogger("cuelog.sequencer")

_digest = digest

RESERVED_TARGETS: Final = frozenset({NODE_JOINED, NODE_LEFT})
DIGEST_RING: Final = 4096
#: nodes tracked at once (offline ones are forgotten first)
MAX_NODES: Final = 1024
#: origins whose admitted high-water mark is kept in memory (older ones are re-read)
ORIGIN_MEMORY: Final = 4096
DEFAULT_NODE_TIMEOUT: Final = 3.0
#: seconds after a holder's connection closed during which only it may take its id back
RECLAIM_GRACE: Final = 1.5
#: sessions kept at most, and how long an idle one lives (a tool's connection: it says hello
#: again when told ``hello-first``)
MAX_SESSIONS: Final = 4096
SESSION_IDLE: Final = 120.0
#: a liveness tick this much later than due means the controller itself stalled (seconds)
STALL: Final = 1.0
#: a fetch further behind than this (in events) gets the newest snapshot instead of the tail
DEFAULT_TAIL_LIMIT: Final = 20_000


class Chain(NamedTuple):
    """A submit's place in its origin's sequence: it may be admitted once ``prev`` is (or at
    once when ``head``: nothing of its own is in flight before it); it ends at ``last``."""

    origin: str
    prev: int
    last: int
    head: bool


@dataclass(slots=True)
class Prepared:
    """A submit request after validation: what to append and where each answer goes."""

    node: str
    subs: list[Submission]
    #: per submitted op: an error dict, or None (its seq comes from the commit)
    errors: list[dict[str, Any] | None]
    #: the op_id origin whose order this batch is part of (chained submits), if any
    origin: str | None = None
    #: how many times a commit holding this batch failed
    failures: int = 0


@dataclass(slots=True)
class Committed:
    """What one group commit produced."""

    replies: list[dict[str, Any]]
    frames: list[dict[str, Any]]
    result: AppendResult
    #: each frame encoded, as published (`protocol.encode_frames`: each under the byte cap)
    wire: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class NodeInfo:
    node: str
    online: bool
    last_seen: float
    applied: int = 0
    digest: str = ""
    digest_match: bool | None = None
    #: whether the node's last beat was about this controller's log
    same_log: bool = True
    beats: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the process that holds this id (its op-id origin), and the connection it uses
    instance: str = ""
    pipe: int | None = None
    #: another live process claimed this id and was refused (shown by status)
    conflict: str = ""
    #: when the holder's connection closed (monotonic): another process may take the id only
    #: `RECLAIM_GRACE` later, so a network blip does not hand it to whoever asks first
    released_at: float | None = None


@dataclass(slots=True)
class Session:
    """What one connection proved at ``hello``: the node it speaks as and its op-id origin."""

    node: str
    inst: str
    pipe: int
    #: the last request seen on this connection (monotonic clock)
    last_seen: float
    #: where its hello said the node resumes, and how it will catch up (tail, snapshot, none)
    after: int = 0
    catchup: str = "none"


def check_inst(node: str, inst: str, secret: object) -> str:
    """A hello's ``inst`` (the op-id origin its connection will use), proven by its ``secret``
    (`protocol.origin_of`): every event shows an origin, so an origin alone proves nothing."""
    if not (len(node) + 1 < len(inst) <= MAX_ORIGIN_LEN and inst.startswith(node + "/")):
        raise ProtocolError(
            f"'inst' must be '{node}/' and a unique part, at most {MAX_ORIGIN_LEN} characters"
        )
    if not isinstance(secret, str) or not 0 < len(secret) <= 256:
        raise ProtocolError("a hello with 'inst' proves it with its 'secret'", Rule.UNPROVEN)
    if protocol.origin_of(node, secret) != inst:
        raise ProtocolError(
            f"the secret does not prove origin {inst}: a process claims only its own origin",
            Rule.UNPROVEN,
        )
    return inst


def _node_op(target: str, node: str, **story: Any) -> Submission:
    """``node_joined``/``node_left`` for `node`; `story` says why (``reason``: first, returned,
    restarted, silent), for how long it was away, and where it resumed (for `replay`)."""
    return Submission(
        Operation(
            OperationType.STATUS, ActionType.UPDATE, CONTROLLER, target, {"node": node, **story}
        )
    )


class ControllerCore:
    """The controller's logic over a writable `EventLog` (and an optional reader for history)."""

    def __init__(
        self,
        elog: EventLog,
        reader: EventLog | None = None,
        *,
        node_timeout: float = DEFAULT_NODE_TIMEOUT,
        tail_limit: int = DEFAULT_TAIL_LIMIT,
        now: float = 0.0,
        mono: float | None = None,
        lookup: EventLog | None = None,
    ) -> None:
        self.elog = elog
        self.reader = reader or elog
        #: a connection for small indexed lookups on the event loop (never busy with catch-up)
        self.lookup = lookup or self.reader
        #: the snapshot last sent to a node, and the big state last sent to a tool (chunks of
        #: them are asked for one at a time)
        self._served: Snapshot | None = None
        self._state_sent: Snapshot | None = None
        self.node_timeout = node_timeout
        self.tail_limit = tail_limit
        self.log_id = elog.log_id
        self.nodes: dict[str, NodeInfo] = {}
        self._ring_lock = threading.Lock()
        self._digests: OrderedDict[int, str] = OrderedDict()
        self._commit_seqs: list[int] = []
        self._commit_ts: list[float] = []
        #: per origin, the highest origin_seq admitted to the commit queue (LRU-bounded)
        self._origin_hw: OrderedDict[str, int] = OrderedDict()
        #: per open connection (NNG pipe id), the session its hello opened; and per op-id
        #: origin, the connection that holds it. Both shrink when connections close.
        self.sessions: dict[int, Session] = {}
        self._origin_pipe: dict[str, int] = {}
        #: connections closed lately (a hello handled after its connection closed opens no
        #: session); LRU-bounded
        self._closed: OrderedDict[int, None] = OrderedDict()
        #: ops to append that `take_ops` hands to the shell (restarts seen at hello)
        self._pending_ops: list[Submission] = []
        head = elog.head
        self._head = head
        self._remember(head, digest(elog.state), now)
        # nodes the log says are online: they must beat within the timeout, or they left
        for node_id, info in elog.state.nodes.items():
            if info.get("online"):
                self.nodes[node_id] = NodeInfo(node_id, True, now if mono is None else mono)

    # ---------------------------------------------------------------- bookkeeping

    @property
    def head(self) -> int:
        """The last committed seq (read without touching the log, so never blocks)."""
        return self._head

    def _remember(self, seq: int, dig: str | None, ts: float) -> None:
        # commits run in a worker thread while the event loop reads the rings: one lock
        with self._ring_lock:
            if dig is not None:
                self._store_digest(seq, dig)
            self._commit_seqs.append(seq)
            self._commit_ts.append(ts)
            if len(self._commit_seqs) > 2 * DIGEST_RING:
                del self._commit_seqs[:DIGEST_RING]
                del self._commit_ts[:DIGEST_RING]

    def _store_digest(self, seq: int, dig: str) -> None:
        self._digests[seq] = dig
        while len(self._digests) > DIGEST_RING:
            self._digests.popitem(last=False)

    def remember_digest(self) -> None:
        """Digest the state at the head now (a commit made with ``digest=False``). Call it off
        the loop, between commits: it reads the writer's state."""
        head = self.elog.head
        if self.digest_at(head) is None:
            dig = digest(self.elog.state)
            with self._ring_lock:
                self._store_digest(head, dig)

    def digest_at(self, seq: int) -> str | None:
        """The digest after `seq`, if it is a recent commit boundary (else None)."""
        with self._ring_lock:
            return self._digests.get(seq)

    def compute_digest_at(self, seq: int) -> str:
        """The digest after `seq`, folding from the reader's newest snapshot (slow path)."""
        found = self.digest_at(seq)
        if found is None:
            found = digest(self.reader.state_at(seq))
        return found

    def ts_of(self, seq: int) -> float | None:
        """The commit time of `seq` if it is in the recent ring."""
        with self._ring_lock:
            i = bisect.bisect_left(self._commit_seqs, seq)
            if i < len(self._commit_seqs) and self._commit_seqs[0] < seq:
                return self._commit_ts[i]
            return None

    # ---------------------------------------------------------------- submit / commit

    def prepare_submit(
        self, msg: dict[str, Any], pipe: int | None = None, mono: float = 0.0
    ) -> Prepared:
        """Validate a ``submit`` request. Raises `ProtocolError` if the request itself is bad.

        `pipe` is the connection it came on (None: the caller is in this process and trusted):
        it must have said hello as the submit's node, and every op id must use that hello's
        origin and every op that node as its sender."""
        node = protocol.node_id(msg)
        raw_ops = protocol.field(msg, "ops", list)
        if len(raw_ops) > MAX_SUBMIT_OPS:
            raise ProtocolError(
                f"a submit carries at most {MAX_SUBMIT_OPS} operations, this one {len(raw_ops)}"
            )
        session = self.session_of(node, pipe, mono)
        if session is not None:  # the process holding the id (by its beats) is the one
            refused = self.claim(node, {"inst": session.inst}, mono, pipe)
            if refused is not None:
                raise ProtocolError(refused["error"], refused["rule"])
        subs: list[Submission] = []
        errors: list[dict[str, Any] | None] = []
        for raw in raw_ops:
            try:
                sub = validate_submission(raw)
                if sub.op_id is None:
                    raise ValidationError(
                        "op_id",
                        "missing",
                        "a node must give every operation "
                        "an op_id [origin, origin_seq] so retries are safe",
                    )
                if sub.op.type is OperationType.STATUS and sub.op.target in RESERVED_TARGETS:
                    raise ValidationError(
                        "target", "reserved", f"{sub.op.target} is appended by the controller only"
                    )
                if session is not None and sub.op_id.origin != session.inst:
                    raise ProtocolError(
                        f"this connection said hello as {node} with origin {session.inst}: "
                        f"op ids of origin {sub.op_id.origin} are not its to submit",
                        Rule.NOT_YOURS,
                    )
                if session is not None and sub.op.sender != node:
                    raise ValidationError(
                        "sender",
                        Rule.NOT_YOURS,
                        f"node {node} submits as itself: the sender must be {node}, "
                        f"not {sub.op.sender}",
                    )
            except ValidationError as exc:
                # clipped: an error may quote the input, and the acks must fit a node's socket
                errors.append(
                    {
                        "error": protocol.clip(str(exc)),
                        "field": protocol.clip(exc.field),
                        "rule": exc.rule,
                        "detail": protocol.clip(exc.detail),
                    }
                )
                log.warning(
                    "refused an operation from %s: %s", node, exc, extra={"node": node, "seq": "-"}
                )
                continue
            subs.append(sub)
            errors.append(None)
        return Prepared(node, subs, errors)

    # ---------------------------------------------------------------- per-origin order

    def chain(self, msg: dict[str, Any], pipe: int | None = None) -> Chain | None:
        """A submit's place in its origin's sequence: ``(origin, prev, last, head)``.

        A node with several submits in flight says which origin_seq must already be admitted
        (``prev``) before this batch may be; ``head`` says nothing of its own is in flight
        before it. Submits without ``chain`` are admitted at once."""
        raw = msg.get("chain")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ProtocolError("'chain' must be an object")
        origin = protocol.field(raw, "origin", str)
        session = self.sessions.get(pipe) if pipe is not None else None
        if pipe is not None and (session is None or session.inst != origin):
            raise ProtocolError(
                f"this connection may not chain ops of origin {origin}: it holds "
                f"{session.inst if session else 'none (say hello first)'}",
                Rule.NOT_YOURS,
            )
        prev = protocol.field(raw, "prev", int)
        last = protocol.field(raw, "last", int)
        head = protocol.field(raw, "head", bool)
        return Chain(origin, prev, last, head)

    def in_order(self, origin: str, prev: int, head: bool) -> bool:
        """Whether a batch chained after `prev` may be admitted now (else it must wait)."""
        if head:
            return True
        known = self._origin_hw.get(origin)
        if known is None:
            known = self.lookup.max_origin_seq(origin)
            self._note_origin(origin, known)
        return prev <= known

    def admitted(self, origin: str, last: int) -> None:
        """A batch of `origin` up to `last` went into the commit queue."""
        self._note_origin(origin, max(last, self._origin_hw.get(origin, 0)))

    def _note_origin(self, origin: str, seq: int) -> None:
        self._origin_hw[origin] = seq
        self._origin_hw.move_to_end(origin)
        while len(self._origin_hw) > ORIGIN_MEMORY:
            self._origin_hw.popitem(last=False)

    def forget_origins(self, origins: set[str]) -> None:
        """A commit failed: what was admitted for these origins may not be in the log. Their
        marks are re-read from the log (what is really committed) when next needed."""
        for origin in origins:
            self._origin_hw.pop(origin, None)

    def admitted_upto(self, origin: str) -> int:
        return self._origin_hw.get(origin, 0)

    def internal(self, subs: list[Submission]) -> Prepared:
        """Operations the controller makes itself (liveness, the operator's commands)."""
        return Prepared(CONTROLLER, subs, [None] * len(subs))

    def commit(self, batch: Sequence[Prepared], now: float, *, digest: bool = True) -> Committed:
        """Append every prepared op of `batch` in one transaction; make replies and frames.

        With ``digest=False`` the state is not digested here (it costs milliseconds for a big
        show, on every acknowledgement's path): call `remember_digest` after answering."""
        subs = [sub for prepared in batch for sub in prepared.subs]
        result = self.elog.append_batch(subs, validated=True)
        seqs = iter(result.seqs)
        replies: list[dict[str, Any]] = []
        head = self.elog.head
        # the controller's own submitters (the UI gateway) learn whether the reducer
        # accepted each op (a refused GO is appended, and answered as refused)
        reasons: dict[int, str | None] = {}
        if any(prepared.node == CONTROLLER for prepared in batch):
            reasons = dict(zip((e.seq for e in result.events), result.reasons, strict=True))
        for prepared in batch:
            results: list[dict[str, Any]] = []
            for err in prepared.errors:
                if err is not None:
                    results.append(err)
                    continue
                seq = next(seqs)
                if prepared.node == CONTROLLER:
                    results.append({"seq": seq, "reason": reasons.get(seq)})
                else:
                    results.append({"seq": seq})
            replies.append({"k": "acks", "results": results, "head": head})
        frames: list[dict[str, Any]] = []
        wire: list[bytes] = []
        if result.events:
            self._head = head
            dig = _digest(self.elog.state) if digest else None
            self._remember(head, dig, result.events[-1].ts)
            events = result.events
            for frame, encoded in protocol.encode_frames(self.log_id, events):
                frames.append(frame)
                wire.append(encoded)
            for event, reason in zip(events, result.reasons, strict=True):
                if reason is not None:
                    log.info(
                        "recorded no-op %s: %s",
                        event.op,
                        reason,
                        extra={"node": event.op.sender, "seq": event.seq},
                    )
        return Committed(replies, frames, result, wire)

    # ---------------------------------------------------------------- catch-up

    def hello(
        self, msg: dict[str, Any], now: float, mono: float | None = None, pipe: int | None = None
    ) -> dict[str, Any]:
        node = protocol.node_id(msg)
        seen = now if mono is None else mono
        inst = protocol.field(msg, "inst", str, optional=True) or None  # "": none
        if inst is not None:
            check_inst(node, inst, msg.get("secret"))
        their_log = protocol.field(msg, "log", str, optional=True)
        after = protocol.field(msg, "after", int, optional=True) or 0
        head = self.head
        resync = their_log is not None and their_log != self.log_id and after > 0
        resumes = 0 if resync or their_log != self.log_id else after
        catchup = self.catchup_path(resumes)
        refused = None
        if pipe is not None and inst is not None:
            refused = self._origin_held(node, inst, pipe, seen)
        if refused is None:
            refused = self.claim(node, msg, seen, pipe, resumes=resumes, catchup=catchup)
        if refused is not None:
            return refused
        if pipe is not None and inst is not None:
            self._open_session(node, inst, pipe, seen, resumes, catchup)
        if resync:
            log.warning(
                "%s holds log %s, not %s: it will take a full resync",
                node,
                their_log,
                self.log_id,
                extra={"node": node, "seq": after},
            )
        else:
            log.info(
                "%s says hello at seq %d (head %d)",
                node,
                after,
                head,
                extra={"node": node, "seq": after},
            )
        return {
            "k": "welcome",
            "log": self.log_id,
            "head": head,
            "ts": now,
            "resync": resync,
            "version": protocol.PROTOCOL_VERSION,
            "tz": self.elog.show_tz,
        }

    def fetch(self, msg: dict[str, Any], now: float) -> dict[str, Any]:
        """The tail after ``after`` if it is retained and not too long, else the newest
        snapshot (the node then fetches the tail after it). Reads the reader log."""
        node = protocol.node_id(msg)
        their_log = protocol.field(msg, "log", str)
        after: int = protocol.field(msg, "after", int)
        limit = min(
            protocol.field(msg, "limit", int, optional=True) or MAX_FRAME_EVENTS, MAX_FRAME_EVENTS
        )
        mode = msg.get("mode", "auto")
        chunk_of = protocol.field(msg, "snapshot", int, optional=True)
        if their_log != self.log_id:
            return protocol.error(
                f"this controller holds log {self.log_id}, not {their_log}: say hello again",
                Rule.FOREIGN_LOG,
                log=self.log_id,
            )
        reader = self.reader
        head = reader.head
        if chunk_of is not None:
            # the next chunk of a snapshot too big for one reply
            offset: int = protocol.field(msg, "offset", int)
            snap = self._snapshot(chunk_of)
            if snap is None:
                return protocol.error(
                    f"there is no snapshot at seq {chunk_of} any more: fetch again",
                    Rule.SNAPSHOT_GONE,
                )
            return protocol.snapshot_reply(self.log_id, snap, head, offset)
        if after > head:
            return protocol.error(
                f"seq {after} is past the head {head}", "ahead-of-head", head=head
            )
        use_snapshot = (
            after < reader.base_seq
            or mode == "snapshot"
            or (mode == "auto" and head - after > self.tail_limit)
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
                    extra={"node": node, "seq": snap.seq},
                )
                return protocol.snapshot_reply(self.log_id, snap, head)
        rows = reader.read_rows(
            after, max(1, limit), protocol.rows_budget(self.log_id), protocol.rows_bytes
        )
        return protocol.rows_reply(self.log_id, rows, head, now)

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

    # ---------------------------------------------------------------- liveness

    def beat(
        self, msg: dict[str, Any], now: float, mono: float | None = None, pipe: int | None = None
    ) -> tuple[dict[str, Any], list[Submission]]:
        """A node's heartbeat. Returns the reply and any ``node_joined`` op to append.

        ``now`` is the wall clock (echoed to the node); liveness uses ``mono`` (a monotonic
        clock, default ``now``) so a wall-clock step never makes nodes "leave"."""
        seen = now if mono is None else mono
        node = protocol.node_id(msg)
        applied: int = protocol.field(msg, "applied", int)
        dig: str = protocol.field(msg, "digest", str)
        their_log = protocol.field(msg, "log", str, optional=True)
        session = self.session_of(node, pipe, seen)
        if session is not None and msg.get("inst") != session.inst:
            raise ProtocolError(
                f"this connection said hello with origin {session.inst}; a beat must carry it",
                Rule.NOT_YOURS,
            )
        refused = self.claim(node, msg, seen, pipe)
        if refused is not None:
            return refused, []
        info = self.nodes.get(node)
        ops: list[Submission] = []
        if info is None or not info.online:
            story: dict[str, Any] = {"reason": "first" if info is None else "returned"}
            if info is not None:
                story["away_s"] = round(max(0.0, seen - info.last_seen), 3)
            if session is not None:
                story.update(inst=session.inst, resumed_from=session.after, catchup=session.catchup)
            if info is None:
                if len(self.nodes) >= MAX_NODES:
                    self._forget_one()
                if len(self.nodes) >= MAX_NODES:
                    raise ProtocolError(
                        f"this controller already tracks {MAX_NODES} online nodes; "
                        f"{node} is not admitted"
                    )
                info = NodeInfo(node, True, seen)
                self.nodes[node] = info
            info.online = True
            ops.append(_node_op(NODE_JOINED, node, **story))
            log.info(
                "node %s joined (applied %d)", node, applied, extra={"node": node, "seq": applied}
            )
        info.last_seen = seen
        info.beats += 1
        self._hold(info, msg, pipe)
        same_log = their_log == self.log_id
        if same_log and (applied != info.applied or dig != info.digest):
            info.applied = applied
            info.digest = dig
            known = self.digest_at(applied) if applied <= self.head else None
            info.digest_match = None if known is None else known == dig
            if info.digest_match is False:
                log.error(
                    "node %s diverged: digest at seq %d differs from the log",
                    node,
                    applied,
                    extra={"node": node, "seq": applied},
                )
        elif not same_log:
            info.applied = 0
            info.digest = dig
            info.digest_match = None
        info.same_log = same_log
        return {"k": "ok", "log": self.log_id, "head": self.head, "ts": now}, ops

    def _forget_one(self) -> None:
        offline = [n for n, i in self.nodes.items() if not i.online]
        if offline:
            del self.nodes[min(offline, key=lambda n: self.nodes[n].last_seen)]

    def settle_digest(self, node: str) -> None:
        """Resolve an unknown digest match by folding the log (slow path; call off the loop)."""
        info = self.nodes.get(node)
        if info is None or info.digest_match is not None or not info.digest or not info.same_log:
            return
        applied, reported = info.applied, info.digest  # one consistent reading
        if self.reader.base_seq <= applied <= self.reader.head:
            match = self.compute_digest_at(applied) == reported
            if (info.applied, info.digest) == (applied, reported):  # no newer beat meanwhile
                info.digest_match = match

    def tick(self, now: float) -> list[Submission]:
        """Nodes silent for longer than the timeout have left: ops to append. ``now`` must be
        the clock `beat` got as ``mono`` (a monotonic one in the controller)."""
        ops: list[Submission] = []
        idle = max(SESSION_IDLE, 10 * self.node_timeout)
        for session in [s for s in self.sessions.values() if now - s.last_seen > idle]:
            self._drop_session(session)  # a connection silent this long says hello again
        for info in self.nodes.values():
            if info.online and now - info.last_seen > self.node_timeout:
                info.online = False
                ops.append(
                    _node_op(
                        NODE_LEFT,
                        info.node,
                        reason="silent",
                        silent_s=round(now - info.last_seen, 3),
                        applied=info.applied,
                    )
                )
                log.warning(
                    "node %s left: silent for %.1f s",
                    info.node,
                    now - info.last_seen,
                    extra={"node": info.node, "seq": info.applied},
                )
        return ops

    # ---------------------------------------------------------------- who holds an id

    def claim(
        self,
        node: str,
        msg: dict[str, Any],
        mono: float,
        pipe: int | None,
        *,
        resumes: int = 0,
        catchup: str = "none",
    ) -> dict[str, Any] | None:
        """Whether the process that sent `msg` may speak as `node`: None if so, else the
        error reply. One live process per id: another process (another ``inst``) is refused
        while the holder is online, beating and connected; it takes the id over once the
        holder's connection is gone or it has been silent for the node timeout."""
        inst = msg.get("inst")
        info = self.nodes.get(node)
        if not isinstance(inst, str) or not inst or info is None or not info.instance:
            return None
        if inst == info.instance:
            if pipe is not None and pipe not in self._closed:
                info.pipe, info.released_at = pipe, None
            return None
        holder_live = (info.pipe is not None and mono - info.last_seen <= self.node_timeout) or (
            info.pipe is None
            and info.released_at is not None
            and mono - info.released_at < RECLAIM_GRACE
        )
        if holder_live:
            if info.conflict != inst:
                info.conflict = inst
                log.error(
                    "a second process claims node id %s (%s) while %s holds it: refused; stop "
                    "one of them or give it another --id",
                    node,
                    inst,
                    info.instance,
                    extra={"node": node, "seq": info.applied},
                )
            return protocol.error(
                f"node id {node} is in use by another live process ({info.instance}): "
                "stop it or pick another --id",
                Rule.ID_IN_USE,
            )
        log.info(
            "node %s is now held by process %s (was %s)",
            node,
            inst,
            info.instance,
            extra={"node": node, "seq": info.applied},
        )
        if info.online and msg.get("k") == "hello":
            # a new process of a node that had not left: a restart (it may have been away
            # for less than the timeout); the story is kept in the log, and it must re-arm
            away = round(max(0.0, mono - info.last_seen), 3)
            log.warning(
                "node %s restarted (away %.1f s), resuming from seq %d by %s",
                node,
                away,
                resumes,
                catchup,
                extra={"node": node, "seq": resumes},
            )
            self._pending_ops.append(
                _node_op(NODE_LEFT, node, reason="restarted", away_s=away, inst=info.instance)
            )
            self._pending_ops.append(
                _node_op(
                    NODE_JOINED,
                    node,
                    reason="restarted",
                    away_s=away,
                    inst=inst,
                    resumed_from=resumes,
                    catchup=catchup,
                )
            )
        info.instance, info.conflict, info.released_at = inst, "", None
        info.pipe = None if pipe in self._closed else pipe
        info.last_seen = max(info.last_seen, mono)  # the new holder is live from now on
        return None

    def _origin_held(self, node: str, inst: str, pipe: int, mono: float) -> dict[str, Any] | None:
        """None if connection `pipe` may hold op-id origin `inst`, else the error reply: another
        live connection holds it (an impostor that read the origin from the log, or a replayed
        hello). A holder whose connection closed, or silent for the node timeout, gives it up."""
        holder = self._origin_pipe.get(inst)
        held = self.sessions.get(holder) if holder is not None else None
        if held is None or holder == pipe or mono - held.last_seen > self.node_timeout:
            return None
        log.error(
            "a connection claims origin %s of node %s while another live connection holds "
            "it: refused (an impostor, or a replayed hello)",
            inst,
            node,
            extra={"node": node, "seq": "-"},
        )
        return protocol.error(
            f"origin {inst} is held by another live connection: a process says hello with "
            "its own origin once per connection",
            Rule.ORIGIN_IN_USE,
        )

    def catchup_path(self, after: int) -> str:
        """How a node holding the log up to `after` will catch up: the same rule as `fetch`."""
        head = self.head
        if after >= head:
            return "none"
        if after < self.reader.base_seq or head - after > self.tail_limit:
            return "snapshot"
        return "tail"

    def take_ops(self) -> list[Submission]:
        """Ops the core decided to append outside `beat`/`tick` (a node's restart, recorded
        at its hello): the shell appends them."""
        ops, self._pending_ops = self._pending_ops, []
        return ops

    def _open_session(
        self, node: str, inst: str, pipe: int, mono: float, after: int = 0, catchup: str = "none"
    ) -> None:
        if pipe in self._closed:
            return  # its connection closed before its hello was handled: nothing to keep
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.last_seen)
            self._drop_session(oldest)
        holder = self._origin_pipe.get(inst)
        if holder is not None and holder != pipe:
            self.sessions.pop(holder, None)  # it gave the origin up (`_origin_held`)
        old = self.sessions.get(pipe)
        if old is not None and old.inst != inst and self._origin_pipe.get(old.inst) == pipe:
            del self._origin_pipe[old.inst]
        self.sessions[pipe] = Session(node, inst, pipe, mono, after, catchup)
        self._origin_pipe[inst] = pipe

    def session_of(self, node: str, pipe: int | None, mono: float) -> Session | None:
        """The session a request from connection `pipe` on behalf of `node` runs in (None for
        callers in this process, `pipe` None). Raises `ProtocolError` (rule ``hello-first``
        or ``not-yours``) when that connection did not say hello as `node`."""
        if pipe is None:
            return None
        session = self.sessions.get(pipe)
        if session is None:
            raise ProtocolError(
                f"say hello (with 'inst') on this connection before speaking for {node}",
                Rule.HELLO_FIRST,
            )
        if session.node != node:
            raise ProtocolError(
                f"this connection said hello as {session.node}; it cannot speak for {node}",
                Rule.NOT_YOURS,
            )
        session.last_seen = mono
        return session

    def _hold(self, info: NodeInfo, msg: dict[str, Any], pipe: int | None) -> None:
        inst = msg.get("inst")
        if isinstance(inst, str) and inst and not info.instance:
            info.instance = inst
            info.pipe = None if pipe in self._closed else pipe

    def pipe_closed(self, pipe: int, mono: float | None = None) -> None:
        """A connection closed: a node that held its id through it holds it no longer (a
        process killed with -9 is replaced `RECLAIM_GRACE` later, not after the timeout)."""
        self._closed[pipe] = None
        while len(self._closed) > MAX_SESSIONS:
            self._closed.popitem(last=False)
        for info in self.nodes.values():
            if info.pipe == pipe:
                info.pipe = None
                info.released_at = mono
        session = self.sessions.get(pipe)
        if session is not None:
            self._drop_session(session)

    def _drop_session(self, session: Session) -> None:
        self.sessions.pop(session.pipe, None)
        if self._origin_pipe.get(session.inst) == session.pipe:
            del self._origin_pipe[session.inst]

    def stalled(self, gap: float, now: float) -> None:
        """The controller itself did not run for `gap` seconds (stopped, or its host was; the
        shell measures it on its own monotonic clock). Liveness judges a node only on time the
        controller was running: every node's silence is forgiven the gap. Logged once; nothing
        is appended and nothing is disarmed."""
        log.warning(
            "the controller did not run for %.1f s (stopped, or its host was): not counted "
            "against the nodes",
            gap,
            extra={"node": CONTROLLER, "seq": self.head},
        )
        for info in self.nodes.values():
            info.last_seen = min(info.last_seen + gap, now)
        for session in self.sessions.values():
            session.last_seen = min(session.last_seen + gap, now)

    def state_reply(self, msg: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole current state at one seq (takes the log's lock: call off the event loop).

        A state over ``MAX_FRAME_BYTES`` encoded is sent as a snapshot in chunks
        (`protocol.snapshot_reply` with ``k`` = ``state``): the client asks for the next
        one with ``seq`` and ``offset`` (the last state sent is kept for that)."""
        seq = None if msg is None else protocol.field(msg, "seq", int, optional=True)
        if seq is not None:
            offset: int = protocol.field(msg or {}, "offset", int)
            held = self._state_sent
            if held is None or held.seq != seq:
                return protocol.error(
                    f"the state at seq {seq} is gone: ask for the state again", Rule.STATE_GONE
                )
            return {**protocol.snapshot_reply(self.log_id, held, self.head, offset), "k": "state"}
        snap = self.elog.snapshot_now()
        if len(snap.state) + protocol.ENVELOPE_BYTES > protocol.MAX_FRAME_BYTES:
            self._state_sent = snap
            return {**protocol.snapshot_reply(self.log_id, snap, self.head), "k": "state"}
        return {
            "k": "state",
            "log": self.log_id,
            "seq": snap.seq,
            "digest": snap.digest,
            "state": orjson.Fragment(snap.state),
        }

    def status(self, now: float, mono: float | None = None) -> dict[str, Any]:
        head = self.head
        nodes: dict[str, Any] = {}
        for node, info in sorted(self.nodes.items()):
            lag = max(0, head - info.applied)
            lag_s: float | None = 0.0
            if lag == 0:
                lag_s = 0.0
            else:
                ts = self.ts_of(info.applied + 1)
                lag_s = max(0.0, now - ts) if ts is not None else None
            nodes[node] = {
                "online": info.online,
                "applied_seq": info.applied,
                "digest": info.digest,
                "digest_match": info.digest_match,
                "lag_events": lag,
                "lag_seconds": lag_s,
                "last_seen_s": round((now if mono is None else mono) - info.last_seen, 3),
                "conflict": info.conflict or None,
            }
        return {
            "k": "status",
            "log_id": self.log_id,
            "head_seq": head,
            "digest": self.digest_at(head) or "",
            "ts": now,
            "nodes": nodes,
        }
