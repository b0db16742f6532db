"""Node sets such as ``node[1-3],node5`` in lab commands: ClusterShell's syntax and parser
(through shell/nodesets.py), with errors as LabError so the lab's commands report them alike."""

from __future__ import annotations

from collections.abc import Iterable

from shell import nodesets
from shell.lab.errors import LabError


def expand(text: str) -> list[str]:
    """Expand a node set into names, in ClusterShell's order."""
    if not text.strip():
        raise LabError("empty node set")
    try:
        return nodesets.expand(text)
    except ValueError as exc:
        raise LabError(f"bad node set {text!r}: {exc}")


def select(text: str, known: Iterable[str]) -> list[str]:
    """Expand ``text`` and check every name is a node of the lab; keep the lab's order."""
    names = set(expand(text))
    order = list(known)
    unknown = sorted(names - set(order))
    if unknown:
        raise LabError(f"no such node in this lab: {', '.join(unknown)} (nodes: {fold(order)})")
    return [n for n in order if n in names]


def fold(names: Iterable[str]) -> str:
    """The compact form of a list of names, e.g. ``node[1-3]``, for messages."""
    return nodesets.fold(names)
