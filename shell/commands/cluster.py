"""The cluster as a whole: ``cluster init|join|leave|status|destroy``, ``machines``,
``leader`` and ``members``.

The work is shell/bootstrap.py's; these handlers decide which machines are meant and how to
reach them (shell/clusteraccess.py), report per-node progress on stderr while they wait, and
return the outcome as data.
"""

from __future__ import annotations

import time
from typing import Any

from shell import bootstrap
from shell.clusteraccess import (
    SSHSettings,
    any_member,
    discovered_nodes,
    home,
    lab_nodes,
    load_ssh,
    nodeset_nodes,
    parse_metadata,
    save_ssh,
    user_ssh,
)
from shell.clusterstate import NodeSpec, StateError
from shell.commands.context import Context
from shell.registry import (
    EXIT_UNAVAILABLE,
    Arg,
    Command,
    Registry,
    Result,
    Unavailable,
    UsageError,
)

STATUS_COLUMNS = [
    ("MEMBER", "id"), ("HOST", "host"), ("ROLE", "role"), ("TERM", "term"),
    ("LEADER", "leader"), ("COMMIT", "commit"), ("APPLIED", "applied"), ("LAG", "lag"),
    ("VERSION", "version"), ("HEALTH", "health"),
]  # fmt: skip


async def status(ctx: Context, a: dict[str, Any]) -> Result:
    state = ctx.state()
    rows = await bootstrap.cluster_status(state, ctx.pool(), timeout=ctx.options.timeout)
    healthy = [r for r in rows if r.get("health") == "healthy"]
    code = 0 if len(healthy) * 2 > len(rows) else EXIT_UNAVAILABLE
    return Result(
        {"cluster": state.name, "members": rows},
        text=f"cluster {state.name} ({state.cluster_id})",
        rows=rows,
        columns=STATUS_COLUMNS,
        code=code,
    )


async def leader(ctx: Context, a: dict[str, Any]) -> Result:
    st = await ctx.call("status")
    if not st.get("leader"):
        raise Unavailable("cluster unavailable: no leader (no quorum?)")
    data = {"leader": st["leader"], "term": st.get("term"), "asked": ctx.member}
    return Result(data, text=str(st["leader"]))


