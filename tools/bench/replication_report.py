"""The printed report of ``cuelog bench replication``: its table of rows and its targets.

Each row reads one figure of `tools.bench.replication_measure`; the baselines (the disk's
commit floor, the upstream-style bus, the raw pynng ceiling) sit beside or under the figure
they bound, and the ratios are formed by `RATIOS` there, as the JSON figures are.
"""

from __future__ import annotations

from typing import Final

from tools.bench.common import Figures
from tools.bench.replication_measure import NODES, RATIOS
from tools.bench.table import Row, Section, Target, print_report, whole_run

TARGET_OPS_S: Final = 20_000
TARGET_P99_MS: Final = 5.0
TARGET_CATCHUP_S: Final = 1.0
TARGET_UPSTREAM_RATIO: Final = 100.0


def _cpu_text(cpu: dict[str, float | None]) -> str:
    return " / ".join("?" if v is None else f"{v:.2f}" for v in cpu.values())


def _catchup(mode: str, text: str, targeted: bool) -> Section:
    """The rows of one way a fresh replica catches up."""
    target = Target("<", TARGET_CATCHUP_S, " s", key="seconds") if targeted else None
    return Section(
        f"catchup.{mode}",
        f"  {text}",
        (
            Row(f"  {text}", "{seconds:.3f}", "s", target=target),
            Row("    CPU s: controller / replica", lambda f: _cpu_text(f["cpu_s"])),
            Row(
                "    applied to seq {applied:,}",
                lambda f: (
                    f"from {f['first_applied']}, "
                    + ("snapshot used" if f["snapshot_used"] else "no snapshot")
                ),
            ),
        ),
    )


SECTIONS: Final = (
    Section(
        "throughput",
        f"throughput: committed + applied on all {NODES} replicas",
        (
            Row(
                "throughput: committed + applied on all {replicas} replicas",
                "{ops_s:,.0f}",
                "ops/s",
                baseline="{top[raw][ops_s]:,.0f} ops/s raw pynng",
                target=Target(">=", TARGET_OPS_S, " ops/s", key="ops_s"),
            ),
            Row("  {ops:,} ops from {nodes} nodes in", "{seconds:.2f}", "s"),
            Row("  acknowledged to the submitters", "{acked_ops_s:,.0f}", "ops/s"),
            Row("  group commits", "{commits:,} ({ops_per_commit:,.0f} ops each)"),
            Row("  outbox-full waits / refused", "{outbox_full_waits:,} / {refused:,}"),
            Row("  CPU s: controller / each node", lambda f: _cpu_text(f["cpu_s"])),
        ),
    ),
    Section(
        "latency",
        "latency, submit -> applied on every replica",
        (
            Row(
                "latency at {rate:,} ops/s for {seconds:g} s, submit -> applied",
                "{pairs:,} pairs",
            ),
            Row("  p50", "{p50_ms:.2f}", "ms"),
            Row("  p90", "{p90_ms:.2f}", "ms"),
            Row(
                "  p99",
                "{p99_ms:.2f}",
                "ms",
                target=Target("<", TARGET_P99_MS, " ms", key="p99_ms"),
            ),
            Row("  max", "{max_ms:.2f}", "ms"),
            Row(
                "  submit -> acknowledged (durable), p50 / p99",
                "{ack_p50_ms:.2f} / {ack_p99_ms:.2f}",
                "ms",
            ),
        ),
    ),
    Section(
        "commit_floor",
        "  floor: one sqlite3 FULL commit, p50 / p99",
        (Row("  floor: one sqlite3 FULL commit, p50 / p99", "{p50_ms:.2f} / {p99_ms:.2f}", "ms"),),
    ),
    Section(
        "convergence",
        "replicas converged (digest at head)",
        (
            Row(
                "replicas converged (digest at head)",
                "{converged}",
                target=Target("==", True, key="converged"),
            ),
        ),
    ),
    Section(
        "catchup",
        "catch-up",
        (Row("catch-up of a fresh replica, {events:,}-event log", "built in {build_s:.1f} s"),),
    ),
    _catchup("tail", "tail path (fetches of {top[catchup][fetch_chunk]:,}), in memory", True),
    _catchup("snapshot", "snapshot path (newest snapshot + tail), in memory", True),
    _catchup("tail_file", "tail path, into a replica file (--db)", False),
    Section("", "baselines", (Row("baselines, same run"),)),
    Section(
        "upstream",
        "  upstream-style Bus0 hub, delivered",
        (
            Row("  upstream-style Bus0 hub, delivered", "{delivered_msgs_s:,.0f}", "msgs/s"),
            Row(
                "  upstream-style Bus0 hub, lost",
                "{lost:,} of {sent:,} ({loss_pct:.1f} %)",
            ),
        ),
    ),
    Section(
        "throughput",
        "  cuelog, lost",
        (Row("  cuelog, lost", "{lost:,} of {ops:,}", target=Target("==", 0, key="lost")),),
        when="lost",
    ),
    Section(
        "raw",
        "  raw pynng (batched frames, JSON, no log)",
        (Row("  raw pynng (batched frames, JSON, no log)", "{ops_s:,.0f}", "ops/s"),),
    ),
    Section(
        "",
        "ratios",
        (
            Row("ratios"),
            Row(
                "  cuelog / upstream-style delivered",
                "{throughput[ops_s]:,.0f} / {upstream[delivered_msgs_s]:,.0f}",
                ratio=RATIOS["cuelog_vs_upstream"],
                ratio_format=",.0f",
                ratio_unit="x",
                target=Target(">=", TARGET_UPSTREAM_RATIO, "x", key="ratio"),
            ),
            Row(
                "  cuelog / raw pynng ceiling",
                "{throughput[ops_s]:,.0f} / {raw[ops_s]:,.0f}",
                ratio=RATIOS["cuelog_vs_raw"],
            ),
        ),
    ),
)


def print_replication(figures: Figures) -> None:
    """The replication suite's table, each figure with its target and baseline."""
    nodes = figures.get("nodes", NODES)
    print_report(
        f"cuelog replication bench: {nodes} submitting nodes = {nodes} replicas, controller log "
        f"synchronous=FULL, {figures.get('transport', '')}, {figures.get('cpus')} CPUs "
        f"(load average {figures.get('loadavg_1m', 0.0):.1f} at the start)"
        f"{' (quick)' if figures.get('quick') else ''}",
        SECTIONS,
        figures,
    )
    for line in whole_run(figures):
        print(line)
