"""What happened in a show, read from its log alone: the stories `replay` tells.

`read_show` walks the log once (folding it, so every no-op carries its reason even in files
that did not record reasons) and returns a `Show`: each node's online periods and restarts,
each run of each cue with its outcome, the commands with whether they were refused, and which
nodes reported firing each command and how late. `replay info`, `node`, `cue` and `timeline`
are views of it; `cue` and `info` also have fast paths that read only the rows they need.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from tqdm import tqdm

from eventlog import CONTROLLER, NODE_JOINED, NODE_LEFT, Event, EventLog, apply, dumps, restore
from eventlog.showtz import readable, zone
from eventlog.state import CueStatus, State
from eventlog.store import NOT_RECORDED

#: the status a node reports each fired command under (`replicas.node.FIRED`)
FIRED: Final = "fired"
#: outcomes of one run of a cue, in the order the timeline's legend shows them
OUTCOMES: Final = ("played", "stopped", "error", "refused", "unfinished")


@dataclass
class Period:
    """One stretch a node was online."""

    joined_seq: int
    joined_ts: float
    join_reason: str
    left_seq: int | None = None
    left_ts: float | None = None
    leave_reason: str | None = None


@dataclass
class NodeLife:
    node: str
    periods: list[Period] = field(default_factory=list)
    #: {seq, ts, away_s, resumed_from, catchup} for each restart the controller recorded
    restarts: list[dict[str, Any]] = field(default_factory=list)
    #: targets this node reported, counted
    reported: Counter[str] = field(default_factory=Counter)
    #: command seq -> delay in ms (None: the node could not tell)
    fired: dict[int, float | None] = field(default_factory=dict)

    def online_at(self, ts: float) -> bool:
        return any(
            p.joined_ts <= ts and (p.left_ts is None or ts < p.left_ts) for p in self.periods
        )


@dataclass
class CueRun:
    """One play of a cue: from its start to how it ended."""

    cue: str
    node: str
    start_seq: int
    start_ts: float
    end_seq: int | None = None
    end_ts: float | None = None
    outcome: str = "unfinished"
    #: the accepted GO that came last before it started (None: none in the log)
    go_seq: int | None = None
    #: the last progress reported (percentage)
    progress: int = 1
    why: str = ""


@dataclass
class Marker:
    """A command: GO, STOP, LOAD, ...; `refused` says why it was a no-op."""

    seq: int
    ts: float
    command: str
    sender: str
    value: Any
    refused: str | None


@dataclass
class Show:
    log_id: str
    tz: dt.tzinfo
    tz_name: str
    first_ts: float | None = None
    last_ts: float | None = None
    events: int = 0
    nodes: dict[str, NodeLife] = field(default_factory=dict)
    runs: list[CueRun] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    #: refused cue operations (an add for a cue already playing, progress for one that is not)
    refused_cue_ops: list[tuple[Event, str]] = field(default_factory=list)

    def node(self, node_id: str) -> NodeLife:
        life = self.nodes.get(node_id)
        if life is None:
            life = self.nodes[node_id] = NodeLife(node_id)
        return life


def show_zone(elog: EventLog, utc: bool = False) -> tuple[dt.tzinfo, str]:
    """The zone to show the log's times in: the one it recorded (UTC with `utc`, and this
    machine's for a file that recorded none)."""
    if utc:
        return dt.UTC, "UTC"
    if elog.show_tz and readable(elog.show_tz):
        return zone(elog.show_tz), elog.show_tz
    if elog.show_tz:
        return dt.UTC, f"UTC (the log's zone {elog.show_tz} is unknown on this machine)"
    local = dt.datetime.now().astimezone().tzinfo or dt.UTC
    return local, f"{local} (this machine's; the log records no zone)"


