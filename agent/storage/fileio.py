"""Small durable-file helpers shared by the WAL and the snapshot store.

Durability needs more than fsync on a file: creating, renaming or deleting a file is only
durable once the directory holding it is fsynced too. And cluster data (keys, values, votes) is
private to the node, so directories are 0700 and files 0600 whatever the umask.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600

datasync = getattr(os, "fdatasync", os.fsync)
"""fdatasync where the platform has it (Linux): it skips flushing timestamps, which is cheaper
and still makes the data and the file size durable."""


def fsync_dir(path: Path) -> None:
    """Make the creation, rename or removal of entries in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make it 0700; fsync the parent on creation."""
    if not path.is_dir():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fsync_dir(path.parent)
    if (path.stat().st_mode & 0o777) != DIR_MODE:
        os.chmod(path, DIR_MODE)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is legal, if rare, on files)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
