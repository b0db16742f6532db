"""The byte layout of write-ahead-log records: encoding and strict decoding.

A record is ``length u32 | crc32 u32 | type u8 | payload`` (big-endian), where ``length`` counts
the payload only and the CRC covers the type byte and the payload. The length comes first so a
reader can tell a record cut short by a crash (it runs past the end of the file) from one whose
bytes were damaged (the CRC fails). Decoding validates everything a bit flip could break, so a
damaged record is always reported, never turned into a plausible-looking entry.
"""

from __future__ import annotations

import enum
import re
import struct
import zlib
from dataclasses import dataclass

from agent.raft.types import Entry, EntryKind, HardState

MAGIC = b"SHOALWAL"
"""First bytes of every segment's header record: a stray file is never mistaken for a segment."""
VERSION = 1

HEADER = struct.Struct(">II")
HEADER_SIZE = HEADER.size + 1
"""Length, CRC and the type byte: what must be present before the payload can be read."""
MAX_PAYLOAD = 1 << 28
"""256 MiB. A larger length field is damage, not data (snapshots do not go through the WAL)."""

_ENTRY = struct.Struct(">QQB")
_HARD_STATE = struct.Struct(">QQH")
_MARK = struct.Struct(">QQB")
_SEGMENT = struct.Struct(">8sHQQ")
_MAX_VOTE_BYTES = 0xFFFF


class RecordType(enum.IntEnum):
    SEGMENT_HEADER = 0
    """Magic, version, sequence number and first index; only ever at offset 0 of a segment."""
    ENTRY = 1
    """One log entry: term u64, index u64, kind u8, data."""
    HARD_STATE = 2
    """term u64, commit u64, vote (u16 length + utf-8; empty means no vote)."""
    SNAPSHOT_MARK = 3
    """index u64, term u64, kept u8: the log now starts after this snapshot; kept=1 if the
    entries after it stayed (the log agreed with the snapshot), 0 if they were dropped."""


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    seq: int
    first_index: int


@dataclass(frozen=True, slots=True)
class SnapshotMark:
    index: int
    term: int
    kept_suffix: bool
    """Whether the entries after ``index`` survived (Raft keeps them only if the log holds the
    snapshot's last entry with the same term). Recorded rather than recomputed so recovery
    needs no knowledge of entries the snapshot already covers."""


Record = SegmentHeader | Entry | HardState | SnapshotMark


