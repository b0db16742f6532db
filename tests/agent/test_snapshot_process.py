"""Snapshots taken while writes keep coming, on real agent processes: a follower that missed a
compacted range catches up from one with every key, and a member killed with -9 comes back
from its own."""

from __future__ import annotations

import asyncio
import random

import pytest

from agent.client import ControlError
from shell.devcluster import LocalCluster, b64
from tests.agent.conftest import ClusterRunner, eventually, logs_of

pytestmark = pytest.mark.process

PREFIX = "/snap/"


async def state(cluster: LocalCluster, node: str) -> dict[str, tuple[str, int]] | None:
    """Every key under PREFIX on ``node``: value and mod revision (None if it cannot answer)."""
    try:
        rows = await cluster.get_prefix(node, PREFIX)
    except (ControlError, OSError):
        return None
    return {r["key"]: (r["value"], int(r["mod_revision"])) for r in rows}


async def writer(
    cluster: LocalCluster, client: int, keys: int, rng: random.Random
) -> dict[str, str]:
    """Overwrite this client's own keys (and add new ones); return the last value of each."""
    last: dict[str, str] = {}
    for n in range(60):
        key = (
            f"{PREFIX}{rng.randrange(keys) // 4 * 4 + client:05d}"
            if n % 3
            else f"{PREFIX}new-{client}-{n}"
        )
        value = f"c{client}-{n}"
        await cluster.put(key, value)
        last[key] = value
    return last


def test_follower_catches_up_from_snapshots_taken_while_writes_continue(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3, snapshot_entries=30)
    rng = random.Random(7)

    async def story() -> None:
        leader = await cluster.start()
        follower = next(n for n in cluster.ids if n != leader)
        await cluster.kill(follower)
        keys = 4000  # enough that encoding a snapshot spans many turns of the event loop
        expected: dict[str, str] = {}
        for start in range(0, keys, 100):
            batch = {f"{PREFIX}{i:05d}": f"v{i}" for i in range(start, start + 100)}
            ops = [{"op": "put", "key": b64(k), "value": b64(v)} for k, v in batch.items()]
            await cluster.call_leader("kv.txn", compare=[], success=ops, failure=[])
            expected |= batch
        # four clients at once: entries keep being applied while snapshots are encoded
        for last in await asyncio.gather(*(writer(cluster, c, keys, rng) for c in range(4))):
            expected |= last
        assert (await cluster.status(leader))["snapshot_index"] > 100  # the leader compacted

        cluster.start_node(follower)
        await cluster.wait_socket(follower)
        leader_state = await state(cluster, leader)
        assert leader_state is not None
        assert {k: v for k, (v, _) in leader_state.items()} == expected

        async def caught_up(node: str) -> bool:
            return await state(cluster, node) == leader_state

        await eventually(lambda: caught_up(follower), 30, "the follower's catch-up")
        assert "installed a snapshot" in cluster.log_path(follower).read_text(), logs_of(cluster)

        # a member killed -9 restarts from its own latest snapshot plus the WAL after it
        await cluster.kill(leader)
        cluster.start_node(leader)
        await cluster.wait_socket(leader)
        await eventually(lambda: caught_up(leader), 30, "the restarted member's state")
        for node in cluster.ids:
            assert await state(cluster, node) == leader_state

    clusters.run(story())
