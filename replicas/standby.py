"""A standby controller: it follows the leader's log into its own file and says how far it holds it.

A `Standby` is a node replica (`replicas.node.NodeReplica`) with three differences:
- its id is ``standby:NAME`` (so the leader's status and the log's story name it);
- its file is written with SQLite's ``FULL`` sync (a copy the leader counts on must survive a
  power cut, not only a crash), and it takes a controller's file over (the old leader
  rejoining as a standby): a replica file and a controller's log have the same layout;
- it reports its durable seq (`messages.Copied`) at once after each append and every
  `syncrep.COPIED_INTERVAL` when idle: with a synchronous standby, the leader acknowledges a
  submit only once its standby reported the submit's seq.

What it reports is the file's head, never a seq it holds only in memory (a failing file keeps
the replica in memory, `replicas.replica_file`; a standby then reports nothing new, the leader
gives it up after ``--sync-timeout`` and records in etcd that it runs alone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pynng

from eventlog import Event, EventLog
from replicas import messages, protocol
from replicas.messages import Copied, Error, Ok
from replicas.nngio import guarded
from replicas.node import NodeReplica
from replicas.protocol import Rule
from replicas.showkey import ShowKey
from replicas.syncrep import COPIED_INTERVAL, STANDBY_PREFIX


class Standby(NodeReplica):
    """Follow the leader at `controller` into the file `db`, reporting what it holds."""

    #: always the tail, never a snapshot: a promoted standby's log keeps the whole history
    fetch_mode = "tail"

    def __init__(
        self, name: str, controller: str, db: str | Path, *, key: ShowKey | None = None
    ) -> None:
        super().__init__(f"{STANDBY_PREFIX}{name}", controller, db=db, key=key)
        self.name = name
        self._copied_wake = asyncio.Event()
        #: the last seq the leader took from this standby's report
        self.reported = 0
        self._refused = ""
        self.on_applied = self._applied

    def _open_file(self) -> EventLog:
        assert self.db is not None
        owner = {"what": f"cuelog standby {self.name}", "listen": self.controller}
        elog = EventLog.open(self.db, synchronous="FULL", owner=owner)
        if elog.role != "replica":
            elog.set_role("replica")  # a controller's log (the old leader's) follows now
        return elog

    def _applied(self, events: list[Event]) -> None:
        self._copied_wake.set()

    @property
    def durable(self) -> int | None:
        """The seq the file holds durably (None while it fails, or holds another log)."""
        file, core = self._file, self.core
        if file is None or core is None or not file.healthy:
            return None
        if core.controller_log is None or core.controller_log != file.log_id:
            return None
        return file.elog.head

    def _side_tasks(self, req: Any, contexts: list[Any]) -> list[Coroutine[Any, Any, None]]:
        contexts.append(req.new_context())
        self._copied_wake = asyncio.Event()
        return [self._report(contexts[-1])]

    async def _report(self, ctx: Any) -> None:
        """Say the durable seq at once when it moves, and every `COPIED_INTERVAL` anyway."""
        wake = self._copied_wake
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COPIED_INTERVAL):
                    await wake.wait()
            wake.clear()
            seq = self.durable
            if seq is None or self._welcomed is None or not self._welcomed.is_set():
                continue
            msg = Copied(self.node_id, self.outbox.origin, seq)
            try:
                async with asyncio.timeout(self.request_timeout):
                    await guarded(ctx.asend(messages.encode(msg)))
                    raw = await guarded(ctx.arecv())
                reply = messages.parse_reply(raw, protocol.NNG_MAX_BYTES)
            except (TimeoutError, pynng.NNGException, protocol.ProtocolError):
                continue
            if isinstance(reply, Ok):
                self.reported = seq
                self._refused = ""
            elif isinstance(reply, Error):
                if reply.rule in (Rule.HELLO_FIRST, Rule.NOT_YOURS):
                    self._need_hello()
                elif reply.error != self._refused:  # said once per reason
                    self._refused = reply.error
                    self.log.warning("the leader refused this standby's copy: %s", reply.error)
                await asyncio.sleep(COPIED_INTERVAL)
            if self.durable != seq:
                wake.set()
