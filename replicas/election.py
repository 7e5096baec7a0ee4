"""Who leads: one etcd key, held by a lease, names the controller that serves the show.

cuelog does not decide leadership itself: that is consensus, and etcd (the store Kubernetes
and Patroni trust for exactly this) does it. A candidate grants a lease of ``ttl`` seconds
and, in one transaction, creates ``/cuelog/<cluster>/leader`` with its name under that lease
only if the key does not exist. The one whose transaction succeeds leads; the key's creation
revision is its **epoch**, which only ever goes up (etcd's revisions do), and which nodes use
to refuse everything an older leader sends (`replicas.replica`).

A leader keeps its lease alive; it must stop acknowledging and publishing before the lease
can have expired, even when it is otherwise healthy (a partition from etcd, a long pause).
`Election.leading` answers that on the leader's own monotonic clock: the lease is counted
from the moment its last successful refresh was *sent* (it cannot have been renewed earlier
than that), less a margin. The others wait for the key to go (the lease expired, or the
leader resigned) and try again.

Who may take over is guarded too (the pattern of Patroni's synchronous mode): the key
``/cuelog/<cluster>/sync`` records the last leader and its synchronous standby, or that it
runs alone. Only those two may become the next leader; the transaction that makes one leader
also checks that record is unchanged and writes the new one (the new leader, alone until a
standby catches up). A leader changes the record only in a transaction guarded by its own
leadership (`record_sync`). So a standby that may lack acknowledged ops never leads.

Each candidate also registers ``/cuelog/<cluster>/members/<name>`` (its addresses) under a
lease of its own, so standbys find the leader, the leader knows who may report copies, and
``GET /cluster`` lists them.

Only this module talks to etcd; the controller's shell asks it and carries out the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Final

import aetcd  # type: ignore[import-untyped]

from eventlog.logctx import ComponentLog

log = ComponentLog("cuelog.election")

#: how long a lease lives without a refresh (seconds)
DEFAULT_TTL: Final = 2
#: a leader stops this long before its lease could expire (seconds): clock drift between
#: this host and etcd's, and the time an answer takes to be acted on
MARGIN: Final = 0.3


class ElectionError(Exception):
    """etcd could not be reached or answered nonsense."""


class NameTaken(ElectionError):
    """Another live candidate registered this name."""


#: the key of an etcd record that is not a JSON object (its raw text is the value)
UNREADABLE: Final = "unreadable"


class Election:
    """One candidate for leadership of one cluster (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        name: str,
        *,
        cluster: str = "show",
        ttl: int = DEFAULT_TTL,
        clock: Any = time.monotonic,
        info: dict[str, Any] | None = None,
    ) -> None:
        #: etcd's members ``HOST:PORT`` (comma-separated); on a failure the next one is used
        self.endpoints = [_endpoint(e) for e in endpoint.split(",") if e.strip()]
        if not self.endpoints:
            raise ValueError("give at least one etcd endpoint HOST:PORT")
        self._at = 0
        self.host, self.port = self.endpoints[0]
        self.name = name
        self.cluster = cluster
        self.key = f"/cuelog/{cluster}/leader".encode()
        self.sync_key = f"/cuelog/{cluster}/sync".encode()
        self.members_prefix = f"/cuelog/{cluster}/members/".encode()
        #: what this candidate publishes about itself (its addresses), with its name
        self.info = {**(info or {}), "name": name}
        #: why the last `try_lead` did not lead (for the log; "" when it led or lost a race)
        self.refused = ""
        #: the show's log id, once this candidate leads (it goes into the sync record)
        self.log_id: str | None = None
        #: who the sync record named as the last leader, at the last `try_lead`
        self.last_leader: str | None = None
        self.ttl = ttl
        self.clock = clock
        #: the epoch of this candidate's leadership (0: not leading)
        self.epoch = 0
        #: until when (monotonic) this candidate may act as leader
        self.valid_until = 0.0
        self._client: Any = None
        self._lease: Any = None
        self._member_lease: Any = None
        #: clients left for another member, closed a while later (`next_endpoint`)
        self._retired: list[Any] = []
        self._closing: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> Election:
        await self._connect()
        return self

    async def _connect(self) -> None:
        self.host, self.port = self.endpoints[self._at]
        self._client = aetcd.Client(host=self.host, port=self.port, timeout=self.ttl)
        await self._client.connect()

    async def next_endpoint(self) -> None:
        """After a failure: talk to etcd's next member (leases and keys are the cluster's,
        so a leadership carries over). The old client is closed later, not now: other tasks
        may have calls on it in flight, and closing its channel would cancel them (a
        cancellation no ``except Exception`` sees: the review found the registration's
        keeper dying of it)."""
        old = self._client
        self._at = (self._at + 1) % len(self.endpoints)
        await self._connect()
        if old is not None:
            self._retired.append(old)
            asyncio.get_running_loop().call_later(2 * self.ttl, self._retire_one)

    def _retire_one(self) -> None:
        if self._retired:
            old = self._retired.pop(0)
            self._closing.add(asyncio.ensure_future(_quietly(old.close())))
            self._closing = {task for task in self._closing if not task.done()}

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for client in [self._client, *self._retired]:
            if client is not None:
                await _quietly(client.close())
        self._client = None
        self._retired.clear()

    def leading(self) -> bool:
        """Whether this candidate may act as leader now (its lease cannot have expired)."""
        return self.epoch > 0 and self.clock() < self.valid_until

    async def leader(self) -> tuple[str, int] | None:
        """``(name, epoch)`` of the current leader, or None."""
        found = await self.leader_info()
        return None if found is None else (str(found[0].get("name")), found[1])

    async def leader_info(self) -> tuple[dict[str, Any], int] | None:
        """What the current leader published about itself (name, addresses) and its epoch."""
        found = await self._client.get(self.key)
        if found is None:
            return None
        record = _record(found.value)
        if int(found.lease) == 0:  # put by hand: it would never expire
            record = {**record, "no_lease": True}
        return record, int(found.create_revision)

    async def sync_record(self) -> tuple[dict[str, Any], int] | None:
        """etcd's record of the last leader and its synchronous standby (``leader``,
        ``standby``: None when it ran alone), with the record's revision; None if none yet."""
        found = await self._client.get(self.sync_key)
        if found is None:
            return None
        return _record(found.value), int(found.mod_revision)

    async def try_lead(self, log_id: str | None = None) -> int:
        """One attempt: the epoch if this candidate now leads, else 0 (`refused` says why
        when the sync record does not allow it). `log_id` is the log this candidate's file
        holds (None: no file yet): it must be the show's log the record names."""
        client = self._client
        record = await self.sync_record()
        self.last_leader = None if record is None else record[0].get("leader")
        self.refused = "" if record is None else self._may_not_lead(record[0], log_id)
        if self.refused:
            return 0
        sent = self.clock()
        lease = await client.lease(self.ttl)
        tx = client.transactions
        guard = (
            tx.version(self.sync_key) == 0 if record is None else tx.mod(self.sync_key) == record[1]
        )
        show_log = log_id or (record[0].get("log") if record is not None else None)
        fresh = {"leader": self.name, "standby": None, "log": show_log}
        won, responses = await client.transaction(
            compare=[tx.create(self.key) == 0, guard],
            success=[
                tx.put(self.key, json.dumps(self.info).encode(), lease=lease),
                tx.put(self.sync_key, json.dumps(fresh).encode()),
            ],
            failure=[],
        )
        if not won:
            with contextlib.suppress(Exception):
                await lease.revoke()
            return 0
        self._lease = lease
        self.log_id = show_log
        self.epoch = int(responses[0].response_put.header.revision)
        self.valid_until = sent + self.ttl - MARGIN
        log.info("%s leads: epoch %d (lease %d s)", self.name, self.epoch, self.ttl)
        return self.epoch

    def _may_not_lead(self, record: dict[str, Any], log_id: str | None) -> str:
        """Why the sync `record` does not let this candidate lead ("" when it does)."""
        if UNREADABLE in record:
            return (
                f"etcd's sync record {self.sync_key.decode()} is unreadable "
                f"({record[UNREADABLE]!r}): no takeover is safe. If no controller leads, "
                "start the one with the highest head (replay info FILE) with --no-ha, or "
                f"delete the key (etcdctl del {self.sync_key.decode()}) and start them again"
            )
        if self.name not in (record.get("leader"), record.get("standby")):
            who = record.get("standby")
            return (
                f"etcd names {record.get('leader')} as the last leader and "
                + (f"{who} as its synchronous standby" if who else "says it ran alone")
                + f": {self.name} may lack acknowledged ops, so it does not take over"
            )
        show_log = record.get("log")
        if show_log and log_id != show_log:
            return (
                f"{self.name}'s file holds {'log ' + log_id if log_id else 'no log'}, not the "
                f"show's log {show_log}: it does not take over (is --db the right file?)"
            )
        return ""

    async def campaign(self, poll: float | None = None) -> int:
        """Wait until this candidate leads; its epoch."""
        every = poll if poll is not None else self.ttl / 4
        while True:
            try:
                epoch = await self.try_lead()
            except Exception as exc:  # etcd away: try again, never lead on a guess
                log.warning("cannot reach etcd at %s:%d: %s", self.host, self.port, exc)
                with contextlib.suppress(Exception):
                    await self.next_endpoint()
                epoch = 0
            if epoch:
                return epoch
            await asyncio.sleep(every)

    async def refresh(self) -> bool:
        """Renew the lease once; False (and no longer leading) if that failed."""
        if self._lease is None:
            return False
        for attempt in range(len(self.endpoints)):
            sent = self.clock()
            if sent >= self.valid_until:
                break
            try:
                reply = await self._client.refresh_lease(self._lease.id)
                if reply is None or int(reply.TTL) <= 0:
                    raise ElectionError("the lease has expired")
                mine = await self._client.get(self.key)
                if (
                    mine is None
                    or int(mine.create_revision) != self.epoch
                    or int(mine.lease) != int(self._lease.id)
                ):
                    raise ElectionError(
                        f"etcd's leader key {self.key.decode()} was changed or removed behind "
                        "this leader"
                    )
            except ElectionError as exc:
                log.error("%s lost its lease (epoch %d): %s", self.name, self.epoch, exc)
                break
            except (Exception, asyncio.CancelledError) as exc:  # this member is away: the next
                if not stray(exc):
                    raise
                log.warning("cannot renew the lease at %s:%d: %s", self.host, self.port, exc)
                if attempt + 1 < len(self.endpoints):
                    with contextlib.suppress(Exception):
                        await self.next_endpoint()
                continue
            self.valid_until = sent + self.ttl - MARGIN
            return True
        log.error("%s no longer leads (epoch %d): its lease was not renewed", self.name, self.epoch)
        self.epoch = 0
        return False

    async def keep(self) -> None:
        """Renew the lease every third of its life until it cannot be (then return)."""
        while self.epoch:
            await asyncio.sleep(self.ttl / 3)
            if not await self.refresh():
                return

    async def claim_override(self, log_id: str | None, head: int) -> bool:
        """This candidate's file holds ops acknowledged under ``--no-ha``: record that only it
        may lead next, unless a leader is already in etcd (False then)."""
        tx = self._client.transactions
        record = {"leader": self.name, "standby": None, "log": log_id, "override_head": head}
        won, _ = await self._client.transaction(
            compare=[tx.create(self.key) == 0],
            success=[tx.put(self.sync_key, json.dumps(record).encode())],
            failure=[],
        )
        return bool(won)

    async def record_sync(self, standby: str | None) -> bool:
        """Record `standby` as this leader's synchronous standby (None: it runs alone), in a
        transaction that succeeds only while this candidate's leadership is the one in etcd.
        False if it is not (this leadership is over)."""
        if not self.epoch:
            return False
        tx = self._client.transactions
        record = {"leader": self.name, "standby": standby, "log": self.log_id}
        won, _ = await self._client.transaction(
            compare=[tx.create(self.key) == self.epoch],
            success=[tx.put(self.sync_key, json.dumps(record).encode())],
            failure=[],
        )
        return bool(won)

    async def register(self, **more: Any) -> None:
        """Publish this candidate (its addresses, and `more`: its standby's op-id origin)
        under a lease of its own; `keep_member` keeps it alive."""
        self.info.update(more)
        if self._member_lease is not None:  # it may have run out (a wait, an etcd election)
            alive = await self._client.refresh_lease(self._member_lease.id)
            if alive is None or int(alive.TTL) <= 0:
                self._member_lease = None
        if self._member_lease is None:
            self._member_lease = await self._client.lease(max(self.ttl, 2))
        key = self.members_prefix + self.name.encode()
        tx = self._client.transactions
        value = json.dumps(self.info).encode()
        lease = self._member_lease
        # only if no other process holds the name: absent, or under this one's own lease
        won, _ = await self._client.transaction(
            compare=[tx.version(key) == 0],
            success=[tx.put(key, value, lease=lease)],
            failure=[],
        )
        if won:
            return
        found = await self._client.get(key)
        if found is not None and int(found.lease) != int(lease.id):
            self._member_lease = None  # not kept: it would run out while this one waits
            with contextlib.suppress(Exception):
                await lease.revoke()
            raise NameTaken(
                f"another candidate named {self.name} is registered in etcd "
                f"({_record(found.value).get('listen')}): give each a unique --name"
            )
        await self._client.put(key, value, lease=lease)

    async def keep_member(self) -> None:
        """Keep this candidate's registration alive (registering again if it lapsed)."""
        said = 0.0
        while True:
            await asyncio.sleep(max(self.ttl, 2) / 3)
            try:
                if self._member_lease is None:
                    await self.register()
                else:
                    reply = await self._client.refresh_lease(self._member_lease.id)
                    if reply is None or int(reply.TTL) <= 0:
                        self._member_lease = None
                        await self.register()
            except (Exception, asyncio.CancelledError) as exc:
                if not stray(exc):
                    raise
                if self.clock() - said >= 5.0:  # said every 5 s at most
                    said = self.clock()
                    log.warning("cannot renew %s's registration in etcd: %s", self.name, exc)
                self._member_lease = None

    async def members(self) -> dict[str, dict[str, Any]]:
        """Every registered candidate's record, by name."""
        found = await self._client.get_prefix(self.members_prefix)
        out: dict[str, dict[str, Any]] = {}
        for kv in found:
            name = bytes(kv.key)[len(self.members_prefix) :].decode(errors="replace")
            out[name] = _record(kv.value)
        return out

    async def resign(self) -> None:
        """Give leadership up at once (the others need not wait for the lease to expire)."""
        lease, self._lease, self.epoch = self._lease, None, 0
        if lease is not None:
            with contextlib.suppress(Exception):
                await lease.revoke()


def _record(value: Any) -> dict[str, Any]:
    """A JSON object stored in etcd; anything else is ``{UNREADABLE: its text}``."""
    raw = bytes(value)
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    if isinstance(found, dict):
        return found
    return {UNREADABLE: raw[:200].decode(errors="replace")}


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.strip().removeprefix("http://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{text!r} is not an etcd endpoint HOST:PORT")
    return host, int(port)


async def _quietly(call: Any) -> None:
    """Await `call`, whatever it raises (closing a client that already failed)."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await call


def stray(exc: BaseException) -> bool:
    """Whether `exc` is an error to handle: any `Exception`, or a cancellation that is not
    this task's own (an etcd channel closed under a call in flight)."""
    if not isinstance(exc, asyncio.CancelledError):
        return isinstance(exc, Exception)
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0
