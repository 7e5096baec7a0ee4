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
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from eventlog import (
    CONTROLLER,
    LEADER,
    NODE_JOINED,
    NODE_LEFT,
    AppendResult,
    EventLog,
    OperationType,
    Snapshot,
    Submission,
    ValidationError,
    digest,
    validate_submission,
)
from eventlog.logctx import ComponentLog
from replicas import protocol
from replicas.leadership import Leadership, leaderships_of
from replicas.membership import (
    DEFAULT_NODE_TIMEOUT,
    MAX_NODES,
    Membership,
    NodeInfo,
    check_inst,
    node_op,
)
from replicas.messages import (
    Acks,
    Beat,
    Chain,
    Error,
    Hello,
    Ok,
    Status,
    Submit,
    Welcome,
)
from replicas.protocol import ProtocolError, Rule
from replicas.serving import DEFAULT_TAIL_LIMIT, CatchUpServer

log = ComponentLog("cuelog.sequencer")

_digest = digest

RESERVED_TARGETS: Final = frozenset({NODE_JOINED, NODE_LEFT, LEADER})
DIGEST_RING: Final = 4096
#: origins whose admitted high-water mark is kept in memory (older ones are re-read)
ORIGIN_MEMORY: Final = 4096
#: a liveness tick this much later than due means the controller itself stalled (seconds)
STALL: Final = 1.0


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

    replies: list[Acks]
    frames: list[dict[str, Any]]
    result: AppendResult
    #: each frame encoded, as published (`protocol.encode_frames`: each under the byte cap)
    wire: list[bytes] = field(default_factory=list)


