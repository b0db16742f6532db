"""``elect leader|observe|campaign|proclaim|resign`` and ``lock``: agent/concurrency.py over the
shell's channel.

Campaigning and locking hold a session (a lease kept alive) for as long as the command runs, so
they are streams: they report once elected or locked, then hold until Ctrl-C, resigning on the
way out (or report the loss if the session ends first). A held campaign also reports values
proclaimed for it by other clients, and ends if another client makes it resign.

``proclaim`` and ``resign`` act for whoever leads, from any shell, as etcd's v3election API does
with a LeaderKey: one txn guarded by the leader key's create revision, so a leadership change in
between fails ("leadership changed") and changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from agent.client import ControlClient, ControlError
from agent.concurrency import (
    Election,
    Leader,
    LeadershipChanged,
    LeadershipLost,
    Lock,
    Session,
    current_leader,
    election_key,
    observe,
    proclaim_as,
    resign_as,
)
from shell.commands.context import Context
from shell.registry import Arg, Command, NotFound, Registry, Result

NAME = Arg("name", "the election's name (a key prefix)", completion="elections")
LOCK_NAME = Arg("name", "the lock's name (a key prefix)", completion="keys")
LEADER_KEY = Arg(
    "key",
    "act only if this key still leads (NAME/<lease hex>, or the lease hex)",
    flag=True,
    required=False,
)


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
    key = election.key.decode()
    data = {"name": a["name"], "elected": a["value"], "key": key}

    async def hold() -> AsyncIterator[Result]:
        try:
            try:
                async with contextlib.aclosing(election.changes()) as changes:
                    async for value in changes:
                        shown = value.decode(errors="replace")
                        yield Result(
                            {"name": a["name"], "key": key, "proclaimed": shown},
                            text=f"{a['name']}: now proclaiming {shown!r}",
                        )
            except LeadershipLost as exc:
                yield Result(
                    {"name": a["name"], "lost": str(exc)},
                    text=f"leadership lost: {exc}",
                    code=1,
                )
        finally:
            with contextlib.suppress(ControlError):
                await election.resign()
            await session.close()

    return Result(data, text=f"{a['name']}: elected with {a['value']!r}", stream=hold())


async def _leader_for(client: ControlClient, name: str, key: str | None, verb: str) -> Leader:
    """The current leader of ``name`` (NotFound if none); with ``key``, only if that key leads."""
    found = await current_leader(client, name)
    if found is None:
        raise NotFound(f"election {name!r} has no leader")
    if key is not None and found.key != election_key(name, key):
        leads = found.key.decode(errors="replace")
        raise LeadershipChanged(
            f"{election_key(name, key).decode(errors='replace')} does not lead {name!r} "
            f"({leads} does); not {verb}"
        )
    return found


async def proclaim(ctx: Context, a: dict[str, Any]) -> Result:
    client = await ctx.client()
    found = await _leader_for(client, a["name"], a["key"], "proclaimed")
    await proclaim_as(client, found, a["value"].encode())
    key = found.key.decode(errors="replace")
    data = {
        "name": a["name"],
        "key": key,
        "value": a["value"],
        "create_revision": found.create_revision,
    }
    return Result(data, text=f"{a['name']}: {key} now proclaims {a['value']!r}")


async def resign(ctx: Context, a: dict[str, Any]) -> Result:
    client = await ctx.client()
    found = await _leader_for(client, a["name"], a["key"], "resigned")
    await resign_as(client, found)
    key = found.key.decode(errors="replace")
    after = await current_leader(client, a["name"])
    data: dict[str, Any] = {
        "name": a["name"],
        "resigned": key,
        "value": found.value.decode(errors="replace"),
        "create_revision": found.create_revision,
        "leader": None,
    }
    now = "no leader now"
    if after is not None:
        value = after.value.decode(errors="replace")
        data["leader"] = {
            "key": after.key.decode(errors="replace"),
            "value": value,
            "create_revision": after.create_revision,
        }
        now = f"{data['leader']['key']} leads now with {value!r}"
    return Result(data, text=f"{a['name']}: {key} resigned; {now}")


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
            "elect proclaim",
            "change the value the current leader announces, without an election",
            proclaim,
            [NAME, Arg("value", "the leader's new value"), LEADER_KEY],
            examples=(
                "elect proclaim /elections/scheduler node1-draining",
                "elect proclaim /elections/scheduler v2 --key 694d7a3c1f2e0b01",
            ),
            description="One txn guarded by the leader key's create revision: if leadership "
            "changes meanwhile (or --key no longer leads), nothing is written and the command "
            "fails (exit 1). The key keeps its lease. Exit 4 if there is no leader.",
        )
    )
    registry.register(
        Command(
            "elect resign",
            "make the current leader give up (the next candidate leads)",
            resign,
            [NAME, LEADER_KEY],
            examples=(
                "elect resign /elections/scheduler",
                "elect resign /elections/scheduler --key 694d7a3c1f2e0b01",
            ),
            description="Deletes the leader's key in one txn guarded by its create revision "
            "(exit 1 if leadership changed meanwhile, exit 4 if there is no leader). The "
            "campaign that held it reports the loss and ends.",
        )
    )
    registry.register(
        Command(
            "lock",
            "take lock NAME and hold it until Ctrl-C",
            lock,
            [LOCK_NAME, TTL],
            examples=("lock /locks/deploy",),
        )
    )
