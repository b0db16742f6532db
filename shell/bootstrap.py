"""Make machines a cluster over SSH, grow and shrink it, look at it, tear it down.

Every workflow talks to all nodes at once and reports per-node progress through
``progress(node, message)``; a node that fails is named with what to do, and never stalls the
others. ``init_cluster`` is idempotent: run again on a running cluster it changes nothing and
says so (the marker file a node keeps names the cluster id it belongs to).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.client import ControlError
from shell import clusterstate, pki, remote, ssh
from shell.clusterstate import ClusterState, NodeSpec, StateError
from shell.remote import NodeError
from shell.zipapp import build_agent_zipapp

__all__ = [
    "BootstrapError",
    "ClusterState",
    "NodeSpec",
    "cluster_status",
    "destroy_cluster",
    "init_cluster",
    "join_node",
    "leave_node",
]

Progress = Callable[[str, str], None]
CLUSTER = "*"
"""The ``node`` argument of progress messages about the cluster as a whole."""


class BootstrapError(Exception):
    """One or more nodes failed; ``failures`` maps each to its message."""

    def __init__(self, what: str, failures: dict[str, str]) -> None:
        lines = "\n".join(f"  {msg}" for _, msg in sorted(failures.items()))
        super().__init__(f"{what}:\n{lines}" if failures else what)
        self.failures = failures


def _quiet(node: str, message: str) -> None:
    pass


def _raise_failures(what: str, results: dict[str, Any]) -> None:
    failures = {n: str(r) for n, r in results.items() if isinstance(r, BaseException)}
    for node, res in results.items():
        if isinstance(res, BaseException) and not isinstance(res, Exception):
            raise res  # cancellation and the like are not node failures
        if isinstance(res, Exception) and not isinstance(res, (NodeError, ssh.SSHError)):
            failures[node] = f"{node}: {type(res).__name__}: {res}"
    if failures:
        raise BootstrapError(what, failures)


def _marker(state: ClusterState, spec: NodeSpec, pyz: str) -> bytes:
    return json.dumps(
        {"cluster": state.name, "cluster_id": state.cluster_id, "node_id": spec.id, "pyz": pyz}
    ).encode()


def _tls_files(ca: pki.CertKey, spec: NodeSpec) -> dict[str, tuple[bytes, int]]:
    node = pki.issue_node_cert(ca, spec.id, [spec.address or spec.host])
    return {
        "tls/ca.pem": (ca.cert_pem, 0o644),
        "tls/node.pem": (node.cert_pem, 0o644),
        "tls/node-key.pem": (node.key_pem, 0o600),
    }


async def _provision(
    pool: ssh.SSHPool,
    state: ClusterState,
    spec: NodeSpec,
    pyz: Path,
    probe: dict[str, Any],
    peers: dict[str, str],
    join: bool,
    progress: Progress,
) -> None:
    """Upload what is missing, write certs and config, start the agent and wait for its socket."""
    ca = state.ca()
    files = _tls_files(ca, spec)
    files["agent.toml"] = (
        remote.agent_config(
            spec,
            peers,
            join=join,
            timing=state.timing,
            cluster_id=state.cluster_id,
            cluster_name=state.name,
        ),
        0o600,
    )
    files["node.json"] = (_marker(state, spec, pyz.name), 0o600)
    upload = not probe.get("pyz_present")
    progress(spec.id, f"uploading {pyz.name}" if upload else "installing certificates and config")
    await remote.install(pool, spec, pyz if upload else None, files)
    progress(spec.id, "starting agent")
    started = await remote.helper(pool, spec, "start", spec.base, pyz.name, remote.unit_name(spec))
    if not started.get("started") and started.get("pid") is None:
        log = started.get("log", "")
        raise NodeError(
            spec.id,
            f"{spec.id}: the agent did not start: {started.get('error')}"
            + (f"\n--- {spec.base}/agent.log ---\n{log}" if log else ""),
        )
    progress(spec.id, f"agent running (pid {started.get('pid')}, {started.get('how', 'already')})")


def _check_probe(state: ClusterState, spec: NodeSpec, probe: dict[str, Any]) -> None:
    marker = probe.get("marker")
    if marker is not None and marker.get("cluster_id") != state.cluster_id:
        raise NodeError(
            spec.id,
            f"{spec.id}: {spec.host}:{spec.base} already belongs to cluster "
            f"{marker.get('cluster')!r} (id {marker.get('cluster_id')}); destroy that cluster "
            f"or choose another remote base",
        )
    if marker is None and probe.get("running_pid") is not None:
        raise NodeError(
            spec.id, f"{spec.id}: an unknown agent is running in {spec.base}; stop it first"
        )


async def _wait_cluster(
    pool: ssh.SSHPool,
    specs: list[NodeSpec],
    progress: Progress,
    timeout: float,
) -> str:
    """Until every node reports the same leader and every node is a voter; the leader's id."""
    want = sorted(s.id for s in specs)
    deadline = time.monotonic() + timeout
    reported: dict[str, str] = {}
    last: dict[str, Any] = {}
    while True:
        results = await remote.each(specs, lambda s: remote.call(pool, s, "status", wait=5.0))
        leaders = {r.get("leader") for r in results.values() if isinstance(r, dict)}
        for node, res in results.items():
            if isinstance(res, dict):
                note = (
                    f"{res['role']}, term {res['term']}, leader {res['leader']}"
                    if res.get("leader")
                    else "waiting for leader"
                )
            else:
                note = f"waiting ({res})"
            if reported.get(node) != note:
                reported[node] = note
                progress(node, note)
            last[node] = res
        ok = all(
            isinstance(r, dict) and sorted(r.get("voters", [])) == want for r in results.values()
        )
        if ok and len(leaders) == 1 and None not in leaders:
            leader = leaders.pop()
            assert isinstance(leader, str)
            return leader
        if time.monotonic() > deadline:
            raise BootstrapError(
                f"no stable leader with all of {', '.join(want)} after {timeout:g}s",
                {n: f"{n}: {r}" for n, r in last.items()},
            )
        await asyncio.sleep(0.1)


