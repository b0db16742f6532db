"""kill -9 agents at random moments during a stream of proposals; after every restart each
acknowledged entry is present exactly once, in order, on every member."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from agent.client import ControlError
from shell.devcluster import b64
from tests.agent.conftest import ClusterRunner, eventually, logs_of
from tests.agent.test_cluster_process import PREFIX, records, same_records_everywhere

pytestmark = pytest.mark.process

CYCLES = int(os.environ.get("SHOAL_CRASH_CYCLES", "20"))


def test_kill9_at_random_moments_never_loses_an_acknowledged_entry(
    clusters: ClusterRunner,
) -> None:
    seed = int(os.environ.get("SHOAL_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    cluster = clusters.make(3, tick_ms=50, snapshot_entries=150)

    async def story() -> None:
        await cluster.start()
        acked: list[str] = []
        stop = asyncio.Event()

        async def proposer(worker: int) -> None:
            i = 0
            while not stop.is_set():
                data = f"w{worker}-{i}"
                try:
                    await cluster.call_leader(
                        "kv.put",
                        key=b64(PREFIX + data),
                        value=b64(data),
                        timeout=2.0,
                        retry_for=5.0,
                    )
                except (ControlError, TimeoutError, OSError):
                    pass  # not acknowledged: it may or may not be applied, but never twice
                else:
                    acked.append(data)
                i += 1

        workers = [asyncio.create_task(proposer(w)) for w in range(4)]
        for _ in range(CYCLES):
            await asyncio.sleep(rng.uniform(0.05, 0.6))
            victim = rng.choice(cluster.ids)
            await cluster.kill(victim)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            cluster.start_node(victim)
            await cluster.wait_socket(victim)
        stop.set()
        await asyncio.gather(*workers)
        assert len(acked) > CYCLES, "the proposers got work through between the crashes"
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked), 30, "convergence"
        )
        applied = await records(cluster, cluster.ids[0])  # fails if any entry applied twice
        position = {d: i for i, d in enumerate(applied)}
        missing = [a for a in acked if a not in position]
        assert not missing, f"seed {seed}: acknowledged entries lost: {missing[:5]}"
        for worker in range(4):  # each proposer's acknowledged entries stay in its own order
            mine = [position[a] for a in acked if a.startswith(f"w{worker}-")]
            assert mine == sorted(mine), f"seed {seed}: worker {worker}'s entries out of order"

    try:
        clusters.run(story(), timeout=400)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nreplay: SHOAL_CRASH_SEED={seed}\n{logs_of(cluster)}")
