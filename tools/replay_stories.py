"""``replay cue``, ``replay node`` and ``replay timeline``: the stories of `tools.story`, on the
command line.

``cue`` takes a cue id, or a point in the show (then it tells the story of every cue playing
at that moment, or of the next cue if none was). ``node`` takes a node id. ``timeline`` walks
the show (or a window of it) and draws it (`tools.timeline`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

from eventlog import EventLog, UsageError
from eventlog.state import CueStatus
from tools import timeline
from tools.formats import duration, print_json
from tools.reading import progress_wanted, read_log, show_zone, writable
from tools.replay_points import first_seq_from, seq_of
from tools.show import read_show
from tools.story_cue import cue_story, is_cue
from tools.story_node import node_story

Story = tuple[list[str], dict[str, Any]]


def cmd_cue(args: argparse.Namespace) -> int:
    with read_log(args.log) as elog:
        tz, tz_name = show_zone(elog, args.utc)
        target = args.cue
        seq: int | None = None
        if target.startswith("#") or not is_cue(elog, target):
            with contextlib.suppress(UsageError):  # not a cue of this log: a point in it?
                seq = seq_of(target, elog, tz)
        if seq is None:
            stories = [cue_story(elog, target, tz, tz_name)]
        else:
            stories = _playing_at(elog, target, seq, tz, tz_name)
    _print_stories(stories, args.json)
    return 0


def _playing_at(elog: EventLog, point: str, seq: int, tz: dt.tzinfo, tz_name: str) -> list[Story]:
    """The stories of the cues playing at `seq` (or of the next cue, if none played)."""
    state = elog.state_at(seq)
    playing = sorted(c for c, info in state.cues.items() if CueStatus.is_playing(info["status"]))
    engine = state.engine
    print(
        f"at {point} (seq {seq}): {len(playing)} cue(s) playing; next cue "
        f"{engine['nextcue'] or '-'}, running={engine['running']!r}, armed={engine['armed']!r}"
    )
    if not playing and engine["nextcue"]:
        playing = [engine["nextcue"]]
    return [cue_story(elog, cue, tz, tz_name) for cue in playing]


def _print_stories(stories: list[Story], as_json: bool) -> None:
    """Each story's facts as one JSON line, or its lines for people, a blank line after each."""
    for lines, facts in stories:
        if as_json:
            print_json(facts)
        else:
            print("\n".join(lines))
            print()


def cmd_node(args: argparse.Namespace) -> int:
    with read_log(args.log) as elog:
        tz, tz_name = show_zone(elog, args.utc)
        lines, facts = node_story(elog, args.node, tz, tz_name)
    if args.json:
        print_json(facts)
    else:
        print("\n".join(lines))
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    with read_log(args.log) as elog:
        tz, _ = show_zone(elog, args.utc)
        after = first_seq_from(args.since, elog, tz) - 1 if args.since else 0
        until = first_seq_from(args.until, elog, tz) - 1 if args.until else None
        if until is not None and until <= after:
            raise UsageError(f"--until ({args.until}) is not after --since ({args.since})")
        if elog.head <= elog.base_seq:
            raise UsageError(f"{args.log} holds no events: there is no show to draw")
        show = read_show(
            elog,
            after=max(0, after),
            until=until,
            utc=args.utc,
            progress=progress_wanted(args.quiet),
        )
    title = args.title or f"cuelog show {Path(args.log).name}"
    out = timeline.write(show, writable(args.output, args.log), title)
    print(
        f"wrote {out}: {len(show.runs)} cue runs on {len(show.nodes)} nodes, "
        f"{len(show.markers)} commands "
        f"({duration((show.last_ts or 0) - (show.first_ts or 0))})"
    )
    return 0