def read_show(
    elog: EventLog,
    *,
    after: int = 0,
    until: int | None = None,
    utc: bool = False,
    progress: bool = False,
) -> Show:
    """Walk the log (from `after` to `until`) once and tell what happened."""
    tz, tz_name = show_zone(elog, utc)
    show = Show(elog.log_id, tz, tz_name)
    start = max(after, elog.base_seq)
    snap = elog.latest_snapshot(start) if start else None
    state = restore(snap) if snap is not None else State()
    head = elog.head if until is None else min(until, elog.head)
    for event in elog.iter_events(after=state.seq, until=start):
        apply(state, event)
    playing: dict[str, CueRun] = {}
    _seed(elog, show, playing, state)
    walk = elog.iter_events(after=start, until=head)
    bar = tqdm(total=max(0, head - start), unit="ev", disable=not progress, leave=False)
    last_go: int | None = None
    for event in walk:
        bar.update(1)
        reason = apply(state, event)
        show.events += 1
        if show.first_ts is None:
            show.first_ts = event.ts
        show.last_ts = event.ts
        op = event.op
        kind = op.type.value
        data = op.data or {}
        if kind == "command":
            show.markers.append(
                Marker(event.seq, event.ts, op.target, op.sender, data.get("value"), reason)
            )
            if op.target == "go" and reason is None:
                last_go = event.seq
            if op.target == "stop" and reason is None:
                for run in playing.values():
                    _end(run, event, "stopped", "a STOP while it played")
                playing.clear()
            elif op.target in ("load", "unload") and reason is None:
                for run in playing.values():
                    _end(run, event, "stopped", f"a {op.target.upper()} while it played")
                playing.clear()
            continue
        if kind == "status" and op.sender == CONTROLLER and op.target in (NODE_JOINED, NODE_LEFT):
            _liveness(show, event, data)
            continue
        if kind == "cue":
            _cue_event(show, playing, event, reason, last_go)
            if op.sender != CONTROLLER:
                show.node(op.sender).reported[f"cue/{op.action.value}"] += 1
            continue
        if op.sender != CONTROLLER and not op.sender.startswith("ui:"):
            life = show.node(op.sender)
            life.reported[op.target if kind == "status" else f"{kind}/{op.target}"] += 1
            if kind == "status" and op.target == FIRED and isinstance(data.get("seq"), int):
                delay = data.get("delay_ms")
                life.fired[data["seq"]] = delay if isinstance(delay, int | float) else None
    bar.close()
    return show


def _seed(
    elog: EventLog,
    show: Show,
    playing: dict[str, CueRun],
    state: State,
    cues: frozenset[str] | None = None,
) -> None:
    """What was already so where the reading starts (a window of the show, or a replica that
    began from a snapshot): nodes online, and cues playing (only `cues`, when given)."""
    if not state.seq:
        return
    rows = elog.events_where("seq = ?", (state.seq,))
    ts = rows[0][0].ts if rows else (elog.time_bounds() or (0.0, 0.0))[0]
    for node, info in state.nodes.items():
        if info.get("online"):
            show.node(node).periods.append(Period(state.seq, ts, "online before"))
    for cue, info in state.cues.items():
        if CueStatus.is_playing(info["status"]) and (cues is None or cue in cues):
            started = elog.events_where("seq = ?", (info["seq"],))
            start_ts = started[0][0].ts if started else ts
            run = CueRun(cue, info.get("node", ""), info["seq"], start_ts, progress=info["status"])
            playing[cue] = run
            show.runs.append(run)


def _end(run: CueRun, event: Event, outcome: str, why: str) -> None:
    run.end_seq, run.end_ts, run.outcome, run.why = event.seq, event.ts, outcome, why


def _cue_event(
    show: Show, playing: dict[str, CueRun], event: Event, reason: str | None, last_go: int | None
) -> None:
    op = event.op
    cue = op.target
    action = op.action.value
    if reason is not None:
        show.refused_cue_ops.append((event, reason))
        if action == "add":
            run = CueRun(cue, op.sender, event.seq, event.ts, event.seq, event.ts, "refused")
            run.go_seq, run.why = last_go, reason
            show.runs.append(run)
        return
    if action == "add":
        run = CueRun(cue, op.sender, event.seq, event.ts, go_seq=last_go)
        playing[cue] = run
        show.runs.append(run)
        return
    run_or_none = playing.get(cue)
    if run_or_none is None:
        return
    run = run_or_none
    if action == "remove":
        _end(run, event, "played", "removed by its node")
        del playing[cue]
        return
    pct = (op.data or {}).get("percentage")
    if isinstance(pct, int):
        run.progress = pct
        if pct == CueStatus.DONE:
            _end(run, event, "played", "reached 100 %")
            del playing[cue]
        elif pct == CueStatus.ERROR:
            _end(run, event, "error", "its node reported an error (-1)")
            del playing[cue]


def _liveness(show: Show, event: Event, data: dict[str, Any]) -> None:
    node = data.get("node")
    if not isinstance(node, str):
        return
    life = show.node(node)
    reason = str(data.get("reason", ""))
    if event.op.target == NODE_JOINED:
        if life.periods and life.periods[-1].left_ts is None:
            return  # already online (a duplicate join)
        life.periods.append(Period(event.seq, event.ts, reason or "joined"))
        if reason == "restarted":
            life.restarts.append(
                {
                    "seq": event.seq,
                    "ts": event.ts,
                    "away_s": data.get("away_s"),
                    "resumed_from": data.get("resumed_from"),
                    "catchup": data.get("catchup"),
                }
            )
        return
    if life.periods and life.periods[-1].left_ts is None:
        period = life.periods[-1]
        period.left_seq, period.left_ts = event.seq, event.ts
        period.leave_reason = reason or "left"