async def init_cluster(
    nodes: list[NodeSpec],
    *,
    name: str,
    pool: ssh.SSHPool,
    state_root: Path,
    progress: Progress = _quiet,
    remote_base: str = "/var/lib/shoal",
    peer_port: int = 7400,
    tick_ms: int | None = None,
    heartbeat_ticks: int | None = None,
    election_ticks: int | None = None,
    cache_dir: Path | None = None,
    timeout: float = 60.0,
) -> ClusterState:
    """Make ``nodes`` a cluster called ``name``; a no-op (``state.changed`` False) if it runs."""
    if not nodes:
        raise StateError("a cluster needs at least one node")
    clusterstate.check_remote_path(remote_base, "remote base")
    specs = [n.validate().resolved(peer_port=peer_port, remote_base=remote_base) for n in nodes]
    _check_unique(specs)
    timing = {
        k: v
        for k, v in (
            ("tick_ms", tick_ms),
            ("heartbeat_ticks", heartbeat_ticks),
            ("election_ticks", election_ticks),
        )
        if v is not None
    }
    if clusterstate.exists(state_root, name):
        state = clusterstate.load(state_root, name)
        if sorted(n.id for n in state.nodes) != sorted(s.id for s in specs):
            raise StateError(
                f"cluster {name} already exists with nodes "
                f"{', '.join(n.id for n in state.nodes)}; use join/leave to change its members"
            )
        specs = [state.node(s.id) for s in specs]
    else:
        state = clusterstate.create(state_root, name, pki.create_ca(name))
        state.nodes, state.timing = specs, timing
        state.save()
    pyz = build_agent_zipapp(cache_dir or state_root / "cache")

    async def probe(spec: NodeSpec) -> dict[str, Any]:
        progress(spec.id, f"connecting to {spec.user}@{spec.host}:{spec.ssh_port}")
        answer = await remote.helper(pool, spec, "probe", spec.base, pyz.name)
        _check_probe(state, spec, answer)
        return answer

    probes = await remote.each(specs, probe)
    _raise_failures(f"cannot initialise cluster {name}", probes)
    answers = {n: r for n, r in probes.items() if isinstance(r, dict)}
    running = [s for s in specs if answers[s.id].get("socket")]
    if len(running) == len(specs):
        leader = await _wait_cluster(pool, specs, _quiet, timeout=min(timeout, 10.0))
        for spec in specs:
            progress(spec.id, "already running")
        progress(CLUSTER, f"cluster {name} is already running (leader {leader}); nothing changed")
        state.changed = False
        clusterstate.set_current(state_root, name)
        return state
    peers = {s.id: s.peer_address for s in specs}
    started = await remote.each(
        [s for s in specs if s not in running],
        lambda s: _provision(pool, state, s, pyz, answers[s.id], peers, False, progress),
    )
    _raise_failures(f"cannot start cluster {name}", started)
    progress(CLUSTER, "waiting for a leader")
    leader = await _wait_cluster(pool, specs, progress, timeout)
    progress(CLUSTER, f"cluster {name} is up: leader {leader}, {len(specs)} members")
    clusterstate.set_current(state_root, name)
    return state


