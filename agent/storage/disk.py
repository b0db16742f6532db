"""DiskStorage: the one object the runtime uses to make Raft state durable.

It carries out the persist step of each Ready (snapshot, entries, hard state; one fsync) and
the node's own compactions, and on open recovers what was stored: the latest hard state, the
newest trustworthy snapshot and the entries after it. A data dir looks like::

    <data_dir>/wal/LOCK                 held (flock) while a process has the storage open
    <data_dir>/wal/<seq>-<index>.wal    write-ahead log segments (see wal.py)
    <data_dir>/snap/<term>-<index>.snap snapshot files (see snapshots.py)
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.raft.types import Entry, HardState, Snapshot
from agent.storage.errors import CorruptionError, LogGapError, StorageError
from agent.storage.fileio import FILE_MODE, ensure_private_dir
from agent.storage.records import encode_entries, encode_hard_state, encode_mark
from agent.storage.snapshots import SnapshotFile, SnapshotStore
from agent.storage.wal import Replayed, WalContents, WalWriter, read_wal, replay

KEEP_SNAPSHOTS = 2
"""Snapshot files kept: the newest, plus one to fall back to if the newest is found damaged."""


@dataclass
class Recovered:
    """What was durably stored, for restarting the Raft node."""

    hard_state: HardState
    """HardState() when nothing was stored."""
    snapshot: Snapshot | None
    """The newest valid snapshot, or None."""
    entries: list[Entry]
    """Contiguous entries after snapshot.meta.index (or from index 1)."""
    torn_tail: str | None
    """Human-readable report of a torn record cut off the end of the WAL, else None."""


class _LogShape:
    """Which indexes (and their terms) the stored log holds, mirrored in memory.

    Lets :meth:`DiskStorage.save` reject a batch that would leave a hole before anything is
    written, and apply the same snapshot rule recovery applies, without reading the disk.
    """

    def __init__(self, base: int, base_term: int, terms: list[int]) -> None:
        self.base = base
        self.base_term = base_term
        self.terms = terms

    @property
    def last_index(self) -> int:
        return self.base + len(self.terms)

    def keeps_suffix(self, index: int, term: int) -> bool:
        """Raft's InstallSnapshot rule: the entries after a snapshot are kept only if the log
        holds the snapshot's last entry with the same term; otherwise the whole log goes."""
        if index == self.base:
            return term == self.base_term
        return self.base < index <= self.last_index and self.terms[index - self.base - 1] == term

    def install(self, index: int, term: int) -> None:
        if self.keeps_suffix(index, term):
            del self.terms[: index - self.base]
        else:
            self.terms = []
        self.base, self.base_term = index, term

    def append(self, entries: list[Entry]) -> None:
        del self.terms[entries[0].index - self.base - 1 :]
        self.terms.extend(e.term for e in entries)


