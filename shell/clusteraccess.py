"""``shoal cluster init|join|leave|status|destroy`` and ``shoal machines``.

A thin layer over shell/bootstrap.py: it decides which machines are meant (a node set, mDNS
discovery, or the lab that is up), which SSH credentials reach them (the lab's own key and
known_hosts, or the user's), shows per-node progress on stderr, and prints a table or
``--json`` on stdout. The shell issue moves these commands into the command registry; the
functions here stay the library they call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.client import ControlError
from shell import bootstrap, clusterstate, remote
from shell.clusterstate import ClusterState, NodeSpec, StateError
from shell.ssh import SSHError, SSHPool

EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 1, 2, 3, 4
SSH_FILE = "ssh.json"


@dataclass
class SSHSettings:
    """How the shell reaches a cluster's machines; kept beside cluster.json (0600)."""

    known_hosts: str
    identities: list[str] = field(default_factory=list)

    def pool(self, accept_new: bool = False) -> SSHPool:
        keys = [Path(p) for p in self.identities] or None
        return SSHPool(Path(self.known_hosts), keys, accept_new=accept_new)


def home() -> Path:
    return clusterstate.shoal_home()


def user_ssh() -> SSHSettings:
    ssh_dir = Path.home() / ".ssh"
    keys = [str(p) for p in (ssh_dir / "id_ed25519", ssh_dir / "id_ecdsa", ssh_dir / "id_rsa")]
    return SSHSettings(str(ssh_dir / "known_hosts"), [k for k in keys if Path(k).exists()])


def save_ssh(state: ClusterState, settings: SSHSettings) -> None:
    path = state.root / SSH_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"known_hosts": settings.known_hosts, "identities": settings.identities}, f)


def load_ssh(state: ClusterState) -> SSHSettings:
    try:
        raw = json.loads((state.root / SSH_FILE).read_text())
        return SSHSettings(str(raw["known_hosts"]), [str(p) for p in raw.get("identities", [])])
    except (OSError, ValueError, KeyError):
        return user_ssh()


# --- which machines -------------------------------------------------------------------------


def lab_nodes(name: str | None) -> tuple[list[NodeSpec], SSHSettings, str] | None:
    """The nodes of a lab that is up (the named one, or the only one), with its SSH files."""
    from shell.lab.errors import LabError
    from shell.lab.paths import labs_dir
    from shell.lab.state import load

    root = labs_dir()
    candidates = (
        [name]
        if name
        else (
            sorted(p.name for p in root.iterdir() if (p / "lab.json").exists())
            if root.is_dir()
            else []
        )
    )
    if len(candidates) != 1:
        return None
    try:
        lab = load(candidates[0])
    except LabError:
        return None
    specs = [NodeSpec(id=n.name, host=n.address, address=n.address) for n in lab.nodes]
    ssh = SSHSettings(str(lab.dir / "known_hosts"), [str(lab.dir / "id_ed25519")])
    return specs, ssh, lab.name


