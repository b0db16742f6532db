"""The lab's network, through iproute2 only: namespaces, one bridge, a veth per node, routes.

Commands go to ``ip -batch`` so a 16-node lab costs a handful of processes, not a hundred. Every
token is checked to be a single word before it is written to a batch (batch files are split on
whitespace, never interpreted by a shell).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Sequence

from shell.lab.errors import LabError
from shell.lab.names import MULTICAST_NET, NODE_IFNAME

Command = Sequence[str]


def _check_token(tok: str) -> str:
    if not tok or any(c.isspace() for c in tok) or tok.startswith("#") or '"' in tok:
        raise ValueError(f"unsafe token for ip -batch: {tok!r}")
    return tok


def ip(args: Command, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def ip_batch(commands: Sequence[Command], netns: str | None = None, force: bool = False) -> str:
    """Run many ip commands in one process; ``force`` carries on past errors (for cleanup)."""
    if not commands:
        return ""
    script = "".join(" ".join(_check_token(t) for t in c) + "\n" for c in commands)
    argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else []), "-batch", "-"]
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and not force:
        raise LabError(f"ip -batch failed{' in ' + netns if netns else ''}: {proc.stderr.strip()}")
    return proc.stderr


def netns_list() -> list[str]:
    out = ip(["-j", "netns", "list"], check=False).strip()
    if not out:
        return []
    try:
        return [str(e["name"]) for e in json.loads(out)]
    except (ValueError, KeyError, TypeError):
        return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return bool(ip(["-j", "link", "show", "dev", name], check=False).strip())


def used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Networks the host already has addresses or (non-default) routes for."""
    used: list[ipaddress.IPv4Network] = []
    for entry in json.loads(ip(["-j", "-4", "addr", "show"]) or "[]"):
        for a in entry.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for r in json.loads(ip(["-j", "-4", "route", "show", "table", "all"]) or "[]"):
        dst = r.get("dst", "default")
        if dst == "default":
            continue
        try:
            used.append(ipaddress.IPv4Network(dst, strict=False))
        except ValueError:
            continue
    return used


def host_side_commands(
    bridge: str, host_cidr: str, nodes: Sequence[tuple[str, str]]
) -> list[list[str]]:
    """Namespaces, the bridge and each node's link; ``nodes`` is (netns, host-side veth).

    Multicast snooping is off so mDNS floods to every port; the bridge skips the host's
    iptables (br_netfilter) so a host firewall cannot silently drop traffic between nodes.
    """
    cmds = [["netns", "add", ns] for ns, _ in nodes]
    cmds += [
        [
            "link",
            "add",
            "name",
            bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "nf_call_iptables",
            "0",
            "nf_call_ip6tables",
            "0",
            "nf_call_arptables",
            "0",
        ],
        ["addr", "add", host_cidr, "dev", bridge],
        ["link", "set", "dev", bridge, "up"],
    ]
    for ns, veth in nodes:
        cmds.append(
            ["link", "add", "name", veth, "type", "veth", "peer", "name", NODE_IFNAME, "netns", ns]
        )
        cmds.append(["link", "set", "dev", veth, "master", bridge, "up"])
    return cmds


def node_side_commands(cidr: str) -> list[list[str]]:
    """Inside one namespace: loopback, the node's address, multicast on, a route for 224/4."""
    return [
        ["link", "set", "dev", "lo", "up"],
        ["addr", "add", cidr, "dev", NODE_IFNAME],
        ["link", "set", "dev", NODE_IFNAME, "multicast", "on", "up"],
        ["route", "replace", MULTICAST_NET, "dev", NODE_IFNAME],
    ]


def node_link(netns: str, up: bool) -> None:
    """Unplug (or plug back) a node's cable; routes through it return with the multicast one."""
    if up:
        ip_batch(
            [
                ["link", "set", "dev", NODE_IFNAME, "up"],
                ["route", "replace", MULTICAST_NET, "dev", NODE_IFNAME],
            ],
            netns=netns,
        )
    else:
        ip(["link", "set", "dev", NODE_IFNAME, "down"], netns=netns)


def add_blackholes(netns: str, addresses: Sequence[str]) -> None:
    ip_batch([["route", "replace", "blackhole", f"{a}/32"] for a in addresses], netns=netns)


def del_blackholes(netns: str, addresses: Sequence[str]) -> None:
    """Remove routes; a route already gone (namespace rebuilt) is not an error."""
    ip_batch([["route", "del", "blackhole", f"{a}/32"] for a in addresses], netns=netns, force=True)
