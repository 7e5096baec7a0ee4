"""The engine learns what to restore (issue 7, item 14): after a start, a restart from its
replica file or a resync, once caught up, before any live command of the session fires.

History never fires, so a `load` a node missed while it was down reaches its engine only
through the restore callback; `cuelog node --simulate` uses it to reload the show.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from eventlog import State
from replicas import NodeCommunications, NodeReplica
from replicas.client import ControllerClient
from replicas.commands import COMMAND_GRACE
from replicas.messages import Welcome
from replicas.replica import MemoryStore, ReplicaCore
from tests.cluster import controller_thread, ipc_address, nodes, wait_for
from tests.test_replica_core import LOG, ev, events_reply, frame
from tools.demo import command
from tools.engine import SimulatedEngine


class Engine:
    """Records restores and commands in the order the engine sees them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.restored = threading.Event()
        self.lock = threading.Lock()

    def restore(self, state: State, why: str) -> None:
        with self.lock:
            self.calls.append(("restore", why, state.seq, state.engine.get("load")))
        self.restored.set()

    def command(self, name: str, value: Any, address: str) -> None:
        with self.lock:
            self.calls.append(("command", name, value))

    def restores(self) -> list[tuple[Any, ...]]:
        with self.lock:
            return [c for c in self.calls if c[0] == "restore"]

    def commands(self) -> list[tuple[Any, ...]]:
        with self.lock:
            return [c for c in self.calls if c[0] == "command"]


