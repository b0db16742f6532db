"""``help``, ``exit`` and ``plugins``: commands about the shell itself."""

from __future__ import annotations

from typing import Any

from shell.commands.context import Context
from shell.registry import Arg, Command, Registry, Result


async def help_cmd(ctx: Context, a: dict[str, Any]) -> Result:
    topic = a["command"]
    return Result({"help": ctx.registry.help(topic), "topic": " ".join(topic)},
                  text=ctx.registry.help(topic))  # fmt: skip


async def exit_cmd(ctx: Context, a: dict[str, Any]) -> Result:
    ctx.exit_requested = True
    return Result(code=a["code"])


async def plugins(ctx: Context, a: dict[str, Any]) -> Result:
    loaded: list[dict[str, Any]] = list(getattr(ctx.registry, "plugins", []))
    return Result(loaded, rows=loaded, columns=[("PLUGIN", "name"), ("VERSION", "version")])


def register(registry: Registry) -> None:
    registry.register(
        Command(
            "help",
            "list the commands, or explain one",
            help_cmd,
            [
                Arg(
                    "command",
                    "a command or group",
                    required=False,
                    many=True,
                    completion="commands",
                )
            ],
            aliases=("?",),
            examples=("help", "help kv get", "help kv"),
        )
    )
    registry.register(
        Command(
            "exit",
            "leave the shell (or end a script) with CODE",
            exit_cmd,
            [Arg("code", "the exit code", type=int, required=False, default=0)],
            aliases=("quit",),
            examples=("exit", "exit 1"),
        )
    )
    registry.register(
        Command(
            "plugins",
            "the plugins loaded (entry-point group shoal.plugins)",
            plugins,
            examples=("plugins",),
        )
    )
