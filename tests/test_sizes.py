"""Replication at the largest sizes the validation allows: nothing wedges, everything converges.

Every event here is as big as `validate_operation` lets it be (data of exactly
``MAX_DATA_BYTES`` once encoded, filled with characters that cost 1, 2, 3, 4 and 6 bytes on
the wire), every submit is as big as the controller reads (``MAX_REQUEST_BYTES``), and the
state is several times NNG's receive limit. Over real sockets: a node that joins late catches
up by the tail and by a snapshot (real processes, the snapshot forced with ``--tail-limit``),
and live nodes follow eight clients submitting their largest submits at the same moment (all
eight held so they land in one group commit). Without sockets: every message the controller and
a node can build from such input fits under the caps `replicas.protocol` documents.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from eventlog import (
    MAX_DATA_BYTES,
    ActionType,
    Event,
    EventLog,
    Operation,
    OperationType,
    OpId,
    Submission,
    digest,
    dumps,
    validate_operation,
)
from eventlog.state import digest_bytes
from replicas import messages, protocol
from replicas.client import ControllerClient
from replicas.messages import (
    Error,
    Ev,
    Fetch,
    Hello,
    Message,
    Reply,
    SnapshotChunk,
    StateChunk,
    StateRequest,
    Submit,
    Welcome,
)
from replicas.outbox import Outbox
from replicas.protocol import (
    MAX_FRAME_BYTES,
    MAX_REQUEST_BYTES,
    NNG_MAX_BYTES,
    ProtocolError,
    origin_of,
)
from replicas.replica import MemoryStore, ReplicaCore
from replicas.sequencer import ControllerCore, Prepared
from tests.cluster import (
    Proc,
    controller_thread,
    converged,
    ipc_address,
    nodes,
    status,
    wait_for,
)
from tests.helpers import LOG_ID

#: characters costing 1, 3, 2 (an escaped quote), 6 (an escaped control character) and 4 bytes
FILLS = ("x", "\u20ac", '"', "\x01", "\U0001f600")
SENDER = "driver"


def biggest_data(i: int, fill: str) -> dict[str, Any]:
    """Data of exactly `MAX_DATA_BYTES` once encoded, mostly `fill`."""
    skeleton = {"i": i, "blob": ""}
    room = MAX_DATA_BYTES - len(orjson.dumps(skeleton))
    cost = len(orjson.dumps(fill)) - 2
    blob = fill * (room // cost) + "x" * (room % cost)
    data = {"i": i, "blob": blob}
    assert len(orjson.dumps(data)) == MAX_DATA_BYTES
    return data


def biggest_op(i: int) -> Operation:
    """A valid status update as big as the validation allows (a distinct target each, so the
    state keeps every one of them)."""
    fill = FILLS[i % len(FILLS)]
    target = f"blob{i}-" + "\U0001f600" * (512 - len(f"blob{i}-"))
    return validate_operation(
        Operation(OperationType.STATUS, ActionType.UPDATE, SENDER, target, biggest_data(i, fill))
    )


def largest_submits(ops: list[Operation], secret: str) -> list[list[dict[str, Any]]]:
    """`ops` cut into submits as large as the controller reads (each under the request cap),
    with the op-id origin `secret` proves for `SENDER`."""
    origin = origin_of(SENDER, secret)
    envelope = len(dumps({"k": "submit", "node": SENDER, "ops": []}))
    batches: list[list[dict[str, Any]]] = [[]]
    used = envelope
    for n, op in enumerate(ops, 1):
        wire = {**op.to_wire(), "op_id": [origin, n]}
        size = len(dumps(wire)) + 1
        if used + size > MAX_REQUEST_BYTES:
            batches.append([])
            used = envelope
        batches[-1].append(wire)
        used += size
    for batch in batches:
        assert len(dumps({"k": "submit", "node": SENDER, "ops": batch})) <= MAX_REQUEST_BYTES
    return batches


def submit(
    address: str, wires: list[dict[str, Any]], secret: str, client: ControllerClient | None = None
) -> list[int]:
    """Submit `wires` as one request, on a connection that said hello with their origin."""
    if client is None:
        with ControllerClient(address, timeout=60.0) as own:
            return submit(address, wires, secret, own)
    inst = origin_of(SENDER, secret)
    hello = client.request({"k": "hello", "node": SENDER, "inst": inst, "secret": secret})
    assert hello.get("k") == "welcome", hello
    reply = client.request({"k": "submit", "node": SENDER, "ops": wires})
    assert reply.get("k") == "acks", reply
    seqs = [result["seq"] for result in reply["results"]]
    return seqs


def submit_all(address: str, ops: list[Operation]) -> None:
    with ControllerClient(address, timeout=60.0) as client:
        for wires in largest_submits(ops, "1"):
            submit(address, wires, "1", client)


def same_log(ctl_db: Path, replica_db: Path) -> None:
    with (
        EventLog.open(ctl_db, readonly=True) as ctl_log,
        EventLog.open(replica_db, readonly=True) as replica_file,
    ):
        assert replica_file.head == ctl_log.head
        assert digest(replica_file.state_at(replica_file.head)) == digest(
            ctl_log.state_at(ctl_log.head)
        )


# ------------------------------------------------------------------------- over real sockets


def test_a_late_node_catches_up_400_of_the_largest_events_by_the_tail(tmp_path: Path) -> None:
    """400 events of 64 KiB (26 MB, past NNG's 16 MiB): the catch-up replies are cut by bytes.
    Runs of small events between them make the cuts fall anywhere (the node's pipelined
    fetches then leave holes it must fill)."""
    addr = ipc_address(tmp_path)
    ops: list[Operation] = []
    for i in range(400):
        ops.append(biggest_op(i))
        for j in range((i * 37) % 23 if i % 3 == 0 else 0):
            ops.append(
                Operation(OperationType.STATUS, ActionType.UPDATE, SENDER, f"s{j}", {"n": i})
            )
    with controller_thread(tmp_path / "ctl.db", addr, snapshot_every=10_000):
        submit_all(addr, ops)
        assert status(addr)["head_seq"] == len(ops) > 1000
        with nodes(addr, ["late"], db=tmp_path / "late.db", request_timeout=10.0) as (late,):
            assert late.wait_synced(40), "the late node never caught up"
            wait_for("the late node in step", lambda: converged(addr, ["late"]), 20)
            core = late.replica.core
            assert core is not None and core.resyncs == 0, "the tail, not a snapshot"
        with ControllerClient(addr, timeout=30.0) as client:
            whole = client.state()  # 26 MB: in chunks, checked against its digest
        assert whole["seq"] >= len(ops) and len(whole["state"]["status"][SENDER]) == 400 + 22
    same_log(tmp_path / "ctl.db", tmp_path / "late.db")


def test_a_late_node_process_restores_a_snapshot_larger_than_nng_can_carry(
    tmp_path: Path,
) -> None:
    """A state of 400 entries near 64 KiB each, sent as a snapshot (``--tail-limit 10``):
    it travels in chunks the node reassembles and checks against the snapshot's digest."""
    addr = ipc_address(tmp_path)
    ctl_db = tmp_path / "ctl.db"
    procs: list[Proc] = []
    try:
        args = ["controller", "--db", str(ctl_db), "--listen", addr, "--tail-limit", "10"]
        args += ["--snapshot-every", "100", "--ws", "off"]  # no UIs (the default port may be taken)
        procs.append(Proc(tmp_path, "controller", args))
        wait_for("the controller", lambda: _answers(addr), 20)
        submit_all(addr, [biggest_op(i) for i in range(400)])
        with EventLog.open(ctl_db, readonly=True) as elog:
            snap = elog.latest_snapshot()
            assert snap is not None and snap.seq >= 300
            assert len(snap.state) > NNG_MAX_BYTES, "the worst case: a state NNG cannot carry"
        late = Proc(
            tmp_path,
            "late",
            ["node", "--id", "late", "--controller", addr, "--db", str(tmp_path / "late.db")],
        )
        procs.append(late)
        wait_for(
            "the late node in step (node_joined included)",
            lambda: status(addr)["head_seq"] > 400 and converged(addr, ["late"]),
            40,
        )
        assert f"restored snapshot at seq {snap.seq}" in late.log_text()
    finally:
        for proc in reversed(procs):
            proc.stop()
    same_log(ctl_db, tmp_path / "late.db")


def _answers(address: str) -> bool:
    try:
        status(address)
    except Exception:
        return False
    return True


def test_live_nodes_follow_eight_of_the_largest_submits_committed_at_once(tmp_path: Path) -> None:
    """Eight clients each send a submit just under the 4 MiB request cap at the same moment;
    all eight land in one group commit of ~33 MB. Its frames, and any repair fetch, must each
    fit what a node can receive."""
    addr = ipc_address(tmp_path)
    ids = ["n1", "n2"]
    with (
        controller_thread(tmp_path / "ctl.db", addr) as ctl,
        nodes(addr, ids[:1], request_timeout=10.0) as (n1,),
        nodes(addr, ids[1:], db=tmp_path / "n2.db", request_timeout=10.0) as (n2,),
    ):
        assert n1.wait_synced(10) and n2.wait_synced(10)
        wait_for("both nodes online", lambda: converged(addr, ids), 10)
        core = ctl.controller.core
        assert core is not None
        real_commit = core.commit
        held = threading.Event()
        release = threading.Event()
        sizes: list[int] = []
        errors: list[BaseException] = []

        def gated(batch: Any, now: float, **options: Any) -> Any:
            if any(p.node == "gate" for p in batch) and not held.is_set():
                held.set()
                release.wait(30)  # the eight big submits queue up behind this commit
            committed = real_commit(batch, now, **options)
            sizes.append(len(committed.result.events))
            return committed

        core.commit = gated  # type: ignore[method-assign]
        gate = threading.Thread(target=_guard(errors, _gate_submit, addr))
        gate.start()
        assert held.wait(10)
        workers = [
            threading.Thread(target=_guard(errors, _one_big_submit, addr, k)) for k in range(8)
        ]
        for worker in workers:
            worker.start()
        admission = ctl.controller.admission
        assert admission is not None
        wait_for("eight big submits queued", lambda: len(admission.queue) == 8, 30)
        release.set()
        for worker in [gate, *workers]:
            worker.join(60)
        assert not errors, errors
        assert max(sizes) >= 8 * 55, f"the eight submits were not one commit: {sizes}"
        head = status(addr)["head_seq"]
        wait_for(
            "live nodes in step with the controller",
            lambda: n1.applied_seq >= head and n2.applied_seq >= head,
            30,
        )
        wait_for("digests match", lambda: converged(addr, ids), 10)
        assert n1.replica.core is not None and n1.replica.core.resyncs == 0
    same_log(tmp_path / "ctl.db", tmp_path / "n2.db")


def _gate_submit(addr: str) -> None:
    with ControllerClient(addr, timeout=60.0) as client:
        op = Operation(OperationType.STATUS, ActionType.UPDATE, "gate", "gate", {})
        assert "seq" in client.submit([op], node="gate")[0]


def _one_big_submit(addr: str, k: int) -> None:
    ops = [biggest_op(1000 * k + i) for i in range(80)]
    wires = largest_submits(ops, f"big{k}")[0]
    assert len(wires) >= 55
    seqs = submit(addr, wires, f"big{k}")
    assert len(seqs) == len(wires)


def _guard(errors: list[BaseException], func: Callable[..., None], *args: Any) -> Any:
    def run() -> None:
        try:
            func(*args)
        except BaseException as exc:
            errors.append(exc)

    return run


@pytest.mark.parametrize("fill", FILLS, ids=["ascii", "euro", "quote", "control", "emoji"])
def test_biggest_data_is_valid(fill: str) -> None:
    data = biggest_data(7, fill)
    op = validate_operation(Operation(OperationType.STATUS, ActionType.UPDATE, SENDER, "t", data))
    assert op.data == data


# ------------------------------------------------------------------- every message, no sockets

#: the costliest valid op-id origin on the wire: 128 characters, each an escaped control one
WORST_ORIGIN = "w" + "\x01" * 127
TS = 1_700_000_000.0


def _welcomed(core: ControllerCore) -> ReplicaCore:
    replica = ReplicaCore("late", MemoryStore())
    welcome = over_the_wire(core.hello(Hello("late", after=0), TS))
    assert isinstance(welcome, Welcome), welcome
    replica.on_welcome(welcome)
    return replica


def over_the_wire(msg: Message | dict[str, Any], cap: int = NNG_MAX_BYTES) -> Reply:
    """Reply `msg` as a peer gets it, after checking it fits `cap`."""
    raw = messages.encode(msg)
    assert len(raw) <= cap, f"a {type(msg).__name__} message of {len(raw)} bytes (cap {cap})"
    return messages.parse_reply(raw, NNG_MAX_BYTES)


def frame_over_the_wire(raw: bytes) -> Ev:
    """An encoded ``ev`` frame as a node gets it."""
    frame = messages.parse_frame(raw, NNG_MAX_BYTES)
    assert isinstance(frame, Ev), frame
    return frame


def asks_a_chunk(fetch: Fetch | None) -> bool:
    """Whether a node's fetch asks for the next chunk of a snapshot."""
    return fetch is not None and fetch.snapshot is not None


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControllerCore, Any]]:
    """One group commit of eight submits of 60 of the largest events (~33 MB), then a
    snapshot of the ~33 MB state."""
    path = tmp_path_factory.mktemp("big") / "ctl.db"
    elog = EventLog.open(path, synchronous="OFF", snapshot_every=100_000)
    core = ControllerCore(elog)
    subs = [Submission(biggest_op(i), OpId(WORST_ORIGIN, i + 1)) for i in range(480)]
    batch = [Prepared(f"n{k}", subs[60 * k : 60 * k + 60], [None] * 60) for k in range(8)]
    committed = core.commit(batch, TS)
    elog.write_snapshot()
    yield core, committed
    elog.close()