def _check_unique(specs: list[NodeSpec]) -> None:
    for what, key in (
        ("node id", lambda s: s.id),
        ("peer address", lambda s: s.peer_address),
        ("host and remote base", lambda s: (s.host, s.ssh_port, s.base)),
    ):
        seen: set[Any] = set()
        for spec in specs:
            if key(spec) in seen:
                raise StateError(f"two nodes share the same {what}: {key(spec)}")
            seen.add(key(spec))


async def find_leader(
    state: ClusterState, pool: ssh.SSHPool, timeout: float = 5.0
) -> tuple[NodeSpec, dict[str, Any]]:
    """The leader's spec and its status, asking every node at once."""
    results = await remote.each(state.nodes, lambda s: remote.call(pool, s, "status", wait=timeout))
    for node, res in results.items():
        if isinstance(res, dict) and res.get("role") == "leader":
            return state.node(node), res
    raise BootstrapError(
        f"cluster {state.name} has no reachable leader",
        {
            n: f"{n}: {r}" if isinstance(r, BaseException) else f"{n}: {r.get('role')}"
            for n, r in results.items()
        },
    )


async def join_node(
    state: ClusterState,
    node: NodeSpec,
    *,
    pool: ssh.SSHPool,
    progress: Progress = _quiet,
    peer_port: int = 7400,
    remote_base: str | None = None,
    timeout: float = 60.0,
) -> ClusterState:
    """Start an agent on ``node`` as a joiner, then have the leader add it (learner → voter)."""
    if any(n.id == node.id for n in state.nodes):
        raise StateError(f"{node.id} is already a member of cluster {state.name}")
    base = remote_base or (state.nodes[0].base if state.nodes else "/var/lib/shoal")
    spec = node.validate().resolved(peer_port=peer_port, remote_base=base)
    _check_unique([*state.nodes, spec])
    pyz = build_agent_zipapp(state.root.parent.parent / "cache")
    leader, status = await find_leader(state, pool)
    progress(spec.id, f"connecting to {spec.user}@{spec.host}:{spec.ssh_port}")
    answer = await remote.helper(pool, spec, "probe", spec.base, pyz.name)
    _check_probe(state, spec, answer)
    peers = {**status.get("addresses", {}), spec.id: spec.peer_address}
    await _provision(pool, state, spec, pyz, answer, peers, True, progress)
    progress(spec.id, f"asking leader {leader.id} to add it")
    await _call_leader(
        state,
        pool,
        leader,
        "add_member",
        timeout,
        id=spec.id,
        address=spec.peer_address,
        timeout=timeout,
    )
    state.nodes.append(spec)
    state.save()
    progress(spec.id, "joined")
    return state


async def _call_leader(
    state: ClusterState,
    pool: ssh.SSHPool,
    leader: NodeSpec,
    method: str,
    wait: float,
    **params: Any,
) -> Any:
    """A membership call to the leader, following one not-leader hint if leadership moved."""
    for _ in range(3):
        try:
            return await remote.call(pool, leader, method, wait=wait + 5, **params)
        except ControlError as exc:
            hint = exc.details.get("leader")
            if exc.code != "not-leader" or not isinstance(hint, str):
                raise NodeError(leader.id, f"{leader.id}: {method} failed: {exc}")
            leader = state.node(hint)
    raise NodeError(leader.id, f"{method}: the leader kept moving; try again")


