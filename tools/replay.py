"""``replay``: the post-mortem tool. Read-only on a log file (a copy, or a live log).

Every reading is one consistent snapshot of the file (one read transaction), however long it
takes and whatever a controller appends meanwhile.

    replay info LOG                      what the file is, how long, how many events
    replay events LOG [filters]          the events, as text or JSON lines
    replay state LOG --at SEQ|TIME       the state at a seq or a wall-clock time
    replay diff LOG A B                  what changed between two seqs
    replay verify LOG                    gapless seqs, valid events, snapshots re-derived

Times are local wall-clock: ``21:43``, ``21:43:05.5``, ``2026-11-28T21:43`` or unix seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, TextIO

from tqdm import tqdm

from eventlog import (
    CuelogError,
    Event,
    EventLog,
    UsageError,
    apply,
    digest,
    dumps,
    restore,
)
from eventlog.state import CueStatus, State
from tools import args as types
from tools import logs, story, timeline
from tools.verify import verify_log


def _fmt_ts(ts: float, tz: dt.tzinfo | None = None) -> str:
    return story.stamp(ts, tz or dt.datetime.now().astimezone().tzinfo or dt.UTC)


_OFFSET = re.compile(r"^\+(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")
POINT_HELP = (
    "a seq (123 or #123), a time in the show's zone (21:43, 21:43:05.250), an ISO date-time "
    "(2026-11-28T21:43), +5m / +1h30m / +90s from the start, or unix seconds"
)


def parse_when(text: str, elog: EventLog, tz: dt.tzinfo) -> tuple[str, float]:
    """A point in the show: ``("seq", n)`` or ``("ts", unix seconds)``; see `POINT_HELP`."""
    raw = text.strip()
    if raw.startswith("#") and _ascii_digits(raw[1:]):
        return "seq", int(raw[1:])
    if _ascii_digits(raw) and int(raw) < 100_000_000:
        return "seq", int(raw)
    bounds = elog.time_bounds()
    match = _OFFSET.match(raw)
    if match and raw != "+" and any(match.groups()):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        if bounds is None:
            raise UsageError(f"{text!r} counts from the start, and the log has no events")
        return "ts", bounds[0] + hours * 3600 + minutes * 60 + seconds
    try:
        value = float(raw)
        if math.isfinite(value) and 1e8 < value < 1e11:
            return "ts", value
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(raw)
        if when.tzinfo is None:
            when = when.replace(tzinfo=tz)
        return "ts", when.timestamp()
    except ValueError:
        pass
    try:
        time_of_day = dt.time.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"{text!r} is not a point in the show: use {POINT_HELP}") from None
    zone_ = time_of_day.tzinfo or tz  # 21:43+01:00 keeps its own offset
    if not bounds:
        today = dt.datetime.now(zone_).date()
        return "ts", dt.datetime.combine(today, time_of_day.replace(tzinfo=None), zone_).timestamp()
    # that time of day on the show's first day, the day before or the day after: the one
    # nearest the show (a show that runs past midnight, a zone other than the show's)
    first_day = dt.datetime.fromtimestamp(bounds[0], zone_).date()
    candidates = [
        dt.datetime.combine(
            first_day + dt.timedelta(days=d), time_of_day.replace(tzinfo=None), zone_
        ).timestamp()
        for d in (-1, 0, 1, 2)
    ]

    def distance(ts: float) -> float:
        return max(0.0, bounds[0] - ts, ts - bounds[1])

    return "ts", min(candidates, key=distance)


def _ascii_digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def parse_time(text: str, elog: EventLog, tz: dt.tzinfo | None = None) -> float:
    """A wall-clock time (any form of `parse_when` except a seq)."""
    zone_ = tz or story.show_zone(elog)[0]
    kind, value = parse_when(text, elog, zone_)
    if kind == "seq":
        raise UsageError(f"{text!r} is a seq; a time is wanted here ({POINT_HELP})")
    return value


def seq_of(text: str, elog: EventLog, tz: dt.tzinfo) -> int:
    """The seq a point names: itself, or the last event at or before a time."""
    kind, value = parse_when(text, elog, tz)
    return int(value) if kind == "seq" else elog.seq_at_time(value)


def _open(path: str) -> EventLog:
    # one read transaction for the whole reading: a log being written is read as it was at
    # this moment, never half before and half after an append
    return EventLog.open(path, readonly=True, pin=True)


def _zone(args: argparse.Namespace, elog: EventLog) -> tuple[dt.tzinfo, str]:
    return story.show_zone(elog, utc=getattr(args, "utc", False))


def _fast_verdict(elog: EventLog) -> tuple[bool, str]:
    """What `verify` would say, from what can be checked at once: seqs gapless by count,
    the newest snapshot re-derived from the one before it (or from the start)."""
    head, base = elog.head, elog.base_seq
    count = elog.count()
    if count != head - base:
        return False, (
            f"FAIL {head - base - count} events missing between seq {base + 1} and {head}; "
            "run `replay verify` for where"
        )
    snaps = elog.snapshots()
    if snaps:
        seq, _, want = snaps[-1]
        before = elog.latest_snapshot(seq - 1)
        if before is not None or base == 0:
            state = restore(before) if before is not None else State()
            for event in elog.iter_events(after=state.seq, until=seq):
                apply(state, event)
            if digest(state) != want:
                return False, f"FAIL the snapshot at seq {seq} does not match the events before it"
    return True, (
        f"OK (fast check: {count} events gapless, newest snapshot re-derived; "
        "`replay verify` reads everything)"
    )


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        tz, tz_name = _zone(args, elog)
        head = elog.head
        bounds = elog.time_bounds()
        by_kind = elog.select(
            "SELECT type, action, sender, COUNT(*) FROM events GROUP BY type, action, sender"
        )
        noop = "noop IS NOT NULL" if elog.noops_from is not None else "NULL"
        commands = elog.select(
            f"SELECT target, {noop}, COUNT(*) FROM events WHERE type = 'command' GROUP BY target, 2"
        )
        ok, verdict = _fast_verdict(elog)
        show = story.Show(elog.log_id, tz, tz_name)
        story.lives(elog, show)
        info: dict[str, Any] = {
            "path": args.log,
            "log_id": elog.log_id,
            "created": elog.created,
            "zone": tz_name,
            "head_seq": head,
            "base_seq": elog.base_seq,
            "events": elog.count(),
            "snapshots": len(elog.snapshots()),
            "first_ts": bounds[0] if bounds else None,
            "last_ts": bounds[1] if bounds else None,
            "digest": digest(elog.state_at(head)) if head >= elog.base_seq else None,
            "integrity": verdict,
            "reasons_recorded_from": elog.noops_from,
        }
    types: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    senders: Counter[str] = Counter()
    for kind, action, sender, n in by_kind:
        types[kind] += n
        actions[f"{kind}/{action}"] += n
        senders[sender] += n
    issued: dict[str, dict[str, int]] = {}
    for target, refused, n in commands:
        entry = issued.setdefault(target, {"issued": 0, "refused": 0})
        entry["issued"] += n
        if refused:
            entry["refused"] += n
    nodes = {
        node: {
            "periods": [
                {
                    "joined": p.joined_ts,
                    "left": p.left_ts,
                    "joined_because": p.join_reason,
                    "left_because": p.leave_reason,
                }
                for p in life.periods
            ],
            "restarts": life.restarts,
        }
        for node, life in sorted(show.nodes.items())
    }
    info.update(
        types=dict(types),
        actions=dict(actions),
        senders=dict(senders),
        commands=issued,
        nodes=nodes,
    )
    if args.json:
        print(dumps(info).decode())
        return 0 if ok else 1
    print(f"file       {info['path']}")
    print(f"log_id     {info['log_id']}")
    print(f"zone       {tz_name}")
    print(f"created    {story.stamp(info['created'], tz)}")
    print(f"events     {info['events']} (seq {info['base_seq'] + 1}..{head})")
    if bounds:
        span = bounds[1] - bounds[0]
        print(
            f"time       {story.stamp(bounds[0], tz)} .. {story.stamp(bounds[1], tz)[11:]} "
            f"({story.duration(span)})"
        )
    print(f"snapshots  {info['snapshots']}")
    print(f"digest     {info['digest']} (state at seq {head})")
    print(f"integrity  {verdict}")
    print("by type    " + ", ".join(f"{k} {v}" for k, v in types.most_common()))
    print("by action  " + ", ".join(f"{k} {v}" for k, v in actions.most_common()))
    print("by sender  " + ", ".join(f"{k} {v}" for k, v in senders.most_common(12)))
    if issued:
        parts = []
        for target, entry in sorted(issued.items(), key=lambda kv: -kv[1]["issued"]):
            refused = f" ({entry['refused']} refused)" if entry["refused"] else ""
            parts.append(
                f"{target.upper() if target in _SHOUTED else target} {entry['issued']}{refused}"
            )
        print("commands   " + ", ".join(parts))
        if elog.noops_from is None:
            print("           (this file predates recorded refusals: `events --why` tells them)")
    for node, life in sorted(show.nodes.items()):
        periods = "; ".join(
            f"{story.clock(p.joined_ts, tz, ms=False)}-"
            + (story.clock(p.left_ts, tz, ms=False) if p.left_ts is not None else "end")
            + (f" ({p.leave_reason})" if p.leave_reason and p.leave_reason != "restarted" else "")
            for p in life.periods
        )
        restarts = f", {len(life.restarts)} restart(s)" if life.restarts else ""
        print(f"node       {node:<16} online {periods}{restarts}")
        for r in life.restarts:
            print(
                f"           restarted at {story.clock(r['ts'], tz)} after "
                f"{r['away_s']} s away, resumed from seq {r['resumed_from']} by {r['catchup']}"
            )
    return 0 if ok else 1


_SHOUTED: Final = frozenset({"go", "stop", "load", "unload"})


def _selected(args: argparse.Namespace, elog: EventLog, tz: dt.tzinfo) -> Iterator[Event]:
    after = args.after
    until = args.to_seq
    if args.since:  # at or after: a seq, or the first event at or after a time
        after = max(after, first_seq_from(args.since, elog, tz) - 1)
    if args.until:  # before: a seq, or a time
        last = first_seq_from(args.until, elog, tz) - 1
        until = last if until is None else min(until, last)
    grep = args.grep.casefold() if args.grep else None
    shown = 0
    for event in elog.iter_events(after=after, until=until):
        op = event.op
        if args.type and op.type.value != args.type:
            continue
        if args.action and op.action.value != args.action:
            continue
        if args.target and op.target != args.target:
            continue
        if args.sender and op.sender != args.sender:
            continue
        if grep is not None and (op.data is None or grep not in dumps(op.data).decode().casefold()):
            continue
        yield event
        shown += 1
        if args.limit and shown >= args.limit:
            return


def first_seq_from(text: str, elog: EventLog, tz: dt.tzinfo) -> int:
    """The first seq at or after a point: the seq itself, or the first event at or after the
    time."""
    kind, value = parse_when(text, elog, tz)
    return int(value) if kind == "seq" else _first_seq_at_or_after(elog, value)


def _first_seq_at_or_after(elog: EventLog, ts: float) -> int:
    rows = elog.select("SELECT seq FROM events WHERE ts >= ? ORDER BY ts, seq LIMIT 1", (ts,))
    return int(rows[0][0]) if rows else elog.head + 1


_COLOURS: Final = {
    "command": "\x1b[1;33m",
    "cue": "\x1b[36m",
    "player": "\x1b[35m",
    "status": "",
    "noop": "\x1b[31m",
    "dim": "\x1b[2m",
}
_RESET: Final = "\x1b[0m"
EVENT_COLUMNS: Final = ("seq", "time", "sender", "type", "action", "target", "data", "noop")


def cmd_events(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        tz, _ = _zone(args, elog)
        state: State | None = None
        why = args.why or args.csv or args.json
        out = sys.stdout
        colour = not (args.json or args.csv) and out.isatty() and not os.environ.get("NO_COLOR")
        writer = csv.writer(out) if args.csv else None
        if writer is not None:
            writer.writerow([*EVENT_COLUMNS, "iso_time", "origin", "origin_seq"])
        for event in _selected(args, elog, tz):
            reason = None
            if why:
                if state is None:
                    state = elog.state_at(max(event.seq - 1, elog.base_seq))
                for gap in elog.iter_events(state.seq, until=event.seq - 1):
                    apply(state, gap)
                reason = apply(state, event)
            op = event.op
            data = "" if op.data is None else dumps(op.data).decode()
            if args.json:
                print(dumps({**event.to_dict(), "noop": reason}).decode())
                continue
            if writer is not None:
                writer.writerow(
                    [
                        event.seq,
                        story.clock(event.ts, tz),
                        op.sender,
                        op.type.value,
                        op.action.value,
                        op.target,
                        data,
                        reason or "",
                        dt.datetime.fromtimestamp(event.ts, tz).isoformat(timespec="milliseconds"),
                        event.op_id.origin,
                        event.op_id.origin_seq,
                    ]
                )
                continue
            kind = f"{op.type.value}/{op.action.value}"
            line = f"{event.seq:>8}  {story.clock(event.ts, tz)}  {op.sender:<14} {kind:<14} "
            line += f"{op.target:<20} {data}"
            if colour:
                line = f"{_COLOURS.get(op.type.value, '')}{line}{_RESET}"
            if reason is not None:
                note = f"   <- no-op: {reason}"
                line += f"{_COLOURS['noop']}{note}{_RESET}" if colour else note
            print(line)
    return 0


def _state_for(args: argparse.Namespace, elog: EventLog, at: str) -> State:
    return elog.state_at(seq_of(at, elog, _zone(args, elog)[0]))


def cmd_state(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        state = _state_for(args, elog, args.at)
    if args.json:
        print(dumps({"digest": digest(state), "state": state.to_dict()}).decode())
        return 0
    engine = state.engine
    print(f"seq        {state.seq}")
    print(f"digest     {digest(state)}")
    for key in ("load", "running", "armed", "nextcue", "timecode"):
        print(f"{key:<10} {engine[key]!r}")
    print(f"currentcue {engine['currentcue']}")
    print(f"required   {state.required}  armed: {sorted(state.armed_nodes)}")
    for cue_id, info in sorted(state.cues.items()):
        print(f"cue        {cue_id:<24} status={info['status']:<4} node={info['node']}")
    for node, info in sorted(state.nodes.items()):
        print(f"node       {node:<24} online={info['online']}")
    for key, vol in sorted(state.mixer.items()):
        print(f"mixer      {key:<24} {vol}")
    print(f"ignored    {state.ignored} recorded no-ops")
    return 0


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else key, out)
    else:
        out[prefix] = value


def cmd_diff(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        a = _state_for(args, elog, args.a).to_dict()
        b = _state_for(args, elog, args.b).to_dict()
    fa: dict[str, Any] = {}
    fb: dict[str, Any] = {}
    _flatten(a, "", fa)
    _flatten(b, "", fb)
    changes = 0
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key, "<absent>") != fb.get(key, "<absent>"):
            changes += 1
            left = dumps(fa[key]).decode() if key in fa else "<absent>"
            right = dumps(fb[key]).decode() if key in fb else "<absent>"
            print(f"{key}: {left} -> {right}")
    print(f"{changes} changes between seq {a['seq']} and seq {b['seq']}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        verdict = verify_log(elog, progress=sys.stderr.isatty() and not args.quiet)
    for line in verdict.problems:
        print(f"FAIL {line}")
    if verdict.problems:
        return 1
    print(
        f"OK {args.log}: seqs {verdict.base_seq + 1}..{verdict.head} gapless, "
        f"{verdict.snapshots} snapshots match, digest {verdict.digest}"
    )
    return 0


def cmd_cue(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        tz, tz_name = _zone(args, elog)
        target = args.cue
        seq: int | None = None
        if target.startswith("#") or not story.is_cue(elog, target):
            with contextlib.suppress(UsageError):  # not a cue of this log: a point in it?
                seq = seq_of(target, elog, tz)
        if seq is not None:
            # a time (or seq): the story of what was playing then
            state = elog.state_at(seq)
            playing = sorted(
                c for c, info in state.cues.items() if CueStatus.is_playing(info["status"])
            )
            print(
                f"at {target} (seq {seq}): {len(playing)} cue(s) playing; next cue "
                f"{state.engine['nextcue'] or '-'}, running={state.engine['running']!r}, "
                f"armed={state.engine['armed']!r}"
            )
            stories = [story.cue_story(elog, cue, tz, tz_name) for cue in playing]
            if not playing and state.engine["nextcue"]:
                stories.append(story.cue_story(elog, state.engine["nextcue"], tz, tz_name))
        else:
            stories = [story.cue_story(elog, target, tz, tz_name)]
    if args.json:
        for _, facts in stories:
            print(dumps(facts).decode())
        return 0
    for lines, _ in stories:
        print("\n".join(lines))
        print()
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        tz, tz_name = _zone(args, elog)
        lines, facts = story.node_story(elog, args.node, tz, tz_name)
    if args.json:
        print(dumps(facts).decode())
    else:
        print("\n".join(lines))
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        tz, _ = _zone(args, elog)
        after = first_seq_from(args.since, elog, tz) - 1 if args.since else 0
        until = first_seq_from(args.until, elog, tz) - 1 if args.until else None
        if until is not None and until <= after:
            raise UsageError(f"--until ({args.until}) is not after --since ({args.since})")
        if elog.head <= elog.base_seq:
            raise UsageError(f"{args.log} holds no events: there is no show to draw")
        show = story.read_show(
            elog, after=max(0, after), until=until, utc=args.utc, progress=_progress(args)
        )
    out = timeline.write(
        show, writable(args.output, args.log), args.title or f"cuelog show {Path(args.log).name}"
    )
    print(
        f"wrote {out}: {len(show.runs)} cue runs on {len(show.nodes)} nodes, "
        f"{len(show.markers)} commands "
        f"({story.duration((show.last_ts or 0) - (show.first_ts or 0))})"
    )
    return 0


def _progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() and not getattr(args, "quiet", False)


def cmd_export(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        elog = stack.enter_context(_open(args.log))
        out: TextIO = sys.stdout
        if args.output:
            target = writable(args.output, args.log)
            tmp = target.with_name(f".{target.name}.part")
            out = stack.enter_context(_output(tmp))
            stack.callback(tmp.unlink, missing_ok=True)  # a failed export leaves nothing
        head = _export(args, elog, out)
        if args.output:
            out.close()
            os.replace(tmp, target)
    if args.output:
        print(f"exported seqs up to {head} to {args.output}", file=sys.stderr)
    return 0


def writable(output: str, log: str) -> Path:
    """`output` checked before anything is written: never the log itself or one of its
    companion files (replay never writes to what it reads), and a folder that exists."""
    target = Path(output)
    log_path = Path(log).resolve()
    resolved = target.resolve()
    companions = {log_path} | {
        log_path.with_name(log_path.name + suffix)
        for suffix in ("-wal", "-shm", "-journal", ".lock")
    }
    same = resolved in companions or (
        target.exists() and log_path.exists() and os.path.samefile(target, log_path)
    )
    if same:
        raise UsageError(f"{output} is the log being read (or one of its files): write elsewhere")
    if target.is_dir():
        raise UsageError(f"{output} is a folder: give a file name")
    if not resolved.parent.is_dir():
        raise UsageError(f"cannot write {output}: the folder {resolved.parent} does not exist")
    return target


def _output(path: Path) -> TextIO:
    try:
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _export(args: argparse.Namespace, elog: EventLog, out: TextIO) -> int:
    tz, _ = _zone(args, elog)
    writer = csv.writer(out) if args.format == "csv" else None
    if writer is not None:
        writer.writerow(EXPORT_COLUMNS)
    head = elog.head
    state = elog.state_at(elog.base_seq)
    bar = tqdm(total=head - elog.base_seq, unit="ev", disable=not _progress(args))
    for event in elog.iter_events(after=elog.base_seq, until=head):
        reason = apply(state, event)
        op = event.op
        row = {
            "seq": event.seq,
            "ts": event.ts,
            "time": dt.datetime.fromtimestamp(event.ts, tz).isoformat(timespec="milliseconds"),
            "type": op.type.value,
            "action": op.action.value,
            "sender": op.sender,
            "target": op.target,
            "data": op.data,
            "origin": event.op_id.origin,
            "origin_seq": event.op_id.origin_seq,
            "noop": reason,
        }
        if writer is not None:
            data = "" if op.data is None else dumps(op.data).decode()
            writer.writerow([data if c == "data" else row[c] for c in EXPORT_COLUMNS])
        else:
            out.write(dumps(row).decode() + "\n")
        bar.update(1)
    bar.close()
    return head


def cmd_serve(args: argparse.Namespace) -> int:
    from tools.replay_serve import Playback, serve

    if args.ws is None:
        raise UsageError("replay serve needs --ws HOST:PORT")
    with _open(args.log) as elog:
        tz, tz_name = _zone(args, elog)
        start = seq_of(args.from_, elog, tz) if args.from_ else elog.base_seq
        end = seq_of(args.to, elog, tz) if args.to else None
        if end is not None and end < start:
            raise UsageError(f"--to (seq {end}) is before --from (seq {start})")
    host, port = args.ws
    playback = Playback(
        args.log,
        speed=args.speed,
        start=start,
        end=end,
        seek_parser=lambda text, log: seq_of(text, log, tz),
    )
    print(
        f"replaying {args.log} at {args.speed:g}x (times in {tz_name}): UIs on "
        f"ws://{host}:{port}/realtime, status page http://{host}:{port}/ ; "
        "controls: /replay/pause, /replay/play, /replay/seek <seq|time>, /replay/speed <x>",
        file=sys.stderr,
    )
    task: list[asyncio.Task[None]] = []

    async def main() -> None:
        task.append(asyncio.ensure_future(serve(playback, host, port)))
        with contextlib.suppress(asyncio.CancelledError):
            await task[0]

    def stop() -> None:
        if task:
            task[0].cancel()

    return types.run_until_signal(main, stop)


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError("the speed must be above 0 and at most 1000")
    return value


#: the columns of `replay export` (and of the ``events`` table, plus ``time`` and ``noop``)
EXPORT_COLUMNS: Final = (
    "seq",
    "ts",
    "time",
    "type",
    "action",
    "sender",
    "target",
    "data",
    "origin",
    "origin_seq",
    "noop",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replay",
        description="Post-mortem of a cuelog log file: the controller's log, a node's replica, "
        "or a copy. Read-only: safe on a live log, never writes to the file.",
        epilog=f"Points in the show (--at, --since, --until, cue): {POINT_HELP}. Times are "
        "shown in the zone the log recorded (--utc for UTC). Exit codes: 0 fine, 1 a bad or "
        "damaged log, 2 a usage error.",
    )
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="warning",
        help="stderr logging (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    def command(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("log", help="the log file")
        p.add_argument("--utc", action="store_true", help="show times in UTC")
        p.set_defaults(func=func)
        return p

    p = command(
        "info",
        "what the file is and what happened: events by type, action and sender, nodes with "
        "their online periods and restarts, commands issued and refused, a fast integrity check",
        cmd_info,
    )
    p.add_argument("--json", action="store_true", help="one JSON object")

    p = command("events", "list events, filtered; a table, JSON lines or CSV", cmd_events)
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only seq > SEQ")
    p.add_argument("--to-seq", type=int, default=None, metavar="SEQ", help="only seq <= SEQ")
    p.add_argument("--since", metavar="WHEN", help="only events at or after WHEN (a seq or time)")
    p.add_argument("--until", metavar="WHEN", help="only events before WHEN (a seq or time)")
    p.add_argument("--type", choices=["cue", "player", "command", "status"])
    p.add_argument("--action", choices=["add", "update", "remove"])
    p.add_argument("--target", help="only this target (cue id, command name, ...)")
    p.add_argument("--sender", help="only from this sender (node id or 'controller')")
    p.add_argument("--grep", metavar="TEXT", help="only events whose data contains TEXT")
    p.add_argument("--limit", type=types.count, default=0, help="at most this many events (0: all)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON lines (with the no-op reason)")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.add_argument(
        "--why", action="store_true", help="mark events the reducer refused or ignored, and why"
    )

    p = command("state", "the state at a seq or a time", cmd_state)
    p.add_argument("--at", required=True, metavar="WHEN", help="a seq or a time")
    p.add_argument("--json", action="store_true", help="the state and its digest as JSON")

    p = command("diff", "what changed in the state between A and B", cmd_diff)
    p.add_argument("a", metavar="A", help="a seq or a time")
    p.add_argument("b", metavar="B", help="a seq or a time")

    p = command("verify", "check gapless seqs, valid events and snapshot digests", cmd_verify)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "cue",
        "the story of one cue: what touched it, the commands around it, whether its GO was "
        "refused and why, which nodes were online and fired it, how late; given a time, the "
        "story of what was playing then",
        cmd_cue,
    )
    p.add_argument("cue", metavar="CUE_ID|WHEN", help="a cue id, or a point in the show")
    p.add_argument("--json", action="store_true", help="the facts as JSON (one line per cue)")

    p = command(
        "node",
        "the story of one node: joins, leaves, restarts, the commands it got and fired (and "
        "how late), what it reported",
        cmd_node,
    )
    p.add_argument("node", metavar="NODE_ID", help="the node id")
    p.add_argument("--json", action="store_true", help="the facts as JSON")

    p = command(
        "timeline",
        "a picture of the show: one lane per node, cue bars coloured by outcome, GO/STOP/LOAD "
        "markers, offline periods and restarts (SVG, or HTML if FILE ends in .html)",
        cmd_timeline,
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .svg or .html file")
    p.add_argument("--since", metavar="WHEN", help="start the picture here")
    p.add_argument("--until", metavar="WHEN", help="end it here")
    p.add_argument("--title", help="the picture's title")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "export",
        "every event with its no-op reason as JSON lines or CSV (for spreadsheets, pandas, "
        "or sqlite-utils); columns: " + ", ".join(EXPORT_COLUMNS),
        cmd_export,
    )
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command(
        "serve",
        "play the recorded show to UIs through the gateway (WebSocket OSC and the status "
        "page), at any speed; UIs steer it with /replay/pause, /replay/play, "
        "/replay/seek <seq|time> and /replay/speed <x>; their commands are refused",
        cmd_serve,
    )
    p.add_argument(
        "--ws",
        default=("127.0.0.1", 9290),
        type=types.hostport,
        metavar="HOST:PORT",
        help="where UIs connect (default 127.0.0.1:9290)",
    )
    p.add_argument("--speed", type=_speed, default=1.0, help="1 is real time, 10 ten times faster")
    p.add_argument("--from", dest="from_", metavar="WHEN", help="start here (a seq or a time)")
    p.add_argument("--to", metavar="WHEN", help="stop here (a seq or a time)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        result: int = args.func(args)
        return result
    except UsageError as exc:  # what was asked makes no sense: exit 2, as argparse does
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2
    except CuelogError as exc:  # the log is bad (missing, not a log, damaged)
        print(f"replay: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except OSError as exc:  # an output that cannot be written, a file gone mid-read
        where = f" {exc.filename}" if exc.filename else ""
        print(f"replay: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
