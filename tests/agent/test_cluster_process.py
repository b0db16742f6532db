"""Three (and more) real agent processes on loopback: election, replication, failover,
catch-up by log and by snapshot, and membership changes while proposals flow."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest

from agent.client import ControlError
from shell.devcluster import LocalCluster, b64, unb64
from tests.agent.conftest import ClusterRunner, eventually, logs_of

pytestmark = pytest.mark.process


PREFIX = "/t/"


async def propose_many(cluster: LocalCluster, prefix: str, count: int) -> list[str]:
    """Write ``count`` new keys through the leader; return the acknowledged values in order."""
    acked = []
    for i in range(count):
        data = f"{prefix}-{i}"
        await cluster.put(PREFIX + data, data)
        acked.append(data)
    return acked


async def records(cluster: LocalCluster, node: str) -> list[str]:
    """The values under PREFIX on ``node``, in the order they were applied.

    Each test value is written once under its own key, so a version above 1 would mean an
    entry was applied twice.
    """
    rows = await cluster.get_prefix(node, PREFIX)
    assert all(int(r["version"]) == 1 for r in rows), f"{node} applied an entry twice"
    return [r["value"] for r in rows]


async def same_records_everywhere(
    cluster: LocalCluster, nodes: list[str], acked: list[str]
) -> bool:
    seen = []
    for node in nodes:
        try:
            seen.append(await records(cluster, node))
        except (ControlError, OSError):
            return False
    return all(s == seen[0] for s in seen) and all(a in seen[0] for a in acked)


def test_three_agents_elect_a_leader_and_replicate(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        leader = await cluster.start()
        statuses = await cluster.statuses()
        assert {s["leader"] for s in statuses.values()} == {leader}
        assert sorted(statuses[leader]["voters"]) == ["node1", "node2", "node3"]
        acked = await propose_many(cluster, "a", 30)
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked), 10, "all nodes apply"
        )
        applied = await records(cluster, "node2")
        assert applied == acked  # in order, each exactly once

    clusters.run(story())


def test_leader_kill_elects_another_and_loses_nothing(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        old = await cluster.start()
        acked = await propose_many(cluster, "before", 20)
        await cluster.kill(old)
        new = await cluster.wait_leader(exclude=[old], timeout=10)
        assert new != old
        applied = await records(cluster, new)
        assert applied[: len(acked)] == acked, logs_of(cluster)
        acked += await propose_many(cluster, "after", 10)
        # the old leader comes back as a follower and catches up with what it missed
        cluster.start_node(old)
        await cluster.wait_socket(old)
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked),
            15,
            "old leader catches up",
        )
        assert (await cluster.status(old))["role"] == "follower"

    clusters.run(story())


def test_restarted_follower_catches_up_from_the_log(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        leader = await cluster.start()
        follower = next(n for n in cluster.ids if n != leader)
        acked = await propose_many(cluster, "x", 10)
        await cluster.kill(follower)
        acked += await propose_many(cluster, "y", 25)
        cluster.start_node(follower)
        await cluster.wait_socket(follower)
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked), 15, "follower catch-up"
        )
        assert (await cluster.status(follower))["snapshot_index"] == 0  # plain log replay

    clusters.run(story())


def test_follower_that_missed_a_compacted_range_catches_up_by_snapshot(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3, snapshot_entries=20)

    async def story() -> None:
        leader = await cluster.start()
        follower = next(n for n in cluster.ids if n != leader)
        await cluster.kill(follower)
        acked = await propose_many(cluster, "s", 70)
        assert (await cluster.status(leader))["snapshot_index"] >= 40  # the leader compacted
        cluster.start_node(follower)
        await cluster.wait_socket(follower)
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked), 20, "snapshot catch-up"
        )
        assert "installed a snapshot" in cluster.log_path(follower).read_text()
        assert await records(cluster, follower) == acked

    clusters.run(story())


def test_add_a_fourth_member_and_remove_one_while_proposals_flow(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3, tick_ms=50)

    async def story() -> None:
        leader = await cluster.start()
        acked: list[str] = []
        stop = asyncio.Event()

        async def proposer() -> None:
            i = 0
            while not stop.is_set():
                with contextlib.suppress(ControlError):
                    data = f"flow-{i}"
                    await cluster.put(PREFIX + data, data)
                    acked.append(data)
                i += 1

        task = asyncio.create_task(proposer())
        await asyncio.sleep(0.3)
        added = await cluster.add_node("node4")
        assert added["changed"] and "node4" in added["voters"]
        await asyncio.sleep(0.3)
        victim = next(n for n in cluster.ids if n not in (leader, "node4"))
        removed = await cluster.call_leader("remove_member", id=victim, idempotent=True)
        assert victim not in removed["voters"]
        await asyncio.sleep(0.3)
        stop.set()
        await task
        members = [n for n in cluster.ids if n != victim]
        await eventually(
            lambda: same_records_everywhere(cluster, members, acked), 15, "members converge"
        )
        status = await cluster.status(await cluster.wait_leader(exclude=[victim]))
        assert sorted(status["voters"]) == sorted(members)
        assert len(acked) > 10, "proposals kept flowing through both changes"

    clusters.run(story())


def test_paused_leader_is_replaced_and_rejoins_as_follower(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        old = await cluster.start()
        acked = await propose_many(cluster, "p", 5)
        cluster.signal(old, signal.SIGSTOP)
        try:
            new = await cluster.wait_leader(exclude=[old], timeout=10)
            acked += await propose_many(cluster, "q", 5)
        finally:
            cluster.signal(old, signal.SIGCONT)
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked), 15, "paused node rejoins"
        )
        st = await cluster.status(old)
        assert st["role"] == "follower" and st["leader"] == new

    clusters.run(story())


def test_a_follower_forwards_writes_and_answers_from_its_own_state_machine(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        leader = await cluster.start()
        follower = next(n for n in cluster.ids if n != leader)
        first = await cluster.call(follower, "kv.put", key=b64("/f/1"), value=b64("via-follower"))
        second = await cluster.call(leader, "kv.put", key=b64("/f/2"), value=b64("via-leader"))
        assert second["header"]["revision"] == first["header"]["revision"] + 1
        # a linearizable read on the follower sees the leader's write at once
        got = await cluster.call(follower, "kv.get", key=b64("/f/2"))
        assert [unb64(kv["value"]) for kv in got["kvs"]] == ["via-leader"]
        assert (await cluster.call(follower, "read_index"))["index"] >= 5

    clusters.run(story())
