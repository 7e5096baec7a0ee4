"""Replication over a simulated network: the real cores, no I/O.

A hypothesis `RuleBasedStateMachine` calls the same core methods the asyncio shells in
`replicas.controller` and `replicas.node` call, over a network that exists only as lists; the
test owns only what the shells own (sockets, tasks, the clock):

- **controller**: a `ControllerCore` over an `EventLog` file in a per-example temp dir (and, for
  some examples, a separate read-only reader, as the real controller has), and its `Admission`:
  chained submits that arrive early are parked (and sent back when they wait too long), a
  ``commit`` rule appends what is queued in one transaction, and a failed commit sends back its
  batch and everything of the same origins behind it. It can take a snapshot, restart from its
  file (same log id and head; what it held is answered "stopping"), or be replaced by a new log
  (new log id: every replica must take a full resync).
- **nodes**: 2-4 of them, each a `ReplicaCore` over a `MemoryStore` or its own `EventLog` file,
  and an `Outbox` whose `SubmitterCore` says what to send (up to `SUBMIT_DEPTH` chained submits
  in flight, reaching the controller in any order, any of them lost) and what each reply means
  (a reply that never comes is a timeout). Each has an inbound frame queue (deliver, drop,
  duplicate, reorder, delay); fetches, one in three steps (sent, answered, delivered; each can be
  lost) or the shell's pipelined round planned by `CatchUp`; hello when the core asks for it;
  heartbeats (missed ones make it say hello again); partitions, crash, restart from its own file
  (it must resume at its applied seq) or fresh, and late join. Hostile input besides: submits
  holding invalid ops, and late copies of submits (some with an op twice).
- **time**: a simulated clock (``now``, moved by a rule) is the controller's clock: its log's
  clock and the ``now`` of every controller call, so every event, frame and reply ``ts`` and the
  liveness timeout. Each node's local monotonic clock is ``now`` plus a skew drawn per node; it
  is passed to every replica input, as the shell does. Nothing sleeps; nothing reads the wall
  clock. Every message crosses the "network" as bytes, decoded by `messages.parse_request`,
  `parse_reply` or `parse_frame` as on the wire.
- **commands**: ``max_command_age`` is drawn per example: mostly huge (so only the history rule
  gates firing and the fired set can be checked exactly), sometimes 2 s (then what fires must
  also be young enough by the controller's clock, and the fired set is only checked from above).

Checked after every step: each replica's state is the controller log's state at its applied seq
(for the log it holds; digests come from an independent fold of what the controller's file reads
back), and within one log its applied seq never goes back (not even inside a step); events
waiting in a replica's buffer are that log's events; each op id is in the log at most once, and
each origin's ops are in the log in its order (whatever order its submits arrived in, failed
commits included); every acknowledged op is in the log at its acknowledged seq (across
restarts); refused ops never are, and a node's valid ops never are refused. Checked at each
firing: a fired event is that log's accepted command, newer than the controller head when this
replica incarnation was welcomed into that log, fired at most once and in seq order per node id
and log (across incarnations), and young enough. ``heal_and_converge`` (a rule, and again at
teardown when the example has not already failed) heals every partition, then says hello /
fetches / delivers until every running replica holds the controller's head; every digest, every
replica file and every snapshot digest must then match the controller's log.

The explicit tests at the end replay, step by step, three bugs this machine found (fixed in the
cores since): a late snapshot reply rolling a replica back and firing again, a log switch keeping
the old log's buffered events, and a node on another log reported as diverged.
"""

from __future__ import annotations

import collections
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import msgspec
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from eventlog import (
    CONTROLLER,
    Event,
    EventLog,
    Operation,
    OperationType,
    OpId,
    State,
    Submission,
    UsageError,
    apply,
    digest,
    encode_event,
    validate_operation,
)
from replicas import messages
from replicas.admission import Admission, Answers
from replicas.catchup import CatchUp
from replicas.messages import (
    Acks,
    Chain,
    Error,
    Ev,
    Fetch,
    Hb,
    Message,
    Reply,
    SnapshotChunk,
    Submit,
    Welcome,
)
from replicas.outbox import Items, Outbox, SubmitterCore
from replicas.protocol import NNG_MAX_BYTES, Rule
from replicas.replica import MemoryStore, ReplicaCore
from replicas.sequencer import ControllerCore, Prepared
from tests.helpers import TS0, Wire, wire

NODE_POOL: Final = ("node-a", "node-b", "node-c", "node-d")
CUES: Final = ("cue-1", "cue-2")
NODE_TIMEOUT: Final = 3.0
#: the sim's clock moves in steps of up to a few seconds: parked submits expire at the next
#: commit after one such step
PARK_TIMEOUT: Final = 1.0
HUGE_AGE: Final = 1e9
EMPTY_DIGEST: Final = digest(State())
CONVERGE_ROUNDS: Final = 4
FETCH_LOOP_LIMIT: Final = 5_000
MAX_LOG_REPLACEMENTS: Final = 2
#: float rounding of local clock + offset, at clock values near 1.7e9
CLOCK_SLACK: Final = 1e-3
#: requests in flight at once: submits (the node's ``submit_depth``) and a catch-up's fetches
SUBMIT_DEPTH: Final = 3
FETCH_DEPTH: Final = 3
OUTBOX_SIZE: Final = 10_000
#: late copies of its submits the network may still deliver, per node
HISTORY: Final = 8
#: why the controller sends a submit back unacknowledged (the node sends it again)
SENT_BACK: Final = frozenset({Rule.COMMIT, Rule.OUT_OF_ORDER, Rule.STOPPING})

# Scaled from the loaded profile: "ci" (derandomized, 50 examples) runs 50 programs of 60 steps
# in a few seconds; "long" (2000 examples) runs 2000 programs of 100 steps.
_PROFILE_EXAMPLES: Final = settings().max_examples
SIM_SETTINGS: Final = settings(
    max_examples=_PROFILE_EXAMPLES,
    stateful_step_count=60 if _PROFILE_EXAMPLES <= 100 else 100,
    deadline=None,
)


# --------------------------------------------------------------------------- operations


def _command(target: str, value: Any = None, **extra: Any) -> Wire:
    data = {"value": value, "address": f"/engine/command/{target}", **extra}
    return wire("command", "update", CONTROLLER, target, data)


def _cue(x: int) -> str:
    return CUES[x % len(CUES)]


