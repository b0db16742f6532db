"""Inventory files, node sets and merging: the sources for machines multicast does not reach."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from shell.discovery import (
    SHOAL_TYPE,
    SSH_TYPE,
    DiscoveryError,
    Host,
    expand_nodeset,
    host_from_service,
    load_inventory,
    merge,
    nodeset_hosts,
    parse_metadata,
)


def test_inventory_lines_comments_ports_and_metadata(tmp_path: Path) -> None:
    inv = tmp_path / "hosts"
    inv.write_text(
        "# the web tier\n"
        "web1  10.0.1.11                 region=us-east,disk=ssd\n"
        "\n"
        "db1   10.0.2.21  2222  region=us-west   # moved last week\n"
        "bare  10.0.3.1\n"
    )
    hosts = load_inventory(inv)
    assert [(h.name, h.address, h.ssh_port) for h in hosts] == [
        ("web1", "10.0.1.11", 22),
        ("db1", "10.0.2.21", 2222),
        ("bare", "10.0.3.1", 22),
    ]
    assert hosts[0].metadata == {"region": "us-east", "disk": "ssd"}
    assert hosts[1].metadata == {"region": "us-west"}
    assert all(h.sources == ("inventory",) and not h.agent for h in hosts)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lonely", "expected 'name address"),
        ("a 10.0.0.1 notaport", "neither an SSH port"),
        ("a 10.0.0.1 70000", "neither an SSH port"),
        ("a 10.0.0.1 =x", "not key=value"),
    ],
)
def test_inventory_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    inv = tmp_path / "hosts"
    inv.write_text(f"ok 10.0.0.9\n{line}\n")
    with pytest.raises(DiscoveryError, match=message) as err:
        load_inventory(inv)
    assert f"{inv}:2" in str(err.value)


def test_missing_inventory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="cannot read inventory"):
        load_inventory(tmp_path / "nope")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("web1", ["web1"]),
        ("web[1-3],db1", ["db1", "web1", "web2", "web3"]),  # ClusterShell's order
        ("n[01-03]", ["n01", "n02", "n03"]),
        ("r[1-2]n[1,3]", ["r1n1", "r1n3", "r2n1", "r2n3"]),
        ("a[8-10].lab", ["a8.lab", "a9.lab", "a10.lab"]),
        ("x1,x1,x2", ["x1", "x2"]),
    ],
)
def test_nodesets_expand(text: str, names: list[str]) -> None:
    assert expand_nodeset(text) == names


@pytest.mark.parametrize(
    "text", ["web[1-3", "web1-3]", "web[a-b]", "web[3-1]", "w[1-200000]", "x1, x2", ""]
)
def test_bad_nodesets_are_refused(text: str) -> None:
    with pytest.raises(DiscoveryError):
        expand_nodeset(text)


def test_nodeset_hosts_resolve_names_so_they_merge_by_address() -> None:
    # "localhost" comes from /etc/hosts: no DNS query leaves this machine.
    [host] = asyncio.run(nodeset_hosts("localhost", timeout=2.0))
    assert (host.address, host.name, host.ssh_port, host.sources) == (
        "127.0.0.1",
        "localhost",
        22,
        ("nodeset",),
    )


def test_nodeset_hosts_without_resolving_keep_names_as_addresses() -> None:
    hosts = asyncio.run(nodeset_hosts("web[1-2].example", resolve=False))
    assert [(h.address, h.name) for h in hosts] == [
        ("web1.example", "web1.example"),
        ("web2.example", "web2.example"),
    ]


def test_services_become_hosts() -> None:
    ssh = host_from_service(SSH_TYPE, f"node1.{SSH_TYPE}", ["10.0.0.1"], 2222, {})
    assert ssh == Host("10.0.0.1", "node1", 2222, sources=("mdns",))
    props: dict[bytes, bytes | None] = {
        b"cluster": b"c0ffee",
        b"node": b"n1",
        b"version": b"0.1.0",
        b"peer": b"7400",
        b"meta": b"region=us-east,disk=ssd",
    }
    agent = host_from_service(SHOAL_TYPE, f"n1 c0ffee.{SHOAL_TYPE}", ["10.0.0.1"], 7400, props)
    assert agent is not None
    assert (agent.agent, agent.cluster_id, agent.node_id, agent.version, agent.peer_port) == (
        True,
        "c0ffee",
        "n1",
        "0.1.0",
        7400,
    )
    assert agent.metadata == {"region": "us-east", "disk": "ssd"}
    assert host_from_service(SSH_TYPE, "x", [], 22, {}) is None


def test_merge_by_address_earlier_wins_and_gaps_fill() -> None:
    ssh = Host("10.0.0.1", "node1", 22, sources=("mdns",))
    agent = Host(
        "10.0.0.1", "n1", agent=True, node_id="n1", metadata={"disk": "ssd"}, sources=("mdns",)
    )
    inv = Host(
        "10.0.0.1", "web1", 2222, metadata={"disk": "hdd", "rack": "4"}, sources=("inventory",)
    )
    other = Host("10.0.0.2", "db1", 22, sources=("inventory",))
    [one, two] = merge([ssh, agent], [other, inv])
    assert (one.name, one.ssh_port, one.agent, one.node_id) == ("node1", 22, True, "n1")
    assert one.metadata == {"disk": "ssd", "rack": "4"}
    assert one.sources == ("mdns", "inventory")
    assert two.address == "10.0.0.2"


def test_merge_joins_hosts_sharing_any_address_and_prefers_the_agents() -> None:
    # avahi publishes every interface's address for _ssh; the agent advertises the one it uses.
    ssh = Host("192.168.1.5", "box", 22, addresses=("192.168.1.5", "10.0.0.7"))
    agent = Host("10.0.0.7", "n7", agent=True, node_id="n7")
    [host] = merge([ssh, agent])
    assert host.address == "10.0.0.7" and host.name == "box" and host.agent
    assert set(host.addresses) == {"192.168.1.5", "10.0.0.7"}


def test_merge_sorts_numerically() -> None:
    hosts = merge([Host("10.0.0.10"), Host("10.0.0.9"), Host("name.example")])
    assert [h.address for h in hosts] == ["10.0.0.9", "10.0.0.10", "name.example"]


def test_metadata_parsing_tolerates_junk() -> None:
    assert parse_metadata("") == {}
    assert parse_metadata("a=1,,b=,=c, d=4") == {"a": "1", "b": "", "d": "4"}


def test_discover_command_with_inventory_only_prints_json(tmp_path: Path) -> None:
    from shell.batch import parse_script, run_lines
    from shell.commands import build_registry
    from shell.registry import Options

    inv = tmp_path / "hosts"
    inv.write_text("web1 10.0.1.11 region=eu\n")
    line = f"discover --inventory {inv} --nodes 10.0.1.11,10.0.1.12 --no-mdns"
    out, err = io.StringIO(), io.StringIO()
    code = asyncio.run(
        run_lines(build_registry(), parse_script(line), Options(json=True), out=out, err=err)
    )
    assert code == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert [(h["address"], h["name"], h["metadata"]) for h in data] == [
        ("10.0.1.11", "web1", {"region": "eu"}),
        ("10.0.1.12", "10.0.1.12", {}),
    ]
