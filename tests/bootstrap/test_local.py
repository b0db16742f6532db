"""The local parts of bootstrap: the zipapp, the cluster state on disk, known_hosts parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
import zipfile
from pathlib import Path

import asyncssh
import pytest

from shell import clusterstate, knownhosts, pki
from shell.clusterstate import NodeSpec, StateError
from shell.zipapp import build_agent_zipapp


def test_zipapp_is_content_named_deterministic_and_runs(tmp_path: Path) -> None:
    first = build_agent_zipapp(tmp_path / "a")
    second = build_agent_zipapp(tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    assert first.name.startswith("shoal-agent-") and len(first.stem.split("-")[-1]) == 12
    assert build_agent_zipapp(tmp_path / "a") == first  # cached
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert "__main__.py" in names and "agent/raft/__init__.py" in names
    assert not any("__pycache__" in n for n in names)
    out = subprocess.run(
        [sys.executable, str(first), "--version"], capture_output=True, text=True, check=True
    )
    assert "shoal agent" in out.stdout
    ctl = subprocess.run([sys.executable, str(first), "ctl", "--help"], capture_output=True)
    assert ctl.returncode == 0
    bridge = subprocess.run(
        [sys.executable, str(first), "bridge", str(tmp_path / "no.sock")],
        capture_output=True,
        text=True,
    )
    assert bridge.returncode == 1 and "cannot connect" in bridge.stderr


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "n1; rm -rf /"},
        {"host": "$(reboot)"},
        {"host": "-oProxyCommand=x"},
        {"user": "root x"},
        {"remote_base": "relative/path"},
        {"remote_base": "/"},
        {"remote_base": "/var/lib/../x"},
        {"remote_base": "/tmp/a b"},
        {"python": "python3; id"},
        {"metadata": {"region": "eu west"}},
        {"ssh_port": 0},
    ],
)
def test_node_specs_refuse_anything_that_could_become_shell_syntax(bad: dict) -> None:
    spec = {"id": "n1", "host": "10.0.0.1", **bad}
    with pytest.raises(StateError):
        NodeSpec(**spec).validate()


def test_cluster_state_is_private_and_round_trips(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = clusterstate.create(home, "prod", pki.create_ca("prod"))
    state.nodes = [
        NodeSpec("n1", "10.0.0.1", metadata={"region": "eu"}).resolved(
            peer_port=7400, remote_base="/var/lib/shoal"
        )
    ]
    state.save()
    clusterstate.set_current(home, "prod")
    loaded = clusterstate.load(home, "prod")
    assert loaded.nodes == state.nodes and loaded.cluster_id == state.cluster_id
    assert loaded.nodes[0].peer_address == "10.0.0.1:7400"
    assert pki.cluster_identity(loaded.ca().cert_pem).cluster_id == loaded.cluster_id
    assert clusterstate.current(home) == "prod" and clusterstate.names(home) == ["prod"]
    for path in (home, home / "clusters" / "prod", home / "clusters" / "prod" / "ca"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    for path in (home / "current", home / "clusters" / "prod" / "cluster.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    with pytest.raises(pki.PKIError):  # never silently replace a cluster's CA
        clusterstate.create(home, "prod", pki.create_ca("prod"))
    clusterstate.remove(home, "prod")
    assert clusterstate.current(home) is None and not clusterstate.exists(home, "prod")


def test_damaged_state_with_an_unsafe_path_is_refused(tmp_path: Path) -> None:
    state = clusterstate.create(tmp_path, "c", pki.create_ca("c"))
    state.nodes = [NodeSpec("n1", "h1", remote_base="/srv/shoal", peer_port=1)]
    state.save()
    path = state.root / "cluster.json"
    path.write_text(path.read_text().replace("/srv/shoal", "/srv/$(id)"))
    with pytest.raises(StateError, match="damaged"):
        clusterstate.load(tmp_path, "c")


def test_known_hosts_lookup_handles_ports_hashes_wildcards_and_markers(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    pub = key.export_public_key("openssh").decode().split()
    line = f"{pub[0]} {pub[1]}"
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, b"[db.example]:2222", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    path = tmp_path / "known_hosts"
    path.write_text(
        "\n".join(
            [
                "# comment",
                f"web1,web2 {line}",
                f"[127.0.0.1]:2200 {line}",
                f"{hashed} {line}",
                f"*.example,!bad.example {line}",
                f"@revoked old.example {line}",
                "garbage",
            ]
        )
    )
    assert [k.line for k in knownhosts.lookup(path, "web2", 22)] == [2]
    assert [k.line for k in knownhosts.lookup(path, "127.0.0.1", 2200)] == [3]
    assert knownhosts.lookup(path, "127.0.0.2", 2200) == []  # '[' is not a character class
    assert [k.line for k in knownhosts.lookup(path, "db.example", 2222)] == [4]
    assert [k.line for k in knownhosts.lookup(path, "www.example", 22)] == [5]
    assert knownhosts.lookup(path, "bad.example", 22) == []
    assert [(k.line, k.marker) for k in knownhosts.lookup(path, "old.example", 22)] == [
        (5, ""),
        (6, "@revoked"),
    ]
    assert knownhosts.append(path, "new", 22, key) == 8
    assert [k.line for k in knownhosts.lookup(path, "new", 22)] == [8]
    assert knownhosts.lookup(tmp_path / "missing", "x", 22) == []
