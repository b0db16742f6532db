"""One changing lab command at a time on this host.

Picking a free subnet and editing lab.json race otherwise — also between two SHOAL_HOMEs (two
test runs, two users), whose labs share the host's 198.18.0.0/15. The lock is an abstract unix
socket name: held while bound, released by the kernel when the process exits however it exits,
and it leaves no file behind. An flock on the labs directory covers a SHOAL_HOME shared across
network namespaces.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from shell.lab.errors import LabError
from shell.lab.paths import make_private_dir

HOST_LOCK = b"\0shoal-lab-lock"


@contextlib.contextmanager
def host_lock(timeout: float = 120.0) -> Iterator[None]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.bind(HOST_LOCK)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                if time.monotonic() > deadline:
                    raise LabError(f"another shoal lab command held the lock for {timeout:.0f}s")
                time.sleep(0.05)
        yield
    finally:
        sock.close()


@contextlib.contextmanager
def labs_lock(labs: Path, create: bool = True) -> Iterator[None]:
    with host_lock():
        if not labs.exists():
            if not create:
                yield
                return
            make_private_dir(labs)
        fd = os.open(labs, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
