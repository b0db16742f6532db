"""Recovery of the write-ahead log: torn tails are cut off and reported, damage refuses to start.

These tests damage real segment files the way crashes and bad disks do, then reopen the storage
the way the agent does at boot.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.storage.snapshots as snapshots_module
import agent.storage.wal as wal_module
from agent.raft.types import Entry, EntryKind, HardState
from agent.storage import CorruptionError, DiskStorage
from agent.storage.records import RecordError, decode_at, encode_entry, encode_hard_state

FRAME = struct.Struct(">II")


@contextlib.contextmanager
def without_fsync() -> Iterator[None]:
    """Skip fsync in tests of recovery *logic* that open storage hundreds of times (the disk
    is shared; durability itself is not what they check)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)
        for module in (wal_module, snapshots_module):
            patch.setattr(module, "datasync", lambda fd: None)
        yield


def entries(first: int, last: int, term: int = 1, size: int = 20) -> list[Entry]:
    return [Entry(term, i, f"value-{i}".encode().ljust(size, b".")) for i in range(first, last + 1)]


def segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wal").glob("*.wal"))


def record_offsets(path: Path) -> list[int]:
    """Offsets of every record in a segment, from the framing alone (length + 9 bytes)."""
    data = path.read_bytes()
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        (length, _crc) = FRAME.unpack_from(data, pos)
        pos += FRAME.size + 1 + length
    assert pos == len(data)
    return offsets


def entry_offset(path: Path, index: int) -> int:
    """Offset of the ENTRY record for ``index`` (the last one written, if overwritten)."""
    data = path.read_bytes()
    found = None
    for pos in record_offsets(path):
        if data[pos + 8] == 1 and struct.unpack_from(">Q", data, pos + 17)[0] == index:
            found = pos
    assert found is not None, f"no entry {index} in {path}"
    return found


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def fill(data_dir: Path, last: int = 10, **open_args: int) -> None:
    storage, _ = DiskStorage.open(data_dir, **open_args)
    storage.save(HardState(term=1, vote="node1", commit=2), entries(1, last - 1))
    storage.save(None, entries(last, last))  # the entry is the last record
    storage.close()


def reopen(data_dir: Path, **open_args: int) -> tuple[DiskStorage, list[int], str | None]:
    storage, recovered = DiskStorage.open(data_dir, **open_args)
    return storage, [e.index for e in recovered.entries], recovered.torn_tail


# --- torn tails -----------------------------------------------------------------------------


@pytest.mark.parametrize("cut_into_record", [1, 4, 8, 9, 20, 30])
def test_a_record_cut_short_at_the_tail_is_cut_off_and_reported(
    tmp_path: Path, cut_into_record: int
) -> None:
    """A crash mid-write: header or payload runs past the end of the file."""
    fill(tmp_path)
    seg = segments(tmp_path)[-1]
    last = entry_offset(seg, 10)
    os.truncate(seg, last + cut_into_record)

    storage, indexes, torn = reopen(tmp_path)
    storage.close()

    assert indexes == list(range(1, 10))
    assert torn is not None
    assert seg.name in torn and f"offset {last}" in torn and f"{cut_into_record} bytes" in torn
    assert last in record_offsets(seg)  # cut exactly there (and the log goes on from there)


@pytest.mark.parametrize(
    "tail",
    [b"\xde\xad\xbe\xef" * 7, bytes(4096), b"\x00\x00\x00\x05\x12\x34\x56\x78\x01abcde"],
    ids=["garbage", "zeros", "bad-crc-record"],
)
def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path: Path, tail: bytes) -> None:
    fill(tmp_path)
    seg = segments(tmp_path)[-1]
    end = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(tail)

    storage, indexes, torn = reopen(tmp_path)
    storage.close()

    assert indexes == list(range(1, 11))
    assert torn is not None and f"offset {end}" in torn
    assert end in record_offsets(seg)


def test_a_last_record_with_a_damaged_payload_is_a_torn_tail(tmp_path: Path) -> None:
    fill(tmp_path)
    seg = segments(tmp_path)[-1]
    last = entry_offset(seg, 10)
    flip_bit(seg, last + 30)

    storage, indexes, torn = reopen(tmp_path)
    storage.close()

    assert indexes == list(range(1, 10))
    assert torn is not None and f"offset {last}" in torn


