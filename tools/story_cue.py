"""The story of one cue: ``replay cue LOG CUE``. Why did it play, or why did it not?

`cue_story` reads only the rows that touch the cue (its own events, and commands or statuses
whose data names it), follows its runs, and for each run tells the commands in the minute
before it, whether the GO that started it was accepted (and if refused, why, with who was
armed), which nodes were online and which of them reported firing that GO and how late. A cue
that never started gets the same account of the GOs that came while it was the next cue.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from eventlog import Event, EventLog
from tools.formats import clock, event_json, event_line
from tools.show import (
    CUTTING,
    FIRED,
    CueRun,
    Show,
    cut_short,
    follow_cue,
    lives,
    seed,
    with_reasons,
)

#: how much of an event's data a story line shows
DATA_WIDTH: Final = 80
#: the rows whose data may name a cue (`_mentions` says whether it does)
_MAY_MENTION: Final = "(type = 'status' OR type = 'command') AND data LIKE ? ESCAPE '\\'"
Rows = list[tuple[Event, str | None]]


def _line(event: Event, reason: str | None, tz: dt.tzinfo) -> str:
    return event_line(event, reason, tz, data_width=DATA_WIDTH)


def _mentions(event: Event, cue: str) -> bool:
    """Whether `event`'s data names `cue`: as a value (``nextcue``, ``setnextcue``), as the
    first word of one (``cue_enabled`` "<cue> <0|1>"), or in a load's list of cues."""
    data = event.op.data or {}
    for value in data.values():
        if value == cue or (isinstance(value, str) and value.split(" ")[0] == cue):
            return True
        if isinstance(value, list):
            for item in value:
                if item == cue or (isinstance(item, dict) and item.get("id") == cue):
                    return True
    return False


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere (its own ``%``, ``_`` and ``\\`` escaped)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def is_cue(elog: EventLog, name: str) -> bool:
    """Whether this log knows a cue called `name` (it played, was listed by a load, or was
    the next cue): a number can be a cue id as well as a seq."""
    if elog.select("SELECT 1 FROM events WHERE target = ? AND type = 'cue' LIMIT 1", (name,)):
        return True
    if name in elog.state_at(elog.head).cues:
        return True
    rows = elog.events_where(_MAY_MENTION, (_like(name),))
    return any(_mentions(event, name) for event, _ in rows)


def _touching(elog: EventLog, cue: str) -> Rows:
    """Every event that touched `cue`, with its no-op reason: its own, and those naming it."""
    rows = elog.events_where(f"target = ? OR ({_MAY_MENTION})", (cue, _like(cue)))
    return with_reasons(elog, [(e, r) for e, r in rows if e.op.target == cue or _mentions(e, cue)])


def _follow_runs(elog: EventLog, show: Show, cue: str, touched: Rows) -> None:
    """`cue`'s runs into `show`: from its own events (the GO before each start), then cut at
    the first accepted STOP (LOAD, UNLOAD) while it played, whatever came next."""
    playing: dict[str, CueRun] = {}
    if elog.base_seq:  # it may have been playing when this replica's file begins
        seeded = Show(elog.log_id, show.tz, show.tz_name)
        seed(elog, seeded, playing, elog.state_at(elog.base_seq), frozenset({cue}))
        show.runs.extend(seeded.runs)
    last_go: int | None = None
    for event, reason in touched:
        if event.op.type.value == "cue":
            go = _last_go_before(elog, event.seq)
            last_go = go if go is not None else last_go
            follow_cue(show, playing, event, reason, last_go)
    marks = ", ".join("?" * len(CUTTING))
    for run in show.runs:
        if run.outcome == "refused":
            continue
        last = run.end_seq if run.end_seq is not None else elog.head + 1
        cuts = with_reasons(
            elog,
            elog.events_where(
                f"seq > ? AND seq <= ? AND type = 'command' AND target IN ({marks})",
                (run.start_seq, last, *CUTTING),
            ),
        )
        cut = next((e for e, r in cuts if r is None), None)
        if cut is not None:
            cut_short(run, cut)


