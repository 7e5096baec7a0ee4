"""``cuelog rebuild``: make a controller's log again from a node's replica file.

A node's replica file (``cuelog node --db``) is a full cuelog log of the controller's log: same
log id, same events, same snapshots. When the controller's file is lost, damaged, or older than
the show, the replica of the node furthest ahead becomes the controller's log again:

    cuelog rebuild --from node-a.db [node-b.db ...] --db controller.db [--force]

Every replica given is verified whole (gapless, valid, snapshots re-derived); they must hold
the same log and agree where they overlap; the one furthest ahead is copied (SQLite's online
backup, so a replica that is still being written is read at one moment), marked as a
controller's log, checked again and given its final name only then. An existing ``--db`` is
never overwritten without ``--force``, and even then it is set aside as
``PATH.replaced-<time>``, never deleted. A controller running on ``--db`` holds its lock: the
rebuild is refused until it stops. Nodes that followed another log meanwhile set their files
aside and resync when the rebuilt controller starts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any

from eventlog import CuelogError, EventLog, LogFileError, UsageError, digest
from eventlog.lockfile import WriterLock
from tools.reading import read_log
from tools.verify import Verdict, verify_log

_SIDE = ("", "-wal", "-shm")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "rebuild",
        help="rebuild a controller's log from node replica files",
        description="Rebuild the controller's log file from node replica files (cuelog node "
        "--db): each is verified whole, they must hold the same log, and the one furthest "
        "ahead is copied, marked as a controller's log and checked again. An existing --db is "
        "set aside (PATH.replaced-TIME), never deleted, and only with --force. Exit 1 if a "
        "replica is damaged, they disagree, or --db is in use.",
    )
    parser.add_argument(
        "--from",
        dest="sources",
        nargs="+",
        required=True,
        metavar="REPLICA",
        help="node replica files (the node's --db, or a file it set aside)",
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="the controller's log file")
    parser.add_argument(
        "--force",
        action="store_true",
        help="if --db exists, set it aside as PATH.replaced-TIME and write the rebuilt log",
    )
    parser.set_defaults(func=run)
    return parser


def _verify(path: str) -> Verdict:
    with read_log(path) as elog:
        verdict = verify_log(elog)
    if verdict.problems:
        more = f" (and {len(verdict.problems) - 1} more)" if len(verdict.problems) > 1 else ""
        raise LogFileError(path, f"is not a sound replica: {verdict.problems[0]}{more}")
    return verdict


def _agree(best: str, best_verdict: Verdict, other: str, verdict: Verdict) -> None:
    """`other` must be a prefix of `best`: the same state at its head."""
    if verdict.head == best_verdict.head:
        if verdict.digest != best_verdict.digest:
            raise LogFileError(other, f"diverges from {best} at seq {verdict.head}")
        return
    with read_log(best) as elog:
        if verdict.head < elog.base_seq:
            return  # the furthest replica starts after it: nothing to compare
        ours = digest(elog.state_at(verdict.head))
    if ours != verdict.digest:
        raise LogFileError(other, f"diverges from {best} at seq {verdict.head}")


def _copy(source: str, target: str) -> None:
    """SQLite's online backup of `source` (read at one moment) into a new file `target`."""
    uri = Path(source).absolute().as_uri() + "?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True)
        try:
            out = sqlite3.connect(target)
            try:
                src.backup(out)
            finally:
                out.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise LogFileError(target, f"cannot be written: {exc}") from None


def _remove(path: str) -> None:
    for suffix in _SIDE:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def _set_aside(path: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    aside, n = f"{path}.replaced-{stamp}", 1
    while any(os.path.exists(aside + suffix) for suffix in _SIDE):
        n += 1
        aside = f"{path}.replaced-{stamp}-{n}"
    for suffix in _SIDE:
        if os.path.exists(path + suffix):
            os.rename(path + suffix, aside + suffix)
    return aside


def rebuild(sources: list[str], db: str, force: bool = False) -> str:
    """Rebuild `db` from the replica files `sources`; return a one-line summary."""
    target = os.path.abspath(db)
    for source in sources:
        if os.path.abspath(source) == target:
            raise UsageError(f"{source} is the --db itself: rebuild into another path")
    verdicts = {source: _verify(source) for source in sources}
    logs = {v.log_id for v in verdicts.values()}
    if len(logs) > 1:
        listed = ", ".join(f"{s} holds {v.log_id}" for s, v in verdicts.items())
        raise UsageError(f"these replicas hold different logs ({listed}): give one log's files")
    best = max(sources, key=lambda s: verdicts[s].head)
    for source in sources:
        if source != best:
            _agree(best, verdicts[best], source, verdicts[source])
    chosen = verdicts[best]
    if os.path.exists(db) and not force:
        raise UsageError(
            f"{db} exists: not overwriting it (--force sets it aside as {db}.replaced-TIME "
            "and writes the rebuilt log)"
        )
    if not os.path.isdir(os.path.dirname(target)):
        raise LogFileError(db, "cannot be written: its folder does not exist")
    lock = WriterLock.acquire(db, {"what": "cuelog rebuild"})  # no controller may run on it
    try:
        temp = f"{db}.rebuild-{os.getpid()}"
        _remove(temp)
        try:
            _copy(best, temp)
            with EventLog.open(temp, owner={"what": "cuelog rebuild"}) as elog:
                elog.set_role("controller")
            with EventLog.open(temp, role="controller", check=True) as elog:
                if (elog.log_id, elog.head) != (chosen.log_id, chosen.head):
                    raise LogFileError(temp, "does not hold what it was copied from")
                if digest(elog.state) != chosen.digest:
                    raise LogFileError(temp, "does not fold to the digest of its source")
            aside = _set_aside(db) if os.path.exists(db) else None
            os.rename(temp, db)
        except BaseException:
            _remove(temp)
            raise
    finally:
        lock.release()
    start = (
        f"seqs {chosen.base_seq + 1}..{chosen.head}"
        if not chosen.base_seq
        else f"a snapshot at seq {chosen.base_seq} and seqs {chosen.base_seq + 1}..{chosen.head} "
        "(the replica began from a snapshot: the events before it are not in it)"
    )
    kept = f"; the old {db} is kept as {aside}" if aside else ""
    return (
        f"rebuilt {db} from {best}: log {chosen.log_id}, {start}, {chosen.snapshots} "
        f"snapshots, digest {chosen.digest}{kept}; start the controller with --db {db}"
    )


def run(args: argparse.Namespace) -> int:
    try:
        print(rebuild(args.sources, args.db, args.force))
    except OSError as exc:
        raise CuelogError(f"rebuild failed: {exc}") from None
    return 0
