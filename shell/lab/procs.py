"""Processes of a lab node, found and signalled by PID through /proc.

There is no PID namespace, so a node's processes have ordinary host PIDs; what marks them as the
node's is their network namespace (the same test ``ip netns pids`` makes). Nothing here matches
processes by name: only PIDs that provably belong to the node are ever signalled.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def netns_inode(netns: str) -> tuple[int, int] | None:
    """(device, inode) of a named network namespace, or None when it does not exist."""
    try:
        st = os.stat(f"/run/netns/{netns}")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pid_netns(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_netns(netns: str) -> list[int]:
    """Every live process whose network namespace is ``netns``."""
    target = netns_inode(netns)
    if target is None:
        return []
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and _pid_netns(int(entry)) == target:
            out.append(int(entry))
    return sorted(out)


def in_netns(pid: int, netns: str, if_unreadable: bool = False) -> bool:
    """Whether ``pid`` lives in ``netns``; ``if_unreadable`` answers when /proc says EACCES
    (non-root ``lab status`` cannot read root's namespaces, and should not report them gone).
    """
    target = netns_inode(netns)
    if target is None:
        return False
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except PermissionError:
        return if_unreadable
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == target


def state(pid: int) -> str | None:
    """The kernel's one-letter state (R, S, T, Z...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def alive(pid: int | None) -> bool:
    """True for a running or stopped process; a zombie has already died."""
    return pid is not None and state(pid) not in (None, "Z", "X")


def stopped(pid: int) -> bool:
    return state(pid) in ("T", "t")


def reap(pid: int) -> None:
    """Collect our own dead child so it does not linger as a zombie; others are init's job."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def send(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_all(pids: list[int], timeout: float = 3.0) -> list[int]:
    """SIGKILL ``pids`` and wait until each is gone; returns the ones that were signalled."""
    killed = [p for p in pids if send(p, signal.SIGKILL)]
    deadline = time.monotonic() + timeout
    pending = set(killed)
    while pending and time.monotonic() < deadline:
        for p in list(pending):
            reap(p)
            if not alive(p):
                pending.discard(p)
        if pending:
            time.sleep(0.01)
    return killed


def read_pidfile(path: Path) -> int | None:
    """The PID on the first line of ``path`` (the agent's LOCK file), if there is one."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.isdigit() else None
