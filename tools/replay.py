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
import datetime as dt
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from eventlog import (
    CuelogError,
    Event,
    EventLog,
    UsageError,
    ValidationError,
    apply,
    digest,
    dumps,
    restore,
    validate_operation,
)
from eventlog.state import State
from tools import logs


def _fmt_ts(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def parse_time(text: str, elog: EventLog) -> float:
    """A wall-clock time: unix seconds, ISO date-time, or a time of day on the log's day."""
    try:
        value = float(text)
        if value > 1e8:
            return value
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    try:
        clock = dt.time.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a time: use HH:MM[:SS[.fff]], YYYY-MM-DDTHH:MM[:SS] or unix seconds"
        ) from None
    bounds = elog.time_bounds()
    day = dt.date.fromtimestamp(bounds[0]) if bounds else dt.date.today()
    return dt.datetime.combine(day, clock).timestamp()


def _open(path: str) -> EventLog:
    # one read transaction for the whole reading: a log being written is read as it was at
    # this moment, never half before and half after an append
    return EventLog.open(path, readonly=True, pin=True)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        head = elog.head
        bounds = elog.time_bounds()
        info: dict[str, Any] = {
            "path": args.log,
            "log_id": elog.log_id,
            "created": elog.created,
            "head_seq": head,
            "base_seq": elog.base_seq,
            "events": elog.count(),
            "snapshots": len(elog.snapshots()),
            "first_ts": bounds[0] if bounds else None,
            "last_ts": bounds[1] if bounds else None,
            "digest": digest(elog.state_at(head)) if head >= elog.base_seq else None,
        }
    if args.json:
        print(dumps(info).decode())
        return 0
    print(f"file       {info['path']}")
    print(f"log_id     {info['log_id']}")
    print(f"created    {_fmt_ts(info['created'])}")
    print(f"events     {info['events']} (seq {elog.base_seq + 1}..{head})")
    if bounds:
        span = bounds[1] - bounds[0]
        print(f"time       {_fmt_ts(bounds[0])} .. {_fmt_ts(bounds[1])} ({span:.1f} s)")
    print(f"snapshots  {info['snapshots']}")
    print(f"digest     {info['digest']} (state at seq {head})")
    return 0


def _selected(args: argparse.Namespace, elog: EventLog) -> Iterator[Event]:
    since = parse_time(args.since, elog) if args.since else None
    until = parse_time(args.until, elog) if args.until else None
    shown = 0
    for event in elog.iter_events(after=args.after, until=args.to_seq):
        if since is not None and event.ts < since:
            continue
        if until is not None and event.ts >= until:
            break
        op = event.op
        if args.type and op.type.value != args.type:
            continue
        if args.target and op.target != args.target:
            continue
        if args.sender and op.sender != args.sender:
            continue
        yield event
        shown += 1
        if args.limit and shown >= args.limit:
            return


def cmd_events(args: argparse.Namespace) -> int:
    with _open(args.log) as elog:
        state: State | None = None
        if args.why and not args.json:
            state = elog.state_at(max(args.after, elog.base_seq))
        for event in _selected(args, elog):
            reason = None
            if state is not None:
                for gap in elog.iter_events(state.seq, until=event.seq - 1):
                    apply(state, gap)
                reason = apply(state, event)
            if args.json:
                print(dumps(event.to_dict()).decode())
                continue
            op = event.op
            data = "" if op.data is None else dumps(op.data).decode()
            line = (
                f"{event.seq:>7} {_fmt_ts(event.ts)[11:]} {op.sender:<12} "
                f"{op.type.value}/{op.action.value:<6} {op.target:<20} {data}"
            )
            if reason is not None:
                line += f"   <- no-op: {reason}"
            print(line)
    return 0


def _state_for(args: argparse.Namespace, elog: EventLog, at: str) -> State:
    if at.isdigit():
        return elog.state_at(int(at))
    return elog.state_at(elog.seq_at_time(parse_time(at, elog)))


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


@dataclass(frozen=True)
class Verdict:
    """What `verify_log` found: no problems means gapless, valid, every snapshot matches."""

    log_id: str
    base_seq: int
    head: int
    snapshots: int
    digest: str
    problems: list[str]


def verify_log(elog: EventLog, progress: bool = False) -> Verdict:
    """Read the whole log (one snapshot of it if `elog` was opened with ``pin``): every seq
    after the base present once, every operation valid, every stored snapshot equal to the
    fold at its seq. The digest is the state's at the head."""
    problems: list[str] = []
    head = elog.head
    snaps = {seq: dig for seq, _, dig in elog.snapshots()}
    start = elog.base_seq
    state = State()
    if start:
        base = elog.latest_snapshot(start)
        if base is None or base.seq != start:
            problems.append(f"file starts after seq {start} but has no snapshot there")
            start = head
        else:
            state = restore(base)
    expected = start + 1
    bar = tqdm(total=head - start, unit="ev", disable=not progress)
    for event in elog.iter_events(after=start, until=head):
        if event.seq != expected:
            problems.append(f"gap: expected seq {expected}, found {event.seq}")
            break
        try:
            validate_operation(event.op)
        except ValidationError as exc:
            problems.append(f"seq {event.seq}: invalid operation: {exc}")
        apply(state, event)
        if event.seq in snaps and digest(state) != snaps[event.seq]:
            problems.append(f"snapshot at seq {event.seq} does not match the fold")
        expected += 1
        bar.update(1)
    bar.close()
    if expected - 1 != head and not any(p.startswith("gap:") for p in problems):
        problems.append(f"events stop at seq {expected - 1}, head is {head}")
    return Verdict(elog.log_id, elog.base_seq, head, len(snaps), digest(state), problems)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replay",
        description="Post-mortem of a cuelog log file. Read-only: safe on a copy or a live log.",
        epilog="Times are local: 21:43, 21:43:05.5, 2026-11-28T21:43, or unix seconds.",
    )
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default="warning",
        help="stderr logging (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("info", help="what the file is: log id, events, time span, snapshots")
    p.add_argument("log", help="the log file")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("events", help="list events, filtered by seq, time, type, target, sender")
    p.add_argument("log", help="the log file")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only seq > SEQ")
    p.add_argument("--to-seq", type=int, default=None, metavar="SEQ", help="only seq <= SEQ")
    p.add_argument("--since", metavar="TIME", help="only events at or after TIME")
    p.add_argument("--until", metavar="TIME", help="only events before TIME")
    p.add_argument("--type", choices=["cue", "player", "command", "status"])
    p.add_argument("--target", help="only this target (cue id, command name, ...)")
    p.add_argument("--sender", help="only from this sender (node id or 'controller')")
    p.add_argument("--limit", type=int, default=0, help="at most this many events")
    p.add_argument("--json", action="store_true", help="JSON lines instead of text")
    p.add_argument(
        "--why", action="store_true", help="mark events the reducer refused or ignored, and why"
    )
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("state", help="the state at a seq or a time")
    p.add_argument("log", help="the log file")
    p.add_argument("--at", required=True, metavar="SEQ|TIME", help="a seq number or a time")
    p.add_argument("--json", action="store_true", help="the state and its digest as JSON")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser("diff", help="what changed in the state between A and B")
    p.add_argument("log", help="the log file")
    p.add_argument("a", metavar="A", help="a seq or a time")
    p.add_argument("b", metavar="B", help="a seq or a time")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("verify", help="check gapless seqs, valid events and snapshot digests")
    p.add_argument("log", help="the log file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        result: int = args.func(args)
        return result
    except CuelogError as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