def test_after_a_torn_tail_the_log_continues_normally(tmp_path: Path) -> None:
    fill(tmp_path)
    seg = segments(tmp_path)[-1]
    os.truncate(seg, seg.stat().st_size - 3)
    storage, indexes, torn = reopen(tmp_path)
    assert torn is not None and indexes[-1] == 9
    storage.save(HardState(term=2, vote=None, commit=9), entries(10, 12, term=2))
    storage.close()

    storage, recovered = DiskStorage.open(tmp_path)
    storage.close()
    assert recovered.torn_tail is None
    assert [(e.index, e.term) for e in recovered.entries][-3:] == [(10, 2), (11, 2), (12, 2)]
    assert recovered.hard_state == HardState(term=2, vote=None, commit=9)


def test_a_hard_state_lost_in_a_torn_tail_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path)
    storage.save(HardState(term=3, vote="node2", commit=1), entries(1, 3))
    storage.save(HardState(term=4, vote="node3", commit=1), [])
    storage.close()
    seg = segments(tmp_path)[-1]
    os.truncate(seg, seg.stat().st_size - 2)

    storage, recovered = DiskStorage.open(tmp_path)
    storage.close()
    assert recovered.hard_state == HardState(term=3, vote="node2", commit=1)
    assert recovered.torn_tail is not None


def test_a_segment_whose_creation_crashed_is_reinitialized(tmp_path: Path) -> None:
    """Rolling creates a new file; a crash right after can leave its header cut short."""
    fill(tmp_path, last=10, segment_bytes=200)
    storage, _ = DiskStorage.open(tmp_path, segment_bytes=200)
    count = len(segments(tmp_path))
    index = 10
    while len(segments(tmp_path)) == count:
        index += 1
        storage.save(None, entries(index, index))
    storage.close()
    new = segments(tmp_path)[-1]
    os.truncate(new, 10)  # inside the segment header record: the entry in it was never acked

    storage, indexes, torn = reopen(tmp_path, segment_bytes=200)
    storage.save(None, entries(index, index))
    storage.close()
    assert indexes == list(range(1, index)) and torn is not None and new.name in torn
    assert len(segments(tmp_path)) == count + 1

    storage, indexes, torn = reopen(tmp_path, segment_bytes=200)
    storage.close()
    assert indexes == list(range(1, index + 1)) and torn is None


def test_a_crash_at_any_byte_of_a_write_never_loses_acknowledged_entries(tmp_path: Path) -> None:
    """Cut the last save's bytes at every 7th offset: recovery always starts, keeps everything
    acknowledged before, and returns a prefix of the interrupted batch."""
    data_dir = tmp_path / "data"
    storage, _ = DiskStorage.open(data_dir)
    storage.save(HardState(term=1, vote="node1", commit=3), entries(1, 5))
    seg = segments(data_dir)[-1]
    acknowledged = seg.stat().st_size
    storage.save(HardState(term=2, vote="node2", commit=5), entries(4, 40, term=2))
    storage.close()
    full = seg.read_bytes()

    with without_fsync():
        for cut in range(acknowledged, len(full), 7):
            seg.write_bytes(full[:cut])
            storage, recovered = DiskStorage.open(data_dir)
            storage.close()
            got = [(e.index, e.term) for e in recovered.entries]
            assert got[:3] == [(1, 1), (2, 1), (3, 1)]
            assert got == [(i, 1) for i in range(1, 6)] or got[3:] == [
                (i, 2) for i in range(4, 4 + len(got) - 3)
            ]
            assert recovered.hard_state.term == 1
            # A cut on a record boundary is a clean (shorter) log; anything else is a torn tail.
            assert recovered.torn_tail is None or seg.name in recovered.torn_tail


# --- damage that must refuse to start ---------------------------------------------------------


def assert_refuses(data_dir: Path, path: Path, offset: int) -> CorruptionError:
    before = {p: p.read_bytes() for p in segments(data_dir)}
    with pytest.raises(CorruptionError) as info:
        DiskStorage.open(data_dir)
    err = info.value
    assert Path(err.path) == path and err.offset == offset
    message = str(err)
    assert str(path) in message and f"offset {offset}" in message
    assert "move the data dir aside and rejoin the node, or restore from backup" in message
    # Nothing was "repaired" away.
    assert {p: p.read_bytes() for p in segments(data_dir)} == before
    return err


