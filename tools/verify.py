"""Verifying a whole log: every seq once, every operation valid, every snapshot re-derived.

A big log is cut at its stored snapshots into segments checked in parallel, one process per
core. The chain of trust holds as in the sequential walk: the first segment folds from the
start (or the file's base snapshot); each later one starts from the stored snapshot at its
start, after checking that snapshot's state against its own digest, and the segment before
it checked that digest against the real fold. So every snapshot equals the fold of everything
before it, and the digest at the head is the whole log's.

`fast_verdict` is what ``replay info`` says at once: the seqs counted gapless and the newest
snapshot re-derived from the one before it, without reading everything.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
from dataclasses import dataclass
from typing import Final

from tqdm import tqdm

from eventlog import (
    DecodeError,
    EventLog,
    State,
    ValidationError,
    apply,
    digest,
    restore,
    validate_operation,
)
from eventlog.state import digest_bytes

#: below this many events the walk stays in this process (starting workers costs more)
PARALLEL_FROM: Final = 50_000
#: about this many events per segment (segments end at stored snapshots)
SEGMENT_EVENTS: Final = 20_000


@dataclass(frozen=True)
class Verdict:
    """What `verify_log` found: no problems means gapless, valid, every snapshot matches."""

    log_id: str
    base_seq: int
    head: int
    snapshots: int
    digest: str
    problems: list[str]


@dataclass(frozen=True)
class _Segment:
    """What one segment's walk found: its problems (with the seq they are at), how far the
    events went without a gap, and the digest of the state at its end."""

    problems: list[tuple[int, str]]
    last: int
    digest: str
    events: int
    #: False when its starting snapshot was damaged (the walk then goes from the start)
    started: bool = True


def _walk(
    elog: EventLog,
    start: int,
    end: int,
    state: State,
    snaps: dict[int, str],
    bar: tqdm | None = None,
) -> _Segment:
    problems: list[tuple[int, str]] = []
    expected = start + 1
    count = 0
    for event in elog.iter_events(after=start, until=end):
        if event.seq != expected:
            problems.append((expected, f"gap: expected seq {expected}, found {event.seq}"))
            break
        try:
            validate_operation(event.op)
        except ValidationError as exc:
            problems.append((event.seq, f"seq {event.seq}: invalid operation: {exc}"))
        apply(state, event)
        if event.seq in snaps and digest(state) != snaps[event.seq]:
            problems.append((event.seq, f"snapshot at seq {event.seq} does not match the fold"))
        expected += 1
        count += 1
        if bar is not None and count % 1000 == 0:
            bar.update(1000)
    if bar is not None:
        bar.update(count % 1000)
    return _Segment(problems, expected - 1, digest(state), count)


def _segment(path: str, start: int, end: int) -> _Segment:
    """Walk seqs ``start+1..end`` of the file at `path` from its stored snapshot at `start`,
    or from nothing when `start` is 0 (run in a worker process)."""
    with EventLog.open(path, readonly=True, pin=True) as elog:
        snaps = {seq: dig for seq, _, dig in elog.snapshots() if start < seq <= end}
        if start == 0:
            return _walk(elog, start, end, State(), snaps)
        snap = elog.latest_snapshot(start)
        if snap is None or snap.seq != start:
            return _Segment([(start, f"the snapshot at seq {start} is gone")], start, "", 0)
        try:
            state = restore(snap)  # checks the stored state against its digest
        except DecodeError:
            # reported by `_stored_snapshots`; this segment cannot start from it
            return _Segment([], start, "", 0, started=False)
        return _walk(elog, start, end, state, snaps)


def verify_log(elog: EventLog, progress: bool = False, workers: int | None = None) -> Verdict:
    """Read the whole log (one snapshot of it if `elog` was opened with ``pin``): every seq
    after the base present once, every operation valid, every stored snapshot equal to the
    fold at its seq. The digest is the state's at the head."""
    problems: list[tuple[int, str]] = []
    head = elog.head
    snaps = {seq: dig for seq, _, dig in elog.snapshots()}
    start = elog.base_seq
    state = State()
    if start:
        base = elog.latest_snapshot(start)
        if base is None or base.seq != start:
            return Verdict(
                elog.log_id,
                start,
                head,
                len(snaps),
                "",
                [f"file starts after seq {start} but has no snapshot there"],
            )
        state = restore(base)
    problems.extend((0, text) for text in elog.page_problems())
    workers = workers if workers is not None else (os.cpu_count() or 1)
    cuts = _cuts(start, head, sorted(s for s in snaps if start < s < head))
    parallel = (
        workers >= 2
        and head - start >= PARALLEL_FROM
        and elog.path != ":memory:"
        and len(cuts) >= 3
    )
    bounds = list(itertools.pairwise(cuts)) if parallel else [(start, head)]
    bar = tqdm(total=head - start, unit="ev", disable=not progress)
    try:
        if parallel:
            found = _parallel(elog, bounds, workers, bar)
            if not all(segment.started for segment in found):
                bar.reset()
                bounds = [(start, head)]
                found = [_walk(elog, start, head, state, snaps, bar)]
        else:
            found = [_walk(elog, start, head, state, snaps, bar)]
    finally:
        bar.close()
    last = start  # gapless from the start up to here
    for (a, _), segment in zip(bounds, found, strict=True):
        problems.extend(segment.problems)
        if last == a:
            last = segment.last
    problems.extend(_stored_snapshots(elog))
    problems.sort()
    texts = list(dict.fromkeys(text for _, text in problems))
    if last != head and not any(t.startswith("gap:") for t in texts):
        texts.append(f"events stop at seq {last}, head is {head}")
    return Verdict(elog.log_id, elog.base_seq, head, len(snaps), found[-1].digest, texts)


def _stored_snapshots(elog: EventLog) -> list[tuple[int, str]]:
    """Every stored snapshot's state against its own digest (a hash of the stored bytes: a
    node that catches up from a damaged one would refuse it)."""
    problems = []
    for seq, state, dig in elog.select("SELECT seq, state, digest FROM snapshots ORDER BY seq"):
        if not isinstance(state, str) or digest_bytes(state.encode()) != dig:
            problems.append(
                (seq, f"snapshot at seq {seq} is damaged: its state does not match its digest")
            )
    return problems


def _cuts(start: int, head: int, snapshot_seqs: list[int]) -> list[int]:
    """Segment bounds: `start`, snapshots about `SEGMENT_EVENTS` apart, `head`."""
    cuts = [start]
    for seq in snapshot_seqs:
        if seq - cuts[-1] >= SEGMENT_EVENTS and head - seq >= SEGMENT_EVENTS // 2:
            cuts.append(seq)
    cuts.append(head)
    return cuts


def _parallel(
    elog: EventLog, bounds: list[tuple[int, int]], workers: int, bar: tqdm
) -> list[_Segment]:
    """Every segment in a pool of `workers` processes; the first one folds from the start of
    the file, the others from the stored snapshot at their start."""
    results: dict[int, _Segment] = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_segment, elog.path, a, b): a for a, b in bounds}
        for future in concurrent.futures.as_completed(futures):
            segment = future.result()
            results[futures[future]] = segment
            bar.update(segment.events)
    return [results[a] for a, _ in bounds]


def fast_verdict(elog: EventLog) -> tuple[bool, str]:
    """What `verify_log` would say, from what can be checked at once: seqs gapless by count,
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
