"""The watch hub over a real KV store: ranges, history replay, overflow, snapshot restore."""

from __future__ import annotations

import asyncio

import pytest

from agent.errors import AgentError
from agent.kv import KVError, KVStore
from agent.watch import WATCH_OVERFLOW, WatchHub


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_key_and_prefix_watchers_get_matching_events_in_order() -> None:
    async def story() -> None:
        store = KVStore()
        hub = WatchHub(store)
        one = hub.watch(b"/a")
        prefix = hub.watch(b"/p/", b"/p0", prev_kv=True)
        store.put(b"/a", b"1")
        store.put(b"/p/x", b"2")
        store.put(b"/b", b"3")
        store.put(b"/p/x", b"4")
        assert [(e.kv.key, e.kv.value) for e in await one.next()] == [(b"/a", b"1")]
        got = await prefix.next()
        assert [e.kv.value for e in got] == [b"2", b"4"]
        assert got[0].prev_kv is None and got[1].prev_kv is not None
        assert got[1].prev_kv.value == b"2"
        assert await one.next(timeout=0.05) == []

    run(story())


def test_history_replay_then_live_without_gaps_and_compacted_start_refused() -> None:
    async def story() -> None:
        store = KVStore()
        for i in range(5):
            store.put(b"/k", str(i).encode())  # revisions 2..6
        hub = WatchHub(store)
        w = hub.watch(b"/k", start_revision=4)
        store.put(b"/k", b"live")
        assert [e.kv.mod_revision for e in await w.next()] == [4, 5, 6, 7]
        store.compact(6)
        with pytest.raises(KVError, match="compacted"):
            hub.watch(b"/k", start_revision=3)

    run(story())


def test_a_slow_watcher_is_closed_with_the_revision_to_resume_from() -> None:
    async def story() -> None:
        store = KVStore()
        hub = WatchHub(store, limit=3)
        w = hub.watch(b"/k")
        for i in range(5):
            store.put(b"/k", str(i).encode())
        with pytest.raises(AgentError) as info:
            await w.next()
        assert info.value.code == WATCH_OVERFLOW
        assert info.value.details["resume_revision"] == 2
        assert len(hub) == 0

    run(story())


def test_after_a_snapshot_restore_watchers_get_what_they_missed() -> None:
    async def story() -> None:
        leader = KVStore()
        follower = KVStore()
        hub = WatchHub(follower)
        w = hub.watch(b"/k")
        follower.put(b"/k", b"a")
        assert [e.kv.value for e in await w.next()] == [b"a"]
        leader.put(b"/k", b"a")
        leader.put(b"/k", b"b")
        leader.put(b"/other", b"x")
        leader.put(b"/k", b"c")
        follower.restore(leader.snapshot())
        assert [e.kv.value for e in await w.next()] == [b"b", b"c"]

    run(story())
