"""Printing a command's :class:`~shell.registry.Result` for whoever reads it.

Handlers never print; this module decides: a rich table for a person at a terminal, plain
columns (``--no-legend`` drops the header) for grep and awk, one JSON document per command with
``--json`` (JSON lines for streams), and raw bytes for values that may not be text.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from shell.registry import Options, Result


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "-"
    return str(value)


def plain_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], legend: bool) -> str:
    cells = [[h for h, _ in columns]] if legend else []
    cells += [[_cell(r.get(k)) for _, k in columns] for r in rows]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _rich_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for header, _ in columns:
        table.add_column(header)
    for r in rows:
        table.add_row(*(_cell(r.get(k)) for _, k in columns))
    Console(file=out, highlight=False).print(table)


def _write_raw(data: bytes, out: TextIO) -> None:
    out.flush()
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(data if data.endswith(b"\n") else data + b"\n")
        buffer.flush()
    else:  # a StringIO in tests: show what it can
        text = data.decode(errors="replace")
        out.write(text if text.endswith("\n") else text + "\n")


def render(result: Result, options: Options, out: TextIO | None = None) -> None:
    """Print one result (not its stream: see :func:`render_stream`)."""
    out = out or sys.stdout
    if options.json:
        if result.data is not None:
            out.write(json.dumps(result.data) + "\n")
    elif result.raw is not None:
        _write_raw(result.raw, out)
    elif result.rows is not None and result.columns is not None:
        if result.text and not options.no_legend:  # a heading above the table, for people
            out.write(result.text + "\n")
        if out.isatty() and not options.no_legend:
            _rich_table(result.rows, result.columns, out)
        else:
            text = plain_table(result.rows, result.columns, legend=not options.no_legend)
            if text:
                out.write(text + "\n")
    elif result.text is not None:
        if result.text:  # "" means: nothing to tell people (the data is for --json)
            out.write(result.text + "\n")
    elif result.data is not None:
        out.write(json.dumps(result.data, indent=2) + "\n")
    if result.hint and out.isatty() and not options.json and not options.no_legend:
        out.write(result.hint + "\n")
    out.flush()


async def render_stream(result: Result, options: Options, out: TextIO | None = None) -> None:
    """Print a streaming result item by item as it arrives (JSON lines with --json)."""
    render(result, options, out)
    if result.stream is None:
        return
    async for item in result.stream:
        render(item, options, out)
