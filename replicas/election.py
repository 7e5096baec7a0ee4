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

Only this module talks to etcd; the controller's shell asks it and carries out the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    ) -> None:
        host, _, port = endpoint.removeprefix("http://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{endpoint!r} is not an etcd endpoint HOST:PORT")
        self.host, self.port = host, int(port)
        self.name = name
        self.key = f"/cuelog/{cluster}/leader".encode()
        self.ttl = ttl
        self.clock = clock
        #: the epoch of this candidate's leadership (0: not leading)
        self.epoch = 0
        #: until when (monotonic) this candidate may act as leader
        self.valid_until = 0.0
        self._client: Any = None
        self._lease: Any = None

    async def __aenter__(self) -> Election:
        self._client = aetcd.Client(host=self.host, port=self.port, timeout=self.ttl)
        await self._client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    def leading(self) -> bool:
        """Whether this candidate may act as leader now (its lease cannot have expired)."""
        return self.epoch > 0 and self.clock() < self.valid_until

    async def leader(self) -> tuple[str, int] | None:
        """``(name, epoch)`` of the current leader, or None."""
        found = await self._client.get(self.key)
        if found is None:
            return None
        return bytes(found.value).decode(), int(found.create_revision)

    async def try_lead(self) -> int:
        """One attempt: the epoch if this candidate now leads, else 0."""
        client = self._client
        sent = self.clock()
        lease = await client.lease(self.ttl)
        tx = client.transactions
        won, responses = await client.transaction(
            compare=[tx.create(self.key) == 0],
            success=[tx.put(self.key, self.name.encode(), lease=lease)],
            failure=[],
        )
        if not won:
            with contextlib.suppress(Exception):
                await lease.revoke()
            return 0
        self._lease = lease
        self.epoch = int(responses[0].response_put.header.revision)
        self.valid_until = sent + self.ttl - MARGIN
        log.info("%s leads: epoch %d (lease %d s)", self.name, self.epoch, self.ttl)
        return self.epoch

    async def campaign(self, poll: float | None = None) -> int:
        """Wait until this candidate leads; its epoch."""
        every = poll if poll is not None else self.ttl / 4
        while True:
            try:
                epoch = await self.try_lead()
            except Exception as exc:  # etcd away: try again, never lead on a guess
                log.warning("cannot reach etcd at %s:%d: %s", self.host, self.port, exc)
                epoch = 0
            if epoch:
                return epoch
            await asyncio.sleep(every)

    async def refresh(self) -> bool:
        """Renew the lease once; False (and no longer leading) if that failed."""
        if self._lease is None:
            return False
        sent = self.clock()
        try:
            remaining = await self._lease.remaining_ttl()
            if remaining <= 0:
                raise ElectionError("the lease has expired")
            await self._lease.refresh()
        except Exception as exc:
            log.error("%s lost its lease (epoch %d): %s", self.name, self.epoch, exc)
            self.epoch = 0
            return False
        self.valid_until = sent + self.ttl - MARGIN
        return True

    async def keep(self) -> None:
        """Renew the lease every third of its life until it cannot be (then return)."""
        while self.epoch:
            await asyncio.sleep(self.ttl / 3)
            if not await self.refresh():
                return

    async def resign(self) -> None:
        """Give leadership up at once (the others need not wait for the lease to expire)."""
        lease, self._lease, self.epoch = self._lease, None, 0
        if lease is not None:
            with contextlib.suppress(Exception):
                await lease.revoke()
