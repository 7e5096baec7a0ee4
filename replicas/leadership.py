"""A controller's leaderships: each begins with its story in the log, and tells replicas where an
old leader's tail begins.

`Leadership` is a mixin of `replicas.sequencer.ControllerCore` (no I/O). A leadership's first
event is status ``leader`` from the controller: its epoch (etcd's, only ever higher), who leads,
why, from which seq (`begin_epoch`). Those events make the table of leaderships, which says
where what a replica holds may differ from this log (`fork_point`): what it applied from the
start of the first leadership after the one it followed came from a leader whose tail the next
one never had.
"""

from __future__ import annotations

import contextlib

import orjson

from eventlog import (
    CONTROLLER,
    LEADER,
    NODE_LEFT,
    ActionType,
    EventLog,
    Operation,
    OperationType,
    Submission,
)
from eventlog.logctx import ComponentLog
from replicas.membership import NodeInfo, node_op
from replicas.syncrep import STANDBY_PREFIX

log = ComponentLog("cuelog.sequencer", "controller")


class Leadership:
    """The leaderships of a controller's log (see the module docstring)."""

    elog: EventLog
    epoch: int
    epoch_start: int
    leaderships: list[tuple[int, int]]
    nodes: dict[str, NodeInfo]

    @property
    def head(self) -> int:
        raise NotImplementedError

    def begin_epoch(self, epoch: int, name: str, reason: str) -> list[Submission]:
        """This controller leads from now on, under `epoch` (higher than any before it: the
        election's). Returns the leadership's first operations, to commit (`internal`) before
        anything else:
        status ``leader`` with the epoch, who leads and why, so `replay` tells the failover.
        The epoch goes into the log's meta: a restart on this file keeps it."""
        if epoch <= self.epoch:
            raise ValueError(f"epoch {epoch} is not above this controller's {self.epoch}")
        self.epoch = epoch
        self.epoch_start = self.head + 1
        self.leaderships.append((epoch, self.epoch_start))
        self.elog.set_epoch(epoch)
        story = {"epoch": epoch, "leader": name, "reason": reason, "from_seq": self.epoch_start}
        op = Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, LEADER, story)
        log.warning("%s leads from seq %d: epoch %d (%s)", name, self.epoch_start, epoch, reason)
        subs = [Submission(op)]
        standby = f"{STANDBY_PREFIX}{name}"
        if self.elog.state.nodes.get(standby, {}).get("online"):  # it was this one: it left
            subs.append(node_op(NODE_LEFT, standby, reason="promoted"))
        self.nodes.pop(standby, None)
        return subs

    def override(self, name: str) -> list[Submission]:
        """`name` serves this log without an election (``--no-ha``: etcd lost its majority).
        Its story goes into the log like a leadership's, under the same epoch, marked
        ``override``: a candidate started on this file later knows it holds ops acknowledged
        outside the election (`replicas.candidate`)."""
        story = {
            "epoch": self.epoch,
            "leader": name,
            "reason": "--no-ha: serving without an election",
            "from_seq": self.head + 1,
            "override": True,
        }
        log.warning("%s serves without an election from seq %d (--no-ha)", name, self.head + 1)
        return [
            Submission(
                Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, LEADER, story)
            )
        ]

    def fork_point(self, epoch: int) -> int:
        """The first seq a replica that last followed leader `epoch` may hold differently from
        this log: where the first leadership after that one began (what it applied from there
        on came from a leader whose tail the next one never had). Told in the welcome; 0 when
        there is none. A log that starts at a snapshot past that replica's leadership cannot
        say where: 1 (everything is checked again)."""
        if epoch >= self.epoch:
            return self.epoch_start
        later = [start for e, start in self.leaderships if e > epoch]
        known = self.elog.base_seq == 0 or any(e <= epoch for e, _ in self.leaderships)
        if not known:
            return 1
        return min(later) if later else self.epoch_start


def leaderships_of(elog: EventLog) -> list[tuple[int, int]]:
    """(epoch, first seq) of each leadership in the log (its ``status leader`` events)."""
    found: list[tuple[int, int]] = []
    rows = elog.select(
        "SELECT seq, data FROM events WHERE type = 'status' AND target = ? AND sender = ? "
        "ORDER BY seq",
        (LEADER, CONTROLLER),
    )
    for seq, data in rows:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            story = orjson.loads(data)
            if not story.get("override"):  # --no-ha: not a leadership of its own
                found.append((int(story["epoch"]), int(seq)))
    return found


def overridden(elog: EventLog) -> int | None:
    """The head of a log whose last leadership story is a ``--no-ha`` override (it holds ops
    acknowledged outside the election), else None."""
    rows = elog.select(
        "SELECT data FROM events WHERE type = 'status' AND target = ? AND sender = ? "
        "ORDER BY seq DESC LIMIT 1",
        (LEADER, CONTROLLER),
    )
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        if rows and orjson.loads(rows[0][0]).get("override"):
            return elog.head
    return None
