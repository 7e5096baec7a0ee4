"""Replication over a simulated network: one `ControllerCore`, several `ReplicaCore`s, no I/O.

A hypothesis `RuleBasedStateMachine` drives the sans-I/O cores the way the asyncio shells in
`replicas.controller` and `replicas.node` do, but over a network that exists only as lists:

- **controller**: a `ControllerCore` over an `EventLog` file in a per-example temp dir (and, for
  some examples, a separate read-only reader, as the real controller has). Group commit: prepared
  submits wait in ``pending`` until a ``commit`` rule appends them in one transaction. It can take
  a snapshot, restart from its file (same log id and head), or be replaced by a new log (new log
  id: every replica must take a full resync).
- **nodes**: 2-4 of them, each a `ReplicaCore` over a `MemoryStore` or its own `EventLog` file.
  Each has an inbound frame queue (deliver, drop, duplicate, reorder, delay), one fetch at a time
  in three steps (sent, answered by the controller, reply delivered; each can be lost), hello when
  the core asks for it, heartbeats (two failures make it say hello again, as the shell does), an
  outbox of its own operations with op ids that is retried until acknowledged, partitions, crash,
  restart from its own file (it must resume at its applied seq) or fresh, and late join.
- **time**: a simulated clock (``now``, moved by a rule) is the controller's clock: its log's
  clock and the ``now`` of every controller call, so every event, frame and reply ``ts`` and the
  liveness timeout. Each node's local monotonic clock is ``now`` plus a skew drawn per node; it
  is passed to every replica input and to `ReplicaCore.on_clock` after a beat, as the shell does.
  Nothing sleeps; nothing reads the wall clock. Every message crosses the "network" as canonical
  JSON bytes decoded with `protocol.decode`, as on the wire.
- **catch-up**: besides single fetches (each step separately, or overtaken by the event stream),
  the shell's pipelined catch-up: the next chunk is asked for while the current one is applied,
  frames keep arriving in between, and any request can be lost.
- **commands**: ``max_command_age`` is drawn per example: mostly huge (so only the history rule
  gates firing and the fired set can be checked exactly), sometimes 2 s (then what fires must
  also be young enough by the controller's clock, and the fired set is only checked from above).

Checked after every step: each replica's state is the controller log's state at its applied seq
(for the log it holds; digests come from an independent fold of what the controller's file reads
back), and within one log its applied seq never goes back (not even inside a step); events
waiting in a replica's buffer are that log's events; each op id is in the log at
most once; every acknowledged op is in the log at its acknowledged seq (across restarts); refused
ops never are. Checked at each firing: a fired event is that log's accepted command, newer than
the controller head when this replica incarnation was welcomed into that log, fired at most once
and in seq order per node id and log (across incarnations), and young enough. ``heal_and_converge``
(a rule, and again at teardown when the example has not already failed) heals every partition,
then says hello / fetches / delivers until every running replica holds the controller's head;
every digest, every replica file and every snapshot digest must then match the controller's log.

The explicit tests at the end replay, step by step, three bugs this machine found (fixed in the
cores since): a late snapshot reply rolling a replica back and firing again, a log switch keeping
the old log's buffered events, and a node on another log reported as diverged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from eventlog import (
    CONTROLLER,
    Event,
    EventLog,
    OperationType,
    OpId,
    State,
    Submission,
    UsageError,
    apply,
    digest,
    dumps,
    encode_event,
    validate_operation,
)
from replicas import protocol
from replicas.admission import Admission, Answers
from replicas.replica import MemoryStore, ReplicaCore
from replicas.sequencer import Chain, ControllerCore, Prepared

Wire = dict[str, Any]
Msg = dict[str, Any]

NODE_POOL: Final = ("node-a", "node-b", "node-c", "node-d")
CUES: Final = ("cue-1", "cue-2")
TS0: Final = 1_700_000_000.0
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

# Scaled from the loaded profile: "ci" (derandomized, 50 examples) runs 50 programs of 60 steps
# in a few seconds; "long" (2000 examples) runs 2000 programs of 100 steps.
_PROFILE_EXAMPLES: Final = settings().max_examples
SIM_SETTINGS: Final = settings(
    max_examples=_PROFILE_EXAMPLES,
    stateful_step_count=60 if _PROFILE_EXAMPLES <= 100 else 100,
    deadline=None,
)


# --------------------------------------------------------------------------- operations


def _wire(type_: str, action: str, sender: str, target: str, data: Any) -> Wire:
    return {"type": type_, "action": action, "sender": sender, "target": target, "data": data}


def _command(target: str, value: Any = None, **extra: Any) -> Wire:
    data = {"value": value, "address": f"/engine/command/{target}", **extra}
    return _wire("command", "update", CONTROLLER, target, data)


OP_KINDS: Final = (
    "armed",
    "disarm",
    "load",
    "load-all",
    "go",
    "go",
    "stop",
    "ping",
    "cue-add",
    "cue-progress",
    "cue-remove",
    "nextcue",
    "pong",
    "player",
    "volume",
)


def make_op(kind: str, x: int, node: str, nodes: Sequence[str]) -> Wire:
    """A valid wire operation of `kind` sent by (or about) `node`; `x` varies its details."""
    cue = CUES[x % len(CUES)]
    if kind == "armed":
        return _wire("status", "update", node, "armed_ready", {"armed": "yes"})
    if kind == "disarm":
        return _wire("status", "update", node, "armed_ready", {"armed": "no"})
    if kind == "load":
        named = [n for i, n in enumerate(nodes) if (x >> i) & 1] or [node]
        return _command("load", f"show-{x % 3}", nodes=named)
    if kind == "load-all":
        return _command("load", f"show-{x % 3}")
    if kind in ("go", "stop"):
        return _command(kind)
    if kind == "ping":
        return _command("ping", x)
    if kind == "cue-add":
        return _wire("cue", "add", node, cue, {"id": cue, "offset": str(x * 100)})
    if kind == "cue-progress":
        return _wire("cue", "update", node, cue, {"id": cue, "percentage": 1 + x % 100})
    if kind == "cue-remove":
        return _wire("cue", "remove", node, cue, {"id": cue})
    if kind == "nextcue":
        return _wire("status", "update", node, "nextcue", {"nextcue": cue})
    if kind == "pong":
        return _wire("status", "update", node, "pong", {})
    if kind == "player":
        return _wire("player", "add", node, f"audioplayer_{cue}", {"n": x})
    if kind == "volume":
        address = f"/{node}/audio/mixer/0/{x % 2}/volume"
        return _wire(
            "command", "update", CONTROLLER, "player_control", {"address": address, "value": x / 10}
        )
    raise AssertionError(f"unknown op kind {kind}")


INVALID_KINDS: Final = (
    "unknown-type",
    "reserved-target",
    "bad-percentage",
    "bad-address",
    "unknown-field",
    "no-op-id",
)


def make_invalid(kind: str, node: str) -> Wire:
    """A wire operation the controller must refuse (the caller adds the op id, if any)."""
    if kind == "unknown-type":
        return _wire("video", "update", node, "x", None)
    if kind == "reserved-target":
        return _wire("status", "update", node, "node_joined", {"node": node})
    if kind == "bad-percentage":
        return _wire("cue", "update", node, "cue-1", {"percentage": 500})
    if kind == "bad-address":
        return _wire("command", "update", CONTROLLER, "go", {"address": "engine/go"})
    if kind == "unknown-field":
        return {**make_op("pong", 0, node, [node]), "colour": "red"}
    if kind == "no-op-id":
        return make_op("ping", 0, node, [node])
    raise AssertionError(f"unknown invalid kind {kind}")


def note(what: str) -> None:
    """Count `what` in hypothesis' statistics (``--hypothesis-show-statistics``), if in a test."""
    if currently_in_test_context():
        event(what)


