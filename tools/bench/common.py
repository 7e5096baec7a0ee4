"""What every bench suite shares: the figures type, phase errors, summaries of timings.

A suite runs in *phases*; a phase that cannot finish (a deadline passed, a child died) raises
`PhaseError`, and `guard` turns that into an ``{"error": why}`` figure so the rest of the run
still reports. `run_phases` runs a suite's phases in order behind one progress bar.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from tqdm import tqdm

from eventlog.logctx import ComponentLog
from tools.demo import free_port_pair

Figures = dict[str, Any]
Message = dict[str, Any]
#: one phase of a suite: (its key in the figures, what the progress bar says, the phase)
Phase = tuple[str, str, Callable[[], Figures]]

#: how long a child process has to say it is ready
START_TIMEOUT: Final = 20.0
#: how long a child has to stop on request before it is terminated
STOP_GRACE: Final = 3.0

log = ComponentLog("cuelog.bench")


class PhaseError(Exception):
    """A phase could not finish (a timeout, a child that failed): its figure is an error."""


def guard(fn: Callable[[], Figures]) -> Figures:
    """A phase's figures, or ``{"error": why}`` if it could not finish."""
    try:
        return fn()
    except PhaseError as exc:
        return {"error": str(exc)}
    except Exception as exc:
        log.exception("bench phase failed")
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_phases(phases: Sequence[Phase], figures: Figures) -> None:
    """Run each phase under `guard` into ``figures[key]``; note the whole run's seconds."""
    bar = tqdm(total=len(phases), unit="phase", disable=not sys.stderr.isatty())
    started = time.perf_counter()
    try:
        for key, desc, phase in phases:
            bar.set_description(desc)
            figures[key] = guard(phase)
            bar.update(1)
    finally:
        bar.close()
    figures["elapsed_s"] = time.perf_counter() - started


def timeit(fn: Callable[[], object]) -> float:
    """Seconds `fn()` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def ms(values: Sequence[float]) -> Figures:
    """Count, p50 / p99 / max in milliseconds of durations in seconds."""
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def ratio(top: Any, bottom: Any) -> float | None:
    """``top / bottom`` when both are numbers and `bottom` is positive, else None."""
    if not isinstance(top, int | float) or not isinstance(bottom, int | float) or bottom <= 0:
        return None
    return float(top) / float(bottom)


def delta(before: float | None, after: float | None) -> float | None:
    """``after - before`` to the millisecond, None if either is unknown."""
    return None if before is None or after is None else round(after - before, 3)


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def loopback_address() -> str:
    """A controller address on loopback whose port and port + 1 are free."""
    return f"tcp://127.0.0.1:{free_port_pair()}"


def log_tail(path: Path) -> str:
    """`` (its log ends: ...)`` with the last line of a child's log file, or ``""``."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f" (its log ends: {lines[-1].strip()[:300]})" if lines else ""


def machine() -> Figures:
    """What a suite's figures say about the machine they were measured on."""
    return {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
