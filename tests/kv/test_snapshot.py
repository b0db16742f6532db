"""Snapshots carry the whole state: keys, history since compaction, events, leases, index."""

from __future__ import annotations

import pytest

from agent.kv import KVError, KVStateMachine, KVStore, PutRequest

from .helpers import observable


def busy_store() -> KVStore:
    s = KVStore()
    lease = s.lease_grant(0, 30).id
    s.lease_grant(50, 60)
    s.put(b"a", b"1")  # 2
    s.put(b"b", b"\x00\xff binary", lease=lease)  # 3
    s.put(b"a", b"2")  # 4
    s.delete_range(b"a")  # 5
    s.txn([], [PutRequest(b"c", b"1"), PutRequest(b"d", b"1", lease=lease)])  # 6
    s.put(b"c", b"2")  # 7
    s.compact(4)
    s.put(b"a", "é".encode())  # 8
    s.applied_index = 42
    return s


def test_round_trip_preserves_everything_a_client_can_see() -> None:
    s = busy_store()
    r = KVStore()
    r.restore(s.snapshot())
    assert observable(r) == observable(s)
    assert r.applied_index == 42
    assert r.range(b"\0", b"\0", revision=4).kvs == s.range(b"\0", b"\0", revision=4).kvs
    assert r.events_since(4) == s.events_since(4)
    with pytest.raises(KVError):
        r.range(b"a", revision=3)
    assert r.snapshot() == s.snapshot()


def test_restored_store_carries_on_identically() -> None:
    s = busy_store()
    r = KVStore()
    r.restore(s.snapshot())
    for store in (s, r):
        store.lease_revoke(1)  # attached keys are known after restore
        store.lease_grant(0, 5)  # next id continues where it was
        store.put(b"c", b"3", prev_kv=True)
        store.compact(6)
    assert observable(r) == observable(s)
    assert r.leases() == [50, 51]
    assert r.revision == 10


def test_restore_replaces_previous_state_and_tells_subscribers() -> None:
    s = busy_store()
    r = KVStore()
    r.put(b"stale", b"x")
    resets: list[int] = []
    r.subscribe(lambda rev, evs: None, on_restore=resets.append)
    r.restore(s.snapshot())
    assert r.get(b"stale") is None
    assert resets == [8]
    r.restore(b"")
    assert (r.revision, len(r)) == (1, 0)


@pytest.mark.parametrize("data", [b"junk", b"SHOALKV1" + b"not zlib", b"SHOALKV1"])
def test_corrupt_snapshot_is_refused_and_state_kept(data: bytes) -> None:
    s = busy_store()
    before = observable(s)
    with pytest.raises(KVError) as err:
        s.restore(data)
    assert err.value.code == "bad-snapshot"
    assert observable(s) == before


def test_machine_snapshot_is_the_store_snapshot() -> None:
    m = KVStateMachine(busy_store())
    other = KVStateMachine()
    other.restore(m.snapshot())
    assert observable(other.store) == observable(m.store)


def test_tens_of_thousands_of_keys_round_trip() -> None:
    s = KVStore()
    for i in range(20_000):
        s.put(f"/app/{i:06d}".encode(), b"value-%d" % i)
    s.put(b"/app/000001", b"changed")
    data = s.snapshot()
    r = KVStore()
    r.restore(data)
    assert len(r) == 20_000
    assert r.get(b"/app/000001").version == 2  # type: ignore[union-attr]
    assert r.range(b"/app/", b"/app0", count_only=True).count == 20_000
    assert len(data) < 20_000 * 40  # compact: well under the raw JSON size
