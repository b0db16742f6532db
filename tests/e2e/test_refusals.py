"""What ``cluster init`` refuses, and how it says so: a host whose key changed (the machine was
reinstalled, or someone is in the middle), a host not yet known (refused with its fingerprint
unless --accept-new), and a machine without python3 (a clear error naming the node).

A refusal must leave the machines untouched: no agent installed anywhere, not even on the nodes
that were fine.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from shell import bootstrap
from shell.clusteraccess import SSHSettings
from shell.clusterstate import NodeSpec
from shell.lab.nodes import installed_agent
from tests.e2e.conftest import E2ELab, Shoal, needs_root

pytestmark = needs_root


@pytest.fixture(scope="module")
def lab(shoal: Shoal) -> E2ELab:
    return shoal.lab_up("k", 3)


def nothing_installed(lab: E2ELab) -> bool:
    state = lab.state
    return all(installed_agent(state.node_dir(n.name)) is None for n in state.nodes) and all(
        n["agent"] == "not installed" for n in lab.status()["nodes"]
    )


def regenerate_host_key(lab: E2ELab, node: str, tmp: Path) -> str:
    """Give ``node`` a new host key, as a reinstall would; its new fingerprint.

    sshd re-executes itself for every connection and reads its host key again, so the next
    connection presents the new key."""
    new = tmp / f"{node}-new-key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{node}", "-f", str(new)],
        check=True,
    )
    etc = lab.state.node_dir(node) / "etc-ssh"
    shutil.copyfile(new, etc / "ssh_host_ed25519_key")
    shutil.copyfile(f"{new}.pub", etc / "ssh_host_ed25519_key.pub")
    return lab.host_key_fingerprint(node)


def test_a_host_whose_key_changed_is_refused(shoal: Shoal, lab: E2ELab, tmp_path: Path) -> None:
    etc = lab.state.node_dir("node2") / "etc-ssh"
    backup = {p.name: p.read_bytes() for p in etc.glob("ssh_host_ed25519_key*")}
    known_hosts = lab.dir / "known_hosts"
    known_before = known_hosts.read_text()
    old = lab.host_key_fingerprint("node2")
    try:
        new = regenerate_host_key(lab, "node2", tmp_path)
        assert new != old
        # OpenSSH agrees that it changed (so this test is about a real change)
        assert lab.ssh("node2", "true").returncode == 255

        for extra in ([], ["--accept-new"]):  # --accept-new never accepts a *changed* key
            done = shoal.run("cluster", "init", "node[1-3]", "--lab", lab.name, *extra)
            assert done.returncode == 1, (extra, done.stdout, done.stderr)
            err = done.stderr
            assert "node2: the host key of" in err and "CHANGED" in err, err
            assert new in err, err  # the key it saw
            assert f"{known_hosts}:2" in err, err  # the line to check
            assert "node1:" not in err.replace("node1: connecting", "")
            assert known_hosts.read_text() == known_before
            assert nothing_installed(lab)
    finally:
        for name, data in backup.items():
            (etc / name).write_bytes(data)
    assert lab.ssh("node2", "true").returncode == 0


def test_an_unknown_host_is_refused_with_its_fingerprint_until_accepted(
    shoal: Shoal, lab: E2ELab
) -> None:
    known_hosts = lab.dir / "known_hosts"
    address = lab.state.node("node3").address
    lines = known_hosts.read_text().splitlines(keepends=True)
    known_hosts.write_text("".join(line for line in lines if not line.startswith("node3,")))
    fingerprint = lab.host_key_fingerprint("node3")

    done = shoal.run("cluster", "init", "node[1-3]", "--lab", lab.name)
    assert done.returncode == 1, (done.stdout, done.stderr)
    err = done.stderr
    assert f"node3: the host key of {address} is not known" in err, err
    assert f"fingerprint {fingerprint}" in err, err
    assert "--accept-new" in err, err
    assert "node2: the host key" not in err and "node1: the host key" not in err
    assert nothing_installed(lab)
    assert address not in known_hosts.read_text()  # refused means not recorded

    accepted = shoal.ok("cluster", "init", "node[1-3]", "--lab", lab.name, "--accept-new")
    assert "is up: node1, node2, node3" in accepted.stdout, accepted.stdout
    recorded = [line for line in known_hosts.read_text().splitlines() if address in line]
    assert len(recorded) == 1
    pub = (lab.state.node_dir("node3") / "etc-ssh" / "ssh_host_ed25519_key.pub").read_text()
    assert recorded[0].split()[1:3] == pub.split()[:2]  # the node's real key was recorded
    # now known: no --accept-new needed, and nothing to do
    again = shoal.json("cluster", "init", "node[1-3]", "--lab", lab.name)
    assert again["changed"] is False


HIDE_PYTHON = r"""
import ctypes, os
libc = ctypes.CDLL("libc.so.6", use_errno=True)

