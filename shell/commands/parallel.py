"""``exec NODESET -- COMMAND`` and ``copy LOCAL NODESET:PATH``: clush over the cluster.

Node sets use ClusterShell's syntax plus ``@all`` and metadata selectors (``@region=us-east``,
resolved against the live machine registry when the cluster answers, else the nodes the shell
knows). Lines are printed live, prefixed with the node, or gathered with ``-b`` into one block
per distinct output under the folded node set. Without ``-S`` the exit code is 0 as long as the
command ran (as clush); with ``-S`` it is the highest exit code of any node (255 for a node that
did not run it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from shell import nodesets
from shell.clusteraccess import ClusterUnavailable, any_member
from shell.commands.context import Context
from shell.execute import NodeResult, Target, copy, highest_rc, run_parallel
from shell.gather import format_errors, format_gathered, gather
from shell.registry import Arg, Command, NotFound, Registry, Result, UsageError


async def resolve(ctx: Context, text: str) -> list[Target]:
    state = ctx.state()
    specs = {s.id: s for s in state.nodes}
    records: list[dict[str, Any]] = [
        {"id": s.id, "address": s.host, "metadata": dict(s.metadata)} for s in state.nodes
    ]
    if "@" in text.replace("@all", ""):
        try:  # metadata selectors: the registry's live view when the cluster answers
            live = await any_member(state, ctx.pool(), "machines", timeout=ctx.options.timeout)
            records = [r for r in live["machines"] if r.get("id") in specs] or records
        except ClusterUnavailable:
            pass
    try:
        names = nodesets.expand(text, records)
    except ValueError as exc:
        raise UsageError(str(exc))
    missing = [n for n in names if n not in specs]
    if missing:
        raise NotFound(f"not machines of cluster {state.name}: {nodesets.fold(missing)}")
    if not names:
        raise NotFound(f"{text!r} selects no machines")
    return [Target(n, specs[n].host, specs[n].ssh_port, specs[n].user) for n in names]


def summary(results: list[NodeResult], max_rc: bool) -> Result:
    data = [r.__dict__ for r in results]
    problems = format_errors(results)
    code = highest_rc(results) if max_rc else 0
    return Result({"results": data}, text="\n".join(problems), code=code)


async def exec_cmd(ctx: Context, a: dict[str, Any]) -> Result:
    targets = await resolve(ctx, a["nodeset"])
    words: list[str] = a["command"]
    if not words:
        raise UsageError("exec: give a COMMAND after the node set (exec NODESET -- COMMAND)")
    command: str | list[str] = words[0] if len(words) == 1 else words
    timeout = ctx.options.timeout if ctx.options.timeout_given else None
    pool = ctx.pool()
    if a["gather"]:
        results = await run_parallel(
            targets, command, pool=pool, fanout=a["fanout"], timeout=timeout
        )
        done = summary(results, a["max_rc"])
        gathered = format_gathered(gather(results, stream="both"))
        text = "\n".join(t for t in (gathered, done.text) if t)
        return Result(done.data, text=text, code=done.code)

    queue: asyncio.Queue[tuple[str, str, str] | None] = asyncio.Queue()

    def on_line(node: str, stream: str, line: str) -> None:
        queue.put_nowait((node, stream, line))

    async def lines() -> AsyncIterator[Result]:
        task = asyncio.create_task(
            run_parallel(
                targets, command, pool=pool, fanout=a["fanout"], timeout=timeout, on_line=on_line
            )
        )
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                node, stream, line = item
                yield Result({"node": node, "stream": stream, "line": line}, text=f"{node}: {line}")
            yield summary(task.result(), a["max_rc"])
        finally:
            if not task.done():
                task.cancel()

    return Result(stream=lines())


async def copy_cmd(ctx: Context, a: dict[str, Any]) -> Result:
    where, sep, path = a["destination"].partition(":")
    if not sep or not path:
        raise UsageError("copy: the destination is NODESET:PATH, e.g. web[1-3]:/tmp/app.conf")
    targets = await resolve(ctx, where)
    results = await copy(a["local"], targets, path, ctx.pool())
    failed = [r for r in results if not r.ok]
    lines = [r.error or f"{r.node}: failed" for r in failed]
    ok = nodesets.fold(r.node for r in results if r.ok)
    text = "\n".join([*([f"copied to {ok}"] if ok else []), *lines])
    return Result({"results": [r.__dict__ for r in results]}, text=text, code=1 if failed else 0)


def register(registry: Registry) -> None:
    registry.register(
        Command(
            "exec",
            "run COMMAND on every machine of NODESET at once (like clush)",
            exec_cmd,
            [
                Arg("nodeset", "machines: web[1-3], @all, @region=us-east", completion="nodes"),
                Arg(
                    "command",
                    "the command (one word is given to the remote shell as typed)",
                    many=True,
                    required=False,
                ),
                Arg(
                    "gather",
                    "print identical output once under the folded node set",
                    type=bool,
                    flag=True,
                    default=False,
                    short="-b",
                ),
                Arg(
                    "fanout",
                    "at most this many machines at a time",
                    type=int,
                    flag=True,
                    default=64,
                ),
                Arg(
                    "max_rc",
                    "exit with the highest exit code of any machine",
                    type=bool,
                    flag=True,
                    default=False,
                    short="-S",
                ),
            ],
            examples=(
                "exec @all -- uptime",
                "exec -b node[1-3] -- uname -r",
                "exec -S @disk=ssd -- 'df -h /'",
            ),
            description="Set a per-machine time limit with the global --timeout.",
        )
    )
    registry.register(
        Command(
            "copy",
            "copy a local file to PATH on every machine of NODESET",
            copy_cmd,
            [Arg("local", "the local file"), Arg("destination", "NODESET:PATH")],
            examples=("copy app.conf @all:/etc/app.conf",),
        )
    )
