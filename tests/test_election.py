"""The controller election against a real etcd (Debian's ``etcd-server``, started here on
loopback ports): one candidate leads, its epoch is etcd's revision (it only goes up), a
leader that stops renewing knows it no longer leads before anyone else can, and the next
candidate takes over within the lease. Without etcd these tests are skipped, except in CI
(``CI`` or ``CUELOG_CI`` set, as ``.ci/run`` does), where they fail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicas.election import MARGIN, UNREADABLE, Election, NameTaken
from tests.ha_rig import Etcd


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    """A one-member etcd on loopback; its client endpoint ``127.0.0.1:PORT``."""
    cluster = Etcd(tmp_path)
    try:
        yield cluster.endpoints
    finally:
        cluster.close()


def test_one_candidate_leads_and_the_epoch_is_etcds_revision(etcd: str) -> None:
    async def scenario() -> None:
        async with Election(etcd, "ctl-a") as a, Election(etcd, "ctl-b") as b:
            epoch = await a.try_lead()
            assert epoch > 0 and a.leading()
            assert await b.try_lead() == 0 and not b.leading()
            assert await b.leader() == ("ctl-a", epoch)
            assert await a.refresh() and a.leading()

    asyncio.run(scenario())


def test_a_leader_that_stops_renewing_stops_leading_before_the_next_one_leads(
    etcd: str,
) -> None:
    """The old leader's own clock says it no longer leads (its lease, counted from the last
    refresh it sent, less a margin) before the next candidate's transaction can succeed: no
    moment with two leaders. The takeover comes within the lease, and its epoch is higher."""

    async def scenario() -> None:
        async with Election(etcd, "ctl-a", ttl=2) as a, Election(etcd, "ctl-b", ttl=2) as b:
            first = await a.campaign()
            assert await a.record_sync("ctl-b")  # b holds everything a acknowledged
            assert await a.refresh()
            refreshed = time.monotonic()
            # a freezes (no more refreshes); b campaigns
            second = await b.campaign(poll=0.05)
            took_over = time.monotonic()
            assert second > first
            assert a.valid_until <= refreshed + 2 - MARGIN < took_over
            assert not a.leading() and b.leading()
            assert took_over - refreshed < 2 + 1.5  # within the lease, and a poll or so
            # the old leader, back, learns it lost: it never leads on its old epoch again
            assert not await a.refresh() and a.epoch == 0

    asyncio.run(scenario())


def test_a_leader_that_resigns_hands_over_at_once(etcd: str) -> None:
    async def scenario() -> None:
        async with Election(etcd, "ctl-a") as a, Election(etcd, "ctl-b") as b:
            first = await a.campaign()
            assert await a.record_sync("ctl-b")
            await a.resign()
            started = time.monotonic()
            second = await b.campaign(poll=0.05)
            assert second > first and time.monotonic() - started < 1.0
            assert await a.leader() == ("ctl-b", second)

    asyncio.run(scenario())


def test_only_the_last_leader_or_its_synchronous_standby_may_take_over(etcd: str) -> None:
    """etcd's sync record guards the takeover: a candidate that may lack acknowledged ops
    (not the last leader, not its synchronous standby) never leads, and says why; a leader
    that lost its leadership cannot change the record."""

    async def scenario() -> None:
        async with (
            Election(etcd, "ctl-a") as a,
            Election(etcd, "ctl-b") as b,
            Election(etcd, "ctl-c") as c,
        ):
            first = await a.campaign()
            await a.resign()  # the record says a ran alone
            assert await b.try_lead() == 0 and "ran alone" in b.refused
            again = await a.try_lead()  # a itself holds everything it acknowledged
            assert again > first
            assert await a.record_sync("ctl-b")
            assert (await a.sync_record() or ({}, 0))[0] == {
                "leader": "ctl-a",
                "standby": "ctl-b",
                "log": None,
            }
            await a.resign()
            assert await c.try_lead() == 0 and "ctl-b" in c.refused
            third = await b.try_lead()
            assert third > again
            # the new leader starts alone; the old one can no longer write the record
            assert not await a.record_sync("ctl-a")
            assert (await b.sync_record() or ({}, 0))[0] == {
                "leader": "ctl-b",
                "standby": None,
                "log": None,
            }

    asyncio.run(scenario())


def test_a_candidate_with_another_log_a_taken_name_or_an_unreadable_record_never_leads(
    etcd: str,
) -> None:
    """The review's defects: a second process under a taken name, or a candidate whose file
    holds another log (or none), never leads; an unreadable sync record blocks every takeover
    and says what to do; a leader whose key was changed behind it stops leading."""

    async def scenario() -> None:
        async with (
            Election(etcd, "ctl-a") as a,
            Election(etcd, "ctl-b") as b,
            Election(etcd, "ctl-b") as twin,
        ):
            await b.register(listen="b")
            with pytest.raises(NameTaken, match="unique --name"):
                await twin.register(listen="b2")
            assert await a.try_lead("log-1") > 0
            a.log_id = "log-1"
            assert await a.record_sync("ctl-b")
            await a.resign()
            assert await b.try_lead(None) == 0 and "not the show's log log-1" in b.refused
            assert await b.try_lead("log-2") == 0 and "holds log log-2" in b.refused
            await a._client.put(b.sync_key, b"\x00not json")
            assert await b.try_lead("log-1") == 0 and "unreadable" in b.refused
            assert "etcdctl del" in b.refused
            await a._client.put(
                b.sync_key, b'{"leader": "ctl-a", "standby": "ctl-b", "log": "log-1"}'
            )
            assert await b.try_lead("log-1") > 0 and b.leading()
            await a._client.put(b.key, b"garbage")  # by hand, no lease
            assert not await b.refresh() and not b.leading()
            found = await a.leader_info()
            assert found is not None and found[0].get("no_lease") and UNREADABLE in found[0]

    asyncio.run(scenario())