def over_the_wire(msg: Msg) -> Msg:
    """What the peer gets: canonical JSON bytes decoded the way the shells decode them."""
    return protocol.decode(dumps(msg), limit=protocol.NNG_MAX_BYTES)


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
            assert ev.op_id not in self.op_ids, (
                f"op_id {ev.op_id} appended twice: seq {self.op_ids[ev.op_id]} and {ev.seq}"
            )
            reason = apply(self._state, ev)
            self.events.append(ev)
            self.reasons.append(reason)
            self.digests.append(digest(self._state))
            self.op_ids[ev.op_id] = ev.seq
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


@dataclass
class Peer:
    """One node id across its incarnations (a crash ends one; a restart starts the next)."""

    node: str
    path: str
    skew: float = 0.0
    core: ReplicaCore | None = None
    elog: EventLog | None = None
    incarnation: int = 0
    inbox: list[Msg] = field(default_factory=list)
    fetch_request: Msg | None = None
    fetch_reply: Msg | None = None
    partitioned: bool = False
    beat_failures: int = 0
    #: this incarnation's own operations not acknowledged yet (in memory: lost in a crash)
    outbox: dict[OpId, Wire] = field(default_factory=dict)
    #: acknowledged ones, kept to be sent again as late retries
    acked: dict[OpId, Wire] = field(default_factory=dict)
    op_counter: int = 0
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
    def up(self) -> bool:
        return self.core is not None

    @property
    def origin(self) -> str:
        return f"{self.node}/{self.incarnation}"

    def next_op_id(self) -> OpId:
        self.op_counter += 1
        return OpId(self.origin, self.op_counter)


@dataclass
class Request:
    """A prepared submit waiting for the next group commit, and where its reply goes."""

    peer: Peer | None
    incarnation: int
    prepared: Prepared
    wires: list[Wire]
    op_ids: list[OpId | None]
    invalid: list[bool]


# peer predicates (rules pick among the peers that satisfy theirs)


def _is_up(p: Peer) -> bool:
    return p.core is not None


def _is_down(p: Peer) -> bool:
    return p.core is None


def _reachable(p: Peer) -> bool:
    return p.core is not None and not p.partitioned


def _idle(p: Peer) -> bool:
    return p.fetch_request is None and p.fetch_reply is None


def _can_hello(p: Peer) -> bool:
    return p.core is not None and p.core.need_hello and not p.partitioned and _idle(p)


def _can_fetch(p: Peer) -> bool:
    return (
        p.core is not None
        and not p.core.need_hello
        and p.core.controller_log is not None
        and not p.core.fetching
        and _idle(p)
    )


def _has_request(p: Peer) -> bool:
    return p.fetch_request is not None


def _has_reply(p: Peer) -> bool:
    return p.fetch_reply is not None


def _has_frames(p: Peer) -> bool:
    return _reachable(p) and bool(p.inbox)


def _has_two_frames(p: Peer) -> bool:
    return _reachable(p) and len(p.inbox) >= 2


def _welcomed(p: Peer) -> bool:
    return p.core is not None and p.core.controller_log is not None


def _can_retry_acked(p: Peer) -> bool:
    return _reachable(p) and bool(p.acked)


def _partitioned(p: Peer) -> bool:
    return p.partitioned


def _connected(p: Peer) -> bool:
    return not p.partitioned


