"""Fixtures for lab tests: real namespaces, bridge and sshd, always removed afterwards.

Lab names are random so a test run never meets an operator's own lab, and SHOAL_HOME points at
a temporary directory. Root-only tests skip with the reason when not root.
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shell.lab import lab, names, net, procs
from shell.lab.state import LabState

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the lab needs root (network namespaces, bridge, mounts, sshd)"
)


def lab_name(tag: str) -> str:
    return f"t{tag}{secrets.token_hex(3)}"


class Labs:
    """Makes labs under one SHOAL_HOME and removes every one of them, even after a failure."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.names: list[str] = []

    def up(self, tag: str, nodes: int) -> LabState:
        name = lab_name(tag)
        self.names.append(name)
        return lab.up(name, nodes, home=self.home)

    def close(self) -> None:
        for name in self.names:
            take_down(name, self.home)


def take_down(name: str, home: Path) -> None:
    """``lab down``, then remove whatever it missed that carries the lab's name (also when down
    failed, whose error is then raised): nothing a test made may outlive the test run."""
    try:
        lab.down(name, home=home)
    finally:
        for ns in net.netns_list():
            if names.is_lab_netns(name, ns):
                procs.kill_all(procs.pids_in_netns(ns))
                net.ip(["netns", "del", ns], check=False)
        if net.link_exists(names.bridge_name(name)):
            net.ip(["link", "del", "dev", names.bridge_name(name)], check=False)


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Labs]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, bridge, mounts, sshd)")
    made = Labs(tmp_path_factory.mktemp("shoal-home"))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def lab3(labs: Labs) -> LabState:
    """One 3-node lab shared by a module's tests; each test leaves it as it found it."""
    return labs.up("m", 3)


def ssh(
    state: LabState, node: str, command: str, timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on ``node`` as the operator would: strict host keys, key auth only."""
    return subprocess.run(
        ["ssh", "-F", str(state.dir / "ssh_config"), "-o", "BatchMode=yes",
         "-o", "ConnectTimeout=3", node, command],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def in_node(state: LabState, node: str, code: str, *args: str) -> subprocess.Popen[str]:
    """Run a Python snippet inside a node's network namespace."""
    return subprocess.Popen(
        ["ip", "netns", "exec", state.node(node).netns, sys.executable, "-I", "-c", code, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


TCP_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 22), timeout=1).close()
    print("reachable")
except OSError as exc:
    print("unreachable", exc)
"""


def reaches(state: LabState, src: str, dst: str) -> bool:
    """Whether ``src`` can open a TCP connection to ``dst``'s sshd, from inside ``src``."""
    proc = in_node(state, src, TCP_PROBE, state.node(dst).address)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return out.startswith("reachable")


def lab_command(argv: list[str], out: io.StringIO, err: io.StringIO) -> int:
    """``shoal lab ARGV`` through the command registry, as the CLI and the REPL run it."""
    import asyncio

    from shell.batch import Line, run_lines
    from shell.commands import build_registry
    from shell.registry import Options

    line = Line(1, ["lab", *argv], " ".join(["lab", *argv]))
    return asyncio.run(run_lines(build_registry(), [line], Options(), out=out, err=err, where=None))