@pytest.mark.parametrize("where", ["length", "crc", "type", "payload"])
def test_a_bit_flip_in_the_middle_of_the_last_segment_refuses(tmp_path: Path, where: str) -> None:
    fill(tmp_path)
    seg = segments(tmp_path)[-1]
    offset = entry_offset(seg, 5)
    flip_bit(seg, offset + {"length": 2, "crc": 5, "type": 8, "payload": 30}[where])

    assert_refuses(tmp_path, seg, offset)


def test_a_bit_flip_in_an_older_segment_refuses_even_in_its_last_record(tmp_path: Path) -> None:
    fill(tmp_path, last=40, segment_bytes=300)
    storage, _ = DiskStorage.open(tmp_path, segment_bytes=300)
    storage.save(None, entries(41, 60))
    storage.close()
    first = segments(tmp_path)[0]
    assert len(segments(tmp_path)) >= 2
    offset = record_offsets(first)[-1]
    flip_bit(first, offset + 12)

    assert_refuses(tmp_path, first, offset)


def test_a_truncated_older_segment_refuses(tmp_path: Path) -> None:
    fill(tmp_path, last=10, segment_bytes=100)
    storage, _ = DiskStorage.open(tmp_path, segment_bytes=100)
    storage.save(None, entries(11, 12))
    storage.close()
    first = segments(tmp_path)[0]
    offset = record_offsets(first)[-1]
    os.truncate(first, offset + 5)

    assert_refuses(tmp_path, first, offset)


def test_a_deleted_middle_segment_refuses(tmp_path: Path) -> None:
    storage, _ = DiskStorage.open(tmp_path, segment_bytes=150)
    for i in range(1, 30):
        storage.save(None, entries(i, i))
    storage.close()
    files = segments(tmp_path)
    assert len(files) >= 3
    files[1].unlink()

    with pytest.raises(CorruptionError) as info:
        DiskStorage.open(tmp_path)
    assert Path(info.value.path) == files[2]
    assert "missing" in str(info.value) and files[0].name in str(info.value)


def test_a_foreign_file_named_like_a_segment_refuses(tmp_path: Path) -> None:
    fill(tmp_path)
    (tmp_path / "wal" / "0000000000000002-0000000000000011.wal").write_bytes(
        b"#!/bin/sh\necho this is not a WAL segment at all\n" * 3
    )
    with pytest.raises(CorruptionError) as info:
        DiskStorage.open(tmp_path)
    assert info.value.offset == 0 and "not a shoal WAL segment" in str(info.value)


def test_a_renamed_segment_refuses(tmp_path: Path) -> None:
    fill(tmp_path)
    seg = segments(tmp_path)[0]
    seg.rename(seg.with_name("0000000000000001-0000000000000005.wal"))
    with pytest.raises(CorruptionError, match="does not match the file name"):
        DiskStorage.open(tmp_path)


def test_a_gap_in_the_indexes_refuses(tmp_path: Path) -> None:
    """Valid records, valid CRCs, but entry 6 is simply absent: refuse rather than guess."""
    fill(tmp_path)
    seg = segments(tmp_path)[-1]
    data = seg.read_bytes()
    start = entry_offset(seg, 6)
    end = entry_offset(seg, 7)
    seg.write_bytes(data[:start] + data[end:])

    assert_refuses(tmp_path, seg, start)


# --- record layout ----------------------------------------------------------------------------


def test_records_round_trip_every_field() -> None:
    entry = Entry(term=7, index=123456789, data=b"\x00\xffpayload", kind=EntryKind.CONF_CHANGE)
    assert decode_at(encode_entry(entry), 0) == (entry, len(encode_entry(entry)))
    for hs in (HardState(), HardState(term=9, vote="nœud-1", commit=4)):
        assert decode_at(encode_hard_state(hs), 0)[0] == hs


def test_a_record_with_a_valid_crc_but_an_unknown_kind_is_rejected() -> None:
    raw = bytearray(encode_entry(Entry(1, 1, b"x")))
    raw[9 + 16] = 9  # entry kind byte
    body = bytes(raw[8:])
    import zlib

    raw[4:8] = zlib.crc32(body).to_bytes(4, "big")
    with pytest.raises(RecordError, match="unknown kind"):
        decode_at(bytes(raw), 0)
