"""Which ids were members and were removed: derived from committed membership changes, kept in
the runtime's snapshot header, and so the same after compaction and a restart; and a machine
that was removed refuses to start again unless its config says it joins anew.

One real agent in this process (WAL, snapshots and TLS listener included), restarted on the
same data directory the way a machine restarts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.errors import REMOVED, AgentError
from agent.node import (
    Agent,
    RemovedMember,
    bootstrap_entries,
    decode_snapshot,
    encode_snapshot,
)
from agent.raft.types import ConfChange, ConfChangeOp, Entry, EntryKind, HardState
from agent.storage import DiskStorage
from tests.agent.onemember import leading, one_member_config

SPARE = "127.0.0.1:1"
"""Where the learners these tests add would listen; nothing needs to answer there."""


class Machine:
    """A state machine that only counts what it applied."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply(self, index: int, data: bytes) -> Any:
        self.applied.append(data)
        return len(self.applied)

    def snapshot(self) -> bytes:
        return json.dumps([d.decode() for d in self.applied]).encode()

    def restore(self, data: bytes) -> None:
        self.applied = [d.encode() for d in json.loads(data or b"[]")]


async def started(config: AgentConfig) -> Agent:
    agent = Agent(config, Machine())
    await agent.start()
    return agent


def change(op: ConfChangeOp, node: str, address: str | None = None) -> ConfChange:
    return ConfChange(op, node, {"address": address} if address else {})


def test_snapshot_header_round_trips_removed_members_and_reads_old_headers() -> None:
    removed = {"n3": RemovedMember(12, "10.0.0.3:7400"), "n5": RemovedMember(40, None)}
    got = decode_snapshot(encode_snapshot({"n1": "10.0.0.1:7400"}, b"machine", removed))
    assert got.peers == {"n1": "10.0.0.1:7400"}
    assert got.removed == removed and got.machine == b"machine"
    # a header written before removals were recorded: no removed members, nothing else lost
    old = json.dumps({"v": 1, "peers": {"n1": "10.0.0.1:7400"}}).encode()
    got = decode_snapshot(len(old).to_bytes(4, "big") + old + b"state")
    assert got.removed == {} and got.peers == {"n1": "10.0.0.1:7400"} and got.machine == b"state"


def test_removed_members_survive_compaction_and_restart(tmp_path: Path) -> None:
    config = one_member_config(tmp_path)

    async def story() -> None:
        agent = await started(config)
        await leading(agent)
        await agent.change_membership(change(ConfChangeOp.ADD_LEARNER, "n2", SPARE))
        await agent.change_membership(change(ConfChangeOp.ADD_LEARNER, "n3", "127.0.0.1:2"))
        removed_at = await agent.change_membership(change(ConfChangeOp.REMOVE, "n2"))
        assert agent.removed_members == {"n2": RemovedMember(removed_at, SPARE)}
        # compaction drops the CONF_CHANGE entries: only the snapshot can remember n2
        await agent.propose(b"after")
        snap_index = await agent.compact()
        assert snap_index > removed_at
        await agent.stop()

        agent = await started(config)
        try:
            assert agent.status()["snapshot_index"] == snap_index
            assert agent.raft is not None and agent.raft.last_index == snap_index
            assert agent.removed_members == {"n2": RemovedMember(removed_at, SPARE)}
            assert "n3" not in agent.removed_members  # a member now, never removed
            await leading(agent)
            # added back under the same name: no longer removed, after a restart either
            await agent.change_membership(change(ConfChangeOp.ADD_LEARNER, "n2", SPARE))
            assert agent.removed_members == {}
        finally:
            await agent.stop()

        agent = await started(config)  # from the snapshot (n2 removed) plus the log (re-added)
        try:
            assert agent.removed_members == {}
            assert agent.status()["learners"] == ["n2", "n3"]
        finally:
            await agent.stop()

    asyncio.run(story())


def test_only_committed_removals_count(tmp_path: Path) -> None:
    """A REMOVE entry past the commit index may still be replaced by a new leader: it does not
    make its node removed yet."""
    config = one_member_config(tmp_path)  # the addresses of n2 and n3 come from the log
    peers = {"n1": config.listen, "n2": ("127.0.0.1", 2), "n3": ("127.0.0.1", 3)}
    entries = bootstrap_entries(peers)
    remove = Entry(2, 4, ConfChange(ConfChangeOp.REMOVE, "n3", {}).encode(), EntryKind.CONF_CHANGE)

    async def story() -> None:
        storage, _ = DiskStorage.open(config.data_dir)
        storage.save(HardState(term=2, vote=None, commit=3), [*entries, remove])
        storage.close()
        agent = await started(config)
        try:
            assert agent.removed_members == {}
        finally:
            await agent.stop()
        storage, _ = DiskStorage.open(config.data_dir)
        storage.save(HardState(term=2, vote=None, commit=4), [])
        storage.close()
        agent = await started(config)
        try:
            assert agent.removed_members == {"n3": RemovedMember(4, "127.0.0.1:3")}
        finally:
            await agent.stop()

    asyncio.run(story())


def removed_node_data(tmp_path: Path) -> AgentConfig:
    """A data directory whose committed log removes n1 itself (a three-member cluster)."""
    config = one_member_config(tmp_path)
    peers = {"n1": config.listen, "n2": ("127.0.0.1", 2), "n3": ("127.0.0.1", 3)}
    remove = Entry(2, 4, ConfChange(ConfChangeOp.REMOVE, "n1", {}).encode(), EntryKind.CONF_CHANGE)
    storage, _ = DiskStorage.open(config.data_dir)
    storage.save(HardState(term=2, vote=None, commit=4), [*bootstrap_entries(peers), remove])
    storage.close()
    return config


def test_a_removed_machine_refuses_to_start(tmp_path: Path) -> None:
    config = removed_node_data(tmp_path)

    async def story() -> None:
        agent = Agent(config, Machine())
        try:
            with pytest.raises(AgentError) as caught:
                await agent.start()
        finally:
            await agent.stop()
        assert caught.value.code == REMOVED
        assert caught.value.message == (
            "this machine was removed from cluster unit; `shoal cluster join` adds it again"
        )

    asyncio.run(story())
    assert (config.data_dir / "wal").is_dir(), "its data is kept"


def test_a_removed_machine_joining_anew_starts_and_says_it_is_removed(tmp_path: Path) -> None:
    config = dataclasses.replace(removed_node_data(tmp_path), join=True)

    async def story() -> None:
        agent = await started(config)
        try:
            status = agent.status()
            assert (status["role"], status["removed"], status["removed_at"]) == ("removed", True, 4)
            with pytest.raises(AgentError) as caught:
                await agent.propose(b"x")
            assert caught.value.code == REMOVED
            await asyncio.sleep(0.5)  # 50 election timeouts: it must not campaign
            assert agent.raft is not None and agent.raft.term == 2
            assert not agent.stopped.is_set(), "a joiner waits to be added back, it does not exit"
            assert json.loads((config.data_dir / "REMOVED").read_text())["index"] == 4
        finally:
            await agent.stop()

    asyncio.run(story())
