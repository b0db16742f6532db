"""Snapshots carry the whole state: keys, history since compaction, events, leases, index."""

from __future__ import annotations

import pytest

from agent.kv import KVError, KVStateMachine, KVStore, PutRequest
from agent.kv import snapshot as snapshot_codec

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


def test_a_snapshot_encoded_while_writes_go_on_is_the_state_at_its_capture(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent captures the store, then encodes it a step at a time while it applies more
    entries: the result must be exactly the capture's state — nothing written after it, nothing
    written before it missing — including when the store is compacted meanwhile."""
    monkeypatch.setattr(snapshot_codec, "CHUNK", 2)  # many steps, so writes land between them
    s = busy_store()
    for i in range(30):
        s.put(b"k%02d" % i, b"v%d" % i, lease=1 if i % 5 == 0 else 0)
    s.put(b"k03", b"again")
    s.compact(s.revision - 10)  # most versions are now history older than the compaction point
    expected = s.snapshot()  # what a snapshot of this moment is
    expected_state = restored(expected)

    steps = snapshot_codec.encode_steps(s.capture())
    writes = [
        lambda k: s.put(b"k%02d" % (k % 30), b"later"),  # a newer version of a captured key
        lambda k: s.put(b"new%03d" % k, b"x"),  # a key the capture never saw
        lambda k: s.delete_range(b"k%02d" % (k % 30)),
        lambda k: s.txn([], [PutRequest(b"a", b"t%d" % k), PutRequest(b"t%d" % k, b"t")]),
        lambda k: s.lease_grant(0, 10),
        lambda k: s.compact(s.revision - 1),  # cuts history the capture still needs
    ]
    done = 0
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            data = b"".join(finished.value)
            break
        writes[done % len(writes)](done)
        done += 1
    s.lease_revoke(1)  # after the last step: drops leased keys the snapshot still has

    assert done > 3 * len(writes)  # every kind of write landed mid-encoding, several times
    assert data == expected
    assert observable(restored(data)) == observable(expected_state)
    assert observable(s) != observable(expected_state)


def restored(data: bytes) -> KVStore:
    r = KVStore()
    r.restore(data)
    return r