def parse_metadata(items: list[str]) -> dict[str, dict[str, str]]:
    """``--metadata node1:region=us-east,disk=ssd`` (repeatable) → {node: {k: v}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        node, sep, pairs = item.partition(":")
        if not sep or not pairs:
            raise StateError(f"--metadata {item!r}: expected NODE:key=value[,key=value...]")
        for pair in pairs.split(","):
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise StateError(f"--metadata {item!r}: {pair!r} is not key=value")
            out.setdefault(node, {})[key] = value
    return out


async def discovered_nodes(timeout: float) -> list[NodeSpec]:
    from shell.cli import lab_bridges
    from shell.discovery import discover

    hosts = await discover(timeout=timeout, interfaces=lab_bridges() or None)
    return [
        NodeSpec(id=h.name or h.address.replace(".", "-"), host=h.address, address=h.address)
        for h in hosts
        if h.ssh_port
    ]


def nodeset_nodes(text: str) -> list[NodeSpec]:
    from shell.discovery import expand_nodeset

    return [NodeSpec(id=name, host=name) for name in expand_nodeset(text)]


# --- output -----------------------------------------------------------------------------------


class Progress:
    """Per-node progress lines on stderr (also with --json: stdout stays the document), with
    the time since the command started."""

    def __init__(self, quiet: bool = False) -> None:
        self.started = time.monotonic()
        self.quiet = quiet

    def __call__(self, node: str, message: str) -> None:
        if not self.quiet:
            stamp = time.monotonic() - self.started
            print(f"[{stamp:5.2f}s] {node}: {message}", file=sys.stderr, flush=True)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    cells = [[h for h, _ in columns]] + [
        ["-" if r.get(k) in (None, "") else str(r.get(k)) for _, k in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


# --- commands ---------------------------------------------------------------------------------


def current_state(args: argparse.Namespace) -> ClusterState:
    name = args.cluster or os.environ.get("SHOAL_CLUSTER") or clusterstate.current(home())
    if not name:
        raise StateError("no cluster yet: run `shoal cluster init` (or give --cluster NAME)")
    if not clusterstate.exists(home(), name):
        known = ", ".join(clusterstate.names(home())) or "none"
        raise StateError(f"no cluster called {name!r} (known: {known})")
    return clusterstate.load(home(), name)


async def cmd_init(args: argparse.Namespace) -> int:
    progress = Progress()
    settings = user_ssh()
    name = args.name
    if args.nodes:
        specs = nodeset_nodes(args.nodes)
        lab = lab_nodes(args.lab)
        if lab is not None:  # names of lab nodes resolve to the lab's addresses and keys
            by_id = {s.id: s for s in lab[0]}
            if all(s.id in by_id for s in specs):
                specs, settings = [by_id[s.id] for s in specs], lab[1]
    elif args.discover:
        specs = await discovered_nodes(args.timeout)
        lab = lab_nodes(args.lab)
        if lab is not None:
            settings = lab[1]
        if not specs:
            raise StateError("discovery found no machines with sshd; name them instead")
    else:
        lab = lab_nodes(args.lab)
        if lab is None:
            raise StateError(
                "which machines? name them (`shoal cluster init web[1-3]`), use --discover, "
                "or start a lab first (`shoal lab up`)"
            )
        specs, settings = lab[0], lab[1]
        name = name or lab[2]
        progress("lab", f"using lab {lab[2]}: {', '.join(s.id for s in specs)}")
    meta = parse_metadata(args.metadata or [])
    unknown = set(meta) - {s.id for s in specs}
    if unknown:
        raise StateError(f"--metadata names nodes not in the cluster: {', '.join(sorted(unknown))}")
    specs = [
        NodeSpec(**{**s.__dict__, "metadata": {**s.metadata, **meta.get(s.id, {})}}) for s in specs
    ]
    pool = settings.pool(accept_new=args.accept_new)
    try:
        state = await bootstrap.init_cluster(
            specs, name=name or "default", pool=pool, state_root=home(), progress=progress
        )
    finally:
        await pool.close()
    save_ssh(state, settings)
    result = {
        "cluster": state.name,
        "id": state.cluster_id,
        "changed": state.changed,
        "nodes": [s.id for s in state.nodes],
    }
    if args.json:
        print(json.dumps(result))
    else:
        verb = "is up" if state.changed else "was already running; nothing changed"
        print(f"cluster {state.name} {verb}: {', '.join(s.id for s in state.nodes)}")
        print("next: shoal cluster status   ·   shoal machines")
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    state = current_state(args)
    pool = load_ssh(state).pool()
    try:
        rows = await bootstrap.cluster_status(state, pool, timeout=args.timeout)
    finally:
        await pool.close()
    if args.json:
        print(json.dumps({"cluster": state.name, "members": rows}))
    else:
        print(f"cluster {state.name} ({state.cluster_id})")
        print(
            table(
                rows,
                [
                    ("MEMBER", "id"),
                    ("HOST", "host"),
                    ("ROLE", "role"),
                    ("TERM", "term"),
                    ("LEADER", "leader"),
                    ("COMMIT", "commit"),
                    ("APPLIED", "applied"),
                    ("LAG", "lag"),
                    ("VERSION", "version"),
                    ("HEALTH", "health"),
                ],
            )
        )
    healthy = [r for r in rows if r.get("health") == "healthy"]
    return 0 if len(healthy) * 2 > len(rows) else EXIT_UNAVAILABLE


async def cmd_machines(args: argparse.Namespace) -> int:
    state = current_state(args)
    pool = load_ssh(state).pool()
    try:
        answer = await any_member(state, pool, "machines", timeout=args.timeout)
    finally:
        await pool.close()
    machines = sorted(answer["machines"], key=lambda m: str(m.get("id")))
    if args.json:
        print(json.dumps({"cluster": state.name, "machines": machines}))
        return 0
    now = time.time()
    rows = [
        {
            "id": m["id"] if args.full else str(m["id"])[:12],
            "ip": m.get("address"),
            "metadata": ",".join(f"{k}={v}" for k, v in sorted(m.get("metadata", {}).items())),
            "version": m.get("version"),
            "load": m.get("load"),
            "up": f"{int(now - float(m.get('started', now)))}s",
        }
        for m in machines
    ]
    print(
        table(
            rows,
            [
                ("MACHINE", "id"),
                ("IP", "ip"),
                ("METADATA", "metadata"),
                ("VERSION", "version"),
                ("LOAD", "load"),
                ("UP", "up"),
            ],
        )
    )
    return 0


async def any_member(state: ClusterState, pool: SSHPool, method: str, *, timeout: float) -> Any:
    """Ask members in turn until one answers; one dead machine never blocks the command."""
    errors = []
    for spec in state.nodes:
        try:
            return await asyncio.wait_for(remote.call(pool, spec, method, wait=timeout), timeout)
        except (remote.NodeError, SSHError, ControlError, OSError, TimeoutError) as exc:
            text = str(exc)
            errors.append(text if text.startswith(f"{spec.id}:") else f"{spec.id}: {text}")
    raise ClusterUnavailable("no member answered: " + "; ".join(errors))


class ClusterUnavailable(Exception):
    pass


async def cmd_join(args: argparse.Namespace) -> int:
    state = current_state(args)
    settings = load_ssh(state)
    spec = NodeSpec(id=args.node, host=args.host or args.node, address=args.address)
    lab = lab_nodes(args.lab)
    if lab is not None and args.host is None:
        by_id = {s.id: s for s in lab[0]}
        if args.node in by_id:
            spec = by_id[args.node]
    spec = NodeSpec(
        **{**spec.__dict__, "metadata": parse_metadata(args.metadata or []).get(args.node, {})}
    )
    pool = settings.pool(accept_new=args.accept_new)
    try:
        await bootstrap.join_node(state, spec, pool=pool, progress=Progress())
    finally:
        await pool.close()
    print(json.dumps({"joined": args.node}) if args.json else f"{args.node} joined {state.name}")
    return 0


async def cmd_leave(args: argparse.Namespace) -> int:
    state = current_state(args)
    pool = load_ssh(state).pool()
    try:
        await bootstrap.leave_node(state, args.node, pool=pool, progress=Progress())
    finally:
        await pool.close()
    print(json.dumps({"left": args.node}) if args.json else f"{args.node} left {state.name}")
    return 0


async def cmd_destroy(args: argparse.Namespace) -> int:
    state = current_state(args)
    if not args.yes and sys.stdin.isatty():
        answer = input(
            f"stop every agent of cluster {state.name}"
            f"{' and delete its data' if args.wipe else ''}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing done")
            return EXIT_FAILED
    pool = load_ssh(state).pool()
    try:
        await bootstrap.destroy_cluster(
            state, args.wipe, pool=pool, state_root=home(), progress=Progress()
        )
    finally:
        await pool.close()
    print(json.dumps({"destroyed": state.name}) if args.json else f"cluster {state.name} stopped")
    return 0


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cluster", help="which cluster (default: $SHOAL_CLUSTER or the current)")
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument("--timeout", type=float, default=5.0, help="seconds per node (5)")
    p = argparse.ArgumentParser(prog="shoal cluster", description="Clusters over SSH.")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", parents=[common], help="make machines a cluster")
    init.add_argument("nodes", nargs="?", help="a node set, e.g. web[1-3],db1")
    init.add_argument("--discover", action="store_true", help="take the machines mDNS finds")
    init.add_argument("--name", help="cluster name (default: the lab's name, or 'default')")
    init.add_argument("--metadata", action="append", metavar="NODE:k=v,...")
    init.add_argument(
        "--accept-new",
        action="store_true",
        help="trust and record host keys not yet in known_hosts (never changed ones)",
    )
    init.add_argument("--lab", help="take nodes and SSH files from this lab")
    join = sub.add_parser("join", parents=[common], help="add a machine to the cluster")
    join.add_argument("node")
    join.add_argument("--host", help="SSH host (default: the lab's address, or NODE)")
    join.add_argument("--address", help="the address peers use (default: the host)")
    join.add_argument("--metadata", action="append", metavar="NODE:k=v,...")
    join.add_argument("--accept-new", action="store_true")
    join.add_argument("--lab")
    leave = sub.add_parser("leave", parents=[common], help="remove a machine and stop its agent")
    leave.add_argument("node")
    sub.add_parser("status", parents=[common], help="members, roles, terms, lag and health")
    destroy = sub.add_parser("destroy", parents=[common], help="stop every agent")
    destroy.add_argument("--wipe", action="store_true", help="also delete data, here and there")
    destroy.add_argument("--yes", action="store_true", help="do not ask")
    machines = sub.add_parser("machines", parents=[common], help="the live machines")
    machines.add_argument("--full", action="store_true", help="whole machine ids")
    return p


COMMANDS = {
    "init": cmd_init,
    "status": cmd_status,
    "machines": cmd_machines,
    "join": cmd_join,
    "leave": cmd_leave,
    "destroy": cmd_destroy,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except StateError as exc:
        print(f"shoal: {exc}", file=sys.stderr)
        return EXIT_USAGE if "which machines" in str(exc) else EXIT_FAILED
    except (SSHError, remote.NodeError) as exc:
        print(f"shoal: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except bootstrap.BootstrapError as exc:
        print(f"shoal: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ClusterUnavailable as exc:
        print(f"shoal: cluster unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ControlError as exc:
        print(f"shoal: {exc.message} [{exc.code}]", file=sys.stderr)
        return EXIT_UNAVAILABLE if exc.code in ("no-leader", "timeout") else EXIT_FAILED
    except KeyboardInterrupt:
        return 130