class ReplicationSim(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="cuelog-sim-")
        self.now = TS0
        self._cfg: SimConfig | None = None
        self._elog: EventLog | None = None
        self._reader: EventLog | None = None
        self._ctl: ControllerCore | None = None
        self.generation = 0
        self.oracles: dict[str, Oracle] = {}
        self._oracle: Oracle | None = None
        self.peers: list[Peer] = []
        #: the controller's real admission (chains, parking, failed commits), and where
        #: the answer to each of its tokens goes
        self._admission: Admission | None = None
        self.requests: dict[int, Request] = {}
        self._tokens = 0
        #: log id -> op id -> seq, for every acknowledgement a sender received
        self.acked: dict[str, dict[OpId, int]] = {}
        self.refused: set[OpId] = set()
        #: (node, log id) -> last seq any incarnation of that node fired
        self.last_fired: dict[tuple[str, str], int] = {}
        #: set when a step starts, cleared by the invariant after it: still set at teardown
        #: means the example already failed, so teardown must not pile a second failure on it
        self._busy = False

    # ------------------------------------------------------------------ accessors

    @property
    def cfg(self) -> SimConfig:
        assert self._cfg is not None
        return self._cfg

    @property
    def ctl(self) -> ControllerCore:
        assert self._ctl is not None
        return self._ctl

    @property
    def elog(self) -> EventLog:
        assert self._elog is not None
        return self._elog

    @property
    def oracle(self) -> Oracle:
        assert self._oracle is not None
        return self._oracle

    def _clock(self) -> float:
        return self.now

    def _local(self, peer: Peer) -> float:
        """`peer`'s own monotonic clock (it never sees the controller's directly)."""
        return self.now + peer.skew

    def _begin(self) -> None:
        self._busy = True

    def _any(self, ok: Callable[[Peer], bool]) -> bool:
        return any(ok(p) for p in self.peers)

    def _pick(self, i: int, ok: Callable[[Peer], bool]) -> Peer:
        candidates = [p for p in self.peers if ok(p)]
        assert candidates, "precondition should have prevented this"
        return candidates[i % len(candidates)]

    @staticmethod
    def _core(peer: Peer) -> ReplicaCore:
        assert peer.core is not None
        return peer.core

    # ------------------------------------------------------------------ controller

    def _open_controller(self, new_log: bool) -> None:
        if new_log:
            self.generation += 1
        path = os.path.join(self.dir, f"controller-{self.generation}.cuelog")
        self._elog = EventLog.open(
            path, snapshot_every=self.cfg.snapshot_every, synchronous="OFF", clock=self._clock
        )
        self._reader = EventLog.open(path, readonly=True) if self.cfg.separate_reader else None
        self._ctl = ControllerCore(
            self._elog,
            self._reader,
            node_timeout=NODE_TIMEOUT,
            tail_limit=self.cfg.tail_limit,
            now=self.now,
        )
        self._admission = Admission(self._ctl, park_timeout=PARK_TIMEOUT)
        if new_log:
            oracle = Oracle(self._elog.log_id)
            assert oracle.log_id not in self.oracles, "a new log must get a new log id"
            self.oracles[oracle.log_id] = oracle
            self.acked[oracle.log_id] = {}
            self._oracle = oracle
            assert self._elog.head == 0

    def _close_controller(self) -> None:
        # queued submits are answered "stopping" by the shell: their senders retry
        self.requests.clear()
        self._admission = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._elog is not None:
            self._elog.close()
            self._elog = None
        self._ctl = None

    def _check_controller_file(self) -> None:
        oracle, elog = self.oracle, self.elog
        assert elog.log_id == oracle.log_id
        assert elog.head == oracle.head == self.ctl.head
        read_back = [encode_event(e) for e in elog.read()]
        assert read_back == [encode_event(e) for e in oracle.events]
        assert digest(elog.state) == oracle.digests[oracle.head]
        for seq, _ts, dig in elog.snapshots():
            assert dig == oracle.digests[seq], f"controller snapshot at {seq} has a wrong digest"

    def _publish(self, frame: Msg) -> None:
        sent = over_the_wire(frame)
        for peer in self.peers:
            if _reachable(peer):
                peer.inbox.append(sent)

    @property
    def admission(self) -> Admission:
        assert self._admission is not None
        return self._admission

    @property
    def pending(self) -> bool:
        """Whether submits wait for a commit (queued) or for their predecessor (parked)."""
        return self._admission is not None and bool(self._admission.queue or self._admission.parked)

    def _admit(self, req: Request, chain: Chain | None = None) -> None:
        self._tokens += 1
        self.requests[self._tokens] = req
        self._settle(self.admission.submit(req.prepared, chain, self._tokens, self.now), False)

    def _settle(self, answers: Answers, lose_replies: bool) -> None:
        """Replies that are not a commit's (all refused, sent back, failed): nothing of them
        is acknowledged, and their valid ops stay in their sender's outbox."""
        for token, reply in answers:
            req = self.requests.pop(token)
            reply = over_the_wire(reply)
            if reply["k"] == "acks":
                assert all("seq" not in r for r in reply["results"]), reply
                assert all(req.invalid), "an all-refused answer for a valid op"
            else:
                assert reply["k"] == "error" and reply["rule"] in ("commit", "out-of-order")

    def _commit(self, lose_replies: bool) -> None:
        self._settle(self.admission.expire(self.now), lose_replies)
        tickets = self.admission.take()
        batch = [self.requests.pop(t.token) for t in tickets]
        committed = self.ctl.commit([req.prepared for req in batch], self.now)
        answered = self.admission.committed(tickets, committed.replies)
        assert [token for token, _ in answered] == [t.token for t in tickets]
        oracle = self.oracle
        new = oracle.absorb(self.elog)
        assert [encode_event(e) for e in committed.result.events] == [
            encode_event(e) for e in new
        ], "the commit's events differ from what its file holds"
        if new:
            assert committed.result.reasons == oracle.reasons[-len(new) :]
        assert self.ctl.head == oracle.head
        assert len(committed.replies) == len(batch)
        acked = self.acked[oracle.log_id]
        for req, reply in zip(batch, committed.replies, strict=True):
            reply = over_the_wire(reply)
            assert reply["k"] == "acks" and reply["head"] == oracle.head
            results = reply["results"]
            assert len(results) == len(req.wires)
            peer = req.peer
            delivered = (
                not lose_replies
                and peer is not None
                and peer.up
                and peer.incarnation == req.incarnation
                and not peer.partitioned
            )
            for wire, op_id, invalid, result in zip(
                req.wires, req.op_ids, req.invalid, results, strict=True
            ):
                if invalid:
                    assert "seq" not in result and result.get("rule"), result
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
                if delivered:
                    assert peer is not None
                    acked[op_id] = seq
                    peer.outbox.pop(op_id, None)
                    peer.acked[op_id] = wire
        for frame in committed.frames:
            self._publish(frame)

    # ------------------------------------------------------------------ replicas

    def _boot(self, peer: Peer, mode: str) -> None:
        """Start a new incarnation: ``resume`` its file, or ``memory``/``file`` from nothing."""
        cfg = self.cfg
        peer.incarnation += 1
        peer.inbox = []
        peer.fetch_request = peer.fetch_reply = None
        peer.beat_failures = 0
        peer.outbox = {}
        peer.acked = {}
        peer.op_counter = 0
        peer.floors = {}
        peer.fired = {}
        peer.skipped = {}
        peer.elog = None
        peer.seen = None
        store: EventLog | MemoryStore
        if mode == "memory":
            store = MemoryStore()
        else:
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
            log_id, applied, dig = peer.crashed_at
            assert (store.log_id, peer.core.applied, peer.core.digest()) == (
                log_id,
                applied,
                dig,
            ), "a replica restarted from its file must resume where it stopped"
            note("replica resumed from its own file")
        peer.crashed_at = None

    def _hello(self, peer: Peer) -> None:
        core = self._core(peer)
        welcome = over_the_wire(self.ctl.hello(over_the_wire(core.hello()), self.now))
        log_id = welcome["log"]
        switched = core.store.log_id != log_id
        if switched and core.pending:
            note("switched logs with the old log's events buffered")
        core.on_welcome(welcome, self._local(peer))
        assert core.store.log_id == log_id and core.controller_log == log_id
        if switched and core.resyncs:
            note("full resync into another log")
        elif switched and peer.floors:
            note("moved to another log with nothing applied")
        peer.floors.setdefault(log_id, welcome["head"])
        peer.beat_failures = 0

    def _answer(self, request: Msg) -> Msg:
        return over_the_wire(self.ctl.fetch(over_the_wire(request), self.now))

    def _serve(self, peer: Peer) -> None:
        request = peer.fetch_request
        assert request is not None
        peer.fetch_request = None
        if peer.partitioned:
            self._core(peer).on_fetch_failed()
            return
        peer.fetch_reply = self._answer(request)

    def _deliver_reply(self, peer: Peer) -> None:
        core = self._core(peer)
        reply = peer.fetch_reply
        assert reply is not None
        peer.fetch_reply = None
        if peer.partitioned:
            core.on_fetch_failed()
            return
        if reply["k"] == "error":
            # the only refusal a correct replica can meet: the controller changed its log
            assert reply["rule"] == "foreign-log", reply
        self._apply_reply(peer, reply)

    def _apply_reply(self, peer: Peer, reply: Msg) -> None:
        core = self._core(peer)
        is_snapshot = reply["k"] == "snapshot" and reply.get("log") == core.controller_log
        if is_snapshot and reply["seq"] <= core.applied:
            note("stale snapshot reply")
        before, held = core.applied, core.store.log_id
        fired = core.on_fetch_reply(reply, self._local(peer))
        if core.store.log_id == held:
            assert core.applied >= before, (
                f"{peer.node} went back from seq {before} to {core.applied} on a {reply['k']} "
                "reply: it will apply events twice"
            )
        if is_snapshot and reply["seq"] > before:
            note("caught up from a snapshot")
            jumped = self.oracles[reply["log"]].accepted_between(before, reply["seq"])
            peer.skipped.setdefault(reply["log"], set()).update(jumped)
        self._record_fires(peer, fired)

    def _deliver_frame(self, peer: Peer, index: int) -> None:
        frame = peer.inbox.pop(index)
        core = self._core(peer)
        gaps = core.gaps
        self._record_fires(peer, core.on_frame(frame, self._local(peer)))
        if core.gaps > gaps:
            note("gap detected in the event stream")

    def _record_fires(self, peer: Peer, fired: list[Event]) -> None:
        core = self._core(peer)
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
        core = self._core(peer)
        if peer.fetch_request is not None:
            self._serve(peer)
        if peer.fetch_reply is not None:
            self._deliver_reply(peer)
        while peer.inbox:
            self._deliver_frame(peer, 0)
        for _ in range(FETCH_LOOP_LIMIT):
            if core.need_hello:
                self._hello(peer)
            request = core.next_fetch()
            if request is None:
                return
            peer.fetch_request = request
            self._serve(peer)
            self._deliver_reply(peer)
        raise AssertionError(f"{peer.node} kept fetching for {FETCH_LOOP_LIMIT} rounds")

    def _caught_up(self, peer: Peer) -> bool:
        core = self._core(peer)
        oracle = self.oracle
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
        up = [p for p in self.peers if p.up]
        for _ in range(CONVERGE_ROUNDS):
            # the controller's idle heartbeat tells every node the head (and the log)
            self._publish(protocol.heartbeat_frame(oracle.log_id, self.ctl.head, self.now))
            for peer in up:
                self._catch_up(peer)
            if all(self._caught_up(p) for p in up):
                break
        else:
            late = {
                p.node: (self._core(p).store.log_id[:8], self._core(p).applied)
                for p in up
                if not self._caught_up(p)
            }
            raise AssertionError(
                f"no convergence in {CONVERGE_ROUNDS} rounds: head {oracle.head}, behind: {late}"
            )
        for peer in up:
            core = self._core(peer)
            assert core.digest() == oracle.digests[oracle.head], f"{peer.node} diverged"
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
        self._begin()
        self._cfg = cfg
        self._open_controller(new_log=True)
        for node, skew in zip(cfg.nodes, cfg.skews, strict=True):
            self.peers.append(Peer(node, os.path.join(self.dir, f"{node}.cuelog"), skew))
        for peer in self.peers:
            if peer.node in cfg.started:
                self._boot(peer, "file" if peer.node in cfg.file_nodes else "memory")

    # ------------------------------------------------------------------ time and liveness

    @rule(dt=st.sampled_from((0.1, 0.5, 1.0, 2.5, 4.0)))
    def advance_clock(self, dt: float) -> None:
        self._begin()
        self.now += dt

    @rule()
    def tick(self) -> None:
        self._begin()
        ops = self.ctl.tick(self.now)
        if ops:
            note("node left")
            self._queue_internal(ops)

    @precondition(lambda self: self._any(_welcomed))
    @rule(i=st.integers(0, 3))
    def beat(self, i: int) -> None:
        self._begin()
        peer = self._pick(i, _welcomed)
        core = self._core(peer)
        if peer.partitioned:
            peer.beat_failures += 1
            if peer.beat_failures == 2:
                core.need_hello = True
            return
        reply, ops = self.ctl.beat(over_the_wire(core.beat()), self.now)
        reply = over_the_wire(reply)
        peer.beat_failures = 0
        if ops:
            self._queue_internal(ops)
        if reply["log"] != core.controller_log:
            core.need_hello = True
        else:
            core.known_head = max(core.known_head, reply["head"])
        core.on_clock(reply["ts"], self._local(peer))
        # the shell settles an unknown digest match off the loop; so do we, at once
        self.ctl.settle_digest(peer.node)
        info = self.ctl.nodes[peer.node]
        assert info.digest_match is not False, f"controller sees {peer.node} diverged"

    @rule()
    def publish_heartbeat(self) -> None:
        self._begin()
        self._publish(protocol.heartbeat_frame(self.ctl.log_id, self.ctl.head, self.now))

    @rule()
    def controller_status(self) -> None:
        self._begin()
        status = over_the_wire(self.ctl.status(self.now))
        assert status["head_seq"] == self.oracle.head
        assert status["digest"] == self.oracle.digests[self.oracle.head]
        for info in status["nodes"].values():
            assert info["lag_events"] >= 0

    # ------------------------------------------------------------------ submitting

    def _queue_internal(self, subs: list[Submission]) -> None:
        n = len(subs)
        wires = [s.op.to_wire() for s in subs]
        self._admit(Request(None, 0, self.ctl.internal(subs), wires, [None] * n, [False] * n))

    def _send(
        self, peer: Peer, wires: list[Wire], invalid: list[bool], chain: Chain | None = None
    ) -> None:
        msg: Msg = {"k": "submit", "node": peer.node, "ops": wires}
        if chain is not None:
            msg["chain"] = chain._asdict()
        msg = over_the_wire(msg)
        prepared = self.ctl.prepare_submit(msg)
        for bad, err in zip(invalid, prepared.errors, strict=True):
            assert (err is not None) == bad, err
        op_ids: list[OpId | None] = [
            None if "op_id" not in w else OpId(w["op_id"][0], w["op_id"][1]) for w in wires
        ]
        self._admit(
            Request(peer, peer.incarnation, prepared, wires, op_ids, invalid),
            self.ctl.chain(msg),
        )

    @precondition(lambda self: self._any(_reachable))
    @rule(
        i=st.integers(0, 3),
        specs=st.lists(st.tuples(st.sampled_from(OP_KINDS), st.integers(0, 15)), max_size=4),
        k=st.integers(1, 8),
        twice=st.booleans(),
        repeat_inside=st.booleans(),
    )
    def submit(
        self,
        i: int,
        specs: list[tuple[str, int]],
        k: int,
        twice: bool,
        repeat_inside: bool,
    ) -> None:
        """Queue new ops in a node's outbox, then send the head of the outbox (retries first)."""
        self._begin()
        peer = self._pick(i, _reachable)
        for kind, x in specs:
            op_id = peer.next_op_id()
            wire = make_op(kind, x, peer.node, self.cfg.nodes)
            peer.outbox[op_id] = {**wire, "op_id": op_id.to_wire()}
        wires = list(peer.outbox.values())[:k]
        if not wires:
            return
        if repeat_inside:
            wires.append(wires[0])
        self._send(peer, wires, [False] * len(wires))
        if twice:
            # the shell timed out and sent again while the first was still queued
            self._send(peer, wires, [False] * len(wires))

    @precondition(lambda self: self._any(_reachable))
    @rule(
        i=st.integers(0, 3),
        sizes=st.lists(st.integers(1, 3), min_size=2, max_size=3),
        order=st.permutations([0, 1, 2]),
    )
    def pipelined_submit(self, i: int, sizes: list[int], order: list[int]) -> None:
        """A node with several submits in flight (the real node's depth > 1): the head of
        its outbox cut into chained submits that reach the controller in any order. They are
        admitted in the node's order: the early ones wait (parked) for their predecessors."""
        self._begin()
        peer = self._pick(i, _reachable)
        for _ in range(sum(sizes)):
            op_id = peer.next_op_id()
            peer.outbox[op_id] = {
                **make_op("ping", len(peer.outbox), peer.node, self.cfg.nodes),
                "op_id": op_id.to_wire(),
            }
        items = list(peer.outbox.items())
        chunks: list[tuple[Chain, list[Wire]]] = []
        start = 0
        for size in sizes:
            part = items[start : start + size]
            if not part:
                break
            first, last = part[0][0].origin_seq, part[-1][0].origin_seq
            chunks.append((Chain(peer.origin, first - 1, last, start == 0), [w for _, w in part]))
            start += size
        for k in [k for k in order if k < len(chunks)]:
            chain, wires = chunks[k]
            self._send(peer, wires, [False] * len(wires), chain)
        note("pipelined chained submits")

    @precondition(lambda self: self.pending)
    @rule()
    def commit_fails(self) -> None:
        """The group commit raises (a disk error): nothing of it is acknowledged; what its
        senders queued or parked behind it is sent back to them; the controller's own ops
        wait for the next commit."""
        self._begin()
        tickets = self.admission.take()
        if tickets:
            note("a failed group commit")
        self._settle(self.admission.commit_failed(tickets, "injected disk error"), False)

    @precondition(lambda self: self._any(_can_retry_acked))
    @rule(i=st.integers(0, 3), pick=st.integers(0, 50))
    def retry_acknowledged(self, i: int, pick: int) -> None:
        """A late retry of an op already acknowledged: same op id, so the same seq back."""
        self._begin()
        peer = self._pick(i, _can_retry_acked)
        # of this log: an op acknowledged in a log the controller has since left is not
        # retried by a node that followed it into the new one
        here = self.acked[self.oracle.log_id]
        wires = [wire for op_id, wire in peer.acked.items() if op_id in here]
        if not wires:
            return
        self._send(peer, [wires[pick % len(wires)]], [False])

    @precondition(lambda self: self._any(_reachable))
    @rule(i=st.integers(0, 3), kind=st.sampled_from(INVALID_KINDS), x=st.integers(0, 15))
    def submit_invalid(self, i: int, kind: str, x: int) -> None:
        """A submit holding one invalid op and one valid one: only the valid one is appended."""
        self._begin()
        peer = self._pick(i, _reachable)
        bad = make_invalid(kind, peer.node)
        if kind != "no-op-id":
            bad_id = peer.next_op_id()
            bad["op_id"] = bad_id.to_wire()
            self.refused.add(bad_id)
        good_id = peer.next_op_id()
        good = {**make_op("ping", x, peer.node, self.cfg.nodes), "op_id": good_id.to_wire()}
        peer.outbox[good_id] = good
        # as a node sends: its unacknowledged ops from the oldest (never a newer one first)
        waiting = list(peer.outbox.values())
        self._send(peer, [bad, *waiting], [True] + [False] * len(waiting))

    @rule(kind=st.sampled_from(OP_KINDS), x=st.integers(0, 15), n=st.integers(0, 3))
    def operator(self, kind: str, x: int, n: int) -> None:
        """The operator's own operation (no op id: the log gives it one)."""
        self._begin()
        node = self.cfg.nodes[n % len(self.cfg.nodes)]
        op = validate_operation(make_op(kind, x, node, self.cfg.nodes))
        self._queue_internal([Submission(op)])

    @rule(n=st.integers(0, 3), x=st.integers(0, 15))
    def rehearse(self, n: int, x: int) -> None:
        """Load naming one node, that node arms, GO: accepted unless a show is running."""
        self._begin()
        node = self.cfg.nodes[n % len(self.cfg.nodes)]
        wires = [
            _command("load", f"show-{x % 3}", nodes=[node]),
            make_op("armed", x, node, self.cfg.nodes),
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
        self._begin()
        nodes = self.cfg.nodes
        for kind, x, n in specs:
            op = validate_operation(make_op(kind, x, nodes[n % len(nodes)], nodes))
            self._queue_internal([Submission(op)])
        self._commit(lose_replies=False)

    @precondition(lambda self: bool(self.pending))
    @rule(lose_replies=st.booleans())
    def commit(self, lose_replies: bool) -> None:
        self._begin()
        self._commit(lose_replies)

    # ------------------------------------------------------------------ controller faults

    @rule()
    def controller_snapshot(self) -> None:
        self._begin()
        snap = self.elog.write_snapshot()
        assert snap.seq == self.oracle.head
        assert snap.digest == self.oracle.digests[snap.seq]

    @rule()
    def controller_restart(self) -> None:
        self._begin()
        log_id = self.oracle.log_id
        self._close_controller()
        self._open_controller(new_log=False)
        assert self.ctl.log_id == log_id
        self._check_controller_file()

    @precondition(lambda self: self.generation <= MAX_LOG_REPLACEMENTS and self.oracle.head >= 8)
    @rule()
    def controller_new_log(self) -> None:
        """The controller comes back with another log (a new file): everyone resyncs."""
        self._begin()
        self._close_controller()
        self._open_controller(new_log=True)
        note("controller replaced its log")

    # ------------------------------------------------------------------ node lifecycle

    @precondition(lambda self: self._any(_is_down))
    @rule(i=st.integers(0, 3), mode=st.sampled_from(("resume", "memory", "file")))
    def start_node(self, i: int, mode: str) -> None:
        """Late join, or a restart: from its own file if it had one, else from nothing."""
        self._begin()
        peer = self._pick(i, _is_down)
        if mode == "resume" and peer.crashed_at is None:
            mode = "file"
        self._boot(peer, mode)

    @precondition(lambda self: self._any(_is_up))
    @rule(i=st.integers(0, 3))
    def crash_node(self, i: int) -> None:
        self._begin()
        peer = self._pick(i, _is_up)
        core = self._core(peer)
        if peer.elog is not None:
            peer.crashed_at = (peer.elog.log_id, core.applied, core.digest())
            peer.elog.close()
        peer.core = None
        peer.elog = None
        peer.inbox = []
        peer.fetch_request = peer.fetch_reply = None

    @precondition(lambda self: self._any(_connected))
    @rule(i=st.integers(0, 3))
    def partition(self, i: int) -> None:
        self._begin()
        self._pick(i, _connected).partitioned = True

    @precondition(lambda self: self._any(_partitioned))
    @rule(i=st.integers(0, 3))
    def heal(self, i: int) -> None:
        self._begin()
        self._pick(i, _partitioned).partitioned = False

    # ------------------------------------------------------------------ control channel

    @precondition(lambda self: self._any(_can_hello))
    @rule(i=st.integers(0, 3))
    def hello(self, i: int) -> None:
        self._begin()
        self._hello(self._pick(i, _can_hello))

    @precondition(lambda self: self._any(_can_fetch))
    @rule(i=st.integers(0, 3))
    def send_fetch(self, i: int) -> None:
        self._begin()
        peer = self._pick(i, _can_fetch)
        core = self._core(peer)
        request = core.next_fetch()
        if request is None:
            return
        if peer.partitioned:
            core.on_fetch_failed()
        else:
            peer.fetch_request = request

    @precondition(lambda self: self._any(_has_request))
    @rule(i=st.integers(0, 3))
    def serve_fetch(self, i: int) -> None:
        self._begin()
        self._serve(self._pick(i, _has_request))

    @precondition(lambda self: self._any(_has_reply))
    @rule(i=st.integers(0, 3))
    def deliver_fetch_reply(self, i: int) -> None:
        self._begin()
        self._deliver_reply(self._pick(i, _has_reply))

    @precondition(lambda self: self._any(_can_fetch))
    @rule(i=st.integers(0, 3))
    def fetch_overtaken_by_stream(self, i: int) -> None:
        """The shell's receive task runs while its control task waits for a fetch: the frames
        already queued are applied between the controller's answer and its arrival."""
        self._begin()
        peer = self._pick(i, _can_fetch)
        core = self._core(peer)
        request = core.next_fetch()
        if request is None:
            return
        if peer.partitioned:
            core.on_fetch_failed()
            return
        peer.fetch_request = request
        self._serve(peer)
        while peer.inbox:
            self._deliver_frame(peer, 0)
        self._deliver_reply(peer)

    @precondition(lambda self: self._any(_can_fetch))
    @rule(
        i=st.integers(0, 3),
        stream=st.lists(st.integers(0, 2), max_size=6),
        lost=st.sampled_from((None, 0, 1, 2)),
    )
    def pipelined_catch_up(self, i: int, stream: list[int], lost: int | None) -> None:
        """The shell's catch-up: while a chunk is applied, the next one is already asked for
        (``after`` = the chunk's last seq); ``stream[k]`` frames arrive before chunk k is
        applied; request number `lost` gets no answer, which ends the round as failed."""
        self._begin()
        peer = self._pick(i, _can_fetch)
        core = self._core(peer)
        request = core.next_fetch()
        if request is None:
            return
        if peer.partitioned or lost == 0:
            core.on_fetch_failed()
            return
        reply = self._answer(request)
        for step in range(FETCH_LOOP_LIMIT):
            ahead: Msg | None = None
            last, head = reply.get("last"), reply.get("head")
            pipelined = (
                reply["k"] == "events"
                and isinstance(last, int)
                and isinstance(head, int)
                and last < head
            )
            if pipelined and lost != step + 1:
                assert isinstance(last, int) and isinstance(head, int)
                limit = min(core.fetch_limit, head - last)
                ahead = self._answer({**request, "after": last, "limit": limit})
            for _ in range(stream[step] if step < len(stream) else 0):
                if peer.inbox:
                    self._deliver_frame(peer, 0)
            self._apply_reply(peer, reply)
            if not pipelined:
                return
            if ahead is None:
                core.on_fetch_failed()
                return
            note("pipelined fetch")
            reply = ahead
            core.fetching = True
        raise AssertionError(f"{peer.node}: pipelined catch-up did not end")

    @precondition(lambda self: self._any(lambda p: not _idle(p)))
    @rule(i=st.integers(0, 3))
    def lose_fetch(self, i: int) -> None:
        """The request or its reply is lost: the shell times out and may ask again."""
        self._begin()
        peer = self._pick(i, lambda p: not _idle(p))
        peer.fetch_request = peer.fetch_reply = None
        self._core(peer).on_fetch_failed()

    # ------------------------------------------------------------------ event stream

    @precondition(lambda self: self._any(_has_frames))
    @rule(i=st.integers(0, 3), pick=st.integers(0, 7))
    def deliver_frame(self, i: int, pick: int) -> None:
        self._begin()
        peer = self._pick(i, _has_frames)
        self._deliver_frame(peer, pick % len(peer.inbox))

    @precondition(lambda self: self._any(_has_frames))
    @rule(i=st.integers(0, 3))
    def deliver_all_frames(self, i: int) -> None:
        self._begin()
        peer = self._pick(i, _has_frames)
        while peer.inbox:
            self._deliver_frame(peer, 0)

    @precondition(lambda self: self._any(_has_frames))
    @rule(i=st.integers(0, 3), pick=st.integers(0, 7))
    def drop_frame(self, i: int, pick: int) -> None:
        self._begin()
        peer = self._pick(i, _has_frames)
        peer.inbox.pop(pick % len(peer.inbox))

    @precondition(lambda self: self._any(_has_frames))
    @rule(i=st.integers(0, 3), pick=st.integers(0, 7), to=st.integers(0, 7))
    def duplicate_frame(self, i: int, pick: int, to: int) -> None:
        self._begin()
        peer = self._pick(i, _has_frames)
        frame = peer.inbox[pick % len(peer.inbox)]
        peer.inbox.insert(to % (len(peer.inbox) + 1), frame)

    @precondition(lambda self: self._any(_has_two_frames))
    @rule(i=st.integers(0, 3), a=st.integers(0, 7), b=st.integers(0, 7))
    def reorder_frames(self, i: int, a: int, b: int) -> None:
        self._begin()
        peer = self._pick(i, _has_two_frames)
        n = len(peer.inbox)
        a, b = a % n, b % n
        peer.inbox[a], peer.inbox[b] = peer.inbox[b], peer.inbox[a]

    # ------------------------------------------------------------------ convergence

    @rule()
    def heal_and_converge(self) -> None:
        self._begin()
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
        self._busy = False

    @invariant()
    def each_origin_is_committed_in_its_order(self) -> None:
        """Whatever order its submits arrived in, failed commits included: an origin's later
        ops never got a smaller seq than its earlier ones."""
        for acked in self.acked.values():
            by_origin: dict[str, list[tuple[int, int]]] = {}
            for op_id, seq in acked.items():
                by_origin.setdefault(op_id.origin, []).append((op_id.origin_seq, seq))
            for origin, pairs in by_origin.items():
                seqs = [seq for _, seq in sorted(pairs)]
                assert seqs == sorted(seqs), f"{origin} committed out of order: {sorted(pairs)}"

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
            if not self._busy and self._oracle is not None and self._elog is not None:
                self._converge()
        finally:
            for peer in self.peers:
                if peer.elog is not None:
                    peer.elog.close()
            self._close_controller()
            shutil.rmtree(self.dir, ignore_errors=True)


ReplicationSim.TestCase.settings = SIM_SETTINGS
TestReplicationSim = ReplicationSim.TestCase


# --------------------------------------------------------------------------- explicit scenarios


class Rig:
    """A controller and hand-driven replicas, for scenarios spelled out step by step."""

    def __init__(self, directory: str, *, tail_limit: int = 20_000) -> None:
        self.dir = directory
        self.now = TS0
        self.counter = 0
        self.ctl = self.new_controller("a", tail_limit)

    def new_controller(self, name: str, tail_limit: int = 20_000) -> ControllerCore:
        path = os.path.join(self.dir, f"{name}.cuelog")
        elog = EventLog.open(path, synchronous="OFF", clock=lambda: self.now)
        return ControllerCore(elog, tail_limit=tail_limit, now=self.now)

    def commit(self, *wires: Wire) -> list[Msg]:
        """Submit `wires` from node-a in one commit; return the frames it publishes."""
        ops = []
        for wire in wires:
            self.counter += 1
            ops.append({**wire, "op_id": ["node-a/1", self.counter]})
        prepared = self.ctl.prepare_submit({"k": "submit", "node": "node-a", "ops": ops})
        return [over_the_wire(f) for f in self.ctl.commit([prepared], self.now).frames]

    def welcome(self, core: ReplicaCore) -> None:
        core.on_welcome(over_the_wire(self.ctl.hello(core.hello(), self.now)))

    def catch_up(self, core: ReplicaCore) -> list[Event]:
        fired: list[Event] = []
        while (request := core.next_fetch()) is not None:
            fired += core.on_fetch_reply(over_the_wire(self.ctl.fetch(request, self.now)))
        return fired

    def close(self) -> None:
        self.ctl.elog.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(str(tmp_path))
    yield made
    made.close()


def _status(i: int) -> Wire:
    return _wire("status", "update", "node-a", "foo", {"i": i})


def test_scripted_show_fires_each_accepted_go_once(rig: Rig) -> None:
    """Sanity of the harness: a live accepted GO fires once, a refused one and history never."""
    core = ReplicaCore("node-a", MemoryStore(), max_command_age=HUGE_AGE)
    rig.commit(_command("go"))  # history, and refused (not armed)
    rig.welcome(core)
    assert rig.catch_up(core) == []
    fired: list[Event] = []
    for frame in rig.commit(_command("go")):  # live, refused
        fired += core.on_frame(frame)
    assert fired == []
    frames = rig.commit(
        _command("load", "show", nodes=["node-a"]),
        make_op("armed", 0, "node-a", ["node-a"]),
        _command("go"),
    )
    for frame in frames + frames:  # duplicated delivery
        fired += core.on_frame(frame)
    assert [(e.op.target, e.seq) for e in fired] == [("load", 3), ("go", 5)]


def test_duplicate_frames_and_a_lost_frame_are_repaired_once(rig: Rig) -> None:
    core = ReplicaCore("node-a", MemoryStore(), max_command_age=HUGE_AGE)
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


def test_late_snapshot_reply_does_not_roll_back(tmp_path: Path) -> None:
    """A snapshot reply that arrives after frames moved the replica past it must not win.

    (Found by this machine: `ReplicaCore.on_fetch_reply` used to restore any snapshot, rolling
    the replica back and firing the commands after the snapshot a second time.)

    The fetch for the hole at seq 1 is answered with the snapshot at 5 (the replica is further
    behind than ``tail_limit``). Before that reply arrives, a late copy of frame 1 fills the hole
    and a live frame brings ping at seq 6, which fires. Then the reply lands: the replica resets
    to seq 5, re-fetches 6 and fires ping a second time.
    """
    rig = Rig(str(tmp_path), tail_limit=2)
    try:
        core = ReplicaCore("node-a", MemoryStore(), max_command_age=HUGE_AGE)
        rig.welcome(core)
        frames = [rig.commit(_status(i))[0] for i in range(5)]
        fired: list[Event] = []
        for frame in frames[1:]:
            fired += core.on_frame(frame)  # 2..5 wait behind the hole at 1
        request = core.next_fetch()
        assert request is not None and request["after"] == 0
        rig.ctl.elog.write_snapshot()
        reply = over_the_wire(rig.ctl.fetch(request, rig.now))
        assert (reply["k"], reply["seq"]) == ("snapshot", 5)
        fired += core.on_frame(frames[0])  # the late duplicate of frame 1 fills the hole
        fired += core.on_frame(rig.commit(_command("ping", 1))[0])
        assert [e.seq for e in fired] == [6] and core.applied == 6
        fired += core.on_fetch_reply(reply)
        assert core.applied == 6, "the replica went back to the snapshot"
        fired += rig.catch_up(core)
        assert [e.seq for e in fired] == [6], "ping at seq 6 fired twice"
    finally:
        rig.close()


@pytest.mark.parametrize("store_kind", ["memory", "file"])
def test_welcome_into_a_new_log_drops_the_old_logs_buffer(tmp_path: Path, store_kind: str) -> None:
    """A replica with nothing applied but old-log events buffered behind a hole joins a new log.

    (Found by this machine: `ReplicaCore.on_welcome` used to keep `pending` when it switched an
    empty store to the new log. In memory the replica silently diverged, log A's seq 2 applied as
    the new log's seq 2; with its own file, `EventLog.append_events` refused the foreign event and
    the replica was stuck; and when the new log was shorter than the buffered seq, `next_fetch`
    asked for the range below it forever, every reply empty.)
    """
    rig = Rig(str(tmp_path))
    store: EventLog | MemoryStore = (
        MemoryStore()
        if store_kind == "memory"
        else EventLog.open(tmp_path / "replica.cuelog", synchronous="OFF")
    )
    try:
        core = ReplicaCore("node-a", store, max_command_age=HUGE_AGE)
        rig.commit(_status(0))
        rig.welcome(core)  # head 1, applied 0
        core.on_frame(rig.commit(_status(1))[0])  # log A's seq 2 waits behind the hole
        assert sorted(core.pending) == [2]
        rig.close()
        rig.ctl = rig.new_controller("b")  # the controller comes back with a new log
        rig.commit(_status(10), _status(11))
        rig.welcome(core)  # head 2: a full resync into log B
        try:
            rig.catch_up(core)
        except UsageError as exc:
            raise AssertionError(f"replica stuck on a foreign buffered event: {exc}") from exc
        assert core.applied == rig.ctl.head == 2
        assert core.digest() == digest(rig.ctl.elog.state), "replica diverged"
    finally:
        if isinstance(store, EventLog):
            store.close()
        rig.close()


def test_a_node_on_another_log_is_not_reported_diverged(tmp_path: Path) -> None:
    """After the controller comes back with a new log, a node still on the old one beats.

    `beat` marks its digest match unknown (``None``): it holds another log. (Found by this
    machine: the shell's `settle_digest` then folded this log to the node's ``applied``, reset to
    0, and compared, so ``status`` showed ``digest_match: False``, a false divergence alarm on
    ``/cluster``, until the node had resynced.)
    """
    rig = Rig(str(tmp_path))
    try:
        core = ReplicaCore("node-a", MemoryStore(), max_command_age=HUGE_AGE)
        rig.commit(_status(0))
        rig.welcome(core)
        rig.catch_up(core)
        rig.close()
        rig.ctl = rig.new_controller("b")
        rig.ctl.beat(over_the_wire(core.beat()), rig.now)
        assert rig.ctl.nodes["node-a"].digest_match is None
        rig.ctl.settle_digest("node-a")
        status = rig.ctl.status(rig.now)["nodes"]["node-a"]
        assert status["digest_match"] is not False, "a node on another log reported diverged"
    finally:
        rig.close()
