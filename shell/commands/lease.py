"""``lease grant|revoke|keepalive|ttl|ls``: leases are what make keys (and locks) expire.

Lease ids are printed and taken in hex, as etcdctl and ``agent ctl`` do; ``--json`` has integers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from shell.commands.context import Context
from shell.commands.kv import lease_id, text
from shell.registry import Arg, Command, NotFound, Registry, Result

ID = Arg("id", "lease id (hex)", type=lease_id, completion="leases")


async def grant(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call("lease.grant", ttl=a["ttl"], timeout=ctx.options.timeout)
    return Result(res, text=f"lease {int(res['id']):x} granted with TTL({res['ttl']}s)")


async def revoke(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call("lease.revoke", id=a["id"], timeout=ctx.options.timeout)
    return Result(res, text=f"lease {a['id']:x} revoked")


async def keepalive(ctx: Context, a: dict[str, Any]) -> Result:
    def one(res: dict[str, Any]) -> Result:
        return Result(res, text=f"lease {a['id']:x} keepalived with TTL({res['ttl']})")

    first = one(await ctx.call("lease.keepalive", id=a["id"]))
    if a["once"]:
        return first

    async def more() -> AsyncIterator[Result]:
        while True:
            await asyncio.sleep(max(0.5, int(first.data["ttl"]) / 3))
            yield one(await ctx.call("lease.keepalive", id=a["id"]))

    first.stream = more()
    return first


async def ttl(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call("lease.ttl", id=a["id"], keys=a["keys"])
    if int(res["ttl"]) < 0:
        raise NotFound(f"lease {a['id']:x} not found (expired?)")
    keys = f", attached keys {[text(k) for k in res.get('keys', [])]}" if a["keys"] else ""
    return Result(
        res,
        text=f"lease {a['id']:x} granted with TTL({res['granted_ttl']}s), "
        f"remaining({res['ttl']}s){keys}",
    )


async def ls(ctx: Context, a: dict[str, Any]) -> Result:
    res = await ctx.call("lease.list")
    rows = [{"id": f"{int(i):x}"} for i in res["leases"]]
    return Result(res, rows=rows, columns=[("LEASE", "id")])


def register(registry: Registry) -> None:
    registry.register(
        Command(
            "lease grant",
            "a new lease of TTL seconds",
            grant,
            [Arg("ttl", "seconds", type=int)],
            examples=("lease grant 30",),
        )
    )
    registry.register(
        Command(
            "lease revoke",
            "end a lease now (its keys go with it)",
            revoke,
            [ID],
            examples=("lease revoke 694d7a3c1f2e0b01",),
        )
    )
    registry.register(
        Command(
            "lease keepalive",
            "keep a lease alive until Ctrl-C",
            keepalive,
            [ID, Arg("once", "renew once and return", type=bool, flag=True, default=False)],
            examples=("lease keepalive 694d7a3c1f2e0b01", "lease keepalive 694d7a3c --once"),
        )
    )
    registry.register(
        Command(
            "lease ttl",
            "a lease's remaining time (exit 4 if gone)",
            ttl,
            [ID, Arg("keys", "list the attached keys", type=bool, flag=True, default=False)],
            aliases=("lease timetolive",),
            examples=("lease ttl 694d7a3c1f2e0b01 --keys",),
        )
    )
    registry.register(
        Command(
            "lease ls",
            "every live lease",
            ls,
            aliases=("lease list",),
            examples=("lease ls",),
        )
    )