def cue_story(
    elog: EventLog, cue: str, tz: dt.tzinfo, tz_name: str
) -> tuple[list[str], dict[str, Any]]:
    """Every event that touched `cue`, the commands around each of its runs, which nodes were
    online and whether they fired the GO (and how late): why it played, or why it did not.
    Returns the story's lines and the same facts for JSON."""
    show = lives(elog, tz, tz_name)
    touched = _touching(elog, cue)
    lines: list[str] = [f"cue {cue}  (times in {tz_name})"]
    facts: dict[str, Any] = {
        "cue": cue,
        "zone": tz_name,
        "events": [event_json(e, r) for e, r in touched],
        "runs": [],
    }
    if not touched:
        lines.append(f"no event of this log touches cue {cue}")
        return lines, facts
    _follow_runs(elog, show, cue, touched)
    lines.append("")
    lines.append("what touched it:")
    lines.extend("  " + _line(event, reason, tz) for event, reason in touched)
    for run in show.runs:
        end = (
            f"{clock(run.end_ts, tz)} (seq {run.end_seq})"
            if run.end_ts is not None
            else "the end of the log"
        )
        lines.append("")
        lines.append(
            f"run on {run.node or '?'}: {run.outcome.upper()} from {clock(run.start_ts, tz)} "
            f"(seq {run.start_seq}) to {end}: {run.why or 'still playing'}"
        )
        facts["runs"].append({**run.__dict__})
        lines.extend(_around(elog, show, run.start_seq, run.start_ts, run.go_seq, tz))
    if not show.runs:
        lines.append("")
        lines.append(f"cue {cue} never started.")
        nexts = [e for e, _ in touched if e.op.target == "nextcue"]
        for event in nexts[-3:]:
            lines.append(f"  it was the next cue from {clock(event.ts, tz)} (seq {event.seq})")
            go_event = _first_go_after(elog, event.seq)
            if go_event is None:
                lines.append("  no GO came after that")
                continue
            lines.extend(_around(elog, show, go_event.seq, go_event.ts, go_event.seq, tz))
    return lines, facts


def _last_go_before(elog: EventLog, seq: int) -> int | None:
    """The last GO before `seq` that the reducer accepted (a refused GO started nothing)."""
    while True:
        rows = elog.events_where(
            "seq IN (SELECT seq FROM events WHERE seq < ? AND type = 'command' AND "
            "target = 'go' ORDER BY seq DESC LIMIT 20)",
            (seq,),
        )
        if not rows:
            return None
        for event, reason in reversed(with_reasons(elog, rows)):
            if reason is None:
                accepted: int = event.seq
                return accepted
        seq = rows[0][0].seq


def _first_go_after(elog: EventLog, seq: int) -> Event | None:
    rows = elog.events_where("seq > ? AND type = 'command' AND target = 'go'", (seq,), limit=1)
    return rows[0][0] if rows else None


def _around(
    elog: EventLog, show: Show, seq: int, ts: float, go_seq: int | None, tz: dt.tzinfo
) -> list[str]:
    """The commands in the minute before `ts`, the GO's verdict and who fired it, and which
    nodes were online."""
    lines: list[str] = []
    commands = with_reasons(
        elog, elog.events_where("type = 'command' AND ts >= ? AND seq <= ?", (ts - 60, seq))
    )
    if commands:
        lines.append("  commands in the minute before:")
        for event, reason in commands[-8:]:
            lines.append("    " + _line(event, reason, tz))
    if go_seq is not None:
        lines.extend(_go_verdict(elog, show, go_seq, tz))
    online_now = sorted(n for n, life in show.nodes.items() if life.online_at(ts))
    offline = sorted(n for n, life in show.nodes.items() if not life.online_at(ts))
    lines.append(
        f"  online then: {', '.join(online_now) or 'none'}"
        + (f"; offline: {', '.join(offline)}" if offline else "")
    )
    return lines


def _go_verdict(elog: EventLog, show: Show, go_seq: int, tz: dt.tzinfo) -> list[str]:
    """Whether the GO at `go_seq` was accepted: if refused, why and who was armed; if
    accepted, which nodes reported firing it and how late, and which online ones did not."""
    go_event, go_reason = with_reasons(elog, elog.events_where("seq = ?", (go_seq,)))[0]
    when = f"the GO at {clock(go_event.ts, tz)} (seq {go_seq})"
    if go_reason is not None:
        state = elog.state_at(go_seq - 1)
        return [
            f"  {when} was REFUSED: {go_reason}; armed={state.engine['armed']!r}, required "
            f"{state.required}, armed nodes {sorted(state.armed_nodes)}"
        ]
    reports = elog.events_where(
        "type = 'status' AND target = ? AND seq > ? AND seq <= ?",
        (FIRED, go_seq, go_seq + 100_000),
    )
    by_node = {
        e.op.sender: (e.op.data or {}).get("delay_ms")
        for e, _ in reports
        if (e.op.data or {}).get("seq") == go_seq
    }
    online = {n for n, life in show.nodes.items() if life.online_at(go_event.ts)}
    out = [f"  {when} was accepted"]
    for node in sorted(online | set(by_node)):
        if node not in by_node:
            out.append(f"    {node:<16} online, but reported no firing")
            continue
        delay = by_node[node]
        late = (
            f"{delay:.1f} ms after the commit"
            if isinstance(delay, int | float)
            else "(delay unknown)"
        )
        out.append(f"    {node:<16} fired it {late}")
    return out
