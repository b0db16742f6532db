"""Scripts: substitution, comments, line numbers, stop-at-first-failure and --keep-going."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from shell import batch
from shell.registry import Arg, Command, NotFound, Options, Registry, Result, UsageError


def fake() -> tuple[Registry, list[list[str]]]:
    seen: list[list[str]] = []
    r = Registry()

    async def say(ctx: Any, a: dict[str, Any]) -> Result:
        seen.append(a["words"])
        return Result({"said": a["words"]}, text=" ".join(a["words"]))

    async def missing(ctx: Any, a: dict[str, Any]) -> Result:
        raise NotFound("no such thing")

    async def table(ctx: Any, a: dict[str, Any]) -> Result:
        rows = [{"k": "/a", "v": "1"}, {"k": "/b", "v": "2"}]
        return Result(rows, rows=rows, columns=[("KEY", "k"), ("VALUE", "v")])

    r.register(Command("say", "print", say, [Arg("words", many=True, required=False)]))
    r.register(Command("missing", "fails with 4", missing))
    r.register(Command("table", "rows", table))
    return r, seen


def run(text: str, options: Options | None = None, args: tuple[str, ...] = ()) -> tuple:
    r, seen = fake()
    out, err = io.StringIO(), io.StringIO()
    lines = batch.parse_script(text, args, {"WHO": "world"})
    code = asyncio.run(batch.run_lines(r, lines, options or Options(), out=out, err=err))
    return code, out.getvalue(), err.getvalue(), seen


def test_substitution_comments_and_semicolons() -> None:
    text = (
        "#!/usr/bin/env shoal\n# a comment\nsay hello ${WHO}  # trailing\nsay $1 '$2'; say ${1}x\n"
    )
    lines = batch.parse_script(text, ["a", "b"], {"WHO": "world"})
    assert [(line.number, line.tokens) for line in lines] == [
        (3, ["say", "hello", "world"]),
        (4, ["say", "a", "b"]),
        (4, ["say", "ax"]),
    ]
    assert batch.parse_script("say 'a;b' 'c#d'", (), {})[0].tokens == ["say", "a;b", "c#d"]


def test_unset_variables_and_bad_quotes_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="line 2: \\$\\{NOPE\\} is not set"):
        batch.parse_script("say\nsay ${NOPE}", (), {})
    with pytest.raises(UsageError, match="line 1: \\$3 is not set"):
        batch.parse_script("say $3", ("x",), {})
    with pytest.raises(UsageError, match="line 1"):
        batch.parse_script("say 'open", (), {})


def test_stops_at_first_failure_with_its_line_and_code() -> None:
    code, out, err, seen = run("say one\n\nmissing\nsay never\n")
    assert code == 4
    assert out == "one\n"
    assert "line 3 failed (exit 4): missing" in err and "no such thing" in err
    assert seen == [["one"]]


def test_keep_going_runs_the_rest() -> None:
    code, _out, err, seen = run("missing\nbogus\nsay after\n", Options(keep_going=True))
    assert code == 2  # the last failure's code
    assert "line 1 failed (exit 4)" in err and "line 2 failed (exit 2)" in err
    assert seen == [["after"]]


def test_json_is_one_document_per_command() -> None:
    code, out, _, _ = run("say hi\ntable", Options(json=True))
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs == [{"said": ["hi"]}, [{"k": "/a", "v": "1"}, {"k": "/b", "v": "2"}]]
    code, out, _, _ = run("say hi --json; table")
    assert out.splitlines()[0] == '{"said": ["hi"]}' and out.splitlines()[1].startswith("KEY")


def test_no_legend_plain_columns() -> None:
    _, out, _, _ = run("table --no-legend")
    assert out == "/a  1\n/b  2\n"


def test_help_flag_prints_command_help() -> None:
    code, out, _, seen = run("say --help")
    assert code == 0 and out.startswith("usage: say") and seen == []
