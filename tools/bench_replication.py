"""``cuelog bench replication``: replication figures and same-run baselines. Nothing asserted.

Every role runs in its own process (``sys.executable -c``, so the controller and the nodes do
not share one GIL); they talk to this process over JSON lines on stdin/stdout, and their logs
go to ``<scratch>/<name>.log``. Times are ``time.monotonic()`` (CLOCK_MONOTONIC is one clock
for every process on the host), so a submit in one process and an apply in another compare.

Measured in one run, on one machine (all over TCP on loopback, as a rig is wired):

- **throughput**: 4 node replicas each submit their share of N operations as fast as their
  outbox accepts; the clock runs from the first submit to the moment every replica has
  applied every one of them (so: durably committed by the controller, synchronous=FULL, and
  applied on all 4 replicas); the CPU seconds each process used say where the time went;
- **latency**: one node submits at a steady 1,000 ops/s with the submit time in the op; every
  replica notes when it applied each op; p50/p99 over all (op, replica) pairs, next to the
  submitter's acknowledgement times and the disk's floor (one raw sqlite3 FULL commit);
- **catch-up**: a fresh replica joins a controller holding a 100,000-event log, through the
  tail (fetch chunks), through the newest snapshot plus the tail, and (no target) through the
  tail into its own replica file;
- baselines: an **upstream-style** NNG Bus0 hub (one JSON message per operation, non-blocking
  sends, a receive loop that sleeps 10 ms per message, as upstream's does) under the same load,
  and the **raw pynng** ceiling: the same operations in batched REQ/REP submits and PUB/SUB
  frames of the same shape, JSON at every hop, but no validation, no log and no reducer.

Every wait has a deadline: a stuck phase becomes an ``error`` figure, and every child is
stopped (a stop command, then SIGTERM, then SIGKILL) before the phase returns.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pynng
from tqdm import tqdm

from eventlog import ActionType, DecodeError, Event, Operation, OperationType, dumps, loads
from replicas.controller import Controller
from replicas.nngio import close_all, guarded
from replicas.node import NodeReplica
from replicas.outbox import SUBMIT_BATCH, OutboxFull
from replicas.protocol import MAX_FRAME_EVENTS, NNG_MAX_BYTES, events_address
from replicas.sequencer import DEFAULT_TAIL_LIMIT
from tools.bench_data import build_big_log
from tools.demo import free_port_pair

Figures = dict[str, Any]
Message = dict[str, Any]

NODES: Final = 4
#: every operation the bench submits comes from a sender with this prefix
BENCH_PREFIX: Final = "bench-"
LATENCY_TARGET: Final = "bench_latency"

TARGET_OPS_S: Final = 20_000
TARGET_P99_MS: Final = 5.0
TARGET_CATCHUP_S: Final = 1.0
TARGET_UPSTREAM_RATIO: Final = 100.0

#: upstream's receive loop sleeps this long after every message
UPSTREAM_SLEEP: Final = 0.01
#: how long the upstream-style hub keeps counting after its senders finished
UPSTREAM_WINDOW: Final = 2.0
#: a controller tail limit no fetch exceeds (the tail path) and a small one (snapshot path)
TAIL_PATH_LIMIT: Final = 1_000_000_000
SNAPSHOT_PATH_LIMIT: Final = 1_000
SNAPSHOT_EVERY: Final = 1_000

START_TIMEOUT: Final = 20.0
STOP_GRACE: Final = 3.0

_ROOT: Final = Path(__file__).resolve().parent.parent
_BOOT: Final = (
    "import sys; from tools.bench_replication import child_main; sys.exit(child_main(sys.argv[1:]))"
)

log = logging.getLogger("cuelog.bench")


class PhaseError(Exception):
    """A phase could not finish (a timeout, a child that failed): its figure is an error."""


@dataclass(frozen=True, slots=True)
class Sizes:
    ops_per_node: int
    latency_rate: int
    latency_seconds: float
    catchup_events: int

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                ops_per_node=2_000, latency_rate=1_000, latency_seconds=2.0, catchup_events=30_000
            )
        return cls(
            ops_per_node=10_000, latency_rate=1_000, latency_seconds=5.0, catchup_events=100_000
        )

    @property
    def total(self) -> int:
        return self.ops_per_node * NODES

    @property
    def latency_ops(self) -> int:
        return round(self.latency_rate * self.latency_seconds)


def node_ops(node: str, count: int) -> list[Operation]:
    """What a busy node sends: cues starting, progressing, ending, and its next cue."""
    ops: list[Operation] = []
    for i in range(count):
        cue = f"{node}-cue-{(i // 6) % 50}"
        step = i % 6
        if step == 0:
            op = Operation(
                OperationType.CUE, ActionType.ADD, node, cue, {"id": cue, "offset": str(i)}
            )
        elif step < 4:
            op = Operation(
                OperationType.CUE,
                ActionType.UPDATE,
                node,
                cue,
                {"id": cue, "percentage": 25 * step},
            )
        elif step == 4:
            op = Operation(OperationType.CUE, ActionType.REMOVE, node, cue, {"id": cue})
        else:
            op = Operation(
                OperationType.STATUS, ActionType.UPDATE, node, "nextcue", {"nextcue": cue}
            )
        ops.append(op)
    return ops


# ====================================================================== child processes


class _Link:
    """A child's end of the line to the bench: JSON lines out on stdout, commands in on stdin.

    Stray writes to stdout (fd 1 or ``sys.stdout``) are sent to stderr, the child's log file,
    so they cannot corrupt the message stream.
    """

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, kind: str, **fields: Any) -> None:
        line = dumps({"kind": kind, **fields}) + b"\n"
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._out.write(line)
            self._out.flush()

    def commands(self) -> Iterator[Message]:
        """Commands until stdin closes; the last one is always ``stop``."""
        for line in sys.stdin.buffer:
            with contextlib.suppress(DecodeError):
                msg = loads(line)
                if isinstance(msg, dict):
                    yield msg
        yield {"cmd": "stop"}


def _serve_commands(
    link: _Link, loop: asyncio.AbstractEventLoop, handler: Callable[[Message], None]
) -> None:
    """Read commands on a daemon thread and run `handler` for each on `loop`."""

    def run() -> None:
        for msg in link.commands():
            try:
                loop.call_soon_threadsafe(handler, msg)
            except RuntimeError:
                return  # the loop is closed: the role is over
            if msg.get("cmd") == "stop":
                return

    threading.Thread(target=run, name="bench-commands", daemon=True).start()


def _in_thread(link: _Link, fn: Callable[..., None], *args: Any) -> None:
    """Run `fn(*args)` on a daemon thread; an exception becomes an ``error`` message."""

    def run() -> None:
        try:
            fn(*args)
        except Exception as exc:
            log.exception("%s failed", getattr(fn, "__name__", fn))
            link.send("error", error=f"{type(exc).__name__}: {exc}")

    threading.Thread(target=run, name="bench-worker", daemon=True).start()


def _on_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise PhaseError(f"no {what} within {timeout:g} s")
        await asyncio.sleep(0.005)


def _role_controller(cfg: Message, link: _Link) -> None:
    controller = Controller(cfg["db"], cfg["address"], tail_limit=int(cfg["tail_limit"]))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _on_signals(loop, controller.stop)
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
                status = core.status(time.time())
                link.send("digest", applied=status["head_seq"], digest=status["digest"])
            elif cmd == "stop":
                controller.stop()

        _serve_commands(link, loop, on_command)
        await task

    asyncio.run(main())


class _Probe:
    """Counts the bench's operations as a replica applies them (runs on the node's loop)."""

    def __init__(self, link: _Link) -> None:
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


def _submit_all(replica: NodeReplica, ops: list[Operation], link: _Link, timeout: float) -> None:
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


def _pace(replica: NodeReplica, node: str, count: int, rate: float, link: _Link) -> None:
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


def _role_node(cfg: Message, link: _Link) -> None:
    node: str = cfg["node"]
    replica = NodeReplica(node, cfg["address"])
    probe = _Probe(link)
    replica.on_applied = probe.on_applied
    ops = node_ops(node, int(cfg["ops"]))
    timeout = float(cfg["timeout"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _on_signals(loop, replica.stop)
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
                _in_thread(link, _submit_all, replica, ops, link, float(msg["timeout"]))
            elif cmd == "pace":
                _in_thread(link, _pace, replica, node, int(msg["count"]), float(msg["rate"]), link)
            elif cmd == "digest":
                link.send("digest", applied=replica.applied_seq, digest=replica.digest)
            elif cmd == "count":
                link.send("count", **probe.counts)
            elif cmd == "stop":
                replica.stop()

        _serve_commands(link, loop, on_command)
        await task

    asyncio.run(main())


def _role_catchup(cfg: Message, link: _Link) -> None:
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
        _on_signals(loop, replica.stop)
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
        _serve_commands(
            link, loop, lambda msg: replica.stop() if msg.get("cmd") == "stop" else None
        )
        await task

    asyncio.run(main())


def _role_bus_hub(cfg: Message, link: _Link) -> None:
    """Upstream's hub: a Bus0 listener whose receive loop sleeps 10 ms after each message."""
    expected = int(cfg["peers"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        _on_signals(loop, stop.set)
        sock = pynng.Bus0(recv_max_size=NNG_MAX_BYTES)
        counts: Message = {"received": 0, "bad": 0, "t_first": None, "t_last": None}
        try:
            sock.listen(cfg["address"])

            async def receive() -> None:
                while True:
                    raw = await guarded(sock.arecv())
                    now = time.monotonic()
                    counts["received"] += 1
                    if counts["t_first"] is None:
                        counts["t_first"] = now
                    counts["t_last"] = now
                    try:
                        json.loads(raw)
                    except ValueError:
                        counts["bad"] += 1
                    await asyncio.sleep(UPSTREAM_SLEEP)

            async def announce() -> None:
                await _until(lambda: len(sock.pipes) >= expected, START_TIMEOUT, "bus peers")
                link.send("connected", peers=len(sock.pipes))

            def on_command(msg: Message) -> None:
                cmd = msg.get("cmd")
                if cmd == "report":
                    link.send("report", **counts)
                elif cmd == "stop":
                    stop.set()

            _serve_commands(link, loop, on_command)
            link.send("ready")
            tasks = [asyncio.create_task(receive()), asyncio.create_task(announce())]
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({tasks[0], stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in [*tasks, stopper]:
                task.cancel()
            results = await asyncio.gather(*tasks, stopper, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    raise result
        finally:
            sock.close()

    asyncio.run(main())


def _role_bus_node(cfg: Message, link: _Link) -> None:
    """Upstream's node: one JSON message per operation, non-blocking Bus0 sends."""
    node: str = cfg["node"]
    messages = [json.dumps(op.to_wire()).encode() for op in node_ops(node, int(cfg["ops"]))]
    sock = pynng.Bus0()
    try:
        sock.dial(cfg["address"], block=False)
        deadline = time.monotonic() + START_TIMEOUT
        while not sock.pipes:
            if time.monotonic() > deadline:
                raise PhaseError(f"{node} could not reach the bus hub")
            time.sleep(0.005)
        link.send("ready")
        for msg in link.commands():
            cmd = msg.get("cmd")
            if cmd == "go":
                sent = refused = 0
                t_first = time.monotonic()
                for data in messages:
                    try:
                        sock.send(data, block=False)
                        sent += 1
                    except pynng.TryAgain:
                        refused += 1
                link.send(
                    "sent", sent=sent, refused=refused, t_first=t_first, t_last=time.monotonic()
                )
            elif cmd == "stop":
                break
    finally:
        sock.close()


def _role_raw_hub(cfg: Message, link: _Link) -> None:
    """The transport alone: REQ/REP submits in, PUB/SUB event frames out, no log."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        _on_signals(loop, stop.set)
        rep = pynng.Rep0(recv_max_size=NNG_MAX_BYTES)
        pub = pynng.Pub0(send_buffer_size=1024)
        contexts: list[Any] = []
        head = [0]
        try:
            rep.listen(cfg["address"])
            pub.listen(events_address(cfg["address"]))

            async def serve(ctx: Any) -> None:
                while True:
                    msg = loads(await guarded(ctx.arecv()))
                    now = time.time()
                    first = head[0] + 1
                    events = [
                        {
                            "seq": first + i,
                            "ts": now,
                            "type": op["type"],
                            "action": op["action"],
                            "sender": op["sender"],
                            "target": op["target"],
                            "data": op["data"],
                            "op_id": op["op_id"],
                        }
                        for i, op in enumerate(msg["ops"])
                    ]
                    head[0] += len(events)
                    results = [{"seq": event["seq"]} for event in events]
                    await guarded(
                        ctx.asend(dumps({"k": "acks", "results": results, "head": head[0]}))
                    )
                    for start in range(0, len(events), MAX_FRAME_EVENTS):
                        chunk = events[start : start + MAX_FRAME_EVENTS]
                        frame = {
                            "k": "ev",
                            "log": "raw",
                            "first": chunk[0]["seq"],
                            "last": chunk[-1]["seq"],
                            "ts": now,
                            "events": chunk,
                        }
                        await guarded(pub.asend(dumps(frame)))

            _serve_commands(
                link, loop, lambda msg: stop.set() if msg.get("cmd") == "stop" else None
            )
            contexts = [rep.new_context() for _ in range(16)]
            tasks = [asyncio.create_task(serve(ctx)) for ctx in contexts]
            link.send("ready")
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            close_all(contexts, rep, pub)

    asyncio.run(main())


def _role_raw_node(cfg: Message, link: _Link) -> None:
    """Sends its share in SUBMIT_BATCH-op requests; counts every event frame it receives."""
    node: str = cfg["node"]
    wire: list[dict[str, Any]] = []
    for i, op in enumerate(node_ops(node, int(cfg["ops"])), 1):
        item = op.to_wire()
        item["op_id"] = [f"{node}/raw", i]
        wire.append(item)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        _on_signals(loop, stop.set)
        req = pynng.Req0(recv_max_size=NNG_MAX_BYTES)
        sub = pynng.Sub0(recv_max_size=NNG_MAX_BYTES, recv_buffer_size=1024)
        sub.subscribe(b"")
        contexts: list[Any] = []
        received = [0]
        target: list[int] = []
        try:
            req.dial(cfg["address"], block=False)
            sub.dial(events_address(cfg["address"]), block=False)
            await _until(lambda: bool(req.pipes) and bool(sub.pipes), START_TIMEOUT, "raw hub")
            contexts.append(req.new_context())
            ctx = contexts[0]

            async def receive() -> None:
                while True:
                    msg = loads(await guarded(sub.arecv()))
                    if msg.get("k") == "ev":
                        received[0] += len(msg["events"])
                    if target and received[0] >= target[0]:
                        target.clear()
                        link.send("reached", what="load", t=time.monotonic(), count=received[0])

            async def submit() -> None:
                errors = 0
                t_first = time.monotonic()
                for start in range(0, len(wire), SUBMIT_BATCH):
                    batch = wire[start : start + SUBMIT_BATCH]
                    await guarded(ctx.asend(dumps({"k": "submit", "node": node, "ops": batch})))
                    reply = loads(await guarded(ctx.arecv()))
                    if reply.get("k") != "acks":
                        errors += len(batch)
                t_acked = time.monotonic()
                link.send("submitted", t_first=t_first, t_acked=t_acked, errors=errors)

            tasks = [asyncio.create_task(receive())]

            def on_command(msg: Message) -> None:
                cmd = msg.get("cmd")
                if cmd == "expect":
                    target[:] = [int(msg["count"])]
                    if received[0] >= target[0]:
                        target.clear()
                        link.send("reached", what="load", t=time.monotonic(), count=received[0])
                elif cmd == "go":
                    tasks.append(asyncio.create_task(submit()))
                elif cmd == "stop":
                    stop.set()

            _serve_commands(link, loop, on_command)
            link.send("ready")
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            close_all(contexts, req, sub)

    asyncio.run(main())


_ROLES: Final[dict[str, Callable[[Message, _Link], None]]] = {
    "controller": _role_controller,
    "node": _role_node,
    "catchup": _role_catchup,
    "bus_hub": _role_bus_hub,
    "bus_node": _role_bus_node,
    "raw_hub": _role_raw_hub,
    "raw_node": _role_raw_node,
}


def child_main(argv: list[str]) -> int:
    """Entry point of a bench child: ``ROLE CONFIG_JSON``. Reports failure as a message."""
    role, raw = argv
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    link = _Link()
    try:
        _ROLES[role](loads(raw), link)
    except Exception as exc:
        log.exception("role %s failed", role)
        link.send("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


# ====================================================================== the bench's side


class _Children:
    """The bench's child processes: start them, talk to them, always stop them."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.inbox: queue.Queue[tuple[str, Message]] = queue.Queue()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stash: dict[str, list[Message]] = {}
        self.stopping: set[str] = set()
        #: children that needed SIGTERM or SIGKILL to stop
        self.forced: list[str] = []

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(reversed(list(self.procs)))

    def start(self, name: str, role: str, cfg: Message) -> None:
        with open(self.scratch / f"{name}.log", "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, role, dumps(cfg).decode()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                cwd=_ROOT,
            )
        self.procs[name] = proc
        self.stash[name] = []
        threading.Thread(target=self._read, args=(name, proc), daemon=True).start()

    def _read(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                with contextlib.suppress(DecodeError):
                    msg = loads(line)
                    if isinstance(msg, dict):
                        self.inbox.put((name, msg))
        self.inbox.put((name, {"kind": "exit", "rc": proc.wait()}))

    def send(self, name: str, cmd: str, **fields: Any) -> None:
        stdin = self.procs[name].stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(OSError, ValueError):
            stdin.write(dumps({"cmd": cmd, **fields}) + b"\n")
            stdin.flush()

    def tell(self, names: Iterable[str], cmd: str, **fields: Any) -> None:
        for name in names:
            self.send(name, cmd, **fields)

    def _tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            lines = (self.scratch / f"{name}.log").read_text(errors="replace").splitlines()
            useful = [line for line in lines if line.strip()]
            if useful:
                return f" (its log ends: {useful[-1].strip()[:300]})"
        return ""

    def collect(self, kind: str, names: list[str], timeout: float, what: str) -> dict[str, Message]:
        """One message of `kind` from each of `names`, within `timeout` seconds.

        Raises `PhaseError` on the deadline, or as soon as any running child reports an error
        or exits (it will never answer).
        """
        deadline = time.monotonic() + timeout
        got: dict[str, Message] = {}
        while True:
            for name in names:
                if name in got:
                    continue
                for i, msg in enumerate(self.stash[name]):
                    if msg.get("kind") == kind:
                        got[name] = self.stash[name].pop(i)
                        break
            missing = [name for name in names if name not in got]
            if not missing:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise PhaseError(
                    f"timed out after {timeout:g} s waiting for {what} ({', '.join(missing)})"
                )
            try:
                name, msg = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if name in self.stopping:
                continue
            if msg.get("kind") == "error":
                raise PhaseError(f"{name}: {msg.get('error')}{self._tail(name)}")
            if msg.get("kind") == "exit":
                raise PhaseError(f"{name} exited with code {msg.get('rc')}{self._tail(name)}")
            self.stash[name].append(msg)

    def cpu(self, names: Iterable[str]) -> dict[str, float | None]:
        return {name: cpu_seconds(self.procs[name].pid) for name in names}

    def ask(self, name: str, cmd: str, timeout: float = 5.0) -> Message:
        if self.procs[name].poll() is not None:
            raise PhaseError(f"{name} is not running")
        self.send(name, cmd)
        return self.collect(cmd, [name], timeout, f"the answer to {cmd!r}")[name]

    def stop(self, names: Iterable[str], grace: float = STOP_GRACE) -> None:
        """Stop command and EOF first; SIGTERM after `grace` seconds; SIGKILL 2 s later."""
        chosen = [name for name in names if name in self.procs]
        for name in chosen:
            self.stopping.add(name)
            self.send(name, "stop")
            stdin = self.procs[name].stdin
            if stdin is not None:
                with contextlib.suppress(OSError):
                    stdin.close()
        deadline = time.monotonic() + grace
        for name in chosen:
            proc = self.procs[name]
            try:
                proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.forced.append(f"{name}: SIGTERM")
                proc.terminate()
        for name in chosen:
            proc = self.procs.pop(name)
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.forced.append(f"{name}: SIGKILL")
                proc.kill()
                proc.wait(2.0)


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _cpu_delta(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, start in before.items():
        end = after.get(name)
        out[name] = None if start is None or end is None else round(end - start, 3)
    return out


def _address() -> str:
    return f"tcp://127.0.0.1:{free_port_pair()}"


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _guard(fn: Callable[[], Figures]) -> Figures:
    """A phase's figures, or ``{"error": why}`` if it could not finish."""
    try:
        return fn()
    except PhaseError as exc:
        return {"error": str(exc)}
    except Exception as exc:
        log.exception("bench phase failed")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _bench_raw(scratch: Path, sizes: Sizes) -> Figures:
    names = [f"{BENCH_PREFIX}raw-{i}" for i in range(NODES)]
    address = _address()
    total = sizes.total
    with _Children(scratch) as kids:
        kids.start("raw-hub", "raw_hub", {"address": address})
        kids.collect("ready", ["raw-hub"], START_TIMEOUT, "the raw hub to listen")
        for name in names:
            kids.start(
                name, "raw_node", {"node": name, "address": address, "ops": sizes.ops_per_node}
            )
        kids.collect("ready", names, START_TIMEOUT, "the raw nodes to connect")
        kids.tell(names, "expect", count=total)
        kids.tell(names, "go")
        timeout = 10.0 + total / 2_000
        submitted = kids.collect("submitted", names, timeout, "the raw submits")
        reached = kids.collect("reached", names, timeout, "every raw frame")
        kids.stop(names)
    forced = kids.forced
    t0 = min(m["t_first"] for m in submitted.values())
    seconds = max(m["t"] for m in reached.values()) - t0
    acked = max(m["t_acked"] for m in submitted.values()) - t0
    return {
        "ops": total,
        "batch": SUBMIT_BATCH,
        "seconds": seconds,
        "ops_s": total / seconds,
        "acked_ops_s": total / acked,
        "errors": sum(m["errors"] for m in submitted.values()),
        "forced_stops": forced,
    }


def _bench_upstream(scratch: Path, sizes: Sizes) -> Figures:
    names = [f"{BENCH_PREFIX}bus-{i}" for i in range(NODES)]
    address = _address()
    total = sizes.total
    with _Children(scratch) as kids:
        kids.start("bus-hub", "bus_hub", {"address": address, "peers": NODES})
        kids.collect("ready", ["bus-hub"], START_TIMEOUT, "the bus hub to listen")
        for name in names:
            kids.start(
                name, "bus_node", {"node": name, "address": address, "ops": sizes.ops_per_node}
            )
        kids.collect("ready", names, START_TIMEOUT, "the bus nodes to dial")
        kids.collect("connected", ["bus-hub"], START_TIMEOUT, "the hub to see every node")
        kids.tell(names, "go")
        sent = kids.collect("sent", names, 10.0 + total / 5_000, "the bus senders")
        senders_done = max(m["t_last"] for m in sent.values())
        time.sleep(max(0.0, senders_done + UPSTREAM_WINDOW - time.monotonic()))
        report = kids.ask("bus-hub", "report")
        kids.stop(names)
    forced = kids.forced
    t0 = min(m["t_first"] for m in sent.values())
    count = sum(m["sent"] for m in sent.values())
    received = int(report["received"])
    elapsed = (report["t_last"] - t0) if report["t_last"] is not None else 0.0
    return {
        "messages": total,
        "sent": count,
        "refused_at_send": sum(m["refused"] for m in sent.values()),
        "send_seconds": senders_done - t0,
        "received": received,
        "lost": count - received,
        "loss_pct": 100.0 * (count - received) / count if count else 0.0,
        "window_s": UPSTREAM_WINDOW,
        "receive_seconds": elapsed,
        "delivered_msgs_s": received / elapsed if elapsed > 0 else 0.0,
        "receiver_sleep_s": UPSTREAM_SLEEP,
        "forced_stops": forced,
    }


def _throughput(kids: _Children, names: list[str], sizes: Sizes) -> Figures:
    total = sizes.total
    before = kids.ask("controller", "stats")
    cpu_before = kids.cpu(["controller", *names])
    kids.tell(names, "expect", what="load", count=total)
    timeout = 15.0 + total / 1_000
    kids.tell(names, "submit", timeout=timeout)
    submitted = kids.collect("submitted", names, timeout, "every submit to be acknowledged")
    try:
        reached = kids.collect("reached", names, timeout, "every replica to apply every op")
    except PhaseError as exc:
        kids.tell(names, "count")
        counts = kids.collect("count", names, 5.0, "the replicas' counts")
        applied = ", ".join(f"{name} {m['load']:,}" for name, m in sorted(counts.items()))
        raise PhaseError(f"{exc}; applied of {total:,}: {applied}") from None
    cpu = _cpu_delta(cpu_before, kids.cpu(["controller", *names]))
    after = kids.ask("controller", "stats")
    t0 = min(m["t_first"] for m in submitted.values())
    seconds = max(m["t"] for m in reached.values()) - t0
    acked = max(m["t_acked"] for m in submitted.values()) - t0
    commits = after["commits"] - before["commits"]
    events = after["events"] - before["events"]
    return {
        "nodes": NODES,
        "replicas": NODES,
        "ops": total,
        "seconds": seconds,
        "ops_s": total / seconds,
        "acked_seconds": acked,
        "acked_ops_s": total / acked,
        "submit_seconds": max(m["t_queued"] for m in submitted.values()) - t0,
        "commits": commits,
        "ops_per_commit": events / commits if commits else 0.0,
        "outbox_full_waits": sum(m["full_waits"] for m in submitted.values()),
        "refused": sum(m["errors"] for m in submitted.values()),
        #: acknowledged but not applied on every replica (a shortfall ends the phase in error)
        "lost": total - min(m["count"] for m in reached.values()),
        #: CPU seconds each process used during the phase (all its threads)
        "cpu_s": cpu,
    }


def _latency(kids: _Children, names: list[str], sizes: Sizes) -> Figures:
    count = sizes.latency_ops
    kids.tell(names, "expect", what="latency", count=count)
    kids.send(names[0], "pace", count=count, rate=sizes.latency_rate)
    timeout = sizes.latency_seconds + 15.0
    paced = kids.collect("paced", [names[0]], timeout, "the paced submitter")[names[0]]
    reached = kids.collect("reached", names, timeout, "every replica to apply the paced ops")
    values = sorted(v for m in reached.values() for v in m["latencies"])
    acks = sorted(paced["acks"])
    if not values or not acks:
        raise PhaseError("no latency was recorded")
    return {
        "rate": sizes.latency_rate,
        "achieved_rate": paced["sent"] / paced["seconds"] if paced["seconds"] > 0 else 0.0,
        "seconds": sizes.latency_seconds,
        "ops": count,
        "pairs": len(values),
        "refused": paced["errors"],
        "p50_ms": _percentile(values, 0.50) * 1000,
        "p90_ms": _percentile(values, 0.90) * 1000,
        "p99_ms": _percentile(values, 0.99) * 1000,
        "max_ms": values[-1] * 1000,
        "ack_p50_ms": _percentile(acks, 0.50) * 1000,
        "ack_p99_ms": _percentile(acks, 0.99) * 1000,
    }


def _commit_floor(scratch: Path, count: int) -> Figures:
    """Raw sqlite3, one row per commit, WAL + synchronous=FULL: the disk's durable floor."""
    conn = sqlite3.connect(scratch / "floor.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, data TEXT NOT NULL)")
        row = json.dumps({"t": 0.0, "i": 0, "pad": "x" * 100})
        times: list[float] = []
        for _ in range(count):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (data) VALUES (?)", (row,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    times.sort()
    return {
        "commits": count,
        "p50_ms": _percentile(times, 0.50) * 1000,
        "p99_ms": _percentile(times, 0.99) * 1000,
        "max_ms": times[-1] * 1000,
    }


def _converged(kids: _Children, names: list[str]) -> Figures:
    """Whether every replica reached the controller's head with the controller's digest."""
    for _ in range(20):
        head = kids.ask("controller", "digest")
        kids.tell(names, "digest")
        seen = kids.collect("digest", names, 5.0, "the replicas' digests")
        if all(m["applied"] == head["applied"] for m in seen.values()):
            same = all(m["digest"] == head["digest"] for m in seen.values())
            return {"converged": same, "head": head["applied"]}
        time.sleep(0.1)
    return {"converged": None, "head": None}


def _bench_cluster(scratch: Path, sizes: Sizes) -> Figures:
    names = [f"{BENCH_PREFIX}{i}" for i in range(NODES)]
    address = _address()
    out: Figures = {}
    with _Children(scratch) as kids:
        cfg = {
            "db": str(scratch / "cluster.db"),
            "address": address,
            "tail_limit": DEFAULT_TAIL_LIMIT,
        }
        kids.start("controller", "controller", cfg)
        kids.collect("ready", ["controller"], START_TIMEOUT, "the controller to listen")
        for name in names:
            cfg = {
                "node": name,
                "address": address,
                "ops": sizes.ops_per_node,
                "timeout": START_TIMEOUT,
            }
            kids.start(name, "node", cfg)
        kids.collect("ready", names, START_TIMEOUT, "the nodes to join")
        time.sleep(0.5)  # the nodes' first beats and their node_joined events land first
        out["throughput"] = _guard(lambda: _throughput(kids, names, sizes))
        if "error" in out["throughput"]:
            out["latency"] = {"error": "skipped: the throughput phase failed"}
            out["check"] = {"error": "skipped: the throughput phase failed"}
        else:
            time.sleep(0.5)
            out["latency"] = _guard(lambda: _latency(kids, names, sizes))
            out["check"] = _guard(lambda: _converged(kids, names))
        kids.stop(names)
        kids.stop(["controller"])
    out["forced_stops"] = kids.forced
    return out


def _catch_up(scratch: Path, db: Path, mode: str, tail_limit: int, on_file: bool) -> Figures:
    """Time a fresh replica (in memory, or in its own log file) joining the log at `db`."""
    address = _address()
    with _Children(scratch) as kids:
        cfg = {"db": str(db), "address": address, "tail_limit": tail_limit}
        kids.start(f"controller-{mode}", "controller", cfg)
        head = kids.collect("ready", [f"controller-{mode}"], START_TIMEOUT, "the controller")
        cpu_before = kids.cpu([f"controller-{mode}"])
        name = f"fresh-{mode}"
        cfg = {"node": name, "address": address, "timeout": 30.0}
        if on_file:
            cfg["db"] = str(scratch / f"{name}.db")
        kids.start(name, "catchup", cfg)
        synced = kids.collect("synced", [name], START_TIMEOUT + 30.0, "the fresh replica")[name]
        cpu = _cpu_delta(cpu_before, kids.cpu([f"controller-{mode}"]))
        kids.stop([name])
        kids.stop([f"controller-{mode}"])
    forced = kids.forced
    return {
        "tail_limit": tail_limit,
        "controller_head": head[f"controller-{mode}"]["head"],
        "seconds": synced["seconds"],
        "applied": synced["applied"],
        "first_applied": synced["first_applied"],
        "snapshot_used": bool(synced["snapshots"]),
        "cpu_s": {"controller": cpu[f"controller-{mode}"], "replica": synced["cpu_s"]},
        "forced_stops": forced,
    }


def _bench_catchup(scratch: Path, sizes: Sizes) -> Figures:

    db = scratch / "catchup.db"
    started = time.perf_counter()
    build_big_log(db, sizes.catchup_events, snapshot_every=SNAPSHOT_EVERY)
    out: Figures = {
        "events": sizes.catchup_events,
        "build_s": time.perf_counter() - started,
        "snapshot_every": SNAPSHOT_EVERY,
        "fetch_chunk": MAX_FRAME_EVENTS,
    }
    out["tail"] = _guard(lambda: _catch_up(scratch, db, "tail", TAIL_PATH_LIMIT, False))
    out["snapshot"] = _guard(lambda: _catch_up(scratch, db, "snapshot", SNAPSHOT_PATH_LIMIT, False))
    out["tail_file"] = _guard(lambda: _catch_up(scratch, db, "tail-file", TAIL_PATH_LIMIT, True))
    return out


def _ratio(top: Figures, bottom: Figures, top_key: str, bottom_key: str) -> float | None:
    a, b = top.get(top_key), bottom.get(bottom_key)
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b <= 0:
        return None
    return float(a) / float(b)


def run_replication(quick: bool, scratch: Path) -> dict[str, Any]:
    """Run every replication measurement (see the module docstring); return the figures."""
    sizes = Sizes.pick(quick)
    figures: Figures = {
        "suite": "replication",
        "quick": quick,
        "transport": "tcp loopback",
        "cpus": os.cpu_count(),
        "nodes": NODES,
        "ops": sizes.total,
        "loadavg_1m": os.getloadavg()[0],
    }
    phases: list[tuple[str, Callable[[], Figures]]] = [
        ("commit floor", lambda: _commit_floor(scratch, 200 if quick else 500)),
        ("raw pynng", lambda: _bench_raw(scratch, sizes)),
        ("cuelog cluster", lambda: _bench_cluster(scratch, sizes)),
        ("upstream-style bus", lambda: _bench_upstream(scratch, sizes)),
        ("catch-up", lambda: _bench_catchup(scratch, sizes)),
    ]
    keys = ["commit_floor", "raw", "cluster", "upstream", "catchup"]
    bar = tqdm(total=len(phases), unit="phase", disable=not sys.stderr.isatty())
    started = time.perf_counter()
    try:
        for key, (desc, phase) in zip(keys, phases, strict=True):
            bar.set_description(desc)
            figures[key] = _guard(phase)
            bar.update(1)
    finally:
        bar.close()
    cluster = figures.pop("cluster")
    if "error" in cluster:
        cluster = {"throughput": cluster, "latency": cluster, "check": cluster}
    figures["throughput"] = cluster["throughput"]
    figures["latency"] = cluster["latency"]
    figures["convergence"] = cluster["check"]
    figures["ratios"] = {
        "cuelog_vs_upstream": _ratio(
            figures["throughput"], figures["upstream"], "ops_s", "delivered_msgs_s"
        ),
        "cuelog_vs_raw": _ratio(figures["throughput"], figures["raw"], "ops_s", "ops_s"),
    }
    figures["elapsed_s"] = time.perf_counter() - started
    return figures


# ====================================================================== printing


def _cpu_text(cpu: dict[str, float | None]) -> str:
    return " / ".join("?" if v is None else f"{v:.2f}" for v in cpu.values())


def _meets(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "NO")


def print_replication(figures: dict[str, Any]) -> None:
    """A readable table of `run_replication`'s figures, each with its target."""
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []

    def row(label: str, value: str = "", target: str = "", ok: bool | None = None) -> None:
        rows.append((label, value, target, _meets(ok)))

    def failed(label: str, part: Figures) -> bool:
        if not part:
            row(label, "n/a")
            return True
        if "error" in part:
            row(label, "error")
            notes.append(f"{label.strip()}: {part['error']}")
            return True
        return False

    nodes = figures.get("nodes", NODES)
    tp = figures.get("throughput", {})
    label = f"throughput: committed + applied on all {nodes} replicas"
    if not failed(label, tp):
        row(
            label,
            f"{tp['ops_s']:,.0f} ops/s",
            f">= {TARGET_OPS_S:,} ops/s",
            tp["ops_s"] >= TARGET_OPS_S,
        )
        row(f"  {tp['ops']:,} ops from {tp['nodes']} nodes in", f"{tp['seconds']:.2f} s")
        row("  acknowledged to the submitters", f"{tp['acked_ops_s']:,.0f} ops/s")
        row("  group commits", f"{tp['commits']:,} ({tp['ops_per_commit']:,.0f} ops each)")
        row("  outbox-full waits / refused", f"{tp['outbox_full_waits']:,} / {tp['refused']:,}")
        row("  CPU s: controller / each node", _cpu_text(tp["cpu_s"]))
    lat = figures.get("latency", {})
    label = "latency, submit -> applied on every replica"
    if not failed(label, lat):
        row(
            f"latency at {lat['rate']:,} ops/s for {lat['seconds']:g} s, submit -> applied",
            f"{lat['pairs']:,} pairs",
        )
        row("  p50", f"{lat['p50_ms']:.2f} ms")
        row("  p90", f"{lat['p90_ms']:.2f} ms")
        row(
            "  p99",
            f"{lat['p99_ms']:.2f} ms",
            f"< {TARGET_P99_MS:g} ms",
            lat["p99_ms"] < TARGET_P99_MS,
        )
        row("  max", f"{lat['max_ms']:.2f} ms")
        row(
            "  submit -> acknowledged (durable), p50 / p99",
            f"{lat['ack_p50_ms']:.2f} / {lat['ack_p99_ms']:.2f} ms",
        )
    floor = figures.get("commit_floor", {})
    label = "  floor: one sqlite3 FULL commit, p50 / p99"
    if not failed(label, floor):
        row(label, f"{floor['p50_ms']:.2f} / {floor['p99_ms']:.2f} ms")
    conv = figures.get("convergence", {})
    if not failed("replicas converged (digest at head)", conv):
        row(
            "replicas converged (digest at head)",
            str(conv["converged"]),
            "True",
            conv["converged"] is True,
        )
    cu = figures.get("catchup", {})
    if not failed("catch-up", cu):
        row(
            f"catch-up of a fresh replica, {cu['events']:,}-event log",
            f"built in {cu['build_s']:.1f} s",
        )
        for mode, text, targeted in (
            ("tail", f"tail path (fetches of {cu['fetch_chunk']:,}), in memory", True),
            ("snapshot", "snapshot path (newest snapshot + tail), in memory", True),
            ("tail_file", "tail path, into a replica file (--db)", False),
        ):
            part = cu.get(mode, {"error": "not measured"})
            if not failed(f"  {text}", part):
                row(
                    f"  {text}",
                    f"{part['seconds']:.3f} s",
                    f"< {TARGET_CATCHUP_S:g} s" if targeted else "",
                    part["seconds"] < TARGET_CATCHUP_S if targeted else None,
                )
                used = "snapshot used" if part["snapshot_used"] else "no snapshot"
                row("    CPU s: controller / replica", _cpu_text(part["cpu_s"]))
                row(
                    f"    applied to seq {part['applied']:,}",
                    f"from {part['first_applied']}, {used}",
                )
    row("baselines, same run")
    up = figures.get("upstream", {})
    label = "  upstream-style Bus0 hub, delivered"
    if not failed(label, up):
        row(label, f"{up['delivered_msgs_s']:,.0f} msgs/s")
        row(
            "  upstream-style Bus0 hub, lost",
            f"{up['lost']:,} of {up['sent']:,} ({up['loss_pct']:.1f} %)",
        )
    if "lost" in tp:
        row("  cuelog, lost", f"{tp['lost']:,} of {tp['ops']:,}", "0", tp["lost"] == 0)
    raw = figures.get("raw", {})
    label = "  raw pynng (batched frames, JSON, no log)"
    if not failed(label, raw):
        row(label, f"{raw['ops_s']:,.0f} ops/s")
    ratios = figures.get("ratios", {})
    row("ratios")
    vs_up = ratios.get("cuelog_vs_upstream")
    vs_raw = ratios.get("cuelog_vs_raw")
    row(
        "  cuelog / upstream-style delivered",
        "n/a" if vs_up is None else f"{vs_up:,.0f}x",
        f">= {TARGET_UPSTREAM_RATIO:g}x",
        None if vs_up is None else vs_up >= TARGET_UPSTREAM_RATIO,
    )
    row("  cuelog / raw pynng ceiling", "n/a" if vs_raw is None else f"{vs_raw:.2f}")

    print_table(
        f"cuelog replication bench: {nodes} submitting nodes = {nodes} replicas, controller log "
        f"synchronous=FULL, {figures.get('transport', '')}, {figures.get('cpus')} CPUs "
        f"(load average {figures.get('loadavg_1m', 0.0):.1f} at the start)"
        f"{' (quick)' if figures.get('quick') else ''}",
        rows,
        notes,
    )
    if "elapsed_s" in figures:
        print(
            f"(whole run {figures['elapsed_s']:.1f} s; figures vary with the machine: "
            "compare the ratios)"
        )


def print_table(title: str, rows: list[tuple[str, str, str, str]], notes: list[str]) -> None:
    """A bench's figures as an aligned table (measure, figure, target, meets), then errors."""
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    head = ("measure", "figure", "target", "meets")
    print(title)
    print(f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}}  {head[3]}")
    for label, value, target, ok in rows:
        print(f"{label:<{widths[0]}}  {value:>{widths[1]}}  {target:<{widths[2]}}  {ok}".rstrip())
    for note in notes:
        print(f"error: {note}")