# ------------------------------------------------------------------------------ formatting


def clock(ts: float, tz: dt.tzinfo, ms: bool = True) -> str:
    """``21:43:05.250`` in the show's zone."""
    text = dt.datetime.fromtimestamp(ts, tz).strftime("%H:%M:%S.%f")
    return text[:-3] if ms else text[:-7]


def stamp(ts: float, tz: dt.tzinfo) -> str:
    """``2026-11-28 21:43:05.250`` in the show's zone."""
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


# ------------------------------------------------------------------------- one cue, one node


def _reasons(
    elog: EventLog, rows: list[tuple[Event, str | None]]
) -> list[tuple[Event, str | None]]:
    """`rows` with every reason known: rows from before the file recorded reasons get theirs
    by folding up to them (from the nearest snapshot)."""
    out: list[tuple[Event, str | None]] = []
    for event, reason in rows:
        if reason == NOT_RECORDED:
            state = elog.state_at(event.seq - 1)
            reason = apply(state, event)
        out.append((event, reason))
    return out


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


def is_cue(elog: EventLog, name: str) -> bool:
    """Whether this log knows a cue called `name` (it played, was listed by a load, or was
    the next cue): a number can be a cue id as well as a seq."""
    if elog.select("SELECT 1 FROM events WHERE target = ? AND type = 'cue' LIMIT 1", (name,)):
        return True
    if name in elog.state_at(elog.head).cues:
        return True
    rows = elog.events_where(
        "(type = 'status' OR type = 'command') AND data LIKE ? ESCAPE '\\'", (_like(name),)
    )
    return any(_mentions(event, name) for event, _ in rows)


def lives(elog: EventLog, show: Show) -> None:
    """Every node's online periods and restarts, into `show`."""
    if elog.base_seq:  # a replica that began from a snapshot: who was online then
        _seed(elog, show, {}, elog.state_at(elog.base_seq), frozenset())
    rows = elog.events_where("sender = 'controller' AND target IN ('node_joined', 'node_left')")
    for event, _ in rows:
        _liveness(show, event, event.op.data or {})


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def cue_story(
    elog: EventLog, cue: str, tz: dt.tzinfo, tz_name: str
) -> tuple[list[str], dict[str, Any]]:
    """Every event that touched `cue`, the commands around each of its runs, which nodes were
    online and whether they fired the GO (and how late): why it played, or why it did not."""
    show = Show(elog.log_id, tz, tz_name)
    lives(elog, show)
    rows = _reasons(
        elog,
        elog.events_where(
            "target = ? OR ((type = 'status' OR type = 'command') AND data LIKE ? ESCAPE '\\')",
            (cue, _like(cue)),
        ),
    )
    touched = [(e, r) for e, r in rows if e.op.target == cue or _mentions(e, cue)]
    lines: list[str] = [f"cue {cue}  (times in {tz_name})"]
    facts: dict[str, Any] = {"cue": cue, "zone": tz_name, "events": [], "runs": []}
    if not touched:
        lines.append(f"no event of this log touches cue {cue}")
        return lines, facts
    playing: dict[str, CueRun] = {}
    if elog.base_seq:  # it may have been playing when this replica's file begins
        seeded = Show(elog.log_id, tz, tz_name)
        _seed(elog, seeded, playing, elog.state_at(elog.base_seq), frozenset({cue}))
        show.runs.extend(seeded.runs)
    last_go: int | None = None
    for event, reason in touched:
        facts["events"].append({**event.to_dict(), "noop": reason})
        if event.op.type.value == "cue":
            go = _last_go_before(elog, event.seq)
            last_go = go if go is not None else last_go
            _cue_event(show, playing, event, reason, last_go)
    for run in show.runs:  # a STOP (LOAD, UNLOAD) while it played ended it, whatever came next
        if run.outcome == "refused":
            continue
        last = run.end_seq if run.end_seq is not None else elog.head + 1
        cuts = _reasons(
            elog,
            elog.events_where(
                "seq > ? AND seq <= ? AND type = 'command' AND target IN ('stop', 'load', "
                "'unload')",
                (run.start_seq, last),
            ),
        )
        cut = next((e for e, r in cuts if r is None), None)
        if cut is not None:
            _end(run, cut, "stopped", f"a {cut.op.target.upper()} while it played")
    lines.append("")
    lines.append("what touched it:")
    for event, reason in touched:
        lines.append("  " + _line(event, reason, tz))
    for run in show.runs:
        lines.append("")
        end = (
            f"{clock(run.end_ts, tz)} (seq {run.end_seq})"
            if run.end_ts is not None
            else "the end of the log"
        )
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
            after = _first_go_after(elog, event.seq)
            lines.append(f"  it was the next cue from {clock(event.ts, tz)} (seq {event.seq})")
            if after is None:
                lines.append("  no GO came after that")
                continue
            go_event = after[0]
            lines.extend(_around(elog, show, go_event.seq, go_event.ts, go_event.seq, tz))
    return lines, facts


