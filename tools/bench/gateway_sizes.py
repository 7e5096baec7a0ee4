"""How big each phase of ``cuelog bench gateway`` is, quick or not, and the counts it fixes.

Every gateway module reads its sizes from here, so the suite's shape is in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: lean clients in the fan-out phase
CLIENTS: Final = 50
#: background operations a second in the loaded latency phase
LOAD_RATE: Final = 5_000
#: the background load is submitted in this many batches a second
LOAD_BATCHES_S: Final = 100
#: fan-out appenders in flight at once (their appends are group-committed), and their batch
APPENDERS: Final = 4
FAN_BATCH: Final = 50
#: the node replica whose command callback is timed, and the background load's sender
LATENCY_NODE: Final = "bench-node"
LOAD_NODE: Final = "bench-load"
WARMUP_COMMANDS: Final = 20


@dataclass(frozen=True, slots=True)
class Sizes:
    quick: bool
    cues: int
    channels: int
    dump_repeats: int
    connects: int
    ws_connects: int
    big_commands: int
    fan_events: int
    commands: int
    interval: float
    round_trips: int
    commits: int

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                quick=True,
                cues=10_000,
                channels=1_000,
                dump_repeats=5,
                connects=2,
                ws_connects=1,
                big_commands=30,
                fan_events=500,
                commands=120,
                interval=0.01,
                round_trips=200,
                commits=100,
            )
        return cls(
            quick=False,
            cues=10_000,
            channels=1_000,
            dump_repeats=15,
            connects=15,
            ws_connects=7,
            big_commands=200,
            fan_events=5_000,
            commands=1_000,
            interval=0.01,
            round_trips=1_000,
            commits=300,
        )
