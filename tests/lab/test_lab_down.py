"""``lab down`` removes every namespace, link, process and file the lab made, and is safe to
repeat; a lab whose lab.json is lost is still removed, from names derived from the lab name.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from shell.lab import down, names, net, procs
from shell.lab.errors import LabError
from shell.lab.lab import up
from shell.lab.state import LabState, NodeState
from tests.lab.conftest import Labs, lab_command, lab_name, needs_root, ssh

pytestmark = needs_root


def _assert_gone(lab: LabState, pids: list[int]) -> None:
    assert not [ns for ns in net.netns_list() if names.is_lab_netns(lab.name, ns)]
    assert not net.link_exists(lab.bridge)
    assert not any(net.link_exists(n.veth) for n in lab.nodes)
    assert not [p for p in pids if procs.alive(p)]
    assert not lab.dir.exists()
    if lab.host_address:
        assert f"inet {lab.host_address}/" not in net.ip(["-4", "addr", "show"])


def test_down_leaves_nothing_behind_and_is_safe_to_repeat(
    labs: Labs, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = labs.up("d", 2)
    started = ssh(lab, "node1", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
    worker = int(started.stdout.strip())
    pids = [worker, *(n.sshd_pid for n in lab.nodes if n.sshd_pid)]
    assert all(procs.alive(p) for p in pids)

    monkeypatch.setenv("SHOAL_HOME", str(labs.home))
    out, err = io.StringIO(), io.StringIO()
    assert lab_command(["down", "--name", lab.name], out, err) == 0, err.getvalue()
    # At least sshd on both nodes and the worker (an SSH session may still be closing).
    removed = re.search(r"removed: 2 namespaces, 1 bridge, (\d+) processes", out.getvalue())
    assert removed and int(removed.group(1)) >= 3, out.getvalue()
    _assert_gone(lab, pids)

    again = io.StringIO()
    assert lab_command(["down", "--name", lab.name], again, err) == 0
    assert again.getvalue().strip() == f"no lab named {lab.name!r}: nothing to remove"
    assert lab_command(["status", "--name", lab.name], io.StringIO(), err) == 1
    assert f"no lab named {lab.name!r}" in err.getvalue()


def test_down_without_lab_json_still_removes_the_lab(labs: Labs) -> None:
    lab = labs.up("j", 1)
    pids = [n.sshd_pid for n in lab.nodes if n.sshd_pid]
    (lab.dir / "lab.json").unlink()
    report = down(lab.name, home=labs.home)
    assert report.found and report.namespaces == [lab.nodes[0].netns]
    _assert_gone(lab, pids)


def test_down_leaves_the_mount_point_only_while_another_lab_needs_it(labs: Labs) -> None:
    first = labs.up("v", 1)
    second = labs.up("w", 1)
    assert Path("/var/lib/shoal").is_dir()
    down(first.name, home=labs.home)
    assert Path("/var/lib/shoal").is_dir()  # the second lab's node still mounts onto it
    assert ssh(second, "node1", "ls -d /var/lib/shoal").returncode == 0
    down(second.name, home=labs.home)
    if first.made_var_lib_shoal and not [n for n in net.netns_list() if n.startswith("shoal-")]:
        assert not Path("/var/lib/shoal").exists()


def test_a_failed_up_removes_what_it_had_made(labs: Labs, monkeypatch: pytest.MonkeyPatch) -> None:
    """If sshd never comes up, nothing half-built is left: no namespaces, links, processes."""
    keepers: list[int] = []

    def never_ready(nodes: list[tuple[NodeState, object, Path]], **_: object) -> None:
        keepers.extend(n.sshd_pid for n, _, _ in nodes if n.sshd_pid)
        raise LabError("sshd did not start (simulated)")

    monkeypatch.setattr("shell.lab.lab.wait_ready", never_ready)
    name = lab_name("f")
    labs.names.append(name)
    with pytest.raises(LabError, match="simulated"):
        up(name, 2, home=labs.home)
    assert len(keepers) == 2
    probe = LabState(name, str(labs.home / "labs" / name), "", "", names.bridge_name(name), [])
    _assert_gone(probe, keepers)
