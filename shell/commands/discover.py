"""``discover``: which machines are out there, before (or beside) any cluster.

mDNS browsing (shell/discovery.py), merged with an inventory file and node sets for networks
multicast does not reach. Each machine is announced on stderr the moment it answers, so a person
sees the wait fill up; the table (or ``--json`` list) comes at the end. While a lab is up and no
``--interface`` is given, browsing stays on the lab's bridge, never the machine's real network.
"""

from __future__ import annotations

import time
from typing import Any

from shell.clusteraccess import lab_bridges
from shell.commands.context import Context
from shell.discovery import DiscoveryError, Host, discover, load_inventory, merge, nodeset_hosts
from shell.registry import Arg, Command, Registry, Result, UsageError

DEFAULT_SECONDS = 3.0
COLUMNS = [("ADDRESS", "address"), ("NAME", "name"), ("SSH", "ssh"), ("AGENT", "agent"),
           ("CLUSTER", "cluster"), ("NODE", "node"), ("METADATA", "metadata")]  # fmt: skip


def row(h: Host) -> dict[str, Any]:
    return {
        "address": h.address,
        "name": h.name,
        "ssh": h.ssh_port,
        "agent": f"yes ({h.version})" if h.agent and h.version else "yes" if h.agent else "no",
        "cluster": h.cluster_name or h.cluster_id,
        "node": h.node_id,
        "metadata": ",".join(f"{k}={v}" for k, v in h.metadata.items()),
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


async def discover_cmd(ctx: Context, a: dict[str, Any]) -> Result:
    seconds = ctx.options.timeout if ctx.options.timeout_given else DEFAULT_SECONDS
    if seconds <= 0:
        raise UsageError("discover: --timeout must be a positive number of seconds")
    extra: list[Host] = []
    try:
        for path in a["inventory"]:
            extra += load_inventory(path)
        if a["nodes"]:
            extra += await nodeset_hosts(a["nodes"])
    except DiscoveryError as exc:
        raise UsageError(f"discover: {exc}")
    found: list[Host] = []
    started = time.monotonic()
    if not a["no_mdns"]:
        interfaces = a["interface"]
        where = ", ".join(interfaces) or "every interface"
        if not interfaces and (interfaces := lab_bridges()):
            where = f"the lab bridge {', '.join(interfaces)} (--interface ADDR picks another)"
        progress = ctx.reporter()
        until = f" or {a['expect']} hosts" if a["expect"] else ""
        progress("mdns", f"browsing on {where} for up to {seconds:g} s{until}")
        announced: set[str] = set()

        def show(host: Host) -> None:
            if host.address not in announced:
                announced.add(host.address)
                agent = "agent" if host.agent else "no agent yet"
                progress(host.name or host.address, f"answered ({host.address}, {agent})")

        try:
            found = await discover(
                timeout=seconds, expect=a["expect"], interfaces=interfaces or None, on_found=show
            )
        except OSError as exc:
            raise UsageError(f"discover: cannot browse mDNS: {exc}; try --interface ADDR")
    hosts = merge(found, extra)
    agents = sum(h.agent for h in hosts)
    elapsed = time.monotonic() - started
    ctx.err.write(
        f"{len(hosts)} host{'s' * (len(hosts) != 1)}, {agents} with an agent ({elapsed:.2f} s)\n"
    )
    return Result(
        [h.to_json() for h in hosts],
        rows=[row(h) for h in hosts],
        columns=COLUMNS,
        hint=None if hosts else "nothing answered: check the network, or name machines (--nodes)",
        code=0 if hosts else 1,
    )


def register(registry: Registry) -> None:
    registry.register(
        Command(
            "discover",
            "find machines over mDNS (and in an inventory or a node set)",
            discover_cmd,
            [
                Arg(
                    "expect", "stop as soon as this many hosts answered", type=_positive, flag=True
                ),
                Arg(
                    "interface",
                    "browse only on this interface address (repeatable)",
                    flag=True,
                    many=True,
                ),
                Arg(
                    "inventory",
                    "also list the hosts in this file (repeatable)",
                    flag=True,
                    many=True,
                ),
                Arg("nodes", "also list these hosts: web[1-4],db1", flag=True),
                Arg(
                    "no_mdns",
                    "do not browse; inventory and node sets only",
                    type=bool,
                    flag=True,
                    default=False,
                ),
            ],
            examples=(
                "discover",
                "discover --expect 3 --timeout 10",
                "discover --inventory hosts.txt --no-mdns --json",
            ),
            description=f"Browses for {DEFAULT_SECONDS:g} s unless --timeout says otherwise, "
            "and returns as soon as --expect hosts answered. Exit 1 when nothing was found.",
        )
    )
