"""The whole story on a 3-node lab, in order, as an operator lives it.

lab up → discover finds 3 hosts → cluster init → put and get a key → kill the leader's agent
(a new leader, the key still readable, new writes accepted) → partition one node (the majority
serves, the minority refuses writes with a no-quorum error) → heal (the minority catches up) →
the shell exits and the cluster keeps running; a new session sees it → lab down leaves nothing.

The tests share one lab and run in file order; each one starts by making sure the cluster is
whole (``cluster init`` is idempotent, so that is also how a later test recovers the story).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.client import ControlError
from shell.lab import names, net, procs
from tests.e2e.conftest import (
    ClusterClient,
    E2ELab,
    Shoal,
    eventually,
    needs_root,
    unb64,
)

pytestmark = needs_root

NODES = ["node1", "node2", "node3"]


@pytest.fixture(scope="module")
def lab(shoal: Shoal) -> E2ELab:
    made = shoal.lab_up("s", 3)
    status = made.status()
    assert [n["name"] for n in status["nodes"]] == NODES
    assert all(n["sshd"] == "up" for n in status["nodes"])
    return made


@pytest.fixture(scope="module")
def client(shoal: Shoal, lab: E2ELab) -> ClusterClient:
    return ClusterClient(shoal.home, lab.name)  # the cluster takes the lab's name


def members(shoal: Shoal) -> list[dict[str, Any]]:
    """``shoal cluster status --json`` members (exit 0 or 3: a degraded cluster still answers)."""
    done = shoal.run("cluster", "status", "--json")
    assert done.returncode in (0, 3), f"cluster status exited {done.returncode}: {done.stderr}"
    rows = json.loads(done.stdout)["members"]
    assert isinstance(rows, list)
    return rows


def whole(shoal: Shoal) -> str | None:
    """The leader, when all three members are healthy and agree on it."""
    rows = members(shoal)
    leaders = {r.get("leader") for r in rows}
    if len(rows) == 3 and all(r["health"] == "healthy" for r in rows) and len(leaders) == 1:
        leader = leaders.pop()
        return leader if isinstance(leader, str) else None
    return None


def ensure_whole(shoal: Shoal) -> str:
    """The cluster's leader once all three members are healthy (starting it if need be)."""
    if shoal.run("cluster", "status", "--json").returncode != 0:
        shoal.ok("cluster", "init", "--json")
    return eventually(lambda: whole(shoal), "all three members healthy with one leader")


def test_discover_finds_the_three_hosts(shoal: Shoal, lab: E2ELab) -> None:
    done = shoal.ok("discover", "--expect", "3", "--timeout", "20", "--json")
    hosts = json.loads(done.stdout)
    by_name = {h["name"]: h for h in hosts}
    assert sorted(by_name) == NODES, hosts
    lab_nodes = {n.name: n.address for n in lab.state.nodes}
    for name, host in by_name.items():
        assert host["address"] == lab_nodes[name]
        assert host["ssh_port"] == 22
        assert host["agent"] is False  # nothing installed yet
    assert "lab bridge" in done.stderr  # it told the user where it browsed


def test_cluster_init_makes_the_lab_a_cluster(shoal: Shoal, lab: E2ELab) -> None:
    done = shoal.ok("cluster", "init")  # no nodes named: the lab's, with its SSH files
    assert f"cluster {lab.name} is up: node1, node2, node3" in done.stdout, done.stdout
    for node in NODES:  # per-node progress on stderr
        assert f"{node}: agent running" in done.stderr, done.stderr
    assert f"using lab {lab.name}" in done.stderr
    rows = members(shoal)
    assert [r["id"] for r in rows] == NODES
    assert all(r["health"] == "healthy" for r in rows), rows
    assert sum(r["role"] == "leader" for r in rows) == 1
    assert len({r["leader"] for r in rows}) == 1

    def three_machines() -> list[dict[str, Any]] | None:
        found = shoal.json("machines")["machines"]
        return found if len(found) == 3 else None

    machines = eventually(three_machines, "three machines in the registry")
    assert sorted(m["address"] for m in machines) == sorted(n.address for n in lab.state.nodes)


