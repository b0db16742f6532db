"""``python -m shell.lab``: the lab's command line, a thin layer over the library.

Human output is a short table and the next command to run; ``--json`` prints the same data for
programs. Progress goes to stderr as it happens, so stdout stays clean for ``--json``. Exit codes:
0 done, 1 the lab refused or failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from shell.lab import chaos, lab
from shell.lab.errors import LabError
from shell.lab.names import MAX_NODES
from shell.lab.nodeset import fold
from shell.lab.paths import DEFAULT_LAB
from shell.lab.status import LabStatus, lab_status


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=DEFAULT_LAB, help=f"lab name (default {DEFAULT_LAB})")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = argparse.ArgumentParser(
        prog="shoal lab",
        description="A cluster of network-namespace machines with real sshd, on this host.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", parents=[common], help="create the lab (root)")
    up.add_argument("--nodes", type=int, default=lab.DEFAULT_NODES, help=f"1..{MAX_NODES}")
    sub.add_parser("down", parents=[common], help="remove the lab and everything it made (root)")
    sub.add_parser("status", parents=[common], help="nodes, sshd, agents and partitions")
    for cmd, text in (
        ("kill", "kill -9 the node's agent"),
        ("pause", "SIGSTOP the node's agent"),
        ("resume", "SIGCONT the node's agent"),
        ("crash", "lose the whole node: unplug it and kill every process on it"),
        ("restore", "boot a crashed node: sshd, then its agent if installed"),
    ):
        sub.add_parser(cmd, parents=[common], help=text).add_argument("node", metavar="NODE")
    part = sub.add_parser("partition", parents=[common], help="cut NODESET off from the others")
    part.add_argument("nodes", metavar="NODESET", help="e.g. node1 or node[1-2]")
    part.add_argument("--from", dest="from_nodes", metavar="NODESET", help="default: the rest")
    sub.add_parser("heal", parents=[common], help="remove every cut that partition made")
    return p


def next_steps(state_dir: str, nodes: Sequence[str]) -> list[str]:
    """What to type next after ``lab up``."""
    name = Path(state_dir).name
    named = "" if name == DEFAULT_LAB else f" --lab {name}"
    return [
        f"shoal cluster init{named}          # make these machines a cluster",
        "shoal discover                 # see them answer over mDNS",
        f"ssh -F {state_dir}/ssh_config {nodes[0]} hostname",
    ]


def _status_table(st: LabStatus) -> str:
    rows = [("NODE", "ADDRESS", "SSHD", "AGENT", "CUT OFF FROM")]
    for n in st.nodes:
        sshd = f"up (pid {n.sshd_pid})" if n.sshd == "up" else "down"
        agent = f"{n.agent} (pid {n.agent_pid})" if n.agent_pid else n.agent
        rows.append((n.name, n.address, sshd, agent, fold(n.cut_off_from) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"lab {st.name!r}: {len(st.nodes)} nodes on {st.subnet}, bridge {st.bridge}, "
        f"state in {st.state_dir}"
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


Handler = Callable[[argparse.Namespace, Callable[[str], None]], tuple[Any, str]]


def _up(args: argparse.Namespace, progress: Callable[[str], None]) -> tuple[Any, str]:
    lab.up(args.name, args.nodes, progress=progress)
    st = lab_status(args.name)
    steps = "\n".join(f"  {s}" for s in next_steps(st.state_dir, [n.name for n in st.nodes]))
    return st.to_json(), f"{_status_table(st)}\nnext:\n{steps}"


def _down(args: argparse.Namespace, progress: Callable[[str], None]) -> tuple[Any, str]:
    rep = lab.down(args.name, progress=progress)
    if not rep.found:
        return rep, f"no lab named {args.name!r}: nothing to remove"
    return rep, (
        f"lab {args.name!r} removed: {len(rep.namespaces)} namespaces, {len(rep.links)} bridge, "
        f"{len(rep.killed)} processes, {rep.removed_dir or 'no state directory'}"
    )


def _status(args: argparse.Namespace, _: Callable[[str], None]) -> tuple[Any, str]:
    st = lab_status(args.name)
    return st.to_json(), _status_table(st)


def _signal(verb: str, action: Callable[..., int]) -> Handler:
    def handler(args: argparse.Namespace, _: Callable[[str], None]) -> tuple[Any, str]:
        pid = action(args.name, args.node)
        return {"node": args.node, "pid": pid}, f"{verb} the agent on {args.node} (pid {pid})"

    return handler


def _partition(args: argparse.Namespace, _: Callable[[str], None]) -> tuple[Any, str]:
    rep = chaos.partition(args.name, args.nodes, args.from_nodes)
    return rep, (
        f"cut {fold(rep.nodes)} off from {fold(rep.cut_from)} ({rep.routes_added} blackhole "
        "routes added); undo with `shoal lab heal`"
    )


def _heal(args: argparse.Namespace, _: Callable[[str], None]) -> tuple[Any, str]:
    count = chaos.heal(args.name)
    text = f"healed: removed {count} blackhole routes" if count else "nothing to heal"
    return {"routes_removed": count}, text


def _crash(args: argparse.Namespace, _: Callable[[str], None]) -> tuple[Any, str]:
    rep = chaos.crash(args.name, args.node)
    pids = ", ".join(map(str, rep.killed)) or "-"
    return rep, (
        f"crashed {args.node}: link down, {len(rep.killed)} processes killed (pids {pids}); "
        f"bring it back with `shoal lab restore {args.node}`"
    )


def _restore(args: argparse.Namespace, _: Callable[[str], None]) -> tuple[Any, str]:
    rep = chaos.restore(args.name, args.node)
    sshd = "sshd started" if rep.sshd_started else "sshd was already up"
    if rep.agent_started:
        agent = f"agent started (pid {rep.agent_pid})"
    elif rep.agent_pid:
        agent = f"agent already running (pid {rep.agent_pid})"
    else:
        agent = "no agent installed"
    return rep, f"restored {args.node}: {sshd} (pid {rep.sshd_pid}), {agent}"


HANDLERS: dict[str, Handler] = {
    "up": _up,
    "down": _down,
    "status": _status,
    "kill": _signal("killed", chaos.kill),
    "pause": _signal("paused", chaos.pause),
    "resume": _signal("resumed", chaos.resume),
    "partition": _partition,
    "heal": _heal,
    "crash": _crash,
    "restore": _restore,
}


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    started = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - started:5.2f}s] {msg}", file=err, flush=True)

    try:
        data, text = HANDLERS[args.command](args, progress)
    except LabError as exc:
        print(f"shoal lab: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("shoal lab: interrupted", file=err)
        return 130
    if args.json:
        print(json.dumps(_jsonable(data), indent=2), file=out)
    else:
        print(text, file=out)
    return 0
