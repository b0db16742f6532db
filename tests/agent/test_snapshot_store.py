"""Snapshot files: atomic, verified, pruned, and a damaged newest one handled safely."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from agent.storage import CorruptionError, DiskStorage
from agent.storage.snapshots import SnapshotStore

CONF = ConfState(voters=frozenset({"node1", "node2", "node3"}), learners=frozenset({"node4"}))


def snap(index: int, term: int = 1, data: bytes | None = None) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, CONF), data or f"state@{index}".encode() * 50)


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, f"v{i}".encode()) for i in range(first, last + 1)]


def damage(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_snapshot_round_trips_with_its_membership(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    written = store.save(snap(42, term=3, data=b"\x00binary\xff"))

    assert written.path.name == "0000000000000003-0000000000000042.snap"
    assert stat.S_IMODE(written.path.stat().st_mode) == 0o600
    loaded = store.load(store.files()[0])
    assert loaded == snap(42, term=3, data=b"\x00binary\xff")
    assert loaded.meta.conf.learners == {"node4"}


@pytest.mark.parametrize("offset", [0, 9, 12, 20, -1])
def test_any_damaged_byte_is_detected_and_named(tmp_path: Path, offset: int) -> None:
    store = SnapshotStore(tmp_path)
    file = store.save(snap(7))
    damage(file.path, offset)

    with pytest.raises(CorruptionError) as info:
        store.load(store.files()[0])
    assert info.value.path == str(file.path)
    assert str(file.path) in str(info.value) and "restore from backup" in str(info.value)


def test_a_truncated_snapshot_is_detected(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    file = store.save(snap(7))
    file.path.write_bytes(file.path.read_bytes()[:-10])
    with pytest.raises(CorruptionError, match="checksum"):
        store.load(store.files()[0])


def test_a_renamed_snapshot_is_not_trusted(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    file = store.save(snap(7))
    file.path.rename(tmp_path / "0000000000000001-0000000000000099.snap")
    with pytest.raises(CorruptionError, match="does not match its file name"):
        store.load(store.files()[0])


def test_stale_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(snap(7))
    stale = tmp_path / "0000000000000001-0000000000000009.snap.tmp"
    stale.write_bytes(b"half a snapshot")

    store = SnapshotStore(tmp_path)
    assert not stale.exists()
    assert [f.index for f in store.files()] == [7]


def test_files_are_newest_first_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for index in (5, 100, 20, 7):
        store.save(snap(index))
    assert [f.index for f in store.files()] == [100, 20, 7, 5]

    kept = store.prune(2)
    assert [f.index for f in kept] == [100, 20]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0000000000000001-0000000000000020.snap",
        "0000000000000001-0000000000000100.snap",
    ]


# --- through DiskStorage ------------------------------------------------------------------


def compacted_twice(data_dir: Path) -> None:
    """Entries 1..30, snapshots at 10 and 20, with small segments so old ones get released."""
    storage, _ = DiskStorage.open(data_dir, segment_bytes=120)
    for i in range(1, 31):
        storage.save(HardState(term=1, vote="node1", commit=i), entries(i, i))
        if i in (10, 20):
            storage.save_snapshot(snap(i))
    storage.close()


def test_a_damaged_newest_snapshot_falls_back_to_the_older_one(tmp_path: Path) -> None:
    compacted_twice(tmp_path)
    newest = tmp_path / "snap" / "0000000000000001-0000000000000020.snap"
    damage(newest)

    storage, recovered = DiskStorage.open(tmp_path, segment_bytes=120)
    storage.close()

    assert recovered.snapshot == snap(10)
    assert [e.index for e in recovered.entries] == list(range(11, 31))
    assert not newest.exists() and newest.with_name(newest.name + ".corrupt").exists()
    # And the next start is clean.
    storage, again = DiskStorage.open(tmp_path)
    storage.close()
    assert again.snapshot == snap(10) and len(again.entries) == 20


def test_a_damaged_newest_snapshot_the_wal_cannot_replace_refuses_and_names_it(
    tmp_path: Path,
) -> None:
    compacted_twice(tmp_path)
    newest = tmp_path / "snap" / "0000000000000001-0000000000000020.snap"
    older = tmp_path / "snap" / "0000000000000001-0000000000000010.snap"
    storage, _ = DiskStorage.open(tmp_path, segment_bytes=120)
    storage.save(None, entries(31, 31))
    storage.save_snapshot(snap(25))  # releases the WAL up to 20; keeps snapshots 20 and 25
    storage.close()
    assert not older.exists()
    damage(tmp_path / "snap" / "0000000000000001-0000000000000025.snap")
    damage(newest)

    with pytest.raises(CorruptionError) as info:
        DiskStorage.open(tmp_path)
    assert info.value.path.endswith("0000000000000001-0000000000000025.snap")
    assert "WAL no longer holds" in str(info.value)


def test_a_lost_wal_with_snapshots_present_refuses(tmp_path: Path) -> None:
    compacted_twice(tmp_path)
    for seg in (tmp_path / "wal").iterdir():
        seg.unlink()
    with pytest.raises(CorruptionError, match="term and vote"):
        DiskStorage.open(tmp_path)