#: valid wire operations by kind: ``OPS[kind](x, node, nodes)`` is sent by (or about) `node`
#: among `nodes`; `x` varies its details
OPS: Final[dict[str, Callable[[int, str, Sequence[str]], Wire]]] = {
    "armed": lambda x, node, _: wire("status", "update", node, "armed_ready", {"armed": "yes"}),
    "disarm": lambda x, node, _: wire("status", "update", node, "armed_ready", {"armed": "no"}),
    "load": lambda x, node, nodes: _command(
        "load", f"show-{x % 3}", nodes=[n for i, n in enumerate(nodes) if (x >> i) & 1] or [node]
    ),
    "load-all": lambda x, _, __: _command("load", f"show-{x % 3}"),
    "go": lambda x, _, __: _command("go"),
    "stop": lambda x, _, __: _command("stop"),
    "ping": lambda x, _, __: _command("ping", x),
    "cue-add": lambda x, node, _: wire(
        "cue", "add", node, _cue(x), {"id": _cue(x), "offset": str(x * 100)}
    ),
    "cue-progress": lambda x, node, _: wire(
        "cue", "update", node, _cue(x), {"id": _cue(x), "percentage": 1 + x % 100}
    ),
    "cue-remove": lambda x, node, _: wire("cue", "remove", node, _cue(x), {"id": _cue(x)}),
    "nextcue": lambda x, node, _: wire("status", "update", node, "nextcue", {"nextcue": _cue(x)}),
    "pong": lambda x, node, _: wire("status", "update", node, "pong", {}),
    "player": lambda x, node, _: wire("player", "add", node, f"audioplayer_{_cue(x)}", {"n": x}),
    "volume": lambda x, node, _: _command(
        "player_control", x / 10, address=f"/{node}/audio/mixer/0/{x % 2}/volume"
    ),
}
OP_KINDS: Final = (*OPS, "go")  # GO twice as often


def node_op(kind: str, x: int, node: str, nodes: Sequence[str]) -> Operation:
    """``OPS[kind]`` as `node` itself sends it (a node submits as itself, commands included)."""
    return validate_operation({**OPS[kind](x, node, nodes), "sender": node})


#: wire operations the controller must refuse, sent by `node` (the caller adds the op id)
INVALID: Final[dict[str, Callable[[str], Wire]]] = {
    "unknown-type": lambda node: wire("video", "update", node, "x", None),
    "reserved-target": lambda node: wire("status", "update", node, "node_joined", {"node": node}),
    "bad-percentage": lambda node: wire("cue", "update", node, "cue-1", {"percentage": 500}),
    "bad-address": lambda node: wire(
        "command", "update", CONTROLLER, "go", {"address": "engine/go"}
    ),
    "unknown-field": lambda node: {**OPS["pong"](0, node, [node]), "colour": "red"},
    "no-op-id": lambda node: OPS["ping"](0, node, [node]),
}


def note(what: str) -> None:
    """Count `what` in hypothesis' statistics (``--hypothesis-show-statistics``), if in a test."""
    if currently_in_test_context():
        event(what)


M = TypeVar("M", bound=Message)


def across(msg: M) -> M:
    """`msg` as its peer gets it: encoded, then decoded by the parser the shells use."""
    raw = messages.encode(msg)
    got: Message
    if isinstance(msg, Ev | Hb):
        got = messages.parse_frame(raw, NNG_MAX_BYTES)
    elif isinstance(msg, messages.Request):
        got = messages.parse_request(raw)
    else:
        got = messages.parse_reply(raw, NNG_MAX_BYTES)
    assert type(got) is type(msg), (got, msg)
    return got


def answer_fetch(ctl: ControllerCore, request: Fetch, now: float) -> tuple[Reply, int]:
    """The controller's answer to `request` as the node gets it, and its size in bytes."""
    raw = messages.encode(ctl.fetch(across(request), now))
    return messages.parse_reply(raw, NNG_MAX_BYTES), len(raw)


# --------------------------------------------------------------------------- the model


class Oracle:
    """What one controller log holds, folded here from what its file reads back."""

    def __init__(self, log_id: str) -> None:
        self.log_id = log_id
        self.events: list[Event] = []
        self.reasons: list[str | None] = []
        #: digests[n] is the digest of the state after event n (digests[0]: the empty state)
        self.digests: list[str] = [EMPTY_DIGEST]
        self.op_ids: dict[OpId, int] = {}
        #: per op-id origin, the origin_seq of its last op in the log
        self.origin_last: dict[str, int] = {}
        self.accepted_commands: list[int] = []
        self._state = State()

    @property
    def head(self) -> int:
        return len(self.events)

    def absorb(self, elog: EventLog) -> list[Event]:
        """Read and fold the events the controller appended since the last call."""
        new = elog.read(after=self.head)
        for ev in new:
            assert ev.seq == self.head + 1, f"log has a hole before seq {ev.seq}"
            assert ev.log_id == self.log_id
            op_id = ev.op_id
            assert op_id not in self.op_ids, (
                f"op_id {op_id} appended twice: seq {self.op_ids[op_id]} and {ev.seq}"
            )
            last = self.origin_last.get(op_id.origin, 0)
            assert op_id.origin_seq > last, (
                f"{op_id.origin} committed out of order: #{op_id.origin_seq} after #{last}"
            )
            self.origin_last[op_id.origin] = op_id.origin_seq
            reason = apply(self._state, ev)
            self.events.append(ev)
            self.reasons.append(reason)
            self.digests.append(digest(self._state))
            self.op_ids[op_id] = ev.seq
            if ev.op.type is OperationType.COMMAND and reason is None:
                self.accepted_commands.append(ev.seq)
        return new

    def accepted_between(self, low: int, high: int) -> set[int]:
        """Seqs of accepted commands in ``(low, high]``."""
        return {seq for seq in self.accepted_commands if low < seq <= high}


@dataclass(frozen=True)
class SimConfig:
    nodes: tuple[str, ...]
    file_nodes: frozenset[str]
    started: frozenset[str]
    snapshot_every: int
    replica_snapshot_every: int
    tail_limit: int
    fetch_limit: int
    max_pending: int
    max_command_age: float
    separate_reader: bool
    #: node id -> its local monotonic clock minus the controller's clock
    skews: tuple[float, ...]


@st.composite
def sim_configs(draw: st.DrawFn) -> SimConfig:
    count = draw(st.integers(2, len(NODE_POOL)))
    nodes = NODE_POOL[:count]
    subset = st.sets(st.sampled_from(nodes))
    return SimConfig(
        nodes=nodes,
        file_nodes=frozenset(draw(subset)),
        started=frozenset(draw(st.sets(st.sampled_from(nodes), min_size=1))),
        snapshot_every=draw(st.sampled_from((7, 3, 1000))),
        replica_snapshot_every=draw(st.sampled_from((5, 1000))),
        tail_limit=draw(st.sampled_from((4, 20_000))),
        fetch_limit=draw(st.sampled_from((2, 2000))),
        max_pending=draw(st.sampled_from((50_000, 2))),
        max_command_age=draw(st.sampled_from((HUGE_AGE, 2.0))),
        separate_reader=draw(st.booleans()),
        skews=tuple(draw(st.sampled_from((0.0, -1e6, 3.5e4))) for _ in nodes),
    )


@dataclass(eq=False)
class Sent:
    """A submit in flight: its outbox items, and its reply once it came (None: timed out)."""

    items: Items
    answered: bool = False
    reply: Reply | None = None


