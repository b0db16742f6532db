"""``lab up`` and ``lab down``: build a cluster of namespace "machines" with real sshd, and
remove every namespace, link, process and file it made.

Up is built for speed (a 16-node lab plus ``cluster init`` should take seconds): keys are made
in-process, the network is configured in a few ``ip -batch`` runs, and all nodes start at once
while their sshd ports are polled. Any failure tears down whatever was already made.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shell.lab import names, net, procs, state
from shell.lab.errors import LabError, LabExists
from shell.lab.files import etc_hosts, inventory, known_hosts, ssh_config
from shell.lab.keys import new_ed25519
from shell.lab.lock import labs_lock
from shell.lab.nodes import NODE_INIT, prepare, start_keeper, start_ssh_publisher, wait_ready
from shell.lab.nodeset import fold
from shell.lab.paths import lab_dir, labs_dir, make_private_dir, write_file
from shell.lab.requirements import check_host
from shell.lab.state import LabState, NodeState

Progress = Callable[[str], None]
VAR_LIB_SHOAL = Path("/var/lib/shoal")
MOUNTPOINT_XATTR = "user.shoal.lab-mountpoint"
DEFAULT_NODES = 3


def _quiet(_: str) -> None:
    pass


def _pick_slot(home: Path | None) -> int:
    used = net.used_ipv4_networks()
    labs = labs_dir(home)
    if labs.is_dir():
        for other in labs.iterdir():
            try:
                used.append(ipaddress.IPv4Network(state.load(other.name, home).subnet))
            except (LabError, ValueError):
                continue
    slot = names.first_free_slot(used)
    if slot is None:
        raise LabError(f"no free /24 left in {names.LAB_RANGE} for another lab")
    return slot


def _leftovers(name: str) -> list[str]:
    """Namespaces or a bridge named for this lab, from this or another SHOAL_HOME."""
    found = [ns for ns in net.netns_list() if names.is_lab_netns(name, ns)]
    if net.link_exists(names.bridge_name(name)):
        found.append(f"bridge {names.bridge_name(name)}")
    return found


def up(
    name: str = "lab",
    nodes: int = DEFAULT_NODES,
    *,
    home: Path | None = None,
    progress: Progress = _quiet,
) -> LabState:
    """Create lab ``name`` with ``nodes`` nodes and return its state once every sshd answers."""
    check_host("up")
    directory = lab_dir(name, home)
    if not 1 <= nodes <= names.MAX_NODES:
        raise LabError(f"--nodes must be between 1 and {names.MAX_NODES}, not {nodes}")
    with labs_lock(labs_dir(home)):
        if state.exists(name, home):
            old = state.load(name, home)
            raise LabExists(
                f"lab {name!r} already exists ({len(old.nodes)} nodes on {old.subnet}, "
                f"state in {old.state_dir}); see `shoal lab status --name {name}`, "
                f"or remove it with `shoal lab down --name {name}`"
            )
        left = _leftovers(name)
        if left:
            raise LabExists(
                f"a lab named {name!r} already has namespaces or links on this host "
                f"({', '.join(left[:4])}{'...' if len(left) > 4 else ''}), perhaps from another "
                f"SHOAL_HOME or a crashed run; remove them with `shoal lab down --name {name}`"
            )
        started = time.monotonic()
        try:
            lab = _build(name, nodes, directory, home, progress)
        except BaseException as exc:
            progress(f"failed ({exc}); removing what was made")
            _teardown(name, home, _quiet)
            raise
        progress(f"lab {name!r} is up: {nodes} nodes in {time.monotonic() - started:.1f}s")
        return lab


def _build(
    name: str, count: int, directory: Path, home: Path | None, progress: Progress
) -> LabState:
    slot = _pick_slot(home)
    subnet = names.subnet(slot)
    node_list = [
        NodeState(
            name=names.node_name(i),
            index=i,
            address=str(names.node_address(subnet, i)),
            netns=names.netns_name(name, names.node_name(i)),
            veth=names.veth_name(name, i),
        )
        for i in range(1, count + 1)
    ]
    lab = LabState(
        name=name,
        state_dir=str(directory),
        subnet=str(subnet),
        host_address=str(names.host_address(subnet)),
        bridge=names.bridge_name(name),
        nodes=node_list,
        created=time.time(),
    )
    make_private_dir(directory / "nodes")
    if not VAR_LIB_SHOAL.exists():
        # The mount point each node's /var/lib/shoal is bound onto; removed again by the last
        # lab's ``down`` when still empty.
        VAR_LIB_SHOAL.mkdir(mode=0o755, parents=True)
        lab.made_var_lib_shoal = True
        try:  # marks it as the lab's, so whichever lab goes down last removes it
            os.setxattr(VAR_LIB_SHOAL, MOUNTPOINT_XATTR, b"1")
        except OSError:
            pass
    state.save(lab)

    progress(f"writing keys and files for {count} nodes in {directory}")
    operator = new_ed25519()
    write_file(directory / "id_ed25519", operator.private_openssh, 0o600)
    write_file(directory / "id_ed25519.pub", operator.public_line(f"shoal-lab-{name}"), 0o600)
    host_keys = [new_ed25519() for _ in node_list]
    for node, key in zip(node_list, host_keys, strict=True):
        prepare(lab.node_dir(node.name), node, key, operator.public_line(f"shoal-lab-{name}"))
    pairs = [(n, k.public_openssh) for n, k in zip(node_list, host_keys, strict=True)]
    write_file(directory / "known_hosts", known_hosts(pairs))
    write_file(
        directory / "ssh_config",
        ssh_config(node_list, directory / "id_ed25519", directory / "known_hosts"),
    )
    write_file(directory / "inventory", inventory(node_list))
    hosts_file = write_file(directory / "hosts", etc_hosts(node_list), 0o644)

    progress(f"network: {count} namespaces, bridge {lab.bridge} ({lab.host_address}), {subnet}")
    net.ip_batch(
        net.host_side_commands(
            lab.bridge,
            f"{lab.host_address}/{subnet.prefixlen}",
            [(n.netns, n.veth) for n in node_list],
        )
    )
    with ThreadPoolExecutor(max_workers=min(32, count)) as pool:
        list(
            pool.map(
                lambda n: net.ip_batch(
                    net.node_side_commands(f"{n.address}/{subnet.prefixlen}"), netns=n.netns
                ),
                node_list,
            )
        )

    progress(f"starting sshd on {names_of(node_list)}")
    keepers = [(n, start_keeper(n, lab.node_dir(n.name), hosts_file)) for n in node_list]
    for node, proc in keepers:
        node.sshd_pid = proc.pid
    state.save(lab)
    ready: list[str] = []

    def on_ready(node: NodeState) -> None:
        ready.append(node.name)
        progress(f"sshd ready on {node.name} ({node.address}) [{len(ready)}/{count}]")

    wait_ready([(n, p, lab.node_dir(n.name)) for n, p in keepers], on_ready=on_ready)
    progress(f"publishing _ssh._tcp over mDNS on {names_of(node_list)}")
    for node in node_list:
        start_ssh_publisher(node, lab.node_dir(node.name))
    return lab


def names_of(nodes: list[NodeState]) -> str:
    return fold(n.name for n in nodes)


@dataclass
class DownReport:
    name: str
    found: bool
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    removed_dir: str | None = None


def down(name: str = "lab", *, home: Path | None = None, progress: Progress = _quiet) -> DownReport:
    """Remove lab ``name`` entirely; a lab that is already gone is not an error."""
    check_host("down")
    lab_dir(name, home)  # validates the name
    with labs_lock(labs_dir(home), create=False):
        return _teardown(name, home, progress)


def _teardown(name: str, home: Path | None, progress: Progress) -> DownReport:
    directory = lab_dir(name, home)
    lab: LabState | None = None
    try:
        lab = state.load(name, home)
    except LabError:
        pass
    namespaces = {ns for ns in net.netns_list() if names.is_lab_netns(name, ns)}
    if lab is not None:
        namespaces |= {n.netns for n in lab.nodes if os.path.exists(f"/run/netns/{n.netns}")}
    bridge = lab.bridge if lab else names.bridge_name(name)
    links = [bridge] if net.link_exists(bridge) else []
    report = DownReport(name=name, found=bool(namespaces or links or directory.exists()))
    if not report.found:
        progress(f"no lab named {name!r}: nothing to do")
        return report

    # Processes first (by PID, only those inside the lab's namespaces), then links, then files.
    pids = [p for ns in sorted(namespaces) for p in procs.pids_in_netns(ns)]
    if lab is not None:  # a keeper that has not entered its namespace yet
        pids += [
            n.sshd_pid
            for n in lab.nodes
            if n.sshd_pid
            and procs.alive(n.sshd_pid)
            and n.sshd_pid not in pids
            and _is_keeper(n.sshd_pid, n.netns)
        ]
    if pids:
        progress(f"stopping {len(pids)} processes in {len(namespaces)} nodes")
    for _ in range(5):
        report.killed += procs.kill_all(pids)
        pids = [p for ns in sorted(namespaces) for p in procs.pids_in_netns(ns)]
        if not pids:
            break
    if pids:
        raise LabError(f"processes {pids} in lab {name!r} would not die; nothing else removed")

    if namespaces or links:
        progress(f"removing {len(namespaces)} namespaces and bridge {bridge}")
    cmds: list[list[str]] = [["netns", "del", ns] for ns in sorted(namespaces)]
    cmds += [["link", "del", "dev", link] for link in links]
    if lab is not None:
        cmds += [["link", "del", "dev", n.veth] for n in lab.nodes if net.link_exists(n.veth)]
    net.ip_batch(cmds, force=True)
    report.namespaces = sorted(namespaces)
    report.links = links
    still = [ns for ns in net.netns_list() if ns in namespaces]
    if still or net.link_exists(bridge):
        raise LabError(f"could not remove {still or bridge}; see `ip netns list` / `ip link`")

    _remove_mountpoint_if_unused(lab is not None and lab.made_var_lib_shoal)
    if directory.exists():
        shutil.rmtree(directory)
        report.removed_dir = str(directory)
    progress(f"lab {name!r} removed")
    return report


def _is_keeper(pid: int, netns: str) -> bool:
    """A keeper still inside ``ip netns exec`` for ``netns`` (it may not have switched yet)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return netns.encode() in cmdline or str(NODE_INIT).encode() in cmdline


def _remove_mountpoint_if_unused(made_by_this_lab: bool) -> None:
    """rmdir /var/lib/shoal if a lab made it, it is empty, and no lab node could still use it."""
    if any(ns.startswith("shoal-") for ns in net.netns_list()):
        return
    try:
        marked = MOUNTPOINT_XATTR in os.listxattr(VAR_LIB_SHOAL)
    except OSError:
        marked = False
    if made_by_this_lab or marked:
        try:
            VAR_LIB_SHOAL.rmdir()
        except OSError:
            pass