async def leave_node(
    state: ClusterState,
    node_id: str,
    *,
    pool: ssh.SSHPool,
    progress: Progress = _quiet,
    timeout: float = 30.0,
) -> ClusterState:
    """Remove ``node_id`` from the membership, then stop its agent (if it can be reached)."""
    spec = state.node(node_id)
    leader, status = await find_leader(state, pool)
    if leader.id == node_id:
        others = [v for v in status.get("voters", []) if v != node_id]
        if others:
            progress(node_id, f"handing leadership to {others[0]}")
            await remote.call(
                pool, leader, "transfer_leader", to=others[0], timeout=timeout, wait=timeout + 5
            )
            leader = state.node(others[0])
    progress(node_id, f"asking leader {leader.id} to remove it")
    await _call_leader(state, pool, leader, "remove_member", timeout, id=node_id, timeout=timeout)
    progress(node_id, "stopping agent")
    try:
        await remote.helper(pool, spec, "stop", spec.base, remote.unit_name(spec))
        progress(node_id, "left")
    except NodeError as exc:
        progress(node_id, f"removed, but its agent could not be stopped: {exc}")
    state.nodes = [n for n in state.nodes if n.id != node_id]
    state.save()
    return state


async def cluster_status(
    state: ClusterState, pool: ssh.SSHPool, *, timeout: float = 3.0
) -> list[dict[str, Any]]:
    """Per member: role, term, leader, commit, applied, lag, version and health.

    Each node gets ``timeout`` seconds (connect included); one that does not answer is reported
    unreachable instead of delaying the rest.
    """

    async def one(spec: NodeSpec) -> dict[str, Any]:
        async def ask() -> Any:
            return await remote.call(pool, spec, "status", wait=timeout)

        try:
            st = await asyncio.wait_for(ask(), timeout)
        except TimeoutError:
            pool.drop(spec.host, spec.ssh_port, spec.user)
            raise NodeError(spec.id, f"{spec.id}: no answer within {timeout:g}s")
        assert isinstance(st, dict)
        return st

    results = await remote.each(state.nodes, one)
    commits = [r["commit"] for r in results.values() if isinstance(r, dict)]
    top = max(commits, default=0)
    rows: list[dict[str, Any]] = []
    for spec in state.nodes:
        res = results[spec.id]
        row: dict[str, Any] = {"id": spec.id, "host": spec.host}
        if isinstance(res, dict):
            lag = top - int(res["applied"])
            health = (
                "healthy"
                if res.get("leader") and lag <= 10
                else ("no leader" if not res.get("leader") else "lagging")
            )
            row.update(
                reachable=True,
                role=res["role"],
                term=res["term"],
                leader=res.get("leader"),
                commit=res["commit"],
                applied=res["applied"],
                lag=lag,
                version=res.get("version"),
                health=health,
            )
        else:
            row.update(reachable=False, health="unreachable", error=str(res))
        rows.append(row)
    return rows


async def destroy_cluster(
    state: ClusterState,
    wipe: bool,
    *,
    pool: ssh.SSHPool,
    state_root: Path,
    progress: Progress = _quiet,
) -> None:
    """Stop every agent; with ``wipe`` also delete each node's files and the local state.

    A wipe that cannot reach a node keeps the local state (and its CA) so it can be retried.
    """

    async def one(spec: NodeSpec) -> None:
        if wipe:
            progress(spec.id, f"stopping agent and removing {spec.base}")
            res = await remote.helper(
                pool, spec, "wipe", spec.base, state.cluster_id, remote.unit_name(spec)
            )
            if not res.get("wiped") and res.get("reason") != "absent":
                raise NodeError(spec.id, f"{spec.id}: not wiped: {res.get('reason')}")
        else:
            progress(spec.id, "stopping agent")
            await remote.helper(pool, spec, "stop", spec.base, remote.unit_name(spec))
        progress(spec.id, "done")

    results = await remote.each(state.nodes, one)
    _raise_failures(f"could not {'wipe' if wipe else 'stop'} every node", results)
    if wipe:
        clusterstate.remove(state_root, state.name)
        progress(CLUSTER, f"cluster {state.name} destroyed; local state removed")
