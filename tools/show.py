"""What happened in a show, read from its log alone: the `Show` every story is told from.

`read_show` walks the log once, folding it so every no-op carries its reason even in files
that did not record reasons, and returns a `Show`:

- each node's `NodeLife`: its online `Period`s, its restarts, what it reported, which commands
  it reported firing and how late;
- each `CueRun` of each cue, from its start to how it ended (played, stopped, error, refused,
  or still playing at the end of the log), with the GO that started it;
- each command as a `Marker`, with why the reducer refused it (if it did).

`lives` fills in just the nodes' lives with one query, and `with_reasons` gives rows read by a
query their no-op reasons: the cue and node stories use them to read only what they need.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from tqdm import tqdm

from eventlog import CONTROLLER, NODE_JOINED, NODE_LEFT, Event, EventLog, apply, restore
from eventlog.state import CueStatus, State
from eventlog.store import NOT_RECORDED
from tools.reading import show_zone

#: the status a node reports each fired command under (`replicas.node.FIRED`)
FIRED: Final = "fired"
#: the commands that stop whatever is playing when the reducer accepts them
CUTTING: Final = ("stop", "load", "unload")
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

    def note_fired(self, data: dict[str, Any]) -> None:
        """Record a ``fired`` report: the command's seq and how late (None: unknown)."""
        if isinstance(data.get("seq"), int):
            delay = data.get("delay_ms")
            self.fired[data["seq"]] = delay if isinstance(delay, int | float) else None

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
    seed(elog, show, playing, state)
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
            if op.target in CUTTING and reason is None:
                for run in playing.values():
                    cut_short(run, event)
                playing.clear()
            continue
        if kind == "status" and op.sender == CONTROLLER and op.target in (NODE_JOINED, NODE_LEFT):
            follow_liveness(show, event, data)
            continue
        if kind == "cue":
            follow_cue(show, playing, event, reason, last_go)
            if op.sender != CONTROLLER:
                show.node(op.sender).reported[f"cue/{op.action.value}"] += 1
            continue
        if op.sender != CONTROLLER and not op.sender.startswith("ui:"):
            life = show.node(op.sender)
            life.reported[op.target if kind == "status" else f"{kind}/{op.target}"] += 1
            if kind == "status" and op.target == FIRED:
                life.note_fired(data)
    bar.close()
    return show


def seed(
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


def end_run(run: CueRun, event: Event, outcome: str, why: str) -> None:
    """`run` ended at `event`, with `outcome` because of `why`."""
    run.end_seq, run.end_ts, run.outcome, run.why = event.seq, event.ts, outcome, why


def cut_short(run: CueRun, command: Event) -> None:
    """`run` was stopped by an accepted `CUTTING` command."""
    end_run(run, command, "stopped", f"a {command.op.target.upper()} while it played")


def follow_cue(
    show: Show, playing: dict[str, CueRun], event: Event, reason: str | None, last_go: int | None
) -> None:
    """Follow one cue event (its no-op `reason`, the last accepted GO before it) into the runs:
    an add starts a run (a refused add is a refused run), a remove or 100 % ends it as played,
    -1 as an error."""
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
        end_run(run, event, "played", "removed by its node")
        del playing[cue]
        return
    pct = (op.data or {}).get("percentage")
    if isinstance(pct, int):
        run.progress = pct
        if pct == CueStatus.DONE:
            end_run(run, event, "played", "reached 100 %")
            del playing[cue]
        elif pct == CueStatus.ERROR:
            end_run(run, event, "error", "its node reported an error (-1)")
            del playing[cue]


def follow_liveness(show: Show, event: Event, data: dict[str, Any]) -> None:
    """Follow the controller's ``node_joined`` / ``node_left`` into the node's periods."""
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


def with_reasons(
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


def lives(elog: EventLog, tz: dt.tzinfo, tz_name: str) -> Show:
    """A `Show` holding only every node's online periods and restarts (one query)."""
    show = Show(elog.log_id, tz, tz_name)
    if elog.base_seq:  # a replica that began from a snapshot: who was online then
        seed(elog, show, {}, elog.state_at(elog.base_seq), frozenset())
    rows = elog.events_where("sender = 'controller' AND target IN ('node_joined', 'node_left')")
    for event, _ in rows:
        follow_liveness(show, event, event.op.data or {})
    return show