def test_start_restart_and_resync_each_restore_and_history_never_fires(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    db = tmp_path / "n1.db"
    with controller_thread(tmp_path / "ctl.db", addr, snapshot_every=5, tail_limit=6) as ctl:
        # start: a fresh node, nothing loaded yet
        first = Engine()
        with nodes(addr, ["n1"], db=db, restore_callback=first.restore) as (n1,):
            n1.set_command_callback(first.command)
            wait_for("the start restore", first.restored.is_set, 10)
            wait_for("its own join in its file", lambda: n1.applied_seq > 0, 10)
        assert first.restores() == [("restore", "start", 0, "")]

        # the show is loaded while the node is down: a restart from its file learns it
        ctl.call(ctl.controller.append_local([command("load", "show-1", nodes=["n1"])]))
        head = ctl.call(ctl.controller.append_local([command("setnextcue", "c2")]))[0]
        again = Engine()
        with nodes(
            addr, ["n1"], db=db, restore_callback=again.restore, command_callback=again.command
        ) as (n1,):
            wait_for("the restart restore", again.restored.is_set, 10)
            (_, why, seq, load) = again.restores()[0]
            assert (why, load) == ("restart", "show-1") and seq >= head
            # a live command fires after the restore, once
            ctl.call(ctl.controller.append_local([command("stop")]))
            wait_for("the live stop", lambda: again.commands() != [], 10)
        assert [c[0:2] for c in again.calls] == [("restore", "restart"), ("command", "stop")]

        # far behind (more than the tail limit): a snapshot rebuilds the replica: a resync
        ctl.call(ctl.controller.append_local([command("load", "show-2")] + [command("stop")] * 8))
        third = Engine()
        with nodes(
            addr, ["n1"], db=db, restore_callback=third.restore, command_callback=third.command
        ) as (n1,):
            wait_for("the resync restore", third.restored.is_set, 10)
        assert [c[1::2] for c in third.restores()] == [("resync", "show-2")]
        assert third.commands() == [], "history never fires"


def test_a_command_arriving_while_catching_up_waits_for_the_restore() -> None:
    """Driven without sockets: the core gets a welcome (head 2), a live `load` at seq 3 (ahead
    of a hole), then the hole; the restore runs first and the load waits until it returns."""
    engine = Engine()
    entered = threading.Event()
    release = threading.Event()
    fired = threading.Event()

    def slow_restore(state: State, why: str) -> None:
        engine.restore(state, why)
        entered.set()
        release.wait(10)

    def command(name: str, value: Any, address: str) -> None:
        engine.command(name, value, address)
        fired.set()

    replica = NodeReplica(
        "n1", "ipc:///nowhere.ipc", restore_callback=slow_restore, command_callback=command
    )
    try:
        core = replica.core = ReplicaCore("n1", MemoryStore())
        replica._start_session(resumed=False)
        core.on_welcome(Welcome(LOG, 2, 1000.0), 0.0)
        replica._after_input()
        replica._fire(core.on_frame(frame(ev(3, "load")), 0.1))
        replica._after_input()
        assert engine.calls == [] and not core.synced
        replica._fire(core.on_fetch_reply(events_reply(ev(1), ev(2), head=2), 0.2))
        replica._after_input()
        assert entered.wait(5), "the restore runs once caught up"
        # the load waits for the restore, even well past the grace a running command gets
        assert not fired.wait(COMMAND_GRACE * 3)
        release.set()
        assert fired.wait(5)
        assert engine.calls == [("restore", "start", 3, ""), ("command", "load", None)]

        # a resync later in the session (the controller now holds another log) restores again
        core.on_welcome(Welcome("log-2", 0, 1001.0), 0.3)
        replica._after_input()
        wait_for("the resync restore", lambda: len(engine.restores()) == 2, 5)
        assert engine.restores()[1][:3] == ("restore", "resync", 0)
    finally:
        release.set()
        replica.commands.close()


def test_a_restore_callback_set_late_is_called_at_once(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    engine = Engine()
    with controller_thread(tmp_path / "ctl.db", addr) as ctl:
        ctl.call(ctl.controller.append_local([command("load", "show-1")]))
        with nodes(addr, ["n1"]) as (n1,):
            assert n1.wait_synced(10)
            n1.set_restore_callback(engine.restore)
            wait_for("the late restore", engine.restored.is_set, 10)
    assert [c[1::2] for c in engine.restores()] == [("start", "show-1")]


def test_simulated_node_reloads_the_show_and_re_arms_after_a_restart(tmp_path: Path) -> None:
    addr = ipc_address(tmp_path)
    db = tmp_path / "sim.db"
    cues = [{"id": f"c{i}", "node": "sim", "seconds": 0.5} for i in (1, 2, 3)]

    def simulated() -> tuple[NodeCommunications, SimulatedEngine]:
        comms = NodeCommunications(addr, "sim", db=db)
        engine = SimulatedEngine(comms)
        comms.set_command_callback(engine.on_command)
        comms.set_restore_callback(engine.on_restore)
        comms.start()
        return comms, engine

    with (
        controller_thread(tmp_path / "ctl.db", addr, node_timeout=1.0) as ctl,
        ControllerClient(addr, timeout=5.0) as client,
    ):

        def armed() -> str:
            return str(client.state()["state"]["engine"]["armed"])

        comms, engine = simulated()
        try:
            assert comms.wait_synced(10)
            ctl.call(
                ctl.controller.append_local([command("load", "show", cues=cues, nodes=["sim"])])
            )
            wait_for("armed", lambda: armed() == "yes", 10)
            ctl.call(ctl.controller.append_local([command("setnextcue", "c2")]))
            wait_for("next cue c2", lambda: comms.state.engine.get("nextcue") == "c2", 10)
            wait_for("the node online", lambda: "sim" in client.status()["nodes"], 10)
        finally:
            comms.stop()
            comms.join(10)
        wait_for("the node left: disarmed", lambda: armed() == "no", 10)

        comms, engine = simulated()
        try:
            wait_for("re-armed after the restart", lambda: armed() == "yes", 10)
            assert [c["id"] for c in engine.cues] == ["c1", "c2", "c3"]
            assert engine.pointer == 1, "the pointer is back on the show's next cue"
        finally:
            comms.stop()
            comms.join(10)
