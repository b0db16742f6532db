"""Presenting many nodes' output: clush ``-b`` gathering, and plain ``node: line`` prefixing.

With fifty machines printing the same ``Linux``, the operator wants to read it once, labelled
``node[1-50]``, and to see at a glance the two machines that differ: that is ClusterShell's
MsgTree behind ``clush -b``. Nodes whose whole output is identical form one group, named by the
folded node set. Without gathering, every line is printed live as ``node: line``, which keeps
each node's lines in order while interleaving nodes.

Everything here returns text (or lines) and never prints, so the REPL, ``--json``-free batch
output and the TUI can all use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shell import nodesets
from shell.execute import NodeResult

SEPARATOR = "-" * 15
"""clush's header rule, kept so its output looks familiar."""


@dataclass(frozen=True)
class Group:
    """Nodes that printed exactly the same lines."""

    nodes: list[str]
    lines: tuple[str, ...]

    @property
    def label(self) -> str:
        return nodesets.fold(self.nodes)


def _lines(text: str) -> tuple[str, ...]:
    return tuple(text.splitlines())


def gather(
    results: Iterable[NodeResult], *, stream: str = "stdout", include_empty: bool = False
) -> list[Group]:
    """Group nodes by identical output on ``stream`` ("stdout", "stderr" or "both").

    Groups come in the natural order of their first node (node2 before node10), so the same
    outputs always print in the same order. Nodes with no output are left out unless
    ``include_empty`` (clush prints nothing for them either).
    """
    by_output: dict[tuple[str, ...], list[str]] = {}
    for r in results:
        if stream == "stdout":
            text = r.stdout
        elif stream == "stderr":
            text = r.stderr
        elif stream == "both":
            text = r.stdout + r.stderr
        else:
            raise ValueError(f"stream must be stdout, stderr or both, not {stream!r}")
        lines = _lines(text)
        if lines or include_empty:
            by_output.setdefault(lines, []).append(r.node)
    groups = [Group(nodesets.sort(nodes), lines) for lines, nodes in by_output.items()]
    order = {n: i for i, n in enumerate(nodesets.sort(n for g in groups for n in g.nodes))}
    return sorted(groups, key=lambda g: order[g.nodes[0]])


def format_gathered(groups: Iterable[Group]) -> str:
    """clush -b output: a header with the folded node set and its size, then the lines once."""
    out: list[str] = []
    for g in groups:
        out += [SEPARATOR, f"{g.label} ({len(g.nodes)})", SEPARATOR, *g.lines]
    return "\n".join(out) + ("\n" if out else "")


def prefix_line(node: str, line: str) -> str:
    """One output line as ``node: line``, clush's default (ungathered) form."""
    return f"{node}: {line}"


def format_prefixed(results: Iterable[NodeResult], *, stream: str = "stdout") -> str:
    """Every node's lines prefixed with its name, nodes in natural order, lines in their order.

    For output collected after the fact; live output uses :class:`LinePrinter` instead.
    """
    by_node = {r.node: r for r in results}
    out: list[str] = []
    for node in nodesets.sort(by_node):
        r = by_node[node]
        text = r.stdout if stream == "stdout" else r.stderr
        out += [prefix_line(node, line) for line in text.splitlines()]
    return "\n".join(out) + ("\n" if out else "")


def format_errors(results: Iterable[NodeResult]) -> list[str]:
    """One line per problem, clush-style: nodes that failed to run, then non-zero exits.

    Errors are listed one per node (each message names its node and says why); non-zero exit
    codes are gathered: ``node[3,5]: exited with exit code 2``.
    """
    results = list(results)
    lines = [r.error for r in results if r.error is not None]
    by_rc: dict[int, list[str]] = {}
    for r in results:
        if r.error is None and r.rc:
            by_rc.setdefault(r.rc, []).append(r.node)
    for rc in sorted(by_rc):
        lines.append(f"{nodesets.fold(by_rc[rc])}: exited with exit code {rc}")
    return lines


class LinePrinter:
    """An ``on_line`` listener that writes each line as ``node: line`` the moment it arrives.

    stderr lines go to ``write_err`` when given (clush keeps the two streams apart), else to
    ``write`` like stdout.
    """

    def __init__(
        self, write: Callable[[str], object], write_err: Callable[[str], object] | None = None
    ) -> None:
        self._write = write
        self._write_err = write_err or write

    def __call__(self, node: str, stream: str, line: str) -> None:
        sink = self._write_err if stream == "stderr" else self._write
        sink(prefix_line(node, line) + "\n")