def _line(event: Event, reason: str | None, tz: dt.tzinfo) -> str:
    op = event.op
    data = "" if op.data is None else _short(op.data)
    text = (
        f"{event.seq:>8}  {clock(event.ts, tz)}  {op.sender:<14} "
        f"{op.type.value}/{op.action.value:<7} {op.target:<16} {data}"
    )
    return text + (f"  <- no-op: {reason}" if reason else "")


def _short(data: dict[str, Any], width: int = 80) -> str:
    text = dumps(data).decode()
    return text if len(text) <= width else text[: width - 1] + "\u2026"


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
        for event, reason in reversed(_reasons(elog, rows)):
            if reason is None:
                accepted: int = event.seq
                return accepted
        seq = rows[0][0].seq


def _first_go_after(elog: EventLog, seq: int) -> tuple[Event, str | None] | None:
    rows = elog.events_where("seq > ? AND type = 'command' AND target = 'go'", (seq,), limit=1)
    return _reasons(elog, rows)[0] if rows else None


def _around(
    elog: EventLog, show: Show, seq: int, ts: float, go_seq: int | None, tz: dt.tzinfo
) -> list[str]:
    """The commands in the minute before `ts`, the GO's verdict and who fired it, and which
    nodes were online."""
    lines: list[str] = []
    commands = _reasons(
        elog, elog.events_where("type = 'command' AND ts >= ? AND seq <= ?", (ts - 60, seq))
    )
    if commands:
        lines.append("  commands in the minute before:")
        for event, reason in commands[-8:]:
            lines.append("    " + _line(event, reason, tz))
    if go_seq is not None:
        go = elog.events_where("seq = ?", (go_seq,))
        go_event, go_reason = _reasons(elog, go)[0]
        if go_reason is not None:
            state = elog.state_at(go_seq - 1)
            lines.append(
                f"  the GO at {clock(go_event.ts, tz)} (seq {go_seq}) was REFUSED: {go_reason}; "
                f"armed={state.engine['armed']!r}, required {state.required}, armed nodes "
                f"{sorted(state.armed_nodes)}"
            )
        else:
            fired = elog.events_where(
                "type = 'status' AND target = 'fired' AND seq > ? AND seq <= ?",
                (go_seq, go_seq + 100_000),
            )
            by_node = {
                e.op.sender: (e.op.data or {}).get("delay_ms")
                for e, _ in fired
                if (e.op.data or {}).get("seq") == go_seq
            }
            online = sorted(n for n, life in show.nodes.items() if life.online_at(go_event.ts))
            lines.append(f"  the GO at {clock(go_event.ts, tz)} (seq {go_seq}) was accepted")
            for node in sorted(set(online) | set(by_node)):
                if node in by_node:
                    delay = by_node[node]
                    late = (
                        f"{delay:.1f} ms after the commit"
                        if isinstance(delay, int | float)
                        else "(delay unknown)"
                    )
                    lines.append(f"    {node:<16} fired it {late}")
                else:
                    lines.append(f"    {node:<16} online, but reported no firing")
    online_now = sorted(n for n, life in show.nodes.items() if life.online_at(ts))
    offline = sorted(n for n, life in show.nodes.items() if not life.online_at(ts))
    lines.append(
        f"  online then: {', '.join(online_now) or 'none'}"
        + (f"; offline: {', '.join(offline)}" if offline else "")
    )
    return lines


def node_story(
    elog: EventLog, node: str, tz: dt.tzinfo, tz_name: str
) -> tuple[list[str], dict[str, Any]]:
    """A node's joins, leaves and restarts, the commands it got and fired, what it reported."""
    show = Show(elog.log_id, tz, tz_name)
    lives(elog, show)
    life = show.nodes.get(node) or NodeLife(node)
    own = elog.events_where("sender = ?", (node,))
    for event, _ in own:
        op = event.op
        if op.type.value == "status":
            life.reported[op.target] += 1
            data = op.data or {}
            if op.target == FIRED and isinstance(data.get("seq"), int):
                delay = data.get("delay_ms")
                life.fired[data["seq"]] = delay if isinstance(delay, int | float) else None
        else:
            life.reported[f"{op.type.value}/{op.action.value}"] += 1
    commands = _reasons(elog, elog.events_where("type = 'command'"))
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
