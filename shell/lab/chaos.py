"""Chaos inside a lab: kill, pause and resume an agent, cut and heal links, crash and restore a
whole node. Each acts on PIDs proven to belong to the node, and on routes inside the lab's own
namespaces only; the host's network is never touched.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

from shell.lab import net, nodeset, procs, state
from shell.lab.errors import LabError
from shell.lab.lock import labs_lock
from shell.lab.nodes import (
    agent_pid,
    boot_agent,
    installed_agent,
    start_keeper,
    start_ssh_publisher,
    wait_ready,
)
from shell.lab.paths import labs_dir
from shell.lab.requirements import check_host
from shell.lab.state import LabState, NodeState
from shell.lab.status import sshd_running


def _load(action: str, name: str, home: Path | None) -> LabState:
    check_host(action)
    return state.load(name, home)


def _running_agent(lab: LabState, node: NodeState) -> int:
    pid = agent_pid(node, lab.node_dir(node.name))
    if pid is None:
        raise LabError(f"no agent is running on {node.name}")
    return pid


def kill(name: str, node: str, *, home: Path | None = None) -> int:
    """kill -9 the node's agent, as if it crashed; returns its PID."""
    lab = _load("kill", name, home)
    n = lab.node(node)
    pid = _running_agent(lab, n)
    procs.kill_all([pid])
    return pid


def pause(name: str, node: str, *, home: Path | None = None) -> int:
    """SIGSTOP the agent: alive but silent, like a long GC pause or a frozen VM."""
    lab = _load("pause", name, home)
    pid = _running_agent(lab, lab.node(node))
    procs.send(pid, signal.SIGSTOP)
    return pid


def resume(name: str, node: str, *, home: Path | None = None) -> int:
    lab = _load("resume", name, home)
    pid = _running_agent(lab, lab.node(node))
    procs.send(pid, signal.SIGCONT)
    return pid


@dataclass
class PartitionReport:
    nodes: list[str]
    cut_from: list[str]
    routes_added: int


def partition(
    name: str, nodes: str, from_nodes: str | None = None, *, home: Path | None = None
) -> PartitionReport:
    """Cut ``nodes`` off from ``from_nodes`` (default: every other node), both directions.

    Each side gets a blackhole route for each address on the other side, inside its own
    namespace; the host keeps reaching every node, so the operator never loses SSH.
    """
    check_host("partition")
    with labs_lock(labs_dir(home)):
        lab = state.load(name, home)
        side_a = nodeset.select(nodes, lab.node_names())
        if from_nodes:
            side_b = nodeset.select(from_nodes, lab.node_names())
        else:
            side_b = [n for n in lab.node_names() if n not in side_a]
        both = sorted(set(side_a) & set(side_b))
        if both:
            raise LabError(f"{nodeset.fold(both)} cannot be on both sides of a partition")
        if not side_b:
            raise LabError("that partition cuts nothing: it includes every node of the lab")
        have = {tuple(r) for r in lab.routes}
        added = 0
        for here, there in ((side_a, side_b), (side_b, side_a)):
            for owner in here:
                wanted = [lab.node(t).address for t in there]
                addrs = [a for a in wanted if (owner, a) not in have]
                if addrs:
                    net.add_blackholes(lab.node(owner).netns, addrs)
                    lab.routes += [[owner, a] for a in addrs]
                    have |= {(owner, a) for a in addrs}
                    added += len(addrs)
        state.save(lab)
        return PartitionReport(side_a, side_b, added)


def heal(name: str, *, home: Path | None = None) -> int:
    """Remove exactly the routes ``partition`` added; returns how many."""
    check_host("heal")
    with labs_lock(labs_dir(home)):
        lab = state.load(name, home)
        by_owner: dict[str, list[str]] = {}
        for owner, addr in lab.routes:
            by_owner.setdefault(owner, []).append(addr)
        for owner, addrs in by_owner.items():
            net.del_blackholes(lab.node(owner).netns, addrs)
        count = len(lab.routes)
        lab.routes = []
        state.save(lab)
        return count


@dataclass
class CrashReport:
    node: str
    killed: list[int] = field(default_factory=list)


def crash(name: str, node: str, *, home: Path | None = None) -> CrashReport:
    """Lose the whole machine: unplug its link, then SIGKILL every process in the node."""
    check_host("crash")
    with labs_lock(labs_dir(home)):
        lab = state.load(name, home)
        n = lab.node(node)
        net.node_link(n.netns, up=False)
        report = CrashReport(node)
        for _ in range(10):  # processes may fork while we kill: repeat until none is left
            pids = procs.pids_in_netns(n.netns)
            if not pids:
                break
            report.killed += procs.kill_all(pids)
        else:
            raise LabError(f"processes on {node} keep appearing: {procs.pids_in_netns(n.netns)}")
        n.sshd_pid = None
        state.save(lab)
        return report


@dataclass
class RestoreReport:
    node: str
    sshd_pid: int
    sshd_started: bool
    agent_installed: bool
    agent_pid: int | None
    agent_started: bool


def restore(
    name: str, node: str, *, home: Path | None = None, timeout: float = 15.0
) -> RestoreReport:
    """Boot the node again: plug its link back, start sshd, then its agent if one is installed."""
    check_host("restore")
    with labs_lock(labs_dir(home)):
        lab = state.load(name, home)
        n = lab.node(node)
        node_dir = lab.node_dir(node)
        net.node_link(n.netns, up=True)
        started = False
        if not sshd_running(n):
            proc = start_keeper(n, node_dir, lab.dir / "hosts")
            n.sshd_pid = proc.pid
            state.save(lab)
            wait_ready([(n, proc, node_dir)], timeout=timeout)
            start_ssh_publisher(n, node_dir)
            started = True
        assert n.sshd_pid is not None
        installed = installed_agent(node_dir) is not None
        pid = agent_pid(n, node_dir)
        agent_started = False
        if pid is None and installed:
            pid = boot_agent(n, n.sshd_pid, node_dir)
            agent_started = pid is not None
        return RestoreReport(node, n.sshd_pid, started, installed, pid, agent_started)
