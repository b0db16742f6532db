"""The text files a lab writes: sshd_config per node, and known_hosts, ssh_config, inventory and
/etc/hosts for the lab. Pure rendering, so their exact contents are easy to test and read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shell.lab.state import NodeState

# Paths as a node sees them, inside its private mount namespace.
NODE_SSHD_CONFIG = "/etc/ssh/sshd_config"
NODE_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
NODE_SSHD_PID = "/run/sshd.pid"


def _quote(path: Path | str) -> str:
    """ssh_config quoting: double quotes keep a path with spaces one argument."""
    text = str(path)
    if '"' in text or "\n" in text:
        raise ValueError(f"path not usable in ssh_config: {text!r}")
    return f'"{text}"'


def sshd_config(address: str) -> str:
    """A node's sshd: keys only, root by key, forwarding for the shell's control-socket tunnel."""
    return "\n".join(
        [
            "# Written by shoal lab; this node's sshd, as the node sees its own /etc/ssh.",
            f"ListenAddress {address}",
            "Port 22",
            f"HostKey {NODE_HOST_KEY}",
            f"PidFile {NODE_SSHD_PID}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "UseDNS no",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "AllowTcpForwarding yes",
            "AllowStreamLocalForwarding yes",
            "StreamLocalBindUnlink yes",
            "X11Forwarding no",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            # The shell opens many sessions at once during bootstrap and benchmarks.
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def known_hosts(entries: Sequence[tuple[NodeState, str]]) -> str:
    """One line per node, matching both its name and its address, so either verifies strictly."""
    return "".join(f"{n.name},{n.address} {pub}\n" for n, pub in entries)


def ssh_config(nodes: Sequence[NodeState], identity: Path, known: Path) -> str:
    lines = ["# Written by shoal lab: ssh -F <this file> node1", ""]
    for n in nodes:
        lines += [f"Host {n.name}", f"    HostName {n.address}", ""]
    patterns = " ".join([n.name for n in nodes] + [n.address for n in nodes])
    lines += [
        f"Host {patterns}",
        "    User root",
        f"    IdentityFile {_quote(identity)}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {_quote(known)}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    UpdateHostKeys no",
        "    LogLevel ERROR",
        "",
    ]
    return "\n".join(lines)


def inventory(nodes: Sequence[NodeState]) -> str:
    """The static inventory: ``name address`` per line, for places multicast does not reach."""
    return "".join(f"{n.name} {n.address}\n" for n in nodes)


def etc_hosts(nodes: Sequence[NodeState]) -> str:
    """Every node resolves every other node by name, as on a LAN with working DNS."""
    head = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    return head + "".join(f"{n.address}\t{n.name}\n" for n in nodes)