class RecordError(Exception):
    """The bytes at some offset are not a valid record; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _frame(kind: RecordType, payload: bytes) -> bytes:
    body = bytes((kind,)) + payload
    return HEADER.pack(len(payload), zlib.crc32(body)) + body


def encode_entry(entry: Entry) -> bytes:
    if len(entry.data) > MAX_PAYLOAD - _ENTRY.size:
        raise ValueError(f"entry {entry.index} is too large to log ({len(entry.data)} bytes)")
    return _frame(
        RecordType.ENTRY, _ENTRY.pack(entry.term, entry.index, int(entry.kind)) + entry.data
    )


def encode_entries(entries: list[Entry]) -> bytes:
    """All of ``entries`` as one buffer, so a batch costs one write() (the hot path of save)."""
    pack_head = HEADER.pack
    pack_entry = _ENTRY.pack
    crc32 = zlib.crc32
    prefix = bytes((RecordType.ENTRY,))
    limit = MAX_PAYLOAD - _ENTRY.size
    parts: list[bytes] = []
    for entry in entries:
        if len(entry.data) > limit:
            raise ValueError(f"entry {entry.index} is too large to log ({len(entry.data)} bytes)")
        body = prefix + pack_entry(entry.term, entry.index, int(entry.kind)) + entry.data
        parts.append(pack_head(len(body) - 1, crc32(body)))
        parts.append(body)
    return b"".join(parts)


def encode_hard_state(hs: HardState) -> bytes:
    vote = (hs.vote or "").encode()
    if len(vote) > _MAX_VOTE_BYTES:
        raise ValueError("vote (a node id) is too long to log")
    return _frame(RecordType.HARD_STATE, _HARD_STATE.pack(hs.term, hs.commit, len(vote)) + vote)


def encode_mark(index: int, term: int, *, kept_suffix: bool) -> bytes:
    return _frame(RecordType.SNAPSHOT_MARK, _MARK.pack(index, term, int(kept_suffix)))


def encode_segment_header(seq: int, first_index: int) -> bytes:
    return _frame(RecordType.SEGMENT_HEADER, _SEGMENT.pack(MAGIC, VERSION, seq, first_index))


def decode_at(buf: bytes | memoryview, pos: int) -> tuple[Record, int]:
    """Decode the record starting at ``pos``; return it and the offset just past it.

    Raises :class:`RecordError` if the record is incomplete, fails its CRC, has an unknown type,
    an implausible length or a payload malformed for its type.
    """
    end = len(buf)
    if pos + HEADER_SIZE > end:
        raise RecordError(f"record header runs past the end of the file ({end - pos} bytes left)")
    length, crc = HEADER.unpack_from(buf, pos)
    if length > MAX_PAYLOAD:
        raise RecordError(f"record length {length} exceeds the limit of {MAX_PAYLOAD}")
    body_end = pos + HEADER_SIZE + length
    if body_end > end:
        raise RecordError(
            f"record of {length} payload bytes runs past the end of the file "
            f"({end - pos - HEADER_SIZE} left)"
        )
    if zlib.crc32(buf[pos + HEADER.size : body_end]) != crc:
        raise RecordError("checksum mismatch")
    kind = buf[pos + HEADER.size]
    return _decode_payload(kind, bytes(buf[pos + HEADER_SIZE : body_end])), body_end


def _decode_payload(kind: int, payload: bytes) -> Record:
    if kind == RecordType.ENTRY:
        if len(payload) < _ENTRY.size:
            raise RecordError("ENTRY record is too short")
        term, index, entry_kind = _ENTRY.unpack_from(payload)
        if index < 1:
            raise RecordError("ENTRY record has index 0")
        try:
            return Entry(term, index, payload[_ENTRY.size :], EntryKind(entry_kind))
        except ValueError:
            raise RecordError(f"ENTRY record has unknown kind {entry_kind}")
    if kind == RecordType.HARD_STATE:
        if len(payload) < _HARD_STATE.size:
            raise RecordError("HARD_STATE record is too short")
        term, commit, vote_len = _HARD_STATE.unpack_from(payload)
        if len(payload) != _HARD_STATE.size + vote_len:
            raise RecordError("HARD_STATE record has a wrong vote length")
        try:
            vote = payload[_HARD_STATE.size :].decode()
        except UnicodeDecodeError:
            raise RecordError("HARD_STATE record has a vote that is not utf-8")
        return HardState(term=term, vote=vote or None, commit=commit)
    if kind == RecordType.SNAPSHOT_MARK:
        if len(payload) != _MARK.size:
            raise RecordError("SNAPSHOT_MARK record has the wrong size")
        index, term, kept = _MARK.unpack(payload)
        if kept > 1:
            raise RecordError("SNAPSHOT_MARK record has a bad flag")
        return SnapshotMark(index, term, bool(kept))
    if kind == RecordType.SEGMENT_HEADER:
        if len(payload) != _SEGMENT.size:
            raise RecordError("segment header record has the wrong size")
        magic, version, seq, first_index = _SEGMENT.unpack(payload)
        if magic != MAGIC:
            raise RecordError("segment header has the wrong magic: not a shoal WAL segment")
        if version != VERSION:
            raise RecordError(f"segment format version {version} is not supported")
        return SegmentHeader(seq, first_index)
    raise RecordError(f"unknown record type {kind}")


_CANDIDATE = re.compile(
    b"[" + bytes((RecordType.ENTRY, RecordType.HARD_STATE, RecordType.SNAPSHOT_MARK)) + b"]"
)


def find_valid_record(buf: bytes, start: int) -> int | None:
    """Offset of the first valid record beginning at or after ``start``, or None.

    This is how a torn tail is told from damage: a crash mid-write leaves garbage (or zeros) at
    the very end, so nothing valid can follow it; a bit flip in the middle leaves intact records
    behind it. Only offsets whose type byte is a record type (other than a segment header) are
    tried, which keeps the search fast and skips zero-filled blocks entirely.
    """
    end = len(buf)
    view = memoryview(buf)
    match = _CANDIDATE.search(buf, start + HEADER.size)
    while match is not None:
        kind_byte = match.start()
        pos = kind_byte - HEADER.size
        length = int.from_bytes(buf[pos : pos + 4], "big")
        if length <= MAX_PAYLOAD and kind_byte + 1 + length <= end:
            try:
                decode_at(view, pos)
            except RecordError:
                pass
            else:
                return pos
        match = _CANDIDATE.search(buf, kind_byte + 1)
    return None
