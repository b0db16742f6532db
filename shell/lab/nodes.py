"""Start, watch and wake lab nodes: the node's files, its keeper (sshd), and its agent.

A node directory holds what a real machine keeps on its own disk: root's home, /etc/ssh with its
host keys, /var/lib/shoal, /run and /tmp. The keeper (node_init.py) mounts them over the real
paths inside the node's private mount namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shell.lab import procs
from shell.lab.errors import LabError
from shell.lab.files import sshd_config
from shell.lab.keys import KeyPair
from shell.lab.node_init import BOOT_PATH
from shell.lab.paths import make_private_dir, write_file
from shell.lab.state import NodeState

NODE_INIT = Path(__file__).with_name("node_init.py")
SSHD_LOG = "sshd.log"
# Modes the node sees: these directories stand in for the real ones.
NODE_DIRS = {"root": 0o700, "etc-ssh": 0o755, "var-lib-shoal": 0o700, "run": 0o755, "tmp": 0o1777}
AGENT_LOG = "agent.log"
NODE_BASE = "/var/lib/shoal"  # the agent's base directory, as the node sees it


def prepare(node_dir: Path, node: NodeState, host_key: KeyPair, operator_pub: str) -> None:
    """Write a node's private files: host key, sshd_config, root's authorized_keys, skeleton."""
    make_private_dir(node_dir)
    for sub, mode in NODE_DIRS.items():
        make_private_dir(node_dir / sub, mode)
    etc = node_dir / "etc-ssh"
    write_file(etc / "ssh_host_ed25519_key", host_key.private_openssh, 0o600)
    write_file(etc / "ssh_host_ed25519_key.pub", host_key.public_line(f"root@{node.name}"), 0o644)
    write_file(etc / "sshd_config", sshd_config(node.address), 0o644)
    if os.path.exists("/etc/ssh/ssh_config"):
        shutil.copyfile("/etc/ssh/ssh_config", etc / "ssh_config")
    write_file(node_dir / "hostname", f"{node.name}\n", 0o644)
    root = node_dir / "root"
    for skel in (".bashrc", ".profile"):
        if os.path.exists(f"/etc/skel/{skel}"):
            shutil.copyfile(f"/etc/skel/{skel}", root / skel)
    make_private_dir(root / ".ssh")
    write_file(root / ".ssh" / "authorized_keys", operator_pub, 0o600)


def start_keeper(node: NodeState, node_dir: Path, hosts_file: Path) -> subprocess.Popen[bytes]:
    """Start the node: its keeper enters the namespaces, mounts, and execs sshd (same PID)."""
    argv = [
        "ip", "netns", "exec", node.netns,
        "unshare", "--mount", "--uts", "--propagation", "private", "--",
        sys.executable, "-I", "-S", str(NODE_INIT),
        "--hostname", node.name, "--node-dir", str(node_dir), "--hosts", str(hosts_file),
    ]  # fmt: skip
    return _spawn(argv, node_dir / SSHD_LOG)


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """A node's long-lived process, in its own session, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )


def start_ssh_publisher(node: NodeState, node_dir: Path) -> subprocess.Popen[bytes]:
    """Publish the node's sshd as ``_ssh._tcp`` over mDNS, as avahi does on ordinary hosts,
    so that discovery finds lab nodes the way it finds real machines."""
    argv = [
        "ip", "netns", "exec", node.netns,
        sys.executable, "-m", "agent.mdns", "publish",
        "--type", "_ssh._tcp.local.", "--name", node.name, "--host", f"{node.name}.local.",
        "--address", node.address, "--port", "22",
    ]  # fmt: skip
    return _spawn(argv, node_dir / "mdns.log")


