"""How the shell reaches a cluster: which machines are meant, their SSH settings, a member.

The library under the ``cluster …``, ``machines`` and ``exec`` commands (shell/commands/): the
machines a command means (a node set, mDNS discovery, or the lab that is up), the SSH
credentials that reach them (the lab's own key and known_hosts, or the user's), saved beside
cluster.json, and the first member that answers a request.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.client import ControlError
from shell import clusterstate, remote
from shell.clusterstate import ClusterState, NodeSpec, StateError
from shell.ssh import SSHError, SSHPool

SSH_FILE = "ssh.json"


@dataclass
class SSHSettings:
    """How the shell reaches a cluster's machines; kept beside cluster.json (0600)."""

    known_hosts: str
    identities: list[str] = field(default_factory=list)

    def pool(self, accept_new: bool = False) -> SSHPool:
        keys = [Path(p) for p in self.identities] or None
        return SSHPool(Path(self.known_hosts), keys, accept_new=accept_new)


def home() -> Path:
    return clusterstate.shoal_home()


def user_ssh() -> SSHSettings:
    ssh_dir = Path.home() / ".ssh"
    keys = [str(p) for p in (ssh_dir / "id_ed25519", ssh_dir / "id_ecdsa", ssh_dir / "id_rsa")]
    return SSHSettings(str(ssh_dir / "known_hosts"), [k for k in keys if Path(k).exists()])


def save_ssh(state: ClusterState, settings: SSHSettings) -> None:
    path = state.root / SSH_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"known_hosts": settings.known_hosts, "identities": settings.identities}, f)


def load_ssh(state: ClusterState) -> SSHSettings:
    try:
        raw = json.loads((state.root / SSH_FILE).read_text())
        return SSHSettings(str(raw["known_hosts"]), [str(p) for p in raw.get("identities", [])])
    except (OSError, ValueError, KeyError):
        return user_ssh()


# --- which machines -------------------------------------------------------------------------


def lab_nodes(name: str | None) -> tuple[list[NodeSpec], SSHSettings, str] | None:
    """The nodes of a lab that is up (the named one, or the only one), with its SSH files."""
    from shell.lab.state import labs_up

    labs = [lab for lab in labs_up() if name is None or lab.name == name]
    if len(labs) != 1:
        return None
    lab = labs[0]
    specs = [NodeSpec(id=n.name, host=n.address, address=n.address) for n in lab.nodes]
    ssh = SSHSettings(str(lab.dir / "known_hosts"), [str(lab.dir / "id_ed25519")])
    return specs, ssh, lab.name


def parse_metadata(items: list[str]) -> dict[str, dict[str, str]]:
    """``--metadata node1:region=us-east,disk=ssd`` (repeatable) → {node: {k: v}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        node, sep, pairs = item.partition(":")
        if not sep or not pairs:
            raise StateError(f"--metadata {item!r}: expected NODE:key=value[,key=value...]")
        for pair in pairs.split(","):
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise StateError(f"--metadata {item!r}: {pair!r} is not key=value")
            out.setdefault(node, {})[key] = value
    return out


def lab_bridges() -> list[str]:
    """The host-side addresses of the labs that are up: where mDNS should browse while a lab
    is up, rather than on the machine's real network."""
    from shell.lab.state import labs_up

    return [str(lab.host_address) for lab in labs_up()]


async def discovered_nodes(timeout: float) -> list[NodeSpec]:
    from shell.discovery import discover

    hosts = await discover(timeout=timeout, interfaces=lab_bridges() or None)
    return [
        NodeSpec(id=h.name or h.address.replace(".", "-"), host=h.address, address=h.address)
        for h in hosts
        if h.ssh_port
    ]


def nodeset_nodes(text: str) -> list[NodeSpec]:
    from shell.discovery import expand_nodeset

    return [NodeSpec(id=name, host=name) for name in expand_nodeset(text)]


# --- the cluster -------------------------------------------------------------------------


def current_state(name: str | None = None) -> ClusterState:
    """The named cluster, else $SHOAL_CLUSTER, else the one ``cluster init`` made last."""
    name = name or os.environ.get("SHOAL_CLUSTER") or clusterstate.current(home())
    if not name:
        raise StateError("no cluster yet: run `cluster init` (or give --cluster NAME)")
    if not clusterstate.exists(home(), name):
        known = ", ".join(clusterstate.names(home())) or "none"
        raise StateError(f"no cluster called {name!r} (known: {known})")
    return clusterstate.load(home(), name)


async def any_member(state: ClusterState, pool: SSHPool, method: str, *, timeout: float) -> Any:
    """Ask members in turn until one answers; one dead machine never blocks the command."""
    errors = []
    for spec in state.nodes:
        try:
            return await asyncio.wait_for(remote.call(pool, spec, method, wait=timeout), timeout)
        except (remote.NodeError, SSHError, ControlError, OSError, TimeoutError) as exc:
            text = str(exc)
            errors.append(text if text.startswith(f"{spec.id}:") else f"{spec.id}: {text}")
    raise ClusterUnavailable("no member answered: " + "; ".join(errors))


class ClusterUnavailable(Exception):
    """No member of the cluster answered (exit 3)."""