@dataclass
class Peer:
    """One node id across its incarnations (a crash ends one; a restart starts the next)."""

    node: str
    path: str
    skew: float = 0.0
    core: ReplicaCore | None = None
    elog: EventLog | None = None
    incarnation: int = 0
    inbox: list[Ev | Hb] = field(default_factory=list)
    fetch_request: Fetch | None = None
    fetch_reply: Reply | None = None
    partitioned: bool = False
    #: this incarnation's submitter over its outbox (in memory: lost in a crash)
    submitter: SubmitterCore | None = None
    #: its submits in flight, oldest first (the shell's ``inflight``)
    inflight: list[Sent] = field(default_factory=list)
    #: the submits it sent lately: the network may deliver a late copy of one
    history: list[Submit] = field(default_factory=list)
    #: op ids of its hostile submits (`submit_invalid`)
    raw_ops: int = 0
    #: log id -> controller head when this incarnation was first welcomed into that log
    floors: dict[str, int] = field(default_factory=dict)
    #: log id -> seqs this incarnation fired / let a snapshot jump over
    fired: dict[str, set[int]] = field(default_factory=dict)
    skipped: dict[str, set[int]] = field(default_factory=dict)
    #: (log id, applied, digest) of its file when it crashed
    crashed_at: tuple[str, int, str] | None = None
    #: (log id, applied) at the last check: within one log, applied never goes back
    seen: tuple[str, int] | None = None

    @property
    def origin(self) -> str:
        return f"{self.node}/{self.incarnation}"

    @property
    def rc(self) -> ReplicaCore:
        assert self.core is not None
        return self.core

    @property
    def sub(self) -> SubmitterCore:
        assert self.submitter is not None
        return self.submitter


@dataclass
class Asked:
    """A submit the controller holds (queued or parked), and where its answer goes."""

    peer: Peer | None
    incarnation: int
    sent: Sent | None
    op_ids: list[OpId | None]
    invalid: list[bool]


# peer predicates (a peer rule picks among the peers that satisfy its own)


def _is_up(p: Peer) -> bool:
    return p.core is not None


def _reachable(p: Peer) -> bool:
    return p.core is not None and not p.partitioned


def _idle(p: Peer) -> bool:
    return p.fetch_request is None and p.fetch_reply is None


def _can_fetch(p: Peer) -> bool:
    return (
        p.core is not None
        and not p.core.need_hello
        and p.core.controller_log is not None
        and not p.core.fetching
        and _idle(p)
    )


def _has_frames(p: Peer) -> bool:
    return _reachable(p) and bool(p.inbox)


Step = Callable[..., None]


def peer_rule(ok: Callable[[Peer], bool], **args: st.SearchStrategy[Any]) -> Callable[[Step], Step]:
    """A rule for one of the peers `ok` accepts (drawn by ``i``); it runs only when there is
    one. The decorated method takes that peer instead of ``i``."""

    def wrap(step: Step) -> Step:
        def run(self: ReplicationSim, i: int, **kwargs: Any) -> None:
            step(self, self._pick(i, ok), **kwargs)

        run.__name__, run.__doc__ = step.__name__, step.__doc__
        as_rule = cast("Callable[..., Callable[[Step], Step]]", rule)(i=st.integers(0, 3), **args)
        return precondition(lambda self: self._any(ok))(as_rule(run))

    return wrap


