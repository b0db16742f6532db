"""agent/concurrency.py against real agents: proclaim and resign for a leader from any client
(etcd's LeaderKey), guarded by the leader key's create revision, and the holder's watch on its
own key (``Election.changes``/``lost``)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.client import ControlClient
from agent.concurrency import (
    Election,
    Leader,
    LeadershipChanged,
    LeadershipLost,
    Session,
    current_leader,
    observe,
    proclaim_as,
    resign_as,
)
from shell.devcluster import LocalCluster
from tests.agent.conftest import ClusterRunner, eventually

pytestmark = pytest.mark.process


async def connect(cluster: LocalCluster, node: str) -> ControlClient:
    return await ControlClient.connect(str(cluster.socket_path(node)))


async def get(client: ControlClient, key: bytes) -> dict[str, Any] | None:
    got = await client.call("kv.get", key=base64.b64encode(key).decode())
    return got["kvs"][0] if got["kvs"] else None


async def next_of(iterator: AsyncIterator[Any], timeout: float = 10.0) -> Any:
    return await asyncio.wait_for(iterator.__anext__(), timeout)


def test_proclaim_from_another_client_changes_what_everyone_sees_and_keeps_the_lease(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        await cluster.start()
        holder, other, watcher = [await connect(cluster, n) for n in ("node1", "node2", "node3")]
        session = await Session.open(holder, ttl=10)
        election = Election(session, "jobs")
        await election.campaign(b"alice")
        changes = election.changes()
        seen = observe(watcher, "jobs")
        first = await next_of(seen)
        assert first is not None and first.value == b"alice"
        assert first.lease == session.lease_id and first.key == election.key

        leader = await current_leader(other, "jobs")
        assert leader == first
        updated = await proclaim_as(other, leader, b"alice-draining")
        assert updated.value == b"alice-draining"
        assert updated.create_revision == leader.create_revision

        # the holder's own watch reports it, and so do observers; still the same key, same lease
        assert await next_of(changes) == b"alice-draining"
        now = await next_of(seen)
        assert now == Leader(
            election.key, b"alice-draining", leader.create_revision, session.lease_id
        )
        kv = await get(other, election.key)
        assert kv is not None and int(kv["lease"]) == session.lease_id

        # a proclaim by the holder itself shows up on its watch too
        await election.proclaim(b"alice-2")
        assert await next_of(changes) == b"alice-2"

        # the key still belongs to the session: ending it takes the key away
        await changes.aclose()
        await session.close()
        assert await get(other, election.key) is None
        assert await current_leader(other, "jobs") is None
        assert await next_of(seen) is None
        await seen.aclose()
        for c in (holder, other, watcher):
            await c.close()

    clusters.run(story())


def test_resign_hands_over_and_stale_leader_keys_change_nothing(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        await cluster.start()
        c1, c2, c3 = [await connect(cluster, n) for n in ("node1", "node2", "node3")]
        s1, s2 = await Session.open(c1, ttl=10), await Session.open(c2, ttl=10)
        first, second = Election(s1, "svc"), Election(s2, "svc")
        await first.campaign(b"a")
        lost = asyncio.create_task(first.lost())
        waiting = asyncio.create_task(second.campaign(b"b"))

        async def queued() -> bool:
            return await get(c3, second.key) is not None

        await eventually(queued, 10, "the second candidate to queue up")
        assert not waiting.done()
        stale = await current_leader(c3, "svc")
        assert stale is not None and stale.key == first.key

        await resign_as(c3, stale)  # another client makes the leader resign
        await asyncio.wait_for(waiting, 10)  # the next candidate leads
        assert await asyncio.wait_for(lost, 10) == "resigned by another client"
        leader = await current_leader(c3, "svc")
        assert leader is not None and (leader.key, leader.value) == (second.key, b"b")

        # the old leader key is stale: neither proclaim nor resign does anything
        with pytest.raises(LeadershipChanged, match="leadership changed; not proclaimed"):
            await proclaim_as(c3, stale, b"x")
        with pytest.raises(LeadershipChanged, match="leadership changed; not resigned"):
            await resign_as(c3, stale)
        assert await current_leader(c3, "svc") == leader
        assert await get(c3, first.key) is None

        # the same key made again (same lease, campaigning anew) is a new candidacy: the stale
        # LeaderKey's create revision no longer matches, so it still cannot act for it
        rejoin = asyncio.create_task(first.campaign(b"a-again"))

        async def back() -> bool:
            return await get(c3, first.key) is not None

        await eventually(back, 10, "the first client to campaign again")
        with pytest.raises(LeadershipChanged):
            await proclaim_as(c3, stale, b"x")
        kv = await get(c3, first.key)
        assert kv is not None and base64.b64decode(kv["value"]) == b"a-again"

        # the holder of a session that ends is told why, not "resigned"
        watch = asyncio.create_task(second.lost())
        await asyncio.sleep(0.2)
        await c3.call("lease.revoke", id=s2.lease_id)
        reason = await asyncio.wait_for(watch, 10)
        assert "expired" in reason or "lease" in reason, reason
        await asyncio.wait_for(rejoin, 10)  # and the first client leads again
        with pytest.raises(LeadershipLost):
            async for _ in second.changes():
                pass
        for s in (s1, s2):
            await s.close()
        for c in (c1, c2, c3):
            await c.close()

    clusters.run(story())
