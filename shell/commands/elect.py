"""``elect leader|observe|campaign`` and ``lock``: agent/concurrency.py over the shell's channel.

Campaigning and locking hold a session (a lease kept alive) for as long as the command runs, so
they are streams: they report once elected or locked, then hold until Ctrl-C, resigning on the
way out (or report the loss if the session ends first).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agent.client import ControlError
from agent.concurrency import Election, Leader, Lock, Session, current_leader, observe
from shell.commands.context import Context
from shell.registry import Arg, Command, NotFound, Registry, Result

NAME = Arg("name", "the election's name (a key prefix)", completion="keys")


def _leader_result(name: str, leader: Leader | None) -> Result:
    if leader is None:
        return Result({"name": name, "leader": None}, text="(no leader)")
    value = leader.value.decode(errors="replace")
    data = {
        "name": name,
        "leader": value,
        "key": leader.key.decode(errors="replace"),
        "create_revision": leader.create_revision,
    }
    return Result(data, text=value)


async def leader(ctx: Context, a: dict[str, Any]) -> Result:
    found = await current_leader(await ctx.client(), a["name"])
    if found is None:
        raise NotFound(f"election {a['name']!r} has no leader")
    return _leader_result(a["name"], found)


async def observe_cmd(ctx: Context, a: dict[str, Any]) -> Result:
    changes = observe(await ctx.client(), a["name"])

    async def items() -> AsyncIterator[Result]:
        async for found in changes:
            yield _leader_result(a["name"], found)

    return Result(stream=items())


async def campaign(ctx: Context, a: dict[str, Any]) -> Result:
    session = await Session.open(await ctx.client(), a["ttl"])
    election = Election(session, a["name"])
    try:
        await election.campaign(a["value"].encode())
    except BaseException:
        await session.close()
        raise
    data = {"name": a["name"], "elected": a["value"], "key": election.key.decode()}

    async def hold() -> AsyncIterator[Result]:
        try:
            await session.lost.wait()
            yield Result(
                {"name": a["name"], "lost": session.lost_reason},
                text=f"leadership lost: {session.lost_reason}",
                code=1,
            )
        finally:
            with contextlib.suppress(ControlError):
                await election.resign()
            await session.close()

    return Result(data, text=f"{a['name']}: elected with {a['value']!r}", stream=hold())


async def lock(ctx: Context, a: dict[str, Any]) -> Result:
    session = await Session.open(await ctx.client(), a["ttl"])
    held = Lock(session, a["name"])
    try:
        await held.acquire()
    except BaseException:
        await session.close()
        raise

    async def hold() -> AsyncIterator[Result]:
        try:
            reason = await held.lost()
            yield Result({"name": a["name"], "lost": reason}, text=f"lock lost: {reason}", code=1)
        finally:
            with contextlib.suppress(ControlError):
                await held.release()
            await session.close()

    key = held.key.decode()
    return Result({"name": a["name"], "key": key}, text=key, stream=hold())


TTL = Arg("ttl", "session TTL in seconds", type=int, flag=True, default=10)


def register(registry: Registry) -> None:
    registry.register(
        Command(
            "elect leader",
            "the current leader's value (exit 4 if none)",
            leader,
            [NAME],
            examples=("elect leader /elections/scheduler",),
        )
    )
    registry.register(
        Command(
            "elect observe",
            "print the leader now and after every change, until Ctrl-C",
            observe_cmd,
            [NAME],
            examples=("elect observe /elections/scheduler",),
        )
    )
    registry.register(
        Command(
            "elect campaign",
            "become leader with VALUE and hold it until Ctrl-C",
            campaign,
            [NAME, Arg("value", "what observers see while this leads"), TTL],
            examples=("elect campaign /elections/scheduler node1",),
        )
    )
    registry.register(
        Command(
            "lock",
            "take lock NAME and hold it until Ctrl-C",
            lock,
            [NAME, TTL],
            examples=("lock /locks/deploy",),
        )
    )
