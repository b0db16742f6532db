"""The command-language lexer: the token class of each kind of word."""

from __future__ import annotations

from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    _TokenType,
)

from shell.repl.app import highlight_help
from shell.repl.lexer import ShoalLexer


def tokens(text: str) -> list[tuple[_TokenType, str]]:
    return [(t, v) for t, v in ShoalLexer().get_tokens(text) if v.strip()]


def test_command_subcommand_key_flag() -> None:
    assert tokens("kv get /app/db --prefix --rev=3") == [
        (Keyword, "kv"),
        (Name.Function, "get"),
        (String.Other, "/app/db"),
        (Name.Attribute, "--prefix"),
        (Name.Attribute, "--rev"),
        (Operator, "="),
        (Number, "3"),
    ]


def test_strings_node_sets_numbers_variables_comments() -> None:
    got = dict((v, t) for t, v in tokens('exec web[1-3] "uptime -p" $HOST 30 # why'))
    assert got["exec"] is Keyword
    assert got["web[1-3]"] is Name.Class
    assert got['"uptime -p"'] is String.Double
    assert got["$HOST"] is Name.Variable
    assert got["30"] is Number
    assert got["# why"] is Comment.Single


def test_each_command_of_a_line_starts_again() -> None:
    got = tokens("leader; kv ls /a")
    assert got[0] == (Keyword, "leader")
    assert got[1] == (Punctuation, ";")
    assert got[2] == (Keyword, "kv")


def test_help_examples_are_coloured() -> None:
    text = "usage: kv get KEY\n\nexamples:\n  kv get /a\n"
    coloured = highlight_help(text)
    assert coloured.startswith("usage: kv get KEY\n\nexamples:\n  ")
    assert "\x1b[" in coloured.split("examples:")[1]
    assert "\x1b[" not in coloured.split("examples:")[0]
