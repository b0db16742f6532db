"""Finding machines: mDNS browsing (``_shoal._tcp`` and ``_ssh._tcp``), inventories, node sets.

``shoal discover`` is the first thing an operator runs, before any cluster exists, so it answers
three questions per machine: where is it (address, SSH port), does it already run an agent, and
if so which cluster and node it is. Agents advertise ``_shoal._tcp.local.`` (agent/mdns.py);
ordinary Linux hosts advertise ``_ssh._tcp.local.`` through avahi. Both are browsed and merged by
address, so a machine with an agent and sshd is one row.

Results stream: each host is reported through ``on_found`` as soon as it is resolved, and
:func:`discover` returns the moment ``expect`` hosts are known instead of sleeping out its
timeout. Where multicast does not reach (clouds, routed networks), a static inventory file and
ClusterShell-style node sets (``web[1-4],db1``) name the machines; :func:`merge` folds all the
sources into one list.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHOAL_TYPE = "_shoal._tcp.local."
SSH_TYPE = "_ssh._tcp.local."
DEFAULT_SSH_PORT = 22
# Once ``expect`` hosts are known, a host that so far showed only one of its two services (sshd
# but no agent, or an agent but no sshd) may be about to show the other: the two are answered by
# different processes, a few milliseconds apart. Wait until nothing new has arrived for this
# long (or return at once when every host showed both).
_QUIET = 0.15
# ... and give resolutions already under way at most this long to finish.
_PENDING_GRACE = 1.0


class DiscoveryError(ValueError):
    """A bad inventory file or node set; the message names the file, line or pattern."""


@dataclass
class Host:
    """One machine, as far as the sources that mention it know it.

    Attributes:
        address: the address to reach it at (the agent's, when it runs one).
        name: a name for people (SSH instance name, node id or inventory name).
        ssh_port: where sshd listens, if known.
        agent: whether a shoal agent advertises itself there.
        cluster_id: the agent's cluster id ("" before ``cluster init``).
        node_id: the agent's node id.
        metadata: the agent's machine metadata (or the inventory's).
        version: the agent's version.
        peer_port: the agent's Raft peer port.
        cluster_name: the agent's cluster name, when it has one.
        addresses: every address known for the machine (avahi publishes one per interface).
        sources: where this came from: "mdns", "inventory", "nodeset".
    """

    address: str
    name: str = ""
    ssh_port: int | None = None
    agent: bool = False
    cluster_id: str = ""
    node_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    version: str = ""
    peer_port: int | None = None
    cluster_name: str = ""
    addresses: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.address not in self.addresses:
            self.addresses = (self.address, *self.addresses)

    def to_json(self) -> dict[str, Any]:
        """The host as plain JSON data (``shoal discover --json``)."""
        return {
            "address": self.address,
            "name": self.name,
            "ssh_port": self.ssh_port,
            "agent": self.agent,
            "cluster_id": self.cluster_id,
            "cluster_name": self.cluster_name,
            "node_id": self.node_id,
            "metadata": dict(self.metadata),
            "version": self.version,
            "peer_port": self.peer_port,
            "addresses": list(self.addresses),
            "sources": list(self.sources),
        }


def _address_key(address: str) -> tuple[int, int, str]:
    try:
        ip = ipaddress.ip_address(address)
        return (ip.version, int(ip), "")
    except ValueError:
        return (99, 0, address)


def _merge_two(a: Host, b: Host) -> Host:
    """``a`` with the gaps filled from ``b``; where both know something, ``a`` wins."""
    address = a.address
    if b.agent and not a.agent:
        address = b.address  # the agent's own address is the one the cluster will use
    return Host(
        address=address,
        name=a.name or b.name,
        ssh_port=a.ssh_port if a.ssh_port is not None else b.ssh_port,
        agent=a.agent or b.agent,
        cluster_id=a.cluster_id or b.cluster_id,
        node_id=a.node_id or b.node_id,
        metadata={**b.metadata, **a.metadata},
        version=a.version or b.version,
        peer_port=a.peer_port if a.peer_port is not None else b.peer_port,
        cluster_name=a.cluster_name or b.cluster_name,
        addresses=tuple(dict.fromkeys((*a.addresses, *b.addresses))),
        sources=tuple(dict.fromkeys((*a.sources, *b.sources))),
    )


def merge(*groups: Iterable[Host]) -> list[Host]:
    """One Host per machine: hosts sharing any address are merged, earlier arguments winning.

    Pass the live source first (``merge(found, inventory)``): what a machine says about itself
    now beats what a file said about it.
    """
    merged: list[Host] = []
    for group in groups:
        for host in group:
            overlapping = [m for m in merged if set(m.addresses) & set(host.addresses)]
            for m in overlapping:
                merged.remove(m)
                host = _merge_two(m, host)
            merged.append(host)
    return sorted(merged, key=lambda h: _address_key(h.address))


# ---------------------------------------------------------------------------------------------
# mDNS


def _text(props: dict[bytes, bytes | None], key: str) -> str:
    value = props.get(key.encode())
    return value.decode("utf-8", errors="replace") if value else ""


def parse_metadata(text: str) -> dict[str, str]:
    """``region=us-east,disk=ssd`` → ``{"region": "us-east", "disk": "ssd"}``."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key:
            out[key] = value
    return out


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) <= 65535 else None


