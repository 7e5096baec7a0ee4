"""The replication bench's cuelog roles, each run in its own process by the bench.

- ``controller``: a `Controller` on the bench's log; answers ``stats`` and ``digest``;
- ``node``: a `NodeReplica` that submits its share as fast as its outbox takes it
  (``submit``), or at a steady rate with the submit time in each op (``pace``); its `Probe`
  notes when it applied the bench's operations and says so once it has them all (``reached``);
- ``catchup``: a fresh replica joining a big log; says how long it took to be in sync.

The lines they talk over are `tools.bench.replication_procs`; the baseline systems' roles are
in `tools.bench.replication_baselines`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Final

from eventlog import ActionType, Event, Operation, OperationType
from replicas.controller import Controller
from replicas.node import NodeReplica
from replicas.outbox import OutboxFull
from tools.bench.common import Message, PhaseError
from tools.bench.data import node_ops
from tools.bench.replication_procs import Link, in_thread, on_signals, serve_commands

#: every operation the bench submits comes from a sender with this prefix
BENCH_PREFIX: Final = "bench-"
LATENCY_TARGET: Final = "bench_latency"


def role_controller(cfg: Message, link: Link) -> None:
    controller = Controller(cfg["db"], cfg["address"], tail_limit=int(cfg["tail_limit"]))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        on_signals(loop, controller.stop)
        task = asyncio.create_task(controller.run())
        ready = asyncio.create_task(controller.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await task  # it ended before it was ready: raises why
            raise PhaseError("the controller stopped before it was ready")
        core = controller.core
        assert core is not None
        link.send("ready", head=core.head)

        def on_command(msg: Message) -> None:
            cmd = msg.get("cmd")
            if cmd == "stats":
                link.send("stats", head=core.head, **controller.stats)
            elif cmd == "digest":
                head = core.head
                link.send("digest", applied=head, digest=core.digest_at(head) or "")
            elif cmd == "stop":
                controller.stop()

        serve_commands(link, loop, on_command)
        await task

    asyncio.run(main())


class Probe:
    """Counts the bench's operations as a replica applies them (runs on the node's loop)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.counts = {"load": 0, "latency": 0}
        self.targets: dict[str, int] = {}
        self.latencies: list[float] = []

    def on_applied(self, batch: list[Event]) -> None:
        now = time.monotonic()
        counts = self.counts
        for event in batch:
            op = event.op
            if not op.sender.startswith(BENCH_PREFIX):
                continue
            if op.target == LATENCY_TARGET and op.data is not None:
                counts["latency"] += 1
                self.latencies.append(now - op.data["t"])
            else:
                counts["load"] += 1
        for kind in [k for k, n in self.targets.items() if counts[k] >= n]:
            self._reached(kind, now)

    def expect(self, kind: str, count: int) -> None:
        self.targets[kind] = count
        if self.counts[kind] >= count:
            self._reached(kind, time.monotonic())

    def _reached(self, kind: str, now: float) -> None:
        del self.targets[kind]
        latencies, self.latencies = self.latencies, []
        self.link.send("reached", what=kind, t=now, count=self.counts[kind], latencies=latencies)


