"""``shoal -c`` and ``shoal run`` against a real 3-node lab cluster: output, JSON, exit codes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Shoal, needs_root

pytestmark = [needs_root, pytest.mark.timeout(600)]


def test_batch_commands_on_a_lab_cluster(shoal: Shoal, tmp_path: Path) -> None:
    lab = shoal.lab_up("b", 3)
    shoal.ok("cluster", "init", "--lab", lab.name)

    done = shoal.ok("-c", "kv put /a 1; kv get /a")
    assert done.stdout.splitlines()[-1] == "1"
    assert done.stdout.startswith("OK (revision ")

    done = shoal.ok("--json", "-c", "kv put /b two; kv get /b")
    put, got = (json.loads(line) for line in done.stdout.splitlines())
    assert put["header"]["revision"] >= 1
    assert base64.b64decode(got["kvs"][0]["value"]) == b"two"
    assert base64.b64decode(got["kvs"][0]["key"]) == b"/b"

    assert shoal.run("kv", "get", "/missing").returncode == 4
    assert shoal.run("kv", "get").returncode == 2
    assert shoal.run("-c", "kv gte /a").returncode == 2

    script = tmp_path / "script.shoal"
    script.write_text("# set and read\nkv put /s $1\nkv get /s\nkv get /nope\nkv put /x 1\n")
    done = shoal.run("run", str(script), "hello")
    assert done.returncode == 4
    assert done.stdout.splitlines()[-1] == "hello"
    assert "line 4 failed (exit 4)" in done.stderr
    keep = shoal.run("--keep-going", "run", str(script), "hello")
    assert keep.returncode == 4
    assert shoal.ok("kv", "get", "/x").stdout == "1\n"  # line 5 ran after the failure

    pids = lab.agent_pids()
    for node in sorted(pids)[:2]:
        shoal.ok("lab", "kill", "--name", lab.name, node)
    done = shoal.run("--timeout", "3", "-c", "kv get /a")
    assert done.returncode == 3, done.stderr