def _instance(name: str, service_type: str) -> str:
    return name[: -len(service_type) - 1] if name.endswith("." + service_type) else name


def host_from_service(
    service_type: str,
    name: str,
    addresses: list[str],
    port: int,
    properties: dict[bytes, bytes | None],
) -> Host | None:
    """The Host one resolved ``_ssh._tcp`` or ``_shoal._tcp`` service describes."""
    if not addresses:
        return None
    if service_type == SHOAL_TYPE:
        node = _text(properties, "node")
        return Host(
            address=addresses[0],
            name=node or _instance(name, service_type),
            agent=True,
            cluster_id=_text(properties, "cluster"),
            node_id=node,
            metadata=parse_metadata(_text(properties, "meta")),
            version=_text(properties, "version"),
            peer_port=_port(_text(properties, "peer")) or port or None,
            cluster_name=_text(properties, "name"),
            addresses=tuple(addresses),
            sources=("mdns",),
        )
    return Host(
        address=addresses[0],
        name=_instance(name, service_type),
        ssh_port=port,
        addresses=tuple(addresses),
        sources=("mdns",),
    )


class _Collector:
    """Resolved services, merged into hosts; tells ``on_found`` about new and changed hosts."""

    def __init__(self, on_found: Callable[[Host], None] | None) -> None:
        self.on_found = on_found
        self.services: dict[str, Host] = {}
        self.reported: dict[str, Host] = {}
        self.changed = asyncio.Event()
        self.last_change = asyncio.get_running_loop().time()

    def hosts(self) -> list[Host]:
        # _ssh partials first, so an SSH instance name beats a node id as the display name.
        ordered = sorted(self.services.items(), key=lambda kv: (kv[1].agent, kv[0]))
        return merge(host for _, host in ordered)

    def set(self, key: str, host: Host | None) -> None:
        if host is None:
            self.services.pop(key, None)
        else:
            self.services[key] = host
        for h in self.hosts():
            if self.reported.get(h.address) != h:
                self.reported[h.address] = h
                if self.on_found is not None:
                    try:
                        self.on_found(h)
                    except Exception as exc:  # a faulty callback must not stop discovery
                        print(f"shoal: discovery callback failed: {exc!r}", file=sys.stderr)
        self.last_change = asyncio.get_running_loop().time()
        self.changed.set()


