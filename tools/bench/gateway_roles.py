"""The gateway bench's cuelog roles, each run in its own (spawned) process.

- ``gateway``: a controller with its gateway, as ``cuelog controller --ws`` runs them, plus a
  `Probe` timing each UI GO on the server side; answers ``load``, ``fanout``, ``probe`` and
  ``digest``;
- ``node``: a node replica (`NodeCommunications`) whose command callback notes when each GO
  arrives; answers ``arm`` and ``fired``;
- ``load``: the background load, `LOAD_RATE` operations a second through a `ControllerClient`.

The bare-server baselines' roles are in `tools.bench.gateway_baselines`.
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import threading
import time
from typing import Any

from eventlog import Event, State, digest
from gateway.server import Gateway
from gateway.session import Effect, GatewayCore, Session
from replicas import NodeCommunications
from replicas.client import ControllerClient
from replicas.controller import Controller
from replicas.sequencer import ControllerCore
from tools.bench.common import START_TIMEOUT, STOP_GRACE, Message, PhaseError, log
from tools.bench.data import node_ops
from tools.bench.gateway_link import Link, started
from tools.bench.gateway_show import GO_PREFIX, command_op, fan_ops
from tools.bench.gateway_sizes import APPENDERS, FAN_BATCH, LOAD_BATCHES_S, LOAD_NODE


def ui_go(event: Event) -> int | None:
    """The ``k`` of a GO the bench's client sent, else None."""
    op = event.op
    if op.target != "go" or not op.sender.startswith("ui:"):
        return None
    value = (op.data or {}).get("value")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Probe:
    """Server side of the latency phase, for each UI GO: when the gateway read its frame,
    when the commit that holds it started and ended (in its worker thread), and when the
    controller's loop handed the committed batch to its listeners."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, float]] = []
        self.spans: list[tuple[int, float, float]] = []
        self.commits: list[tuple[int, int, float, str | None]] = []
        #: how long every commit took in its worker thread (seconds)
        self.durations: list[float] = []

    def on_open(self, log_id: str, state: State) -> None:
        return None

    def on_commit(self, events: list[Event], reasons: list[str | None]) -> None:
        now = time.monotonic()
        for event, reason in zip(events, reasons, strict=True):
            k = ui_go(event)
            if k is not None:
                self.commits.append((k, event.seq, now, reason))

    def watch(self, gateway: GatewayCore, sequencer: ControllerCore) -> None:
        on_frame, commit = gateway.on_frame, sequencer.commit

        def frame_read(session: Session, data: bytes, now: float) -> list[Effect]:
            if data.startswith(GO_PREFIX) and len(data) >= 4:
                (k,) = struct.unpack(">i", data[-4:])
                self.frames.append((k, time.monotonic()))
            return on_frame(session, data, now)

        def timed_commit(batch: Any, now: float, **options: Any) -> Any:
            start = time.monotonic()
            committed = commit(batch, now, **options)
            end = time.monotonic()
            self.durations.append(end - start)
            for event in committed.result.events:
                k = ui_go(event)
                if k is not None:
                    self.spans.append((k, start, end))
            return committed

        gateway.on_frame = frame_read  # type: ignore[method-assign]
        sequencer.commit = timed_commit  # type: ignore[method-assign]


async def role_gateway(cfg: Message, link: Link) -> None:
    """A controller with its gateway, as ``cuelog controller --ws`` runs them."""
    controller = Controller(cfg["db"], cfg["address"])
    gateway = Gateway(controller, "127.0.0.1", 0)
    probe = Probe()
    controller.listeners.insert(0, probe)  # noted before the gateway folds the batch
    tasks = [asyncio.create_task(controller.run()), asyncio.create_task(gateway.run())]
    try:
        await started(gateway.ready, tasks, "the gateway")
        core = gateway.core
        assert core is not None and controller.core is not None
        probe.watch(core, controller.core)
        link.send(
            kind="ready", port=gateway.bound_port, head=core.seq, messages=len(core.view.values)
        )

        async def load(msg: Message) -> Message:
            op = command_op(
                "load", "bench-latency", cues=[f"c{i}" for i in range(20)], nodes=msg["nodes"]
            )
            seqs = await controller.append_local([op])
            return {"seq": seqs[0]}

        async def fanout(msg: Message) -> Message:
            ops = fan_ops(int(msg["count"]))
            chunks = iter([ops[i : i + FAN_BATCH] for i in range(0, len(ops), FAN_BATCH)])

            async def appender() -> None:
                for chunk in chunks:
                    await controller.append_local(chunk)

            commits = controller.stats["commits"]
            t_first = time.monotonic()
            await asyncio.gather(*(appender() for _ in range(APPENDERS)))
            return {
                "t_first": t_first,
                "t_committed": time.monotonic(),
                "commits": controller.stats["commits"] - commits,
                **core.stats,
            }

        async def probed(msg: Message) -> Message:
            out = {
                "frames": probe.frames,
                "spans": probe.spans,
                "commits": probe.commits,
                "durations": probe.durations,
                **core.stats,
            }
            probe.frames, probe.spans, probe.commits, probe.durations = [], [], [], []
            return out

        async def digest_time(msg: Message) -> Message:
            assert controller.core is not None
            return {"ms": digest_ms(controller.core.elog.state)}

        await link.serve({"load": load, "fanout": fanout, "probe": probed, "digest": digest_time})
    finally:
        gateway.stop()
        controller.stop()
        await asyncio.gather(*tasks, return_exceptions=True)


async def role_node(cfg: Message, link: Link) -> None:
    """A node replica whose command callback notes when each command arrives."""
    fired: list[tuple[str, Any, float]] = []
    applied: list[tuple[int, float]] = []

    def on_command(name: str, value: Any, address: str) -> None:
        fired.append((name, value, time.monotonic()))

    def on_applied(batch: list[Event]) -> None:
        now = time.monotonic()
        for event in batch:
            k = ui_go(event)
            if k is not None:
                applied.append((k, now))

    comms = NodeCommunications(cfg["address"], cfg["node"], command_callback=on_command)
    comms.replica.on_applied = on_applied
    comms.start()
    try:
        if not await asyncio.to_thread(comms.wait_synced, START_TIMEOUT):
            raise PhaseError(f"{cfg['node']} not in sync with the controller")
        link.send(kind="ready", applied=comms.applied_seq)

        async def arm(msg: Message) -> Message:
            future = comms.send_status("armed_ready", {"armed": "yes"})
            seq = await asyncio.wait_for(asyncio.wrap_future(future), 10.0)
            return {"seq": seq}

        async def report(msg: Message) -> Message:
            return {"fired": [(v, t) for name, v, t in fired if name == "go"], "applied": applied}

        await link.serve({"arm": arm, "fired": report})
    finally:
        comms.stop()
        await asyncio.to_thread(comms.join, STOP_GRACE)


class Load:
    """Submits `rate` status/cue operations a second through a `ControllerClient`."""

    def __init__(self, address: str, rate: int) -> None:
        self.address = address
        self.rate = rate
        self.ops = node_ops(LOAD_NODE, 3000)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-load", daemon=True)
        self.sent = self.errors = 0
        self.started = self.ended = 0.0
        self.behind = 0

    def _run(self) -> None:
        """Every 1/`LOAD_BATCHES_S` s, submit what is due; a submit that waited for a slow
        commit is followed by a bigger one (up to two batches), so the rate mostly holds."""
        per = max(1, self.rate // LOAD_BATCHES_S)
        with ControllerClient(self.address, timeout=5.0) as client:
            self.started = start = time.monotonic()
            while not self.stop.is_set():
                due = int((time.monotonic() - start) * self.rate) - self.sent
                if due < per:
                    time.sleep((per - due) / self.rate)
                    continue
                if due > 2 * per:
                    self.behind += 1
                count = min(due, 2 * per)
                batch = [self.ops[(self.sent + i) % len(self.ops)] for i in range(count)]
                try:
                    results = client.submit(batch, node=LOAD_NODE)
                except Exception:
                    log.exception("background submit failed")
                    self.errors += count
                else:
                    self.errors += sum(1 for r in results if "seq" not in r)
                self.sent += count
                self.ended = time.monotonic()


async def role_load(cfg: Message, link: Link) -> None:
    load = Load(cfg["address"], int(cfg["rate"]))
    link.send(kind="ready")

    async def start(msg: Message) -> Message:
        load.thread.start()
        return {}

    async def finish(msg: Message) -> Message:
        load.stop.set()
        await asyncio.to_thread(load.thread.join, 10.0)
        seconds = load.ended - load.started
        return {
            "sent": load.sent,
            "errors": load.errors,
            "seconds": seconds,
            "rate": load.sent / seconds if seconds > 0 else 0.0,
            "fell_behind": load.behind,
        }

    try:
        await link.serve({"start": start, "finish": finish})
    finally:
        load.stop.set()


def digest_ms(state: State) -> float:
    """How long `digest` of `state` takes (p50 of 5): the controller digests its head after
    answering a commit (at least every 0.25 s under load)."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        digest(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
