"""What the shell remembers about a cluster, under ``$SHOAL_HOME/clusters/<name>/``.

``ca/`` holds the cluster CA (its key is what lets new nodes join, so the tree is 0700 and files
0600); ``cluster.json`` lists the nodes and how to reach them; ``$SHOAL_HOME/current`` names the
cluster commands act on by default. Every name and path that will later appear in a remote command
is validated here, once, so nothing read back from disk can smuggle shell syntax.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.config import NODE_ID
from shell import pki

CLUSTER_NAME = NODE_ID
HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:%-]{0,252}$")
USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]*$")
PROGRAM = re.compile(r"^[A-Za-z0-9_.+-]+$")
META_KEY = NODE_ID  # what the agent's [metadata] accepts
META_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+-]{0,255}$")


class StateError(ValueError):
    """Local cluster state is missing, invalid, or a name would be unsafe to use."""


def shoal_home() -> Path:
    return Path(os.environ.get("SHOAL_HOME") or Path.home() / ".shoal")


def check_remote_path(path: str, what: str) -> str:
    """An absolute, normalised path of plain characters, and never ``/`` itself."""
    if not SAFE_PATH.match(path) or posixpath.normpath(path) != path or path == "/":
        raise StateError(
            f"{what} {path!r} must be an absolute normalised path of letters, "
            f"digits and _ . / @ + - (and not /)"
        )
    return path


@dataclass(frozen=True)
class NodeSpec:
    """A machine to run an agent on, and how the shell and its peers reach it."""

    id: str
    host: str
    ssh_port: int = 22
    user: str = "root"
    address: str | None = None
    """Where peers reach this node's agent; defaults to ``host``."""
    peer_port: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    remote_base: str | None = None
    python: str = "python3"
    """The node's interpreter: a program name looked up in PATH, or an absolute path."""

    def validate(self) -> NodeSpec:
        if not NODE_ID.match(self.id):
            raise StateError(f"node id {self.id!r} must be letters, digits, '.', '_' or '-'")
        for what, value in (("host", self.host), ("address", self.address or self.host)):
            if not HOST.match(value):
                raise StateError(f"{self.id}: {what} {value!r} is not a hostname or IP address")
        if not USER.match(self.user):
            raise StateError(f"{self.id}: user {self.user!r} is not a valid user name")
        for what, port in (("ssh port", self.ssh_port), ("peer port", self.peer_port or 1)):
            if not 0 < port < 65536:
                raise StateError(f"{self.id}: {what} {port} is out of range")
        if self.remote_base is not None:
            check_remote_path(self.remote_base, f"{self.id}: remote base")
        if not (PROGRAM.match(self.python) or SAFE_PATH.match(self.python)):
            raise StateError(f"{self.id}: python {self.python!r} must be a program name or path")
        for key, value in self.metadata.items():
            if not META_KEY.match(key) or not META_VALUE.match(value):
                raise StateError(f"{self.id}: metadata {key}={value!r} has unsafe characters")
        return self

    def resolved(self, *, peer_port: int, remote_base: str) -> NodeSpec:
        """This spec with defaults filled in, as cluster.json stores it."""
        return replace(
            self,
            address=self.address or self.host,
            peer_port=self.peer_port or peer_port,
            remote_base=self.remote_base or remote_base,
        ).validate()

    @property
    def peer_address(self) -> str:
        host = self.address or self.host
        return f"[{host}]:{self.peer_port}" if ":" in host else f"{host}:{self.peer_port}"

    @property
    def base(self) -> str:
        assert self.remote_base is not None, "resolve the spec first"
        return self.remote_base


@dataclass
class ClusterState:
    """One cluster as the shell knows it; ``save`` writes cluster.json atomically (0600)."""

    name: str
    cluster_id: str
    root: Path
    nodes: list[NodeSpec] = field(default_factory=list)
    timing: dict[str, int] = field(default_factory=dict)
    changed: bool = field(default=True, compare=False)
    """Set by the last workflow: False when it found nothing to do (not saved)."""

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    def ca(self) -> pki.CertKey:
        return pki.load_ca(self.ca_dir)

    def node(self, node_id: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        raise StateError(f"cluster {self.name} has no node {node_id!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "name": self.name,
            "cluster_id": self.cluster_id,
            "timing": self.timing,
            "nodes": [asdict(n) for n in self.nodes],
        }

    def save(self) -> None:
        _private_dir(self.root)
        _write_private(self.root / "cluster.json", json.dumps(self.to_json(), indent=2) + "\n")


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cluster_dir(state_root: Path, name: str) -> Path:
    if not CLUSTER_NAME.match(name):
        raise StateError(f"cluster name {name!r} must be letters, digits, '.', '_' or '-'")
    return state_root / "clusters" / name


def exists(state_root: Path, name: str) -> bool:
    return (cluster_dir(state_root, name) / "cluster.json").exists()


def create(state_root: Path, name: str, ca: pki.CertKey) -> ClusterState:
    """A new cluster's state: its CA written (refusing to replace one) and an empty node list."""
    root = cluster_dir(state_root, name)
    _private_dir(state_root)
    _private_dir(root.parent)
    pki.write_ca(root / "ca", ca)
    state = ClusterState(name, pki.cluster_identity(ca.cert_pem).cluster_id, root)
    state.save()
    return state


def load(state_root: Path, name: str) -> ClusterState:
    root = cluster_dir(state_root, name)
    path = root / "cluster.json"
    try:
        raw = json.loads(path.read_text())
        nodes = [NodeSpec(**n).validate() for n in raw["nodes"]]
        for n in nodes:
            check_remote_path(n.base, f"{n.id}: remote base")
        state = ClusterState(raw["name"], raw["cluster_id"], root, nodes, dict(raw["timing"]))
    except FileNotFoundError:
        raise StateError(f"no cluster named {name!r} (looked in {root})")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{path} is damaged: {exc}")
    if state.name != name or not re.fullmatch(r"[0-9a-f]{1,64}", state.cluster_id):
        raise StateError(f"{path} is damaged: name or cluster id do not match")
    return state


def set_current(state_root: Path, name: str) -> None:
    cluster_dir(state_root, name)
    _private_dir(state_root)
    _write_private(state_root / "current", name + "\n")


def current(state_root: Path) -> str | None:
    try:
        name = (state_root / "current").read_text().strip()
    except FileNotFoundError:
        return None
    return name if CLUSTER_NAME.match(name) else None


def names(state_root: Path) -> list[str]:
    base = state_root / "clusters"
    return (
        sorted(p.name for p in base.iterdir() if (p / "cluster.json").exists())
        if (base.is_dir())
        else []
    )


def remove(state_root: Path, name: str) -> None:
    """Delete a cluster's local state (its CA included) and the current pointer if it was it."""
    shutil.rmtree(cluster_dir(state_root, name), ignore_errors=True)
    if current(state_root) == name:
        (state_root / "current").unlink(missing_ok=True)
