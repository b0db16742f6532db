"""Real OpenSSH servers on 127.0.0.1 for the bootstrap tests, each one a pretend node.

Each sshd has its own host key, config, pid file and high port, authorises one test key for
root, and never touches the host's /etc/ssh or ~/.ssh. ``stop`` and ``pause`` act on the whole
sshd tree (connection children run in their own sessions, so they are found through /proc).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD_BIN = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> Path:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "shoal-test", "-f", str(path)],
        check=True,
    )
    return path


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return found


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


class SSHD:
    """One sshd. ``streamlocal=False`` sets AllowStreamLocalForwarding no."""

    def __init__(self, root: Path, authorized_keys: Path, *, streamlocal: bool = True) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = keygen(root / "ssh_host_ed25519_key")
        self.authorized_keys = authorized_keys
        self.streamlocal = streamlocal
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "sshd_config"

    def write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "LogLevel ERROR",
                    "MaxStartups 100",
                    "MaxSessions 100",
                    f"AllowStreamLocalForwarding {'yes' if self.streamlocal else 'no'}",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.write_config()
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115 — handed to the child
        self.proc = subprocess.Popen(
            [SSHD_BIN, "-D", "-e", "-f", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_text = (self.root / "sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd on port {self.port} did not start:\n{log_text}")
            time.sleep(0.05)

    def _signal_tree(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        for pid in _tree(self.proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        """Freeze the server and its connections: the node looks hung (TCP open, no answers)."""
        self._signal_tree(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_tree(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal_tree(signal.SIGCONT)
        self._signal_tree(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self._signal_tree(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def new_host_key(self) -> None:
        """Replace the host key (as a reinstalled machine, or an impostor, would present)."""
        self.host_key = keygen(self.root / "ssh_host_ed25519_key")
