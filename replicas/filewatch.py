"""The controller's watch over its own log file: a file deleted, replaced or behind the show.

An acknowledged op must survive a restart, so once the file is gone or replaced the
controller acknowledges nothing more (`LogFileGuard.lose_file` saves what it still holds and
says how to go on). A node that holds more of this very log than the controller says the
file is older than the show (`check_ahead`). Each problem is said once, in the log and in
`cuelog status`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from eventlog import CuelogError, EventLog, LogFileError
from eventlog.logctx import ComponentLog
from replicas import messages
from replicas.messages import Error, Hello
from replicas.protocol import Rule
from replicas.sequencer import ControllerCore

log = ComponentLog("cuelog.controller", "controller")

#: besides before every acknowledgement, the log file is checked this often (seconds)
FILE_CHECK_INTERVAL: Final = 1.0
#: problems kept for `cuelog status` (the oldest are forgotten first)
MAX_PROBLEMS: Final = 20


class FileLost(Exception):
    """The log file was deleted or replaced under the controller (see `LogFileGuard.lose_file`)."""

    def __init__(self, error: LogFileError) -> None:
        self.error = error
        super().__init__(str(error))


class LogFileGuard:
    """Problems with one controller's log file, said once each."""

    def __init__(self, db: str) -> None:
        self.db = db
        #: what is wrong with this controller's log, shown by `cuelog status` (oldest first)
        self.problems: list[str] = []
        #: set once the log file is deleted or replaced: from then on nothing is acknowledged
        self.file_problem: str | None = None
        self._ahead_seen: set[tuple[str, int]] = set()

    def problem(self, text: str, seq: int | None = None) -> None:
        """Say once, in the log and in `cuelog status`, what is wrong with this log."""
        log.error("%s", text, seq=seq)
        self.problems.append(text)
        del self.problems[:-MAX_PROBLEMS]

    def check_ahead(self, core: ControllerCore, msg: Hello) -> None:
        """A node that holds more of this very log than this controller does: the controller's
        file is older than the show (restored from a backup, or rolled back). The node sets its
        replica aside (it never wipes it) and follows this log; the operator is told how to
        get the lost events back."""
        node, their_log, after = msg.node, msg.log, msg.after
        if their_log != core.log_id or after <= core.head:
            return
        key = (node, after)
        if key in self._ahead_seen:
            return
        if len(self._ahead_seen) > 1024:
            self._ahead_seen.clear()
        self._ahead_seen.add(key)
        self.problem(
            f"node {node} holds log {core.log_id} up to seq {after}, beyond this controller's "
            f"head {core.head}: {self.db} is behind the show (restored from an older backup?); "
            f"{node} sets its replica file aside and follows this log; to get the missing "
            f"events back, stop this controller and run `cuelog rebuild --from <{node}'s "
            f"set-aside file> --db {self.db} --force`"
        )

    async def watch(self, core: ControllerCore) -> None:
        """Notice a deleted or replaced log file even when nothing is being committed."""
        while self.file_problem is None:
            await asyncio.sleep(FILE_CHECK_INTERVAL)
            try:
                core.elog.check_file()  # two stats
            except LogFileError as exc:
                await self.lose_file(core, exc)

    @staticmethod
    def check(elog: EventLog) -> None:
        """The file is still the one opened, or `FileLost` (call it around a commit)."""
        try:
            elog.check_file()
        except LogFileError as exc:
            raise FileLost(exc) from None

    async def lose_file(self, core: ControllerCore, error: LogFileError) -> None:
        """The log file is gone or replaced: acknowledge nothing more (an acknowledged op must
        survive a restart, and a restart would not find it), save what this controller still
        has open, and say so once."""
        if self.file_problem is not None:
            return
        saved = f"{self.db}.saved-{time.strftime('%Y%m%dT%H%M%S')}"
        self.file_problem = f"log file {error.path}: {error.problem}"
        try:
            await asyncio.to_thread(core.elog.save_copy, saved)
            keep = (
                f"the log up to seq {core.head} is saved as {saved}: stop this controller and "
                f"start it with --db {saved}"
            )
        except CuelogError as exc:
            keep = f"could not save a copy ({exc}): stop this controller"
        self.file_problem += (
            f"; this controller acknowledges nothing more (submits are refused); {keep}, or "
            f"rebuild the log from the node replica furthest ahead: cuelog rebuild --from "
            f"NODE.db --db {self.db}"
        )
        self.problem(self.file_problem, core.head)

    def error(self) -> Error:
        """The answer to every submit once the file is lost."""
        return messages.error(self.file_problem or "the log file is lost", Rule.LOG_FILE)