def mount(src, dst, fstype, flags, data):
    if libc.mount(src.encode(), dst.encode(), fstype and fstype.encode(), flags,
                  data and data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")

# /usr/bin as it really is stays reachable under the node's private /run; /usr/bin itself
# becomes a tmpfs of links to everything in it except python*. /bin is a link to /usr/bin.
real = "/run/e2e-real-usr-bin"
os.makedirs(real, exist_ok=True)
mount("/usr/bin", real, None, 4096, None)  # MS_BIND
mount("tmpfs", "/usr/bin", "tmpfs", 0, "mode=755")
for name in os.listdir(real):
    if not name.startswith("python"):
        os.symlink(os.path.join(real, name), os.path.join("/usr/bin", name))
"""


def hide_python3(lab: E2ELab, node: str) -> None:
    """Make ``node`` a machine without python3, inside its own mount namespace only.

    The node's keeper (its sshd) runs in a private mount namespace; mounts made there never
    reach the host, and go away with the node."""
    keeper = lab.state.node(node).sshd_pid
    assert keeper is not None
    assert Path("/bin").resolve() == Path("/usr/bin"), "this test expects a merged /usr"
    subprocess.run(
        ["nsenter", f"--target={keeper}", "--mount", "--", "/usr/bin/python3", "-I", "-S",
         "-c", HIDE_PYTHON],
        check=True, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_a_node_without_python3_gets_a_clear_error_naming_it(shoal: Shoal) -> None:
    lab = shoal.lab_up("p", 2)
    hide_python3(lab, "node2")
    probe = lab.ssh("node2", "python3 --version")
    assert probe.returncode == 127, (probe.stdout, probe.stderr)
    assert lab.ssh("node1", "python3 --version").returncode == 0  # only node2 lost it
    assert subprocess.run(["/usr/bin/python3", "-c", "pass"], check=False).returncode == 0

    done = shoal.run("cluster", "init", "--lab", lab.name)
    assert done.returncode == 1, (done.stdout, done.stderr)
    err = done.stderr
    address = lab.state.node("node2").address
    assert f"node2: python3 was not found on {address}" in err, err
    assert "install python3 (3.11+)" in err, err
    assert "node1: " not in err.replace("node1: connecting", "")
    assert nothing_installed(lab)


def test_a_python_path_that_does_not_exist_is_named_too(shoal: Shoal, lab: E2ELab) -> None:
    """The library route: a node whose configured interpreter is missing."""
    state = lab.state
    spec = NodeSpec(
        id="node1",
        host=state.node("node1").address,
        python="/opt/e2e-missing/bin/python3",
    )
    pool = SSHSettings(str(lab.dir / "known_hosts"), [str(lab.dir / "id_ed25519")]).pool()

    async def attempt() -> None:
        try:
            await bootstrap.init_cluster(
                [spec], name="missing-python", pool=pool, state_root=shoal.home / "lib"
            )
        finally:
            await pool.close()

    with pytest.raises(bootstrap.BootstrapError) as failed:
        asyncio.run(attempt())
    assert set(failed.value.failures) == {"node1"}
    message = failed.value.failures["node1"]
    assert message.startswith("node1: /opt/e2e-missing/bin/python3 was not found"), message
