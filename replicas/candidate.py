"""One controller host of a hot-standby pair (``cuelog controller --ha``): stand by, lead, rejoin.

A `Candidate` runs for the life of the process, in turns:

1. **Standby.** It reads who leads from etcd and follows that leader's log into its own file
   (`replicas.standby.Standby`, reporting its durable seq so the leader can acknowledge
   synchronously). When no one leads it tries to (`Election.try_lead`), which etcd allows
   only to the last leader or its synchronous standby; a refusal is logged, with why.
2. **Leader.** It keeps the lease alive from the moment it won, makes its file a controller's
   log, and serves it (`replicas.controller.Controller`) under the new epoch, whose first
   event is the leadership's story (who, why, from which seq). Answers wait for the
   synchronous standby (`replicas.syncrep`). The controller is fenced by the lease on this
   process's own clock: it stops answering and publishing before the lease can have expired.
3. **Rejoin.** When the lease is lost (a partition from etcd, a pause), the controller and
   whatever serves beside it (the UI gateway) stop, and it stands by again. Its tail that
   the new leader never had is set aside by the standby's resync, never overwritten.

The log id stays the same across a promotion, so nodes catch up by tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final

from eventlog import CuelogError, EventLog
from eventlog.logctx import ComponentLog
from replicas.admission import SubmitReply
from replicas.controller import Controller
from replicas.election import DEFAULT_TTL, UNREADABLE, Election, NameTaken, stray
from replicas.leadership import overridden
from replicas.showkey import ShowKey
from replicas.standby import Standby
from replicas.syncrep import DEFAULT_SYNC_TIMEOUT, FOREIGN, SyncGate

log = ComponentLog("cuelog.ha")

#: how often (seconds) a standby looks at etcd for who leads (a takeover waits at most this
#: long after the lease expired)
POLL: Final = 0.1
#: how often (seconds) the leader reads the candidates' registrations
MEMBERS_EVERY: Final = 0.5
#: a refusal to take over (or etcd away) is said at most this often (seconds)
SAY_EVERY: Final = 5.0

#: what runs beside a leading controller (the UI gateway), until cancelled
Serve = Callable[[Controller], Coroutine[Any, Any, None]]


class Candidate:
    """One controller host: standby or leader, decided by etcd (see the module docstring)."""

    def __init__(
        self,
        name: str,
        etcd: str,
        db: str | Path,
        listen: str,
        *,
        cluster: str = "show",
        ttl: int = DEFAULT_TTL,
        sync_timeout: float = DEFAULT_SYNC_TIMEOUT,
        key: ShowKey | None = None,
        ws: str | None = None,
        advertise: str | None = None,
        serve: Serve | None = None,
        controller_options: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.db = str(db)
        self.listen = listen
        self.key = key
        self.serve = serve
        self.sync_timeout = sync_timeout
        self.options = controller_options or {}
        self.election = Election(
            etcd, name, cluster=cluster, ttl=ttl, info={"listen": advertise or listen, "ws": ws}
        )
        #: "standby" or "leader" (and "starting" before etcd answered)
        self.role = "starting"
        #: the controller while leading
        self.controller: Controller | None = None
        #: the standby while standing by
        self.standby: Standby | None = None
        #: every registered candidate (read by the leader)
        self.members: dict[str, dict[str, Any]] = {}
        #: whom this one follows or last followed: ``(name, epoch)``
        self.following: tuple[str, int] | None = None
        #: set each time this candidate begins to lead (for tests and benchmarks)
        self.led = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Stand by, lead, rejoin, until cancelled (or `stop`)."""
        self._task = asyncio.current_task()
        election = self.election
        try:
            await self._until_etcd(election.__aenter__)
            await self._until_etcd(election.register)
            await claim_after_override(election, self.db)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(election.keep_member())
                tasks.create_task(self._turns())
        except asyncio.CancelledError:
            pass
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(election.resign())
            await election.close()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _until_etcd(self, call: Callable[[], Awaitable[Any]]) -> None:
        said = 0.0
        taken_since: float | None = None
        while True:
            try:
                await call()
                return
            except NameTaken as exc:
                # this host's last run may still hold it (killed a moment ago): its lease
                # expires within a few seconds; a live duplicate does not go away
                now = time.monotonic()
                taken_since = now if taken_since is None else taken_since
                if now - taken_since > 3 * max(self.election.ttl, 2):
                    raise CuelogError(str(exc)) from None
                if now - said >= SAY_EVERY:
                    said = now
                    log.warning("%s; waiting in case it is this host's last run", exc)
                await asyncio.sleep(POLL * 5)
                continue
            except Exception as exc:
                if time.monotonic() - said >= SAY_EVERY:
                    said = time.monotonic()
                    log.warning(
                        "%s cannot reach etcd at %s: %s (still trying; without etcd "
                        "no controller may lead: see --no-ha in the README's runbook)",
                        self.name,
                        ",".join(f"{h}:{p}" for h, p in self.election.endpoints),
                        exc,
                    )
                with contextlib.suppress(Exception):
                    await self.election.next_endpoint()
                await asyncio.sleep(POLL * 5)

    async def _turns(self) -> None:
        while True:
            epoch, why = await self._stand_by()
            await self._lead(epoch, why)

    # ------------------------------------------------------------------ standing by

    async def _stand_by(self) -> tuple[int, str]:
        """Follow whoever leads until this candidate leads; ``(epoch, why)``."""
        self.role = "standby"
        election = self.election
        task: asyncio.Task[None] | None = None
        following = ""
        said_refusal = said_etcd = said_self = 0.0
        last: str | None = None
        #: the log id this candidate's file holds, read again only while a standby writes it
        file_log: tuple[str | None] | None = None
        try:
            while True:
                now = time.monotonic()
                if task is not None and task.done() and not task.cancelled():
                    failed = task.exception()
                    if failed is not None:  # its file cannot be opened (another process?)
                        raise failed
                    task, following = None, ""  # it ended by itself: started again below
                try:
                    found = await election.leader_info()
                    if found is None:
                        if task is not None or file_log is None:  # a standby may change it
                            file_log = (await asyncio.to_thread(_log_of, self.db),)
                        epoch = await election.try_lead(file_log[0])
                        if epoch:
                            before = election.last_leader or last
                            why = (
                                "no controller led"
                                if before is None
                                else "it led before and came back"
                                if before == self.name
                                else f"{before}'s lease expired"
                            )
                            return epoch, why
                        if election.refused and now - said_refusal >= SAY_EVERY:
                            said_refusal = now
                            log.error("no takeover: %s", election.refused)
                except (Exception, asyncio.CancelledError) as exc:
                    if not stray(exc):
                        raise
                    if now - said_etcd >= SAY_EVERY:
                        said_etcd = now
                        log.warning("%s cannot reach etcd: %s", self.name, exc)
                    with contextlib.suppress(Exception):
                        await election.next_endpoint()
                    await asyncio.sleep(POLL)
                    continue
                if found is not None:
                    info, epoch = found
                    leader = str(info.get("name"))
                    last = leader
                    address = str(info.get("listen") or "")
                    odd = UNREADABLE in info or info.get("no_lease") or not address
                    if odd and now - said_self >= SAY_EVERY:
                        said_self = now
                        log.error(
                            "etcd's leader key %s is not a candidate's record (%s): no takeover "
                            "until it is gone; if no controller leads, delete it (etcdctl del "
                            "%s)",
                            election.key.decode(),
                            {k: v for k, v in info.items() if k != "name"} or info,
                            election.key.decode(),
                        )
                    elif leader == self.name:
                        if now - said_self >= SAY_EVERY:  # a lease of this host's last life
                            said_self = now
                            log.info("etcd still names %s (a lease of its last run)", leader)
                    elif address and address != following:
                        if task is not None:
                            await self._stop_standby(task)
                        following = address
                        self.following = (leader, epoch)
                        log.info(
                            "%s stands by: following leader %s at %s (epoch %d) into %s",
                            self.name,
                            leader,
                            address,
                            epoch,
                            self.db,
                        )
                        self.standby = Standby(self.name, address, self.db, key=self.key)
                        # the leader counts copies only from the connection proving this origin
                        with contextlib.suppress(Exception):
                            await election.register(standby=self.standby.outbox.origin)
                        task = asyncio.create_task(self.standby.run())
                await asyncio.sleep(POLL)
        finally:
            if task is not None:
                await self._stop_standby(task)

    async def _stop_standby(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        self.standby = None

    # ------------------------------------------------------------------ leading

    async def _lead(self, epoch: int, why: str) -> None:
        """Serve the log under `epoch` until the lease is lost."""
        election = self.election
        self.role = "leader"
        keeper = asyncio.create_task(election.keep())  # from the moment it won
        gate: SyncGate[tuple[int, SubmitReply]] = SyncGate(self.sync_timeout)
        try:
            controller = Controller(
                self.db,
                self.listen,
                key=self.key,
                leading=election.leading,
                check=False,  # this process wrote the file as the standby until now
                adopt=True,  # the standby's file is the controller's log from now on
                begin=lambda core: core.begin_epoch(epoch, self.name, why),
                sync=gate,
                record_sync=election.record_sync,
                cluster=lambda: self._cluster(epoch),
                **self.options,
            )
            self.controller = controller
            async with asyncio.TaskGroup() as tasks:
                running = tasks.create_task(controller.run())
                served: asyncio.Task[None] | None = None
                if self.serve is not None:
                    served = tasks.create_task(self.serve(controller))
                members = tasks.create_task(self._read_members(gate))
                await controller.ready.wait()
                assert controller.core is not None
                election.log_id = controller.core.log_id
                self.led.set()
                await asyncio.wait({keeper, running}, return_when=asyncio.FIRST_COMPLETED)
                log.error(
                    "%s no longer leads (epoch %d): stopping the controller%s; it stands by again",
                    self.name,
                    epoch,
                    " and the UI gateway" if served is not None else "",
                )
                for task in (running, served, members):
                    if task is not None:
                        task.cancel()
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keeper
            self.controller = None
            self.led.clear()
            with contextlib.suppress(Exception):
                await asyncio.shield(election.resign())

    async def _read_members(self, gate: SyncGate[Any]) -> None:
        """The candidates (and their standbys' origins), and etcd's sync record read back: a
        record changed behind this leader is written again."""
        election = self.election
        while True:
            try:
                self.members = await election.members()
                gate.members = {
                    name: str(info.get("standby") or "") for name, info in self.members.items()
                }
                found = await election.sync_record()
                record = found[0] if found is not None else {}
                mine = (
                    record.get("leader") == self.name
                    and UNREADABLE not in record
                    and record.get("log") in (None, election.log_id)
                )
                if gate.seen_record(record.get("standby") if mine else FOREIGN):
                    log.error(
                        "etcd's sync record %s was changed behind this leader (%s): writing "
                        "it again",
                        election.sync_key.decode(),
                        record,
                    )
            except (Exception, asyncio.CancelledError) as exc:
                if not stray(exc):
                    raise
            await asyncio.sleep(MEMBERS_EVERY)

    def _cluster(self, epoch: int) -> dict[str, Any]:
        return {
            "leader": self.name,
            "epoch": epoch,
            "ttl_s": self.election.ttl,
            "valid_for_s": round(max(0.0, self.election.valid_until - time.monotonic()), 3),
            "candidates": {
                name: {k: v for k, v in info.items() if k != "name"}
                for name, info in sorted(self.members.items())
            },
        }


def _log_of(db: str) -> str | None:
    """The log id the file at `db` holds (None: no file, or an empty one)."""
    if db == ":memory:" or not Path(db).exists():
        return None
    try:
        with EventLog.open(db, readonly=True) as elog:
            return elog.log_id if elog.head > 0 else None
    except CuelogError:
        return None


async def claim_after_override(
    election: Election, db: str, *, head: Callable[[], int] | None = None
) -> None:
    """If the file at `db` was last served with ``--no-ha`` (or `head` says so: it is being
    served so now), record in etcd that only this candidate may lead next: the other one
    lacks what was acknowledged meanwhile. Waits for etcd; raises `CuelogError` if another
    controller already leads there (two logs: the operator must choose)."""
    found = await asyncio.to_thread(_overridden_of, db) if head is None else None
    if head is None and found is None:
        return
    said = 0.0
    while True:
        try:
            log_id, top = found if found is not None else (election.log_id, head() if head else 0)
            if await election.claim_override(log_id, top):
                log.warning(
                    "recorded in etcd that only %s may lead next: %s holds ops acknowledged "
                    "under --no-ha (to seq %d)",
                    election.name,
                    db,
                    top,
                )
                return
            lead = await election.leader_info()
            if lead is not None and lead[0].get("name") != election.name:
                other = lead[0].get("name")
                raise CuelogError(
                    f"{election.name} serves {db} with --no-ha, but {other} leads under the "
                    "election now that etcd answers: this controller stops (two must never "
                    f"serve the show); its file is kept as it is, to seq {top}"
                    if head is not None
                    else f"{db} holds ops acknowledged under --no-ha (to seq {top}) that "
                    f"leader {other} may lack: stop {other}, then start this candidate first "
                    "(this file is kept as it is)"
                )
        except CuelogError:
            raise
        except (Exception, asyncio.CancelledError) as exc:
            if not stray(exc):
                raise
            if time.monotonic() - said >= SAY_EVERY:
                said = time.monotonic()
                log.warning("cannot record the --no-ha run in etcd yet: %s (still trying)", exc)
            with contextlib.suppress(Exception):
                await election.next_endpoint()
        await asyncio.sleep(POLL * 5)


def _overridden_of(db: str) -> tuple[str, int] | None:
    """``(log id, head)`` of a file last served with ``--no-ha``, else None."""
    if db == ":memory:" or not Path(db).exists():
        return None
    try:
        with EventLog.open(db, readonly=True) as elog:
            head = overridden(elog)
            return None if head is None else (elog.log_id, head)
    except CuelogError:
        return None
