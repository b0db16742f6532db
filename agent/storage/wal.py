"""The write-ahead log: segment files, recovery of their records, and the appender.

``wal/`` holds segments named ``<seq>-<first index>.wal`` (16 decimal digits each). Each segment
starts with a header record, then the current snapshot mark and hard state (so releasing older
segments never loses the term and vote), then whatever was appended. Segments are only appended
to; the log's logical shape (suffix replacement, compaction) comes from replaying them in order.

Recovery distinguishes two kinds of damage. A crash in the middle of the last write leaves an
incomplete or garbled record at the very end of the last segment with nothing valid after it:
that write was never acknowledged, so it is cut off and reported. Anything else — a bad record
followed by valid ones, damage in an older segment, a missing segment, a gap in the indexes — may
be data this node already acknowledged, so recovery refuses with the file and offset.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from agent.raft.types import Entry, HardState
from agent.storage.errors import CorruptionError, LogGapError, StorageError
from agent.storage.fileio import FILE_MODE, datasync, fsync_dir, write_all
from agent.storage.records import (
    Record,
    RecordError,
    SegmentHeader,
    SnapshotMark,
    decode_at,
    encode_segment_header,
    find_valid_record,
)

_SEGMENT_NAME = re.compile(r"^(\d{16})-(\d{16})\.wal$")
_HEADER_BYTES = len(encode_segment_header(0, 0))


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016d}-{first_index:016d}.wal"


@dataclass(frozen=True, slots=True)
class SegmentFile:
    path: Path
    seq: int
    first_index: int
    """The log's next index when the segment was started (an overwrite may write lower ones)."""


@dataclass(slots=True)
class SegmentContents:
    file: SegmentFile
    records: list[tuple[int, Record]]
    """(offset, record) for every record after the segment header."""
    size: int
    max_index: int
    """Highest entry index written in this segment (0 if none): it may be released once a
    snapshot covers this index."""


@dataclass(slots=True)
class WalContents:
    segments: list[SegmentContents]
    torn_tail: str | None
    """Report of a torn record cut off the end of the last segment, if any."""


@dataclass(slots=True)
class Replayed:
    hard_state: HardState
    entries: list[Entry] = field(default_factory=list)
    dropped_divergent: bool = False
    """The entries after the snapshot were dropped because the log disagreed with it; the
    opener records that in the WAL so the next recovery reaches the same log."""


def list_segments(wal_dir: Path) -> list[SegmentFile]:
    """The segments in sequence order; a hole in the sequence is corruption."""
    segments = []
    for path in wal_dir.iterdir():
        match = _SEGMENT_NAME.match(path.name)
        if match:
            segments.append(SegmentFile(path, int(match[1]), int(match[2])))
    segments.sort(key=lambda s: s.seq)
    for before, after in itertools.pairwise(segments):
        if after.seq != before.seq + 1:
            raise CorruptionError(
                after.path,
                0,
                f"segment(s) {before.seq + 1}..{after.seq - 1} are missing "
                f"between {before.path.name} and {after.path.name}",
            )
    return segments


def read_wal(wal_dir: Path) -> WalContents:
    """Read and verify every segment; cut off a torn tail of the last one (durably)."""
    files = list_segments(wal_dir)
    segments: list[SegmentContents] = []
    torn: str | None = None
    for position, seg in enumerate(files):
        contents, report = _read_segment(seg, is_last=position == len(files) - 1)
        segments.append(contents)
        torn = torn or report
    return WalContents(segments, torn)


def _read_segment(seg: SegmentFile, *, is_last: bool) -> tuple[SegmentContents, str | None]:
    data = seg.path.read_bytes()
    if not data and not is_last:
        raise CorruptionError(seg.path, 0, "the segment is empty but later segments exist")
    view = memoryview(data)
    records: list[tuple[int, Record]] = []
    max_index = 0
    pos = 0
    while pos < len(data):
        try:
            record, next_pos = decode_at(view, pos)
        except RecordError as err:
            follows = find_valid_record(data, pos + 1) if is_last else None
            if is_last and follows is None and (pos > 0 or _header_never_written(data)):
                report = _cut_off(seg.path, pos, len(data) - pos)
                return SegmentContents(seg, records, pos, max_index), report
            if pos == 0:
                raise CorruptionError(seg.path, 0, f"not a shoal WAL segment ({err.reason})")
            detail = err.reason
            if follows is not None:
                detail += (
                    f"; a valid record follows at offset {follows}, so this is damage, "
                    "not an interrupted write"
                )
            raise CorruptionError(seg.path, pos, detail)
        if pos == 0:
            _check_header(seg, record)
        elif isinstance(record, SegmentHeader):
            raise CorruptionError(seg.path, pos, "a segment header in the middle of a segment")
        else:
            records.append((pos, record))
            if isinstance(record, Entry) and record.index > max_index:
                max_index = record.index
        pos = next_pos
    return SegmentContents(seg, records, len(data), max_index), None


