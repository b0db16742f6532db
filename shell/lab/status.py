"""``lab status``: what each node is doing right now, read from lab.json and /proc.

Works without root as far as /proc allows; never changes anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shell.lab import procs, state
from shell.lab.nodes import agent_pid, installed_agent
from shell.lab.state import LabState, NodeState


@dataclass
class NodeStatus:
    name: str
    address: str
    netns: str
    sshd: str  # "up" or "down"
    sshd_pid: int | None
    agent: str  # "running", "paused", "not running", "not installed"
    agent_pid: int | None
    cut_off_from: list[str] = field(default_factory=list)


@dataclass
class LabStatus:
    name: str
    state_dir: str
    subnet: str
    bridge: str
    nodes: list[NodeStatus]
    ssh_config: str
    inventory: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sshd_running(node: NodeState) -> bool:
    pid = node.sshd_pid
    if pid is None or not procs.alive(pid):
        return False
    return procs.in_netns(pid, node.netns, if_unreadable=True)


def node_status(lab: LabState, node: NodeState) -> NodeStatus:
    node_dir = lab.node_dir(node.name)
    pid = agent_pid(node, node_dir, if_unreadable=True)
    if pid is not None:
        agent = "paused" if procs.stopped(pid) else "running"
    else:
        agent = "not running" if installed_agent(node_dir) else "not installed"
    blocked = {addr for owner, addr in lab.routes if owner == node.name}
    cut = [n.name for n in lab.nodes if n.address in blocked]
    up = sshd_running(node)
    return NodeStatus(
        name=node.name,
        address=node.address,
        netns=node.netns,
        sshd="up" if up else "down",
        sshd_pid=node.sshd_pid if up else None,
        agent=agent,
        agent_pid=pid,
        cut_off_from=cut,
    )


def lab_status(name: str = "lab", *, home: Path | None = None) -> LabStatus:
    """The lab's nodes and their state; raises LabNotFound when there is no such lab."""
    lab = state.load(name, home)
    return LabStatus(
        name=lab.name,
        state_dir=lab.state_dir,
        subnet=lab.subnet,
        bridge=lab.bridge,
        nodes=[node_status(lab, n) for n in lab.nodes],
        ssh_config=str(lab.dir / "ssh_config"),
        inventory=str(lab.dir / "inventory"),
    )


status = lab_status  # the public name; ``lab_status`` where ``status`` would shadow the module
