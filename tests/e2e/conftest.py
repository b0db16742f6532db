"""End-to-end fixtures: the ``shoal`` command driven as a user drives it, against a real lab.

Every module gets its own temporary SHOAL_HOME (never ~/.shoal) and labs with random names; the
finalizer takes every lab down, and removes whatever ``lab down`` might have missed, even when a
test failed half-way. Nodes are network namespaces with a real sshd each, so everything here
needs root; without it the tests skip and say why.

Besides the ``shoal`` commands under test, checks reach the cluster by routes that do not go
through them: the library (``remote.call`` over the cluster's saved SSH settings) and
``ssh -F <lab>/ssh_config nodeX python3 /var/lib/shoal/<pyz> ctl ...`` on a node.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.client import ControlError
from shell import clusterstate, remote
from shell.clusteraccess import load_ssh
from shell.clusterstate import ClusterState
from shell.lab.state import LabState
from shell.lab.state import load as load_lab
from shell.remote import NodeError
from shell.ssh import SSHError
from tests.lab.conftest import take_down

T = TypeVar("T")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("sshd", path="/usr/sbin:/usr/bin") is None,
    reason="end-to-end tests need root (namespaces, bridge, mounts) and /usr/sbin/sshd",
)


def shoal_command() -> list[str]:
    """The installed ``shoal`` script next to this interpreter, as a user would type it."""
    script = Path(sys.executable).parent / "shoal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "shell.cli"]


REMOTE_SOCKET = "/var/lib/shoal/data/control.sock"
TRANSIENT = (AssertionError, ControlError, NodeError, SSHError, OSError, KeyError, ValueError)


def eventually(
    check: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy without raising; that value.

    A bound on waiting, not an assertion about speed: the timeouts are generous.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except TRANSIENT as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}; last: {last}")
        time.sleep(interval)


class Shoal:
    """Runs ``shoal ...`` with this module's SHOAL_HOME, and remembers every lab it made."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.labs: list[str] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SHOAL_CLUSTER", "SHOAL_SOCKET")}
        env["SHOAL_HOME"] = str(self.home)
        return env

    def run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*shoal_command(), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, (
            f"shoal {' '.join(args)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
        return done

    def json(self, *args: str, timeout: float = 120.0) -> Any:
        return json.loads(self.ok(*args, "--json", timeout=timeout).stdout)

    def lab_up(self, tag: str, nodes: int) -> E2ELab:
        name = f"e{tag}{secrets.token_hex(3)}"
        self.labs.append(name)  # before `up`, so a half-made lab is removed too
        self.json("lab", "up", "--name", name, "--nodes", str(nodes))
        return E2ELab(self, name)

    def cleanup(self) -> None:
        """Take down every lab this module made; then remove anything left with its name."""
        errors: list[str] = []
        for name in self.labs:
            try:
                take_down(name, self.home)
            except Exception as exc:  # keep cleaning the rest, report at the end
                errors.append(f"{name}: {exc}")
        assert not errors, f"lab down failed during cleanup: {errors}"


class E2ELab:
    """One lab made through the CLI, with the operator's ways into its nodes."""

    def __init__(self, shoal: Shoal, name: str) -> None:
        self.shoal = shoal
        self.name = name

    @property
    def state(self) -> LabState:
        return load_lab(self.name, self.shoal.home)

    @property
    def dir(self) -> Path:
        return self.shoal.home / "labs" / self.name

    def status(self) -> dict[str, Any]:
        data = self.shoal.json("lab", "status", "--name", self.name)
        assert isinstance(data, dict)
        return data

    def agent_pids(self) -> dict[str, int | None]:
        return {n["name"]: n.get("agent_pid") for n in self.status()["nodes"]}

    def ssh(
        self, node: str, command: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """``ssh -F <lab>/ssh_config NODE COMMAND``: strict host keys, the lab's key only."""
        return subprocess.run(
            ["ssh", "-F", str(self.dir / "ssh_config"), "-o", "BatchMode=yes",
             "-o", "ConnectTimeout=5", node, command],
            capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def pyz(self, node: str) -> str:
        """The agent zipapp the bootstrap installed on ``node``, as the node sees it."""
        marker = json.loads((self.state.node_dir(node) / "var-lib-shoal" / "node.json").read_text())
        return f"/var/lib/shoal/{marker['pyz']}"

    def ctl(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The node-local ctl (like etcdctl on a CoreOS box), reached over the lab's ssh."""
        import shlex

        argv = ["python3", self.pyz(node), "ctl", "--socket", REMOTE_SOCKET, *args]
        return self.ssh(node, shlex.join(argv))

    def host_key_fingerprint(self, node: str) -> str:
        pub = self.state.node_dir(node) / "etc-ssh" / "ssh_host_ed25519_key.pub"
        out = subprocess.run(
            ["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True
        ).stdout
        return out.split()[1]  # "256 SHA256:... comment (ED25519)"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(data: str) -> str:
    return base64.b64decode(data).decode()


class ClusterClient:
    """The library route to a cluster: its saved state and SSH settings, as the shell uses them.

    Each call opens a fresh pool (a new "shell session") and closes it again.
    """

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name

    @property
    def state(self) -> ClusterState:
        return clusterstate.load(self.home, self.name)

    async def _call(self, node: str, method: str, wait: float, **params: Any) -> Any:
        state = self.state
        pool = load_ssh(state).pool()
        try:
            return await remote.call(pool, state.node(node), method, wait=wait, **params)
        finally:
            await pool.close()

    def call(self, node: str, method: str, wait: float = 10.0, **params: Any) -> Any:
        return asyncio.run(self._call(node, method, wait, **params))

    def put(self, node: str, key: str, value: str) -> int:
        answer = self.call(node, "kv.put", key=b64(key), value=b64(value))
        return int(answer["header"]["revision"])

    def get(self, node: str, key: str, *, serializable: bool = False) -> str | None:
        answer = self.call(node, "kv.get", key=b64(key), serializable=serializable)
        kvs = answer["kvs"]
        return unb64(kvs[0]["value"]) if kvs else None

    def status(self, node: str) -> dict[str, Any]:
        answer = self.call(node, "status", wait=5.0)
        assert isinstance(answer, dict)
        return answer


@pytest.fixture(scope="module")
def shoal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shoal]:
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, bridge, mounts, sshd)")
    made = Shoal(tmp_path_factory.mktemp("shoal-home"))
    try:
        yield made
    finally:
        made.cleanup()
