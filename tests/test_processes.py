"""Real processes: `cuelog controller` and `cuelog node` killed, frozen and restarted.

Traffic comes from this test process through a `ControllerClient`; every acknowledged op is
remembered and must be in the log at the end, and every node's digest must match.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlog import ActionType, Event, EventLog, Operation, OperationType
from replicas import NodeReplica
from replicas.client import ControllerClient, ControllerUnreachable
from tests.cluster import Proc, converged, ipc_address, status, wait_for


class Rig:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.address = ipc_address(folder)
        self.procs: dict[str, Proc] = {}
        self.acked: dict[int, str] = {}
        self._n = 0

    def controller(self) -> Proc:
        proc = Proc(
            self.folder,
            "controller",
            [
                "controller",
                "--db",
                str(self.folder / "ctl.db"),
                "--listen",
                self.address,
                "--node-timeout",
                "2",
                "--snapshot-every",
                "200",
                "--ws",
                "off",  # no UIs: a test beside it may hold the default port
            ],
        )
        self.procs["controller"] = proc
        return proc

    def node(self, node_id: str, *extra: str) -> Proc:
        proc = Proc(
            self.folder,
            node_id,
            [
                "node",
                "--id",
                node_id,
                "--controller",
                self.address,
                "--db",
                str(self.folder / f"{node_id}.db"),
                *extra,
            ],
        )
        self.procs[node_id] = proc
        return proc

    def traffic(self, count: int, client: ControllerClient) -> None:
        """Submit `count` ops in batches of 20, remembering every acknowledged seq."""
        while count > 0:
            ops = []
            for _ in range(min(20, count)):
                self._n += 1
                ops.append(
                    Operation(
                        OperationType.STATUS,
                        ActionType.UPDATE,
                        "driver",
                        "nextcue",
                        {"nextcue": f"c{self._n}"},
                    )
                )
            try:
                results = client.submit(ops, node="driver", retries=20)
            except ControllerUnreachable:
                continue
            for op, result in zip(ops, results, strict=True):
                self.acked[result["seq"]] = op.data["nextcue"]  # type: ignore[index]
            count -= len(ops)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def check_log(self) -> None:
        with EventLog.open(self.folder / "ctl.db", readonly=True) as elog:
            # the controller still runs (a node may leave meanwhile): the head is read first
            head = elog.head
            events = {e.seq: e for e in elog.iter_events()}
            assert sorted(events) == list(range(1, max(events, default=0) + 1)), "gapless"
            assert len(events) >= head, "gapless"
            for seq, value in self.acked.items():
                assert events[seq].op.data == {"nextcue": value}, f"acknowledged seq {seq} lost"
            cues = [
                (e.op.data or {}).get("nextcue")
                for e in events.values()
                if e.op.target == "nextcue"
            ]
            assert len(cues) == len(set(cues)), "no op appended twice"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.stop()


def test_kill9_node_mid_stream_restarts_from_its_file(rig: Rig) -> None:
    rig.controller()
    rig.node("a")
    rig.node("b")
    with ControllerClient(rig.address, timeout=5) as client:
        wait_for("nodes online", lambda: converged(rig.address, ["a", "b"]))
        rig.traffic(1500, client)
        rig.procs["a"].kill9()
        rig.traffic(1500, client)
        first_life = rig.procs["a"].log_text()
        rig.node("a")
        rig.traffic(500, client)
        wait_for("converged after restart", lambda: converged(rig.address, ["a", "b"]), 30)
    restarted = rig.procs["a"].log_text()[len(first_life) :]
    assert "resuming from replica file" in restarted, "partial catch-up from its own file"
    assert "full resync" not in restarted
    rig.check_log()


def test_kill9_controller_loses_no_acknowledged_op(rig: Rig) -> None:
    rig.controller()
    rig.node("a")
    rig.node("b")
    with ControllerClient(rig.address, timeout=2) as client:
        wait_for("nodes online", lambda: converged(rig.address, ["a", "b"]))
        done = threading.Event()

        def drive() -> None:
            rig.traffic(3000, client)
            done.set()

        driver = threading.Thread(target=drive)
        driver.start()
        wait_for("some traffic", lambda: len(rig.acked) > 500)
        rig.procs["controller"].kill9()
        rig.controller()
        driver.join(60)
        assert done.is_set(), "the driver finished after the controller came back"
        wait_for(
            "converged after controller restart", lambda: converged(rig.address, ["a", "b"]), 30
        )
    assert len(rig.acked) == 3000
    rig.check_log()


def test_late_fourth_node_catches_up(rig: Rig) -> None:
    rig.controller()
    for n in ("a", "b", "c"):
        rig.node(n)
    with ControllerClient(rig.address, timeout=5) as client:
        wait_for("nodes online", lambda: converged(rig.address, ["a", "b", "c"]))
        rig.traffic(2000, client)
        rig.node("d")
        wait_for("late node converged", lambda: converged(rig.address, ["a", "b", "c", "d"]), 30)
    rig.check_log()


def test_sigstopped_node_does_not_slow_the_others_and_catches_up(rig: Rig) -> None:
    rig.controller()
    rig.node("a")
    rig.node("frozen")
    sent: dict[int, float] = {}
    applied_at: dict[int, float] = {}
    observer = NodeReplica("observer", rig.address)

    def on_applied(events: list[Event]) -> None:
        now = time.monotonic()
        for event in events:
            applied_at[event.seq] = now

    observer.on_applied = on_applied
    thread = threading.Thread(target=lambda: asyncio.run(observer.run()), daemon=True)
    thread.start()
    try:
        with ControllerClient(rig.address, timeout=5) as client:
            wait_for("nodes online", lambda: converged(rig.address, ["a", "frozen"]))
            assert observer.synced.wait(10)
            rig.procs["frozen"].signal(signal.SIGSTOP)
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                probe = {"nextcue": f"probe-{len(sent)}"}
                op = Operation(OperationType.STATUS, ActionType.UPDATE, "driver", "nextcue", probe)
                start = time.monotonic()
                results = client.submit([op], node="driver")
                sent[results[0]["seq"]] = start
                rig.traffic(50, client)
            wait_for("observer applied everything", lambda: set(sent) <= set(applied_at), 10)
            st = status(rig.address)
            assert (
                st["nodes"]["frozen"]["applied_seq"] < st["head_seq"]
                or not st["nodes"]["frozen"]["online"]
            )
            rig.procs["frozen"].signal(signal.SIGCONT)
            wait_for("frozen node caught up", lambda: converged(rig.address, ["a", "frozen"]), 30)
    finally:
        observer.stop()
        thread.join(10)
    latencies = [applied_at[seq] - start for seq, start in sent.items()]
    assert latencies, "the observer measured something"
    # the frozen peer must not hold up the others: every op reached the observer long before
    # the freeze ended (4 s); a blocked controller would show multi-second latencies
    assert max(latencies) < 2.0, f"max latency {max(latencies):.3f} s while a peer was frozen"
    rig.check_log()


def test_a_frozen_controller_disarms_nothing_and_blames_no_node(rig: Rig) -> None:
    """SIGSTOP of the controller for longer than the node timeout, during an armed show."""
    ctl = rig.controller()
    rig.node("a", "--simulate")  # simulated engines arm themselves when the show loads
    rig.node("b", "--simulate")
    with ControllerClient(rig.address, timeout=5) as client:
        wait_for("nodes online", lambda: converged(rig.address, ["a", "b"]))
        load = {"value": "show", "address": "/engine/command/load", "nodes": ["a", "b"]}
        op = Operation(OperationType.COMMAND, ActionType.UPDATE, "operator", "load", load)
        assert "seq" in client.submit([op])[0]
        wait_for("armed", lambda: client.state()["state"]["engine"]["armed"] == "yes")
        head = client.state()["seq"]
        ctl.signal(signal.SIGSTOP)
        frozen_until = time.monotonic() + 5.0  # more than twice the 2 s node timeout
        # the fault itself lasts a fixed time: the controller stays frozen until then
        wait_for("the freeze to last", lambda: time.monotonic() >= frozen_until, 10)
        ctl.signal(signal.SIGCONT)
        wait_for("the stall logged", lambda: "did not run for" in ctl.log_text(), 10)
        rig.traffic(20, client)  # the show goes on; liveness has run many ticks since
        wait_for("converged", lambda: converged(rig.address, ["a", "b"]), 10)
        state = client.state()["state"]
        assert state["engine"]["armed"] == "yes", "a stall of the controller disarmed the show"
    with EventLog.open(rig.folder / "ctl.db", readonly=True) as elog:
        left = [e for e in elog.iter_events() if e.seq > head and e.op.target == "node_left"]
    assert left == [], f"nodes blamed for the controller's stall: {left}"


def _node_proc(rig: Rig, name: str, node_id: str) -> Proc:
    proc = Proc(rig.folder, name, ["node", "--id", node_id, "--controller", rig.address])
    rig.procs[name] = proc
    return proc


def test_two_processes_never_share_a_node_id(rig: Rig) -> None:
    """A second live process claiming an id is refused, loudly; it takes over only when the
    holder is gone (frozen past the timeout, or killed), and the old one is then refused."""
    ctl = rig.controller()
    first = _node_proc(rig, "first", "a")
    wait_for("a online", lambda: status(rig.address)["nodes"].get("a", {}).get("online"))
    second = _node_proc(rig, "second", "a")
    wait_for("the second refused", lambda: "in use by another live process" in second.log_text())
    wait_for("the conflict in status", lambda: status(rig.address)["nodes"]["a"]["conflict"])
    assert "a second process claims node id a" in ctl.log_text()
    first.signal(signal.SIGSTOP)  # frozen: after the timeout the second one takes the id over
    wait_for("the take-over", lambda: "node a is now held by" in ctl.log_text(), 15)
    first.signal(signal.SIGCONT)
    wait_for(
        "the first refused in turn",
        lambda: "in use by another live process" in first.log_text(),
        15,
    )
    second.kill9()  # killed: its connection closes, and the first takes the id back at once
    wait_for("taken back", lambda: ctl.log_text().count("node a is now held by") >= 2, 15)
    with ControllerClient(rig.address, timeout=5) as client:
        wait_for("a in sync", lambda: converged(rig.address, ["a"]), 15)
        assert client.status()["nodes"]["a"]["online"]
