"""A real controller and real node replicas over real NNG sockets, in one process."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from eventlog import ActionType, EventLog, Operation, OperationType, digest
from replicas import (
    NodeCommunications,
    NodeOperation,
    NodeReplica,
    OperationRefused,
    OutboxFull,
)
from replicas.client import ControllerClient
from replicas.compat import as_node_operations
from tests.cluster import controller_thread, converged, ipc_address, nodes, status, wait_for
from tools.demo import command


@pytest.mark.parametrize("depth", [1, 3], ids=["one-submit-in-flight", "three-in-flight"])
def test_three_replicas_converge_on_10000_ops_from_three_submitters(
    tmp_path: Path, depth: int
) -> None:
    addr = ipc_address(tmp_path)
    ids = ["n1", "n2", "n3"]
    with (
        controller_thread(tmp_path / "ctl.db", addr, snapshot_every=500),
        nodes(addr, ids[:2], submit_depth=depth) as (n1, n2),
        nodes(addr, ids[2:], db=tmp_path / "n3.db") as (n3,),
    ):
        futures: list[concurrent.futures.Future[int]] = []

        def submit_all(comms: NodeCommunications, count: int) -> None:
            for i in range(count):
                futures.append(comms.update_nextcue(f"{comms.node_id}-{i}"))

        threads = [
            threading.Thread(target=submit_all, args=(c, n))
            for c, n in ((n1, 3334), (n2, 3333), (n3, 3333))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        seqs = [f.result(30) for f in futures]
        assert len(seqs) == 10_000
        assert len(set(seqs)) == 10_000, "every op got its own seq"
        wait_for("all nodes converged", lambda: converged(addr, ids), 30)
        head = status(addr)["head_seq"]
        assert {c.applied_seq for c in (n1, n2, n3)} == {head}
        assert len({c.digest for c in (n1, n2, n3)}) == 1
    with EventLog.open(tmp_path / "ctl.db", readonly=True) as elog:
        events = list(elog.iter_events())
        assert [e.seq for e in events] == list(range(1, elog.head + 1))
        op_ids = [(e.op_id.origin, e.op_id.origin_seq) for e in events]
        assert len(op_ids) == len(set(op_ids))
        last_of: dict[str, int] = {}
        for origin, origin_seq in op_ids:  # each node's ops in the order it sent them
            assert origin_seq > last_of.get(origin, 0), f"{origin} reordered"
            last_of[origin] = origin_seq
        nextcues = [e for e in events if e.op.target == "nextcue"]
        assert len(nextcues) == 10_000
        assert digest(elog.state_at(elog.head)) == n1.digest
    with EventLog.open(tmp_path / "n3.db", readonly=True) as replica_file:
        assert replica_file.head == head, "the node's --db file holds the whole log"


def test_commands_fire_once_in_seq_order_and_a_blocking_go_never_stalls(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    fired: list[tuple[str, Any]] = []
    release = threading.Event()
    stop_seen = threading.Event()

    def callback(name: str, value: Any, address: str) -> None:
        fired.append((name, value))
        if name == "go":
            release.wait(20)  # a GO that blocks for the whole cue
        if name == "stop":
            stop_seen.set()

    with (
        controller_thread(tmp_path / "ctl.db", addr) as ctl,
        nodes(addr, ["a"], command_callback=callback) as (a,),
    ):
        assert a.wait_synced(10)
        ctl.call(ctl.controller.append_local([command("load", "show", nodes=["a"])]))
        a.send_status("armed_ready", {"armed": "yes"}).result(10)
        wait_for("armed", lambda: a.state.engine["armed"] == "yes")
        ctl.call(ctl.controller.append_local([command("go"), command("stop")]))
        assert stop_seen.wait(10), "STOP must run while GO is still blocked"
        release.set()
        assert fired == [("load", "show"), ("go", None), ("stop", None)]
        # a refused GO (not armed after stop) is an event but never fires
        ctl.call(ctl.controller.append_local([command("go")]))
        wait_for("refused go applied", lambda: a.state.commands["go"]["accepted"] is False)
        assert fired.count(("go", None)) == 1


def test_history_never_fires_on_a_late_node_or_a_restart_from_its_file(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    fired: list[str] = []
    with controller_thread(tmp_path / "ctl.db", addr, snapshot_every=5, tail_limit=3) as ctl:
        ctl.call(ctl.controller.append_local([command("ping")] + [command("stop")] * 12))
        for db in (None, tmp_path / "late.db", tmp_path / "late.db"):
            with nodes(addr, ["late"], db=db, command_callback=lambda n, v, a: fired.append(n)) as (
                late,
            ):
                assert late.wait_synced(10)
                wait_for("caught up", lambda: late.applied_seq >= 13)
        assert fired == [], "commands from history (tail, snapshot, own file) never fire"
        with nodes(
            addr,
            ["late"],
            db=tmp_path / "late.db",
            command_callback=lambda n, v, a: fired.append(n),
        ) as (late,):
            assert late.wait_synced(10)
            ctl.call(ctl.controller.append_local([command("stop")]))
            wait_for("live stop fired", lambda: fired == ["stop"])


def test_ping_is_answered_with_pong(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr) as ctl, nodes(addr, ["a"]) as (a,):
        assert a.wait_synced(10)
        ctl.call(ctl.controller.append_local([command("ping", address="/engine/cluster/ping")]))
        wait_for("pong", lambda: a.state.nodes.get("a", {}).get("pong", 0) > 0)
        assert a.state.status["a"]["pong"]["data"] == {}


def test_cue_progress_is_coalesced_and_never_arrives_after_the_remove(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr), nodes(addr, ["a"]) as (a,):
        assert a.wait_synced(10)
        a.add_cue("c1", "0").result(10)
        futures = [a.update_cue("c1", pct) for pct in range(1, 60)]
        removed = a.remove_cue("c1").result(10)
        seqs = {f.result(10) for f in futures}
        wait_for("applied", lambda: a.applied_seq >= removed)
    with EventLog.open(tmp_path / "ctl.db", readonly=True) as elog:
        updates = [e for e in elog.iter_events() if e.op.action is ActionType.UPDATE]
        assert 1 <= len(updates) <= 3, "59 progress calls coalesced to at most a few ops"
        assert all(e.seq < removed for e in updates)
        assert seqs <= {e.seq for e in updates} | {removed}
        assert elog.state.cues["c1"]["status"] == 100


def test_full_outbox_raises_instead_of_blocking(tmp_path: Path) -> None:
    node = NodeReplica("a", ipc_address(tmp_path, "nobody"), outbox_size=3)
    op = Operation(OperationType.STATUS, ActionType.UPDATE, "a", "nextcue", {"nextcue": ""})
    for _ in range(3):
        node.submit(op)
    with pytest.raises(OutboxFull, match="outbox full"):
        node.submit(op)


def test_an_invalid_operation_fails_in_the_caller(tmp_path: Path) -> None:
    node = NodeReplica("a", ipc_address(tmp_path, "nobody"))
    bad = Operation(OperationType.CUE, ActionType.UPDATE, "a", "c1", {"percentage": 500})
    with pytest.raises(Exception, match="percentage"):
        node.submit(bad)


def test_controller_refusal_reaches_the_future(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr), nodes(addr, ["a"]) as (a,):
        reserved = Operation(
            OperationType.STATUS, ActionType.UPDATE, "a", "node_joined", {"node": "x"}
        )
        with pytest.raises(OperationRefused, match="reserved"):
            a.send_operation(reserved).result(10)


def test_node_operation_callbacks_run_for_every_committed_event(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    seen: list[NodeOperation] = []
    done = threading.Event()

    def on_cue(op: NodeOperation) -> None:
        seen.append(op)
        if len(seen) == 2:
            done.set()

    callbacks = {OperationType.CUE: on_cue}
    with (
        controller_thread(
            tmp_path / "ctl.db", addr, node_operation_callback=as_node_operations(callbacks)
        ),
        nodes(addr, ["a"]) as (a,),
    ):
        a.add_cue("c1", "10").result(10)
        a.remove_cue("c1").result(10)
        assert done.wait(10)
    assert [(op.action, op.target) for op in seen] == [
        (ActionType.ADD, "c1"),
        (ActionType.REMOVE, "c1"),
    ]
    assert seen[0].__dict__() == {
        "type": "cue",
        "action": "add",
        "sender": "a",
        "target": "c1",
        "data": {"id": "c1", "offset": "10"},
    }


def test_status_reports_lag_digest_and_liveness(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr, node_timeout=0.6):
        with nodes(addr, ["a", "b"]) as (_a, _b):
            wait_for("both online", lambda: converged(addr, ["a", "b"]))
            st = status(addr)
            assert set(st) >= {"log_id", "head_seq", "digest", "nodes"}
            for info in st["nodes"].values():
                assert set(info) >= {"online", "applied_seq", "digest", "lag_events", "lag_seconds"}
                if info["applied_seq"] == st["head_seq"]:
                    assert info["digest"] == st["digest"]
        wait_for("nodes left", lambda: not any(i["online"] for i in status(addr)["nodes"].values()))
    with EventLog.open(tmp_path / "ctl.db", readonly=True) as elog:
        targets = [e.op.target for e in elog.iter_events()]
        assert targets.count("node_joined") == 2 and targets.count("node_left") == 2


def test_an_unreachable_controller_is_logged_with_its_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    addr = ipc_address(tmp_path, "nobody-home")
    caplog.set_level(logging.INFO, logger="cuelog.node")
    with nodes(addr, ["a"]):
        wait_for("a log line", lambda: "not reachable" in caplog.text, 10)
    assert addr in caplog.text


def test_seed_names_and_json() -> None:
    op = NodeOperation(OperationType.PLAYER, ActionType.ADD, "n1", "audioplayer_c1", None)
    assert op.__dict__() == {
        "type": "player",
        "action": "add",
        "sender": "n1",
        "target": "audioplayer_c1",
        "data": None,
    }
    assert op.duplicate().data == {}
    assert NodeOperation.from_message(op.__dict__()) == op
    assert str(op) == "NodeOperation by n1: add on player audioplayer_c1 (without data)"


def test_client_submit_and_state(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr), ControllerClient(addr) as client:
        results = client.submit([command("load", "x"), command("go")])
        assert [r["seq"] for r in results] == [1, 2]
        state = client.state()
        assert state["seq"] == 2 and state["state"]["engine"]["load"] == "x"


@pytest.mark.parametrize("tail_limit", [10**9, 100], ids=["tail", "snapshot"])
def test_a_fresh_node_catches_up_a_long_log_by_tail_or_snapshot(
    tmp_path: Path, tail_limit: int
) -> None:
    from tools.bench.data import build_big_log

    build_big_log(tmp_path / "ctl.db", 12_345, snapshot_every=1000)
    addr = ipc_address(tmp_path)
    with (
        controller_thread(tmp_path / "ctl.db", addr, tail_limit=tail_limit),
        nodes(addr, ["late"], db=tmp_path / "late.db") as (late,),
    ):
        assert late.wait_synced(30)
        wait_for(
            "converged, node_joined included",
            lambda: status(addr)["head_seq"] > 12_345 and converged(addr, ["late"]),
            30,
        )
        core = late.replica.core
        assert core is not None
        assert (core.resyncs > 0) == (tail_limit == 100), "snapshot only when far behind"
    with (
        EventLog.open(tmp_path / "ctl.db", readonly=True) as ctl_log,
        EventLog.open(tmp_path / "late.db", readonly=True) as replica_file,
    ):
        assert replica_file.head == ctl_log.head
        assert digest(replica_file.state_at(replica_file.head)) == digest(
            ctl_log.state_at(ctl_log.head)
        )


def test_a_failed_group_commit_never_reorders_a_nodes_ops(tmp_path: Path) -> None:
    import sqlite3

    addr = ipc_address(tmp_path)
    entered = threading.Event()
    go_on = threading.Event()
    failed: list[int] = []
    with controller_thread(tmp_path / "ctl.db", addr) as ctl, nodes(addr, ["n1"]) as (n1,):
        core = ctl.controller.core
        assert core is not None and n1.wait_synced(10)
        real_commit = core.commit

        def flaky(batch: Any, now: float, **options: Any) -> Any:
            mine = [s for p in batch for s in p.subs if s.op_id and s.op_id.origin_seq == 1]
            if mine and not failed:
                failed.append(1)
                entered.set()
                go_on.wait(20)  # hold the commit while more of n1's ops are queued behind it
                raise sqlite3.OperationalError("disk I/O error")
            return real_commit(batch, now, **options)

        core.commit = flaky  # type: ignore[method-assign]
        first = [n1.update_nextcue(f"c{i}") for i in range(1, 1001)]
        assert entered.wait(10)
        later = [n1.update_nextcue(f"c{i}") for i in range(1001, 1501)]
        admission = ctl.controller.admission
        assert admission is not None
        wait_for("a later submit queued behind the failing commit", lambda: bool(admission.queue))
        go_on.set()
        seqs = [f.result(30) for f in first + later]
    assert failed
    assert seqs == sorted(seqs), "n1's ops were committed out of order"
    with EventLog.open(tmp_path / "ctl.db", readonly=True) as elog:
        values = [
            (e.op.data or {}).get("nextcue") for e in elog.iter_events() if e.op.target == "nextcue"
        ]
    assert values == [f"c{i}" for i in range(1, 1501)]


def test_a_large_backlog_queued_while_the_controller_is_down_is_all_committed(
    tmp_path: Path,
) -> None:
    addr = ipc_address(tmp_path)
    with nodes(addr, ["n1"]) as (n1,):
        # 1000 valid ops of ~6 KB each (6 MB in all) wait for a controller that is not up yet
        futures = [n1.send_status(f"player{i}", {"config": "x" * 6000}) for i in range(1000)]
        with controller_thread(tmp_path / "ctl.db", addr):
            seqs = [f.result(30) for f in futures]
    assert sorted(seqs) == seqs and len(set(seqs)) == 1000
