"""Discovery over real multicast, between network namespaces joined by a bridge (conftest.py).

Each node namespace runs what a machine in the field runs: ``python -m agent.mdns publish`` for
``_ssh._tcp`` (standing in for avahi) and the agent's own ``_shoal._tcp`` advertiser. The operator
namespace runs :func:`shell.discovery.discover` (zeroconf), bound to its own address.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.discovery.conftest import NODES, Net

pytestmark = pytest.mark.timeout(60)
CLUSTER = "3f2a9c0e5b7d41a6"
OP = NODES["op"]


def publish_ssh(net: Net, node: str, *extra: str) -> None:
    address = NODES[node]
    net.publish(
        node,
        "--type",
        "_ssh._tcp.local.",
        "--name",
        f"host-{node}",
        "--host",
        f"host-{node}.local.",
        "--address",
        address,
        "--port",
        "22",
        *extra,
    )


def test_finds_every_host_merged_and_stops_as_soon_as_all_expected_answered(net: Net) -> None:
    for node in ("n1", "n2", "n3"):
        publish_ssh(net, node)
    net.agent("n1", "--node", "node1", "--cluster", CLUSTER, "--meta", "region=us-east,disk=ssd")
    net.agent("n2", "--node", "node2", "--cluster", CLUSTER, "--peer-port", "7401")

    result = net.run_worker("op", "discover", "--interface", OP, "--expect", "3", "--timeout", "15")

    hosts = {h["address"]: h for h in result["hosts"]}
    assert set(hosts) == {NODES["n1"], NODES["n2"], NODES["n3"]}
    n1, n2, n3 = hosts[NODES["n1"]], hosts[NODES["n2"]], hosts[NODES["n3"]]
    assert n1["name"] == "host-n1" and n1["ssh_port"] == 22 and n1["agent"]
    assert (n1["cluster_id"], n1["node_id"], n1["version"], n1["peer_port"]) == (
        CLUSTER,
        "node1",
        "0.1.0",
        7400,
    )
    assert n1["metadata"] == {"region": "us-east", "disk": "ssd"}
    assert n2["agent"] and n2["node_id"] == "node2" and n2["peer_port"] == 7401
    assert n2["metadata"] == {}
    assert not n3["agent"] and n3["ssh_port"] == 22 and n3["node_id"] == ""
    # Returned because all three answered, not because the 15 s timeout ran out.
    assert result["elapsed"] < 15
    # on_found streamed each host as it came, before the call returned.
    assert {f["address"] for f in result["found"]} == set(hosts)
    assert all(f["t"] <= result["elapsed"] for f in result["found"])


def test_without_enough_hosts_it_waits_out_the_timeout(net: Net) -> None:
    publish_ssh(net, "n1")
    result = net.run_worker(
        "op", "discover", "--interface", OP, "--expect", "2", "--timeout", "1.5"
    )
    assert [h["address"] for h in result["hosts"]] == [NODES["n1"]]
    assert result["elapsed"] >= 1.4


def test_several_responders_share_port_5353_in_one_namespace(net: Net) -> None:
    # Six services advertised from one namespace (one socket each on port 5353), for six hosts.
    for i in range(6):
        net.publish(
            "n1",
            "--type",
            "_ssh._tcp.local.",
            "--name",
            f"vm{i}",
            "--host",
            f"vm{i}.local.",
            "--address",
            f"10.253.1.{i + 1}",
            "--port",
            str(2200 + i),
            "--interface",
            NODES["n1"],
        )
    net.agent("n1", "--node", "node1")
    result = net.run_worker("op", "discover", "--interface", OP, "--expect", "7", "--timeout", "15")
    got = {h["address"]: h for h in result["hosts"]}
    assert len(got) == 7
    assert [got[f"10.253.1.{i + 1}"]["ssh_port"] for i in range(6)] == list(range(2200, 2206))
    assert got[NODES["n1"]]["agent"]


def test_goodbye_on_close_removes_the_service_from_a_live_browser(net: Net) -> None:
    watcher = net.worker("op", "watch", "--interface", OP)
    assert watcher.line()["ready"]
    agent = net.agent("n1", "--node", "node1", "--cluster", CLUSTER)
    added = watcher.line(timeout=10)
    assert added["event"] == "added" and added["name"].startswith("node1")
    assert agent.stop() == 0  # SIGTERM: a clean shutdown
    removed = watcher.line(timeout=10)
    assert removed["event"] == "removed" and removed["name"] == added["name"]
    # zeroconf expires a goodbye'd record after one second; without the goodbye it would be
    # the record's TTL (75 minutes for the PTR).
    assert removed["t"] - added["t"] < 10


def test_malformed_packets_do_not_kill_the_responder(net: Net) -> None:
    agent = net.agent("n1", "--node", "node1", "--cluster", CLUSTER)
    sent = net.run_worker("op", "garbage", "--interface", OP, "--target", NODES["n1"])
    assert sent["sent"] >= 10
    result = net.run_worker("op", "discover", "--interface", OP, "--expect", "1", "--timeout", "10")
    assert [h["node_id"] for h in result["hosts"]] == ["node1"]
    assert agent.popen.poll() is None
    agent.popen.send_signal(15)
    stats = agent.line()
    assert stats["malformed"] >= 10 and stats["answered"] >= 1
    assert agent.popen.wait(timeout=5) == 0


def test_legacy_unicast_query_gets_a_direct_answer(net: Net) -> None:
    net.agent("n1", "--node", "node1", "--cluster", CLUSTER)
    reply = net.run_worker("op", "legacy-query", "--interface", OP, "--name", "_shoal._tcp.local.")
    assert reply["from"] == NODES["n1"] and reply["id"] == 0x1234
    assert reply["questions"] == ["_shoal._tcp.local."]
    assert all(ttl <= 10 for _, _, ttl, *_ in reply["answers"] + reply["additionals"])
    assert any("7400" in data for *_, data in reply["additionals"])


def test_advertiser_start_does_not_wait_for_its_announcements(net: Net) -> None:
    proc = net.worker("n2", "agent", "--address", NODES["n2"], "--node", "node2")
    ready = proc.line()
    assert ready["start_seconds"] < 0.5  # announcing takes 2 s; start() returned at once


def test_an_agent_that_cannot_advertise_still_starts(net: Net) -> None:
    # 10.99.99.99 is no interface of this namespace: the agent logs and runs on without mDNS.
    proc = net.worker(
        "n3", "agent", "--address", NODES["n3"], "--node", "n3", "--mdns", "10.99.99.99"
    )
    assert proc.line() == {"ready": False}
    assert proc.popen.wait(timeout=5) == 0
    assert "mDNS: cannot advertise" in (proc.popen.stderr.read() if proc.popen.stderr else "")


def test_discover_command_prints_a_table_and_json(net: Net, tmp_path: Path) -> None:
    publish_ssh(net, "n1")
    net.agent("n2", "--node", "node2", "--cluster", CLUSTER, "--meta", "disk=ssd")
    inventory = tmp_path / "hosts"
    inventory.write_text("far1 203.0.113.77 2222 region=cloud\n")
    common = ["--interface", OP, "--expect", "2", "--timeout", "10", "--inventory", str(inventory)]

    table = net.start("op", ["-m", "shell.cli", "discover", *common])
    out, err = table.popen.communicate(timeout=20)
    assert table.popen.returncode == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert rows[NODES["n1"]][1:4] == ["host-n1", "22", "no"]
    assert rows[NODES["n2"]][1:5] == ["node2", "-", "yes", "(0.1.0)"]
    assert rows["203.0.113.77"][1:3] == ["far1", "2222"]
    assert "3 hosts, 1 with an agent" in err

    as_json = net.start("op", ["-m", "shell.cli", "--json", "discover", *common])
    out, err = as_json.popen.communicate(timeout=20)
    assert as_json.popen.returncode == 0, err
    data = {h["address"]: h for h in json.loads(out)}
    assert data[NODES["n2"]]["metadata"] == {"disk": "ssd"}
    assert data["203.0.113.77"]["sources"] == ["inventory"]
