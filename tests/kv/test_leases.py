"""Leases: grant, attach/detach, revoke deletes attached keys in one revision, time-to-live."""

from __future__ import annotations

import pytest

from agent.kv import KVError, KVStore, PutRequest


def test_grant_picks_ids_deterministically_and_refuses_duplicates() -> None:
    s = KVStore()
    assert s.lease_grant(0, 10).id == 1
    assert s.lease_grant(100, 10).id == 100
    assert s.lease_grant(0, 10).id == 101
    with pytest.raises(KVError) as err:
        s.lease_grant(100, 5)
    assert err.value.code == "lease-exists"
    assert s.leases() == [1, 100, 101]
    assert s.revision == 1  # granting is not a key change


def test_grant_ttl_rules() -> None:
    s = KVStore()
    assert s.lease_grant(0, 1).ttl == 2  # raised to the minimum, as etcd does
    assert s.lease_grant(0, 60).ttl == 60
    for ttl, code in ((-1, "invalid-ttl"), (9_000_000_001, "lease-ttl-too-large")):
        with pytest.raises(KVError) as err:
            s.lease_grant(0, ttl)
        assert err.value.code == code
    with pytest.raises(KVError) as err:
        s.lease_grant(-5, 10)
    assert err.value.code == "invalid-lease-id"


def test_revoke_deletes_attached_keys_in_one_revision() -> None:
    s = KVStore()
    lease = s.lease_grant(0, 30).id
    s.put(b"b", b"1", lease=lease)  # 2
    s.put(b"a", b"1", lease=lease)  # 3
    s.put(b"c", b"1")  # 4
    resp = s.lease_revoke(lease)
    assert (resp.revision, resp.deleted) == (5, 2)
    assert [kv.key for kv in s.range(b"\0", b"\0").kvs] == [b"c"]
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in s.events_since(5)] == [
        ("DELETE", b"a", 5),
        ("DELETE", b"b", 5),
    ]
    assert s.leases() == []
    with pytest.raises(KVError) as err:
        s.lease_revoke(lease)
    assert err.value.code == "lease-not-found"


def test_revoking_an_unused_lease_does_not_bump() -> None:
    s = KVStore()
    lease = s.lease_grant(0, 30).id
    assert s.lease_revoke(lease).revision == 1


def test_keys_detach_when_reput_without_lease_or_deleted() -> None:
    s = KVStore()
    l1 = s.lease_grant(0, 30).id
    l2 = s.lease_grant(0, 30).id
    s.put(b"moved", b"v", lease=l1)
    s.put(b"moved", b"v", lease=l2)
    s.put(b"freed", b"v", lease=l1)
    s.put(b"freed", b"v")
    s.put(b"gone", b"v", lease=l1)
    s.delete_range(b"gone")
    s.txn([], [PutRequest(b"kept", b"v", lease=l1)])
    assert s.lease_time_to_live(l1, keys=True).keys == (b"kept",)
    assert s.lease_time_to_live(l2, keys=True).keys == (b"moved",)
    s.lease_revoke(l1)
    assert sorted(kv.key for kv in s.range(b"\0", b"\0").kvs) == [b"freed", b"moved"]


def test_time_to_live_reports_granted_ttl_and_the_runtime_hook() -> None:
    s = KVStore()
    lease = s.lease_grant(0, 30).id
    s.put(b"x", b"1", lease=lease)
    ttl = s.lease_time_to_live(lease)
    assert (ttl.id, ttl.ttl, ttl.granted_ttl, ttl.keys) == (lease, 30, 30, ())
    s.lease_remaining = lambda lease_id: 12
    assert s.lease_time_to_live(lease, keys=True).ttl == 12
    assert s.lease_time_to_live(lease, keys=True).keys == (b"x",)
    missing = s.lease_time_to_live(999)
    assert (missing.ttl, missing.granted_ttl) == (-1, 0)
