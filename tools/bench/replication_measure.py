"""``cuelog bench replication``: replication figures and same-run baselines. Nothing asserted.

Every role runs in its own process (`tools.bench.replication_roles`, started and stopped by
`tools.bench.replication_procs.Children`). Times are ``time.monotonic()`` (CLOCK_MONOTONIC is
one clock for every process on the host), so a submit in one process and an apply in another
compare. Measured in one run, on one machine, all over TCP on loopback (as a rig is wired):

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
- baselines (`tools.bench.replication_baselines`): an **upstream-style** NNG Bus0 hub under
  the same load, and the **raw pynng** ceiling: the same operations in batched REQ/REP submits
  and PUB/SUB frames of the same shape, but no validation, no log and no reducer.

Every wait has a deadline: a stuck phase becomes an ``error`` figure, and every child is
stopped (a stop command, then SIGTERM, then SIGKILL) before the phase returns. The table that
prints the figures is `tools.bench.replication_report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from replicas.outbox import SUBMIT_BATCH
from replicas.protocol import MAX_FRAME_EVENTS
from replicas.serving import DEFAULT_TAIL_LIMIT
from tools.bench.baselines import commit_floor
from tools.bench.common import (
    START_TIMEOUT,
    Figures,
    Phase,
    PhaseError,
    guard,
    loopback_address,
    machine,
    percentile,
    run_phases,
)
from tools.bench.data import build_big_log
from tools.bench.replication_baselines import UPSTREAM_SLEEP
from tools.bench.replication_procs import Children
from tools.bench.replication_roles import BENCH_PREFIX
from tools.bench.table import Ratio

NODES: Final = 4
#: how long the upstream-style hub keeps counting after its senders finished
UPSTREAM_WINDOW: Final = 2.0
#: a controller tail limit no fetch exceeds (the tail path) and a small one (snapshot path)
TAIL_PATH_LIMIT: Final = 1_000_000_000
SNAPSHOT_PATH_LIMIT: Final = 1_000
SNAPSHOT_EVERY: Final = 1_000
#: how the ratios are formed: cuelog's throughput over each baseline's
RATIOS: Final = {
    "cuelog_vs_upstream": Ratio("throughput.ops_s", "upstream.delivered_msgs_s"),
    "cuelog_vs_raw": Ratio("throughput.ops_s", "raw.ops_s"),
}


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


def _bench_raw(scratch: Path, sizes: Sizes) -> Figures:
    names = [f"{BENCH_PREFIX}raw-{i}" for i in range(NODES)]
    address = loopback_address()
    total = sizes.total
    with Children(scratch) as kids:
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
    address = loopback_address()
    total = sizes.total
    with Children(scratch) as kids:
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


def _throughput(kids: Children, names: list[str], sizes: Sizes) -> Figures:
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
    cpu = kids.cpu_since(cpu_before)
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


def _latency(kids: Children, names: list[str], sizes: Sizes) -> Figures:
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
        "p50_ms": percentile(values, 0.50) * 1000,
        "p90_ms": percentile(values, 0.90) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "max_ms": values[-1] * 1000,
        "ack_p50_ms": percentile(acks, 0.50) * 1000,
        "ack_p99_ms": percentile(acks, 0.99) * 1000,
    }


def _converged(kids: Children, names: list[str]) -> Figures:
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
    address = loopback_address()
    out: Figures = {}
    with Children(scratch) as kids:
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
        out["throughput"] = guard(lambda: _throughput(kids, names, sizes))
        if "error" in out["throughput"]:
            out["latency"] = {"error": "skipped: the throughput phase failed"}
            out["check"] = {"error": "skipped: the throughput phase failed"}
        else:
            time.sleep(0.5)
            out["latency"] = guard(lambda: _latency(kids, names, sizes))
            out["check"] = guard(lambda: _converged(kids, names))
        kids.stop(names)
        kids.stop(["controller"])
    out["forced_stops"] = kids.forced
    return out


def _catch_up(scratch: Path, db: Path, mode: str, tail_limit: int, on_file: bool) -> Figures:
    """Time a fresh replica (in memory, or in its own log file) joining the log at `db`."""
    address = loopback_address()
    with Children(scratch) as kids:
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
        cpu = kids.cpu_since(cpu_before)
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
    """Build the big log, then time a fresh replica joining it by each path."""
    db = scratch / "catchup.db"
    started = time.perf_counter()
    build_big_log(db, sizes.catchup_events, snapshot_every=SNAPSHOT_EVERY)
    out: Figures = {
        "events": sizes.catchup_events,
        "build_s": time.perf_counter() - started,
        "snapshot_every": SNAPSHOT_EVERY,
        "fetch_chunk": MAX_FRAME_EVENTS,
    }
    out["tail"] = guard(lambda: _catch_up(scratch, db, "tail", TAIL_PATH_LIMIT, False))
    out["snapshot"] = guard(lambda: _catch_up(scratch, db, "snapshot", SNAPSHOT_PATH_LIMIT, False))
    out["tail_file"] = guard(lambda: _catch_up(scratch, db, "tail-file", TAIL_PATH_LIMIT, True))
    return out


def run_replication(quick: bool, scratch: Path) -> Figures:
    """Run every replication measurement (see the module docstring); return the figures."""
    sizes = Sizes.pick(quick)
    figures: Figures = {
        "suite": "replication",
        "quick": quick,
        "transport": "tcp loopback",
        "nodes": NODES,
        "ops": sizes.total,
        **machine(),
    }
    phases: list[Phase] = [
        ("commit_floor", "commit floor", lambda: commit_floor(scratch, 200 if quick else 500)),
        ("raw", "raw pynng", lambda: _bench_raw(scratch, sizes)),
        ("cluster", "cuelog cluster", lambda: _bench_cluster(scratch, sizes)),
        ("upstream", "upstream-style bus", lambda: _bench_upstream(scratch, sizes)),
        ("catchup", "catch-up", lambda: _bench_catchup(scratch, sizes)),
    ]
    run_phases(phases, figures)
    cluster = figures.pop("cluster")
    if "error" in cluster:
        cluster = {"throughput": cluster, "latency": cluster, "check": cluster}
    figures["throughput"] = cluster["throughput"]
    figures["latency"] = cluster["latency"]
    figures["convergence"] = cluster["check"]
    figures["ratios"] = {key: ratio.of(figures) for key, ratio in RATIOS.items()}
    return figures
