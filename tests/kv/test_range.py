"""Ranges: etcd's range_end conventions, prefix, limit, sort, count_only, keys_only, history."""

from __future__ import annotations

import pytest

from agent.kv import KVError, KVStore, prefix_end


@pytest.fixture
def store() -> KVStore:
    s = KVStore()
    # rev 2..7: a=1, b=22, c=3, d=4 then b again, then e
    s.put(b"a", b"1")
    s.put(b"b", b"2")
    s.put(b"c", b"3")
    s.put(b"d", b"4")
    s.put(b"b", b"22")
    s.put(b"e", b"0")
    return s


def keys(resp: object) -> list[bytes]:
    return [kv.key for kv in resp.kvs]  # type: ignore[attr-defined]


def test_prefix_end() -> None:
    assert prefix_end(b"abc") == b"abd"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xfe\xff\xff") == b"a\xff"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


def test_single_key_interval_and_from_key(store: KVStore) -> None:
    assert keys(store.range(b"b")) == [b"b"]
    assert keys(store.range(b"bb")) == []
    assert keys(store.range(b"b", b"d")) == [b"b", b"c"]
    assert keys(store.range(b"c", b"\0")) == [b"c", b"d", b"e"]
    assert keys(store.range(b"\0", b"\0")) == [b"a", b"b", b"c", b"d", b"e"]
    assert keys(store.range(b"d", b"b")) == []  # an inverted range is empty


def test_prefix_selects_exactly_the_prefix() -> None:
    s = KVStore()
    for k in (b"/app", b"/app/", b"/app/x", b"/app/y/z", b"/app0", b"/apq", b"/ap"):
        s.put(k, b"v")
    assert keys(s.range(b"/app/", prefix_end(b"/app/"))) == [b"/app/", b"/app/x", b"/app/y/z"]


def test_limit_count_and_more(store: KVStore) -> None:
    resp = store.range(b"\0", b"\0", limit=2)
    assert keys(resp) == [b"a", b"b"]
    assert (resp.count, resp.more) == (5, True)
    resp = store.range(b"\0", b"\0", limit=5)
    assert (len(resp.kvs), resp.count, resp.more) == (5, 5, False)
    resp = store.range(b"\0", b"\0", limit=0)
    assert (len(resp.kvs), resp.more) == (5, False)


def test_count_only_and_keys_only(store: KVStore) -> None:
    resp = store.range(b"b", b"\0", count_only=True)
    assert (resp.kvs, resp.count, resp.more) == ((), 4, False)
    resp = store.range(b"\0", b"\0", keys_only=True)
    assert keys(resp) == [b"a", b"b", b"c", b"d", b"e"]
    assert all(kv.value == b"" for kv in resp.kvs)
    assert resp.kvs[1].version == 2  # metadata survives keys_only


def test_sorting_targets_and_orders(store: KVStore) -> None:
    r = store.range(b"\0", b"\0", sort_target="key", sort_order="descend")
    assert keys(r) == [b"e", b"d", b"c", b"b", b"a"]
    r = store.range(b"\0", b"\0", sort_target="mod", sort_order="ascend")
    assert keys(r) == [b"a", b"c", b"d", b"b", b"e"]
    r = store.range(b"\0", b"\0", sort_target="create", sort_order="descend")
    assert keys(r) == [b"e", b"d", b"c", b"b", b"a"]
    r = store.range(b"\0", b"\0", sort_target="value", sort_order="ascend")
    assert [kv.value for kv in r.kvs] == [b"0", b"1", b"22", b"3", b"4"]
    # equal versions keep key order, whichever the direction
    r = store.range(b"\0", b"\0", sort_target="version", sort_order="descend")
    assert keys(r) == [b"b", b"a", b"c", b"d", b"e"]
    # a non-key target without an order sorts ascending (etcd's default)
    r = store.range(b"\0", b"\0", sort_target="mod")
    assert keys(r) == [b"a", b"c", b"d", b"b", b"e"]


def test_sort_then_limit(store: KVStore) -> None:
    r = store.range(b"\0", b"\0", sort_target="mod", sort_order="descend", limit=2)
    assert keys(r) == [b"e", b"b"]
    assert (r.count, r.more) == (5, True)


def test_unordered_non_key_sort_only_sorts_the_first_limit_plus_one(store: KVStore) -> None:
    # etcd 3.4: with sort_order NONE it fetches limit+1 keys in key order, then sorts those
    r = store.range(b"\0", b"\0", sort_target="mod", limit=2)
    assert keys(r) == [b"a", b"c"]  # from a, b, c by mod: a(2) c(4) b(6)
    assert r.more


def test_historical_reads(store: KVStore) -> None:
    r = store.range(b"\0", b"\0", revision=4)
    assert keys(r) == [b"a", b"b", b"c"]
    assert r.revision == 7  # the header is the current revision, not the one read
    r = store.range(b"b", revision=5)
    assert (r.kvs[0].value, r.kvs[0].version) == (b"2", 1)
    store.delete_range(b"b")
    assert store.range(b"b").kvs == ()
    assert store.range(b"b", revision=7).kvs[0].value == b"22"
    assert store.range(b"\0", b"\0", revision=1).kvs == ()
    assert store.range(b"\0", b"\0", revision=7, count_only=True).count == 5
    assert keys(store.range(b"\0", b"\0", revision=6, limit=2)) == [b"a", b"b"]


def test_future_revision_is_refused(store: KVStore) -> None:
    with pytest.raises(KVError) as err:
        store.range(b"a", revision=8)
    assert err.value.code == "future-revision"
    assert "required revision is a future revision" in err.value.message


def test_empty_key_is_refused(store: KVStore) -> None:
    with pytest.raises(KVError) as err:
        store.range(b"")
    assert err.value.code == "empty-key"
