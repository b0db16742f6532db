"""``shoal exec`` and ``shoal copy`` on a lab cluster, as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Shoal, needs_root

pytestmark = [needs_root, pytest.mark.timeout(600)]


def test_exec_and_copy_across_the_cluster(shoal: Shoal, tmp_path: Path) -> None:
    lab = shoal.lab_up("x", 3)
    shoal.ok("cluster", "init", "--lab", lab.name)

    live = shoal.ok("exec", "@all", "--", "hostname")
    assert sorted(live.stdout.split("\n")[:3]) == ["node1: node1", "node2: node2", "node3: node3"]

    # the user's shell already expanded the command line: $HOME reaches the node as typed
    remote_home = shoal.ok("exec", "node1", "--", "echo $HOME")
    assert remote_home.stdout.splitlines()[0] == "node1: /root"

    gathered = shoal.ok("exec", "-b", "@all", "--", "uname", "-s")
    assert "node[1-3] (3)" in gathered.stdout and "Linux" in gathered.stdout

    # exit codes: clush-like 0 without -S, the highest with it
    assert shoal.run("exec", "node[1-2]", "--", "sh", "-c", "exit 3").returncode == 0
    failing = shoal.run("exec", "-S", "node[1-2]", "--", "sh", "-c", "exit 3")
    assert failing.returncode == 3 and "node[1-2]: exited with exit code 3" in failing.stdout

    unknown = shoal.run("exec", "node9", "--", "true")
    assert unknown.returncode == 4 and "node9" in unknown.stderr

    local = tmp_path / "app.conf"
    local.write_text("setting = 1\n")
    assert "copied to node[1-3]" in shoal.ok("copy", str(local), "@all:/tmp/app.conf").stdout
    doc = json.loads(shoal.ok("--json", "exec", "-b", "@all", "--", "cat", "/tmp/app.conf").stdout)
    assert [r["stdout"] for r in doc["results"]] == ["setting = 1\n"] * 3

    # a machine that is gone gets a line naming it; the others answer
    shoal.ok("lab", "crash", "--name", lab.name, "node3")
    partial = shoal.run("--timeout", "3", "exec", "@all", "--", "hostname")
    assert "node1: node1" in partial.stdout and "node2: node2" in partial.stdout
    assert "node3:" in partial.stdout and "timed out" in partial.stdout
