"""`cluster init` and friends over real sshd: three nodes become a cluster, grow, shrink, go.

The tests in this module run in order against one cluster (node1-3, then node4), the way an
operator would drive it; each uses a fresh SSHPool and event loop, like separate shell runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from agent.config import load_config
from shell import bootstrap, clusterstate, remote, ssh
from shell.clusterstate import ClusterState
from shell.ssh import SSHPool
from tests.bootstrap.conftest import Node, SSHEnv, kill_agents, make_node, needs_sshd

pytestmark = [pytest.mark.timeout(90), needs_sshd]
T = TypeVar("T")
NAME = "lab"
TIMING = {"tick_ms": 50}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def drive(env: SSHEnv, story: Callable[[SSHPool], Awaitable[T]], accept_new: bool = True) -> T:
    async def main() -> T:
        pool = env.pool(accept_new=accept_new)
        try:
            return await asyncio.wait_for(story(pool), 80)
        finally:
            await pool.close()

    return asyncio.run(main())


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, node: str, message: str) -> None:
        self.lines.append((node, message))

    def said(self, node: str, fragment: str) -> bool:
        return any(n == node and fragment in m for n, m in self.lines)


@pytest.fixture(scope="module")
def home(ssh_env: SSHEnv) -> Path:
    return ssh_env.root / "shoal-home"


def state(home: Path) -> ClusterState:
    return clusterstate.load(home, NAME)


def agent_pid(node: Node) -> int | None:
    lock = Path(node.spec.base) / "data" / "LOCK"
    if not lock.exists():
        return None
    pid = int(lock.read_text().split()[0])
    try:  # a stopped agent may linger as a zombie if this container's pid 1 does not reap
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" else pid


def test_init_makes_three_nodes_a_cluster(ssh_env: SSHEnv, nodes: list[Node], home: Path) -> None:
    log = Log()
    t0 = time.monotonic()
    st = drive(
        ssh_env,
        lambda pool: bootstrap.init_cluster(
            [n.spec for n in nodes[:3]],
            name=NAME,
            pool=pool,
            state_root=home,
            progress=log,
            **TIMING,
        ),
    )
    elapsed = time.monotonic() - t0
    print(f"init of 3 nodes took {elapsed:.2f}s")
    assert st.changed and [n.id for n in st.nodes] == ["node1", "node2", "node3"]
    for node in ("node1", "node2", "node3"):
        for step in ("connecting", "uploading shoal-agent-", "starting agent", "leader"):
            assert log.said(node, step), (node, step, log.lines)
    assert log.said("*", "waiting for a leader")
    # local state: private, and current points at it
    assert clusterstate.current(home) == NAME
    root = home / "clusters" / NAME
    assert (root.stat().st_mode & 0o777, (root / "cluster.json").stat().st_mode & 0o777) == (
        0o700,
        0o600,
    )
    assert ((root / "ca" / "ca-key.pem").stat().st_mode & 0o777) == 0o600
    # the node side: base 0700, key 0600, agents running detached (not children of sshd)
    for node in nodes[:3]:
        base = Path(node.spec.base)
        assert base.stat().st_mode & 0o777 == 0o700
        assert (base / "tls" / "node-key.pem").stat().st_mode & 0o777 == 0o600
        assert (base / "agent.toml").stat().st_mode & 0o777 == 0o600
        assert len(list(base.glob("shoal-agent-*.pyz"))) == 1
        config = load_config(base / "agent.toml")
        assert (config.cluster_id, config.cluster_name) == (st.cluster_id, NAME)
        assert config.metadata == node.spec.metadata and config.tick_ms == 50
        pid = agent_pid(node)
        assert pid is not None
        assert os.getsid(pid) == pid, "the agent leads its own session (setsid)"

    async def kv(pool: SSHPool) -> Any:
        leader, _ = await bootstrap.find_leader(st, pool)
        await remote.call(pool, leader, "kv.put", key=b64("/hello"), value=b64("world"))
        spec = st.node("node1")  # read back through another node's control channel
        conn = await pool.connect(spec.host, spec.ssh_port, name=spec.id)
        client = await ssh.open_control(conn, remote.socket_path(spec), node=spec.id)
        try:
            return await client.call("kv.get", key=b64("/hello"))
        finally:
            await client.close()

    got = drive(ssh_env, kv)
    assert base64.b64decode(got["kvs"][0]["value"]) == b"world"


def test_second_init_changes_nothing_and_says_so(
    ssh_env: SSHEnv, nodes: list[Node], home: Path
) -> None:
    pids = [agent_pid(n) for n in nodes[:3]]
    log = Log()
    st = drive(
        ssh_env,
        lambda pool: bootstrap.init_cluster(
            [n.spec for n in nodes[:3]],
            name=NAME,
            pool=pool,
            state_root=home,
            progress=log,
            **TIMING,
        ),
    )
    assert not st.changed
    assert all(log.said(n, "already running") for n in ("node1", "node2", "node3"))
    assert log.said("*", "nothing changed")
    assert not any("uploading" in m or "starting" in m for _, m in log.lines)
    assert [agent_pid(n) for n in nodes[:3]] == pids


async def _round_trips_ms(client: Any, rounds: int = 15) -> tuple[float, float]:
    """Median ms of one status call, then of two pipelined ones (in that order: the stall shows
    once the client's TCP has settled into delayed-ACK mode after a run of exchanges)."""
    await client.call("status")
    seq, pair = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        await client.call("status")
        seq.append(time.perf_counter() - t)
    for _ in range(rounds):
        t = time.perf_counter()
        await asyncio.gather(client.call("status"), client.call("status"))
        pair.append(time.perf_counter() - t)
    return statistics.median(seq) * 1e3, statistics.median(pair) * 1e3


@pytest.mark.parametrize(
    ("streamlocal", "nudge"),
    [(True, True), (False, True), (True, False)],
    ids=["streamlocal", "exec-bridge", "streamlocal-without-nodelay-nudge"],
)
def test_control_round_trips_have_no_delayed_ack_stall(
    ssh_env: SSHEnv, nodes: list[Node], home: Path, streamlocal: bool, nudge: bool
) -> None:
    """Two pipelined status calls on a fresh connection. sshd leaves Nagle on for a connection
    that never ran a command, so the second reply waits ~40 ms for the client's delayed ACK;
    the pool's exec nudge (see shell.ssh.enable_server_nodelay) removes that. The third case
    shows the stall it removes (measured, not asserted: it depends on the kernel's ACK timer)."""
    spec = state(home).node("node2")

    async def story() -> tuple[float, float]:
        pool = SSHPool(
            ssh_env.known_hosts,
            [ssh_env.client_key],
            config=ssh_env.ssh_config,
            server_nodelay=nudge,
        )
        try:
            conn = await pool.connect(spec.host, spec.ssh_port, name=spec.id)
            client = await ssh.open_control(
                conn, remote.socket_path(spec), allow_streamlocal=streamlocal
            )
            try:
                return await _round_trips_ms(client)
            finally:
                await client.close()
        finally:
            await pool.close()

    seq, pair = asyncio.run(story())
    path = "streamlocal" if streamlocal else "exec bridge"
    print(
        f"{path}{'' if nudge else ' (no nudge)'}: status {seq:.2f} ms, "
        f"2 pipelined {pair:.2f} ms (medians)"
    )
    if nudge:
        assert seq < 15 and pair < 20


def test_join_a_fourth_node_then_leave_one(ssh_env: SSHEnv, nodes: list[Node], home: Path) -> None:
    log = Log()
    st = drive(
        ssh_env,
        lambda pool: bootstrap.join_node(state(home), nodes[3].spec, pool=pool, progress=log),
    )
    assert [n.id for n in st.nodes] == ["node1", "node2", "node3", "node4"]
    assert log.said("node4", "joined")
    rows = drive(ssh_env, lambda pool: bootstrap.cluster_status(state(home), pool))
    assert {r["id"] for r in rows if r["health"] == "healthy"} == {
        "node1",
        "node2",
        "node3",
        "node4",
    }

    log = Log()
    st = drive(
        ssh_env, lambda pool: bootstrap.leave_node(state(home), "node1", pool=pool, progress=log)
    )
    assert [n.id for n in st.nodes] == ["node2", "node3", "node4"]
    assert log.said("node1", "left")
    assert agent_pid(nodes[0]) is None, "node1's agent was stopped"

    async def members(pool: SSHPool) -> Any:
        return await remote.call(pool, state(home).node("node4"), "members")

    assert drive(ssh_env, members)["voters"] == ["node2", "node3", "node4"]


def test_a_machine_that_left_refuses_a_plain_restart_and_joins_again(
    ssh_env: SSHEnv, nodes: list[Node], home: Path
) -> None:
    spec = nodes[0].spec  # node1, which left above; its files are all still there
    data = Path(spec.base) / "data"
    marker = json.loads((data / "REMOVED").read_text())
    assert (marker["node_id"], marker["cluster_name"]) == ("node1", NAME)
    pyz = next(Path(spec.base).glob("shoal-agent-*.pyz")).name

    async def restart(pool: SSHPool) -> dict[str, Any]:
        return await remote.helper(pool, spec, "start", spec.base, pyz, remote.unit_name(spec))

    started = drive(ssh_env, restart)
    assert not started.get("started") and started.get("error") == "agent exited (1)", started
    refusal = f"shoal agent: this machine was removed from cluster {NAME}; `shoal cluster join`"
    assert refusal in started["log"], started["log"]

    log = Log()
    st = drive(
        ssh_env, lambda pool: bootstrap.join_node(state(home), spec, pool=pool, progress=log)
    )
    assert [n.id for n in st.nodes] == ["node2", "node3", "node4", "node1"]
    assert log.said("node1", "joined")
    assert not (data / "REMOVED").exists()
    rows = drive(ssh_env, lambda pool: bootstrap.cluster_status(state(home), pool))
    assert {r["id"] for r in rows if r["health"] == "healthy"} == {
        "node1",
        "node2",
        "node3",
        "node4",
    }, rows


def test_status_reports_a_hung_node_without_waiting_on_it(
    ssh_env: SSHEnv, nodes: list[Node], home: Path
) -> None:
    hung = nodes[2]  # node3
    hung.sshd.pause()
    try:
        t0 = time.monotonic()
        rows = drive(
            ssh_env,
            lambda pool: bootstrap.cluster_status(state(home), pool, timeout=2.0),
        )
        elapsed = time.monotonic() - t0
    finally:
        hung.sshd.resume()
    print(f"status with node3 hung took {elapsed:.2f}s")
    by_id = {r["id"]: r for r in rows}
    assert by_id["node3"]["health"] == "unreachable" and "node3" in by_id["node3"]["error"]
    for node in ("node2", "node4"):
        assert by_id[node]["reachable"] and by_id[node]["leader"] in ("node2", "node3", "node4")
        assert {"role", "term", "commit", "applied", "lag", "version"} <= set(by_id[node])


def test_destroy_with_wipe_removes_remote_files_and_local_state(
    ssh_env: SSHEnv, nodes: list[Node], home: Path
) -> None:
    st = state(home)
    log = Log()
    drive(
        ssh_env,
        lambda pool: bootstrap.destroy_cluster(st, True, pool=pool, state_root=home, progress=log),
    )
    for node in nodes[1:]:
        assert not Path(node.spec.base).exists(), node.spec.id
    assert not clusterstate.exists(home, NAME) and clusterstate.current(home) is None
    assert all(agent_pid(n) is None for n in nodes)


# --- separate small clusters ---------------------------------------------------------------------


def test_exec_bridge_fallback_when_streamlocal_is_refused(ssh_env: SSHEnv, tmp_path: Path) -> None:
    node = make_node(ssh_env, "solo", streamlocal=False)
    home = tmp_path / "home"
    try:

        async def story(pool: SSHPool) -> Any:
            st = await bootstrap.init_cluster(
                [node.spec], name="solo", pool=pool, state_root=home, **TIMING
            )
            conn = await pool.connect("127.0.0.1", node.sshd.port)
            with pytest.raises(asyncssh.ChannelOpenError):  # sshd really refuses it
                await conn.open_unix_connection(remote.socket_path(node.spec))
            client = await ssh.open_control(conn, remote.socket_path(node.spec), node="solo")
            try:
                await client.call("kv.put", key=b64("/via"), value=b64("bridge"))
                got = await client.call("kv.get", key=b64("/via"))
            finally:
                await client.close()
            await bootstrap.destroy_cluster(st, True, pool=pool, state_root=home)
            return got

        got = drive(ssh_env, story)
        assert base64.b64decode(got["kvs"][0]["value"]) == b"bridge"
        assert not Path(node.spec.base).exists()
    finally:
        node.sshd.stop()
        kill_agents(Path(node.spec.base).parent)


def test_a_node_without_python_is_named_and_nothing_starts(
    ssh_env: SSHEnv, nodes: list[Node], tmp_path: Path
) -> None:
    from dataclasses import replace

    specs = [replace(n.spec, remote_base=str(tmp_path / n.spec.id)) for n in nodes[:3]]
    specs[1] = replace(specs[1], python="/nonexistent/python3")
    with pytest.raises(bootstrap.BootstrapError) as info:
        drive(
            ssh_env,
            lambda pool: bootstrap.init_cluster(
                specs, name="broken", pool=pool, state_root=tmp_path / "home"
            ),
        )
    message = str(info.value)
    assert "node2: /nonexistent/python3 was not found" in message
    assert "node1" not in message.split("\n", 1)[1] and "node3" not in message.split("\n", 1)[1]
    assert not any((tmp_path / s.id).exists() for s in specs), "nothing installed anywhere"
