"""``replay info`` and ``replay verify``: what a log file is, and whether it is sound.

``info`` reads a few aggregate queries and the nodes' lives: the file's id, zone, span, events
by type, action and sender, the commands issued and refused, each node's online periods and
restarts, and a fast integrity check (`tools.verify.fast_verdict`). ``verify`` reads
everything (`tools.verify.verify_log`). Both exit 1 on a damaged log.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any, Final

import orjson

from eventlog import CONTROLLER, LEADER, EventLog, digest
from tools.formats import clock, duration, print_json, stamp
from tools.reading import progress_wanted, read_log, show_zone
from tools.show import Show, lives
from tools.verify import fast_verdict, verify_log

#: commands written in capitals in the summary (the operator's words)
_SHOUTED: Final = frozenset({"go", "stop", "load", "unload"})


def cmd_info(args: argparse.Namespace) -> int:
    with read_log(args.log) as elog:
        tz, tz_name = show_zone(elog, args.utc)
        ok, verdict = fast_verdict(elog)
        show = lives(elog, tz, tz_name)
        info = _facts(elog, args.log, tz_name, verdict, show)
    if args.json:
        print_json(info)
    else:
        print("\n".join(_lines(info, show)))
    return 0 if ok else 1


def _facts(elog: EventLog, path: str, tz_name: str, verdict: str, show: Show) -> dict[str, Any]:
    """Everything ``info`` tells, as the JSON object ``--json`` prints."""
    head = elog.head
    bounds = elog.time_bounds()
    info: dict[str, Any] = {
        "path": path,
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
    by_kind = elog.select(
        "SELECT type, action, sender, COUNT(*) FROM events GROUP BY type, action, sender"
    )
    for kind, action, sender, n in by_kind:
        types[kind] += n
        actions[f"{kind}/{action}"] += n
        senders[sender] += n
    noop = "noop IS NOT NULL" if elog.noops_from is not None else "NULL"
    issued: dict[str, dict[str, int]] = {}
    commands = elog.select(
        f"SELECT target, {noop}, COUNT(*) FROM events WHERE type = 'command' GROUP BY target, 2"
    )
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
        leaderships=_leaderships(elog),
    )
    return info


def _leaderships(elog: EventLog) -> list[dict[str, Any]]:
    """Each leadership of a hot-standby log (``status leader`` events): when, which epoch,
    who led, why, from which seq. Empty for a log that never changed hands."""
    found = elog.select(
        "SELECT seq, ts, data FROM events WHERE type = 'status' AND target = ? AND sender = ? "
        "ORDER BY seq",
        (LEADER, CONTROLLER),
    )
    out: list[dict[str, Any]] = []
    for seq, ts, data in found:
        story = orjson.loads(data) if data else {}
        if isinstance(story, dict):
            out.append({"seq": seq, "ts": ts, **story})
    return out


def _lines(info: dict[str, Any], show: Show) -> list[str]:
    """``info`` for people."""
    tz = show.tz
    types, actions, senders = (Counter(info[k]) for k in ("types", "actions", "senders"))
    lines = [
        f"file       {info['path']}",
        f"log_id     {info['log_id']}",
        f"zone       {info['zone']}",
        f"created    {stamp(info['created'], tz)}",
        f"events     {info['events']} (seq {info['base_seq'] + 1}..{info['head_seq']})",
    ]
    if info["first_ts"] is not None:
        first, last = info["first_ts"], info["last_ts"]
        lines.append(
            f"time       {stamp(first, tz)} .. {stamp(last, tz)[11:]} ({duration(last - first)})"
        )
    lines += [
        f"snapshots  {info['snapshots']}",
        f"digest     {info['digest']} (state at seq {info['head_seq']})",
        f"integrity  {info['integrity']}",
        "by type    " + ", ".join(f"{k} {v}" for k, v in types.most_common()),
        "by action  " + ", ".join(f"{k} {v}" for k, v in actions.most_common()),
        "by sender  " + ", ".join(f"{k} {v}" for k, v in senders.most_common(12)),
    ]
    issued: dict[str, dict[str, int]] = info["commands"]
    if issued:
        parts = []
        for target, entry in sorted(issued.items(), key=lambda kv: -kv[1]["issued"]):
            refused = f" ({entry['refused']} refused)" if entry["refused"] else ""
            name = target.upper() if target in _SHOUTED else target
            parts.append(f"{name} {entry['issued']}{refused}")
        lines.append("commands   " + ", ".join(parts))
        if info["reasons_recorded_from"] is None:
            lines.append(
                "           (this file predates recorded refusals: `events --why` tells them)"
            )
    for lead in info["leaderships"]:
        lines.append(
            f"leader     {clock(lead['ts'], tz)} {lead.get('leader')} leads (epoch "
            f"{lead.get('epoch')}) from seq {lead['seq']}: {lead.get('reason')}"
        )
    for node, life in sorted(show.nodes.items()):
        periods = "; ".join(
            f"{clock(p.joined_ts, tz, ms=False)}-"
            + (clock(p.left_ts, tz, ms=False) if p.left_ts is not None else "end")
            + (f" ({p.leave_reason})" if p.leave_reason and p.leave_reason != "restarted" else "")
            for p in life.periods
        )
        restarts = f", {len(life.restarts)} restart(s)" if life.restarts else ""
        lines.append(f"node       {node:<16} online {periods}{restarts}")
        for r in life.restarts:
            lines.append(
                f"           restarted at {clock(r['ts'], tz)} after "
                f"{r['away_s']} s away, resumed from seq {r['resumed_from']} by {r['catchup']}"
            )
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    with read_log(args.log) as elog:
        verdict = verify_log(elog, progress=progress_wanted(args.quiet))
    for line in verdict.problems:
        print(f"FAIL {line}")
    if verdict.problems:
        return 1
    print(
        f"OK {args.log}: seqs {verdict.base_seq + 1}..{verdict.head} gapless, "
        f"{verdict.snapshots} snapshots match, digest {verdict.digest}"
    )
    return 0
