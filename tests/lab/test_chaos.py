"""Chaos in the lab: partitions cut exactly the links asked for; crash loses the whole machine
and restore boots it again, agent included; kill/pause/resume act on the node's agent by PID.

The agent here is a stand-in zipapp installed the way the bootstrap installs the real one
(/var/lib/shoal/*.pyz, agent.toml, data/LOCK with its PID): these tests are about the lab's
process handling, which is the same for any program started that way.
"""

from __future__ import annotations

import io
import time
import zipapp
from pathlib import Path

import pytest

from shell.lab import crash, heal, kill, partition, pause, procs, restore, resume, status
from shell.lab.errors import LabError
from shell.lab.nodes import sshd_answers
from shell.lab.state import LabState
from tests.lab.conftest import Labs, lab_command, needs_root, reaches, ssh

pytestmark = needs_root

FAKE_AGENT = """
import os, sys, time
os.makedirs("/var/lib/shoal/data", exist_ok=True)
with open("/var/lib/shoal/data/LOCK", "w") as f:
    f.write(f"{os.getpid()}\\n")
with open("/var/lib/shoal/booted", "a") as f:
    f.write(" ".join(sys.argv[1:]) + " on " + os.uname().nodename + "\\n")
time.sleep(3600)
"""


def _wait(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _install_fake_agent(lab: LabState, node: str, tmp: Path) -> Path:
    src = tmp / "fakeagent"
    src.mkdir()
    (src / "__main__.py").write_text(FAKE_AGENT)
    base = lab.node_dir(node) / "var-lib-shoal"
    zipapp.create_archive(src, base / "shoal-agent-0.1.0.pyz")
    (base / "agent.toml").write_text("# stand-in\n")
    return base


def test_partition_cuts_only_the_named_links_and_heal_restores_them(
    lab3: LabState, labs: Labs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(labs.home))
    assert reaches(lab3, "node1", "node2")
    out, err = io.StringIO(), io.StringIO()
    try:
        assert (
            lab_command(["partition", "node1", "--from", "node2", "--name", lab3.name], out, err)
            == 0
        )
        assert "cut node1 off from node2 (2 blackhole routes" in out.getvalue()
        assert not reaches(lab3, "node1", "node2")
        assert not reaches(lab3, "node2", "node1")
        assert reaches(lab3, "node3", "node2") and reaches(lab3, "node1", "node3")
        st = status(lab3.name, home=labs.home)
        assert [n.cut_off_from for n in st.nodes] == [["node2"], ["node1"], []]
        # The operator keeps SSH to every node while they are cut off from each other.
        assert ssh(lab3, "node1", "hostname").stdout.strip() == "node1"
    finally:
        assert lab_command(["heal", "--name", lab3.name], out, err) == 0, err.getvalue()
    assert "removed 2 blackhole routes" in out.getvalue()
    assert reaches(lab3, "node1", "node2") and reaches(lab3, "node2", "node1")
    assert heal(lab3.name, home=labs.home) == 0


def test_partition_of_a_node_set_from_the_rest(lab3: LabState, labs: Labs) -> None:
    try:
        rep = partition(lab3.name, "node[1-2]", home=labs.home)
        assert (rep.nodes, rep.cut_from, rep.routes_added) == (["node1", "node2"], ["node3"], 4)
        assert reaches(lab3, "node1", "node2")
        assert not reaches(lab3, "node3", "node1") and not reaches(lab3, "node2", "node3")
        with pytest.raises(LabError, match="both sides"):
            partition(lab3.name, "node1", "node[1-2]", home=labs.home)
        with pytest.raises(LabError, match="no such node in this lab: node7"):
            partition(lab3.name, "node7", home=labs.home)
    finally:
        assert heal(lab3.name, home=labs.home) == 4
    assert reaches(lab3, "node3", "node1")


def test_agent_kill_pause_resume_act_on_the_agent_pid(
    lab3: LabState, labs: Labs, tmp_path: Path
) -> None:
    base = _install_fake_agent(lab3, "node2", tmp_path)
    # A newer, broken zipapp next to it: restore must run the one the bootstrap's marker names.
    (base / "shoal-agent-newer.pyz").write_bytes(b"not a zipapp")
    (base / "node.json").write_text('{"pyz": "shoal-agent-0.1.0.pyz"}')
    try:
        assert status(lab3.name, home=labs.home).nodes[1].agent == "not running"
        with pytest.raises(LabError, match="no agent is running on node2"):
            kill(lab3.name, "node2", home=labs.home)
        rep = restore(lab3.name, "node2", home=labs.home)
        assert not rep.sshd_started and rep.agent_started and rep.agent_pid
        pid = rep.agent_pid
        _wait(lambda: status(lab3.name, home=labs.home).nodes[1].agent == "running", "agent")
        assert (base / "booted").read_text() == (
            "serve --config /var/lib/shoal/agent.toml on node2\n"
        )
        assert pause(lab3.name, "node2", home=labs.home) == pid
        _wait(lambda: status(lab3.name, home=labs.home).nodes[1].agent == "paused", "pause")
        assert resume(lab3.name, "node2", home=labs.home) == pid
        _wait(lambda: status(lab3.name, home=labs.home).nodes[1].agent == "running", "resume")
        assert kill(lab3.name, "node2", home=labs.home) == pid
        assert not procs.alive(pid)
        assert status(lab3.name, home=labs.home).nodes[1].agent == "not running"
    finally:
        for p in procs.pids_in_netns(lab3.node("node2").netns):
            if p != lab3.node("node2").sshd_pid:
                procs.kill_all([p])


def test_crash_loses_the_whole_node_and_restore_boots_it(
    lab3: LabState, labs: Labs, tmp_path: Path
) -> None:
    base = _install_fake_agent(lab3, "node3", tmp_path)
    first = restore(lab3.name, "node3", home=labs.home)
    assert first.agent_started
    started = ssh(lab3, "node3", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
    worker = int(started.stdout.strip())
    old_sshd = status(lab3.name, home=labs.home).nodes[2].sshd_pid
    assert old_sshd is not None

    rep = crash(lab3.name, "node3", home=labs.home)
    assert {old_sshd, worker, first.agent_pid} <= set(rep.killed)
    assert not any(procs.alive(p) for p in rep.killed)
    assert procs.pids_in_netns(lab3.node("node3").netns) == []
    assert not sshd_answers(lab3.node("node3").address, timeout=0.5)
    node3 = status(lab3.name, home=labs.home).nodes[2]
    assert (node3.sshd, node3.agent) == ("down", "not running")
    assert not reaches(lab3, "node1", "node3")

    again = restore(lab3.name, "node3", home=labs.home)
    assert again.sshd_started and again.agent_started
    assert ssh(lab3, "node3", "hostname").stdout.strip() == "node3"
    assert reaches(lab3, "node1", "node3")
    _wait(lambda: status(lab3.name, home=labs.home).nodes[2].agent == "running", "agent")
    assert (base / "booted").read_text().count("on node3") == 2
    kill(lab3.name, "node3", home=labs.home)
    # On a node whose sshd is up, restore only boots the missing agent.
    third = restore(lab3.name, "node3", home=labs.home)
    assert (third.sshd_started, third.agent_started) == (False, True)
    assert third.sshd_pid == again.sshd_pid
    kill(lab3.name, "node3", home=labs.home)