def _header_never_written(data: bytes) -> bool:
    """A segment whose creation crashed: its header is cut short or was never written (zeros).
    A complete but wrong header is a foreign file, not ours to truncate."""
    head = data[:_HEADER_BYTES]
    return len(data) < _HEADER_BYTES or head == bytes(len(head))


def _cut_off(path: Path, pos: int, dropped: int) -> str:
    os.truncate(path, pos)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return (
        f"{path}: cut off a torn record at byte offset {pos} ({dropped} bytes dropped); "
        "a crash interrupted a write that was never acknowledged"
    )


def _check_header(seg: SegmentFile, record: Record) -> None:
    if not isinstance(record, SegmentHeader):
        raise CorruptionError(seg.path, 0, "does not start with a segment header")
    if (record.seq, record.first_index) != (seg.seq, seg.first_index):
        raise CorruptionError(
            seg.path,
            0,
            f"header says segment {record.seq} starting at index {record.first_index}, "
            "which does not match the file name (a renamed or copied file?)",
        )


def replay(contents: WalContents, base_index: int, base_term: int) -> Replayed:
    """Rebuild the hard state and the entries after the snapshot at (base_index, base_term).

    ``base_index`` is the snapshot recovery loaded (0 without one). The WAL may start long
    before it (or, after releases, somewhere before it), so records are read as their effect on
    the log *after* the snapshot: an entry at or below it cuts away everything after it, a mark
    of an older snapshot that dropped the log does the same, and a mark of this snapshot
    confirms the log from there on. Marks of newer snapshots (files damaged or missing) are
    accepted only if the entries they cover are still here, else :class:`LogGapError`.

    If the snapshot's own mark never reached the WAL (a crash between writing the snapshot file
    and the WAL) and the stored log disagrees with the snapshot at its index, the entries after
    it belong to a history the snapshot overrides: they are dropped, as Raft's InstallSnapshot
    prescribes, and ``Replayed.dropped_divergent`` says so.
    """
    state = _Replay(base_index, base_term, known_start=_starts_at_beginning(contents))
    for seg in contents.segments:
        for offset, record in seg.records:
            state.apply(seg.file.path, offset, record)
    return state.finish()


def _starts_at_beginning(contents: WalContents) -> bool:
    return not contents.segments or contents.segments[0].file.seq == 1


class _Replay:
    """Replay state; see :func:`replay`. Kept as a class so each rule reads on its own."""

    def __init__(self, base: int, base_term: int, *, known_start: bool) -> None:
        self.base = base
        self.base_term = base_term
        self.hard_state = HardState()
        self.entries: list[Entry] = []
        self.low_last: int | None = 0 if known_start else None
        """While ``entries`` is empty: the stored log's last index (<= base), or None if that
        is unknown because older segments were released."""
        self.diverged = False
        """The stored log's entry at ``base`` is absent or has another term than the snapshot
        (unknown counts as agreeing: released segments held only covered entries)."""

    def apply(self, path: Path, offset: int, record: Record) -> None:
        if isinstance(record, Entry):
            self._entry(path, offset, record)
        elif isinstance(record, HardState):
            self.hard_state = record
        elif isinstance(record, SnapshotMark):
            if record.index < self.base:
                self._older_mark(record)
            elif record.index == self.base:
                self._own_mark(path, offset, record)
            else:
                self._newer_mark(path, offset, record)

    def _entry(self, path: Path, offset: int, entry: Entry) -> None:
        index, base, entries = entry.index, self.base, self.entries
        if index <= base:
            if not entries and self.low_last is not None and index > self.low_last + 1:
                raise LogGapError(path, offset, f"entry {index} follows entry {self.low_last}")
            entries.clear()
            self.low_last = index
            self.diverged = index < base or entry.term != self.base_term
        elif entries:
            last = entries[-1].index
            if index > last + 1:
                raise LogGapError(path, offset, f"entry {index} follows entry {last}")
            del entries[index - base - 1 :]
            entries.append(entry)
        else:
            if index != base + 1 or (self.low_last is not None and self.low_last < base):
                after = base if self.low_last is None else self.low_last
                raise LogGapError(
                    path, offset, f"entry {index} follows entry {after}: entries are missing"
                )
            entries.append(entry)

    def _older_mark(self, mark: SnapshotMark) -> None:
        if not mark.kept_suffix:
            self.entries.clear()
            self.low_last = mark.index
            self.diverged = True
        elif not self.entries and self.low_last is not None:
            self.low_last = max(self.low_last, mark.index)

    def _own_mark(self, path: Path, offset: int, mark: SnapshotMark) -> None:
        if mark.term != self.base_term:
            raise CorruptionError(
                path,
                offset,
                f"the WAL records a snapshot at index {mark.index} with term {mark.term}, "
                f"but the snapshot file has term {self.base_term}",
            )
        if not mark.kept_suffix:
            self.entries.clear()
        self.diverged = False
        self.low_last = self.base

    def _newer_mark(self, path: Path, offset: int, mark: SnapshotMark) -> None:
        position = mark.index - self.base - 1
        covered = (
            mark.kept_suffix
            and not self.diverged
            and position < len(self.entries)
            and self.entries[position].term == mark.term
        )
        if not covered:
            raise LogGapError(
                path,
                offset,
                f"the log was compacted into a snapshot at index {mark.index} (term {mark.term}) "
                "whose file is missing or unreadable, and the WAL no longer holds the entries "
                "it covers",
            )

    def finish(self) -> Replayed:
        if self.diverged:
            self.entries.clear()
        return Replayed(self.hard_state, self.entries, dropped_divergent=self.diverged)