async def members(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call("members")
    addresses = res.get("addresses", {})
    rows = [
        {
            "id": m,
            "kind": kind,
            "address": addresses.get(m),
            "leader": "*" if m == res.get("leader") else "",
        }
        for kind, ids in (("voter", res.get("voters", [])), ("learner", res.get("learners", [])))
        for m in ids
    ]
    columns = [("MEMBER", "id"), ("KIND", "kind"), ("ADDRESS", "address"), ("LEADER", "leader")]
    return Result(res, rows=rows, columns=columns)


async def machines(ctx: Context, a: dict[str, Any]) -> Result:
    state = ctx.state()
    answer = await any_member(state, ctx.pool(), "machines", timeout=ctx.options.timeout)
    found = sorted(answer["machines"], key=lambda m: str(m.get("id")))
    now = time.time()
    rows = [
        {
            "id": m["id"] if a["full"] else str(m["id"])[:12],
            "ip": m.get("address"),
            "metadata": ",".join(f"{k}={v}" for k, v in sorted(m.get("metadata", {}).items())),
            "version": m.get("version"),
            "load": m.get("load"),
            "up": f"{int(now - float(m.get('started', now)))}s",
        }
        for m in found
    ]
    columns = [("MACHINE", "id"), ("IP", "ip"), ("METADATA", "metadata"),
               ("VERSION", "version"), ("LOAD", "load"), ("UP", "up")]  # fmt: skip
    return Result({"cluster": state.name, "machines": found}, rows=rows, columns=columns)


def _with_metadata(specs: list[NodeSpec], items: list[str]) -> list[NodeSpec]:
    try:
        meta = parse_metadata(items)
    except StateError as exc:
        raise UsageError(str(exc))
    unknown = set(meta) - {s.id for s in specs}
    if unknown:
        raise UsageError(f"--metadata names nodes not in the cluster: {', '.join(sorted(unknown))}")
    return [
        NodeSpec(**{**s.__dict__, "metadata": {**s.metadata, **meta.get(s.id, {})}}) for s in specs
    ]


def _lab(name: str | None) -> tuple[list[NodeSpec], SSHSettings, str] | None:
    """The lab meant: the named one (which must be up), or the only one that is up."""
    lab = lab_nodes(name)
    if lab is None and name:
        from shell.lab.state import labs_up

        up = ", ".join(x.name for x in labs_up()) or "none"
        raise UsageError(f"--lab {name}: no such lab is up (labs up: {up}); `lab up` starts one")
    return lab


async def init(ctx: Context, a: dict[str, Any]) -> Result:
    progress = ctx.reporter()
    settings, name = user_ssh(), a["name"]
    if a["nodes"]:
        specs = nodeset_nodes(a["nodes"])
        lab = _lab(a["lab"])
        if lab is not None:  # names of lab nodes resolve to the lab's addresses and keys
            by_id = {s.id: s for s in lab[0]}
            if all(s.id in by_id for s in specs):
                specs, settings = [by_id[s.id] for s in specs], lab[1]
    elif a["discover"]:
        progress("discover", f"browsing mDNS for {ctx.options.timeout:g} s")
        specs = await discovered_nodes(ctx.options.timeout)
        lab = _lab(a["lab"])
        if lab is not None:
            settings = lab[1]
        if not specs:
            raise StateError("discovery found no machines with sshd; name them instead")
    else:
        lab = _lab(a["lab"])
        if lab is None:
            raise UsageError(
                "which machines? name them (`cluster init web[1-3]`), use --discover, "
                "or start a lab first (`lab up`)"
            )
        specs, settings = lab[0], lab[1]
        name = name or lab[2]
        progress("lab", f"using lab {lab[2]}: {', '.join(s.id for s in specs)}")
    specs = _with_metadata(specs, a["metadata"])
    pool = settings.pool(accept_new=a["accept_new"])
    try:
        state = await bootstrap.init_cluster(
            specs, name=name or "default", pool=pool, state_root=home(), progress=progress
        )
    finally:
        await pool.close()
    save_ssh(state, settings)
    await ctx.switch_cluster()
    nodes = [s.id for s in state.nodes]
    data = {"cluster": state.name, "id": state.cluster_id, "changed": state.changed, "nodes": nodes}
    verb = "is up" if state.changed else "was already running; nothing changed"
    text = f"cluster {state.name} {verb}: {', '.join(nodes)}"
    return Result(data, text=text, hint="next: cluster status  ·  machines  ·  exec @all -- uptime")


async def join(ctx: Context, a: dict[str, Any]) -> Result:
    state = ctx.state()
    node = a["node"]
    spec = NodeSpec(id=node, host=a["host"] or node, address=a["address"])
    lab = _lab(a["lab"]) if a["lab"] else lab_nodes(None)
    if lab is not None and a["host"] is None:
        spec = {s.id: s for s in lab[0]}.get(node, spec)
    spec = _with_metadata([spec], a["metadata"])[0]
    pool = load_ssh(state).pool(accept_new=a["accept_new"])
    try:
        await bootstrap.join_node(state, spec, pool=pool, progress=ctx.reporter())
    finally:
        await pool.close()
    await ctx.switch_cluster()
    return Result({"joined": node, "cluster": state.name}, text=f"{node} joined {state.name}")


async def leave(ctx: Context, a: dict[str, Any]) -> Result:
    state = ctx.state()
    pool = load_ssh(state).pool()
    try:
        await bootstrap.leave_node(state, a["node"], pool=pool, progress=ctx.reporter())
    finally:
        await pool.close()
    await ctx.switch_cluster()
    return Result({"left": a["node"], "cluster": state.name}, text=f"{a['node']} left {state.name}")


async def destroy(ctx: Context, a: dict[str, Any]) -> Result:
    state = ctx.state()
    what = f"stop every agent of cluster {state.name} ({', '.join(s.id for s in state.nodes)})"
    if a["wipe"]:
        what += " and delete its data there and here"
    if not a["yes"]:
        answer = await ctx.confirm(f"{what}? [y/N] ")
        if answer is None:
            raise UsageError(f"cluster destroy would {what}; add --yes to go ahead")
        if not answer:
            return Result({"destroyed": None}, text="nothing done", code=1)
    await ctx.switch_cluster()
    pool = load_ssh(state).pool()
    try:
        await bootstrap.destroy_cluster(
            state, a["wipe"], pool=pool, state_root=home(), progress=ctx.reporter()
        )
    finally:
        await pool.close()
    return Result({"destroyed": state.name}, text=f"cluster {state.name} stopped")


LAB = Arg("lab", "take nodes and SSH files from this lab", flag=True, required=False)
METADATA = Arg(
    "metadata", "NODE:key=value[,key=value] (repeatable)", flag=True, many=True, required=False
)
ACCEPT_NEW = Arg(
    "accept_new",
    "trust and record host keys not yet in known_hosts (never changed ones)",
    type=bool, flag=True, default=False,
)  # fmt: skip


def register(registry: Registry) -> None:
    registry.register(
        Command(
            "cluster init",
            "make machines a cluster: install and start an agent on each over SSH",
            init,
            [
                Arg(
                    "nodes", "a node set, e.g. web[1-3],db1", required=False, completion="lab-nodes"
                ),
                Arg(
                    "discover", "take the machines mDNS finds", type=bool, flag=True, default=False
                ),
                Arg("name", "cluster name (default: the lab's, or 'default')", flag=True),
                METADATA,
                ACCEPT_NEW,
                LAB,
            ],
            examples=(
                "cluster init                        # the lab that is up",
                "cluster init web[1-3] --accept-new --metadata web1:region=us-east",
                "cluster init --discover --name prod",
            ),
            description="Safe to repeat: a cluster already running on those machines is left "
            "as it is. Host keys are checked against known_hosts; --accept-new records unknown "
            "ones, a changed key is always refused.",
        )
    )
    registry.register(
        Command(
            "cluster join",
            "add a machine to the cluster (as a learner, promoted once caught up)",
            join,
            [
                Arg(
                    "node",
                    "the new member's name (a lab node, or an SSH host)",
                    completion="lab-nodes",
                ),
                Arg("host", "SSH host (default: the lab's address, or NODE)", flag=True),
                Arg("address", "the address peers use (default: the host)", flag=True),
                METADATA,
                ACCEPT_NEW,
                LAB,
            ],
            examples=("cluster join node4", "cluster join db1 --host 10.0.0.7 --accept-new"),
        )
    )
    registry.register(
        Command(
            "cluster leave",
            "remove a member and stop its agent",
            leave,
            [Arg("node", "the member", completion="nodes")],
            examples=("cluster leave node3",),
        )
    )
    registry.register(
        Command(
            "cluster destroy",
            "stop every agent of the cluster (--wipe also deletes the data)",
            destroy,
            [
                Arg(
                    "wipe",
                    "also delete the data, there and here",
                    type=bool,
                    flag=True,
                    default=False,
                ),
                Arg("yes", "do not ask", type=bool, flag=True, default=False),
            ],
            examples=("cluster destroy", "cluster destroy --wipe --yes"),
            terminal=True,  # it may ask: the question needs the keys
        )
    )
    registry.register(
        Command(
            "cluster status",
            "members, roles, terms, lag and health (exit 3 without quorum)",
            status,
            examples=("cluster status", "cluster status --json"),
        )
    )
    registry.register(
        Command(
            "leader",
            "which member leads the cluster now",
            leader,
            examples=("leader",),
        )
    )
    registry.register(
        Command(
            "members",
            "the voters and learners, with their addresses",
            members,
            examples=("members", "members --no-legend | awk '{print $1}'"),
        )
    )
    registry.register(
        Command(
            "machines",
            "the live machines of the cluster",
            machines,
            [Arg("full", "whole machine ids", type=bool, flag=True, default=False)],
            examples=("machines", "machines --full --json"),
        )
    )
