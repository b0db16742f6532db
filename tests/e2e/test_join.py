"""``shoal cluster join`` of a fourth lab node while writes flow: no write fails, the new member
becomes a voter holding every acknowledged write, and the shell's own state lists it."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field

from agent.client import ControlError
from shell import clusterstate, remote
from shell.clusteraccess import load_ssh
from shell.remote import NodeError
from shell.ssh import SSHError
from tests.e2e.conftest import ClusterClient, Shoal, eventually, needs_root, shoal_command, unb64

pytestmark = needs_root

MEMBERS = ["node1", "node2", "node3"]
PREFIX = "/e2e/flow/"


@dataclass
class Flow:
    """Writes acknowledged (key → value) and refused, and when the join ran among them."""

    acked: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    at_join_start: int = 0
    at_join_end: int = 0


async def join_while_writing(shoal: Shoal, cluster: str, *extra: str) -> tuple[Flow, int, str, str]:
    state = clusterstate.load(shoal.home, cluster)
    pool = load_ssh(state).pool()
    flow = Flow()
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            spec = state.nodes[i % len(state.nodes)]  # round robin: followers forward
            key, value = f"{PREFIX}{i:05d}", f"v{i}"
            try:
                await remote.call(
                    pool,
                    spec,
                    "kv.put",
                    wait=10.0,
                    key=base64.b64encode(key.encode()).decode(),
                    value=base64.b64encode(value.encode()).decode(),
                )
                flow.acked[key] = value
            except (ControlError, NodeError, SSHError) as exc:
                flow.failed.append(f"{key} via {spec.id}: {exc}")
            i += 1

    task = asyncio.create_task(writer())
    try:
        while len(flow.acked) < 20 and not task.done():
            await asyncio.sleep(0.01)
        flow.at_join_start = len(flow.acked)
        proc = await asyncio.create_subprocess_exec(
            *shoal_command(), "cluster", "join", "node4", "--json", *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=shoal.env(),
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        flow.at_join_end = len(flow.acked)
        target = flow.at_join_end + 20
        while len(flow.acked) < target and not task.done():
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
        await pool.close()
    assert proc.returncode is not None
    return flow, proc.returncode, out.decode(), err.decode()


def test_join_a_fourth_node_while_writes_flow(shoal: Shoal) -> None:
    lab = shoal.lab_up("j", 4)
    init = shoal.json("cluster", "init", "node[1-3]", "--lab", lab.name, "--name", lab.name)
    assert init["nodes"] == MEMBERS and init["changed"] is True
    assert lab.agent_pids()["node4"] is None  # node4 is only a lab machine so far

    # node4 is a new machine whose host key the operator has not seen yet
    known_hosts = lab.dir / "known_hosts"
    lines = known_hosts.read_text().splitlines(keepends=True)
    known_hosts.write_text("".join(line for line in lines if not line.startswith("node4,")))
    refused = shoal.run("cluster", "join", "node4")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "Traceback" not in refused.stderr, refused.stderr
    assert f"node4: the host key of {lab.state.node('node4').address} is not known" in (
        refused.stderr
    )
    assert f"fingerprint {lab.host_key_fingerprint('node4')}" in refused.stderr
    assert "--accept-new" in refused.stderr
    assert lab.agent_pids()["node4"] is None
    assert [n.id for n in ClusterClient(shoal.home, lab.name).state.nodes] == MEMBERS

    # checked: join it, accepting its key, while writes flow
    flow, code, out, err = asyncio.run(join_while_writing(shoal, lab.name, "--accept-new"))
    assert code == 0, f"join exited {code}\n{out}\n{err}"
    assert json.loads(out) == {"joined": "node4", "cluster": lab.name}
    assert flow.failed == [], flow.failed[:5]
    assert flow.at_join_end > flow.at_join_start, "no write completed while the join ran"

    client = ClusterClient(shoal.home, lab.name)
    assert [n.id for n in client.state.nodes] == [*MEMBERS, "node4"]
    want = sorted([*MEMBERS, "node4"])
    for node in want:
        assert sorted(client.status(node)["voters"]) == want
    # node4 holds every acknowledged write (a linearizable read on node4 itself)
    answer = client.call(
        "node4",
        "kv.get",
        key=base64.b64encode(PREFIX.encode()).decode(),
        range_end=base64.b64encode(PREFIX[:-1].encode() + b"0").decode(),
    )
    stored = {unb64(kv["key"]): unb64(kv["value"]) for kv in answer["kvs"]}
    assert stored == flow.acked

    def four_healthy() -> bool:
        done = shoal.run("cluster", "status", "--json")
        rows = json.loads(done.stdout)["members"]
        return (
            done.returncode == 0
            and [r["id"] for r in rows] == [*MEMBERS, "node4"]
            and all(r["health"] == "healthy" for r in rows)
        )

    eventually(four_healthy, "four healthy members in cluster status")
    eventually(
        lambda: len(shoal.json("machines")["machines"]) == 4, "node4 in the machine registry"
    )
    client.put("node4", "/e2e/from-node4", "hi")
    assert client.get("node1", "/e2e/from-node4") == "hi"
    # and it is a member now: joining it again is refused, by name
    again = shoal.run("cluster", "join", "node4")
    assert again.returncode == 1 and "node4 is already a member" in again.stderr, again.stderr

    # one dead machine (the first the shell would ask) never blocks the commands
    shoal.json("lab", "kill", "node1", "--name", lab.name)
    machines = shoal.run("machines", "--json")
    assert machines.returncode == 0, machines.stderr
    assert len(json.loads(machines.stdout)["machines"]) >= 3
    rows = {
        r["id"]: r for r in json.loads(shoal.run("cluster", "status", "--json").stdout)["members"]
    }
    assert rows["node1"]["health"] == "unreachable"
    eventually(lambda: client.put("node2", "/e2e/node1-down", "ok") > 0, "a write without node1")
