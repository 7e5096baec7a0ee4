"""``replay state`` and ``replay diff``: the state the log folds to at a point, and what
changed between two points (a point is a seq or a time: `tools.replay_points`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from eventlog import EventLog, digest, dumps
from eventlog.state import State
from tools.formats import print_json
from tools.reading import read_log, show_zone
from tools.replay_points import seq_of

#: what ``diff`` shows for a key one side does not have
_ABSENT = "<absent>"


def _state_at(args: argparse.Namespace, elog: EventLog, point: str) -> State:
    return elog.state_at(seq_of(point, elog, show_zone(elog, args.utc)[0]))


def cmd_state(args: argparse.Namespace) -> int:
    with read_log(args.log) as elog:
        state = _state_at(args, elog, args.at)
    if args.json:
        print_json({"digest": digest(state), "state": state.to_dict()})
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


def _flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys (``cues.c1.status``) to leaf values."""
    out = {} if out is None else out
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else key, out)
    else:
        out[prefix] = value
    return out


def cmd_diff(args: argparse.Namespace) -> int:
    with read_log(args.log) as elog:
        a = _state_at(args, elog, args.a).to_dict()
        b = _state_at(args, elog, args.b).to_dict()
    fa, fb = _flatten(a), _flatten(b)
    changes = 0
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key, _ABSENT) != fb.get(key, _ABSENT):
            changes += 1
            left = dumps(fa[key]).decode() if key in fa else _ABSENT
            right = dumps(fb[key]).decode() if key in fb else _ABSENT
            print(f"{key}: {left} -> {right}")
    print(f"{changes} changes between seq {a['seq']} and seq {b['seq']}", file=sys.stderr)
    return 0
