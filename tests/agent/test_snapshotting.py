"""A snapshot is captured at one applied index and encoded while the node goes on applying
entries: it claims the index of its capture, is saved before the log is compacted through that
index, and the entries applied meanwhile stay in the log. Restoring it gives exactly the state
at that index; a restart then replays the rest from the WAL.

One real agent in this process (WAL, snapshot files, TLS listener) whose snapshot is held open
while writes (or a membership change) are applied, restarted from what it saved.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.kv import KVStateMachine
from agent.kv import snapshot as snapshot_codec
from agent.node import Agent, decode_snapshot
from agent.raft.types import ConfChange, ConfChangeOp
from agent.storage import DiskStorage
from shell.devcluster import b64
from tests.agent.onemember import leading, one_member_config
from tests.kv.helpers import observable


def put(key: str, value: str) -> bytes:
    """A KV put as it sits in a log entry."""
    return json.dumps({"v": 1, "op": "put", "key": b64(key), "value": b64(value)}).encode()


class HeldMachine(KVStateMachine):
    """Encodes its snapshots only once the test releases them."""

    def __init__(self) -> None:
        super().__init__()
        self.captured_at: int | None = None
        self.released = False

    def snapshot_steps(self) -> snapshot_codec.Steps:
        steps = super().snapshot_steps()
        self.captured_at = self.store.applied_index

        def held() -> snapshot_codec.Steps:
            while not self.released:
                yield
            return (yield from steps)

        return held()


async def leading_agent(config: AgentConfig, machine: KVStateMachine) -> Agent:
    agent = Agent(config, machine)
    await agent.start()
    await leading(agent)
    return agent


def restored(machine_bytes: bytes) -> KVStateMachine:
    m = KVStateMachine()
    m.restore(machine_bytes)
    return m


def test_a_snapshot_claims_its_capture_and_the_writes_applied_meanwhile_stay_in_the_log(
    tmp_path: Path,
) -> None:
    config = one_member_config(tmp_path)

    async def story() -> None:
        machine = HeldMachine()
        agent = await leading_agent(config, machine)
        assert agent.raft is not None
        for i in range(50):
            await agent.propose(put(f"key{i}", "before"))
        at_capture = observable(machine.store)
        captured = agent.raft.applied
        compacting = asyncio.ensure_future(agent.compact())
        while machine.captured_at is None:
            await asyncio.sleep(0.001)
        assert machine.captured_at == captured
        for i in range(0, 50, 5):  # applied while the captured state is being encoded
            await agent.propose(put(f"key{i}", "during"))
        await agent.propose(put("new", "during"))
        assert agent.raft.first_index == 1  # nothing compacted before the snapshot is saved
        machine.released = True
        index = await compacting
        raft = agent.raft
        assert index == captured and raft.applied == index + 11
        assert raft.snapshot is not None and raft.snapshot.meta.index == index
        assert raft.first_index == index + 1
        assert [e.index for e in raft.log_entries(index + 1, raft.applied + 1)] == list(
            range(index + 1, raft.applied + 1)
        )
        # The snapshot is the state at its index, in the format agents always wrote: the
        # header, then the KV store's own bytes (nothing of the writes applied meanwhile).
        machine_bytes = decode_snapshot(raft.snapshot.data).machine
        assert machine_bytes.startswith(snapshot_codec.MAGIC)
        assert observable(restored(machine_bytes).store) == at_capture
        before = observable(machine.store)
        assert before != at_capture
        last = raft.applied
        await agent.stop()

        storage, rec = DiskStorage.open(config.data_dir)
        storage.close()
        assert rec.snapshot is not None and rec.snapshot.meta.index == index
        assert [e.index for e in rec.entries][:11] == list(range(index + 1, last + 1))

        restarted = await leading_agent(config, KVStateMachine())
        try:
            # restored from the snapshot, then the writes after it replayed from the WAL
            assert restarted.status()["snapshot_index"] == index
            assert isinstance(restarted.machine, KVStateMachine)
            store = restarted.machine.store
            assert store.get(b"new") is not None and store.get(b"key5").value == b"during"  # type: ignore[union-attr]
            assert observable(store) == before
        finally:
            await restarted.stop()

    asyncio.run(asyncio.wait_for(story(), 60))


def test_a_snapshot_overtaken_by_a_membership_change_is_dropped_and_taken_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The snapshot must record the membership at its index, which the Raft core no longer
    knows once a later change is applied: the snapshot is dropped, and the next one (here the
    same compact request) is captured after the change."""
    caplog.set_level(logging.DEBUG, logger="shoal.raft")
    config = one_member_config(tmp_path)

    async def story() -> None:
        machine = HeldMachine()
        agent = await leading_agent(config, machine)
        assert agent.raft is not None
        for i in range(10):
            await agent.propose(put(f"key{i}", "before"))
        compacting = asyncio.ensure_future(agent.compact())
        while machine.captured_at is None:
            await asyncio.sleep(0.001)
        first = machine.captured_at
        learner = ConfChange(ConfChangeOp.ADD_LEARNER, "n2", {"address": "127.0.0.1:2"})
        changed_at = await agent.change_membership(learner)
        await agent.propose(put("after", "change"))
        machine.released = True
        try:
            index = await compacting
            assert first < changed_at <= index == machine.captured_at
            snap = agent.raft.snapshot
            assert snap is not None and snap.meta.index == index
            assert snap.meta.conf.learners == {"n2"}
            assert agent.raft.first_index == index + 1
        finally:
            await agent.stop()
        dropped = [r.getMessage() for r in caplog.records if "dropped the snapshot" in r.message]
        assert len(dropped) == 1 and f"taken at index {first}: " in dropped[0]
        assert "membership change was applied after it" in dropped[0]

    asyncio.run(asyncio.wait_for(story(), 60))