class DiskStorage:
    """Durable Raft state in one data dir. Not thread-safe: call from one thread/task."""

    def __init__(
        self,
        root: Path,
        lock_fd: int,
        snapshots: SnapshotStore,
        wal: WalWriter,
        shape: _LogShape,
        hard_state: HardState,
    ) -> None:
        self._root = root
        self._lock_fd: int | None = lock_fd
        self._snapshots = snapshots
        self._wal = wal
        self._shape = shape
        self._hard_state = hard_state

    @classmethod
    def open(
        cls, data_dir: str | os.PathLike[str], *, segment_bytes: int = 64 * 1024 * 1024
    ) -> tuple[DiskStorage, Recovered]:
        """Open (creating if needed) the storage in ``data_dir`` and recover its contents.

        Raises :class:`CorruptionError` if the stored data is damaged anywhere but a torn tail,
        and :class:`StorageError` if another process has the data dir open.
        """
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        root = Path(data_dir)
        wal_dir = root / "wal"
        with _io(f"open the storage in {root}"):
            ensure_private_dir(root)
            ensure_private_dir(wal_dir)
            lock_fd = _lock(wal_dir)
        try:
            with _io(f"open the storage in {root}"):
                return cls._recover_locked(root, lock_fd, segment_bytes)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _recover_locked(
        cls, root: Path, lock_fd: int, segment_bytes: int
    ) -> tuple[DiskStorage, Recovered]:
        wal_dir = root / "wal"
        snapshots = SnapshotStore(root / "snap")
        contents = read_wal(wal_dir)
        files = snapshots.files()
        if not contents.segments and files:
            raise CorruptionError(
                wal_dir,
                0,
                "snapshot files exist but the write-ahead log is gone, and with it the node's "
                "term and vote",
            )
        snapshot, replayed = _recover(snapshots, files, contents)
        base = snapshot.meta.index if snapshot else 0
        base_term = snapshot.meta.term if snapshot else 0
        shape = _LogShape(base, base_term, [e.term for e in replayed.entries])
        mark = encode_mark(base, base_term, kept_suffix=not replayed.dropped_divergent)
        context = mark + encode_hard_state(replayed.hard_state)
        wal = WalWriter.open(wal_dir, contents, segment_bytes, context, shape.last_index + 1)
        storage = cls(root, lock_fd, snapshots, wal, shape, replayed.hard_state)
        recovered = Recovered(replayed.hard_state, snapshot, replayed.entries, contents.torn_tail)
        return storage, recovered

    @property
    def last_index(self) -> int:
        """Index of the last stored entry (the snapshot's index if no entries follow it)."""
        return self._shape.last_index

    @property
    def first_index(self) -> int:
        """Index of the first stored entry: one past the snapshot's index (1 without one)."""
        return self._shape.base + 1

    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None = None,
        *,
        sync: bool = True,
    ) -> None:
        """Persist one Ready: the snapshot (atomically, first), the entries, the hard state.

        ``sync=False`` writes without the fdatasync; it is for a Ready whose only change is the
        commit index, which Raft can always recover from its peers (etcd skips that sync too).
        The next synced write makes it durable along with everything before it.

        ``entries[0].index`` may be at or below :attr:`last_index`: the stored suffix from there
        on is replaced. A received snapshot drops the stored log up to its index (and the rest
        too if the log disagrees with it at that index). Returns once everything is durable, at
        the cost of one fdatasync of the WAL (plus the snapshot file's own syncs). Raises
        ValueError for a batch that would leave a hole in the log, before writing anything.
        """
        if hard_state is None and not entries and snapshot is None:
            return
        self._check_open()
        parts: list[bytes] = []
        shape = self._shape
        base, last = shape.base, shape.last_index
        if snapshot is not None:
            index, term = snapshot.meta.index, snapshot.meta.term
            if index < base or (index == base and term != shape.base_term):
                raise ValueError(
                    f"snapshot at index {index} (term {term}) is older than the stored one "
                    f"at index {base} (term {shape.base_term})"
                )
            kept = shape.keeps_suffix(index, term)
            last = last if kept else index
            base = index
            parts.append(encode_mark(index, term, kept_suffix=kept))
        if entries:
            _check_entries(entries, base, last)
            parts.append(encode_entries(entries))
        if hard_state is not None:
            parts.append(encode_hard_state(hard_state))
        if snapshot is not None:
            with _io("write the snapshot"):
                self._snapshots.save(snapshot)
        self._append(b"".join(parts), entries[-1].index if entries else 0, sync or bool(entries))
        if snapshot is not None:
            shape.install(snapshot.meta.index, snapshot.meta.term)
        if entries:
            shape.append(entries)
        if hard_state is not None:
            self._hard_state = hard_state
        if snapshot is not None:
            with _io("delete old snapshots"):
                self._snapshots.prune(KEEP_SNAPSHOTS)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Persist a snapshot the node took itself, then reclaim space.

        Log entries up to its index are dropped; WAL segments are deleted once they hold
        nothing above the index of the *older* of the two kept snapshots, so that if the newest
        snapshot is ever found damaged, recovery can still fall back to the older one and replay
        the WAL from there. A snapshot not newer than the stored one is a no-op.
        """
        self._check_open()
        index, term = snapshot.meta.index, snapshot.meta.term
        if index <= self._shape.base:
            return
        if index > self._shape.last_index:
            raise ValueError(
                f"cannot compact to index {index}: the log ends at {self._shape.last_index}"
            )
        with _io("write the snapshot"):
            self._snapshots.save(snapshot)
        self._append(encode_mark(index, term, kept_suffix=self._shape.keeps_suffix(index, term)), 0)
        self._shape.install(index, term)
        with _io("delete old snapshots"):
            kept = self._snapshots.prune(KEEP_SNAPSHOTS)
        if len(kept) == KEEP_SNAPSHOTS:
            self._wal.release(kept[-1].index)

    def close(self) -> None:
        """Release the data dir. Everything saved is already durable; closing twice is fine."""
        self._wal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise StorageError(f"the storage in {self._root} is closed")

    def _append(self, data: bytes, max_index: int, sync: bool = True) -> None:
        if self._wal.should_roll:
            shape = self._shape
            mark = encode_mark(shape.base, shape.base_term, kept_suffix=True)
            context = mark + encode_hard_state(self._hard_state)
            self._wal.roll(shape.last_index + 1, context)
        self._wal.append(data, max_index, sync)


@contextlib.contextmanager
def _io(what: str) -> Iterator[None]:
    """Report an OS-level failure as a StorageError saying what was being done."""
    try:
        yield
    except OSError as err:
        raise StorageError(f"cannot {what}: {err}") from err


def _check_entries(entries: list[Entry], base: int, last: int) -> None:
    first = entries[0].index
    if not base < first <= last + 1:
        raise ValueError(
            f"entries starting at index {first} do not fit a log holding {base + 1}..{last}"
        )
    for before, after in itertools.pairwise(entries):
        if after.index != before.index + 1:
            raise ValueError(f"entries are not contiguous: {before.index} then {after.index}")


def _lock(wal_dir: Path) -> int:
    """Hold an exclusive lock on the WAL: two writers appending to one log would interleave
    records and destroy it. (Its own lock file, so a runtime may also lock the data dir.)"""
    path = wal_dir / "LOCK"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StorageError(f"{wal_dir.parent} is in use by another process (it holds {path})")
    return fd


def _recover(
    snapshots: SnapshotStore, files: list[SnapshotFile], contents: WalContents
) -> tuple[Snapshot | None, Replayed]:
    """Pick the newest snapshot that is intact and that the WAL continues without a gap.

    A damaged newest snapshot is tolerated only if an older one plus the WAL still rebuild the
    same log; the damaged file is then moved aside. Otherwise the error names the damaged file.
    """
    damaged: list[tuple[SnapshotFile, CorruptionError]] = []
    for file in files:
        try:
            snapshot = snapshots.load(file)
        except CorruptionError as err:
            damaged.append((file, err))
            continue
        replayed = _replay_or_blame(contents, snapshot, damaged)
        for bad, _ in damaged:
            snapshots.quarantine(bad)
        return snapshot, replayed
    return None, _replay_or_blame(contents, None, damaged)


def _replay_or_blame(
    contents: WalContents,
    snapshot: Snapshot | None,
    damaged: list[tuple[SnapshotFile, CorruptionError]],
) -> Replayed:
    base = snapshot.meta.index if snapshot else 0
    term = snapshot.meta.term if snapshot else 0
    try:
        return replay(contents, base, term)
    except LogGapError as gap:
        if not damaged:
            raise
        bad, err = damaged[0]
        fallback = f"the older snapshot at index {base}" if snapshot else "an empty log"
        raise CorruptionError(
            bad.path,
            err.offset,
            f"{err.reason}; falling back to {fallback} is impossible because the WAL no longer "
            f"holds the entries in between ({gap.path} at offset {gap.offset}: {gap.reason})",
        )
