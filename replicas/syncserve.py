"""The leader's side of the synchronous standby: copies in, held answers out, etcd's record.

`SyncLeader` is a mixin of `replicas.controller.Controller` (its shell), carrying out what the
`replicas.syncrep.SyncGate` core decides: a standby's ``copied`` report (checked: the
connection said hello as that standby and proves its origin) releases answers; a silent
standby is given up on time; who the synchronous standby is goes into etcd through
`record_sync` (the election's transaction guarded by this leadership) before anything is
answered alone. Every answer still checks the lease on this process's clock as it goes out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from eventlog import InputError
from eventlog.logctx import ComponentLog
from replicas import messages, nngio
from replicas.admission import SubmitReply
from replicas.messages import Copied, Error, Message
from replicas.protocol import Rule
from replicas.syncrep import NO_CHANGE, STANDBY_PREFIX, SyncGate

if TYPE_CHECKING:
    from replicas.sequencer import ControllerCore

log = ComponentLog("cuelog.controller", "controller")

#: how often (seconds) the gate is looked at for a silent standby and etcd's record
SYNC_TICK: Final = 0.05
#: after etcd failed to take the synchronous standby's record, try again this much later (s)
RECORD_RETRY: Final = 0.25


class SyncLeader:
    """The synchronous standby's handling for a controller (see the module docstring)."""

    core: ControllerCore | None
    sync: SyncGate[tuple[int, SubmitReply]] | None
    record_sync: Callable[[str | None], Awaitable[bool]] | None
    leading: Callable[[], bool]

    def _answer(self, answers: list[tuple[int, SubmitReply]]) -> None:
        raise NotImplementedError

    def _copied(self, msg: Copied, pipe: Any) -> Message:
        """A standby's durable seq: answers waiting for it may go out."""
        core = self.core
        assert core is not None
        if not msg.node.startswith(STANDBY_PREFIX):
            raise InputError(f"{msg.node} is not a standby (their ids are {STANDBY_PREFIX}NAME)")
        session = core.session_of(msg.node, nngio.pipe_id(pipe), time.monotonic())
        if session is not None and session.inst != msg.inst:
            raise InputError(f"this connection said hello with origin {session.inst}")
        if self.sync is None:
            raise InputError("this controller was not started with --ha: it has no standbys")
        try:
            released = self.sync.copied(
                msg.node.removeprefix(STANDBY_PREFIX), msg.seq, time.monotonic(), msg.inst
            )
        except ValueError as exc:
            raise InputError(str(exc)) from None
        self._release(released)
        return messages.Ok(core.log_id, core.head, time.time(), core.epoch)

    def _release(self, answers: list[tuple[int, SubmitReply]]) -> None:
        if answers and self.leading():
            self._answer(answers)
        elif answers:  # the lease may have run out: a new leader need not have these
            self._answer([(token, not_leading()) for token, _ in answers])

    def _pipe_closed(self, conn: int, mono: float) -> None:
        core = self.core
        if core is None:
            return
        session = core.sessions.get(conn)
        if (
            self.sync is not None
            and session is not None
            and session.node.startswith(STANDBY_PREFIX)
        ):
            self.sync.forget(session.node.removeprefix(STANDBY_PREFIX))
        core.pipe_closed(conn, mono)

    async def _sync_keeper(self, gate: SyncGate[tuple[int, SubmitReply]]) -> None:
        """Give a silent synchronous standby up in time, and keep etcd's record of who the
        synchronous standby is (a leader answers alone only once etcd says it runs alone)."""
        core = self.core
        assert core is not None
        retry_at = said = 0.0
        while True:
            await asyncio.sleep(SYNC_TICK)
            now = time.monotonic()
            self._release(gate.tick(now))
            value = gate.want
            if value is NO_CHANGE or self.record_sync is None or now < retry_at:
                continue
            gate.write_started(value)
            try:
                ok = await self.record_sync(value)
            except Exception as exc:  # etcd away: nothing is answered alone meanwhile
                gate.written(value, False)
                retry_at = time.monotonic() + RECORD_RETRY
                if retry_at - said >= 2.0:
                    said = retry_at
                    log.error(
                        "cannot record in etcd who the synchronous standby is (%s): %s; "
                        "answers wait (retrying)",
                        value or "none",
                        exc,
                        seq=core.head,
                    )
                continue
            if not ok:
                log.error(
                    "etcd refused the record (standby %s): this leadership is over",
                    value or "none",
                    seq=core.head,
                )
                retry_at = time.monotonic() + RECORD_RETRY
            elif value is None:
                log.warning(
                    "the synchronous standby is gone: recorded in etcd that this leader runs "
                    "alone (no takeover is allowed until a standby has caught up again)",
                    seq=core.head,
                )
            else:
                log.info("standby %s is synchronous (recorded in etcd)", value, seq=core.head)
            self._release(gate.written(value, ok))


def not_leading() -> Error:
    return messages.error(
        "this controller does not lead now (its lease may have expired): send it to the leader",
        Rule.NOT_LEADER,
    )