def test_a_group_commit_of_the_largest_submits_is_cut_into_frames_a_node_receives(
    big_log: tuple[ControllerCore, Any],
) -> None:
    core, committed = big_log
    assert len(committed.result.events) == 480
    assert sum(len(w) for w in committed.wire) > NNG_MAX_BYTES, "the worst case: over NNG's cap"
    replica = _welcomed(core)
    for frame, wire in zip(committed.frames, committed.wire, strict=True):
        assert len(wire) <= MAX_FRAME_BYTES
        assert frame_over_the_wire(wire) == frame_over_the_wire(messages.encode(frame))
        replica.on_frame(frame_over_the_wire(wire))
    assert replica.applied == core.head == 480
    assert replica.digest() == digest(core.elog.state)


def test_small_events_are_still_framed_by_count() -> None:
    elog = EventLog.open(":memory:")
    core = ControllerCore(elog)
    op = Operation(OperationType.STATUS, ActionType.UPDATE, "n1", "nextcue", {"nextcue": "c"})
    subs = [Submission(op, OpId("n1/a", i + 1)) for i in range(12_000)]
    committed = core.commit([Prepared("n1", subs, [None] * len(subs))], TS)
    assert [len(f["events"]) for f in committed.frames] == [5000, 5000, 2000]
    assert committed.wire == [dumps(f) for f in committed.frames]


