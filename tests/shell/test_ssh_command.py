"""``ssh NODE``: which machine a name picks, and what is refused before any connection."""

from __future__ import annotations

import pytest

from shell.clusterstate import NodeSpec
from shell.commands import build_registry
from shell.commands.ssh import pick, remote_command
from shell.registry import NotFound, UsageError

NODES = [
    NodeSpec("node1", "10.0.0.1", metadata={"role": "web"}),
    NodeSpec("node2", "10.0.0.2", ssh_port=2222, user="ops", metadata={"role": "db"}),
    NodeSpec("node10", "10.0.0.10", metadata={"role": "web"}),
]


def test_one_machine_by_name_or_by_a_set_of_one() -> None:
    assert pick("node2", [], NODES, "prod") is NODES[1]
    assert pick("node[2]", ["uptime"], NODES, "prod") is NODES[1]
    assert pick("@role=db", [], NODES, "prod") is NODES[1]


def test_a_stranger_is_not_found_and_the_machines_are_named() -> None:
    with pytest.raises(NotFound) as caught:
        pick("nodeX", [], NODES, "prod")
    message = str(caught.value)
    assert "'nodeX' is not a machine of cluster prod" in message
    assert "node1, node2, node10" in message  # natural order


def test_several_machines_are_a_usage_error_pointing_at_exec() -> None:
    for text in ("node[1-2]", "node1,node2", "@all", "@role=web"):
        with pytest.raises(UsageError, match="ssh takes one node; for many use exec"):
            pick(text, [], NODES, "prod")
    with pytest.raises(UsageError, match="node2 would run as a command on node1"):
        pick("node1", ["node2"], NODES, "prod")
    assert pick("node1", ["node2", "--help"], NODES, "prod") is NODES[0]  # a real command line
    with pytest.raises(UsageError, match="bad node set"):
        pick("node[1-", [], NODES, "prod")


def test_the_remote_command() -> None:
    assert remote_command([]) is None
    assert remote_command(["ls | wc -l"]) == "ls | wc -l"  # one word: as typed, like ssh
    assert remote_command(["cat", "/etc/my file"]) == "cat '/etc/my file'"


def test_registered_as_a_terminal_command() -> None:
    command, args = build_registry().parse(["ssh", "node1", "--", "ls", "-l"])
    assert command.name == "ssh" and command.terminal
    assert args == {"node": "node1", "command": ["ls", "-l"]}
    assert command.usage() == "usage: ssh NODE [COMMAND...]"
    assert command.args[0].completion == "nodes"
