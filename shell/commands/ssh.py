"""``ssh NODE [COMMAND...]``: a session on one machine of the cluster, then back to the shell.

At a terminal it is an interactive login (or COMMAND) with a PTY of the local terminal's type and
size, through the shell's pooled SSH connection (so in the REPL it opens at once, with the same
strict host-key checking as everything else); the terminal bridge is shell/terminal.py. Without
a terminal it needs a COMMAND, which then runs without a PTY with its output streamed (like
``ssh -n``). The exit code is the remote one (255 if the session ended without one).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from shell import nodesets, terminal
from shell.clusterstate import NodeSpec
from shell.commands.context import Context
from shell.registry import Arg, Command, NotFound, Registry, Result, UsageError

NODESET_SYNTAX = frozenset(",[]!&^@")
ONE_NODE = "ssh takes one node; for many use exec (exec NODESET -- COMMAND)"


def pick(text: str, words: Sequence[str], nodes: Sequence[NodeSpec], cluster: str) -> NodeSpec:
    """The one machine ``text`` names; UsageError for a node set, NotFound for a stranger."""
    specs = {s.id: s for s in nodes}
    name = text
    if NODESET_SYNTAX & set(text):
        records = [{"id": s.id, "address": s.host, "metadata": dict(s.metadata)} for s in nodes]
        try:
            names = nodesets.expand(text, records)
        except ValueError as exc:
            raise UsageError(f"ssh: {exc}")
        if len(names) > 1:
            raise UsageError(f"{ONE_NODE}; {text} is {len(names)} machines")
        name = names[0] if names else text
    if words and all(w in specs for w in words):  # `ssh node1 node2`: not a command to run
        raise UsageError(f"{ONE_NODE}; {' '.join(words)} would run as a command on {name}")
    spec = specs.get(name)
    if spec is None:
        known = ", ".join(nodesets.sort(specs)) or "none"
        raise NotFound(
            f"ssh: {text!r} is not a machine of cluster {cluster} (its machines: {known})"
        )
    return spec


def remote_command(words: Sequence[str]) -> str | None:
    """One word goes to the remote shell as typed (``'ls | wc -l'``); several are an argv."""
    if not words:
        return None
    return words[0] if len(words) == 1 else shlex.join(words)


async def ssh_cmd(ctx: Context, a: dict[str, Any]) -> Result:
    state = ctx.state()
    words: list[str] = a["command"]
    spec = pick(a["node"], words, state.nodes, state.name)
    at_terminal = os.isatty(0)
    if not at_terminal and not words:
        raise UsageError(
            f"ssh: input is not a terminal, so there is no one to type into a login shell; "
            f"give a command (ssh {spec.id} -- COMMAND), or use exec {spec.id} -- COMMAND"
        )
    conn = await ctx.pool().connect(spec.host, spec.ssh_port, spec.user, name=spec.id)
    for stream in (sys.stdout, ctx.err):  # what the shell printed comes before the session
        stream.flush()
    try:
        code = await terminal.bridge(conn, remote_command(words), pty=at_terminal, node=spec.id)
    except terminal.SessionLost as exc:
        ctx.err.write(f"shoal: {exc}\n")
        code = terminal.EXIT_NO_STATUS
    if at_terminal:
        ctx.err.write(f"back in shoal ({spec.id}: exit {code})\n")
        ctx.err.flush()
    return Result({"node": spec.id, "exit_status": code}, text="", code=code)


def register(registry: Registry) -> None:
    registry.register(
        Command(
            "ssh",
            "log in to one machine of the cluster (or run COMMAND there), then come back",
            ssh_cmd,
            [
                Arg("node", "the machine, e.g. node2", completion="nodes"),
                Arg(
                    "command",
                    "run this instead of a login shell (one word is given to the remote shell "
                    "as typed)",
                    many=True,
                    required=False,
                ),
            ],
            examples=(
                "ssh node2",
                "ssh node1 -- journalctl -f",
                "ssh node3 -- 'df -h | grep /srv'",
            ),
            description=(
                "Uses the shell's SSH connection and host-key checks. At a terminal the session "
                "gets a PTY and every key goes to the machine (Ctrl-C, Ctrl-D included); leave "
                "it as usual (exit) to return to shoal. Without a terminal a COMMAND is required "
                "and gets no input. The exit code is the remote command's."
            ),
            terminal=True,
        )
    )
