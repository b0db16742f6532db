"""The replicated store served by real agents: watches and leases across leader changes, bad
requests, and failing fast without a quorum."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agent.client import ControlClient, ControlError
from shell.devcluster import b64, unb64
from tests.agent.conftest import ClusterRunner, eventually

pytestmark = pytest.mark.process


async def collect_watch(
    client: ControlClient, prefix: str, start: int, into: list[dict[str, Any]]
) -> None:
    end = b64(prefix[:-1] + chr(ord(prefix[-1]) + 1))
    async for item in client.stream(
        "kv.watch", key=b64(prefix), range_end=end, start_revision=start
    ):
        into.extend(item.get("events", []))


def test_a_watcher_on_a_follower_sees_every_event_once_in_order_across_leader_changes(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3, tick_ms=50)

    async def story() -> None:
        leader = await cluster.start()
        watcher_node = next(n for n in cluster.ids if n != leader)
        start = (await cluster.put("/w/first", "0"))["header"]["revision"]
        events: list[dict[str, Any]] = []
        client = await ControlClient.connect(str(cluster.socket_path(watcher_node)))
        task = asyncio.create_task(collect_watch(client, "/w/", start, events))
        acked: list[int] = [start]
        for round_ in range(3):
            for i in range(15):
                try:
                    res = await cluster.put(f"/w/{round_}-{i}", str(i))
                    acked.append(res["header"]["revision"])
                except ControlError:
                    pass  # a write cut short by the kill: the watch must still be gapless
            current = await cluster.wait_leader()
            if current != watcher_node:
                await cluster.kill(current)
                await cluster.wait_leader(exclude=[current])
                cluster.start_node(current)
                await cluster.wait_socket(current)
        last = max(acked)
        await eventually(lambda: _has(events, last), 15, f"the watcher to reach revision {last}")
        task.cancel()
        await client.close()
        revisions = [int(ev["kv"]["mod_revision"]) for ev in events]
        assert revisions == sorted(set(revisions)), "duplicate or out-of-order event"
        assert set(acked) <= set(revisions)
        # no gaps: the live stream holds exactly what the store's history holds for the prefix
        replay: list[dict[str, Any]] = []
        other = next(n for n in cluster.ids if n != watcher_node)
        client = await ControlClient.connect(str(cluster.socket_path(other)))
        task = asyncio.create_task(collect_watch(client, "/w/", start, replay))
        await eventually(lambda: _has(replay, revisions[-1]), 10, "the history replay")
        task.cancel()
        await client.close()
        assert [int(ev["kv"]["mod_revision"]) for ev in replay][: len(revisions)] == revisions

    clusters.run(story())


async def _has(events: list[dict[str, Any]], revision: int) -> bool:
    return any(int(ev["kv"]["mod_revision"]) >= revision for ev in events)


def test_a_lease_survives_a_leader_change_then_expires_without_keepalive(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3, tick_ms=50)  # election timeout 0.5 s

    async def story() -> None:
        leader = await cluster.start()
        lease = await cluster.call_leader("lease.grant", ttl=3)
        kept = await cluster.call_leader("lease.grant", ttl=3)
        await cluster.put("/l/dies", "x", lease=lease["id"])
        await cluster.put("/l/lives", "y", lease=kept["id"])
        await cluster.kill(leader)
        await cluster.wait_leader(exclude=[leader])
        granted = time.monotonic()
        # the new leader must not expire the lease early: it restarts the full TTL
        got = await cluster.call_leader("kv.get", key=b64("/l/dies"))
        assert got["kvs"], "the lease died with its leader"
        node = next(n for n in cluster.ids if n != leader)
        while time.monotonic() - granted < 6:
            await cluster.call_leader("lease.keepalive", id=kept["id"], idempotent=True)
            await asyncio.sleep(0.5)
        gone = await cluster.call(node, "kv.get", key=b64("/l/dies"))
        alive = await cluster.call(node, "kv.get", key=b64("/l/lives"))
        assert not gone["kvs"], "an expired lease's key outlived it"
        assert [unb64(kv["value"]) for kv in alive["kvs"]] == ["y"]
        ttl = await cluster.call(node, "lease.ttl", id=lease["id"])
        assert ttl["ttl"] == -1  # etcd's answer for an expired lease

    clusters.run(story())


def test_bad_requests_get_precise_errors_and_change_nothing(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        leader = await cluster.start()
        await cluster.put("/b/keep", "safe")
        before = (await cluster.call(leader, "status"))["revision"]
        cases: list[tuple[str, dict[str, Any], str, str]] = [
            ("kv.frobnicate", {}, "unknown-method", "kv.put"),
            ("kv.put", {"value": b64("v")}, "bad-command", "key"),
            ("kv.put", {"key": 5, "value": b64("v")}, "bad-command", "key"),
            ("kv.put", {"key": "%%%", "value": b64("v")}, "bad-command", "base64"),
            ("kv.put", {"key": b64("/b/x"), "value": b64("v"), "extra": 1}, "bad-command", "extra"),
            ("kv.put", {"key": b64("k" * 2000), "value": b64("v")}, "key-too-long", "1536"),
            (
                "kv.put",
                {"key": b64("/b/big"), "value": b64("v" * (1 << 20) + "v")},
                "value-too-large",
                "",
            ),
            ("kv.put", {"key": b64("/_shoal/x"), "value": b64("v")}, "reserved-prefix", "/_shoal/"),
            ("kv.get", {"key": b64("/b/keep"), "revision": 10**6}, "future-revision", ""),
            (
                "kv.put",
                {"key": b64("/b/x"), "value": b64("v"), "lease": 999},
                "lease-not-found",
                "999",
            ),
            ("lease.grant", {"ttl": "long"}, "bad-command", "ttl"),
        ]
        for method, params, code, fragment in cases:
            with pytest.raises(ControlError) as info:
                await cluster.call(leader, method, **params)
            assert info.value.code == code, (method, list(params), info.value)
            assert fragment in info.value.message, (method, info.value.message)
        after = await cluster.call(leader, "status")
        assert after["revision"] == before
        got = await cluster.call(leader, "kv.get", key=b64("/b/keep"))
        assert [unb64(kv["value"]) for kv in got["kvs"]] == ["safe"]

    clusters.run(story())


def test_without_a_quorum_requests_fail_fast_and_say_so(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        await cluster.start()
        await cluster.put("/q/before", "1")
        survivor, *others = cluster.ids
        for node in others:
            await cluster.kill(node)
        await asyncio.sleep(2.5)  # the survivor notices it has no quorum
        for method, params in [
            ("kv.put", {"key": b64("/q/after"), "value": b64("2")}),
            ("kv.get", {"key": b64("/q/before")}),
        ]:
            with pytest.raises(ControlError) as info:  # a hang would hit the wait_for below
                await asyncio.wait_for(cluster.call(survivor, method, **params), 60)
            assert info.value.code in ("no-leader", "timeout"), info.value
            assert "leader" in info.value.message or "quorum" in info.value.message
        # serializable reads still answer from the local copy
        got = await cluster.call(survivor, "kv.get", key=b64("/q/before"), serializable=True)
        assert [unb64(kv["value"]) for kv in got["kvs"]] == ["1"]

    clusters.run(story())


def test_machines_register_themselves_and_leave_when_they_die(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3, tick_ms=50)

    async def story() -> None:
        await cluster.start()
        machines = (await cluster.call("node1", "machines"))["machines"]
        assert sorted(m["id"] for m in machines) == ["node1", "node2", "node3"]
        assert all(m["address"] == "127.0.0.1" and m["version"] for m in machines)
        await cluster.stop_node("node3")  # a clean stop leaves at once

        async def left(node: str) -> bool:
            try:  # a read fails fast while a new leader is elected; poll again
                got = await cluster.call("node1", "machines")
            except ControlError:
                return False
            return node not in [m["id"] for m in got["machines"]]

        await eventually(lambda: left("node3"), 3, "node3 to leave the registry")
        cluster.start_node("node3")  # back (and registered again) before node2 dies
        await cluster.wait_socket("node3")
        await cluster.wait_machines(3)
        await cluster.kill("node2")  # a dead machine leaves when its lease expires
        await eventually(lambda: left("node2"), 20, "node2's lease to expire")

    clusters.run(story())


def test_automatic_compaction_keeps_only_the_configured_history(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3, tick_ms=20, auto_compact_retention=5)

    async def story() -> None:
        await cluster.start()
        first = (await cluster.put("/c/k", "0"))["header"]["revision"]
        for i in range(1, 20):
            await cluster.put("/c/k", str(i))

        async def compacted() -> bool:
            status = await cluster.status("node1")
            return bool(status["compact_revision"] >= status["revision"] - 5 > first)

        await eventually(compacted, 10, "the leader to compact old history")
        with pytest.raises(ControlError) as info:
            await cluster.call("node2", "kv.get", key=b64("/c/k"), revision=first)
        assert info.value.code == "compacted"
        latest = await cluster.call("node2", "kv.get", key=b64("/c/k"))
        assert [unb64(kv["value"]) for kv in latest["kvs"]] == ["19"]

    clusters.run(story())
