"""``leader``, ``members``, ``machines`` and ``cluster status``: the cluster as a whole.

``cluster status`` and ``machines`` call the same library functions as the classic
``shoal cluster status`` / ``shoal machines`` (shell/bootstrap.py, shell/cluster_cli.py).
"""

from __future__ import annotations

import time
from typing import Any

from shell import bootstrap
from shell.cluster_cli import any_member
from shell.commands.context import Context
from shell.registry import EXIT_UNAVAILABLE, Arg, Command, Registry, Result, Unavailable

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
        {"cluster": state.name, "members": rows}, rows=rows, columns=STATUS_COLUMNS, code=code
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


def register(registry: Registry) -> None:
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
