"""Fixtures: a test SSH key, real sshd "nodes" on loopback, and cleanup of the agents they ran."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shell.clusterstate import NodeSpec
from shell.ssh import SSHPool
from tests.bootstrap.sshd import SSHD, free_port, keygen

needs_sshd = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists(),
    reason="the sshd nodes need root and /usr/sbin/sshd",
)


@dataclass
class SSHEnv:
    root: Path
    client_key: Path
    authorized_keys: Path
    known_hosts: Path
    ssh_config: Path

    def pool(self, *, accept_new: bool = False, connect_timeout: float = 5.0) -> SSHPool:
        return SSHPool(
            self.known_hosts,
            [self.client_key],
            accept_new=accept_new,
            config=self.ssh_config,
            connect_timeout=connect_timeout,
        )


def make_env(root: Path) -> SSHEnv:
    root.mkdir(parents=True, exist_ok=True)
    key = keygen(root / "client_key")
    authorized = root / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    config = root / "ssh_config"
    config.write_text("# empty: keep the host user's ~/.ssh/config out of the tests\n")
    return SSHEnv(root, key, authorized, root / "known_hosts", config)


def kill_agents(root: Path) -> None:
    """SIGKILL any agent whose data directory lies under ``root`` (tests that failed midway)."""
    for lock in root.rglob("data/LOCK"):
        text = lock.read_text().split("\n", 1)[0].strip()
        if not text.isdigit():
            continue
        pid = int(text)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(lock.parent.parent).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)


@dataclass
class Node:
    sshd: SSHD
    spec: NodeSpec


@pytest.fixture(scope="module")
def ssh_env(tmp_path_factory: pytest.TempPathFactory) -> SSHEnv:
    return make_env(tmp_path_factory.mktemp("ssh"))


def make_node(env: SSHEnv, name: str, *, streamlocal: bool = True, **spec: object) -> Node:
    sshd = SSHD(env.root / f"sshd-{name}", env.authorized_keys, streamlocal=streamlocal)
    sshd.start()
    node = NodeSpec(
        id=name,
        host="127.0.0.1",
        ssh_port=sshd.port,
        peer_port=free_port(),
        remote_base=str(env.root / "nodes" / name),
        **spec,  # type: ignore[arg-type]
    )
    return Node(sshd, node)


@pytest.fixture(scope="module")
def nodes(ssh_env: SSHEnv) -> Iterator[list[Node]]:
    """Four sshd nodes (node1-3 form the cluster, node4 joins later)."""
    made = [make_node(ssh_env, f"node{i}", metadata={"rack": f"r{i}"}) for i in range(1, 5)]
    yield made
    for node in made:
        node.sshd.stop()
    kill_agents(ssh_env.root)
