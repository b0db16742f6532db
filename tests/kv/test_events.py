"""Events: what watchers see, replayed from any retained revision and pushed after apply."""

from __future__ import annotations

import pytest

from agent.kv import Event, KVError, KVStore, PutRequest, prefix_end


def summary(events: list[Event]) -> list[tuple[str, bytes, int]]:
    return [(e.type, e.kv.key, e.kv.mod_revision) for e in events]


def test_every_write_produces_events_in_revision_order() -> None:
    s = KVStore()
    s.put(b"a", b"1")
    s.put(b"b", b"1")
    s.txn(success=[PutRequest(b"c", b"1"), PutRequest(b"a", b"2")])
    s.delete_range(b"a", b"c")
    assert summary(s.events_since(1)) == [
        ("PUT", b"a", 2),
        ("PUT", b"b", 3),
        ("PUT", b"c", 4),
        ("PUT", b"a", 4),
        ("DELETE", b"a", 5),
        ("DELETE", b"b", 5),
    ]


def test_event_contents_and_prev_kv() -> None:
    s = KVStore()
    s.put(b"k", b"1")
    s.put(b"k", b"2")
    s.delete_range(b"k")
    created, updated, deleted = s.events_since(2)
    assert created.prev_kv is None
    assert updated.prev_kv is not None and updated.prev_kv.value == b"1"
    assert updated.kv.version == 2
    # a DELETE event's kv is the key with the deletion's revision, everything else zero
    assert (deleted.kv.key, deleted.kv.mod_revision, deleted.kv.version) == (b"k", 4, 0)
    assert deleted.kv.create_revision == 0 and deleted.kv.value == b""
    assert deleted.prev_kv is not None and deleted.prev_kv.value == b"2"


def test_events_since_filters_by_revision_and_key_range() -> None:
    s = KVStore()
    for k in (b"/a/1", b"/b/1", b"/a/2", b"/a/1"):
        s.put(k, b"v")
    assert summary(s.events_since(4, b"/a/", prefix_end(b"/a/"))) == [
        ("PUT", b"/a/2", 4),
        ("PUT", b"/a/1", 5),
    ]
    assert summary(s.events_since(2, b"/a/1")) == [("PUT", b"/a/1", 2), ("PUT", b"/a/1", 5)]
    assert s.events_since(6) == []
    assert s.events_since(0) == []  # 0 means "from now"


def test_events_since_after_compaction() -> None:
    s = KVStore()
    s.put(b"a", b"1")  # 2
    s.put(b"b", b"1")  # 3
    s.delete_range(b"a")  # 4
    s.put(b"b", b"2")  # 5
    s.compact(3)
    with pytest.raises(KVError) as err:
        s.events_since(2)
    assert err.value.code == "compacted"
    assert err.value.details["compact_revision"] == 3
    # from the compaction point: the version kept there (no prev_kv: that is gone), then on
    evs = s.events_since(3)
    assert summary(evs) == [("PUT", b"b", 3), ("DELETE", b"a", 4), ("PUT", b"b", 5)]
    assert evs[0].prev_kv is None
    assert evs[1].prev_kv is not None and evs[1].prev_kv.value == b"1"


def test_subscribers_get_each_revision_after_apply() -> None:
    s = KVStore()
    seen: list[tuple[int, list[tuple[str, bytes, int]], int]] = []
    unsubscribe = s.subscribe(lambda rev, evs: seen.append((rev, summary(evs), s.revision)))
    s.put(b"a", b"1")
    s.delete_range(b"zzz")  # nothing deleted: no revision, no callback
    s.txn(success=[PutRequest(b"b", b"1"), PutRequest(b"c", b"1")])
    assert seen == [
        (2, [("PUT", b"a", 2)], 2),
        (3, [("PUT", b"b", 3), ("PUT", b"c", 3)], 3),
    ]
    unsubscribe()
    s.put(b"d", b"1")
    assert len(seen) == 2


def test_a_failing_subscriber_cannot_stop_writes() -> None:
    s = KVStore()
    calls: list[int] = []

    def broken(rev: int, evs: list[Event]) -> None:
        raise RuntimeError("watch hub bug")

    s.subscribe(broken)
    s.subscribe(lambda rev, evs: calls.append(rev))
    s.put(b"a", b"1")
    s.put(b"a", b"2")
    assert s.revision == 3
    assert calls == [2, 3]
    assert len(s.subscriber_errors) == 1  # reported once, then dropped