def test_cluster_init_twice_is_a_noop(shoal: Shoal, lab: E2ELab, client: ClusterClient) -> None:
    leader = ensure_whole(shoal)
    pids = lab.agent_pids()
    assert all(pids.values()), pids
    terms = {n: client.status(n)["term"] for n in NODES}
    cluster_id = client.state.cluster_id

    again = shoal.json("cluster", "init")
    assert again["changed"] is False
    assert again["id"] == cluster_id
    # and by node set, in the human form
    human = shoal.ok("cluster", "init", "node[1-3]", "--name", lab.name)
    assert "already running; nothing changed" in human.stdout, human.stdout

    assert lab.agent_pids() == pids  # no agent restarted
    assert {n: client.status(n)["term"] for n in NODES} == terms  # no election either
    assert whole(shoal) == leader
    assert client.state.cluster_id == cluster_id


def test_put_and_get_through_the_shell(lab: E2ELab, client: ClusterClient, shoal: Shoal) -> None:
    ensure_whole(shoal)
    revision = client.put("node1", "/e2e/greeting", "hello")
    assert revision > 0
    assert client.get("node3", "/e2e/greeting") == "hello"  # linearizable, on another member
    # and the way an operator on the node would look
    done = lab.ctl("node2", "--json", "kv", "get", "/e2e/greeting")
    assert done.returncode == 0, done.stderr
    kvs = json.loads(done.stdout)["kvs"]
    assert [unb64(kv["value"]) for kv in kvs] == ["hello"]
    assert kvs[0]["mod_revision"] == revision
    assert client.get("node2", "/e2e/missing") is None


def test_killing_the_leader_elects_another_and_keeps_the_data(
    shoal: Shoal, lab: E2ELab, client: ClusterClient
) -> None:
    old = ensure_whole(shoal)
    client.put(old, "/e2e/before-kill", "v1")
    killed = shoal.json("lab", "kill", old, "--name", lab.name)
    assert killed["node"] == old and killed["pid"] > 0
    survivors = [n for n in NODES if n != old]

    def new_leader() -> str | None:
        rows = {r["id"]: r for r in members(shoal)}
        assert rows[old]["health"] == "unreachable"
        leaders = {rows[n].get("leader") for n in survivors}
        leader = leaders.pop() if len(leaders) == 1 else None
        return leader if leader in survivors else None

    leader = eventually(new_leader, f"a new leader among {survivors}")
    assert leader != old
    for node in survivors:
        assert client.get(node, "/e2e/before-kill") == "v1"
        assert client.get(node, "/e2e/greeting") == "hello"
    follower = next(n for n in survivors if n != leader)
    client.put(follower, "/e2e/after-kill", "v2")  # forwarded to the new leader
    client.put(leader, "/e2e/after-kill-2", "v3")
    assert client.get(leader, "/e2e/after-kill") == "v2"

    # the machine "reboots": its agent comes back and catches up
    restored = shoal.json("lab", "restore", old, "--name", lab.name)
    assert restored["agent_started"] is True
    eventually(
        lambda: client.get(old, "/e2e/after-kill-2", serializable=True) == "v3",
        f"{old} to catch up after its restart",
    )
    ensure_whole(shoal)


