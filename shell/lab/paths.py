"""Where shoal keeps its files, and where one lab keeps its state.

Everything a lab makes on disk lives under one directory, so that ``lab down`` can remove it all
and an operator can see (and back up, or delete) exactly what the lab left behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from shell.lab.errors import LabError

# A lab name becomes part of namespace names and file names: keep it to a safe alphabet.
_LAB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
DEFAULT_LAB = "lab"


def shoal_home() -> Path:
    """The operator's shoal directory: ``$SHOAL_HOME``, else ``~/.shoal``."""
    env = os.environ.get("SHOAL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".shoal"


def labs_dir(home: Path | None = None) -> Path:
    return (home or shoal_home()) / "labs"


def check_lab_name(name: str) -> str:
    """Refuse names that could not be part of a namespace or file name."""
    if not _LAB_NAME.match(name):
        raise LabError(
            f"bad lab name {name!r}: use 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def lab_dir(name: str, home: Path | None = None) -> Path:
    return labs_dir(home) / check_lab_name(name)


def make_private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` and its missing parents with ``mode``; umask must not widen a private dir.

    Existing parents keep their modes, but ``path`` itself is always set to ``mode``.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=mode, exist_ok=True)
        os.chmod(p, mode)
    os.chmod(path, mode)
    return path


def write_file(path: Path, data: str | bytes, mode: int = 0o600) -> Path:
    """Write a file atomically with ``mode`` from the start, never briefly world-readable."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, raw)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path
