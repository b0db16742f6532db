"""Compaction: history below the point is gone, what is visible at the point stays."""

from __future__ import annotations

import pytest

from agent.kv import KVError, KVStore


def history_store() -> KVStore:
    s = KVStore()
    s.put(b"a", b"1")  # 2
    s.put(b"a", b"2")  # 3
    s.put(b"b", b"1")  # 4
    s.delete_range(b"b")  # 5
    s.put(b"c", b"1")  # 6
    s.put(b"a", b"3")  # 7
    return s


def test_reads_below_the_compaction_point_fail_naming_the_oldest_kept() -> None:
    s = history_store()
    assert s.compact(5).revision == 7
    assert s.compact_revision == 5
    with pytest.raises(KVError) as err:
        s.range(b"a", revision=4)
    assert err.value.code == "compacted"
    assert "required revision has been compacted" in err.value.message
    assert err.value.details["compact_revision"] == 5
    assert "5" in err.value.message


def test_state_at_and_after_the_point_survives() -> None:
    s = history_store()
    s.compact(5)
    at5 = s.range(b"\0", b"\0", revision=5)
    assert [(kv.key, kv.value, kv.version) for kv in at5.kvs] == [(b"a", b"2", 2)]
    at6 = s.range(b"\0", b"\0", revision=6)
    assert [kv.key for kv in at6.kvs] == [b"a", b"c"]
    assert s.range(b"a").kvs[0].version == 3  # versions keep counting across compaction
    s.put(b"a", b"4")
    assert s.get(b"a").version == 4  # type: ignore[union-attr]


def test_compacting_drops_deleted_keys_and_old_versions() -> None:
    s = history_store()
    before = s.stats()["versions"]
    s.compact(7)
    assert s.stats()["versions"] < before
    assert s.stats()["versions"] == 2  # a@7 and c@6; b's history is gone entirely


def test_compaction_errors_like_etcd() -> None:
    s = history_store()
    with pytest.raises(KVError) as err:
        s.compact(8)
    assert err.value.code == "future-revision"
    s.compact(4)
    for rev in (4, 3):
        with pytest.raises(KVError) as err:
            s.compact(rev)
        assert err.value.code == "compacted"
    assert s.compact_revision == 4
    s.compact(7)  # compacting at the current revision is allowed
    assert s.range(b"\0", b"\0").count == 2


def test_compaction_does_not_bump_the_revision() -> None:
    s = history_store()
    s.compact(6)
    assert s.revision == 7


def test_auto_compact_target_is_a_helper_not_a_policy() -> None:
    s = history_store()
    assert s.auto_compact_target(5) == 2
    assert s.auto_compact_target(100) is None
    s.compact(2)
    assert s.auto_compact_target(5) is None  # already compacted there
    assert s.auto_compact_target(0) == 7
    assert s.compact_revision == 2  # asking never compacts by itself