def test_catch_up_replies_of_the_largest_events_are_cut_by_bytes(
    big_log: tuple[ControllerCore, Any],
) -> None:
    core, _ = big_log
    replica = _welcomed(core)
    replies = 0
    while (request := replica.next_fetch()) is not None:
        request = msgspec.structs.replace(request, mode="tail")  # never the snapshot
        replies += 1
        replica.on_fetch_reply(over_the_wire(core.fetch(request, TS), MAX_FRAME_BYTES))
        assert replies < 100
    assert replica.applied == 480 and replica.digest() == digest(core.elog.state)
    assert replica.resyncs == 0 and replies >= 8


def test_a_snapshot_larger_than_nng_can_carry_is_sent_in_chunks_and_checked(
    big_log: tuple[ControllerCore, Any],
) -> None:
    core, _ = big_log
    snap = core.reader.latest_snapshot()
    assert snap is not None and len(snap.state) > NNG_MAX_BYTES
    replica = _welcomed(core)
    request = replica.next_fetch()
    assert request is not None
    chunks: list[SnapshotChunk] = []
    while request is not None:
        reply = over_the_wire(core.fetch(msgspec.structs.replace(request, mode="snapshot"), TS))
        assert isinstance(reply, SnapshotChunk), reply
        assert len(messages.encode(reply)) <= MAX_FRAME_BYTES + protocol.ENVELOPE_BYTES
        chunks.append(reply)
        replica.on_fetch_reply(reply)
        request = replica.next_fetch()
    assert len(chunks) == -(-len(snap.state) // protocol.SNAPSHOT_CHUNK_BYTES) >= 6
    assert replica.applied == 480 and replica.resyncs == 1
    assert replica.digest() == digest(core.elog.state)

    # a chunk that does not follow the one before: refused, and the transfer starts over
    other = _welcomed(core)
    other.on_fetch_reply(chunks[0])
    with pytest.raises(ProtocolError, match="follows nothing"):
        other.on_fetch_reply(chunks[2])
    assert other.partial is None and other.applied == 0
    assert not asks_a_chunk(other.next_fetch()), "a new transfer, from the start"

    # a chunk altered on the way: the reassembled state fails its digest, nothing is installed
    other = _welcomed(core)
    raw = bytearray(base64.b64decode(chunks[-1].chunk))
    raw[10] ^= 1
    bad = msgspec.structs.replace(chunks[-1], chunk=base64.b64encode(bytes(raw)).decode())
    for reply in [*chunks[:-1], bad]:
        if reply is bad:
            with pytest.raises(ProtocolError, match="bad snapshot"):
                other.on_fetch_reply(reply)
        else:
            other.on_fetch_reply(reply)
    assert other.applied == 0 and other.partial is None

    # the controller no longer has that snapshot: the node drops what it holds and asks again
    other = _welcomed(core)
    other.on_fetch_reply(chunks[0])
    ask = other.next_fetch()
    assert ask is not None and ask.snapshot == snap.seq and (ask.offset or 0) > 0
    gone = core.fetch(msgspec.structs.replace(ask, snapshot=snap.seq - 1), TS)
    assert isinstance(gone, Error) and gone.rule == "snapshot-gone"
    other.on_fetch_reply(over_the_wire(gone))
    assert other.partial is None and not asks_a_chunk(other.next_fetch())


def test_a_tools_state_request_over_the_cap_comes_in_chunks(
    big_log: tuple[ControllerCore, Any],
) -> None:
    core, _ = big_log
    first = over_the_wire(core.state_reply(StateRequest()))
    assert isinstance(first, StateChunk) and first.offset == 0, first
    data = bytearray(base64.b64decode(first.chunk))
    while len(data) < first.size:
        reply = over_the_wire(core.state_reply(StateRequest(first.seq, len(data))))
        assert isinstance(reply, StateChunk), reply
        assert len(messages.encode(reply)) <= NNG_MAX_BYTES
        data += base64.b64decode(reply.chunk)
    assert digest_bytes(bytes(data)) == first.digest == digest(core.elog.state)
    gone = core.state_reply(StateRequest(first.seq - 1, 0))
    assert isinstance(gone, Error) and gone.rule == "state-gone"


def read_submit(raw: bytes) -> Submit:
    """A submit request as the controller decodes it."""
    msg = messages.parse_request(raw)
    assert isinstance(msg, Submit), msg
    return msg


@pytest.mark.parametrize("shape", ["largest-data", "many-small"])
def test_a_nodes_outbox_never_builds_a_submit_the_controller_refuses(shape: str) -> None:
    """The node measures every queued op exactly: however big, each submit it sends is under
    the controller's request cap (and the controller reads it)."""
    outbox = Outbox("n1", 10_000, "n1/0123456789ab")
    quotes = '"' * 512  # 1 KiB on the wire: the costliest printable target
    for i in range(1200):
        if shape == "largest-data":
            data = biggest_data(i, FILLS[i % len(FILLS)])
            outbox.put(Operation(OperationType.STATUS, ActionType.UPDATE, "n1", quotes, data))
        else:
            outbox.put(Operation(OperationType.STATUS, ActionType.UPDATE, "n1", quotes, {"i": i}))
    core = ControllerCore(EventLog.open(":memory:"))
    sent = 0
    while (found := outbox.next_submit("n1", sent)) is not None:
        msg, items = found
        raw = messages.encode(msg)
        assert len(raw) <= MAX_REQUEST_BYTES
        prepared = core.prepare_submit(read_submit(raw))
        assert prepared.errors == [None] * len(items)
        sent += len(items)
    assert sent == 1200


def test_replies_quoting_a_huge_bad_input_still_fit(tmp_path: Path) -> None:
    """Errors quote what was wrong (``'\\\\\\\\…' is not one of …``): a 4 MiB submit of ops whose
    type is a long run of backslashes would come back four times larger, past NNG's cap."""
    core = ControllerCore(EventLog.open(":memory:"))
    op = {"type": "\\" * 20_000, "action": "update", "sender": "n1", "target": "x", "data": None}
    ops = [{**op, "op_id": ["n1/a", i + 1]} for i in range(100)]
    raw = dumps({"k": "submit", "node": "n1", "ops": ops})
    assert len(raw) <= MAX_REQUEST_BYTES
    prepared = core.prepare_submit(read_submit(raw))
    committed = core.commit([prepared], TS)
    reply = messages.encode(committed.replies[0])
    assert len(reply) < MAX_FRAME_BYTES, f"acks of {len(reply)} bytes"
    assert all(r["rule"] == "unknown-type" for r in committed.replies[0].results)
    # a request whose kind is that string: the error reply is one short line too
    bad = messages.error(f"unknown request kind {op['type']!r}")
    assert len(messages.encode(bad)) < 8 * 1024
    with pytest.raises(ProtocolError) as refused:  # and so is the decoder's own
        messages.parse_request(dumps({**op, "k": op["type"]}))
    assert len(messages.encode(messages.error(str(refused.value)))) < 8 * 1024


def test_reading_rows_up_to_a_size_takes_the_longest_run_that_fits() -> None:
    elog = EventLog.open(":memory:")
    sizes = [5, 70_000, 300, 12_000, 1, 64_000, 40, 900] * 80
    ops = [
        Operation(OperationType.STATUS, ActionType.UPDATE, "n1", f"t{i}", {"b": "y" * n})
        for i, n in enumerate(sizes)
        if n < 65_000
    ]
    elog.append_batch([Submission(op, OpId("n1/a", i + 1)) for i, op in enumerate(ops)])
    everything = elog.read_rows(0, 10_000)
    measure = protocol.rows_bytes
    for after in (0, 3, 100, len(ops) - 2):
        for budget in (1, 1000, 13_000, 100_000, 1_000_000, 10**9):
            rows = elog.read_rows(after, 5000, budget, measure)
            assert rows == everything[after : after + len(rows)] and rows
            assert len(rows) == 1 or measure(rows) <= budget
            more = everything[after : after + len(rows) + 1]
            assert len(more) == len(rows) or measure(more) > budget


def test_the_replication_simulation_holds_with_tiny_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated network of `tests.test_replication_sim` (lost, duplicated and reordered
    frames and replies, restarts, log switches, snapshots), with caps so small that every
    frame and reply is cut after a few events and every snapshot comes in many chunks."""
    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test

    from tests.test_replication_sim import SIM_SETTINGS, ReplicationSim

    monkeypatch.setattr(protocol, "MAX_FRAME_BYTES", protocol.ENVELOPE_BYTES + 600)
    monkeypatch.setattr(protocol, "SNAPSHOT_CHUNK_BYTES", 120)
    run_state_machine_as_test(
        ReplicationSim, settings=settings(SIM_SETTINGS, max_examples=SIM_SETTINGS.max_examples)
    )


def test_one_event_is_never_bigger_than_the_bound_the_caps_are_built_on() -> None:
    """The costliest valid event (every string at its longest, in its costliest characters,
    the largest numbers): its frame encoding and its stored row's bound are within
    ``MAX_EVENT_BYTES``, and the row bound is never under the real encoding."""
    big = 2**63 - 1
    data = biggest_data(big, "\x01")
    op = Operation(OperationType.STATUS, ActionType.UPDATE, "\U0001f600" * 128, '"' * 512, data)
    event = Event(big, -1.7976931348623157e308, LOG_ID, op, OpId(WORST_ORIGIN, big))
    encoded = len(dumps(protocol.compact(event)))
    assert encoded <= protocol.MAX_EVENT_BYTES
    text = dumps(data).decode()
    row: tuple[Any, ...] = (big, event.ts, "status", "update", op.sender, op.target, text)
    row += (WORST_ORIGIN, big)
    in_reply = protocol.rows_reply(LOG_ID, [row], big, 0.0)["events"][0]
    assert encoded == len(dumps(in_reply)) <= protocol.rows_bytes([row]) <= protocol.MAX_EVENT_BYTES
