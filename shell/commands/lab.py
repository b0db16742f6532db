"""``lab up|down|status|kill|pause|resume|crash|restore|partition|heal``: a local test cluster.

The lab (shell/lab/) makes network-namespace machines with a real sshd each on this host, as
root, and breaks them on purpose. Its work is blocking (ip, mounts, processes), so it runs in a
thread: the REPL's toolbar stays live meanwhile. A lab change is never abandoned half-way —
Ctrl-C waits for the step in progress to finish and then says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from shell.commands.context import Context
from shell.lab import chaos, lab
from shell.lab.names import MAX_NODES
from shell.lab.nodeset import fold
from shell.lab.paths import DEFAULT_LAB
from shell.lab.status import LabStatus, lab_status
from shell.registry import Arg, Command, Registry, Result

T = TypeVar("T")

STATUS_COLUMNS = [("NODE", "name"), ("ADDRESS", "address"), ("SSHD", "sshd"),
                  ("AGENT", "agent"), ("CUT OFF FROM", "cut_off_from")]  # fmt: skip


async def finish(ctx: Context, work: Callable[[], T]) -> T:
    """Run blocking lab work in a thread; if cancelled, still wait for it, then re-raise."""
    future = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        ctx.err.write("lab: finishing the step in progress before stopping...\n")
        await asyncio.wait([future])
        raise


def next_steps(state_dir: str, nodes: Sequence[str]) -> list[str]:
    """What to type next after ``lab up``, comments aligned."""
    name = Path(state_dir).name
    named = "" if name == DEFAULT_LAB else f" --lab {name}"
    steps = [
        (f"cluster init{named}", "make these machines a cluster"),
        ("discover", "see them answer over mDNS"),
        (f"ssh -F {state_dir}/ssh_config {nodes[0]}", "a node, from your own shell"),
    ]
    width = max(len(command) for command, _ in steps)
    return [f"{command:<{width}}   # {why}" for command, why in steps]


def status_result(st: LabStatus, hint: str | None = None) -> Result:
    rows = [
        {
            "name": n.name,
            "address": n.address,
            "sshd": f"up (pid {n.sshd_pid})" if n.sshd == "up" else "down",
            "agent": f"{n.agent} (pid {n.agent_pid})" if n.agent_pid else n.agent,
            "cut_off_from": fold(n.cut_off_from),
        }
        for n in st.nodes
    ]
    heading = (
        f"lab {st.name!r}: {len(st.nodes)} nodes on {st.subnet}, bridge {st.bridge}, "
        f"state in {st.state_dir}"
    )
    return Result(st.to_json(), text=heading, rows=rows, columns=STATUS_COLUMNS, hint=hint)


def _data(report: Any) -> Any:
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return dataclasses.asdict(report)
    return report


async def up_cmd(ctx: Context, a: dict[str, Any]) -> Result:
    progress = ctx.reporter()
    await finish(ctx, lambda: lab.up(a["name"], a["nodes"], progress=lambda m: progress("lab", m)))
    st = lab_status(a["name"])
    steps = "\n".join(f"  {s}" for s in next_steps(st.state_dir, [n.name for n in st.nodes]))
    return status_result(st, f"next:\n{steps}")


async def down(ctx: Context, a: dict[str, Any]) -> Result:
    progress = ctx.reporter()
    rep = await finish(ctx, lambda: lab.down(a["name"], progress=lambda m: progress("lab", m)))
    if not rep.found:
        return Result(_data(rep), text=f"no lab named {a['name']!r}: nothing to remove")
    text = (
        f"lab {a['name']!r} removed: {len(rep.namespaces)} namespaces, {len(rep.links)} bridge, "
        f"{len(rep.killed)} processes, {rep.removed_dir or 'no state directory'}"
    )
    return Result(_data(rep), text=text)


async def status(ctx: Context, a: dict[str, Any]) -> Result:
    return status_result(await finish(ctx, lambda: lab_status(a["name"])))


def _signal(verb: str, action: Callable[[str, str], int]) -> Callable[..., Any]:
    async def handler(ctx: Context, a: dict[str, Any]) -> Result:
        pid = await finish(ctx, lambda: action(a["name"], a["node"]))
        data = {"node": a["node"], "pid": pid}
        return Result(data, text=f"{verb} the agent on {a['node']} (pid {pid})")

    return handler


async def partition(ctx: Context, a: dict[str, Any]) -> Result:
    rep = await finish(ctx, lambda: chaos.partition(a["name"], a["nodes"], a["from"]))
    text = (
        f"cut {fold(rep.nodes)} off from {fold(rep.cut_from)} ({rep.routes_added} blackhole "
        "routes added); undo with `lab heal`"
    )
    return Result(_data(rep), text=text)


async def heal(ctx: Context, a: dict[str, Any]) -> Result:
    count = await finish(ctx, lambda: chaos.heal(a["name"]))
    text = f"healed: removed {count} blackhole routes" if count else "nothing to heal"
    return Result({"routes_removed": count}, text=text)


async def crash(ctx: Context, a: dict[str, Any]) -> Result:
    rep = await finish(ctx, lambda: chaos.crash(a["name"], a["node"]))
    pids = ", ".join(map(str, rep.killed)) or "-"
    text = (
        f"crashed {a['node']}: link down, {len(rep.killed)} processes killed (pids {pids}); "
        f"bring it back with `lab restore {a['node']}`"
    )
    return Result(_data(rep), text=text)


async def restore(ctx: Context, a: dict[str, Any]) -> Result:
    rep = await finish(ctx, lambda: chaos.restore(a["name"], a["node"]))
    sshd = "sshd started" if rep.sshd_started else "sshd was already up"
    if rep.agent_started:
        agent = f"agent started (pid {rep.agent_pid})"
    elif rep.agent_pid:
        agent = f"agent already running (pid {rep.agent_pid})"
    else:
        agent = "no agent installed"
    return Result(_data(rep), text=f"restored {a['node']}: {sshd} (pid {rep.sshd_pid}), {agent}")


def _node_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"a lab has 1 to {MAX_NODES} nodes")
    return count


NAME = Arg("name", f"which lab (default: the only one that is up, else {DEFAULT_LAB!r})", flag=True)


def which_lab(handler: Any) -> Any:
    """Without --name, a lab command means the only lab that is up (``lab up``: a new one
    called "lab"), as ``cluster init`` does."""

    async def run(ctx: Context, a: dict[str, Any]) -> Result:
        if not a["name"]:
            from shell.lab.state import labs_up

            up = labs_up() if handler is not up_cmd else []
            a = {**a, "name": up[0].name if len(up) == 1 else DEFAULT_LAB}
        result: Result = await handler(ctx, a)
        return result

    return run


NODE = Arg("node", "a lab node, e.g. node2", completion="lab-nodes")


def register(registry: Registry) -> None:
    def add(name: str, summary: str, handler: Any, args: list[Arg], *examples: str) -> None:
        registry.register(
            Command(f"lab {name}", summary, which_lab(handler), [*args, NAME], examples=examples)
        )

    add(
        "up",
        "create a lab: network-namespace machines with real sshd (root)",
        up_cmd,
        [
            Arg(
                "nodes",
                f"how many machines (1..{MAX_NODES})",
                type=_node_count,
                flag=True,
                default=lab.DEFAULT_NODES,
            )
        ],
        "lab up",
        "lab up --nodes 5 --name big",
    )
    add("down", "remove the lab and everything it made (root)", down, [], "lab down")
    add("status", "the lab's nodes: sshd, agent, partitions", status, [], "lab status")
    for verb, action, summary in (
        ("kill", chaos.kill, "kill -9 the node's agent"),
        ("pause", chaos.pause, "SIGSTOP the node's agent (a frozen machine)"),
        ("resume", chaos.resume, "SIGCONT the node's agent"),
    ):
        past = {"kill": "killed", "pause": "paused", "resume": "resumed"}[verb]
        add(verb, summary, _signal(past, action), [NODE], f"lab {verb} node1")
    add(
        "crash",
        "lose a whole node: unplug it and kill every process on it",
        crash,
        [NODE],
        "lab crash node2",
    )
    add(
        "restore", "boot a crashed node: sshd, then its agent", restore, [NODE], "lab restore node2"
    )
    add(
        "partition",
        "cut NODESET off from the others (or from --from)",
        partition,
        [
            Arg("nodes", "the side to cut off, e.g. node1 or node[1-2]", completion="lab-nodes"),
            Arg("from", "the other side (default: the rest)", flag=True),
        ],
        "lab partition node1",
        "lab partition node[1-2] --from node3",
    )
    add("heal", "remove every cut that partition made", heal, [], "lab heal")
