"""``lab up``: real machines in namespaces — reachable by name over strictly verified SSH, each
with its own host name, /tmp and /root, and multicast (mDNS) flooding across the bridge.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from shell.lab import lab, status
from shell.lab.state import LabState
from tests.lab.conftest import Labs, in_node, lab_command, needs_root, ssh

pytestmark = needs_root


def test_status_lists_every_node_with_its_address(lab3: LabState, labs: Labs) -> None:
    st = status(lab3.name, home=labs.home)
    net = lab3.subnet.rsplit(".", 1)[0]
    assert [(n.name, n.address, n.sshd) for n in st.nodes] == [
        ("node1", f"{net}.2", "up"),
        ("node2", f"{net}.3", "up"),
        ("node3", f"{net}.4", "up"),
    ]
    inventory = (lab3.dir / "inventory").read_text().splitlines()
    assert inventory == [f"node{i} {net}.{i + 1}" for i in (1, 2, 3)]


def test_ssh_reaches_node2_by_name_with_strict_host_keys(lab3: LabState) -> None:
    result = ssh(lab3, "node2", "hostname; uname -n; cat /etc/hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["node2", "node2", "node2"]
    by_address = ssh(lab3, lab3.node("node3").address, "hostname")
    assert by_address.stdout.strip() == "node3", by_address.stderr


def test_a_wrong_host_key_is_refused(lab3: LabState, tmp_path: Path) -> None:
    """Strict checking is real: with node1's key filed under node2, ssh refuses node2."""
    lines = (lab3.dir / "known_hosts").read_text().splitlines()
    key1 = lines[0].split(" ", 1)[1]
    forged = tmp_path / "known_hosts"
    forged.write_text(f"node2,{lab3.node('node2').address} {key1}\n")
    result = subprocess.run(
        ["ssh", "-F", str(lab3.dir / "ssh_config"), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={forged}", "node2", "hostname"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "host key" in result.stderr.lower() and "node2" not in result.stdout


def test_nodes_have_private_tmp_root_and_var_lib_shoal(lab3: LabState) -> None:
    marker = f"marker-{os.getpid()}"
    wrote = ssh(lab3, "node1", f"echo hello > /tmp/{marker} && echo x > /var/lib/shoal/{marker}")
    assert wrote.returncode == 0, wrote.stderr
    seen = ssh(lab3, "node2", f"ls /tmp/{marker} /var/lib/shoal/{marker}")
    assert seen.returncode != 0 and "No such file" in seen.stderr
    assert (lab3.node_dir("node1") / "tmp" / marker).read_text() == "hello\n"
    assert not (Path("/tmp") / marker).exists()
    home = ssh(lab3, "node3", "ls -A /root; echo; ls -A /root/.ssh")
    assert ".pyenv" not in home.stdout.split() and "authorized_keys" in home.stdout.split()


MCAST_RECEIVE = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 5353))
mreq = struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton(sys.argv[1]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.settimeout(5)
print("ready", flush=True)
data, addr = s.recvfrom(1500)
print(data.decode(), addr[0], flush=True)
"""

MCAST_SEND = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
for _ in range(5):
    s.sendto(b"hello-mdns", ("224.0.0.251", 5353))
    time.sleep(0.05)
"""


def test_multicast_crosses_the_bridge(lab3: LabState) -> None:
    """An mDNS datagram from node1 reaches listeners on node2 and node3, from node1's address."""
    receivers = [in_node(lab3, n, MCAST_RECEIVE, lab3.node(n).address) for n in ("node2", "node3")]
    try:
        for r in receivers:
            assert r.stdout is not None and r.stdout.readline().strip() == "ready"
        sender = in_node(lab3, "node1", MCAST_SEND)
        assert sender.wait(timeout=10) == 0
        for r in receivers:
            out, err = r.communicate(timeout=10)
            assert out.split() == ["hello-mdns", lab3.node("node1").address], err
    finally:
        for r in receivers:
            if r.poll() is None:
                r.kill()
                r.communicate()


HOST_MCAST_PORT = 53530  # not 5353: the host's own mDNS listeners need not see test packets


def test_the_host_hears_node_multicast_on_the_bridge(lab3: LabState) -> None:
    """The operator's shell browses mDNS by joining the group on the bridge's address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("224.0.0.251", HOST_MCAST_PORT))
        group = socket.inet_aton("224.0.0.251") + socket.inet_aton(lab3.host_address)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
        sock.settimeout(5)
        sender = in_node(lab3, "node2", MCAST_SEND.replace("5353", str(HOST_MCAST_PORT)))
        assert sender.wait(timeout=10) == 0
        data, (source, _) = sock.recvfrom(1500)
        assert (data, source) == (b"hello-mdns", lab3.node("node2").address)
    finally:
        sock.close()


def test_state_files_are_private(lab3: LabState) -> None:
    assert stat.S_IMODE(lab3.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((lab3.dir / "nodes").stat().st_mode) == 0o700
    for name in ("id_ed25519", "lab.json", "known_hosts", "ssh_config", "inventory"):
        assert stat.S_IMODE((lab3.dir / name).stat().st_mode) == 0o600, name
    key = lab3.node_dir("node1") / "etc-ssh" / "ssh_host_ed25519_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_up_on_an_existing_lab_says_so(
    lab3: LabState, labs: Labs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(labs.home))
    out, err = io.StringIO(), io.StringIO()
    assert lab_command(["up", "--name", lab3.name], out, err) == 1
    assert f"lab {lab3.name!r} already exists (3 nodes" in err.getvalue()
    assert status(lab3.name, home=labs.home).nodes[0].sshd == "up"


def test_two_labs_coexist_and_progress_is_shown(lab3: LabState, labs: Labs) -> None:
    messages: list[str] = []
    name = f"{lab3.name}b"
    labs.names.append(name)
    other = lab.up(name, 2, home=labs.home, progress=messages.append)
    assert other.subnet != lab3.subnet and other.bridge != lab3.bridge
    assert any("sshd ready on node2" in m for m in messages), messages
    assert messages[-1].startswith(f"lab {name!r} is up: 2 nodes")
    assert ssh(other, "node2", "hostname").stdout.strip() == "node2"
    assert ssh(lab3, "node2", "hostname").stdout.strip() == "node2"
    lab.down(name, home=labs.home)
    assert ssh(lab3, "node1", "hostname").stdout.strip() == "node1"
