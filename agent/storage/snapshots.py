"""Snapshot files: one state-machine image per file, written atomically, checked on load.

A snapshot replaces the log up to its index, so a half-written or damaged one must never be
loaded: files are written to a temporary name, fsynced, renamed into place and the directory
fsynced, and every load verifies a CRC over the whole content. File names encode term and index
(``<term>-<index>.snap``) so the newest one is found without opening any.

Layout: ``magic "SHOALSNP" | version u16 | crc32 u32 | meta length u32 | meta JSON | data``, the
CRC covering everything after itself. The meta JSON holds index, term and the membership.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from agent.raft.types import ConfState, Snapshot, SnapshotMeta
from agent.storage.errors import CorruptionError
from agent.storage.fileio import FILE_MODE, datasync, ensure_private_dir, fsync_dir, write_all

MAGIC = b"SHOALSNP"
VERSION = 1
_PREFIX = struct.Struct(">8sHI")
_META_LEN = struct.Struct(">I")
_BODY_START = _PREFIX.size
_NAME = re.compile(r"^(\d{16})-(\d{16})\.snap$")
TEMP_SUFFIX = ".tmp"
CORRUPT_SUFFIX = ".corrupt"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A snapshot file as named on disk (its content is only trusted after :meth:`load`)."""

    path: Path
    term: int
    index: int


def snapshot_name(term: int, index: int) -> str:
    return f"{term:016d}-{index:016d}.snap"


def encode_snapshot(snapshot: Snapshot) -> bytes:
    meta = json.dumps(
        {
            "index": snapshot.meta.index,
            "term": snapshot.meta.term,
            "conf": snapshot.meta.conf.to_dict(),
        },
        sort_keys=True,
    ).encode()
    body = _META_LEN.pack(len(meta)) + meta + snapshot.data
    return _PREFIX.pack(MAGIC, VERSION, zlib.crc32(body)) + body


class SnapshotStore:
    """The ``snap/`` directory of a data dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        ensure_private_dir(directory)
        self._remove_stale_temps()

    def _remove_stale_temps(self) -> None:
        """A temp file is a snapshot whose write was interrupted: it was never acknowledged."""
        stale = [p for p in self.directory.iterdir() if p.name.endswith(TEMP_SUFFIX)]
        for path in stale:
            path.unlink()
        if stale:
            fsync_dir(self.directory)

    def files(self) -> list[SnapshotFile]:
        """Snapshot files, newest (highest index, then term) first."""
        files = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match:
                files.append(SnapshotFile(path, int(match[1]), int(match[2])))
        files.sort(key=lambda f: (f.index, f.term), reverse=True)
        return files

    def save(self, snapshot: Snapshot) -> SnapshotFile:
        """Write ``snapshot`` atomically: after a crash it is either complete or absent."""
        name = snapshot_name(snapshot.meta.term, snapshot.meta.index)
        final = self.directory / name
        temp = self.directory / (name + TEMP_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            write_all(fd, encode_snapshot(snapshot))
            datasync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        fsync_dir(self.directory)
        return SnapshotFile(final, snapshot.meta.term, snapshot.meta.index)

    def load(self, file: SnapshotFile) -> Snapshot:
        """Read and verify ``file``; raise :class:`CorruptionError` if it cannot be trusted."""
        data = file.path.read_bytes()
        if len(data) < _BODY_START + _META_LEN.size:
            raise CorruptionError(file.path, len(data), "snapshot file is truncated")
        magic, version, crc = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            raise CorruptionError(file.path, 0, "not a shoal snapshot file (wrong magic)")
        if version != VERSION:
            raise CorruptionError(
                file.path, len(MAGIC), f"snapshot format version {version} is not supported"
            )
        body = memoryview(data)[_BODY_START:]
        if zlib.crc32(body) != crc:
            raise CorruptionError(
                file.path, len(MAGIC) + 2, "checksum mismatch: the snapshot content is damaged"
            )
        (meta_len,) = _META_LEN.unpack_from(body)
        meta_start = _BODY_START + _META_LEN.size
        if meta_start + meta_len > len(data):
            raise CorruptionError(file.path, _BODY_START, "snapshot meta length is out of range")
        meta = _parse_meta(file, data[meta_start : meta_start + meta_len], meta_start)
        return Snapshot(meta, data[meta_start + meta_len :])

    def prune(self, keep: int) -> list[SnapshotFile]:
        """Delete all but the ``keep`` newest snapshot files; return the kept ones, newest first.

        Keeping more than one lets recovery fall back to an older snapshot if the newest one is
        found damaged.
        """
        files = self.files()
        for old in files[keep:]:
            old.path.unlink()
        if files[keep:]:
            fsync_dir(self.directory)
        return files[:keep]

    def quarantine(self, file: SnapshotFile) -> Path:
        """Rename a damaged snapshot out of the way (kept for inspection, never loaded again)."""
        target = file.path.with_name(file.path.name + CORRUPT_SUFFIX)
        os.replace(file.path, target)
        fsync_dir(self.directory)
        log.warning("moved damaged snapshot %s aside to %s", file.path, target.name)
        return target


def _parse_meta(file: SnapshotFile, raw: bytes, offset: int) -> SnapshotMeta:
    try:
        meta = json.loads(raw)
        index, term, conf = meta["index"], meta["term"], meta["conf"]
        if not (isinstance(index, int) and isinstance(term, int) and isinstance(conf, dict)):
            raise TypeError("wrong field types")
        conf_state = ConfState.from_dict(conf)
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptionError(file.path, offset, f"snapshot meta is malformed ({err})")
    if (index, term) != (file.index, file.term):
        raise CorruptionError(
            file.path,
            offset,
            f"snapshot meta says index {index} term {term}, which does not match its file name",
        )
    return SnapshotMeta(index=index, term=term, conf=conf_state)
