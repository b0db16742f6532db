"""Names and addresses a lab derives from its own name: pure functions, no I/O.

Interface names must fit the kernel's IFNAMSIZ (15 characters), so links carry a short hash of
the lab name rather than the name itself; namespace names have no such limit and stay readable.
Deriving every name from the lab name means ``lab down`` can find and remove what a failed
``lab up`` left behind even when lab.json was never written.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

# 198.18.0.0/15 is reserved for benchmarking (RFC 2544): it never routes anywhere real.
LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
MAX_LABS = 2 ** (24 - LAB_RANGE.prefixlen)
MAX_NODES = 250
IFNAMSIZ = 15
NODE_IFNAME = "eth0"
MULTICAST_NET = "224.0.0.0/4"
_NODE_NAME = re.compile(r"^node([1-9][0-9]*)$")


def _digest(lab: str) -> str:
    return hashlib.sha256(lab.encode()).hexdigest()


def bridge_name(lab: str) -> str:
    return f"shb-{_digest(lab)[:8]}"


def veth_name(lab: str, index: int) -> str:
    """Host-side end of node ``index``'s link; the node's end is always eth0."""
    name = f"shv{_digest(lab)[:6]}-{index}"
    assert len(name) <= IFNAMSIZ, name
    return name


def netns_prefix(lab: str) -> str:
    return f"shoal-{lab}-"


def is_lab_netns(lab: str, netns: str) -> bool:
    """Whether ``netns`` is a node of ``lab`` exactly: lab "a" must not claim lab "a-b"'s nodes."""
    prefix = netns_prefix(lab)
    return netns.startswith(prefix) and node_index(netns[len(prefix) :]) is not None


def netns_name(lab: str, node: str) -> str:
    return f"{netns_prefix(lab)}{node}"


def node_name(index: int) -> str:
    return f"node{index}"


def node_index(name: str) -> int | None:
    m = _NODE_NAME.match(name)
    return int(m.group(1)) if m else None


def subnet(k: int) -> ipaddress.IPv4Network:
    """Lab slot ``k`` gets the k-th /24 of the benchmarking range (198.18.k.0/24, then 198.19)."""
    if not 0 <= k < MAX_LABS:
        raise ValueError(f"lab slot {k} out of range")
    base = int(LAB_RANGE.network_address) + (k << 8)
    return ipaddress.IPv4Network((base, 24))


def host_address(net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's address on the host: .1, so the operator reaches every node directly."""
    return net.network_address + 1


def node_address(net: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    """node1 gets .2, nodeN gets .N+1."""
    if not 1 <= index <= MAX_NODES:
        raise ValueError(f"node index {index} out of range 1..{MAX_NODES}")
    return net.network_address + 1 + index


def first_free_slot(used: list[ipaddress.IPv4Network]) -> int | None:
    """The first /24 of the lab range that overlaps none of ``used`` (None when all are taken)."""
    for k in range(MAX_LABS):
        net = subnet(k)
        if not any(net.overlaps(u) for u in used):
            return k
    return None
