"""A snapshot is captured at one index and finished at a later one, while the node goes on
applying entries: it carries the image at the capture plus the entries applied meanwhile (the
tail), and restoring it gives exactly the state at the index it claims.

Unit tests of the tail, then one real agent in this process (WAL, snapshot files, TLS listener)
whose snapshot is held open while writes are applied, restarted from what it saved.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.config import AgentConfig, config_from_dict
from agent.kv import KVError, KVStateMachine, KVStore
from agent.kv import snapshot as snapshot_codec
from agent.node import Agent, decode_snapshot
from agent.raft.types import ConfChange, ConfChangeOp, Entry, EntryKind
from agent.snapshotting import TAIL_MAGIC, restore_machine, split_tail, tail_prefix
from shell import pki
from shell.devcluster import b64, free_port
from tests.kv.helpers import observable


def put(key: str, value: str) -> bytes:
    """A KV put as it sits in a log entry."""
    return json.dumps({"v": 1, "op": "put", "key": b64(key), "value": b64(value)}).encode()


def entry(index: int, data: bytes, kind: EntryKind = EntryKind.NORMAL) -> Entry:
    return Entry(term=2, index=index, kind=kind, data=data)


def test_the_tail_holds_the_state_machine_commands_after_the_image() -> None:
    conf = ConfChange(ConfChangeOp.ADD_LEARNER, "n9", {"address": "127.0.0.1:1"}).encode()
    tail = [
        entry(5, put("a", "1")),
        entry(6, b""),  # a new leader's no-op: nothing to apply
        entry(7, conf, EntryKind.CONF_CHANGE),  # the runtime's business, recorded in the meta
        entry(8, put("b", "2")),
    ]
    assert split_tail(tail_prefix(tail) + b"IMAGE") == (
        [(5, put("a", "1")), (8, put("b", "2"))],
        b"IMAGE",
    )
    # with nothing to replay the bytes are the machine's own, as every agent writes them
    assert tail_prefix([]) == b""
    assert tail_prefix(tail[1:3]) == b""
    assert split_tail(b"SHOALKV1 image") == ([], b"SHOALKV1 image")


def machine_at(last: int) -> KVStateMachine:
    m = KVStateMachine()
    for i in range(1, last + 1):
        m.apply(i, put(f"k{i % 7}", f"v{i}"))
    return m


def test_image_plus_tail_restores_the_state_at_the_last_tail_entry() -> None:
    live = machine_at(10)
    steps = live.snapshot_steps()  # captured at index 10
    tail = [entry(i, put(f"k{i % 7}", f"later{i}")) for i in range(11, 16)]
    for e in tail:
        live.apply(e.index, e.data)
    image = _finish(steps)
    restored = KVStateMachine()
    restore_machine(restored, tail_prefix(tail) + image)
    assert observable(restored.store) == observable(live.store)
    assert restored.store.applied_index == 15
    # without the tail it would be the state at the capture
    at_capture = KVStateMachine()
    restore_machine(at_capture, image)
    assert observable(at_capture.store) == observable(machine_at(10).store)


def _finish(steps: snapshot_codec.Steps) -> bytes:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return b"".join(done.value)


def test_an_agent_that_knows_no_tail_refuses_the_snapshot_rather_than_lose_it() -> None:
    image = machine_at(3).snapshot()
    with pytest.raises(KVError) as err:
        KVStore().restore(tail_prefix([entry(4, put("a", "1"))]) + image)
    assert err.value.code == "bad-snapshot"


def test_a_damaged_tail_is_refused() -> None:
    image = machine_at(3).snapshot()
    with pytest.raises(ValueError, match="tail"):
        split_tail(TAIL_MAGIC + (5).to_bytes(4, "big") + b"junk!" + image)
    with pytest.raises(ValueError, match="tail"):
        split_tail(TAIL_MAGIC + b"\0")


# --- one real agent --------------------------------------------------------------------------


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


def one_member_config(root: Path) -> AgentConfig:
    ca = pki.create_ca("unit")
    tls = pki.write_node_tls(root / "tls", ca, pki.issue_node_cert(ca, "n1", ["127.0.0.1"]))
    listen = f"127.0.0.1:{free_port()}"
    raw = {
        "node_id": "n1",
        "data_dir": str(root / "data"),
        "listen": listen,
        "peers": {"n1": listen},
        "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)},
        "timing": {"tick_ms": 10, "heartbeat_ticks": 1, "election_ticks": 10},
    }
    return config_from_dict(raw, base=root, where="test config")


async def leading_agent(config: AgentConfig, machine: KVStateMachine) -> Agent:
    agent = Agent(config, machine)
    await agent.start()
    for _ in range(500):
        if agent.raft is not None and agent.raft.leader == "n1":
            return agent
        await asyncio.sleep(0.01)
    raise AssertionError("a one-member cluster did not elect itself")


def test_writes_applied_while_a_snapshot_is_encoded_survive_a_restart_from_it(
    tmp_path: Path,
) -> None:
    config = one_member_config(tmp_path)

    async def story() -> None:
        machine = HeldMachine()
        agent = await leading_agent(config, machine)
        for i in range(50):
            await agent.propose(put(f"key{i}", "before"))
        compacting = asyncio.ensure_future(agent.compact())
        while machine.captured_at is None:
            await asyncio.sleep(0.001)
        for i in range(0, 50, 5):  # applied while the captured state is being encoded
            await agent.propose(put(f"key{i}", "during"))
        await agent.propose(put("new", "during"))
        machine.released = True
        index = await compacting
        assert agent.raft is not None and agent.raft.snapshot is not None
        tail, _ = split_tail(decode_snapshot(agent.raft.snapshot.data).machine)
        assert index == agent.raft.applied
        assert [i for i, _ in tail] == list(range(machine.captured_at + 1, index + 1))
        assert len(tail) == 11
        before = observable(machine.store)
        await agent.stop()

        restarted = await leading_agent(config, KVStateMachine())
        try:
            assert restarted.status()["snapshot_index"] == index  # restored from the snapshot,
            assert isinstance(restarted.machine, KVStateMachine)  # not replayed from the WAL
            store = restarted.machine.store
            assert store.get(b"new") is not None and store.get(b"key5").value == b"during"  # type: ignore[union-attr]
            assert observable(store) == before
        finally:
            await restarted.stop()

    asyncio.run(asyncio.wait_for(story(), 60))
