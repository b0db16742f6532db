"""The lab's pure parts — names, node sets, rendered files, lab.json — and its refusal without
root. None of these needs root, so they run everywhere.
"""

from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path

import pytest

from shell.lab import names, nodeset, paths, state
from shell.lab.errors import LabError, NeedsRoot
from shell.lab.files import known_hosts, ssh_config, sshd_config
from shell.lab.requirements import check_root
from shell.lab.state import LabState, NodeState
from tests.lab.conftest import lab_command


def test_interface_names_fit_ifnamsiz_for_any_lab_name() -> None:
    for lab in ("a", "x" * 32, "lab-with-a-long-name_1"):
        assert len(names.bridge_name(lab)) <= names.IFNAMSIZ
        assert len(names.veth_name(lab, names.MAX_NODES)) <= names.IFNAMSIZ
    assert names.bridge_name("a") != names.bridge_name("b")


def test_a_lab_never_claims_another_labs_namespaces() -> None:
    assert names.is_lab_netns("a", "shoal-a-node1")
    assert not names.is_lab_netns("a", "shoal-a-b-node1")
    assert not names.is_lab_netns("a", "shoal-a-node1x")
    assert not names.is_lab_netns("a-node1", "shoal-a-node1")


def test_addresses_stay_in_the_benchmarking_range() -> None:
    net0, net1 = names.subnet(0), names.subnet(1)
    assert str(net0) == "198.18.0.0/24" and str(net1) == "198.18.1.0/24"
    assert str(names.subnet(256)) == "198.19.0.0/24"
    assert str(names.host_address(net1)) == "198.18.1.1"
    assert str(names.node_address(net1, 1)) == "198.18.1.2"
    assert all(names.subnet(k).subnet_of(names.LAB_RANGE) for k in (0, 255, 511))
    with pytest.raises(ValueError):
        names.subnet(names.MAX_LABS)


def test_first_free_slot_skips_used_networks_but_not_the_default_route() -> None:
    used = [ipaddress.IPv4Network("198.18.0.0/24"), ipaddress.IPv4Network("10.0.0.0/8")]
    assert names.first_free_slot(used) == 1
    assert names.first_free_slot([ipaddress.IPv4Network("198.18.0.0/15")]) is None


def test_node_sets_expand_ranges_and_lists() -> None:
    assert nodeset.expand("node[1-3],node5") == ["node1", "node2", "node3", "node5"]
    assert nodeset.expand("node[1-3,5],x") == ["node1", "node2", "node3", "node5", "x"]
    with pytest.raises(LabError, match="bad node set"):
        nodeset.expand("node[1-")
    assert nodeset.select("node[3,1]", ["node1", "node2", "node3"]) == ["node1", "node3"]
    with pytest.raises(LabError, match="no such node in this lab: node9"):
        nodeset.select("node9", ["node1", "node2"])


def _lab(tmp: Path) -> LabState:
    nodes = [
        NodeState(f"node{i}", i, f"198.18.0.{i + 1}", f"shoal-x-node{i}", f"shvabc-{i}")
        for i in (1, 2)
    ]
    return LabState("x", str(tmp), "198.18.0.0/24", "198.18.0.1", "shb-abc", nodes)


def test_lab_json_round_trips_and_is_private(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    lab.routes = [["node1", "198.18.0.3"]]
    state.save(lab)
    assert (tmp_path / "lab.json").stat().st_mode & 0o777 == 0o600
    data = LabState.from_json(json.loads((tmp_path / "lab.json").read_text()))
    assert data == lab


def test_rendered_ssh_files_verify_by_name_and_address(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    kh = known_hosts([(n, "ssh-ed25519 AAAA") for n in lab.nodes])
    assert kh.splitlines()[0] == "node1,198.18.0.2 ssh-ed25519 AAAA"
    cfg = ssh_config(lab.nodes, tmp_path / "id ed25519", tmp_path / "known_hosts")
    assert "Host node2\n    HostName 198.18.0.3" in cfg
    assert "StrictHostKeyChecking yes" in cfg and f'"{tmp_path}/id ed25519"' in cfg
    sshd = sshd_config("198.18.0.2")
    for line in (
        "ListenAddress 198.18.0.2",
        "PasswordAuthentication no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "AllowStreamLocalForwarding yes",
    ):
        assert line in sshd.splitlines()


def test_bad_lab_names_are_refused() -> None:
    for bad in ("", "../x", "Has Space", "-x", "x" * 33):
        with pytest.raises(LabError, match="bad lab name"):
            paths.check_lab_name(bad)


def test_shoal_home_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    assert paths.shoal_home() == tmp_path
    assert paths.lab_dir("a") == tmp_path / "labs" / "a"
    monkeypatch.delenv("SHOAL_HOME")
    assert paths.shoal_home() == Path.home() / ".shoal"


def test_without_root_it_says_what_it_needs_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(NeedsRoot, match=r"needs root: it creates network namespaces"):
        check_root("up", euid=1000)
    check_root("up", euid=0)
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    out, err = io.StringIO(), io.StringIO()
    assert lab_command(["up", "--nodes", "2"], out, err) == 1
    assert "`shoal lab up` needs root" in err.getvalue()
    assert "uid 1000" in err.getvalue() and "Nothing was changed" in err.getvalue()
    assert list(tmp_path.iterdir()) == []
    assert lab_command(["partition", "node1"], out, err) == 1
    assert "`shoal lab partition` needs root" in err.getvalue()