class ReplicationSim(RuleBasedStateMachine):
    cfg: SimConfig
    elog: EventLog
    ctl: ControllerCore
    admission: Admission
    oracle: Oracle

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="cuelog-sim-")
        self.now = TS0
        self.reader: EventLog | None = None
        self.generation = 0
        self.oracles: dict[str, Oracle] = {}
        self.peers: list[Peer] = []
        #: per admission token, the submit it stands for
        self.asked: dict[int, Asked] = {}
        self._tokens = 0
        #: log id -> op id -> seq, for every acknowledgement the controller gave (received
        #: or not: durable all the same)
        self.acked: dict[str, dict[OpId, int]] = {}
        self.refused: set[OpId] = set()
        #: (node, log id) -> last seq any incarnation of that node fired
        self.last_fired: dict[tuple[str, str], int] = {}

    @property
    def pending(self) -> bool:
        """Whether submits wait for a commit (queued) or for their predecessor (parked)."""
        return bool(self.admission.queue or self.admission.parked)

    def _clock(self) -> float:
        return self.now

    def _local(self, peer: Peer) -> float:
        """`peer`'s own monotonic clock (it never sees the controller's directly)."""
        return self.now + peer.skew

    def _any(self, ok: Callable[[Peer], bool]) -> bool:
        return any(ok(p) for p in self.peers)

    def _pick(self, i: int, ok: Callable[[Peer], bool]) -> Peer:
        candidates = [p for p in self.peers if ok(p)]
        assert candidates, "precondition should have prevented this"
        return candidates[i % len(candidates)]

    # ------------------------------------------------------------------ controller

    def _open_controller(self, new_log: bool) -> None:
        self.generation += new_log
        path = os.path.join(self.dir, f"controller-{self.generation}.cuelog")
        self.elog = EventLog.open(
            path, snapshot_every=self.cfg.snapshot_every, synchronous="OFF", clock=self._clock
        )
        self.reader = EventLog.open(path, readonly=True) if self.cfg.separate_reader else None
        self.ctl = ControllerCore(
            self.elog,
            self.reader,
            node_timeout=NODE_TIMEOUT,
            tail_limit=self.cfg.tail_limit,
            now=self.now,
        )
        self.admission = Admission(self.ctl, park_timeout=PARK_TIMEOUT)
        if new_log:
            self.oracle = Oracle(self.elog.log_id)
            assert self.oracle.log_id not in self.oracles, "a new log must get a new log id"
            self.oracles[self.oracle.log_id] = self.oracle
            self.acked[self.oracle.log_id] = {}
            assert self.elog.head == 0

    def _close_controller(self, drain: bool = True) -> None:
        if drain:  # what it holds is answered "stopping", as its shell does: nodes resend
            stopping = messages.error("the controller is stopping", Rule.STOPPING)
            self._answer(self.admission.drain(stopping))
        self.asked.clear()
        for elog in (self.reader, getattr(self, "elog", None)):
            if elog is not None:
                elog.close()

    def _check_controller_file(self) -> None:
        oracle, elog = self.oracle, self.elog
        assert elog.log_id == oracle.log_id
        assert elog.head == oracle.head == self.ctl.head
        read_back = [encode_event(e) for e in elog.read()]
        assert read_back == [encode_event(e) for e in oracle.events]
        assert digest(elog.state) == oracle.digests[oracle.head]
        for seq, _ts, dig in elog.snapshots():
            assert dig == oracle.digests[seq], f"controller snapshot at {seq} has a wrong digest"

    def _publish(self, frame: Ev | Hb) -> None:
        for peer in self.peers:
            if _reachable(peer):
                peer.inbox.append(frame)

    def _submit(self, peer: Peer, msg: Submit, sent: Sent | None, invalid: list[bool]) -> None:
        """`msg` reaches the controller, which admits it as its shell does."""
        msg = across(msg)
        prepared = self.ctl.prepare_submit(msg)
        for bad, err in zip(invalid, prepared.errors, strict=True):
            assert (err is not None) == bad, err
        op_ids = [OpId(*w["op_id"]) if "op_id" in w else None for w in msg.ops]
        asked = Asked(peer, peer.incarnation, sent, op_ids, invalid)
        self._admit(asked, prepared, self.ctl.chain(msg))

    def _queue_internal(self, subs: list[Submission]) -> None:
        n = len(subs)
        self._admit(Asked(None, 0, None, [None] * n, [False] * n), self.ctl.internal(subs), None)

    def _admit(self, asked: Asked, prepared: Prepared, chain: Chain | None) -> None:
        self._tokens += 1
        self.asked[self._tokens] = asked
        self._answer(self.admission.submit(prepared, chain, self._tokens, self.now))

    def _answer(self, answers: Answers, lose: bool = False) -> None:
        """The controller's answers: checked, and delivered to the submitters still waiting
        (a reply to a node that crashed, is cut off or gave up waiting goes nowhere)."""
        for token, answer in answers:
            asked = self.asked.pop(token)
            reply = across(answer)
            if isinstance(reply, Error):
                assert reply.rule in SENT_BACK, reply
            else:
                self._check_acks(asked, reply)
            peer, sent = asked.peer, asked.sent
            if (
                lose
                or peer is None
                or sent is None
                or peer.incarnation != asked.incarnation
                or peer.partitioned
                or sent not in peer.inflight
            ):
                continue
            sent.answered, sent.reply = True, reply
            self._take_replies(peer)

    def _check_acks(self, asked: Asked, reply: Acks) -> None:
        oracle = self.oracle
        assert reply.head == oracle.head == self.ctl.head
        assert len(reply.results) == len(asked.op_ids)
        acked = self.acked[oracle.log_id]
        for op_id, bad, result in zip(asked.op_ids, asked.invalid, reply.results, strict=True):
            assert ("seq" in result) != bad, result
            if bad:
                assert result.get("rule"), result
                continue
            seq = result["seq"]
            assert 1 <= seq <= oracle.head
            logged = oracle.events[seq - 1]
            if op_id is None:
                assert logged.op_id.origin.startswith("~"), logged.op_id
                continue
            assert logged.op_id == op_id, f"ack for {op_id} points at {logged.op_id}"
            if op_id in acked:
                note("retry of an acknowledged op got its seq back")
                assert acked[op_id] == seq, f"{op_id} acked at {acked[op_id]}, now {seq}"
            acked[op_id] = seq

    def _commit(self, lose_replies: bool) -> None:
        self._answer(self.admission.expire(self.now), lose_replies)
        tickets = self.admission.take()
        committed = self.ctl.commit([t.prepared for t in tickets], self.now)
        oracle = self.oracle
        new = oracle.absorb(self.elog)
        assert [encode_event(e) for e in committed.result.events] == [
            encode_event(e) for e in new
        ], "the commit's events differ from what its file holds"
        if new:
            assert committed.result.reasons == oracle.reasons[-len(new) :]
        assert self.ctl.head == oracle.head
        self._answer(self.admission.committed(tickets, committed.replies), lose_replies)
        assert len(committed.wire) == len(committed.frames)
        for raw in committed.wire:
            self._publish(messages.parse_frame(raw, NNG_MAX_BYTES))

    # ------------------------------------------------------------------ replicas

    def _boot(self, peer: Peer, mode: str) -> None:
        """Start a new incarnation: ``resume`` its file, or ``memory``/``file`` from nothing."""
        cfg = self.cfg
        peer.incarnation += 1
        peer.submitter = SubmitterCore(Outbox(peer.node, OUTBOX_SIZE, peer.origin), peer.node)
        peer.inbox, peer.inflight, peer.history, peer.raw_ops = [], [], [], 0
        peer.floors, peer.fired, peer.skipped = {}, {}, {}
        peer.fetch_request = peer.fetch_reply = peer.elog = peer.seen = None
        store: EventLog | MemoryStore = MemoryStore()
        if mode != "memory":
            if mode == "file":
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(peer.path + suffix):
                        os.remove(peer.path + suffix)
            peer.elog = store = EventLog.open(
                peer.path,
                snapshot_every=cfg.replica_snapshot_every,
                synchronous="OFF",
                clock=self._clock,
            )
        peer.core = ReplicaCore(
            peer.node,
            store,
            max_pending=cfg.max_pending,
            fetch_limit=cfg.fetch_limit,
            max_command_age=cfg.max_command_age,
        )
        if mode == "resume":
            assert peer.crashed_at is not None
            assert (store.log_id, peer.core.applied, peer.core.digest()) == peer.crashed_at, (
                "a replica restarted from its file must resume where it stopped"
            )
            note("replica resumed from its own file")
        peer.crashed_at = None

    def _hello(self, peer: Peer) -> None:
        core = peer.rc
        welcome = across(self.ctl.hello(across(core.hello()), self.now))
        assert isinstance(welcome, Welcome), welcome
        log_id = welcome.log
        switched = core.store.log_id != log_id
        if switched and core.pending:
            note("switched logs with the old log's events buffered")
        core.on_welcome(welcome, self._local(peer))
        assert core.store.log_id == log_id and core.controller_log == log_id
        if switched and core.resyncs:
            note("full resync into another log")
        elif switched and peer.floors:
            note("moved to another log with nothing applied")
        peer.floors.setdefault(log_id, welcome.head)

    def _take_replies(self, peer: Peer) -> None:
        """The submitter takes the replies that came, oldest first, as its shell does; after a
        failure the others in flight count as late (one not answered yet: given up on), and
        everything unacknowledged is sent again from the oldest."""
        sub = peer.sub
        while peer.inflight and peer.inflight[0].answered:
            sent = peer.inflight.pop(0)
            if sub.on_reply(sent.reply).resend:
                note("resend from the oldest unacknowledged op")
                for later in peer.inflight:  # one not answered yet is given up on
                    sub.on_reply(later.reply)
                peer.inflight.clear()
                assert not sub.draining and sub.sent == 0
        for _, future in sub.outbox.peek(OUTBOX_SIZE):
            assert not future.done() or future.exception() is None, "a valid op was refused"

    def _serve(self, peer: Peer) -> None:
        request = peer.fetch_request
        assert request is not None
        peer.fetch_request = None
        if peer.partitioned:
            peer.rc.on_fetch_failed()
        else:
            peer.fetch_reply = answer_fetch(self.ctl, request, self.now)[0]

    def _deliver_reply(self, peer: Peer) -> None:
        reply = peer.fetch_reply
        assert reply is not None
        peer.fetch_reply = None
        if peer.partitioned:
            peer.rc.on_fetch_failed()
        else:
            self._apply_reply(peer, reply)

    def _fetch_round(
        self, peer: Peer, fetch: Fetch, stream: Sequence[int] = (), lost: int | None = None
    ) -> None:
        """The node shell's catch-up round: `CatchUp` says which further chunks to ask for
        while a reply is applied (up to `FETCH_DEPTH` in flight); ``stream[k]`` frames arrive
        before reply k is applied; request number `lost` gets no answer, which ends the round
        as failed."""
        core = peer.rc
        plan = CatchUp(fetch, core.fetch_limit, min(core.pending) - 1 if core.pending else None)
        asked = 0

        def ask(request: Fetch) -> tuple[Reply | None, int]:
            nonlocal asked
            asked += 1
            if peer.partitioned or asked - 1 == lost:
                return None, 0
            return answer_fetch(self.ctl, request, self.now)

        reply, size = ask(fetch)
        inflight: collections.deque[tuple[Fetch, Reply | None, int]] = collections.deque()
        for step in itertools.count():
            if reply is None:
                core.on_fetch_failed()
                return
            for more in plan.on_reply(reply, size, FETCH_DEPTH - len(inflight)):
                inflight.append((more, *ask(more)))
            for _ in range(stream[step] if step < len(stream) else 0):
                if peer.inbox:
                    self._deliver_frame(peer, 0)
            self._apply_reply(peer, reply)
            if not inflight:
                return
            note("pipelined fetch")
            more, reply, size = inflight.popleft()
            plan.answering(more)
            core.on_fetch_sent()

    def _apply_reply(self, peer: Peer, reply: Reply) -> None:
        core = peer.rc
        if isinstance(reply, Error):
            # the only refusal a correct replica can meet: the controller changed its log
            assert reply.rule == Rule.FOREIGN_LOG, reply
        snap = reply if isinstance(reply, SnapshotChunk) else None
        if snap is not None and snap.log != core.controller_log:
            snap = None
        if snap is not None and snap.seq <= core.applied:
            note("stale snapshot reply")
        before, held = core.applied, core.store.log_id
        fired = core.on_fetch_reply(reply, self._local(peer))
        if core.store.log_id == held:
            assert core.applied >= before, (
                f"{peer.node} went back from seq {before} to {core.applied} on a "
                f"{type(reply).__name__} reply: it will apply events twice"
            )
        if snap is not None and snap.seq > before:
            note("caught up from a snapshot")
            jumped = self.oracles[snap.log].accepted_between(before, snap.seq)
            peer.skipped.setdefault(snap.log, set()).update(jumped)
        self._record_fires(peer, fired)

    def _deliver_frame(self, peer: Peer, index: int) -> None:
        frame = peer.inbox.pop(index)
        core = peer.rc
        gaps = core.gaps
        self._record_fires(peer, core.on_frame(frame, self._local(peer)))
        if core.gaps > gaps:
            note("gap detected in the event stream")

    def _record_fires(self, peer: Peer, fired: list[Event]) -> None:
        core = peer.rc
        for ev in fired:
            oracle = self.oracles.get(ev.log_id)
            assert oracle is not None, f"fired an event of an unknown log {ev.log_id}"
            assert ev.op.type is OperationType.COMMAND, f"fired a non-command {ev.op}"
            assert 1 <= ev.seq <= oracle.head
            assert encode_event(ev) == encode_event(oracle.events[ev.seq - 1]), (
                f"fired event {ev.seq} differs from the log's"
            )
            assert oracle.reasons[ev.seq - 1] is None, (
                f"{peer.node} fired {ev.op.target} at {ev.seq}, which the reducer refused: "
                f"{oracle.reasons[ev.seq - 1]}"
            )
            floor = peer.floors.get(ev.log_id)
            assert floor is not None and ev.seq > floor, (
                f"{peer.node} fired history: {ev.op.target} at seq {ev.seq}, joined at {floor}"
            )
            key = (peer.node, ev.log_id)
            last = self.last_fired.get(key, 0)
            assert ev.seq > last, (
                f"{peer.node} fired seq {ev.seq} after it had fired {last}: twice or out of order"
            )
            self.last_fired[key] = ev.seq
            # every input carried the local clock and the welcome was answered at once, so the
            # core's estimate of the controller's clock is exact: check against the real one
            assert abs(core.controller_now() - self.now) < CLOCK_SLACK
            assert self.now - ev.ts <= core.max_command_age + CLOCK_SLACK, (
                f"{peer.node} fired {ev.op.target} {self.now - ev.ts:.1f} s after it was appended"
            )
            peer.fired.setdefault(ev.log_id, set()).add(ev.seq)
            note(f"fired {ev.op.target}")

    def _catch_up(self, peer: Peer) -> None:
        """What a healed node's shell does until it has nothing left to ask for."""
        if peer.fetch_request is not None:
            self._serve(peer)
        if peer.fetch_reply is not None:
            self._deliver_reply(peer)
        while peer.inbox:
            self._deliver_frame(peer, 0)
        for _ in range(FETCH_LOOP_LIMIT):
            if peer.rc.need_hello:
                self._hello(peer)
            fetch = peer.rc.next_fetch()
            if fetch is None:
                return
            self._fetch_round(peer, fetch)
        raise AssertionError(f"{peer.node} kept fetching for {FETCH_LOOP_LIMIT} rounds")

    def _caught_up(self, peer: Peer) -> bool:
        core, oracle = peer.rc, self.oracle
        return (
            core.store.log_id == oracle.log_id
            and core.applied == oracle.head
            and core.synced
            and not core.pending
        )

    def _converge(self) -> None:
        for peer in self.peers:
            peer.partitioned = False
        if self.pending:
            self._commit(lose_replies=False)
        oracle = self.oracle
        up = [p for p in self.peers if p.core is not None]
        for _ in range(CONVERGE_ROUNDS):
            # the controller's idle heartbeat tells every node the head (and the log)
            self._publish(across(Hb(oracle.log_id, self.ctl.head, self.now)))
            for peer in up:
                self._catch_up(peer)
            if all(self._caught_up(p) for p in up):
                break
        else:
            late = {
                p.node: (p.rc.store.log_id[:8], p.rc.applied) for p in up if not self._caught_up(p)
            }
            raise AssertionError(
                f"no convergence in {CONVERGE_ROUNDS} rounds: head {oracle.head}, behind: {late}"
            )
        for peer in up:
            assert peer.rc.digest() == oracle.digests[oracle.head], f"{peer.node} diverged"
            expected = oracle.accepted_between(peer.floors[oracle.log_id], oracle.head)
            expected -= peer.skipped.get(oracle.log_id, set())
            fired = peer.fired.get(oracle.log_id, set())
            assert fired <= expected
            if self.cfg.max_command_age >= HUGE_AGE:
                assert fired == expected, (
                    f"{peer.node} should have fired {sorted(expected)}, fired {sorted(fired)}"
                )
            if peer.elog is not None:
                self._check_replica_file(peer.elog)
        if up:
            note("converged")

    def _check_replica_file(self, store: EventLog) -> None:
        oracle = self.oracles[store.log_id]
        base = store.base_seq
        held = [encode_event(e) for e in store.read(after=base)]
        assert held == [encode_event(e) for e in oracle.events[base : store.head]]
        for seq, _ts, dig in store.snapshots():
            assert dig == oracle.digests[seq], f"replica snapshot at {seq} has a wrong digest"

    # ------------------------------------------------------------------ set-up

    @initialize(cfg=sim_configs())
    def start(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self._open_controller(new_log=True)
        for node, skew in zip(cfg.nodes, cfg.skews, strict=True):
            peer = Peer(node, os.path.join(self.dir, f"{node}.cuelog"), skew)
            self.peers.append(peer)
            if node in cfg.started:
                self._boot(peer, "file" if node in cfg.file_nodes else "memory")

    # ------------------------------------------------------------------ time and liveness

    @rule(dt=st.sampled_from((0.1, 0.5, 1.0, 2.5, 4.0)))
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    @rule()
    def tick(self) -> None:
        ops = self.ctl.tick(self.now)
        if ops:
            note("node left")
            self._queue_internal(ops)

    @peer_rule(lambda p: p.core is not None and p.core.controller_log is not None)
    def beat(self, peer: Peer) -> None:
        """A heartbeat; one that gets no answer (cut off) is missed."""
        core = peer.rc
        beat = core.beat()
        if peer.partitioned:
            core.on_beat_reply(beat, None, self._local(peer))
            return
        reply, ops = self.ctl.beat(across(beat), self.now)
        if ops:
            self._queue_internal(ops)
        core.on_beat_reply(beat, across(reply), self._local(peer))
        # the shell settles an unknown digest match off the loop; so do we, at once
        self.ctl.settle_digest(peer.node)
        info = self.ctl.nodes[peer.node]
        assert info.digest_match is not False, f"controller sees {peer.node} diverged"

    @rule()
    def publish_heartbeat(self) -> None:
        self._publish(across(Hb(self.ctl.log_id, self.ctl.head, self.now)))

    @rule()
    def controller_status(self) -> None:
        status = across(self.ctl.status(self.now))
        assert status.head_seq == self.oracle.head
        assert status.digest == self.oracle.digests[self.oracle.head]
        for info in status.nodes.values():
            assert info["lag_events"] >= 0

    # ------------------------------------------------------------------ submitting

    @peer_rule(
        _is_up,
        groups=st.lists(
            st.lists(st.tuples(st.sampled_from(OP_KINDS), st.integers(0, 15)), max_size=3),
            min_size=2,
            max_size=SUBMIT_DEPTH,
        ),
        order=st.permutations(range(SUBMIT_DEPTH)),
        lost=st.sampled_from((None, None, 0, 1, 2)),
        late=st.sampled_from((None, None, 0, 1, 2, 3)),
    )
    def submit(
        self,
        peer: Peer,
        groups: list[list[tuple[str, int]]],
        order: list[int],
        lost: int | None,
        late: int | None,
    ) -> None:
        """A node queues ops in its outbox, a group at a time, and after each group sends
        what its `SubmitterCore` gives (up to `SUBMIT_DEPTH` submits in flight, each chained
        after the one before; an empty group sends only what waits, e.g. after a failure).
        These submits reach the controller in any order (`order`), except number `lost` (and
        all of them when the node is cut off): their replies never come. With `late`, the
        network also delivers a late copy of one of its submits, these or earlier ones (odd
        `late`: with its first op once more at the end), whose reply nobody waits for: its
        ops in the log get their seqs back, the others are appended once, in order."""
        sub = peer.sub
        out: list[tuple[Submit, Sent | None]] = []
        for group in groups:
            for kind, x in group:
                sub.outbox.put(node_op(kind, x, peer.node, self.cfg.nodes), validated=True)
            if len(peer.inflight) < SUBMIT_DEPTH and (msg := sub.next_submit()) is not None:
                peer.inflight.append(Sent(sub.inflight[-1]))
                out.append((msg, peer.inflight[-1]))
        if len(out) > 1:
            note("pipelined chained submits")
        sending = [out[k] for k in order if k < len(out) and k != lost]
        peer.history = [*peer.history, *(msg for msg, _ in out)][-HISTORY:]
        if late is not None and peer.history:
            copy = peer.history[-1 - late % len(peer.history)]
            if late % 2:
                copy = msgspec.structs.replace(copy, ops=[*copy.ops, copy.ops[0]])
            sending.append((copy, None))
        for msg, sent in [] if peer.partitioned else sending:
            self._submit(peer, msg, sent, [False] * len(msg.ops))

    @peer_rule(lambda p: p.core is not None and bool(p.inflight))
    def submit_times_out(self, peer: Peer) -> None:
        """The reply to a node's oldest submit in flight does not come in time."""
        peer.inflight[0].answered = True
        self._take_replies(peer)

    @precondition(lambda self: self.pending)
    @rule()
    def commit_fails(self) -> None:
        """The group commit raises (a disk error): nothing of it is acknowledged; what its
        senders queued or parked behind it is sent back to them; the controller's own ops
        wait for the next commit."""
        tickets = self.admission.take()
        if tickets:
            note("a failed group commit")
        self._answer(self.admission.commit_failed(tickets, "injected disk error"))

    @peer_rule(_reachable, kind=st.sampled_from(sorted(INVALID)), alone=st.booleans())
    def submit_invalid(self, peer: Peer, kind: str, alone: bool) -> None:
        """A peer sends an invalid op (and, unless `alone`, a valid one of the same origin
        after it): only the valid one is appended."""
        origin = f"{peer.origin}x"
        bad = INVALID[kind](peer.node)
        if kind != "no-op-id":
            peer.raw_ops += 1
            bad["op_id"] = [origin, peer.raw_ops]
            self.refused.add(OpId(origin, peer.raw_ops))
        ops = [bad]
        if not alone:
            peer.raw_ops += 1
            ops.append({**OPS["pong"](0, peer.node, []), "op_id": [origin, peer.raw_ops]})
        self._submit(peer, Submit(peer.node, ops), None, [True] + [False] * (len(ops) - 1))

    @rule(kind=st.sampled_from(OP_KINDS), x=st.integers(0, 15), n=st.integers(0, 3))
    def operator(self, kind: str, x: int, n: int) -> None:
        """The operator's own operation (no op id: the log gives it one)."""
        nodes = self.cfg.nodes
        self._queue_internal(
            [Submission(validate_operation(OPS[kind](x, nodes[n % len(nodes)], nodes)))]
        )

    @rule(n=st.integers(0, 3), x=st.integers(0, 15))
    def rehearse(self, n: int, x: int) -> None:
        """Load naming one node, that node arms, GO: accepted unless a show is running."""
        node = self.cfg.nodes[n % len(self.cfg.nodes)]
        wires = [
            _command("load", f"show-{x % 3}", nodes=[node]),
            OPS["armed"](x, node, self.cfg.nodes),
            _command("go"),
        ]
        self._queue_internal([Submission(validate_operation(w)) for w in wires])

    @rule(
        specs=st.lists(
            st.tuples(st.sampled_from(OP_KINDS), st.integers(0, 15), st.integers(0, 3)),
            min_size=2,
            max_size=8,
        )
    )
    def show_burst(self, specs: list[tuple[str, int, int]]) -> None:
        """A busy moment of the show: many operations committed at once (replicas fall behind)."""
        for kind, x, n in specs:
            self.operator(kind, x, n)
        self._commit(lose_replies=False)

    @precondition(lambda self: self.pending)
    @rule(lose_replies=st.booleans())
    def commit(self, lose_replies: bool) -> None:
        self._commit(lose_replies)

    # ------------------------------------------------------------------ controller faults

    @rule()
    def controller_snapshot(self) -> None:
        snap = self.elog.write_snapshot()
        assert snap.seq == self.oracle.head
        assert snap.digest == self.oracle.digests[snap.seq]

    @rule()
    def controller_restart(self) -> None:
        log_id = self.oracle.log_id
        self._close_controller()
        self._open_controller(new_log=False)
        assert self.ctl.log_id == log_id
        self._check_controller_file()

    @precondition(lambda self: self.generation <= MAX_LOG_REPLACEMENTS and self.oracle.head >= 8)
    @rule()
    def controller_new_log(self) -> None:
        """The controller comes back with another log (a new file): everyone resyncs."""
        self._close_controller()
        self._open_controller(new_log=True)
        note("controller replaced its log")

    # ------------------------------------------------------------------ node lifecycle

    @peer_rule(lambda p: p.core is None, mode=st.sampled_from(("resume", "memory", "file")))
    def start_node(self, peer: Peer, mode: str) -> None:
        """Late join, or a restart: from its own file if it had one, else from nothing."""
        self._boot(peer, "file" if mode == "resume" and peer.crashed_at is None else mode)

    @peer_rule(_is_up)
    def crash_node(self, peer: Peer) -> None:
        if peer.elog is not None:
            peer.crashed_at = (peer.elog.log_id, peer.rc.applied, peer.rc.digest())
            peer.elog.close()
        peer.core = peer.elog = peer.submitter = peer.fetch_request = peer.fetch_reply = None
        peer.inbox, peer.inflight = [], []

    @peer_rule(lambda p: not p.partitioned)
    def partition(self, peer: Peer) -> None:
        peer.partitioned = True

    @peer_rule(lambda p: p.partitioned)
    def heal(self, peer: Peer) -> None:
        peer.partitioned = False

    # ------------------------------------------------------------------ control channel

    @peer_rule(lambda p: _reachable(p) and p.rc.need_hello and _idle(p))
    def hello(self, peer: Peer) -> None:
        self._hello(peer)

    @peer_rule(_can_fetch)
    def send_fetch(self, peer: Peer) -> None:
        request = peer.rc.next_fetch()
        if request is not None and peer.partitioned:
            peer.rc.on_fetch_failed()
        else:
            peer.fetch_request = request

    @peer_rule(lambda p: p.fetch_request is not None)
    def serve_fetch(self, peer: Peer) -> None:
        self._serve(peer)

    @peer_rule(lambda p: p.fetch_reply is not None)
    def deliver_fetch_reply(self, peer: Peer) -> None:
        self._deliver_reply(peer)

    @peer_rule(lambda p: not _idle(p))
    def lose_fetch(self, peer: Peer) -> None:
        """The request or its reply is lost: the shell times out and may ask again."""
        peer.fetch_request = peer.fetch_reply = None
        peer.rc.on_fetch_failed()

    @peer_rule(
        _can_fetch,
        stream=st.lists(st.integers(0, 4), max_size=6),
        lost=st.sampled_from((None, 0, 1, 2, 3)),
    )
    def pipelined_catch_up(self, peer: Peer, stream: list[int], lost: int | None) -> None:
        """The shell's catch-up round; its receive task applies frames while its control task
        waits for a reply, so frames already queued are applied between the controller's
        answer and its arrival."""
        fetch = peer.rc.next_fetch()
        if fetch is not None:
            self._fetch_round(peer, fetch, stream, lost)

    # ------------------------------------------------------------------ event stream

    @peer_rule(_has_frames, pick=st.integers(0, 7), every=st.booleans())
    def deliver_frame(self, peer: Peer, pick: int, every: bool) -> None:
        """Frame `pick` arrives (or `every` queued one, in order)."""
        self._deliver_frame(peer, pick % len(peer.inbox))
        while every and peer.inbox:
            self._deliver_frame(peer, 0)

    @peer_rule(_has_frames, pick=st.integers(0, 7))
    def drop_frame(self, peer: Peer, pick: int) -> None:
        peer.inbox.pop(pick % len(peer.inbox))

    @peer_rule(_has_frames, pick=st.integers(0, 7), to=st.integers(0, 7))
    def duplicate_frame(self, peer: Peer, pick: int, to: int) -> None:
        frame = peer.inbox[pick % len(peer.inbox)]
        peer.inbox.insert(to % (len(peer.inbox) + 1), frame)

    @peer_rule(
        lambda p: _has_frames(p) and len(p.inbox) >= 2, a=st.integers(0, 7), b=st.integers(0, 7)
    )
    def reorder_frames(self, peer: Peer, a: int, b: int) -> None:
        inbox = peer.inbox
        a, b = a % len(inbox), b % len(inbox)
        inbox[a], inbox[b] = inbox[b], inbox[a]

    # ------------------------------------------------------------------ convergence

    @rule()
    def heal_and_converge(self) -> None:
        self._converge()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def replicas_are_prefixes_of_the_log(self) -> None:
        oracle = self.oracle
        assert self.ctl.log_id == oracle.log_id == self.elog.log_id
        assert self.ctl.head == oracle.head == self.elog.head
        for peer in self.peers:
            core = peer.core
            if core is None:
                continue
            applied = core.applied
            held = self.oracles.get(core.store.log_id)
            if held is None:
                assert applied == 0 and core.digest() == EMPTY_DIGEST
                assert not core.pending
                continue
            assert applied <= held.head, f"{peer.node} is past the head of its log"
            assert core.digest() == held.digests[applied], (
                f"{peer.node} at seq {applied} differs from its log at {applied}"
            )
            if peer.seen is not None and peer.seen[0] == held.log_id:
                assert applied >= peer.seen[1], (
                    f"{peer.node} went back from seq {peer.seen[1]} to {applied}: "
                    "it will apply events twice"
                )
            peer.seen = (held.log_id, applied)
            for seq, ev in core.pending.items():
                assert seq > applied, f"{peer.node} buffers {seq}, already applied"
                assert ev.log_id == held.log_id and seq <= held.head, (
                    f"{peer.node} holds log {held.log_id} but buffers an event of {ev.log_id}"
                )
                assert encode_event(ev) == encode_event(held.events[seq - 1])

    @invariant()
    def acknowledged_ops_are_in_the_log_once(self) -> None:
        for log_id, acked in self.acked.items():
            op_ids = self.oracles[log_id].op_ids
            for op_id, seq in acked.items():
                assert op_ids.get(op_id) == seq, f"acknowledged {op_id} is not at seq {seq}"
        for oracle in self.oracles.values():
            assert not self.refused & oracle.op_ids.keys(), "a refused op was appended"

    def teardown(self) -> None:
        try:
            # hypothesis calls this in a `finally`: an exception in flight means the example
            # already failed, and converging must not pile a second failure on it
            if sys.exc_info()[1] is None:
                self._converge()

        finally:
            for peer in self.peers:
                if peer.elog is not None:
                    peer.elog.close()
            self._close_controller(drain=False)
            shutil.rmtree(self.dir, ignore_errors=True)


ReplicationSim.TestCase.settings = SIM_SETTINGS
TestReplicationSim = ReplicationSim.TestCase


# --------------------------------------------------------------------------- explicit scenarios


class Rig:
    """A controller and hand-driven replicas, for scenarios spelled out step by step."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.now = TS0
        self.counter = 0
        self.logs: list[EventLog] = []
        self.ctl = self.new_controller("a")

    def open(self, name: str) -> EventLog:
        elog = EventLog.open(self.dir / f"{name}.cuelog", synchronous="OFF", clock=lambda: self.now)
        self.logs.append(elog)
        return elog

    def new_controller(self, name: str) -> ControllerCore:
        return ControllerCore(self.open(name), now=self.now)

    def replica(self, store: EventLog | MemoryStore | None = None) -> ReplicaCore:
        return ReplicaCore(
            "node-a", MemoryStore() if store is None else store, max_command_age=HUGE_AGE
        )

    def commit(self, *wires: Wire) -> list[Ev | Hb]:
        """Submit `wires` from node-a in one commit; return the frames it publishes."""
        ops = []
        for op in wires:
            self.counter += 1
            ops.append({**op, "op_id": ["node-a/1", self.counter]})
        prepared = self.ctl.prepare_submit(across(Submit("node-a", ops)))
        committed = self.ctl.commit([prepared], self.now)
        return [messages.parse_frame(raw, NNG_MAX_BYTES) for raw in committed.wire]

    def welcome(self, core: ReplicaCore) -> None:
        welcome = across(self.ctl.hello(core.hello(), self.now))
        assert isinstance(welcome, Welcome), welcome
        core.on_welcome(welcome)

    def fetch(self, request: Fetch) -> Reply:
        return answer_fetch(self.ctl, request, self.now)[0]

    def catch_up(self, core: ReplicaCore) -> list[Event]:
        fired: list[Event] = []
        while (request := core.next_fetch()) is not None:
            fired += core.on_fetch_reply(self.fetch(request))
        return fired


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    for elog in made.logs:
        elog.close()


def _status(i: int) -> Wire:
    return wire("status", "update", "node-a", "foo", {"i": i})


def test_scripted_show_fires_each_accepted_go_once(rig: Rig) -> None:
    """Sanity of the harness: a live accepted GO fires once, a refused one and history never."""
    core = rig.replica()
    rig.commit(_command("go"))  # history, and refused (not armed)
    rig.welcome(core)
    assert rig.catch_up(core) == []
    fired: list[Event] = []
    for frame in rig.commit(_command("go")):  # live, refused
        fired += core.on_frame(frame)
    assert fired == []
    frames = rig.commit(
        _command("load", "show", nodes=["node-a"]), OPS["armed"](0, "node-a", []), _command("go")
    )
    for frame in frames + frames:  # duplicated delivery
        fired += core.on_frame(frame)
    assert [(e.op.target, e.seq) for e in fired] == [("load", 3), ("go", 5)]


def test_duplicate_frames_and_a_lost_frame_are_repaired_once(rig: Rig) -> None:
    core = rig.replica()
    rig.welcome(core)
    first = rig.commit(_command("ping", 1))
    second = rig.commit(_command("ping", 2))
    third = rig.commit(_command("ping", 3))
    fired = core.on_frame(third[0]) + core.on_frame(first[0]) + core.on_frame(first[0])
    assert core.pending and core.next_fetch() is not None  # the hole at 2 is pulled
    core.on_fetch_failed()
    fired += rig.catch_up(core) + core.on_frame(second[0])
    assert [e.seq for e in fired] == [1, 2, 3]
    assert core.digest() == digest(rig.ctl.elog.state)


def test_late_snapshot_reply_does_not_roll_back(rig: Rig) -> None:
    """A snapshot reply that arrives after frames moved the replica past it must not win.

    (Found by this machine: `ReplicaCore.on_fetch_reply` used to restore any snapshot, rolling
    the replica back and firing the commands after the snapshot a second time.)

    The fetch for the hole at seq 1 is answered with the snapshot at 5 (the replica is further
    behind than ``tail_limit``). Before that reply arrives, a late copy of frame 1 fills the hole
    and a live frame brings ping at seq 6, which fires. Then the reply lands: the replica resets
    to seq 5, re-fetches 6 and fires ping a second time.
    """
    rig.ctl.tail_limit = 2
    core = rig.replica()
    rig.welcome(core)
    frames = [rig.commit(_status(i))[0] for i in range(5)]
    fired: list[Event] = []
    for frame in frames[1:]:
        fired += core.on_frame(frame)  # 2..5 wait behind the hole at 1
    request = core.next_fetch()
    assert request is not None and request.after == 0
    rig.ctl.elog.write_snapshot()
    reply = rig.fetch(request)
    assert isinstance(reply, SnapshotChunk) and reply.seq == 5
    fired += core.on_frame(frames[0])  # the late duplicate of frame 1 fills the hole
    fired += core.on_frame(rig.commit(_command("ping", 1))[0])
    assert [e.seq for e in fired] == [6] and core.applied == 6
    fired += core.on_fetch_reply(reply)
    assert core.applied == 6, "the replica went back to the snapshot"
    fired += rig.catch_up(core)
    assert [e.seq for e in fired] == [6], "ping at seq 6 fired twice"


@pytest.mark.parametrize("store_kind", ["memory", "file"])
def test_welcome_into_a_new_log_drops_the_old_logs_buffer(rig: Rig, store_kind: str) -> None:
    """A replica with nothing applied but old-log events buffered behind a hole joins a new log.

    (Found by this machine: `ReplicaCore.on_welcome` used to keep `pending` when it switched an
    empty store to the new log. In memory the replica silently diverged, log A's seq 2 applied as
    the new log's seq 2; with its own file, `EventLog.append_events` refused the foreign event and
    the replica was stuck; and when the new log was shorter than the buffered seq, `next_fetch`
    asked for the range below it forever, every reply empty.)
    """
    core = rig.replica(rig.open("replica") if store_kind == "file" else None)
    rig.commit(_status(0))
    rig.welcome(core)  # head 1, applied 0
    core.on_frame(rig.commit(_status(1))[0])  # log A's seq 2 waits behind the hole
    assert sorted(core.pending) == [2]
    rig.ctl.elog.close()
    rig.ctl = rig.new_controller("b")  # the controller comes back with a new log
    rig.commit(_status(10), _status(11))
    rig.welcome(core)  # head 2: a full resync into log B
    try:
        rig.catch_up(core)
    except UsageError as exc:
        raise AssertionError(f"replica stuck on a foreign buffered event: {exc}") from exc
    assert core.applied == rig.ctl.head == 2
    assert core.digest() == digest(rig.ctl.elog.state), "replica diverged"


def test_a_node_on_another_log_is_not_reported_diverged(rig: Rig) -> None:
    """After the controller comes back with a new log, a node still on the old one beats.

    `beat` marks its digest match unknown (``None``): it holds another log. (Found by this
    machine: the shell's `settle_digest` then folded this log to the node's ``applied``, reset to
    0, and compared, so ``status`` showed ``digest_match: False``, a false divergence alarm on
    ``/cluster``, until the node had resynced.)
    """
    core = rig.replica()
    rig.commit(_status(0))
    rig.welcome(core)
    rig.catch_up(core)
    rig.ctl.elog.close()
    rig.ctl = rig.new_controller("b")
    rig.ctl.beat(across(core.beat()), rig.now)
    assert rig.ctl.nodes["node-a"].digest_match is None
    rig.ctl.settle_digest("node-a")
    status = rig.ctl.status(rig.now).nodes["node-a"]
    assert status["digest_match"] is not False, "a node on another log reported diverged"
