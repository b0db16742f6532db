"""DiskStorage as the runtime uses it: save every Ready, compact, restart, get the same log back.

Run this file as a script for a rough throughput figure on the current disk (not a test):
``.venv/bin/python -m tests.agent.test_disk_storage [data-dir]``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.storage.snapshots as snapshots_module
import agent.storage.wal as wal_module
from agent.raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from agent.storage import DiskStorage, StorageError
from agent.storage.snapshots import SnapshotStore

CONF = ConfState(voters=frozenset({"node1", "node2", "node3"}))


@contextlib.contextmanager
def without_fsync() -> Iterator[None]:
    """Skip fsync in tests of recovery *logic* that open storage hundreds of times (the disk
    is shared; durability itself is not what they check)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)
        for module in (wal_module, snapshots_module):
            patch.setattr(module, "datasync", lambda fd: None)
        yield


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, f"v{i}-t{term}".encode()) for i in range(first, last + 1)]


def snap(index: int, term: int = 1) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, CONF), f"image@{index}".encode())


def reopen(storage: DiskStorage, data_dir: Path, **kw: int) -> tuple[DiskStorage, list[Entry]]:
    storage.close()
    storage, recovered = DiskStorage.open(data_dir, **kw)
    assert recovered.torn_tail is None
    return storage, recovered.entries


def segments(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "wal").glob("*.wal"))


def test_a_fresh_data_dir_recovers_nothing(tmp_path: Path) -> None:
    storage, recovered = DiskStorage.open(tmp_path / "data")
    storage.close()
    assert recovered.hard_state == HardState()
    assert recovered.snapshot is None and recovered.entries == [] and recovered.torn_tail is None
    assert (storage.first_index, storage.last_index) == (1, 0)