async def discover(
    *,
    timeout: float = 3.0,
    expect: int | None = None,
    interfaces: list[str] | None = None,
    on_found: Callable[[Host], None] | None = None,
) -> list[Host]:
    """Browse ``_shoal._tcp`` and ``_ssh._tcp`` and return the hosts found, merged by address.

    Args:
        timeout: seconds to browse at most.
        expect: return as soon as this many hosts are resolved, instead of waiting out
            ``timeout``: at once if each showed both sshd and an agent, else once nothing new
            arrived for 150 ms (a host's other service comes from another process).
        interfaces: IPv4 addresses of the interfaces to browse on; None for all of them.
        on_found: called with each host as soon as it is resolved, and again with the merged
            view whenever more is learned about it (e.g. its agent after its sshd).

    Returns:
        The hosts, sorted by address.
    """
    from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    collector = _Collector(on_found)
    pending: set[asyncio.Task[None]] = set()
    azc = AsyncZeroconf(
        interfaces=interfaces if interfaces else InterfaceChoice.All, ip_version=IPVersion.V4Only
    )

    async def resolve(service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        remaining_ms = max(100.0, (deadline - loop.time()) * 1000)
        if not await info.async_request(azc.zeroconf, remaining_ms):
            return
        addresses = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
        host = host_from_service(service_type, name, addresses, info.port or 0, info.properties)
        collector.set(name.lower(), host)

    def on_change(
        zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            collector.set(name.lower(), None)
            return
        task = loop.create_task(resolve(service_type, name))
        pending.add(task)
        task.add_done_callback(pending.discard)
        task.add_done_callback(lambda _t: collector.changed.set())

    browser = AsyncServiceBrowser(azc.zeroconf, [SHOAL_TYPE, SSH_TYPE], handlers=[on_change])
    try:
        met_at: float | None = None
        while True:
            now = loop.time()
            if now >= deadline:
                break
            wait = deadline - now
            hosts = collector.hosts()
            if expect is not None and len(hosts) >= expect:
                met_at = met_at if met_at is not None else now
                whole = all(h.agent and h.ssh_port is not None for h in hosts)
                if whole and not pending:
                    break
                quiet_at = collector.last_change + _QUIET
                if now >= quiet_at and (not pending or now >= met_at + _PENDING_GRACE):
                    break
                wait = min(wait, max(quiet_at - now, 0.0) or met_at + _PENDING_GRACE - now)
            collector.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.changed.wait(), max(wait, 0.001))
    finally:
        for task in list(pending):
            task.cancel()
        await browser.async_cancel()
        await azc.async_close()
    return collector.hosts()


# ---------------------------------------------------------------------------------------------
# Inventory files and node sets


def load_inventory(path: str | Path) -> list[Host]:
    """Hosts from a static inventory file, for machines multicast does not reach.

    One host a line: ``name address [ssh_port] [key=value,...]``; ``#`` starts a comment::

        web1  10.0.1.11            region=us-east,disk=ssd
        db1   10.0.2.21  2222      region=us-west

    Raises:
        DiscoveryError: the file cannot be read or a line is malformed (names file and line).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DiscoveryError(f"cannot read inventory {p}: {exc}")
    hosts: list[Host] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{p}:{lineno}"
        if len(fields) < 2:
            raise DiscoveryError(f"{where}: expected 'name address [ssh_port] [key=value,...]'")
        name, address, *rest = fields
        port = DEFAULT_SSH_PORT
        metadata: dict[str, str] = {}
        for item in rest:
            if "=" in item:
                for pair in item.split(","):
                    key, sep, value = pair.partition("=")
                    if not key or not sep:
                        raise DiscoveryError(f"{where}: metadata {pair!r} is not key=value")
                    metadata[key] = value
            elif item.isdigit() and 0 < int(item) <= 65535 and port == DEFAULT_SSH_PORT:
                port = int(item)
            else:
                raise DiscoveryError(f"{where}: {item!r} is neither an SSH port nor key=value")
        hosts.append(Host(address, name, port, metadata=metadata, sources=("inventory",)))
    return hosts


def expand_nodeset(text: str) -> list[str]:
    """The host names of a ClusterShell node set (``web[1-3,7],db[01-02]``), parsed by
    ClusterShell itself (shell/nodesets.py); DiscoveryError says what is wrong with it."""
    from shell.nodesets import expand

    try:
        names = expand(text)
    except ValueError as exc:
        raise DiscoveryError(f"node set {text!r}: {exc}")
    if not names:
        raise DiscoveryError(f"node set {text!r} names no hosts")
    return names


async def nodeset_hosts(text: str, *, resolve: bool = True, timeout: float = 2.0) -> list[Host]:
    """Hosts for the names in a node set; names are resolved (so they merge with mDNS results by
    address) where the resolver answers within ``timeout``, else kept as the address."""
    names = expand_nodeset(text)
    loop = asyncio.get_running_loop()

    async def one(name: str) -> Host:
        address = name
        if resolve:
            with contextlib.suppress(OSError, TimeoutError, UnicodeError):
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_STREAM),
                    timeout,
                )
                if infos:
                    address = str(infos[0][4][0])
        return Host(address, name, DEFAULT_SSH_PORT, sources=("nodeset",))

    return list(await asyncio.gather(*(one(n) for n in names)))


__all__ = [
    "DiscoveryError",
    "Host",
    "discover",
    "expand_nodeset",
    "load_inventory",
    "merge",
    "nodeset_hosts",
]