@dataclass(slots=True)
class _OpenSegment:
    file: SegmentFile
    max_index: int


class WalWriter:
    """Appends records to the last segment, rolls to new ones and releases old ones.

    Not thread-safe: one caller (the runtime's persist step) at a time. After any I/O error the
    writer refuses further work, because the file may hold a partial write whose fate is unknown
    (after a failed fsync Linux may even have dropped the dirty pages): the node must restart and
    recover from what is really on disk.
    """

    def __init__(
        self, wal_dir: Path, segment_bytes: int, segments: list[_OpenSegment], fd: int, size: int
    ) -> None:
        self._dir = wal_dir
        self._segment_bytes = segment_bytes
        self._segments = segments
        self._fd: int | None = fd
        self._size = size
        self._failed: str | None = None

    @classmethod
    def open(
        cls,
        wal_dir: Path,
        contents: WalContents,
        segment_bytes: int,
        context: bytes,
        next_index: int,
    ) -> WalWriter:
        """Continue the last segment (or create the first), writing ``context`` durably.

        ``context`` (the current snapshot mark and hard state) is appended on every open: it
        records a snapshot that recovery loaded but the WAL never heard of (a crash between
        writing the snapshot file and the WAL), and it guarantees the last segment holds the
        latest hard state even if a torn tail took the segment's own copy.
        """
        if not contents.segments:
            first = SegmentFile(wal_dir / segment_name(1, next_index), 1, next_index)
            fd = os.open(first.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
            segments = [_OpenSegment(first, 0)]
            size = 0
            created = True
        else:
            last = contents.segments[-1]
            fd = os.open(last.file.path, os.O_WRONLY | os.O_APPEND)
            segments = [_OpenSegment(s.file, s.max_index) for s in contents.segments]
            size = last.size
            created = False
        writer = cls(wal_dir, segment_bytes, segments, fd, size)
        head = (
            b""
            if size
            else encode_segment_header(segments[-1].file.seq, segments[-1].file.first_index)
        )
        try:
            writer.append(head + context, 0)
            if created:
                fsync_dir(wal_dir)
        except BaseException:
            writer.close()
            raise
        return writer

    @property
    def should_roll(self) -> bool:
        return self._size >= self._segment_bytes

    def roll(self, next_index: int, context: bytes) -> None:
        """Start the next segment with ``context``; the caller's following append syncs it."""
        fd = self._require_fd()
        seq = self._segments[-1].file.seq + 1
        new = SegmentFile(self._dir / segment_name(seq, next_index), seq, next_index)
        try:
            new_fd = os.open(
                new.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE
            )
        except OSError as err:
            self._fail(f"cannot create WAL segment {new.path}: {err}")
        os.close(fd)
        self._fd = new_fd
        self._segments.append(_OpenSegment(new, 0))
        self._size = 0
        try:
            write_all(new_fd, encode_segment_header(seq, next_index) + context)
            self._size = _HEADER_BYTES + len(context)
            fsync_dir(self._dir)
        except OSError as err:
            self._fail(f"cannot start WAL segment {new.path}: {err}")

    def append(self, data: bytes, max_index: int, sync: bool = True) -> None:
        """Write ``data`` (whole records) with one write() and, when ``sync``, make it durable
        with one fdatasync before returning. ``max_index`` is the highest entry index in
        ``data``."""
        fd = self._require_fd()
        try:
            write_all(fd, data)
            if sync:
                datasync(fd)
        except OSError as err:
            self._fail(f"cannot write the WAL segment {self._segments[-1].file.path}: {err}")
        self._size += len(data)
        current = self._segments[-1]
        current.max_index = max(current.max_index, max_index)

    def release(self, upto: int) -> list[Path]:
        """Delete the oldest segments whose entries all lie at or below ``upto``.

        Only a prefix of the sequence is deleted (a hole would read as a lost segment), oldest
        first, and never the segment being written.
        """
        self._require_fd()
        removed: list[Path] = []
        while len(self._segments) > 1 and self._segments[0].max_index <= upto:
            path = self._segments.pop(0).file.path
            try:
                path.unlink()
            except OSError as err:
                self._fail(f"cannot delete released WAL segment {path}: {err}")
            removed.append(path)
        if removed:
            try:
                fsync_dir(self._dir)
            except OSError as err:
                self._fail(f"cannot sync {self._dir} after releasing segments: {err}")
        return removed

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _require_fd(self) -> int:
        if self._failed is not None:
            raise StorageError(f"the WAL failed earlier and must be reopened: {self._failed}")
        if self._fd is None:
            raise StorageError("the WAL is closed")
        return self._fd

    def _fail(self, message: str) -> NoReturn:
        self._failed = message
        raise StorageError(message)
