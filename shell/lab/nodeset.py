"""Node sets such as ``node[1-3],node5``: ClusterShell's syntax, which operators already know.

ClusterShell's NodeSet is used when it is installed; otherwise a small parser handles the
forms a lab needs (comma lists, one bracketed range list per name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shell.lab.errors import LabError

try:  # pragma: no cover - depends on the environment
    from ClusterShell.NodeSet import NodeSet as _NodeSet
    from ClusterShell.NodeSet import NodeSetParseError as _ParseError
except ImportError:  # pragma: no cover
    _NodeSet = None
    _ParseError = ValueError

_BRACKET = re.compile(r"^([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _expand_simple(text: str) -> list[str]:
    out: list[str] = []
    for part in _split_top(text):
        m = _BRACKET.match(part)
        if not m:
            if "[" in part or "]" in part:
                raise LabError(f"bad node set {text!r}: cannot parse {part!r}")
            out.append(part)
            continue
        head, ranges, tail = m.groups()
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise LabError(f"bad node set {text!r}: bad range {r!r}")
            width = len(lo) if lo.startswith("0") else 0
            for i in range(int(lo), int(hi or lo) + 1):
                out.append(f"{head}{i:0{width}d}{tail}")
    return out


def expand(text: str) -> list[str]:
    """Expand a node set into names, in the order ClusterShell (or the fallback) gives."""
    if not text.strip():
        raise LabError("empty node set")
    if _NodeSet is not None:
        try:
            return [str(n) for n in _NodeSet(text)]
        except _ParseError as exc:
            raise LabError(f"bad node set {text!r}: {exc}")
    return _expand_simple(text)


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
    names = list(names)
    if _NodeSet is not None and names:
        return str(_NodeSet.fromlist(names))
    return ",".join(names)