class ControllerCore(Membership, CatchUpServer, Leadership):
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
        epoch: int | None = None,
    ) -> None:
        self.elog = elog
        #: this controller's epoch, in every welcome, beat reply and frame: it only goes up
        #: (a new leader's is higher), and nodes refuse anything of an older one. By default
        #: the one its log recorded last: a controller restarted on its file keeps it.
        self.epoch = elog.epoch if epoch is None else epoch
        #: every leadership the log tells, oldest first: (epoch, its first seq)
        self.leaderships = leaderships_of(elog)
        #: the first seq appended under this epoch (0: the log never changed hands)
        last = self.leaderships[-1] if self.leaderships else (0, 0)
        self.epoch_start = last[1] if last[0] == self.epoch else 0
        self.reader = reader or elog
        #: a connection for small indexed lookups on the event loop (never busy with catch-up)
        self.lookup = lookup or self.reader
        #: the snapshot last sent to a node, and the big state last sent to a tool (chunks of
        #: them are asked for one at a time)
        self._served: Snapshot | None = None
        self._states_sent: OrderedDict[int, Snapshot] = OrderedDict()
        super().__init__(node_timeout)
        self.tail_limit = tail_limit
        self.log_id = elog.log_id
        self._digests: OrderedDict[int, str] = OrderedDict()
        self._commit_seqs: list[int] = []
        self._commit_ts: list[float] = []
        #: per origin, the highest origin_seq admitted to the commit queue (LRU-bounded)
        self._origin_hw: OrderedDict[str, int] = OrderedDict()
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
        if dig is not None:
            self.store_digest(seq, dig)
        self._commit_seqs.append(seq)
        self._commit_ts.append(ts)
        if len(self._commit_seqs) > 2 * DIGEST_RING:
            del self._commit_seqs[:DIGEST_RING]
            del self._commit_ts[:DIGEST_RING]

    def store_digest(self, seq: int, dig: str) -> None:
        """Remember the digest after `seq` (see `digest_now`)."""
        self._digests[seq] = dig
        while len(self._digests) > DIGEST_RING:
            self._digests.popitem(last=False)

    def digest_now(self) -> tuple[int, str] | None:
        """``(head, digest)`` of the state at the head, if not known yet (a commit made with
        ``record=False`` leaves it to this). Reads the writer's state: the controller calls it
        on a worker thread between commits and gives the result to `store_digest`."""
        head = self.elog.head
        if self.digest_at(head) is not None:
            return None
        return head, digest(self.elog.state)

    def digest_at(self, seq: int) -> str | None:
        """The digest after `seq`, if it is a recent commit boundary (else None). A single
        dict lookup: safe from a worker thread (`compute_digest_at`) while the owner writes."""
        return self._digests.get(seq)

    def compute_digest_at(self, seq: int) -> str:
        """The digest after `seq`, folding from the reader's newest snapshot (slow path)."""
        found = self.digest_at(seq)
        if found is None:
            found = digest(self.reader.state_at(seq))
        return found

    def ts_of(self, seq: int) -> float | None:
        """The commit time of `seq` if it is in the recent ring."""
        i = bisect.bisect_left(self._commit_seqs, seq)
        if i < len(self._commit_seqs) and self._commit_seqs[0] < seq:
            return self._commit_ts[i]
        return None

    # ---------------------------------------------------------------- submit / commit

    def prepare_submit(self, msg: Submit, pipe: int | None = None, mono: float = 0.0) -> Prepared:
        """Validate a ``submit`` request. Raises `ProtocolError` if the request itself is bad.

        `pipe` is the connection it came on (None: the caller is in this process and trusted):
        it must have said hello as the submit's node, and every op id must use that hello's
        origin and every op that node as its sender."""
        node = msg.node
        session = self.session_of(node, pipe, mono)
        if session is not None:  # the process holding the id (by its beats) is the one
            refused = self.claim(node, session.inst, mono, pipe)
            if refused is not None:
                raise ProtocolError(refused.error, refused.rule)
        subs: list[Submission] = []
        errors: list[dict[str, Any] | None] = []
        for raw in msg.ops:
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
                log.warning("refused an operation from %s: %s", node, exc, node=node)
                continue
            subs.append(sub)
            errors.append(None)
        return Prepared(node, subs, errors)

    # ---------------------------------------------------------------- per-origin order

    def chain(self, msg: Submit, pipe: int | None = None) -> Chain | None:
        """A submit's place in its origin's sequence (`messages.Chain`), checked to be this
        connection's origin.

        A node with several submits in flight says which origin_seq must already be admitted
        (``prev``) before this batch may be; ``head`` says nothing of its own is in flight
        before it. Submits without ``chain`` are admitted at once."""
        chain = msg.chain
        if chain is None:
            return None
        origin = chain.origin
        session = self.sessions.get(pipe) if pipe is not None else None
        if pipe is not None and (session is None or session.inst != origin):
            raise ProtocolError(
                f"this connection may not chain ops of origin {origin}: it holds "
                f"{session.inst if session else 'none (say hello first)'}",
                Rule.NOT_YOURS,
            )
        return chain

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

    def commit(self, batch: Sequence[Prepared], now: float, *, record: bool = True) -> Committed:
        """Append every prepared op of `batch` in one transaction; make replies and frames.

        With ``record=False`` (the controller commits on a worker thread) the core's own
        bookkeeping (head, commit times) is left to `record`, which the caller makes in its
        own thread, and the state is not digested (it costs milliseconds for a big show, on
        every acknowledgement's path): `digest_now` does that after answering."""
        subs = [sub for prepared in batch for sub in prepared.subs]
        result = self.elog.append_batch(subs, validated=True)
        seqs = iter(result.seqs)
        replies: list[Acks] = []
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
            replies.append(Acks(results, head))
        frames: list[dict[str, Any]] = []
        wire: list[bytes] = []
        if result.events:
            events = result.events
            if record:
                self._remember(head, _digest(self.elog.state), events[-1].ts)
                self._head = head
            for frame, encoded in protocol.encode_frames(self.log_id, events, self.epoch):
                frames.append(frame)
                wire.append(encoded)
            for event, reason in zip(events, result.reasons, strict=True):
                if reason is not None:
                    log.info(
                        "recorded no-op %s: %s",
                        event.op,
                        reason,
                        node=event.op.sender,
                        seq=event.seq,
                    )
        return Committed(replies, frames, result, wire)

    def record(self, committed: Committed) -> None:
        """The bookkeeping of a commit made with ``record=False``: head and commit time."""
        events = committed.result.events
        if events:
            self._remember(events[-1].seq, None, events[-1].ts)
            self._head = events[-1].seq

    # ---------------------------------------------------------------- catch-up

    def hello(
        self, msg: Hello, now: float, mono: float | None = None, pipe: int | None = None
    ) -> Welcome | Error:
        node = msg.node
        seen = now if mono is None else mono
        inst = msg.inst or None  # "": none
        if inst is not None:
            check_inst(node, inst, msg.secret)
        their_log = msg.log
        after = msg.after
        head = self.head
        resync = their_log is not None and their_log != self.log_id and after > 0
        resumes = 0 if resync or their_log != self.log_id else after
        catchup = self.catchup_path(resumes)
        refused = None
        if pipe is not None and inst is not None:
            refused = self._origin_held(node, inst, pipe, seen)
        if refused is None:
            refused = self.claim(
                node, msg.inst, seen, pipe, resumes=resumes, catchup=catchup, hello=True
            )
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
                node=node,
                seq=after,
            )
        else:
            log.info(
                "%s says hello at seq %d (head %d)",
                node,
                after,
                head,
                node=node,
                seq=after,
            )
        return Welcome(
            self.log_id,
            head,
            now,
            resync,
            protocol.PROTOCOL_VERSION,
            self.elog.show_tz,
            self.epoch,
            self.fork_point(msg.epoch),
        )

    # ---------------------------------------------------------------- liveness

    def beat(
        self, msg: Beat, now: float, mono: float | None = None, pipe: int | None = None
    ) -> tuple[Ok | Error, list[Submission]]:
        """A node's heartbeat. Returns the reply and any ``node_joined`` op to append.

        ``now`` is the wall clock (echoed to the node); liveness uses ``mono`` (a monotonic
        clock, default ``now``) so a wall-clock step never makes nodes "leave"."""
        seen = now if mono is None else mono
        node, applied, dig, their_log = msg.node, msg.applied, msg.digest, msg.log
        session = self.session_of(node, pipe, seen)
        if session is not None and msg.inst != session.inst:
            raise ProtocolError(
                f"this connection said hello with origin {session.inst}; a beat must carry it",
                Rule.NOT_YOURS,
            )
        refused = self.claim(node, msg.inst, seen, pipe)
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
            ops.append(node_op(NODE_JOINED, node, **story))
            log.info("node %s joined (applied %d)", node, applied, node=node, seq=applied)
        info.last_seen = seen
        info.beats += 1
        self._hold(info, msg.inst, pipe)
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
                    node=node,
                    seq=applied,
                )
        elif not same_log:
            info.applied = 0
            info.digest = dig
            info.digest_match = None
        info.same_log = same_log
        return Ok(self.log_id, self.head, now, self.epoch), ops

    def to_settle(self, node: str) -> tuple[int, str] | None:
        """``(applied, digest)`` a node reported whose match with the log is unknown (a seq
        between commit boundaries), or None: what `digest_of` folds the log to check."""
        info = self.nodes.get(node)
        if info is None or info.digest_match is not None or not info.digest or not info.same_log:
            return None
        return info.applied, info.digest

    def digest_of(self, seq: int) -> str | None:
        """The log's digest after `seq`, folding on the reader (slow: the controller calls it
        on a worker thread), or None when this log does not hold that seq."""
        if self.reader.base_seq <= seq <= self.reader.head:
            return self.compute_digest_at(seq)
        return None

    def settled(self, node: str, applied: int, reported: str, found: str | None) -> None:
        """`digest_of` gave `found` for what `node` reported: its match, unless it beat
        again meanwhile."""
        info = self.nodes.get(node)
        if (
            found is not None
            and info is not None
            and (info.applied, info.digest)
            == (
                applied,
                reported,
            )
        ):
            info.digest_match = found == reported

    def settle_digest(self, node: str) -> None:
        """`to_settle`, `digest_of` and `settled` in one go (for callers in one thread)."""
        asked = self.to_settle(node)
        if asked is not None:
            self.settled(node, *asked, self.digest_of(asked[0]))

    def status(self, now: float, mono: float | None = None) -> Status:
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
        return Status(self.log_id, head, self.digest_at(head) or "", now, nodes, epoch=self.epoch)