def test_partitioned_minority_refuses_writes_and_catches_up_after_heal(
    shoal: Shoal, lab: E2ELab, client: ClusterClient
) -> None:
    cut = ensure_whole(shoal)  # cut the leader off: the hardest case for the minority
    majority = [n for n in NODES if n != cut]
    report = shoal.json("lab", "partition", cut, "--name", lab.name)
    assert report["nodes"] == [cut] and sorted(report["cut_from"]) == majority

    def majority_leader() -> str | None:
        leaders = {client.status(n).get("leader") for n in majority}
        leader = leaders.pop() if len(leaders) == 1 else None
        return leader if leader in majority else None

    eventually(majority_leader, f"the majority {majority} to elect a leader")
    eventually(
        lambda: client.status(cut).get("leader") is None,
        f"{cut} to notice it lost its quorum",
    )
    # the majority serves reads and writes
    client.put(majority[0], "/e2e/during-partition", "majority")
    assert client.get(majority[1], "/e2e/during-partition") == "majority"

    # the minority refuses writes, with an error that says why
    with pytest.raises(ControlError) as refused:
        client.put(cut, "/e2e/minority", "lost")
    assert refused.value.code == "no-leader"
    assert "quorum" in refused.value.message
    done = lab.ctl(cut, "kv", "put", "/e2e/minority", "lost")
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)  # unavailable
    assert "no-leader" in done.stderr and "quorum" in done.stderr, done.stderr
    assert client.get(cut, "/e2e/during-partition", serializable=True) is None  # it is behind

    rows = {r["id"]: r for r in members(shoal)}
    assert rows[cut]["health"] == "no leader"
    assert all(rows[n]["health"] == "healthy" for n in majority), rows
    assert shoal.run("cluster", "status").returncode == 0  # 2 of 3 healthy: available

    healed = shoal.json("lab", "heal", "--name", lab.name)
    assert healed["routes_removed"] > 0
    eventually(
        lambda: client.get(cut, "/e2e/during-partition", serializable=True) == "majority",
        f"{cut} to catch up after heal",
    )
    ensure_whole(shoal)
    assert client.get(cut, "/e2e/minority") is None  # the refused write never happened
    client.put(cut, "/e2e/after-heal", "yes")  # and it takes writes again
    assert client.get(majority[0], "/e2e/after-heal") == "yes"


SESSION = """
import asyncio, base64, sys
from shell import clusterstate, remote
from shell.clusteraccess import load_ssh

async def main() -> None:
    state = clusterstate.load(clusterstate.shoal_home(), sys.argv[1])
    pool = load_ssh(state).pool()
    for spec in state.nodes:
        await remote.call(pool, spec, "status")
    await remote.call(pool, state.nodes[0], "kv.put",
                      key=base64.b64encode(b"/e2e/session").decode(),
                      value=base64.b64encode(b"written by a shell that has gone").decode())
    print("talked to", len(state.nodes), "nodes")
    # no pool.close(): the session ends abruptly, as when a terminal is closed

asyncio.run(main())
"""


def test_cluster_outlives_the_shell_and_a_new_session_sees_it(
    shoal: Shoal, lab: E2ELab, client: ClusterClient
) -> None:
    leader = ensure_whole(shoal)
    pids = lab.agent_pids()
    session = subprocess.run(
        [sys.executable, "-c", SESSION, lab.name],
        capture_output=True, text=True, env=shoal.env(), timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert session.returncode == 0, session.stderr
    assert "talked to 3 nodes" in session.stdout

    # the session is gone; every agent still runs, the same processes as before
    assert lab.agent_pids() == pids
    assert all(procs.alive(pid) for pid in pids.values() if pid)
    # a new session finds the cluster as it was
    assert whole(shoal) == leader
    assert client.get("node3", "/e2e/session") == "written by a shell that has gone"
    assert len(shoal.json("machines")["machines"]) == 3


def test_lab_down_leaves_nothing_behind(shoal: Shoal, lab: E2ELab) -> None:
    state = lab.state
    netns = [n.netns for n in state.nodes]
    links = [state.bridge, *(n.veth for n in state.nodes)]
    pids = [p for ns in netns for p in procs.pids_in_netns(ns)]
    agents = [p for p in lab.agent_pids().values() if p]
    assert len(agents) == 3 and set(agents) <= set(pids)
    assert all(net.link_exists(link) for link in links)

    report = shoal.json("lab", "down", "--name", lab.name)
    assert report["found"] is True
    assert sorted(report["namespaces"]) == sorted(netns)

    left_ns = [ns for ns in net.netns_list() if names.is_lab_netns(lab.name, ns)]
    assert left_ns == [], left_ns
    assert [link for link in links if net.link_exists(link)] == []
    assert [p for p in pids if _alive_same(p)] == [], "processes of the lab survived"
    assert not lab.dir.exists()
    # nothing on the host mentions the lab's directory: no process, no mount
    assert _processes_mentioning(str(lab.dir)) == []
    assert str(lab.dir) not in Path("/proc/self/mountinfo").read_text()
    again = shoal.json("lab", "down", "--name", lab.name)
    assert again["found"] is False


def _alive_same(pid: int) -> bool:
    """Whether ``pid`` still runs (not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
