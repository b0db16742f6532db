"""Node-side chores run over SSH as ``python3 -c <this source> OP ARGS…`` (standard library only).

One exec per chore per node, because every exec pays for the remote user's shell startup (a
``pyenv init`` in ~/.bashrc costs ~0.45 s). Each operation prints one JSON object on stdout.

- ``probe BASE PYZ``: python version, systemd, whether the zipapp is there, the marker
  (``node.json``: which cluster and node this base belongs to), whether the agent is running.
- ``start BASE PYZ UNIT``: start the agent detached (systemd-run, or a new session whose output
  goes to BASE/agent.log) and wait for its control socket.
- ``stop BASE UNIT``: stop the agent (SIGTERM, then SIGKILL) and wait until it is gone.
- ``wipe BASE CLUSTER_ID``: stop, then delete BASE, only if its marker names this cluster.

Whether an agent runs is read from the flock on data/LOCK, not from a pid that may be stale.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VERSION_GUARD = (
    "import sys\n"
    "if sys.version_info < (3, 11):\n"
    '    sys.stdout.write(\'{"too_old": "%d.%d.%d"}\\n\' % tuple(sys.version_info[:3]))\n'
    "    sys.exit(3)\n"
)
"""Prepended by the shell and run before this module is even compiled, so an old python3 says
its version instead of failing on syntax it does not know."""


def _running_pid(base: Path) -> int | None:
    """The agent's pid if it holds the data-dir lock, else None."""
    lock = base / "data" / "LOCK"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = lock.read_text().split("\n", 1)[0].strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return None


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _systemd() -> bool:
    return (
        os.path.isdir("/run/systemd/system")
        and shutil.which("systemd-run") is not None
        and os.geteuid() == 0
    )


def _marker(base: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((base / "node.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def probe(base: Path, pyz: str) -> dict[str, Any]:
    pid = _running_pid(base)
    return {
        "python": list(sys.version_info[:3]),
        "executable": sys.executable,
        "systemd": _systemd(),
        "base_exists": base.is_dir(),
        "pyz_present": (base / pyz).is_file(),
        "marker": _marker(base),
        "running_pid": pid,
        "socket": pid is not None and _socket_alive(base / "data" / "control.sock"),
    }


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start(base: Path, pyz: str, unit: str, wait: float = 20.0) -> dict[str, Any]:
    pid = _running_pid(base)
    if pid is not None:
        return {"started": False, "pid": pid}
    argv = [sys.executable, str(base / pyz), "serve", "--config", str(base / "agent.toml")]
    log = base / "agent.log"
    proc: subprocess.Popen[bytes] | None = None
    if _systemd():
        subprocess.run(["systemctl", "reset-failed", unit], capture_output=True, check=False)
        done = subprocess.run(
            ["systemd-run", f"--unit={unit}", "--collect", "--quiet", "--", *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return {"started": False, "error": done.stderr.strip() or "systemd-run failed"}
        how = "systemd"
    else:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # setsid: the agent outlives this SSH session
                cwd=str(base),
            )
        how = "setsid"
    deadline = time.monotonic() + wait
    sock = base / "data" / "control.sock"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return {
                "started": False,
                "error": f"agent exited ({proc.returncode})",
                "log": _tail(log),
            }
        if _running_pid(base) is not None and _socket_alive(sock):
            return {"started": True, "pid": _running_pid(base), "how": how}
        time.sleep(0.05)
    return {"started": False, "error": f"no control socket after {wait:g}s", "log": _tail(log)}


def stop(base: Path, unit: str, wait: float = 15.0) -> dict[str, Any]:
    if _systemd():
        subprocess.run(["systemctl", "stop", unit], capture_output=True, check=False)
    pid = _running_pid(base)
    if pid is None:
        return {"stopped": False, "was_running": False}
    if pid > 0:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while _running_pid(base) is not None:
        if time.monotonic() > deadline and pid > 0:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            pid = 0
        time.sleep(0.05)
    return {"stopped": True, "was_running": True}


def wipe(base: Path, cluster_id: str, unit: str) -> dict[str, Any]:
    marker = _marker(base)
    if not base.exists():
        return {"wiped": False, "reason": "absent"}
    if marker is None and not any(base.iterdir()):
        return {"wiped": True, "reason": "already empty"}
    if marker is None or marker.get("cluster_id") != cluster_id:
        return {"wiped": False, "reason": f"{base} does not belong to cluster {cluster_id}"}
    stop(base, unit)
    for child in base.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    try:
        base.rmdir()
    except OSError as exc:  # a mount point (a lab node, a dedicated disk) stays, emptied
        if exc.errno != errno.EBUSY:
            raise
    return {"wiped": True}


def main(argv: list[str]) -> int:
    op, args = argv[0], argv[1:]
    base = Path(args[0])
    if op == "probe":
        result = probe(base, args[1])
    elif op == "start":
        result = start(base, args[1], args[2])
    elif op == "stop":
        result = stop(base, args[1])
    elif op == "wipe":
        result = wipe(base, args[1], args[2])
    else:
        result = {"error": f"unknown operation {op}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
