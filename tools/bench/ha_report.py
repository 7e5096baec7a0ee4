"""The printed report of ``cuelog bench ha``: its table of rows (see `tools.bench.table`).

Takeover is held to the issue's targets (p99 at most 3 s for a process death, 8 s for a host
death, at a 2 s lease; ETC Eos's backup takes about 5 s). The synchronous standby's cost is
its latency beside the same leader acknowledging alone, measured in the same run.
"""

from __future__ import annotations

from typing import Final

from tools.bench.common import Figures
from tools.bench.table import Ratio, Row, Section, Target, print_report

PROCESS_P99_S: Final = 3.0
HOST_P99_S: Final = 8.0


def _takeover(at: str, what: str, limit: float) -> Section:
    return Section(
        at,
        what,
        (
            Row(f"takeover after a {what}, p50", "{p50_s:.2f}", "s"),
            Row(
                f"takeover after a {what}, p99 ({{n}} rounds)",
                "{p99_s:.2f}",
                "s",
                target=Target("<=", limit, " s", key="p99_s"),
            ),
            Row("  worst", lambda f: f"{f['max_ms'] / 1000:.2f}", "s"),
        ),
    )


SECTIONS: Final = (
    Section(
        "latency",
        "submit -> ack",
        (
            Row(
                "submit -> ack with a synchronous standby, p50",
                "{sync[p50_ms]:.2f}",
                "ms",
                baseline="{alone[p50_ms]:.2f} ms alone",
                ratio=Ratio("sync.p50_ms", "alone.p50_ms"),
                ratio_unit="x",
            ),
            Row(
                "submit -> ack with a synchronous standby, p99",
                "{sync[p99_ms]:.2f}",
                "ms",
                baseline="{alone[p99_ms]:.2f} ms alone",
                ratio=Ratio("sync.p99_ms", "alone.p99_ms"),
                ratio_unit="x",
            ),
        ),
    ),
    _takeover("process", "process death", PROCESS_P99_S),
    _takeover("host", "host death", HOST_P99_S),
)


def print_ha(figures: Figures) -> None:
    """The ha suite's table."""
    print_report(
        f"cuelog ha bench: two candidates, a three-member etcd, a {figures.get('ttl_s')} s "
        "lease; takeover = kill -> the writer's first acknowledgement from the new leader; "
        "baseline: the same leader acknowledging alone",
        SECTIONS,
        figures,
    )
