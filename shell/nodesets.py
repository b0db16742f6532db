"""Node sets for the shell: ClusterShell's syntax, plus selectors that only the cluster can answer.

Operators already know ``web[1-4,7],db[1-2]`` from clush and pdsh, so the syntax is ClusterShell's
and the parsing of each pattern is done by ClusterShell's own :class:`NodeSet` (a dependency):
``,`` is union, ``!`` difference, ``&`` intersection and ``^`` symmetric difference, applied left
to right exactly as ClusterShell does (``a[1-5]!a3,a9`` is ``((a[1-5] ! a3) , a9)``).

Two kinds of operand need the cluster, and ClusterShell's ``@group`` resolver knows nothing of it:

* ``@all`` is every machine of the cluster;
* ``@key=value`` is every machine whose metadata has ``key`` equal to ``value``
  (``@role=web&@dc=eu``).

Those are resolved against machine records (``{"id", "address", "metadata"}``) that the caller
passes in, fetched from the cluster's ``machines`` registry: this module does no I/O, so it is
usable from the REPL's completer as well as from tests. Errors name the character position, so a
typo in a long expression can be found without counting brackets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ClusterShell.NodeSet import RESOLVER_NOGROUP, NodeSet, NodeSetException

OPERATORS = {",": "update", "!": "difference_update", "&": "intersection_update",
             "^": "symmetric_difference_update"}  # fmt: skip
"""Top-level operator → the in-place NodeSet method that applies it."""

MAX_NODES = 100_000
"""Refuse expansions beyond this: ``n[1-999999999]`` is a typo, not a cluster."""


class NodeSetSyntaxError(ValueError):
    """A node set expression that cannot be parsed; ``position`` is the 0-based offset."""

    def __init__(self, text: str, position: int, message: str) -> None:
        pointer = f"\n  {text}\n  {' ' * position}^"
        super().__init__(f"bad node set at position {position + 1}: {message}{pointer}")
        self.text = text
        self.position = position
        self.reason = message


@dataclass(frozen=True)
class _Operand:
    op: str  # the operator before it ("," for the first operand)
    text: str
    start: int


def _tokenize(text: str) -> list[_Operand]:
    """Split at top-level operators (never inside brackets), checking brackets as it goes."""
    operands: list[_Operand] = []
    depth, start, op, open_at = 0, 0, ",", -1
    for i, ch in enumerate(text):
        if ch == "[":
            if depth:
                raise NodeSetSyntaxError(text, i, "nested '[' inside a range")
            depth, open_at = 1, i
        elif ch == "]":
            if not depth:
                raise NodeSetSyntaxError(text, i, "']' without a matching '['")
            depth = 0
        elif ch in OPERATORS and not depth:
            operands.append(_Operand(op, text[start:i], start))
            op, start = ch, i + 1
        elif ch.isspace():
            raise NodeSetSyntaxError(text, i, "spaces are not allowed in a node set")
    if depth:
        raise NodeSetSyntaxError(text, open_at, "'[' is never closed")
    operands.append(_Operand(op, text[start:], start))
    for k, item in enumerate(operands):
        if item.text:
            continue
        if len(operands) == 1:
            raise NodeSetSyntaxError(text, 0, "empty node set")
        if k == 0:
            raise NodeSetSyntaxError(text, 0, f"nothing before operator {operands[1].op!r}")
        raise NodeSetSyntaxError(text, item.start - 1, f"nothing after operator {item.op!r}")
    return operands


def _machine_name(record: Mapping[str, Any]) -> str:
    """A machine's name in node sets: its id, which is also its host name in the registry."""
    return str(record.get("name") or record["id"])


def _select(text: str, item: _Operand, machines: Sequence[Mapping[str, Any]] | None) -> NodeSet:
    if machines is None:
        raise NodeSetSyntaxError(
            text,
            item.start,
            f"{item.text} needs the cluster's machine list, which is not known here",
        )
    body = item.text[1:]
    if body == "all":
        names = [_machine_name(m) for m in machines]
    elif "=" in body:
        key, _, value = body.partition("=")
        if not key:
            raise NodeSetSyntaxError(
                text, item.start + 1, "metadata selector needs a key: @key=value"
            )
        names = [
            _machine_name(m)
            for m in machines
            if key in (m.get("metadata") or {}) and str(m["metadata"][key]) == value
        ]
    else:
        raise NodeSetSyntaxError(
            text, item.start, f"unknown selector {item.text!r}: use @all or @key=value"
        )
    return NodeSet.fromlist(names, resolver=RESOLVER_NOGROUP)


_BRACKETS = re.compile(r"\[([^\]]*)\]")
_RANGE = re.compile(r"^(\d+)-(\d+)(?:/(\d+))?$")


def _estimate(pattern: str) -> int:
    """How many names ``pattern`` would expand to, counted without expanding it.

    ClusterShell materialises ranges, so ``n[1-999999999]`` would eat the machine's memory
    before any size check after parsing could run.
    """
    total = 1
    for group in _BRACKETS.findall(pattern):
        count = 0
        for item in group.split(","):
            m = _RANGE.match(item.strip())
            if m:
                lo, hi, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
                count += max(hi - lo, 0) // max(step, 1) + 1
            else:
                count += 1
        total *= count
    return total


def _pattern(text: str, item: _Operand) -> NodeSet:
    size = _estimate(item.text)
    if size > MAX_NODES:
        raise NodeSetSyntaxError(
            text, item.start, f"{item.text!r} names {size} machines (more than {MAX_NODES})"
        )
    try:
        ns = NodeSet(item.text, resolver=RESOLVER_NOGROUP)
    except NodeSetException as exc:
        raise NodeSetSyntaxError(text, item.start, f"{item.text!r}: {exc}")
    if len(ns) > MAX_NODES:
        raise NodeSetSyntaxError(
            text, item.start, f"{item.text!r} names {len(ns)} machines (more than {MAX_NODES})"
        )
    return ns


def parse(text: str, machines: Sequence[Mapping[str, Any]] | None = None) -> NodeSet:
    """The ClusterShell NodeSet that ``text`` denotes; ``machines`` resolves ``@`` selectors.

    Raises:
        NodeSetSyntaxError: bad syntax, an unknown selector, or a selector without ``machines``.
    """
    result = NodeSet(resolver=RESOLVER_NOGROUP)
    for item in _tokenize(text):
        if item.text.startswith("@"):
            operand = _select(text, item, machines)
        else:
            operand = _pattern(text, item)
        getattr(result, OPERATORS[item.op])(operand)
    return result


def expand(text: str, machines: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
    """The names ``text`` denotes, in ClusterShell's order (by pattern, then numerically)."""
    return [str(n) for n in parse(text, machines)]


def fold(names: Iterable[str]) -> str:
    """The compact form of ``names``: ``node[1-3,5]``; the empty string for no names."""
    return str(NodeSet.fromlist(list(names), resolver=RESOLVER_NOGROUP))


def sort(names: Iterable[str]) -> list[str]:
    """``names`` without duplicates in ClusterShell's natural order (node2 before node10)."""
    return [str(n) for n in NodeSet.fromlist(list(names), resolver=RESOLVER_NOGROUP)]


def unknown(names: Iterable[str], machines: Sequence[Mapping[str, Any]]) -> list[str]:
    """Those of ``names`` that are not machines of the cluster, so callers can refuse them."""
    known = {_machine_name(m) for m in machines}
    return [n for n in names if n not in known]
