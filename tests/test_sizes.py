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

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventlog import (
    MAX_DATA_BYTES,
    ActionType,
    EventLog,
    Operation,
    OperationType,
    digest,
    dumps,
    validate_operation,
)
from replicas.client import ControllerClient
from replicas.protocol import MAX_REQUEST_BYTES, NNG_MAX_BYTES
from tests.cluster import (
    Proc,
    controller_thread,
    converged,
    ipc_address,
    nodes,
    status,
    wait_for,
)

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


def largest_submits(ops: list[Operation], origin: str) -> list[list[dict[str, Any]]]:
    """`ops` cut into submits as large as the controller reads (each under the request cap)."""
    batches: list[list[dict[str, Any]]] = [[]]
    for n, op in enumerate(ops, 1):
        wire = {**op.to_wire(), "op_id": [origin, n]}
        trial = {"k": "submit", "node": SENDER, "ops": [*batches[-1], wire]}
        if len(dumps(trial)) > MAX_REQUEST_BYTES:
            batches.append([wire])
        else:
            batches[-1].append(wire)
    return batches


def submit(address: str, wires: list[dict[str, Any]]) -> list[int]:
    with ControllerClient(address, timeout=60.0, origin="sizes") as client:
        reply = client.request({"k": "submit", "node": SENDER, "ops": wires})
    assert reply.get("k") == "acks", reply
    seqs = [result["seq"] for result in reply["results"]]
    return seqs


def submit_all(address: str, ops: list[Operation]) -> None:
    for wires in largest_submits(ops, "sizes/1"):
        submit(address, wires)


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
    """400 events of 64 KiB (26 MB, past NNG's 16 MiB): the catch-up replies are cut by bytes."""
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr, snapshot_every=10_000):
        submit_all(addr, [biggest_op(i) for i in range(400)])
        assert status(addr)["head_seq"] == 400
        with nodes(addr, ["late"], db=tmp_path / "late.db", request_timeout=10.0) as (late,):
            assert late.wait_synced(40), "the late node never caught up"
            wait_for("the late node in step", lambda: converged(addr, ["late"]), 20)
            core = late.replica.core
            assert core is not None and core.resyncs == 0, "the tail, not a snapshot"
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
        procs.append(Proc(tmp_path, "controller", [*args, "--snapshot-every", "100"]))
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
        wait_for("eight big submits queued", lambda: len(ctl.controller._queue) == 8, 30)
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
    wires = largest_submits(ops, f"big{k}/1")[0]
    assert len(wires) >= 55
    seqs = submit(addr, wires)
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