def _settle(future: concurrent.futures.Future[int], deadline: float) -> int:
    """Wait for one submitted op's seq: 0 when acknowledged, 1 when refused."""
    try:
        future.result(timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise PhaseError("an operation was not acknowledged in time") from None
    except Exception:
        return 1
    return 0


def _submit_all(replica: NodeReplica, ops: list[Operation], link: Link, timeout: float) -> None:
    """Submit `ops` as fast as the outbox takes them; when it is full, wait for the oldest."""
    deadline = time.monotonic() + timeout
    pending: collections.deque[concurrent.futures.Future[int]] = collections.deque()
    errors = full_waits = 0
    t_first = time.monotonic()
    for op in ops:
        while True:
            try:
                pending.append(replica.submit(op))
                break
            except OutboxFull:
                full_waits += 1
                if pending:
                    errors += _settle(pending.popleft(), deadline)
                else:
                    time.sleep(0.001)
    t_queued = time.monotonic()
    while pending:
        errors += _settle(pending.popleft(), deadline)
    link.send(
        "submitted",
        t_first=t_first,
        t_queued=t_queued,
        t_acked=time.monotonic(),
        errors=errors,
        full_waits=full_waits,
    )


def _noting(acks: list[float], sent: float) -> Callable[[concurrent.futures.Future[int]], None]:
    def done(_: concurrent.futures.Future[int]) -> None:
        acks.append(time.monotonic() - sent)

    return done


def _pace(replica: NodeReplica, node: str, count: int, rate: float, link: Link) -> None:
    """Submit `count` ops at a steady `rate`, each carrying its submit time; note each ack."""
    futures: list[concurrent.futures.Future[int]] = []
    acks: list[float] = []
    errors = 0
    start = time.monotonic() + 0.005
    for k in range(count):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.monotonic()
        op = Operation(
            OperationType.STATUS, ActionType.UPDATE, node, LATENCY_TARGET, {"t": sent, "i": k}
        )
        try:
            future = replica.submit(op)
        except OutboxFull:
            errors += 1
            continue
        future.add_done_callback(_noting(acks, sent))
        futures.append(future)
    seconds = time.monotonic() - start
    deadline = time.monotonic() + 10.0
    errors += sum(_settle(fut, deadline) for fut in futures)
    link.send("paced", sent=len(futures), seconds=seconds, errors=errors, acks=acks)


def role_node(cfg: Message, link: Link) -> None:
    node: str = cfg["node"]
    replica = NodeReplica(node, cfg["address"])
    probe = Probe(link)
    replica.on_applied = probe.on_applied
    ops = node_ops(node, int(cfg["ops"]))
    timeout = float(cfg["timeout"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        on_signals(loop, replica.stop)
        task = asyncio.create_task(replica.run())

        def announce() -> None:
            if replica.synced.wait(timeout):
                link.send("ready", applied=replica.applied_seq)
            else:
                link.send("error", error=f"{node} not in sync with the controller in {timeout:g} s")

        threading.Thread(target=announce, daemon=True).start()

        def on_command(msg: Message) -> None:
            cmd = msg.get("cmd")
            if cmd == "expect":
                probe.expect(str(msg["what"]), int(msg["count"]))
            elif cmd == "submit":
                in_thread(link, _submit_all, replica, ops, link, float(msg["timeout"]))
            elif cmd == "pace":
                in_thread(link, _pace, replica, node, int(msg["count"]), float(msg["rate"]), link)
            elif cmd == "digest":
                link.send("digest", applied=replica.applied_seq, digest=replica.digest)
            elif cmd == "count":
                link.send("count", **probe.counts)
            elif cmd == "stop":
                replica.stop()

        serve_commands(link, loop, on_command)
        await task

    asyncio.run(main())


def role_catchup(cfg: Message, link: Link) -> None:
    timeout = float(cfg["timeout"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        cpu = time.process_time()
        replica = NodeReplica(cfg["node"], cfg["address"], db=cfg.get("db"))
        first: list[int] = []

        def on_applied(batch: list[Event]) -> None:
            if not first:
                first.append(batch[0].seq)

        replica.on_applied = on_applied
        on_signals(loop, replica.stop)
        task = asyncio.create_task(replica.run())

        def watch() -> None:
            synced = replica.synced.wait(timeout)
            seconds = time.monotonic() - started
            cpu_s = time.process_time() - cpu
            if not synced:
                link.send("error", error=f"not in sync after {timeout:g} s ({replica.applied_seq})")
                return
            core = replica.core
            link.send(
                "synced",
                seconds=seconds,
                cpu_s=cpu_s,
                applied=replica.applied_seq,
                first_applied=first[0] if first else None,
                snapshots=core.resyncs if core is not None else None,
            )

        threading.Thread(target=watch, daemon=True).start()
        serve_commands(link, loop, lambda msg: replica.stop() if msg.get("cmd") == "stop" else None)
        await task

    asyncio.run(main())
