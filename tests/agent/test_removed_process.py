"""A member removed from the cluster learns it and stops, instead of lingering (real agents).

Removed while cut off (a partition through the transport's fault hook, or SIGSTOP) it learns
from the first member that refuses its messages once it can talk again; removed while connected
it learns from the change it applies. Either way it says role ``removed``, answers requests
with the ``removed`` error, exits, leaves the rest of the cluster's leader and term alone, and
refuses to start again — until ``join = true`` brings it back. A learner being added is never
taken for a removed member.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from agent.client import ControlError
from shell.devcluster import LocalCluster, b64
from tests.agent.conftest import ClusterRunner, eventually, logs_of

pytestmark = pytest.mark.process

MESSAGE = "this machine was removed from its cluster; `shoal cluster join` adds it again"
"""LocalCluster configs name no cluster; a real one says ``cluster <name>``."""


async def cut_off(cluster: LocalCluster, node: str, others: list[str]) -> None:
    await cluster.call(node, "debug.faults", block=others)
    for other in others:
        await cluster.call(other, "debug.faults", block=[node])


async def heal(cluster: LocalCluster, nodes: list[str]) -> None:
    for node in nodes:
        await cluster.call(node, "debug.faults", block=[])


async def removed_status(cluster: LocalCluster, node: str, timeout: float) -> dict[str, Any]:
    """Poll ``node`` until it reports role removed (it exits a little later)."""
    seen: dict[str, Any] = {}

    async def check() -> bool:
        try:
            seen.update(await cluster.status(node))
        except (ControlError, OSError):
            return False
        return seen["role"] == "removed"

    await eventually(check, timeout, f"{node} reports role removed")
    return seen


async def exit_code(cluster: LocalCluster, node: str, timeout: float) -> int:
    proc = cluster.procs[node]
    await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
    await cluster._drop_client(node)
    return proc.returncode


async def learns_and_exits(cluster: LocalCluster, victim: str, timeout: float = 15.0) -> str:
    """The removed ``victim`` says so, refuses requests with ``removed``, and exits 0; its
    log line says how it learned, which is returned."""
    status = await removed_status(cluster, victim, timeout)
    assert status["removed"] and status["leader"] is None and status["message"] == MESSAGE
    with pytest.raises(ControlError) as refused:
        await cluster.call(victim, "kv.put", key=b64("/after"), value=b64("no"))
    assert (refused.value.code, refused.value.message) == ("removed", MESSAGE)
    with pytest.raises(ControlError) as refused:
        await cluster.call(victim, "kv.get", key=b64("/after"), serializable=True)
    assert refused.value.code == "removed"
    assert await exit_code(cluster, victim, 15) == 0, cluster.tail(victim)
    lines = [line for line in cluster.log_path(victim).read_text().splitlines() if MESSAGE in line]
    assert len(lines) == 1, lines  # one clear line
    assert "stops in" in lines[0] and "is kept" in lines[0]
    return lines[0]


async def refuses_to_restart(cluster: LocalCluster, node: str) -> None:
    marker = cluster.node_dir(node) / "data" / "REMOVED"
    assert json.loads(marker.read_text())["node_id"] == node
    cluster.start_node(node)
    assert await exit_code(cluster, node, 30) == 1
    assert f"shoal agent: {MESSAGE}" in cluster.tail(node, 5)
    assert (cluster.node_dir(node) / "data" / "wal").is_dir(), "its data is kept"


async def undisturbed(cluster: LocalCluster, members: list[str], leader: str, term: int) -> None:
    """The remaining members still follow ``leader`` in ``term`` (no election happened) and
    take writes."""
    statuses = await cluster.statuses()
    for node in members:
        st = statuses[node]
        assert (st["leader"], st["term"]) == (leader, term), (node, st, logs_of(cluster))
    await cluster.put("/still/writable", "yes")


@pytest.mark.parametrize("how", ["partition", "sigstop"])
def test_a_member_removed_while_cut_off_learns_it_when_back_and_exits(
    clusters: ClusterRunner, how: str
) -> None:
    cluster = clusters.make(3, tick_ms=50, fault_injection=True)

    async def story() -> None:
        leader = await cluster.start()
        victim = next(n for n in cluster.ids if n != leader)
        members = [n for n in cluster.ids if n != victim]
        if how == "partition":
            await cut_off(cluster, victim, members)
        else:
            cluster.signal(victim, signal.SIGSTOP)
        try:
            result = await cluster.call_leader("remove_member", id=victim)
            assert result["voters"] == sorted(members)
            term = (await cluster.status(leader))["term"]
            if how == "partition":
                await asyncio.sleep(1.5)  # a few election timeouts cut off: it never heard
                st = await cluster.status(victim)
                assert st["role"] != "removed" and victim in st["voters"]
        finally:
            if how == "partition":
                await heal(cluster, cluster.ids)
            else:
                cluster.signal(victim, signal.SIGCONT)
        line = await learns_and_exits(cluster, victim)
        if how == "partition":  # it never received the change: a member had to tell it
            assert any(f"learned from {m}, which refused its messages" in line for m in members)
        else:  # a pause, not a partition: what the leader sent waited in its socket buffer
            assert "which refused its messages" in line or "change it applied" in line, line
        told = "\n".join(cluster.log_path(m).read_text() for m in members)
        assert f"{victim} was removed from the cluster by the change at index" in told
        await undisturbed(cluster, members, leader, term)
        await refuses_to_restart(cluster, victim)
        await undisturbed(cluster, members, leader, term)

    clusters.run(story())


def test_a_member_removed_while_connected_learns_from_the_change_it_applies(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3, tick_ms=50)

    async def story() -> None:
        leader = await cluster.start()
        victim = next(n for n in cluster.ids if n != leader)
        members = [n for n in cluster.ids if n != victim]
        await cluster.call_leader("remove_member", id=victim)
        term = (await cluster.status(leader))["term"]
        line = await learns_and_exits(cluster, victim)
        assert "learned from the membership change it applied" in line, line
        await undisturbed(cluster, members, leader, term)
        await refuses_to_restart(cluster, victim)

    clusters.run(story())


def test_a_new_learner_is_not_taken_for_a_removed_member_and_a_removed_one_can_rejoin(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3, tick_ms=50)

    async def story() -> None:
        leader = await cluster.start()
        victim = next(n for n in cluster.ids if n != leader)
        await cluster.call_leader("remove_member", id=victim)
        await learns_and_exits(cluster, victim)

        # a brand-new machine joins (learner, then voter) while the members refuse node-removed
        added = await cluster.add_node("node4")
        assert "node4" in added["voters"]
        st = await cluster.status("node4")
        assert st["role"] == "follower" and not st["removed"]
        await cluster.call("node4", "kv.put", key=b64("/via/node4"), value=b64("ok"))
        logs = "\n".join(cluster.log_path(n).read_text() for n in cluster.ids)
        assert "node4 was removed" not in logs and "refused its messages" not in logs

        # the removed machine joins again on its old data directory (what `cluster join` does)
        members = [n for n in cluster.ids if n != victim]
        cluster.write_config(victim, join=True, peers=[*members, victim])
        cluster.start_node(victim)
        await cluster.wait_socket(victim)
        st = await cluster.status(victim)
        assert st["role"] == "removed", st  # waits, honestly, to be added back
        with pytest.raises(ControlError) as refused:
            await cluster.call(victim, "kv.put", key=b64("/early"), value=b64("no"))
        assert refused.value.code == "removed"
        result = await cluster.call_leader(
            "add_member", id=victim, address=cluster.address(victim), timeout=30.0
        )
        assert victim in result["voters"]

        async def member_again() -> bool:
            st = await cluster.status(victim)
            return st["role"] == "follower" and st["leader"] is not None

        await eventually(member_again, 15, f"{victim} follows the leader again")
        assert not (cluster.node_dir(victim) / "data" / "REMOVED").exists()
        await cluster.call(victim, "kv.put", key=b64("/via/rejoined"), value=b64("ok"))
        assert cluster.alive(victim)
        await cluster.wait_healthy()

    clusters.run(story())