def test_entries_hard_state_and_snapshot_survive_a_restart(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(HardState(term=2, vote="node2", commit=0), entries(1, 5, term=2))
    conf_entry = Entry(2, 6, b'{"op": "add-learner"}', EntryKind.CONF_CHANGE)
    storage.save(HardState(term=2, vote="node2", commit=4), [conf_entry])
    storage.save_snapshot(snap(3, term=2))
    storage.close()

    storage, recovered = DiskStorage.open(tmp_path)
    storage.close()
    assert recovered.hard_state == HardState(term=2, vote="node2", commit=4)
    assert recovered.snapshot == snap(3, term=2)
    assert recovered.entries == [*entries(4, 5, term=2), conf_entry]
    assert (storage.first_index, storage.last_index) == (4, 6)


def test_a_replaced_suffix_stays_replaced_after_a_restart(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(HardState(term=1), entries(1, 10, term=1))
    storage.save(HardState(term=3), entries(6, 7, term=3))  # conflict resolution from index 6
    assert storage.last_index == 7

    storage, recovered = reopen(storage, tmp_path)
    storage.close()
    assert recovered == entries(1, 5, term=1) + entries(6, 7, term=3)


def test_an_empty_save_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(HardState(term=1), entries(1, 3))
    sizes = [(tmp_path / "wal" / n).stat().st_size for n in segments(tmp_path)]
    syncs: list[int] = []
    monkeypatch.setattr(wal_module, "datasync", syncs.append)

    storage.save(None, [])

    storage.close()
    assert syncs == []
    assert [(tmp_path / "wal" / n).stat().st_size for n in segments(tmp_path)] == sizes


def test_a_save_is_one_write_and_one_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    calls: list[str] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        calls.append("write")
        return real_write(fd, data)

    monkeypatch.setattr(wal_module, "datasync", lambda fd: calls.append("fdatasync"))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(os, "write", write)

    storage.save(HardState(term=1, commit=10), entries(1, 64))

    monkeypatch.undo()
    storage.close()
    assert calls == ["write", "fdatasync"]


def test_a_commit_only_save_skips_the_fdatasync_but_entries_never_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(HardState(term=2, vote="n1", commit=1), entries(1, 3))
    syncs: list[int] = []
    monkeypatch.setattr(wal_module, "datasync", syncs.append)
    storage.save(HardState(term=2, vote="n1", commit=3), [], sync=False)
    assert syncs == []
    storage.save(None, entries(4, 4), sync=False)  # entries are always made durable
    assert len(syncs) == 1
    monkeypatch.undo()
    storage.close()
    _, rec = DiskStorage.open(tmp_path)
    assert rec.hard_state == HardState(term=2, vote="n1", commit=3)
    assert [e.index for e in rec.entries] == [1, 2, 3, 4]


def test_a_batch_that_would_leave_a_hole_is_refused_before_writing(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(None, entries(1, 3))
    with pytest.raises(ValueError, match="do not fit"):
        storage.save(HardState(term=9), entries(5, 6))
    with pytest.raises(ValueError, match="not contiguous"):
        storage.save(None, [*entries(4, 4), *entries(6, 6)])
    storage, recovered = reopen(storage, tmp_path)
    storage.close()
    assert [e.index for e in recovered] == [1, 2, 3]


def test_segments_roll_over_and_are_released_after_compaction(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path, segment_bytes=256)
    for i in range(1, 101):
        storage.save(HardState(term=1, vote="node1", commit=i - 1), entries(i, i))
    before = segments(tmp_path)
    assert len(before) > 10

    storage.save_snapshot(snap(50))
    assert segments(tmp_path) == before  # one snapshot: nothing to fall back to yet
    storage.save_snapshot(snap(90))
    remaining = segments(tmp_path)
    storage.close()

    # Released up to the older kept snapshot (50), so that a damaged snapshot 90 could still be
    # replaced by snapshot 50 plus the WAL: the first segment left is the one holding entry 51.
    first_indexes = [int(name.split("-")[1].split(".")[0]) for name in remaining]
    assert first_indexes[0] <= 51 < first_indexes[1]
    assert remaining == before[-len(remaining) :]
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == [
        "0000000000000001-0000000000000050.snap",
        "0000000000000001-0000000000000090.snap",
    ]
    storage, recovered = DiskStorage.open(tmp_path)
    storage.close()
    assert recovered.snapshot == snap(90)
    assert recovered.entries == entries(91, 100)
    assert recovered.hard_state == HardState(term=1, vote="node1", commit=99)


def test_a_received_snapshot_keeps_a_matching_suffix(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(None, entries(1, 10, term=2))
    storage.save(HardState(term=2, commit=6), [], snap(6, term=2))
    assert (storage.first_index, storage.last_index) == (7, 10)
    storage, recovered = reopen(storage, tmp_path)
    storage.close()
    assert recovered == entries(7, 10, term=2)


def test_a_received_snapshot_drops_a_log_that_disagrees_with_it(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(None, entries(1, 10, term=1))
    storage.save(HardState(term=3, commit=8), entries(9, 9, term=3), snap(8, term=3))
    assert (storage.first_index, storage.last_index) == (9, 9)
    storage, recovered = reopen(storage, tmp_path)
    storage.close()
    assert recovered == entries(9, 9, term=3)


def test_a_snapshot_file_whose_wal_record_was_lost_in_a_crash_is_used(tmp_path: Path) -> None:
    """save() writes the snapshot file before the WAL; a crash in between leaves only the file."""
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(HardState(term=1, commit=5), entries(1, 10, term=1))
    storage.close()
    SnapshotStore(tmp_path / "snap").save(snap(12, term=4))

    storage, recovered = DiskStorage.open(tmp_path)
    assert recovered.snapshot == snap(12, term=4) and recovered.entries == []
    storage.save(HardState(term=4, commit=13), entries(13, 14, term=4))
    storage, again = reopen(storage, tmp_path)
    storage.close()
    assert again == entries(13, 14, term=4)


def test_crashes_before_recording_snapshots_never_revive_dropped_entries(tmp_path: Path) -> None:
    """Two received snapshots in a row whose WAL records were lost: the first disagrees with
    the log (so the log is dropped), the second then finds no entry at its index."""
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(None, [Entry(1, 1, b"a"), Entry(2, 2, b"b"), Entry(2, 3, b"c")])
    storage.close()
    SnapshotStore(tmp_path / "snap").save(snap(1, term=2))
    storage, first = DiskStorage.open(tmp_path)
    storage.close()
    SnapshotStore(tmp_path / "snap").save(snap(2, term=2))
    storage, second = DiskStorage.open(tmp_path)
    storage.close()

    assert first.entries == [] and second.entries == []
    assert second.snapshot == snap(2, term=2)


def test_data_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        storage, _ = DiskStorage.open(tmp_path / "data", segment_bytes=100)
        for i in range(1, 6):
            storage.save(HardState(term=1), entries(i, i))
        storage.save_snapshot(snap(3))
        storage.close()
    finally:
        os.umask(old)
    paths = list((tmp_path / "data").rglob("*"))
    dirs = [p for p in paths if p.is_dir()] + [tmp_path / "data"]
    files = [p for p in paths if p.is_file()]
    assert len(dirs) == 3 and len(files) >= 4
    assert {stat.S_IMODE(p.stat().st_mode) for p in dirs} == {0o700}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}


def test_a_data_dir_in_use_cannot_be_opened_twice(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    with pytest.raises(StorageError, match="in use"):
        DiskStorage.open(tmp_path)
    storage.close()
    DiskStorage.open(tmp_path)[0].close()


def test_a_closed_storage_refuses_to_save(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.close()
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.save(HardState(term=1), [])


# --- randomized: the disk agrees with a plain in-memory model ------------------------------


class Model:
    """The stored log as Raft defines it, without any files."""

    def __init__(self) -> None:
        self.base = 0
        self.base_term = 0
        self.log: list[Entry] = []
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None

    @property
    def last(self) -> int:
        return self.base + len(self.log)

    def term_at(self, index: int) -> int | None:
        if index == self.base:
            return self.base_term
        if self.base < index <= self.last:
            return self.log[index - self.base - 1].term
        return None

    def install(self, snapshot: Snapshot) -> None:
        index, term = snapshot.meta.index, snapshot.meta.term
        keep = self.term_at(index) == term
        self.log = self.log[index - self.base :] if keep else []
        self.base, self.base_term, self.snapshot = index, term, snapshot

    def append(self, batch: list[Entry]) -> None:
        if batch:
            self.log = self.log[: batch[0].index - self.base - 1] + batch


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), segment_bytes=st.sampled_from([120, 400, 1 << 20]))
def test_random_saves_and_restarts_match_a_simple_model(
    data: st.DataObject, segment_bytes: int
) -> None:
    with without_fsync(), tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = Model()
        storage, _ = DiskStorage.open(root, segment_bytes=segment_bytes)
        try:
            for _ in range(data.draw(st.integers(1, 25), label="steps")):
                storage = step(data, storage, model, root, segment_bytes)
                assert (storage.first_index, storage.last_index) == (model.base + 1, model.last)
            storage.close()
            storage, recovered = DiskStorage.open(root, segment_bytes=segment_bytes)
            assert recovered.entries == model.log
            assert recovered.hard_state == model.hard_state
            assert recovered.snapshot == model.snapshot
            assert recovered.torn_tail is None
        finally:
            storage.close()


def received_snapshot(data: st.DataObject, model: Model) -> Snapshot:
    """A snapshot from a leader: newer than ours, agreeing with our log at its index or not."""
    index = data.draw(st.integers(model.base + 1, model.last + 3), label="snapshot at")
    matching = model.term_at(index)
    term = data.draw(
        st.sampled_from([matching]) | st.integers(1, 9) if matching else st.integers(1, 9),
        label="snapshot term",
    )
    return Snapshot(SnapshotMeta(index, term, CONF), f"r{index}".encode())


def step(
    data: st.DataObject, storage: DiskStorage, model: Model, root: Path, segment_bytes: int
) -> DiskStorage:
    actions = ["append", "append", "receive", "compact", "restart", "crash-after-snapshot-file"]
    action = data.draw(st.sampled_from(actions))
    if action == "crash-after-snapshot-file":
        # save() got as far as writing a received snapshot's file, then the node died.
        storage.close()
        lost = received_snapshot(data, model)
        SnapshotStore(root / "snap").save(lost)
        storage, recovered = DiskStorage.open(root, segment_bytes=segment_bytes)
        model.install(lost)
        assert recovered.snapshot == lost
        assert recovered.entries == model.log and recovered.hard_state == model.hard_state
        return storage
    if action == "restart":
        storage.close()
        storage, recovered = DiskStorage.open(root, segment_bytes=segment_bytes)
        assert recovered.entries == model.log and recovered.hard_state == model.hard_state
        assert recovered.snapshot == model.snapshot
        return storage
    if action == "compact":
        if model.last > model.base:
            index = data.draw(st.integers(model.base + 1, model.last), label="compact at")
            term = model.term_at(index)
            assert term is not None
            own = Snapshot(SnapshotMeta(index, term, CONF), f"c{index}".encode())
            storage.save_snapshot(own)
            model.install(own)
        return storage
    snapshot: Snapshot | None = None
    if action == "receive":
        snapshot = received_snapshot(data, model)
    hard_state = data.draw(
        st.none()
        | st.builds(
            HardState, st.integers(0, 9), st.sampled_from([None, "n1", "n2"]), st.integers(0, 50)
        ),
        label="hard state",
    )
    base, last = model.base, model.last
    if snapshot is not None:
        base = snapshot.meta.index
        last = last if model.term_at(base) == snapshot.meta.term else base
    first = data.draw(st.integers(base + 1, last + 1), label="first index")
    count = data.draw(st.integers(0, 8), label="count")
    term = data.draw(st.integers(1, 9), label="term")
    payload = data.draw(st.binary(max_size=40), label="payload")
    batch = [Entry(term, i, payload + bytes([i % 256])) for i in range(first, first + count)]
    storage.save(hard_state, batch, snapshot)
    if snapshot is not None:
        model.install(snapshot)
    model.append(batch)
    if hard_state is not None:
        model.hard_state = hard_state
    return storage


# --- rough throughput on this disk (a script, not a test) ----------------------------------


def measure(data_dir: Path, batch: int, seconds: float = 2.0) -> float:
    """Entries per second that save() sustains in batches of ``batch`` 100-byte entries."""
    storage, _ = DiskStorage.open(data_dir)
    index, start = 1, time.perf_counter()
    while time.perf_counter() - start < seconds:
        storage.save(
            HardState(term=1, vote="node1", commit=index - 1),
            [Entry(1, i, b"x" * 100) for i in range(index, index + batch)],
        )
        index += batch
    elapsed = time.perf_counter() - start
    storage.close()
    return (index - 1) / elapsed


if __name__ == "__main__":
    parent = sys.argv[1] if len(sys.argv) > 1 else None
    for size in (1, 64):
        with tempfile.TemporaryDirectory(dir=parent) as tmp:
            rate = measure(Path(tmp), size)
            print(f"batches of {size:>2}: {rate:>9,.0f} entries/s, {rate / size:>7,.0f} saves/s")
