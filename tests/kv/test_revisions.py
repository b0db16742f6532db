"""Revisions and versions are numbered exactly as etcd 3.4 numbers them."""

from __future__ import annotations

import pytest

from agent.kv import MAX_KEY_BYTES, MAX_VALUE_BYTES, KVError, KVStore

from .helpers import observable


def test_fresh_store_is_at_revision_one() -> None:
    store = KVStore()
    assert store.revision == 1
    assert store.range(b"\0", b"\0").revision == 1
    assert store.range(b"foo").kvs == ()


def test_put_delete_recreate_numbers_like_etcd() -> None:
    store = KVStore()
    assert store.put(b"foo", b"a").revision == 2
    kv = store.get(b"foo")
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version) == (2, 2, 1)

    assert store.put(b"foo", b"b").revision == 3
    kv = store.get(b"foo")
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (2, 3, 2, b"b")

    deleted = store.delete_range(b"foo")
    assert (deleted.revision, deleted.deleted) == (4, 1)
    assert store.get(b"foo") is None

    again = store.delete_range(b"foo")
    assert (again.revision, again.deleted) == (4, 0)
    assert store.revision == 4  # deleting nothing does not bump the revision

    store.put(b"foo", b"c")
    kv = store.get(b"foo")
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)


def test_other_keys_bump_the_global_revision_not_versions() -> None:
    store = KVStore()
    store.put(b"a", b"1")
    store.put(b"b", b"1")
    store.put(b"a", b"2")
    a, b = store.range(b"a", b"c").kvs
    assert (a.create_revision, a.mod_revision, a.version) == (2, 4, 2)
    assert (b.create_revision, b.mod_revision, b.version) == (3, 3, 1)


def test_prev_kv_on_put_and_delete() -> None:
    store = KVStore()
    assert store.put(b"k", b"v1", prev_kv=True).prev_kv is None
    prev = store.put(b"k", b"v2", prev_kv=True).prev_kv
    assert prev is not None and prev.value == b"v1"
    store.put(b"k2", b"x")
    resp = store.delete_range(b"k", b"k3", prev_kv=True)
    assert resp.deleted == 2
    assert [kv.value for kv in resp.prev_kvs] == [b"v2", b"x"]


def test_delete_a_range_is_one_revision() -> None:
    store = KVStore()
    for k in (b"a", b"b", b"c", b"d"):
        store.put(k, b"v")
    resp = store.delete_range(b"b", b"d")
    assert (resp.revision, resp.deleted) == (6, 2)
    assert [kv.key for kv in store.range(b"\0", b"\0").kvs] == [b"a", b"d"]


def test_ignore_value_and_ignore_lease_keep_current() -> None:
    store = KVStore()
    lease = store.lease_grant(0, 60).id
    store.put(b"k", b"v", lease=lease)
    store.put(b"k", b"", ignore_value=True)
    kv = store.get(b"k")
    assert kv is not None and (kv.value, kv.lease, kv.version) == (b"v", 0, 2)
    store.put(b"k", b"w", lease=lease)
    store.put(b"k", b"z", ignore_lease=True)
    kv = store.get(b"k")
    assert kv is not None and (kv.value, kv.lease) == (b"z", lease)
    with pytest.raises(KVError) as err:
        store.put(b"missing", b"", ignore_value=True)
    assert err.value.code == "key-not-found"
    with pytest.raises(KVError) as err:
        store.put(b"k", b"x", ignore_value=True)
    assert err.value.code == "value-provided"


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        (b"", b"v", "empty-key"),
        (b"k" * (MAX_KEY_BYTES + 1), b"v", "key-too-long"),
        (b"k", b"v" * (MAX_VALUE_BYTES + 1), "value-too-large"),
    ],
)
def test_limits_are_clear_errors_and_change_nothing(key: bytes, value: bytes, code: str) -> None:
    store = KVStore()
    store.put(b"keep", b"me")
    before = observable(store)
    with pytest.raises(KVError) as err:
        store.put(key, value)
    assert err.value.code == code
    assert observable(store) == before


def test_limits_are_inclusive() -> None:
    store = KVStore()
    store.put(b"k" * MAX_KEY_BYTES, b"v" * MAX_VALUE_BYTES)
    assert store.revision == 2


def test_reserved_prefix_needs_the_flag() -> None:
    store = KVStore()
    with pytest.raises(KVError) as err:
        store.put(b"/_shoal/machines/m1", b"up")
    assert err.value.code == "reserved-prefix"
    assert "/_shoal/" in err.value.message and "allow_reserved" in err.value.message
    assert store.revision == 1
    store.put(b"/_shoal/machines/m1", b"up", allow_reserved=True)
    assert store.get(b"/_shoal/machines/m1") is not None
    # a delete whose range covers the reserved prefix needs the flag too
    store.put(b"/app", b"x")
    with pytest.raises(KVError) as err:
        store.delete_range(b"\0", b"\0")
    assert err.value.code == "reserved-prefix"
    assert store.get(b"/app") is not None
    # ranges that stay clear of it do not
    assert store.delete_range(b"/a", b"/b").deleted == 1
    # reading is always allowed
    assert store.range(b"/_shoal/", b"/_shoal0").count == 1


def test_lease_must_exist_to_put() -> None:
    store = KVStore()
    with pytest.raises(KVError) as err:
        store.put(b"k", b"v", lease=99)
    assert err.value.code == "lease-not-found"
    assert store.revision == 1