def sshd_answers(address: str, port: int = 22, timeout: float = 0.5) -> bool:
    """True once something on ``address:port`` sends an SSH banner (not merely accepts)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def wait_ready(
    nodes: list[tuple[NodeState, subprocess.Popen[bytes] | None, Path]],
    timeout: float = 15.0,
    on_ready: Callable[[NodeState], None] | None = None,
) -> None:
    """Poll each node's port 22 until sshd accepts; fail early, with its log, if a keeper dies."""
    pending = list(nodes)
    deadline = time.monotonic() + timeout
    while pending:
        for item in list(pending):
            node, proc, node_dir = item
            if sshd_answers(node.address):
                pending.remove(item)
                if on_ready:
                    on_ready(node)
            elif proc is not None and proc.poll() is not None:
                raise LabError(
                    f"{node.name}: sshd exited with status {proc.returncode}: "
                    f"{log_tail(node_dir / SSHD_LOG)}"
                )
        if pending and time.monotonic() > deadline:
            names = ", ".join(n.name for n, _, _ in pending)
            raise LabError(f"sshd did not start within {timeout:.0f}s on {names}")
        if pending:
            time.sleep(0.01)


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def agent_lock(node_dir: Path) -> Path:
    """Where the agent's data/LOCK (its PID on the first line) appears from the host."""
    return node_dir / "var-lib-shoal" / "data" / "LOCK"


def agent_pid(node: NodeState, node_dir: Path, if_unreadable: bool = False) -> int | None:
    """The node's running agent, or None; a stale LOCK or a PID outside the node does not count."""
    pid = procs.read_pidfile(agent_lock(node_dir))
    if pid is None or not procs.alive(pid):
        return None
    if not procs.in_netns(pid, node.netns, if_unreadable):
        return None
    return pid


def installed_agent(node_dir: Path) -> tuple[str, str] | None:
    """(zipapp, config) as the node sees them, when an agent is installed on it.

    The zipapp is the one the bootstrap's marker (node.json, key "pyz") names, else the newest.
    """
    base = node_dir / "var-lib-shoal"
    if not (base / "agent.toml").exists():
        return None
    try:
        named = json.loads((base / "node.json").read_text()).get("pyz")
    except (OSError, ValueError, AttributeError):
        named = None
    if isinstance(named, str) and "/" not in named and (base / named).is_file():
        return f"{NODE_BASE}/{named}", f"{NODE_BASE}/agent.toml"
    apps = sorted(base.glob("*.pyz"), key=lambda p: p.stat().st_mtime)
    if not apps:
        return None
    return f"{NODE_BASE}/{apps[-1].name}", f"{NODE_BASE}/agent.toml"


def boot_agent(node: NodeState, keeper_pid: int, node_dir: Path) -> int | None:
    """Start the installed agent as a booting machine would, inside the node's namespaces."""
    found = installed_agent(node_dir)
    if found is None:
        return None
    pyz, config = found
    argv = [
        "nsenter", f"--target={keeper_pid}", "--mount", "--uts", "--net", f"--wd={NODE_BASE}",
        "/usr/bin/env", "-i", f"PATH={BOOT_PATH}", "LANG=C.UTF-8", "HOME=/root",
        "python3", pyz, "serve", "--config", config,
    ]  # fmt: skip
    proc = _spawn(argv, node_dir / "var-lib-shoal" / AGENT_LOG)
    _wait_for_lock(node, proc, node_dir)
    return proc.pid


def _wait_for_lock(
    node: NodeState, proc: subprocess.Popen[bytes], node_dir: Path, timeout: float = 10.0
) -> None:
    """Wait until the agent has taken its LOCK, so what follows (status, kill) sees it."""
    deadline = time.monotonic() + timeout
    while procs.read_pidfile(agent_lock(node_dir)) != proc.pid:
        if proc.poll() is not None:
            log = node_dir / "var-lib-shoal" / AGENT_LOG
            raise LabError(
                f"{node.name}: the agent exited with status {proc.returncode} while starting: "
                f"{log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise LabError(f"{node.name}: the agent did not take its LOCK within {timeout:.0f}s")
        time.sleep(0.01)
