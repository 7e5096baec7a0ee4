"""The story of one node: ``replay node LOG NODE``.

`node_story` tells when the node was online (joins, leaves and why, restarts with how long it
was away and how it caught up), how many accepted commands came while it was online, which of
them it reported firing and how late, which it never reported, and what else it reported.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from eventlog import EventLog
from tools.formats import clock
from tools.show import FIRED, NodeLife, lives, with_reasons


def node_story(
    elog: EventLog, node: str, tz: dt.tzinfo, tz_name: str
) -> tuple[list[str], dict[str, Any]]:
    """A node's joins, leaves and restarts, the commands it got and fired, what it reported."""
    life = lives(elog, tz, tz_name).nodes.get(node) or NodeLife(node)
    own = elog.events_where("sender = ?", (node,))
    for event, _ in own:
        op = event.op
        if op.type.value == "status":
            life.reported[op.target] += 1
            if op.target == FIRED:
                life.note_fired(op.data or {})
        else:
            life.reported[f"{op.type.value}/{op.action.value}"] += 1
    lines = [f"node {node}  (times in {tz_name})"]
    facts: dict[str, Any] = {
        "node": node,
        "zone": tz_name,
        "periods": [],
        "restarts": life.restarts,
    }
    if not life.periods and not own:
        lines.append(f"node {node} never appears in this log")
        return lines, facts
    for p in life.periods:
        left = (
            f"{clock(p.left_ts, tz)} (seq {p.left_seq}, {p.leave_reason})"
            if p.left_ts is not None
            else "the end of the log"
        )
        lines.append(
            f"online {clock(p.joined_ts, tz)} (seq {p.joined_seq}, {p.join_reason}) .. {left}"
        )
        facts["periods"].append({**p.__dict__})
    for r in life.restarts:
        lines.append(
            f"restart at {clock(r['ts'], tz)} (seq {r['seq']}): away {r['away_s']} s, resumed "
            f"from seq {r['resumed_from']} by {r['catchup']}"
        )
    commands = with_reasons(elog, elog.events_where("type = 'command'"))
    got = [(e, r) for e, r in commands if r is None and life.online_at(e.ts)]
    refused = [(e, r) for e, r in commands if r is not None]
    delays = sorted(d for d in life.fired.values() if isinstance(d, int | float))
    lines.append(
        f"commands while online: {len(got)} accepted, fired {len(life.fired)}"
        + (
            f" (delay p50 {delays[len(delays) // 2]:.1f} ms, max {delays[-1]:.1f} ms)"
            if delays
            else ""
        )
        + (f"; {len(refused)} refused commands in the log" if refused else "")
    )
    missing = [e for e, _ in got if e.seq not in life.fired]
    for event in missing[:10]:
        lines.append(
            f"  not reported fired: {event.op.target.upper()} at {clock(event.ts, tz)} "
            f"(seq {event.seq})"
        )
    if len(missing) > 10:
        lines.append(f"  ... and {len(missing) - 10} more")
    if life.reported:
        lines.append("reported: " + ", ".join(f"{k} {v}" for k, v in life.reported.most_common()))
    facts.update(
        fired={str(k): v for k, v in life.fired.items()},
        not_fired=[e.seq for e in missing],
        reported=dict(life.reported),
    )
    return lines, facts
