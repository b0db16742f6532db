"""Scripts: ``shoal -c 'CMD; CMD'``, ``shoal run FILE [ARGS]``, ``#!/usr/bin/env shoal`` and stdin.

One command per line (or ``;``-separated), ``#`` comments, ``$1``.. ``$@`` and
``${VAR}``/``$VAR`` from the script's arguments and the environment. A script stops at the first
failing command, naming its line, and exits with that command's code (``--keep-going`` runs the
rest and exits with the last failure's). All commands share one cluster connection.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from shell import render
from shell.registry import (
    EXIT_USAGE,
    Options,
    Registry,
    UsageError,
    error_message,
    exit_code,
)

VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+|[#@])\}|([A-Za-z_][A-Za-z0-9_]*|[0-9]|[#@]))"
)


@dataclass(frozen=True)
class Line:
    number: int
    tokens: list[str]
    text: str


def substitute(token: str, args: Sequence[str], env: Mapping[str, str], number: int) -> str:
    """Expand ``$1``, ``${NAME}``... in one token; an unset name is a usage error (exit 2)."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "#":
            return str(len(args))
        if name == "@":
            return " ".join(args)
        if name.isdigit():
            index = int(name)
            if index == 0:
                return "shoal"
            if index > len(args):
                raise UsageError(f"line {number}: ${name} is not set (the script got {len(args)})")
            return args[index - 1]
        if name not in env:
            raise UsageError(f"line {number}: ${{{name}}} is not set")
        return env[name]

    return VARIABLE.sub(one, token)


def _split(text: str) -> list[list[str]]:
    """Words of one line, cut into commands at unquoted ``;``; ``#`` starts a comment."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word and set(word) == {";"}:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def parse_script(
    text: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> list[Line]:
    """Every command of a script with its line number, variables expanded."""
    env = {} if env is None else env
    lines: list[Line] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if number == 1 and raw.startswith("#!"):
            continue
        try:
            commands = _split(raw)
        except ValueError as exc:
            raise UsageError(f"line {number}: {exc}")
        for words in commands:
            tokens = [substitute(w, args, env, number) for w in words]
            lines.append(Line(number, tokens, raw.strip()))
    return lines


async def run_lines(
    registry: Registry,
    lines: Sequence[Line],
    options: Options,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    where: str | None = "",
) -> int:
    """Run the commands in order; the exit code (``where`` None: one command, no labels)."""
    from shell.commands.context import Context

    out, err = out or sys.stdout, err or sys.stderr
    ctx = Context(registry, options, err)
    failed = 0
    try:
        for line in lines:
            label = f"{where}line {line.number}: " if where is not None else ""
            code = await run_one(ctx, line.tokens, out, err, label)
            if ctx.exit_requested:
                return code
            if code and where is None:
                return code
            if code:
                failed = code
                err.write(f"shoal: {where}line {line.number} failed (exit {code}): {line.text}\n")
                if not ctx.options.keep_going:
                    return code
    finally:
        await ctx.close()
    return failed


async def run_one(ctx: object, tokens: Sequence[str], out: TextIO, err: TextIO, label: str) -> int:
    """Parse, run and print one command; its exit code (errors go to ``err``)."""
    from shell.commands.context import Context

    assert isinstance(ctx, Context)
    base = ctx.options
    try:
        options, rest = base.take(tokens)
        if "--help" in rest or "-h" in rest:
            topic = [t for t in rest if t not in ("--help", "-h")]
            if len(topic) == 1 and topic[0] in ctx.registry.groups():
                out.write(ctx.registry.help(topic) + "\n")  # `cluster --help`: the group
                return 0
            command, _ = ctx.registry.resolve(topic)
            out.write(command.help() + "\n")
            return 0
        command, args = ctx.registry.parse(rest)
        ctx.options = options
        try:
            result = await command.handler(ctx, args)
            if result.stream is None:
                render.render(result, options, out)
                return result.code
            code = result.code
            render.render(result, options, out)
            async for item in result.stream:
                render.render(item, options, out)
                code = item.code or code
            return code
        finally:
            ctx.options = base
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise
    except Exception as exc:
        err.write(f"shoal: {label}{error_message(exc)}\n")
        return exit_code(exc)


def run_script(
    registry: Registry,
    text: str,
    options: Options,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    where: str | None = "",
) -> int:
    """Parse and run a whole script synchronously (the CLI's entry)."""
    try:
        lines = parse_script(text, args, env)
    except UsageError as exc:
        print(f"shoal: {where or ''}{exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run_lines(registry, lines, options, where=where))
    except KeyboardInterrupt:
        return 130


# --- the CLI's entry (shell/cli.py hands over what its own dispatcher does not handle) ---------


def _leading_options(argv: Sequence[str]) -> tuple[Options, list[str]]:
    """Global options before the command (``shoal --json -c ...``); SHOAL_* under them."""
    options = Options.from_env()
    rest = list(argv)
    head: list[str] = []
    while rest and rest[0].startswith("--") and rest[0] != "--":
        head.append(rest.pop(0))
        if head[-1] in ("--cluster", "--timeout") and rest:
            head.append(rest.pop(0))
    options, unknown = options.take(head)
    if unknown:
        raise UsageError(f"unknown option {unknown[0]}")
    return options, rest


def main(argv: Sequence[str]) -> int:
    """``shoal [OPTIONS] -c TEXT [ARGS] | run FILE [ARGS] | FILE [ARGS] | COMMAND [ARGS]``."""
    import os
    from pathlib import Path

    from shell.commands import build_registry

    registry = build_registry()
    try:
        options, rest = _leading_options(argv)
        if not rest:
            raise UsageError("which command? try `shoal help commands`")
        if rest[0] == "-c":
            if len(rest) < 2:
                raise UsageError("-c needs the commands to run: shoal -c 'kv get /a'")
            return run_script(registry, rest[1], options, rest[2:], os.environ)
        if rest[0] == "run" or Path(rest[0]).is_file():
            if rest[0] == "run":
                rest = rest[1:]
                if not rest:
                    raise UsageError("run needs a FILE (or - for stdin)")
            path = rest[0]
            try:
                text = sys.stdin.read() if path == "-" else Path(path).read_text()
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror}")
            where = "" if path == "-" else f"{path}: "
            return run_script(registry, text, options, rest[1:], os.environ, where)
        if rest[0] == "help" and rest[1:] == ["commands"]:
            rest = ["help"]
        # One command from the command line: the user's shell already split and expanded it,
        # so `exec @all -- 'echo $HOME'` reaches the nodes as typed (no second expansion).
        line = Line(1, list(rest), shlex.join(rest))
        try:
            return asyncio.run(run_lines(registry, [line], options, where=None))
        except KeyboardInterrupt:
            return 130
    except UsageError as exc:
        print(f"shoal: {exc}", file=sys.stderr)
        return EXIT_USAGE
